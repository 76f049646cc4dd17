"""Simulator backends: what they must do, and those over real benchmarks (a YAHPO Gym
instance, a NAS-Bench-201 dataset, the noisy quadratic model).

A backend is what :func:`warmtune.bench.simulator.simulate` evaluates (see
:class:`Backend`): ``evaluate(config, budget)`` returns the value to minimise and the
seconds that report took. A backend with weights (:class:`TrainingBackend`) also
trains a trial's weights iteration by iteration, so PBT can copy them.

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
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from warmtune.space import CategoricalParam, SearchSpace

__all__ = [
    "FIDELITY_KINDS",
    "Backend",
    "BatchedBackend",
    "FixedFidelity",
    "NB201Backend",
    "NQMBackend",
    "SyntheticBackend",
    "TrainingBackend",
    "YahpoBackend",
    "YahpoFloatBackend",
    "fidelity_kind",
]

#: The kinds of fidelity a backend can declare (see :class:`Backend`).
FIDELITY_KINDS = ("iterations", "retrain")


@runtime_checkable
class Backend(Protocol):
    """What the simulator evaluates: one report of a configuration at a budget.

    ``evaluate(config, budget)`` returns ``(value, cost)``:

    - ``value`` is minimised (negate accuracies); ``None`` or a non-finite value
      is a failed trial, which the simulator tells and never resumes.
    - ``cost`` is simulated seconds, finite and ``>= 0``; what it covers depends on
      the backend's kind of fidelity.

    A backend declares its kind in a ``fidelity_kind`` attribute, one of
    :data:`FIDELITY_KINDS`; a backend that declares none is an ``"iterations"``
    backend, so backends written before float fidelities keep working:

    - ``"iterations"``: ``budget`` is a training iteration, an int from 1 to
      ``max_budget`` (an int). ``cost`` is the seconds it takes to go from iteration
      ``budget - 1`` to ``budget``, not the cumulative runtime: a surrogate that
      predicts cumulative time (LCBench reports ``time`` per epoch) returns
      ``time(budget) - time(budget - 1)``; a tabular backend without runtimes
      documents a cost model of its own, e.g. a constant cost per iteration (its
      full training time divided by ``max_budget``), scaled by the model size.
    - ``"retrain"``: ``budget`` is a fidelity value in ``[min_budget, max_budget]``
      (floats; the backend has a ``min_budget`` attribute), such as the fraction of
      the training set. Each evaluation is a fit from scratch: ``cost`` is the
      runtime of the whole fit at ``budget``, and the simulator charges it in full
      every time, promotions included (see the module docstring).

    The simulator calls ``evaluate`` for iterations in increasing order within a
    segment, but a backend should not rely on it: a pure function of
    ``(config, budget)`` is what makes simulations reproducible.

    Attributes:
        max_budget: the full fidelity: training iterations, or the highest fidelity
            value of a ``"retrain"`` backend.
    """

    @property
    def max_budget(self) -> float:
        """The full fidelity (an int for ``"iterations"`` backends)."""
        ...

    def evaluate(self, config: dict[str, Any], budget: Any) -> tuple[float | None, float]:
        """``(value to minimise or None, cost in seconds)`` of the report at ``budget``."""
        ...


def fidelity_kind(backend: Any) -> str:
    """The kind of fidelity ``backend`` declares (``"iterations"`` when it declares none).

    Raises:
        ValueError: a kind that is not one of :data:`FIDELITY_KINDS`.
    """
    kind = getattr(backend, "fidelity_kind", "iterations")
    if kind not in FIDELITY_KINDS:
        raise ValueError(
            f"backend.fidelity_kind must be one of {list(FIDELITY_KINDS)}, got {kind!r}; "
            "'iterations' for training steps a checkpoint continues, 'retrain' for a "
            "fidelity that is fitted from scratch at every budget (e.g. a data fraction)"
        )
    return str(kind)


@runtime_checkable
class BatchedBackend(Backend, Protocol):
    """A backend that can also evaluate a whole segment at once (one surrogate call).

    The simulator prefers ``evaluate_many`` when a backend has it: it is called
    once per segment with the iterations the segment will run, and must return
    what ``evaluate`` would return for each. If the segment is cut short
    (failure, end of the simulation), the extra results are discarded.
    """

    def evaluate_many(
        self, config: dict[str, Any], budgets: Sequence[int]
    ) -> Sequence[tuple[float | None, float]]:
        """``[evaluate(config, b) for b in budgets]``, computed in one go."""
        ...


class SyntheticBackend:
    """A multi-fidelity quadratic on any search space, with a fixed cost per iteration.

    For tests and overhead measurements, not for benchmarks. Each active
    parameter contributes ``(u - optimum) ** 2``, where ``u`` in ``[0, 1]`` is its
    position on its own scale (log for log parameters, the choice's index for
    categoricals); the value at iteration ``b`` adds ``1 / b``, so it improves with
    budget like a learning curve and the ranking is the same at every budget.

    Args:
        space: the space the configurations come from.
        max_budget: the full fidelity, in iterations.
        cost_per_iteration: simulated seconds each iteration takes.
        optimum: the position ``u`` of the best value of every parameter.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        max_budget: int = 27,
        cost_per_iteration: float = 1.0,
        optimum: float = 0.3,
    ) -> None:
        if not isinstance(max_budget, int) or max_budget < 1:
            raise ValueError(f"max_budget must be an int >= 1 iteration, got {max_budget!r}")
        if not cost_per_iteration >= 0:
            raise ValueError(f"cost_per_iteration must be >= 0 seconds, got {cost_per_iteration}")
        self.space = space
        self.max_budget = max_budget
        self.cost_per_iteration = float(cost_per_iteration)
        self.optimum = float(optimum)

    def evaluate(self, config: dict[str, Any], budget: int) -> tuple[float, float]:
        """The value at iteration ``budget`` and the cost of one iteration."""
        return self.base_value(config) + 1.0 / budget, self.cost_per_iteration

    def evaluate_many(
        self, config: dict[str, Any], budgets: Sequence[int]
    ) -> list[tuple[float, float]]:
        """:meth:`evaluate` for each budget, with the configuration's part computed once."""
        base, cost = self.base_value(config), self.cost_per_iteration
        return [(base + 1.0 / b, cost) for b in budgets]

    def base_value(self, config: dict[str, Any]) -> float:
        """The value the learning curve converges to (``budget`` -> infinity)."""
        return sum((self._position(name, v) - self.optimum) ** 2 for name, v in config.items())

    def _position(self, name: str, value: Any) -> float:
        p = self.space[name]
        if isinstance(p, CategoricalParam):
            return p.index(value) / max(len(p.choices) - 1, 1)
        if p.high == p.low:
            return 0.0
        if p.log:
            return math.log(value / p.low) / math.log(p.high / p.low)
        return (value - p.low) / (p.high - p.low)


@runtime_checkable
class TrainingBackend(Backend, Protocol):
    """A backend whose trials have weights, which PBT's exploit copies from one trial
    into another (the population simulator, :mod:`warmtune.bench.population`).

    ``initial(config)`` is a trial's weights before training; ``step(weights, config,
    iteration)`` trains the ``iteration``-th iteration with ``config`` and returns
    ``(weights, value, cost)`` as ``evaluate`` does. ``evaluate(config, budget)`` is
    what ``budget`` steps from ``initial(config)`` with that one configuration give,
    so every other searcher runs on the same backend. ``step`` must not change the
    weights it is given (a kept checkpoint is shared).
    """

    def initial(self, config: dict[str, Any]) -> Any:
        """The weights before the first iteration."""
        ...

    def step(
        self, weights: Any, config: dict[str, Any], iteration: int
    ) -> tuple[Any, float | None, float]:
        """``(new weights, value to minimise or None, cost in seconds)`` of one iteration."""
        ...


# Real benchmarks ------------------------------------------------------------------------
class NQMBackend:
    """The noisy quadratic model (:mod:`warmtune.trainables.nqm`): exact, with weights.

    A training iteration processes the task's ``examples`` and costs
    ``examples * seconds_per_example`` simulated seconds whatever the configuration (a
    batch of ``b`` examples takes ``b`` times as long as one example; the iteration
    holds ``examples // b`` of them). A diverged trial (infinite loss) fails.
    """

    fidelity_kind = "iterations"

    def __init__(self, model: Any, max_budget: int, seconds_per_example: float = 1e-4) -> None:
        self.model = model
        self.max_budget = int(max_budget)
        self.cost = model.examples * seconds_per_example

    def evaluate(self, config: dict[str, Any], budget: int) -> tuple[float | None, float]:
        return _finite(float(self.model.losses([config], int(budget))[0])), self.cost

    def evaluate_many(
        self, config: dict[str, Any], budgets: Sequence[int]
    ) -> list[tuple[float | None, float]]:
        out, weights, done = [], self.initial(config), 0
        for b in budgets:
            weights = self.model.train(weights, config, int(b) - done)
            done = int(b)
            out.append((_finite(self.model.loss(weights)), self.cost))
        return out

    def initial(self, config: dict[str, Any]) -> Any:
        return self.model.initial()

    def step(
        self, weights: Any, config: dict[str, Any], iteration: int
    ) -> tuple[Any, float | None, float]:
        weights = self.model.train(weights, config)
        return weights, _finite(self.model.loss(weights)), self.cost


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


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
