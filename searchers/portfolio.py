"""The warm design's portfolio: the past tasks' best configurations, which to run first.

Each past task contributes its best configurations (:data:`PER_TASK`); each candidate
has a rank on every past task, measured where that task evaluated it and else its
model's estimate (:class:`~warmtune.searchers.pastmodels.PastModels`), and a cost where
the past measured its runtime. :meth:`Portfolio.next` picks the next one under the
current task weights, by average rank or by coverage (the greedy portfolio that hedges
across tasks), optionally per expected second; :meth:`Portfolio.objective` chooses
between the two by leaving each past task out. A
:class:`~warmtune.searchers.warmstart.WarmStart` holds one and hands it its weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from warmtune.searchers.pastmodels import PastModels
from warmtune.space import SearchSpace

__all__ = ["PER_TASK", "Portfolio"]

#: Best configurations each past task contributes.
PER_TASK = 5


class Portfolio:
    """The candidate table over ``models``' past tasks, built on first use."""

    def __init__(self, models: PastModels, space: SearchSpace) -> None:
        self.models = models
        self.space = space
        self._items: list[tuple[dict[str, Any], str]] | None = None
        self._ranks: np.ndarray | None = None
        self._costs = np.zeros((0, 0))
        self._origin = np.zeros(0, dtype=int)
        self._rank_cache: dict[str, np.ndarray] = {}
        self._objective: str | None = None

    def table(self) -> tuple[list[tuple[dict[str, Any], str]], np.ndarray]:
        """Candidates (projected config, key) and their rank on each past task: measured
        where the task evaluated the configuration, else its model's estimate."""
        if self._items is None:
            seen: dict[str, int] = {}
            items: list[tuple[dict[str, Any], str]] = []
            origin: list[tuple[int, float]] = []
            for t, config, rank in self.models.best_configs(PER_TASK):
                key = json.dumps(config, sort_keys=True)
                if key in seen:
                    continue
                seen[key] = len(items)
                items.append((config, key))
                origin.append((t, rank))
            rows = self.models.codec.encode([c for c, _ in items], foreign=True)
            ranks = self.models.predicted_ranks(rows) if items else np.zeros((len(self.models), 0))
            for c, (t, rank) in enumerate(origin):
                ranks[t, c] = rank
            for t, measured in enumerate(self.models.measured_ranks()):
                for c, (_, key) in enumerate(items):
                    r = measured.get(key)
                    if r is not None:
                        ranks[t, c] = r
            costs = np.full((len(self.models), len(items)), np.nan)
            for t, measured in enumerate(self.models.measured_log_costs()):
                for c, (_, key) in enumerate(items):
                    x = measured.get(key)
                    if x is not None:
                        costs[t, c] = x
            self._items, self._ranks = items, ranks
            self._costs = costs
            self._origin = np.array([t for t, _ in origin], dtype=int)
        assert self._ranks is not None
        return self._items, self._ranks

    def relative_costs(self, w: np.ndarray) -> np.ndarray:
        """Each portfolio configuration's expected cost relative to a typical one: the
        weighted geometric mean, over the past tasks that measured it, of its runtime over
        that task's median runtime (1 where no task knows its runtime)."""
        log = self._costs
        known = np.isfinite(log)
        weight = np.where(known, w[:, None], 0.0)
        total = weight.sum(axis=0)
        # Where the weighted tasks never measured it, the unweighted mean of those that did.
        fallback = known.sum(axis=0)
        mean = np.where(
            total > 0,
            np.nansum(np.where(known, log, 0.0) * weight, axis=0) / np.maximum(total, 1e-300),
            np.nansum(np.where(known, log, 0.0), axis=0) / np.maximum(fallback, 1),
        )
        return np.exp(mean)

    def next(
        self,
        tried: Sequence[Mapping[str, Any]],
        rng: np.random.Generator,
        *,
        weights: np.ndarray,
        objective: str = "coverage",
        cost_aware: bool = False,
    ) -> dict[str, Any] | None:
        """The next portfolio configuration not ``tried`` yet (``None``: no past task has
        weight, or the portfolio is used up).

        Args:
            tried: configurations the target already evaluated or runs (its own space).
            rng: completes parameters a past configuration lacks.
            weights: the past tasks' weights.
            objective: ``"average"``: the best weighted average rank over the past tasks
                (zero-shot's order, with the weights of the moment); ``"coverage"``: the
                one that most lowers the weighted best rank per task given what was tried
                (a greedy portfolio, which hedges across tasks).
            cost_aware: divide each configuration's gain by its expected relative cost
                (expected improvement per second, Snoek et al. 2012) from the runtimes the
                past measured, so cheap good configurations report first.
        """
        if objective not in ("average", "coverage"):
            raise ValueError(f"objective must be 'average' or 'coverage', got {objective!r}")
        w = np.asarray(weights, dtype=float)
        if not (w > 0).any():
            return None
        items, ranks = self.table()
        if not items:
            return None
        active = np.flatnonzero(w > 0)
        keys = {json.dumps(dict(c), sort_keys=True) for c in tried}
        free = np.array([key not in keys for _, key in items])
        if not free.any():
            return None
        if objective == "average":
            gain = w[active] @ (1.0 - ranks[active])  # positive, so a cost can divide it
        else:
            table = ranks[active]
            best = np.full(len(active), np.inf)
            if tried:
                tried_ranks = self.tried_ranks(tried)
                best = np.minimum(best, tried_ranks[active].min(axis=1))
                # A tried portfolio configuration counts with its measured ranks.
                for c, (_, key) in enumerate(items):
                    if key in keys:
                        best = np.minimum(best, table[:, c])
            best = np.minimum(best, table.max(axis=1))
            gain = w[active] @ (best[:, None] - np.minimum(best[:, None], table))
        if cost_aware:
            gain = gain / self.relative_costs(w)
        gain[~free] = -np.inf
        c = int(np.argmax(gain))
        return self.space.validate(self.space.complete(items[c][0], rng))

    def objective(self, picks: int = 5) -> str:
        """The portfolio objective that held up on the past itself, leave one task out.

        Each past task in turn is the target: the portfolio is built from the other
        tasks' configurations with equal weights, ``picks`` configurations are chosen by
        each objective, and the held-out task's rank of the best of the first ``k``
        (``k = 1..picks``, measured where it evaluated them, else its model's estimate)
        is averaged. ``"average"`` (the consensus order) wins when the past's tasks agree,
        ``"coverage"`` (hedging across tasks) when they differ in ways that recur; ties go
        to ``"coverage"``, the expected improvement under the weights.
        """
        if self._objective is not None:
            return self._objective
        items, ranks = self.table()
        usable = np.flatnonzero(self.models.usable())
        score = {"average": 0.0, "coverage": 0.0}
        if len(usable) >= 3 and items:
            for j in usable:
                others = np.array([t for t in usable if t != j])
                free = self._origin != j  # the target's own configurations are unknown
                table = ranks[others][:, free]
                for objective in score:
                    chosen = _greedy(table, picks, objective)
                    held = ranks[j][free][chosen]
                    score[objective] += float(np.mean(np.minimum.accumulate(held)))
        self._objective = "average" if score["average"] < score["coverage"] - 1e-12 else "coverage"
        return self._objective

    def tried_ranks(self, tried: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``(tasks, len(tried))`` predicted ranks, each configuration's computed once."""
        keys = [json.dumps(dict(c), sort_keys=True) for c in tried]
        new = [i for i, k in enumerate(keys) if k not in self._rank_cache]
        if new:
            rows = self.models.codec.encode([tried[i] for i in new], foreign=True)
            ranks = self.models.predicted_ranks(rows)
            for col, i in enumerate(new):
                self._rank_cache[keys[i]] = ranks[:, col]
        return np.stack([self._rank_cache[k] for k in keys], axis=1)


def _greedy(table: np.ndarray, picks: int, objective: str) -> list[int]:
    """Column indices of ``table`` (tasks x candidates of ranks) chosen one at a time by
    ``objective`` with equal task weights (as :meth:`Portfolio.next` does)."""
    best = table.max(axis=1)
    chosen: list[int] = []
    free = np.ones(table.shape[1], dtype=bool)
    for _ in range(min(picks, table.shape[1])):
        if objective == "average":
            gain = (1.0 - table).mean(axis=0)
        else:
            gain = (best[:, None] - np.minimum(best[:, None], table)).mean(axis=0)
        gain[~free] = -np.inf
        c = int(np.argmax(gain))
        chosen.append(c)
        free[c] = False
        best = np.minimum(best, table[:, c])
    return chosen
