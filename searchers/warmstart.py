"""Warm start: the weighted past as an initial design and as a prior for BOHB's densities.

:class:`WarmStart` turns past tasks and a :class:`~warmtune.searchers.similarity.TaskSimilarity`
into two things a TPE/BOHB searcher can use:

* :meth:`WarmStart.initial_design`: a *portfolio* of past configurations, projected into
  the current space. Candidates are the best configurations of each past task with a
  positive weight; each is scored on every weighted task by its measured rank where
  that task evaluated it, else by that task's surrogate. The portfolio is chosen
  greedily: each next configuration is the one that most lowers
  ``sum_t w_t * min_{c in portfolio} rank_t(c)``, the similarity-weighted best
  normalised rank per task (zero-shot greedy selection, weighted by task
  similarity). The first pick is therefore the configuration with the
  best weighted average rank: the design starts exactly where zero-shot transfer would.
* A *prior* over good and bad configurations: per past task, a kernel density estimate
  over its top ``good_fraction`` (good) and the rest (bad) in the unit-scaled current
  space, mixed over tasks with their similarity weights.

Protocol for a TPE/BOHB searcher (all on the current space; values minimised)::

    warm = WarmStart(space=space, past_tasks=tasks, meta_features=meta, seed=seed)
    design = warm.initial_design(k)            # evaluate these first (may be < k, or [])
    ...
    warm.update(configs=cs, values=ys, budgets=bs)  # all own observations so far
    w = warm.weight_of_past(n_own)             # n_own: own observations behind the model
    l(x) = w * exp(warm.good_log_density(X)) + (1 - w) * own_good(x)
    g(x) = w * exp(warm.bad_log_density(X))  + (1 - w) * own_bad(x)
    # candidates for the l/g ratio: a share w of them from warm.sample(n, rng, which="good")

``weight_of_past(n_own) = alpha / (alpha + n_own)``, where ``alpha`` is what the weighted
past is worth in own observations (see :mod:`~warmtune.searchers.similarity`): it decays
as own evidence grows and is exactly 0 when no past task agrees with the target, in which
case the densities are not needed and the search is a cold start. The densities are
densities on the unit-scaled space of the parameters active in each queried config
(an inactive or absent parameter contributes a factor 1, i.e. it is marginalised), so a
TPE whose own KDE is built the same way can mix them directly. Numeric parameters use a
Gaussian kernel truncated to the range (Scott's bandwidth per task and parameter);
categorical ones the Aitchison-Aitken kernel with ``lambda = (K - 1) / (n + K)``, which
makes each task's marginal the Laplace-smoothed frequency. A past value that the current
space cannot hold (out of range, unknown choice, parameter absent there) carries no
information: that kernel factor is uniform.

State: :meth:`WarmStart.state` is JSON-able and holds only the inputs (space, task names,
meta-features, options, seed, own observations, the generator's state). The past tasks
are not copied: :meth:`WarmStart.from_state` rebuilds from the knowledge base, which it
checks has the same task names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from warmtune.searchers.similarity import (
    PastTask,
    TaskSimilarity,
    TaskWeights,
    _Encoded,
    _Layout,
    _rank01,
    _Raw,
    _stratified,
)
from warmtune.space import SearchSpace

__all__ = ["WarmStart"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# Standard deviation of a uniform on [0, 1]: the spread assumed when a task's good set
# has a single point in some parameter (no spread can be measured from it).
_UNIFORM_STD = 1.0 / math.sqrt(12.0)
_erf = np.vectorize(math.erf, otypes=[float])


def _phi(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


class _Kde:
    """Per-task product-kernel density estimates, stacked so that one pass over the
    parameters evaluates every task."""

    def __init__(self, layout: _Layout, encs: Sequence[_Encoded]) -> None:
        self.layout = layout
        self.sizes = np.array([len(e.num) for e in encs], dtype=int)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        dn, dc = len(layout.num_names), len(layout.cat_names)
        self.num = np.concatenate([e.num for e in encs]) if encs else np.zeros((0, dn))
        self.cat = (
            np.concatenate([e.cat for e in encs]) if encs else np.zeros((0, dc), dtype=np.int64)
        )
        sigma, lam = [], []
        for e in encs:
            n = max(len(e.num), 1)
            present = np.isfinite(e.num)
            d = max(int(present.any(axis=0).sum()), 1)
            count = present.sum(axis=0)
            x = np.where(present, e.num, 0.0)
            mean = x.sum(axis=0) / np.maximum(count, 1)
            var = (np.where(present, x - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1)
            std = np.where(count >= 2, np.sqrt(var), 0.0)
            std = np.where(std > 0, std, _UNIFORM_STD)
            # Scott's rule, floored at one cell of an n-point uniform grid so that near
            # duplicates do not turn into spikes.
            s = np.maximum(std * n ** (-1.0 / (d + 4.0)), _UNIFORM_STD / n)
            sigma.append(np.repeat(s[None, :], len(e.num), axis=0))
            k = np.array([len(c) for c in layout.cat_choices], dtype=float)
            lam.append(np.repeat(((k - 1.0) / (n + k))[None, :], len(e.num), axis=0))
        self.sigma = np.concatenate(sigma) if sigma else np.zeros((0, dn))
        self.lam = np.concatenate(lam) if lam else np.zeros((0, dc))
        mu = np.where(np.isfinite(self.num), self.num, 0.5)
        mass = _phi((1.0 - mu) / self.sigma) - _phi(-mu / self.sigma) if dn else mu
        self.log_mass = np.log(np.maximum(mass, 1e-300))
        # The numeric part of every kernel at once, as one matrix product: expanding
        # -(x - m)^2 / (2 s^2) + c over the dimensions a point has gives
        # [x^2, x, has_x] @ W, so one BLAS call replaces a loop over dimensions (the
        # prior is evaluated at every ask). Absent dimensions have zero weights.
        present = np.isfinite(self.num)
        a = np.where(present, 1.0 / self.sigma**2, 0.0)
        m0 = np.where(present, self.num, 0.0)
        c = np.where(present, -_LOG_SQRT_2PI - np.log(self.sigma) - self.log_mass, 0.0)
        self._w = np.ascontiguousarray(
            np.concatenate([-0.5 * a, m0 * a, c - 0.5 * m0 * m0 * a], axis=1).T
        )

    def log_per_task(self, q: _Encoded) -> np.ndarray:
        """(tasks, queries) log density of each task's KDE at each query."""
        n = len(q.num)
        if len(self.layout.num_names):
            has_q = np.isfinite(q.num)
            x = np.where(has_q, q.num, 0.0)
            total = np.concatenate([x * x, x, has_q.astype(float)], axis=1) @ self._w
        else:
            total = np.zeros((n, len(self.num)))
        for j, choices in enumerate(self.layout.cat_choices):
            x_cat = q.cat[:, j]
            kk = len(choices)
            lam = self.lam[:, j]
            same = np.log1p(-lam)
            other = np.log(lam / (kk - 1)) if kk > 1 else np.full_like(lam, -np.inf)
            p = self.cat[:, j]
            lk = np.where(x_cat[:, None] == p[None, :], same[None, :], other[None, :])
            lk = np.where(p[None, :] >= 0, lk, -math.log(kk))
            total += np.where((x_cat >= 0)[:, None], lk, 0.0)
        # Log-sum-exp per task, in place: these arrays are queries x all past points.
        top = np.maximum.reduceat(total, self.starts, axis=1)
        top = np.where(np.isfinite(top), top, 0.0)
        total -= np.repeat(top, self.sizes, axis=1)
        np.exp(total, out=total)
        s = np.add.reduceat(total, self.starts, axis=1)
        with np.errstate(divide="ignore"):
            return (np.log(s) + top - np.log(self.sizes)[None, :]).T


class WarmStart:
    """Initial design and BOHB prior from the similarity-weighted past.

    Args:
        space: the current search space.
        past_tasks: the knowledge base's past tasks.
        similarity: a :class:`TaskSimilarity` over the same tasks (same names, same
            order); default: built here with ``seed``.
        meta_features: the current task's meta-features.
        seed: seed of the object's own generator (completion of projected configs,
            sampling); also seeds a default similarity model.
        good_fraction: share of each past task's observations (best first) that form
            its good set. 0.15 is BOHB's ``top_n_percent``, so prior and own densities
            split at the same quantile.
        max_points: at most this many good and this many bad points per task in the
            densities (rank-stratified subsets), a speed knob.
        uniform_weights: weigh every past task equally in the design and the prior (an
            ablation of the similarity model); what the past is worth as a whole is
            still the similarity model's ``prior_strength``.

    Raises:
        ValueError: no past tasks, a similarity over other tasks, or a bad fraction.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        past_tasks: Sequence[PastTask],
        similarity: TaskSimilarity | None = None,
        meta_features: Mapping[str, Any] | None = None,
        seed: int | None = None,
        good_fraction: float = 0.15,
        max_points: int = 256,
        uniform_weights: bool = False,
    ) -> None:
        if not isinstance(space, SearchSpace):
            raise ValueError(f"space must be a SearchSpace, got {type(space).__name__}")
        if not past_tasks:
            raise ValueError("past_tasks is empty: give at least one PastTask (or cold-start)")
        if not 0.0 < good_fraction < 1.0:
            raise ValueError(
                f"good_fraction must be in (0, 1), got {good_fraction}; BOHB uses 0.15"
            )
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        names = [t.name for t in past_tasks]
        if similarity is None:
            similarity = TaskSimilarity(past_tasks=past_tasks, seed=seed)
        elif similarity.task_names != names:
            raise ValueError(
                "similarity was built over other past tasks "
                f"({similarity.task_names[:5]}...) than past_tasks ({names[:5]}...); "
                "build it from the same list"
            )
        self.space = space
        self.seed = seed
        self.meta_features = dict(meta_features or {})
        self.good_fraction = float(good_fraction)
        self.max_points = int(max_points)
        self.uniform_weights = bool(uniform_weights)
        self.similarity = similarity
        self.rng = np.random.default_rng(seed)
        self._tasks = list(past_tasks)
        self._layout = _Layout.of(space)
        goods, bads, self._top = [], [], []
        self._measured: list[dict[str, float]] = []
        for task in self._tasks:
            final = task.final_indices()
            values, budgets = task.values[final], task.budgets[final]
            order = np.argsort(values, kind="stable")
            n_good = max(1, int(math.ceil(self.good_fraction * len(final))))
            good, bad = order[:n_good], order[n_good:]
            good = good[_stratified(values[good], budgets[good], self.max_points)]
            bad = bad[_stratified(values[bad], budgets[bad], self.max_points)]
            raw = _Raw([task.configs[i] for i in final])
            enc = self._layout.encode(raw, clip=True)
            goods.append(enc.take(good))
            bads.append(enc.take(bad) if len(bad) else enc.take(good))
            ranks = _rank01(values)
            # Best first, as (config, normalised rank on its own task): design candidates.
            self._top.append([(task.configs[final[i]], float(ranks[i])) for i in order])
            # Every measured rank by configuration: a candidate from another task that
            # this one also evaluated is scored by measurement, not by its surrogate.
            self._measured.append(
                {json.dumps(task.configs[final[i]], sort_keys=True): float(ranks[i]) for i in order}
            )
        self._good = _Kde(self._layout, goods)
        self._bad = _Kde(self._layout, bads)
        self._own: dict[str, list[Any]] = {"configs": [], "values": [], "budgets": []}
        self._weights = self.similarity.weights(space=space, meta_features=self.meta_features)

    # -- evidence -----------------------------------------------------------------------
    def update(
        self,
        *,
        configs: Sequence[Mapping[str, Any]],
        values: Sequence[float] | np.ndarray,
        budgets: Sequence[float] | np.ndarray | None = None,
    ) -> TaskWeights:
        """Re-weight the past on *all* own observations so far (not just the new ones).

        Returns:
            The new :class:`TaskWeights` (also :attr:`weights`).
        """
        vals = [float(v) for v in np.asarray(values, dtype=float).reshape(-1)]
        buds = (
            [0.0] * len(vals)
            if budgets is None
            else [float(b) for b in np.asarray(budgets, dtype=float).reshape(-1)]
        )
        self._weights = self.similarity.weights(
            space=self.space,
            meta_features=self.meta_features,
            configs=configs,
            values=vals,
            budgets=buds,
        )
        self._own = {"configs": [dict(c) for c in configs], "values": vals, "budgets": buds}
        return self._weights

    @property
    def weights(self) -> TaskWeights:
        """The current task weights, with their explanations."""
        return self._weights

    def weight_of_past(self, n_own: int) -> float:
        """Mixture weight of the prior against ``n_own`` own observations (0 = cold start)."""
        return self._weights.weight_of_past(n_own)

    def _task_weights(self) -> np.ndarray:
        w = np.array([self._weights.past[t.name] for t in self._tasks])
        if self.uniform_weights and (w > 0).any():
            return np.full(len(w), 1.0 / len(w))
        return w

    # -- initial design -----------------------------------------------------------------
    def initial_design(
        self, k: int, rng: np.random.Generator | None = None
    ) -> list[dict[str, Any]]:
        """Up to ``k`` distinct configurations of the current space, best portfolio first.

        Empty when no past task has a positive weight (then the search starts cold);
        fewer than ``k`` when the similar past offers fewer distinct compatible configs.
        Parameters a past config lacks (or holds out of range) are sampled.

        Raises:
            ValueError: ``k`` is negative.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        rng = self.rng if rng is None else rng
        w = self._task_weights()
        if k == 0 or not (w > 0).any():
            return []
        partials: list[dict[str, Any]] = []
        keys: list[str] = []
        origin: list[tuple[int, float]] = []
        seen: set[str] = set()
        for t in np.flatnonzero(w > 0):
            taken = 0
            for config, rank in self._top[t]:
                if taken >= k:
                    break
                partial = self.space.project(config)
                key = json.dumps(partial, sort_keys=True)
                if not partial or key in seen:
                    continue
                seen.add(key)
                keys.append(key)
                partials.append(partial)
                origin.append((int(t), rank))
                taken += 1
        if not partials:
            return []
        scores = self.similarity.predict_ranks(space=self.space, configs=partials)
        for c, (t, rank) in enumerate(origin):
            scores[t, c] = rank  # measured beats predicted
        for t, measured in enumerate(self._measured):
            for c, key in enumerate(keys):
                rank = measured.get(key)
                if rank is not None:
                    scores[t, c] = rank
        active = w > 0
        scores, wa = scores[active], w[active]
        best = np.ones(len(wa))
        chosen: list[int] = []
        free = np.ones(len(partials), dtype=bool)
        for _ in range(min(k, len(partials))):
            gain = wa @ (best[:, None] - np.minimum(best[:, None], scores))
            gain[~free] = -np.inf
            c = int(np.argmax(gain))
            chosen.append(c)
            free[c] = False
            best = np.minimum(best, scores[:, c])
        return [self.space.validate(self.space.complete(partials[c], rng)) for c in chosen]

    # -- prior densities ----------------------------------------------------------------
    def _log_density(self, kde: _Kde, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if not configs:
            return np.zeros(0)
        w = self._task_weights()
        q = self._layout.encode(_Raw(configs), clip=True)
        if not (w > 0).any():
            # No say for the past: the uniform density, so a mix with weight 0 is inert.
            return np.zeros(len(configs))
        per_task = kde.log_per_task(q)[w > 0]
        lw = np.log(w[w > 0])[:, None]
        top = np.max(per_task + lw, axis=0)
        top = np.where(np.isfinite(top), top, 0.0)
        return np.log(np.sum(np.exp(per_task + lw - top), axis=0)) + top

    def good_log_density(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Log prior density of good configurations at each config (unit-scaled space)."""
        return self._log_density(self._good, configs)

    def bad_log_density(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Log prior density of the other (not good) configurations at each config."""
        return self._log_density(self._bad, configs)

    def sample(
        self, n: int, rng: np.random.Generator | None = None, *, which: str = "good"
    ) -> list[dict[str, Any]]:
        """Draw ``n`` valid configurations from the good (or bad) prior density.

        Raises:
            ValueError: ``which`` is not ``"good"`` or ``"bad"``, or ``n`` is negative.
        """
        if which not in ("good", "bad"):
            raise ValueError(f"which must be 'good' or 'bad', got {which!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = self.rng if rng is None else rng
        kde = self._good if which == "good" else self._bad
        w = self._task_weights()
        if not (w > 0).any():
            return [self.space.sample(rng) for _ in range(n)]
        out = []
        for _ in range(n):
            t = int(rng.choice(len(w), p=w / w.sum()))
            i = kde.starts[t] + int(rng.integers(kde.sizes[t]))
            num = kde.num[i].copy()
            for j in range(len(num)):
                if np.isfinite(num[j]):
                    num[j] = _truncated_normal(num[j], kde.sigma[i, j], rng)
            cat = kde.cat[i].copy()
            for j, choices in enumerate(self._layout.cat_choices):
                if cat[j] >= 0 and len(choices) > 1 and rng.random() < kde.lam[i, j]:
                    others = [c for c in range(len(choices)) if c != cat[j]]
                    cat[j] = others[int(rng.integers(len(others)))]
            partial = self.space.project(self._layout.decode(num, cat))
            out.append(self.space.validate(self.space.complete(partial, rng)))
        return out

    # -- state --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-able inputs: rebuild with :meth:`from_state` and the same past tasks."""
        return {
            "space": self.space.to_dict(),
            "past_tasks": [t.name for t in self._tasks],
            "meta_features": self.meta_features,
            "seed": self.seed,
            "good_fraction": self.good_fraction,
            "max_points": self.max_points,
            "uniform_weights": self.uniform_weights,
            "own": self._own,
            "rng": dict(self.rng.bit_generator.state),
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        past_tasks: Sequence[PastTask],
        similarity: TaskSimilarity | None = None,
    ) -> WarmStart:
        """Rebuild from :meth:`state` and the knowledge base's past tasks.

        Raises:
            ValueError: the past tasks are not the ones the state was made with.
        """
        names = [t.name for t in past_tasks]
        if names != list(state["past_tasks"]):
            raise ValueError(
                "the knowledge base changed since this state was saved: tasks "
                f"{state['past_tasks'][:5]}... expected, got {names[:5]}...; "
                "rebuild WarmStart from scratch instead"
            )
        warm = cls(
            space=SearchSpace(state["space"]),
            past_tasks=past_tasks,
            similarity=similarity,
            meta_features=state["meta_features"],
            seed=state["seed"],
            good_fraction=state["good_fraction"],
            max_points=state["max_points"],
            uniform_weights=state.get("uniform_weights", False),
        )
        own = state["own"]
        if own["configs"]:
            warm.update(configs=own["configs"], values=own["values"], budgets=own["budgets"])
        warm.rng.bit_generator.state = state["rng"]
        return warm


def _truncated_normal(mu: float, sigma: float, rng: np.random.Generator) -> float:
    """One draw of a normal truncated to [0, 1], by rejection (the kernel keeps at least
    a few percent of its mass inside, as its centre lies in [0, 1])."""
    for _ in range(100):
        x = rng.normal(mu, sigma)
        if 0.0 <= x <= 1.0:
            return float(x)
    return float(min(max(mu, 0.0), 1.0))
