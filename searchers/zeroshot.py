"""Zero-shot transfer: the past tasks' configurations in order of their average rank.

A benchmark baseline (Wistuba et al. 2015; the "zero-shot" portfolios of Syne Tune):
no model of the target at all, only the order the past suggests, then random search.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from warmtune.searchers.base import Searcher, Suggestion
from warmtune.space import SearchSpace

__all__ = ["ZeroShot"]


def _rank01(y: np.ndarray) -> np.ndarray:
    """Normalised ranks in [0, 1], 0 = best (smallest); ties share their mean rank."""
    return (pd.Series(y).rank(method="average").to_numpy() - 1.0) / max(len(y) - 1, 1)


class ZeroShot(Searcher):
    """The past tasks' configurations by average normalised rank, then random search.

    When every past task holds the same configurations (a ``random`` past), the ranks
    are the measured ones. Otherwise the candidates are every task's full-fidelity
    configurations, ranked on each task by measurement where it has one and by that
    task's surrogate elsewhere. Each is evaluated at full fidelity.

    Args:
        space: the search space.
        seed: seed of the random search after the portfolio.
        past_tasks: the knowledge base.
    """

    # No name: a benchmark baseline, not a searcher for job files.

    def __init__(self, *, space: SearchSpace, seed: int | None, past_tasks: Sequence[Any]) -> None:
        super().__init__(space=space, seed=seed)
        if not past_tasks:
            raise ValueError("zeroshot needs at least one past task; give the benchmark 2+ tasks")
        shared = (
            all(
                len(t.configs) == len(past_tasks[0].configs)
                and bool(np.all(t.budgets == t.budgets[0]))
                for t in past_tasks
            )
            and len({json.dumps(t.configs, sort_keys=True) for t in past_tasks}) == 1
        )
        self.portfolio = (
            _average_rank_order(past_tasks) if shared else _predicted_rank_order(space, past_tasks)
        )
        self._next = 0

    def ask(self, trial_id: str) -> Suggestion:
        if self._next < len(self.portfolio):
            config = self.portfolio[self._next]
            self._next += 1
        else:
            config = self.space.sample(self.rng)
        return Suggestion(trial_id=trial_id, config=config)


def _average_rank_order(past_tasks: Sequence[Any]) -> list[dict[str, Any]]:
    """Shared configurations, best average measured normalised rank first."""
    keys = [json.dumps(c, sort_keys=True) for c in past_tasks[0].configs]
    ranks = np.zeros(len(keys))
    for task in past_tasks:
        own = {
            json.dumps(c, sort_keys=True): v for c, v in zip(task.configs, task.values, strict=True)
        }
        # A config missing on a task (failed there) counts as its worst.
        y = np.array([own.get(k, np.inf) for k in keys])
        ranks += _rank01(y)
    order = np.argsort(ranks, kind="stable")
    return [dict(past_tasks[0].configs[i]) for i in order]


def _predicted_rank_order(space: SearchSpace, past_tasks: Sequence[Any]) -> list[dict[str, Any]]:
    """Every task's configurations at its top budget, best average rank first: measured on
    the tasks that evaluated them, else estimated by the task's model."""
    from warmtune.searchers.pastmodels import PastModels

    models = PastModels(space=space, past_tasks=past_tasks)
    candidates: list[dict[str, Any]] = []
    keys: list[str] = []
    seen: set[str] = set()
    for t, task in enumerate(past_tasks):
        top = models.top[t]
        if top is None:
            continue
        for i in task.at_budget(top.budget):
            key = json.dumps(task.configs[i], sort_keys=True)
            if key not in seen:
                seen.add(key)
                candidates.append(dict(task.configs[i]))
                keys.append(key)
    scores = models.predicted_ranks(models.codec.encode(candidates, foreign=True))
    for t, measured in enumerate(models.measured_ranks()):
        for c, key in enumerate(keys):
            rank = measured.get(key)
            if rank is not None:
                scores[t, c] = rank  # measured beats predicted
    usable = models.usable()
    order = np.argsort(scores[usable].mean(axis=0), kind="stable")
    return [space.complete(space.project(candidates[i]), np.random.default_rng(0)) for i in order]
