"""What a searcher knows of one finished search: :class:`PastTask`.

The knowledge base (``warmtune.knowledge``) turns its rows into past tasks; searchers
never read the store's columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from warmtune.space import SearchSpace

__all__ = ["PastTask"]


class PastTask:
    """The observations of one finished search, with values to *minimise*.

    Args:
        name: task name, unique within a knowledge base.
        meta_features: name -> number or label (str/bool) describing the task.
        space: the search space the task was searched in.
        configs: the evaluated configurations, in ``space``.
        values: the metric as reported, one per config.
        budgets: the budget of each observation; default: all at ``max_budget``.
        max_budget: the task's full budget; default: the largest budget seen (1 if none).
        mode: ``"min"`` or ``"max"``: how ``values`` are reported. ``"max"`` values are
            negated here, so :attr:`values` is always to be minimised.
        runtimes: seconds of training each observation took to reach its budget
            (``NaN`` where unknown); default: unknown.

    Observations with a non-finite value or budget (failed trials) are dropped.

    Raises:
        ValueError: empty name, unknown mode, or lengths that do not match.
    """

    def __init__(
        self,
        *,
        name: str,
        meta_features: Mapping[str, Any],
        space: SearchSpace,
        configs: Sequence[Mapping[str, Any]],
        values: Sequence[float] | np.ndarray,
        budgets: Sequence[float] | np.ndarray | None = None,
        max_budget: float | None = None,
        mode: str = "min",
        runtimes: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not isinstance(space, SearchSpace):
            raise ValueError(f"space must be a SearchSpace, got {type(space).__name__}")
        vals = np.asarray(values, dtype=float).reshape(-1)
        if len(vals) != len(configs):
            raise ValueError(
                f"task {name!r}: {len(configs)} configs but {len(vals)} values; "
                "give one value per config"
            )
        if budgets is None:
            full = 1.0 if max_budget is None else float(max_budget)
            buds = np.full(len(vals), full)
        else:
            buds = np.asarray(budgets, dtype=float).reshape(-1)
            if len(buds) != len(vals):
                raise ValueError(
                    f"task {name!r}: {len(vals)} values but {len(buds)} budgets; "
                    "give one budget per value or none"
                )
        if runtimes is None:
            times = np.full(len(vals), np.nan)
        else:
            times = np.asarray(runtimes, dtype=float).reshape(-1)
            if len(times) != len(vals):
                raise ValueError(
                    f"task {name!r}: {len(vals)} values but {len(times)} runtimes; "
                    "give one runtime per value (NaN where unknown) or none"
                )
        keep = np.isfinite(vals) & np.isfinite(buds)
        self.name = name
        self.meta_features = dict(meta_features)
        self.space = space
        self.configs = [dict(c) for c, k in zip(configs, keep, strict=True) if k]
        self.values = (vals[keep] if mode == "min" else -vals[keep]).copy()
        self.budgets = buds[keep].copy()
        self.runtimes = times[keep].copy()
        if max_budget is None:
            max_budget = float(self.budgets.max()) if len(self.budgets) else 1.0
        self.max_budget = float(max_budget)

    def __repr__(self) -> str:
        return f"PastTask(name={self.name!r}, observations={len(self.values)})"

    def __len__(self) -> int:
        return len(self.values)

    def final_indices(self) -> np.ndarray:
        """Per distinct configuration, the index of its highest-budget observation."""
        if len(self.budgets) == 0 or np.all(self.budgets == self.budgets[0]):
            return np.arange(len(self.values))
        best: dict[str, int] = {}
        for i, config in enumerate(self.configs):
            key = json.dumps(config, sort_keys=True)
            j = best.get(key)
            if j is None or self.budgets[i] > self.budgets[j]:
                best[key] = i
        return np.array(sorted(best.values()), dtype=int)

    def budget_levels(self, min_count: int = 1) -> list[float]:
        """The distinct budgets with at least ``min_count`` observations, lowest first."""
        levels, counts = np.unique(self.budgets, return_counts=True)
        return [float(b) for b, c in zip(levels, counts, strict=True) if c >= min_count]

    def at_budget(self, budget: float) -> np.ndarray:
        """Indices of the observations at ``budget`` (one per configuration: the last)."""
        idx = np.flatnonzero(np.isclose(self.budgets, budget, rtol=1e-9, atol=1e-12))
        last: dict[str, int] = {}
        for i in idx:
            last[json.dumps(self.configs[i], sort_keys=True)] = int(i)
        return np.array(sorted(last.values()), dtype=int)
