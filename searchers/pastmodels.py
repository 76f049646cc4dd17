"""Every past task as a TPE classifier in the target's space: the models transfer is made of.

For a past task and one of its budgets, the model is BOHB's own: the task's best
``gamma`` share of observations at that budget forms a good density ``l``, the rest a
bad density ``g`` (:class:`~warmtune.searchers.kde.ProductKernelDensity`, fitted on the
configurations encoded in the *target's* space, so a parameter the two spaces do not
share simply carries no information). Its score of a configuration is the log-odds
that the configuration is among the task's good ones::

    score_t(x) = log(gamma_t l_t(x)) - log((1 - gamma_t) g_t(x))

the same quantity (up to a constant) that BOHB's acquisition maximises for the
target's own model, so the past and the target's own model speak the same language
and can be mixed as probabilities (:mod:`warmtune.searchers.warmstart`).

A multi-fidelity past (what a BOHB search leaves behind) has one model per budget with
enough observations. A target's observation at budget ``b`` is scored by the past
model at the same budget when there is one (low-rung results compared with the past's
results at the same rung), else by the past task's top model (its highest budget with
enough observations).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from warmtune.searchers.encoding import SpaceCodec
from warmtune.searchers.kde import DensityStack, ProductKernelDensity
from warmtune.searchers.kernelreg import RankBank, RankRegression
from warmtune.searchers.pasttask import PastTask
from warmtune.searchers.ranks import rank01, stratified

__all__ = ["PastModels", "TaskModel"]

#: Observations a budget level needs before it gets a model of its own.
MIN_OBSERVATIONS = 5
#: At most this many observations support a task's ranking (a rank-stratified subset).
MAX_SUPPORT = 128


@dataclass(frozen=True)
class TaskModel:
    """One task's TPE classifier at one budget, in a codec.

    Attributes:
        budget: the budget its observations were made at.
        good: density of the best ``gamma`` share.
        bad: density of the rest.
        gamma: the good share (``len(good) / n``).
        rows: the encoded observations it was fitted on, best first.
        values: their values (to minimise), best first.
        ranker: the task's ranking of configurations at this budget
            (:class:`~warmtune.searchers.kernelreg.RankRegression`), what similarity
            judges it by.
    """

    budget: float
    good: ProductKernelDensity
    bad: ProductKernelDensity
    gamma: float
    rows: np.ndarray
    values: np.ndarray
    ranker: RankRegression

    @classmethod
    def fit(
        cls,
        rows: np.ndarray,
        values: np.ndarray,
        budget: float,
        codec: SpaceCodec,
        *,
        good_fraction: float,
        min_bandwidth: float,
        max_points: int,
    ) -> TaskModel:
        """Split at the ``good_fraction`` quantile (at least one good and one bad point)."""
        order = np.argsort(values, kind="stable")
        rows, values = rows[order], values[order]
        n = len(values)
        n_good = min(max(1, int(math.ceil(good_fraction * n))), n - 1)
        good, bad = np.arange(n_good), np.arange(n_good, n)
        # Rank-stratified subsets keep the densities small without losing any rank band.
        good = good[stratified(values[good], np.zeros(len(good)), max_points)]
        bad = bad[stratified(values[bad], np.zeros(len(bad)), max_points)]
        # The ranking's support: a rank-stratified subset, at most MAX_SUPPORT points (its
        # cost grows with the square of it, its accuracy little beyond).
        support = stratified(values, np.zeros(n), min(max_points, MAX_SUPPORT))
        return cls(
            budget=float(budget),
            good=ProductKernelDensity(rows[good], codec, min_bandwidth=min_bandwidth),
            bad=ProductKernelDensity(rows[bad], codec, min_bandwidth=min_bandwidth),
            gamma=n_good / n,
            rows=rows,
            values=values,
            ranker=RankRegression(rows[support], values[support], codec),
        )


class PastModels:
    """The TPE classifiers of every past task, in the target's space, scored together.

    Args:
        space: the target's search space.
        past_tasks: the knowledge base's past tasks.
        good_fraction: each model's good share (BOHB's ``top_n_percent`` / 100).
        min_bandwidth: the densities' smallest bandwidth.
        max_points: at most this many good and this many bad points per model.
    """

    def __init__(
        self,
        *,
        space: Any,
        past_tasks: Sequence[PastTask],
        good_fraction: float = 0.15,
        min_bandwidth: float = 1e-3,
        max_points: int = 256,
    ) -> None:
        if not 0.0 < good_fraction < 1.0:
            raise ValueError(f"good_fraction must lie in (0, 1), got {good_fraction}; e.g. 0.15")
        self.codec = SpaceCodec(space)
        self.tasks = list(past_tasks)
        self.good_fraction = float(good_fraction)
        #: Per task: budget -> model (only budgets with enough observations).
        self.models: list[dict[float, TaskModel]] = []
        #: Per task: the model of its highest budget with enough observations.
        self.top: list[TaskModel | None] = []
        for task in self.tasks:
            by_budget: dict[float, TaskModel] = {}
            for budget in task.budget_levels(MIN_OBSERVATIONS):
                idx = task.at_budget(budget)
                if len(idx) < MIN_OBSERVATIONS:
                    continue
                rows = self.codec.encode([task.configs[i] for i in idx], foreign=True)
                by_budget[budget] = TaskModel.fit(
                    rows,
                    task.values[idx],
                    budget,
                    self.codec,
                    good_fraction=good_fraction,
                    min_bandwidth=min_bandwidth,
                    max_points=max_points,
                )
            self.models.append(by_budget)
            self.top.append(by_budget[max(by_budget)] if by_budget else None)
        usable = [m for m in self.top if m is not None]
        self._top_stack = (
            DensityStack([m.good for m in usable] + [m.bad for m in usable]) if usable else None
        )
        self._top_index = np.array([i for i, m in enumerate(self.top) if m is not None], dtype=int)
        self._stacks: dict[float, tuple[DensityStack, np.ndarray]] = {}
        self._top_bank = (
            RankBank([self.top[i].ranker for i in self._top_index])
            if len(self._top_index)
            else None  # type: ignore[union-attr]
        )
        self._banks: dict[float, tuple[RankBank | None, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def usable(self) -> np.ndarray:
        """Which tasks have a model at all (enough observations at some budget)."""
        return np.array([m is not None for m in self.top], dtype=bool)

    # Scores ---------------------------------------------------------------------------
    def scores(
        self, rows: np.ndarray, budget: float | None = None, *, tasks: np.ndarray | None = None
    ) -> np.ndarray:
        """``(tasks, len(rows))`` log-odds of being good, by each task's model.

        ``budget`` picks, per task, the model at that budget where the task has one,
        else its top model; ``None`` uses every task's top model. ``tasks`` (indices)
        limits the work to those tasks' top models (``budget`` must then be ``None``);
        the other rows stay 0. A task without any model scores 0 (no opinion).
        """
        out = np.zeros((len(self.tasks), len(rows)))
        if len(rows) == 0:
            return out
        if tasks is not None:
            if budget is not None:
                raise ValueError("scores(tasks=...) uses top models only; pass budget=None")
            position = {t: i for i, t in enumerate(self._top_index)}
            chosen = np.array([t for t in tasks if t in position], dtype=int)
            if self._top_stack is None or not len(chosen):
                return out
            k = len(self._top_index)
            pick = np.array([position[t] for t in chosen], dtype=int)
            log = self._top_stack.log_pdf(rows, which=np.concatenate([pick, pick + k]))
            gammas = self._gammas(chosen)
            n = len(chosen)
            out[chosen] = (log[:, :n] - log[:, n:]).T + np.log(gammas / (1 - gammas))[:, None]
            return out
        if self._top_stack is not None:
            out[self._top_index] = _log_odds(self._top_stack, rows, self._gammas(self._top_index))
        if budget is None:
            return out
        stack, index = self._stack_at(budget)
        if len(index):
            gammas = np.array([self._model_at(i, budget).gamma for i in index])  # type: ignore[union-attr]
            out[index] = _log_odds(stack, rows, gammas)
        return out

    def rank_scores(
        self, rows: np.ndarray, budget: float | None = None, *, tasks: np.ndarray | None = None
    ) -> np.ndarray:
        """``(tasks, len(rows))``: each task's ranking of the rows (higher = better, minus
        the predicted normalised rank), by its model at ``budget`` where it has one, else
        its top model. A task without any model scores 0. (``tasks`` is accepted for
        symmetry with :meth:`scores`; every task is ranked in one product anyway.)"""
        out = np.zeros((len(self.tasks), len(rows)))
        if len(rows) == 0 or self._top_bank is None:
            return out
        out[self._top_index] = self._top_bank.scores(rows)
        if budget is not None:
            bank, index = self._bank_at(budget)
            if bank is not None:
                out[index] = bank.scores(rows)
        return out

    def good_log_density(self, rows: np.ndarray) -> np.ndarray:
        """``(tasks, len(rows))`` log density of each task's good region (top models)."""
        out = np.full((len(self.tasks), len(rows)), -np.inf)
        if self._top_stack is not None and len(rows):
            k = len(self._top_index)
            out[self._top_index] = self._top_stack.log_pdf(rows)[:, :k].T
        return out

    def sample_good(
        self, task: int, rng: np.random.Generator, n: int, *, bandwidth_factor: float
    ) -> list[dict[str, Any]]:
        """``n`` configurations of the target's space from a task's good density."""
        model = self.top[task]
        if model is None:
            return [self.codec.space.sample(rng) for _ in range(n)]
        drawn = model.good.sample(rng, n, bandwidth_factor=bandwidth_factor)
        space = self.codec.space
        # A foreign past leaves parameters it lacks as uniform kernel factors; sampling
        # already drew those uniformly, so every draw is a complete valid config.
        return [space.complete(space.project(c), rng) for c in drawn]

    def sample_good_many(
        self, counts: np.ndarray, rng: np.random.Generator, *, bandwidth_factor: float
    ) -> list[dict[str, Any]]:
        """``counts[t]`` configurations from each task ``t``'s good density, drawn at once.

        The same kernels as :meth:`sample_good` (a point of the task's good set, then a
        truncated Gaussian per number and the Aitchison-Aitken switch per choice, each
        bandwidth times ``bandwidth_factor``; an absent value drawn uniformly), vectorised
        over every draw. Conditional spaces go task by task (:meth:`sample_good`), since
        which parameters a draw has depends on its parents.
        """
        space = self.codec.space
        if space.is_conditional:
            out: list[dict[str, Any]] = []
            for t in np.flatnonzero(counts):
                out += self.sample_good(
                    int(t), rng, int(counts[t]), bandwidth_factor=bandwidth_factor
                )
            return out
        points, widths = [], []
        uniform = 0
        for t in np.flatnonzero(counts):
            model = self.top[t]
            if model is None:
                uniform += int(counts[t])
                continue
            good = model.good
            pick = rng.integers(len(good.points), size=int(counts[t]))
            points.append(good.points[pick])
            widths.append(np.repeat(good.bandwidths[None, :], len(pick), axis=0))
        out = [space.sample(rng) for _ in range(uniform)]
        if not points:
            return out
        base = np.concatenate(points)
        h = np.concatenate(widths) * bandwidth_factor
        codec = self.codec
        m = len(base)
        rows = np.empty_like(base)
        for j in range(codec.dim):
            col, missing = base[:, j], np.isnan(base[:, j])
            u = rng.random(m)
            if codec.is_categorical[j]:
                c = int(codec.n_choices[j])
                cap = (c - 1) / c if c > 1 else 0.0
                switch = rng.random(m) < np.minimum(h[:, j], cap)
                other = rng.integers(max(c - 1, 1), size=m)
                kept = np.nan_to_num(col).astype(int)
                value = np.where(switch, (kept + 1 + other) % max(c, 1), kept)
                rows[:, j] = np.where(missing, np.floor(u * c).clip(0, c - 1), value)
            else:
                drawn = _truncated_normal_rows(rng, np.nan_to_num(col), h[:, j])
                rows[:, j] = np.where(missing, u, drawn)
        return out + [
            {name: codec.decode_value(j, row[j]) for j, name in enumerate(codec.names)}
            for row in rows
        ]

    # Portfolio ------------------------------------------------------------------------
    def best_configs(self, k: int) -> list[tuple[int, dict[str, Any], float]]:
        """Each task's ``k`` best configurations at its top budget, as ``(task, config,
        normalised rank on that task)``, projected into the target's space (a config
        with nothing in common with it is skipped)."""
        out = []
        space = self.codec.space
        for t, (task, model) in enumerate(zip(self.tasks, self.top, strict=True)):
            if model is None:
                continue
            idx = task.at_budget(model.budget)
            order = idx[np.argsort(task.values[idx], kind="stable")]
            ranks = rank01(task.values[order])
            taken = 0
            for i, r in zip(order, ranks, strict=True):
                if taken >= k:
                    break
                partial = space.project(task.configs[i])
                if partial:
                    out.append((t, partial, float(r)))
                    taken += 1
        return out

    def measured_ranks(self) -> list[dict[str, float]]:
        """Per task: normalised rank (0 = its best) of every configuration it measured at
        its top budget, keyed by the configuration's JSON."""
        out: list[dict[str, float]] = []
        for task, model in zip(self.tasks, self.top, strict=True):
            if model is None:
                out.append({})
                continue
            idx = task.at_budget(model.budget)
            ranks = rank01(task.values[idx])
            out.append(
                {
                    json.dumps(task.configs[i], sort_keys=True): float(r)
                    for i, r in zip(idx, ranks, strict=True)
                }
            )
        return out

    def measured_log_costs(self) -> list[dict[str, float]]:
        """Per task: ``log(runtime / the task's median runtime)`` of every configuration it
        measured at its top budget with a known runtime, keyed by the configuration's
        JSON (the relative cost of a configuration, comparable across tasks)."""
        out: list[dict[str, float]] = []
        for task, model in zip(self.tasks, self.top, strict=True):
            if model is None:
                out.append({})
                continue
            idx = task.at_budget(model.budget)
            times = task.runtimes[idx]
            ok = np.isfinite(times) & (times > 0)
            if not ok.any():
                out.append({})
                continue
            median = float(np.median(times[ok]))
            out.append(
                {
                    json.dumps(task.configs[i], sort_keys=True): math.log(float(x) / median)
                    for i, x, k in zip(idx, times, ok, strict=True)
                    if k
                }
            )
        return out

    def predicted_ranks(self, rows: np.ndarray) -> np.ndarray:
        """``(tasks, len(rows))``: each task's estimate (by its top model's ranking) of
        the normalised rank of each row among its own observations (0 = its best; 0.5
        for a task without a model)."""
        out = -self.rank_scores(rows)
        out[~self.usable()] = 0.5
        return out

    # Internals ------------------------------------------------------------------------
    def _gammas(self, index: np.ndarray) -> np.ndarray:
        return np.array([self.top[i].gamma for i in index])  # type: ignore[union-attr]

    def model_at(self, task: int, budget: float) -> TaskModel | None:
        """Task ``task``'s model at ``budget`` exactly, if it has one."""
        return self._model_at(task, budget)

    def _model_at(self, task: int, budget: float) -> TaskModel | None:
        for b, model in self.models[task].items():
            if math.isclose(b, budget, rel_tol=1e-9, abs_tol=1e-12):
                return model
        return None

    def _bank_at(self, budget: float) -> tuple[RankBank | None, np.ndarray]:
        """The rankings at ``budget`` of the tasks that have one below their top."""
        key = round(float(budget), 12)
        if key not in self._banks:
            index, rankers = [], []
            for t in range(len(self.tasks)):
                model = self._model_at(t, budget)
                if model is not None and model is not self.top[t]:
                    index.append(t)
                    rankers.append(model.ranker)
            self._banks[key] = (RankBank(rankers) if rankers else None, np.array(index, dtype=int))
        return self._banks[key]

    def _stack_at(self, budget: float) -> tuple[DensityStack, np.ndarray]:
        """The models at ``budget`` of the tasks that have one *below their top*."""
        key = round(float(budget), 12)
        if key not in self._stacks:
            index, models = [], []
            for t in range(len(self.tasks)):
                model = self._model_at(t, budget)
                if model is not None and model is not self.top[t]:
                    index.append(t)
                    models.append(model)
            stack = (
                DensityStack([m.good for m in models] + [m.bad for m in models]) if models else None
            )
            self._stacks[key] = (stack, np.array(index, dtype=int))  # type: ignore[assignment]
        return self._stacks[key]


def _log_odds(stack: DensityStack, rows: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """``(k, m)`` log-odds of being good for a stack laid out as ``k`` good densities
    followed by their ``k`` bad densities."""
    k = len(gammas)
    log = stack.log_pdf(rows)  # (m, 2k)
    return (log[:, :k] - log[:, k:]).T + np.log(gammas / (1.0 - gammas))[:, None]


def encode_configs(codec: SpaceCodec, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Rows of (possibly foreign) configurations in ``codec``'s space."""
    return codec.encode(configs, foreign=True)


def _truncated_normal_rows(
    rng: np.random.Generator, mean: np.ndarray, sd: np.ndarray
) -> np.ndarray:
    """Normal draws around ``mean`` (one ``sd`` each) restricted to ``[0, 1]``: by
    rejection, a few rounds, then clipping."""
    x = mean + sd * rng.standard_normal(mean.shape)
    for _ in range(20):
        outside = (x < 0) | (x > 1)
        if not outside.any():
            break
        x[outside] = mean[outside] + sd[outside] * rng.standard_normal(int(outside.sum()))
    return np.clip(x, 0.0, 1.0)
