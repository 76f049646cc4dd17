"""Simulator backends over real benchmarks: a YAHPO Gym instance, a NAS-Bench-201 dataset.

A backend is what :func:`warmtune.bench.simulator.simulate` evaluates (see
:class:`~warmtune.bench.simulator.Backend`): ``evaluate(config, budget)`` returns the
value to minimise and the seconds that report took.

How the fidelity behaves decides the backend:

* an integer fidelity (LCBench's ``epoch``) is a training iteration:
  :class:`YahpoBackend`, an ``"iterations"`` backend; a promotion continues from the
  checkpoint and costs only the epochs it adds;
* a float fidelity (``trainsize``, the fraction of the training set in the ``iaml_*``
  and ``rbv2_*`` scenarios) is a fit from scratch at that fidelity:
  :class:`YahpoFloatBackend`, a ``"retrain"`` backend; a promotion refits on more
  data and costs the whole fit again. A model fitted on a third of the data cannot
  be continued onto all of it, which is why charging only the increment would
  understate the cost of successive halving on such a fidelity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["FixedFidelity", "NB201Backend", "YahpoBackend", "YahpoFloatBackend"]


class YahpoBackend:
    """One YAHPO instance as a simulator backend (iteration ``b`` = fidelity ``low + b - 1``).

    Args:
        scenario: the :class:`~warmtune.trainables.benchmarks.yahpo.YahpoScenario`.
        instance: the task (e.g. an OpenML id for lcbench).
        metric: the surrogate output to optimise.
        mode: ``"min"`` or ``"max"``; values are negated for ``"max"``.
        fidelity: the integer fidelity parameter (e.g. ``epoch``).
    """

    def __init__(
        self, scenario: Any, *, instance: str, metric: str, mode: str, fidelity: str
    ) -> None:
        self.scenario = scenario
        self.instance = instance
        self.metric = metric
        self.sign = 1.0 if mode == "min" else -1.0
        self.fidelity = fidelity
        p = scenario.fidelity_space[fidelity]
        self.low = int(p.low)
        self.max_budget = int(p.high) - self.low + 1
        self.runtime = scenario.meta.runtime_name or (
            "time" if "time" in scenario.outputs else None
        )

    def evaluate(self, config: dict[str, Any], budget: int) -> tuple[float | None, float]:
        """``(value to minimise, seconds from iteration budget - 1 to budget)``."""
        return self.evaluate_many(config, [budget])[0]

    def evaluate_many(
        self, config: dict[str, Any], budgets: Sequence[int]
    ) -> list[tuple[float | None, float]]:
        """:meth:`evaluate` for a whole segment in one surrogate call."""
        budgets = list(budgets)
        if not budgets:
            return []
        # One batch: every needed iteration plus the one before the first, so that the
        # per-iteration cost is a difference of the surrogate's cumulative runtime.
        first = max(budgets[0] - 1, 1)
        steps = list(range(first, budgets[-1] + 1))
        rows = [{**config, self.fidelity: self.low + b - 1} for b in steps]
        out = self.scenario.evaluate(rows, instance=self.instance)
        values = dict(zip(steps, self.sign * out[self.metric].to_numpy(), strict=True))
        times = (
            dict(zip(steps, out[self.runtime].to_numpy(), strict=True))
            if self.runtime
            else dict.fromkeys(steps, 0.0)
        )
        results: list[tuple[float | None, float]] = []
        for b in budgets:
            previous = times[b - 1] if b > 1 else 0.0
            # The surrogate's cumulative time is not exactly monotone; a negative step
            # would be an invalid cost, so clip it.
            cost = max(float(times[b]) - float(previous), 0.0) if self.runtime else 1.0
            value = float(values[b])
            results.append((value if math.isfinite(value) else None, cost))
        return results


class YahpoFloatBackend:
    """One YAHPO instance with a float fidelity as a ``"retrain"`` simulator backend.

    The budget *is* the fidelity value, in the scenario's range ``[min_budget,
    max_budget]`` (iaml's ``trainsize``: 0.03..1.0). Each evaluation is one surrogate
    call and one report. Its cost is the surrogate's runtime output at that fidelity
    (the scenario's ``runtime_name``; iaml: ``timetrain``), the time of the whole fit,
    which the simulator charges in full, promotions included. A scenario without a
    runtime output costs its fidelity value in seconds per fit.

    Args:
        scenario: the :class:`~warmtune.trainables.benchmarks.yahpo.YahpoScenario`.
        instance: the task (e.g. an OpenML id).
        metric: the surrogate output to optimise.
        mode: ``"min"`` or ``"max"``; values are negated for ``"max"``.
        fidelity: the float fidelity parameter (e.g. ``trainsize``).
    """

    fidelity_kind = "retrain"

    def __init__(
        self, scenario: Any, *, instance: str, metric: str, mode: str, fidelity: str
    ) -> None:
        self.scenario = scenario
        self.instance = instance
        self.metric = metric
        self.sign = 1.0 if mode == "min" else -1.0
        self.fidelity = fidelity
        p = scenario.fidelity_space[fidelity]
        self.min_budget = float(p.low)
        self.max_budget = float(p.high)
        self.runtime = scenario.meta.runtime_name or (
            "time" if "time" in scenario.outputs else None
        )

    def evaluate(self, config: dict[str, Any], budget: float) -> tuple[float | None, float]:
        """``(value to minimise, seconds of a whole fit at fidelity budget)``."""
        out = self.scenario.evaluate([{**config, self.fidelity: budget}], instance=self.instance)
        value = self.sign * float(out[self.metric].iloc[0])
        # A surrogate's runtime can dip below zero far from its data; a cost cannot.
        cost = max(float(out[self.runtime].iloc[0]), 0.0) if self.runtime else float(budget)
        return (value if math.isfinite(value) else None), cost


class NB201Backend:
    """A NAS-Bench-201 dataset as a single-fidelity backend (negated test accuracy).

    Args:
        table: the :class:`~warmtune.trainables.benchmarks.nb201.NB201Table`.
        dataset: ``cifar10``, ``cifar100`` or ``imagenet16-120``.
    """

    max_budget = 1

    def __init__(self, table: Any, dataset: str) -> None:
        self.table = table
        self.dataset = dataset

    def evaluate(self, config: dict[str, Any], budget: int) -> tuple[float, float]:
        """``(-accuracy, evaluation_cost(config))``."""
        from warmtune.trainables.benchmarks.nb201 import evaluation_cost

        return -self.table.accuracy(config, self.dataset), evaluation_cost(config)


class FixedFidelity:
    """A scenario whose other fidelities are pinned (e.g. a data fraction at its maximum)."""

    def __init__(self, scenario: Any, fixed: Mapping[str, Any]) -> None:
        self._scenario = scenario
        self._fixed = dict(fixed)
        self.meta, self.outputs = scenario.meta, scenario.outputs
        self.fidelity_space = scenario.fidelity_space

    def evaluate(self, configs: Sequence[Mapping[str, Any]], **kwargs: Any) -> pd.DataFrame:
        return self._scenario.evaluate([{**c, **self._fixed} for c in configs], **kwargs)
