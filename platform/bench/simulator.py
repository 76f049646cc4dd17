"""The benchmark simulator: N asynchronous workers replayed as a discrete-event simulation.

It drives the very same ask/tell searchers as the Ray adapters
(:mod:`warmtune.searchers.base`), but instead of training it asks a *backend* (a
surrogate or tabular benchmark) for each iteration's value and runtime, and
advances a simulated clock by that runtime. Searchers therefore see the
interleaving they would see on a cluster of ``workers`` machines, in seconds of
real time.

How a simulation runs:

- Every free worker asks the searcher for work with a fresh trial id (``t0``,
  ``t1``, ...). A :class:`~warmtune.searchers.base.Suggestion` runs from its start
  iteration (0, or the progress of the trial named by ``resume_from``) up to its
  budget (``None``: the backend's ``max_budget``), one iteration at a time (but see
  "Two kinds of fidelity" below).
- Each iteration takes the backend's cost in simulated seconds. Its observation
  is told to the searcher at the simulated moment it is reported, in time order
  across all workers (ties: the order the iterations were scheduled in), so an
  asynchronous searcher decides with exactly the results a cluster would have.
- A segment ends when it reports at its budget or fails (value ``None`` or not
  finite). :meth:`~warmtune.searchers.base.Searcher.on_trial_end` is called when
  the trial will not continue: it reached ``max_budget``, it failed, or the
  simulation stopped. A trial that reached a lower budget is *paused*: a
  promotion may resume it later, from where it stopped.
- When :meth:`~warmtune.searchers.base.Searcher.ask` returns ``None`` the worker
  idles until the next report; when it returns ``None`` and no worker is busy,
  the search is over.

Two kinds of fidelity (a backend declares its kind, see :class:`Backend`):

- ``"iterations"`` (LCBench's ``epoch``, the default): budgets are training
  iterations ``1..max_budget``. Every iteration is one report; a promotion continues
  from the trial's checkpoint, so it runs and is charged only the iterations above
  the rung it was paused at. Each reported iteration costs ``1 / max_budget`` FFE.
- ``"retrain"`` (a float fidelity such as YAHPO's ``trainsize``, the fraction of the
  training set): budgets *are* fidelity values in ``[min_budget, max_budget]``. An
  evaluation at budget ``b`` is one fit on that much data and one report; it costs
  ``b / max_budget`` FFE and the backend's runtime of a whole fit at ``b``. A model
  fitted on a third of the data cannot be continued onto all of it, so a promoted
  trial is fitted again from scratch and charged the *full* cost of its new rung
  (``b' / max_budget`` FFE and the runtime at ``b'``), never only the increment.

Limits, whichever comes first:

- ``budget_ffe``: full-fidelity equivalents, ``fidelity / max_budget`` per report
  (above), so one evaluation at full fidelity costs 1 FFE.
- ``max_evaluations``: reports (rows of the result).
- ``max_time``: simulated seconds.

A searcher that copies checkpoints (PBT) runs on a backend with weights in the
population simulator instead (:mod:`warmtune.bench.population`), under the same limits.

At a limit the simulation *cuts* the work in flight rather than finishing it: the
report that spends the last FFE (or evaluation) is the last one told, and the
iterations other workers were computing at that moment are neither reported nor
charged. With a ``"retrain"`` backend one report can cost up to 1 FFE, so the next
report due may not fit in what is left: then it is cut too, the simulation stops
at the moment it was due, and the spend stays at or under ``budget_ffe``. Charging
only what was reported keeps the anytime curve honest: every point of
:meth:`SimulationResult.incumbent_trajectory` was paid for with exactly the FFE it
is plotted at, whatever the number of workers. The cut trials end with
``on_trial_end``, as a cluster stops its trials when a job's budget runs out.

The simulator owns no randomness except an optional runtime jitter drawn from
its own generator (``seed``); ties in the event queue are broken by a sequence
number, so the same searcher seed, backend and simulation seed give the same
result, row for row.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from warmtune.bench.backends import Backend, fidelity_kind
from warmtune.bench.population import Population
from warmtune.bench.results import COLUMNS, ContractError, SimulationResult, StopReason
from warmtune.searchers.base import Observation, Searcher, Suggestion

__all__ = ["simulate"]

# Suggestion budgets are floats after rung arithmetic (27 * 3**-2 = 3.0000000000000004).
_EPS = 1e-9


# The simulation -------------------------------------------------------------------------
def simulate(
    searcher: Searcher,
    backend: Backend,
    *,
    workers: int,
    budget_ffe: float | None = None,
    max_evaluations: int | None = None,
    max_time: float | None = None,
    seed: int = 0,
    jitter: float = 0.0,
) -> SimulationResult:
    """Run ``searcher`` on ``backend`` with ``workers`` simulated asynchronous workers.

    See the module docstring for the event model and how limits cut the work in flight.

    Args:
        searcher: a freshly built ask/tell searcher (for multi-fidelity searchers,
            built with ``max_budget=backend.max_budget``, and for a ``"retrain"``
            backend with ``min_budget=backend.min_budget``).
        backend: what evaluates one report (see :class:`Backend`).
        workers: how many trials run at once.
        budget_ffe: stop once this many full-fidelity equivalents were reported.
        max_evaluations: stop once this many reports were made.
        max_time: stop at this simulated time (seconds).
        seed: seed of the simulation's own generator (used only by ``jitter``).
        jitter: spread of each iteration's runtime around the backend's cost
            (sigma of a mean-preserving log-normal factor); 0 keeps costs exact.
            Models machines of uneven speed and breaks the lock-step of
            backends with constant costs.

    Returns:
        The :class:`SimulationResult`.

    Raises:
        ValueError: a bad argument or backend output (the message says the fix).
        ContractError: the searcher broke the ask/tell contract.
    """
    _check_arguments(searcher, backend, workers, budget_ffe, max_evaluations, max_time, jitter)
    retrain = fidelity_kind(backend) == "retrain"
    # The spend limit in budget units: whole iterations (the report that crosses the
    # limit is told), or fidelity values summed over reports (nothing past the limit).
    limit_spend: float
    if budget_ffe is None:
        limit_spend = math.inf
    elif retrain:
        limit_spend = budget_ffe * backend.max_budget
    else:
        limit_spend = math.ceil(budget_ffe * backend.max_budget - _EPS)
    limit_reports = math.inf if max_evaluations is None else max_evaluations
    max_seconds = math.inf if max_time is None else float(max_time)
    simulation: _Simulation | Population
    if searcher.copies_checkpoints:
        # PBT: members copy each other's weights; see warmtune.bench.population.
        if retrain or jitter:
            raise ValueError(
                f"searcher {searcher.name!r} trains members iteration by iteration: it needs "
                "an 'iterations' backend with weights, and no runtime jitter"
            )
        simulation = Population(
            searcher=searcher,
            backend=backend,
            workers=workers,
            limit_spend=limit_spend,
            limit_reports=limit_reports,
            max_time=max_seconds,
        )
    else:
        simulation = _Simulation(
            searcher=searcher,
            backend=backend,
            workers=workers,
            limit_spend=limit_spend,
            limit_reports=limit_reports,
            max_time=max_seconds,
            rng=np.random.default_rng(seed) if jitter > 0 else None,
            jitter=float(jitter),
        )
    reason: StopReason = simulation.run()
    return SimulationResult(
        evaluations=pd.DataFrame.from_records(simulation.rows, columns=COLUMNS),
        max_budget=backend.max_budget,
        workers=workers,
        seed=seed,
        stop_reason=reason,
        end_time=simulation.now,
        ffe_spent=simulation.spent / backend.max_budget,
    )


def _check_arguments(
    searcher: Searcher,
    backend: Backend,
    workers: int,
    budget_ffe: float | None,
    max_evaluations: int | None,
    max_time: float | None,
    jitter: float,
) -> None:
    if not isinstance(searcher, Searcher):
        raise ValueError(
            f"searcher must be a warmtune Searcher, got {type(searcher).__name__}; "
            "build one with warmtune.searchers.make_searcher"
        )
    max_budget = getattr(backend, "max_budget", None)
    if fidelity_kind(backend) == "retrain":
        min_budget = getattr(backend, "min_budget", None)
        if not (
            _is_number(max_budget)
            and _is_number(min_budget)
            and 0 < min_budget <= max_budget < math.inf  # type: ignore[operator]
        ):
            raise ValueError(
                f"a 'retrain' backend needs numbers 0 < min_budget <= max_budget (its lowest "
                f"and full fidelity), got min_budget={min_budget!r}, max_budget={max_budget!r}"
            )
    elif not isinstance(max_budget, int) or isinstance(max_budget, bool) or max_budget < 1:
        raise ValueError(
            f"backend.max_budget must be an int >= 1 (iterations), got {max_budget!r}; a "
            "float fidelity declares fidelity_kind = 'retrain' and a min_budget"
        )
    if not callable(getattr(backend, "evaluate", None)):
        raise ValueError("backend needs evaluate(config, budget) -> (value, cost)")
    searcher_budget = getattr(searcher, "max_budget", None)
    if searcher_budget is not None and abs(searcher_budget - max_budget) > _EPS:
        raise ValueError(
            f"the searcher's max_budget ({searcher_budget}) differs from the backend's "
            f"({max_budget}); build it with make_searcher(..., max_budget=backend.max_budget)"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if budget_ffe is None and max_evaluations is None and max_time is None:
        raise ValueError(
            "give at least one limit: budget_ffe, max_evaluations or max_time "
            "(most searchers never run out of suggestions)"
        )
    if budget_ffe is not None and not budget_ffe > 0:
        raise ValueError(f"budget_ffe must be > 0 full-fidelity evaluations, got {budget_ffe}")
    if max_evaluations is not None and (
        isinstance(max_evaluations, bool)
        or not isinstance(max_evaluations, int)
        or max_evaluations < 1
    ):
        raise ValueError(f"max_evaluations must be an int >= 1, got {max_evaluations!r}")
    if max_time is not None and not max_time > 0:
        raise ValueError(f"max_time must be > 0 simulated seconds, got {max_time}")
    if not 0 <= jitter < math.inf:
        raise ValueError(f"jitter must be >= 0 (0 keeps the backend's costs), got {jitter}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Segment:
    """One suggestion being run on one worker: iterations ``start + 1 .. target``.

    For a ``"retrain"`` backend a segment is a single report at ``target``.
    """

    __slots__ = (
        "trial_id",
        "config",
        "config_json",
        "worker",
        "segment",
        "target",
        "iteration",
        "results",
        "value",
        "started",
    )

    def __init__(
        self,
        *,
        trial_id: str,
        config: dict[str, Any],
        config_json: str,
        worker: int,
        segment: int,
        target: float,
        iteration: float,
        results: Iterator[tuple[float | None, float]],
    ) -> None:
        self.trial_id = trial_id
        self.config = config
        self.config_json = config_json
        self.worker = worker
        self.segment = segment
        self.target = target
        self.iteration = iteration  # the iteration (retrain: the fidelity) in flight
        self.results = results
        self.value: float | None = None  # the in-flight iteration's value, told when reported
        self.started = 0.0


@dataclass
class _Trial:
    """What the engine remembers of a trial between segments."""

    config: dict[str, Any]
    config_json: str
    progress: float = 0  # last iteration (retrain: fidelity) reported
    segments: int = 0
    running: bool = False
    failed: bool = False
    ended: bool = False  # on_trial_end was called


class _Simulation:
    """The event loop; kept free of pandas so that the overhead per iteration stays small."""

    def __init__(
        self,
        *,
        searcher: Searcher,
        backend: Backend,
        workers: int,
        limit_spend: float,
        limit_reports: float,
        max_time: float,
        rng: np.random.Generator | None,
        jitter: float,
    ) -> None:
        self.searcher = searcher
        self.backend = backend
        self.max_budget = backend.max_budget
        self.retrain = fidelity_kind(backend) == "retrain"
        self.min_budget: float = backend.min_budget if self.retrain else 1  # type: ignore[attr-defined]
        # Iterations are counted exactly; fidelity values are summed floats.
        self.tol = _EPS * self.max_budget if self.retrain else 0.0
        self.limit_spend = limit_spend
        self.limit_reports = limit_reports
        self.max_time = max_time
        self.rng = rng
        self.jitter = jitter
        self.batched = callable(getattr(backend, "evaluate_many", None))
        self.idle = list(range(workers))  # a heap: the lowest free worker takes the next work
        self.queue: list[tuple[float, int, _Segment]] = []
        self.sequence = 0
        self.now = 0.0
        self.reported = 0  # reports made
        self.spent: float = 0  # budget units charged: iterations, or fidelity values
        self.next_id = 0
        self.trials: dict[str, _Trial] = {}
        self.rows: list[tuple[Any, ...]] = []

    def run(self) -> StopReason:
        """Simulate until a limit or until the searcher is out of work; returns why it stopped."""
        self._fill()
        reason: StopReason = "exhausted"
        while self.queue:
            due, _, segment = self.queue[0]
            if due > self.max_time:
                self.now, reason = self.max_time, "max_time"
                break
            if self.spent + self._charge(segment) > self.limit_spend + self.tol:
                # Only a retrain report can overshoot (an iteration fits until the limit
                # is reached): cut it with the rest of the work in flight.
                self.now, reason = due, "budget_ffe"
                break
            heapq.heappop(self.queue)
            self.now = due
            self._report(segment)
            if self.spent >= self.limit_spend - self.tol:
                reason = "budget_ffe"
                break
            if self.reported >= self.limit_reports:
                reason = "max_evaluations"
                break
            if self.idle:
                self._fill()
        self._end_all()
        return reason

    def _charge(self, segment: _Segment) -> float:
        """Budget units a report costs: one iteration, or the whole fidelity of a refit."""
        return segment.iteration if self.retrain else 1

    # Asking ------------------------------------------------------------------------------
    def _fill(self) -> None:
        """Ask for work for every idle worker, until the searcher has none right now."""
        while self.idle:
            fresh = f"t{self.next_id}"
            suggestion = self.searcher.ask(fresh)
            if suggestion is None:
                return  # asked again after the next report, when the searcher knows more
            if suggestion.trial_id == fresh:
                self.next_id += 1
            self._launch(suggestion, heapq.heappop(self.idle))

    def _launch(self, suggestion: Suggestion, worker: int) -> None:
        trial, start = self._trial_for(suggestion)
        target = self._target(suggestion, start)
        trial.running = True
        budgets: Sequence[Any] = (
            [target] if self.retrain else range(int(start) + 1, int(target) + 1)
        )
        if self.batched:
            results = iter(self.backend.evaluate_many(trial.config, budgets))  # type: ignore[attr-defined]
        else:
            results = map(partial(self.backend.evaluate, trial.config), budgets)
        segment = _Segment(
            trial_id=suggestion.trial_id,
            config=trial.config,
            config_json=trial.config_json,
            worker=worker,
            segment=trial.segments,
            target=target,
            iteration=target if self.retrain else start + 1,
            results=results,
        )
        trial.segments += 1
        self._schedule(segment)

    def _trial_for(self, suggestion: Suggestion) -> tuple[_Trial, float]:
        """The trial a suggestion runs (checked against the contract) and its start iteration."""
        tid, source = suggestion.trial_id, suggestion.resume_from
        known = self.trials.get(tid)
        if known is not None and known.running:
            raise ContractError(f"the searcher handed out trial {tid!r} while it is still running")
        if known is not None and source != tid:
            raise ContractError(
                f"the searcher reused trial id {tid!r} for a new trial; a new trial "
                "takes the fresh id passed to ask(), a promotion sets resume_from"
            )
        if source is None:
            config = dict(suggestion.config)
            trial = _Trial(config=config, config_json=json.dumps(config, sort_keys=True))
            self.trials[tid] = trial
            return trial, 0
        parent = self.trials.get(source)
        if parent is None:
            raise ContractError(f"trial {tid!r} resumes from {source!r}, which never ran")
        if parent.failed:
            raise ContractError(f"trial {tid!r} resumes from {source!r}, which failed")
        if source == tid:  # a promotion: the paused trial continues from its checkpoint
            return parent, parent.progress
        # A new trial from another's checkpoint (PBT's exploit), with its own config.
        config = dict(suggestion.config)
        trial = _Trial(config=config, config_json=json.dumps(config, sort_keys=True))
        trial.progress = parent.progress
        self.trials[tid] = trial
        return trial, parent.progress

    def _target(self, suggestion: Suggestion, start: float) -> float:
        if self.retrain:
            return self._fidelity_target(suggestion, start)
        if suggestion.budget is None:
            target = self.max_budget
        else:
            target = min(math.ceil(suggestion.budget - _EPS), self.max_budget)
        if target <= start:
            raise ContractError(
                f"trial {suggestion.trial_id!r} should run to budget {suggestion.budget} but "
                f"its checkpoint is already at iteration {start} (max_budget {self.max_budget})"
            )
        return target

    def _fidelity_target(self, suggestion: Suggestion, start: float) -> float:
        """A retrain backend's fidelity for the suggestion, snapped to its range's ends."""
        tol = _EPS * self.max_budget
        target = self.max_budget if suggestion.budget is None else float(suggestion.budget)
        if target > self.max_budget - tol:
            target = self.max_budget
        if abs(target - self.min_budget) <= tol:
            target = self.min_budget
        if target < self.min_budget:
            raise ContractError(
                f"trial {suggestion.trial_id!r} should run at budget {suggestion.budget}, below "
                f"the backend's lowest fidelity {self.min_budget}; build the searcher with "
                "min_budget=backend.min_budget"
            )
        if target <= start + tol:
            raise ContractError(
                f"trial {suggestion.trial_id!r} is promoted to budget {suggestion.budget}, but "
                f"it was already evaluated at {start}; a promotion goes to a higher fidelity"
            )
        return target

    # Running -----------------------------------------------------------------------------
    def _schedule(self, segment: _Segment) -> None:
        """Start the segment's next iteration now; its report is due when its cost has passed."""
        value, cost = next(segment.results)
        if not 0.0 <= cost < math.inf:
            raise ValueError(
                f"backend returned cost {cost!r} for budget {segment.iteration} of "
                f"{segment.config_json}; a cost is the seconds from the previous iteration "
                "to this one, finite and >= 0"
            )
        if self.rng is not None:
            cost *= self.rng.lognormal(-0.5 * self.jitter**2, self.jitter)
        segment.value, segment.started = value, self.now
        self.sequence += 1
        heapq.heappush(self.queue, (self.now + cost, self.sequence, segment))

    def _report(self, segment: _Segment) -> None:
        """Tell the in-flight iteration's result; then continue, pause or end the trial."""
        iteration, tid = segment.iteration, segment.trial_id
        observation = Observation.of(tid, segment.config, iteration, segment.value)
        self.reported += 1
        self.spent += self._charge(segment)
        value = math.nan if observation.value is None else observation.value
        self.rows.append(
            (
                tid,
                segment.config_json,
                iteration,
                value,
                segment.started,
                self.now,
                segment.worker,
                segment.segment,
                self.spent / self.max_budget,
            )
        )
        trial = self.trials[tid]
        trial.progress = iteration
        self.searcher.tell(observation)
        if observation.value is None:
            trial.failed = True
            self._finish(segment, trial, end=True)
        elif iteration >= segment.target:
            self._finish(segment, trial, end=iteration >= self.max_budget - self.tol)
        else:
            segment.iteration += 1
            self._schedule(segment)

    def _finish(self, segment: _Segment, trial: _Trial, *, end: bool) -> None:
        """The segment is over: free its worker; end the trial unless it may be resumed."""
        trial.running = False
        heapq.heappush(self.idle, segment.worker)
        if end:
            self._end(segment.trial_id, trial)

    def _end(self, tid: str, trial: _Trial) -> None:
        trial.ended = True
        self.searcher.on_trial_end(tid)

    def _end_all(self) -> None:
        """At the stop, end every trial still running (cut) or paused, in the order they began."""
        for tid, trial in self.trials.items():
            if not trial.ended:
                trial.running = False
                self._end(tid, trial)
