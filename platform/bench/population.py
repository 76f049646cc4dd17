"""The population simulator: PBT's decisions carried out on a backend with weights.

:func:`~warmtune.bench.simulator.simulate` hands a searcher that copies checkpoints
(``Searcher.copies_checkpoints``: PBT) to a :class:`Population`, which does what
Ray's asynchronous ``PopulationBasedTraining`` scheduler does on a cluster
(``warmtune.searchers.ray_adapter.PBTScheduler``), with the searcher deciding the same
way in both:

- A free worker starts a member that has not run yet (Tune starts pending trials
  first; the engine asks the searcher for new members), else resumes the paused member
  with the fewest iterations (ties: the order members joined), as Ray's
  ``choose_trial_to_run`` does.
- A member trains one iteration at a time (``backend.step``), each taking its cost in
  simulated seconds; results are told in time order across the workers.
- When the searcher says a result is at a perturbation point (``due``), it goes to
  ``perturb`` instead of ``tell``. The engine keeps the member's weights and iteration
  when told to checkpoint. On an exploit the member takes the source's kept weights,
  iteration and the explored configuration, and pauses (Ray pauses it to restore the
  copied checkpoint). Otherwise it pauses if other members are waiting (new or paused),
  so a population larger than the workers takes turns, and continues if none is.
- A member ends when it reaches ``max_budget`` (a job's stop criterion). A failed
  result (a diverged loss) does not end it, as on Ray, where a trial that reports NaN
  goes on: PBT ranks it last, and it copies a good member at its next perturbation point.

Limits and rows are those of :func:`~warmtune.bench.simulator.simulate`: every report
costs ``1 / max_budget`` FFE, the work in flight is cut at a limit, and ``segment``
counts a member's runs (+1 each time it resumes). An exploited member reports
iterations it has reported before: its rows after the exploit continue from the
source's checkpoint.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from typing import Any

from warmtune.bench.backends import TrainingBackend
from warmtune.bench.results import ContractError, StopReason
from warmtune.searchers.base import Observation, Searcher

__all__ = ["Population"]


@dataclass
class _Member:
    config: dict[str, Any]
    weights: Any
    iteration: int = 0
    runs: int = 0
    kept: tuple[Any, int] | None = None  # weights and iteration of the kept checkpoint
    status: str = "pending"  # pending, running, paused, ended
    joined: int = 0
    config_json: str = field(init=False)

    def __post_init__(self) -> None:
        self.config_json = json.dumps(self.config, sort_keys=True)


class Population:
    """The event loop of a population (see the module docstring). The limits come checked
    from :func:`~warmtune.bench.simulator.simulate` (``limit_spend`` in iterations)."""

    def __init__(
        self,
        *,
        searcher: Searcher,
        backend: Any,
        workers: int,
        limit_spend: float,
        limit_reports: float,
        max_time: float,
    ) -> None:
        if not isinstance(backend, TrainingBackend):
            raise ValueError(
                f"searcher {searcher.name!r} copies trials' weights into others (exploit), so "
                f"its backend needs weights: initial(config) and step(weights, config, "
                f"iteration) (see TrainingBackend); {type(backend).__name__} has none. On a "
                "benchmark: warmtune bench nqm"
            )
        self.searcher, self.backend = searcher, backend
        self.max_budget = int(backend.max_budget)
        self.limit_spend, self.limit_reports = limit_spend, limit_reports
        self.max_time = max_time
        self.idle = list(range(workers))
        # Reports due: (time, sequence, member, worker, started, weights, value).
        self.queue: list[tuple[float, int, str, int, float, Any, float | None]] = []
        self.sequence = 0
        self.now = 0.0
        self.reported = 0
        self.members: dict[str, _Member] = {}
        self.next_id = 0
        self.exhausted = False  # the searcher has no new member to give
        self.rows: list[tuple[Any, ...]] = []

    @property
    def spent(self) -> int:
        """Iterations reported (each one is charged)."""
        return self.reported

    def run(self) -> StopReason:
        """Simulate until a limit or until every member ended; returns why it stopped."""
        self._fill()
        while self.queue:
            due, _, tid, worker, started, weights, value = self.queue[0]
            if due > self.max_time:
                self.now = self.max_time
                return self._stop("max_time")
            heapq.heappop(self.queue)
            self.now = due
            self._report(tid, worker, started, weights, value)
            if self.reported >= self.limit_spend:
                return self._stop("budget_ffe")
            if self.reported >= self.limit_reports:
                return self._stop("max_evaluations")
            self._fill()
        return self._stop("exhausted")

    # Work ------------------------------------------------------------------------------
    def _pending(self) -> str | None:
        """A member that has not run yet, asking the searcher for one if none waits."""
        for tid, m in self.members.items():
            if m.status == "pending":
                return tid
        if self.exhausted:
            return None
        fresh = f"t{self.next_id}"
        suggestion = self.searcher.ask(fresh)
        if suggestion is None:
            self.exhausted = True
            return None
        self.next_id += 1
        config = dict(suggestion.config)
        self.members[fresh] = _Member(
            config=config, weights=self.backend.initial(config), joined=len(self.members)
        )
        return fresh

    def _paused(self) -> str | None:
        paused = [
            (m.iteration, m.joined, t) for t, m in self.members.items() if m.status == "paused"
        ]
        return min(paused)[2] if paused else None

    def _fill(self) -> None:
        while self.idle:
            tid = self._pending() or self._paused()
            if tid is None:
                return
            self._run(tid, heapq.heappop(self.idle))

    def _run(self, tid: str, worker: int) -> None:
        member = self.members[tid]
        member.status = "running"
        member.runs += 1
        self._step(tid, worker)

    def _step(self, tid: str, worker: int) -> None:
        member = self.members[tid]
        weights, value, cost = self.backend.step(
            member.weights, member.config, member.iteration + 1
        )
        if not 0.0 <= cost < math.inf:
            raise ValueError(f"backend returned cost {cost!r}; a cost is finite and >= 0")
        self.sequence += 1
        heapq.heappush(
            self.queue, (self.now + cost, self.sequence, tid, worker, self.now, weights, value)
        )

    # Reports ---------------------------------------------------------------------------
    def _report(
        self, tid: str, worker: int, started: float, weights: Any, value: float | None
    ) -> None:
        member = self.members[tid]
        member.weights, member.iteration = weights, member.iteration + 1
        observation = Observation.of(tid, member.config, member.iteration, value)
        self.reported += 1
        self.rows.append(
            (
                tid,
                member.config_json,
                member.iteration,
                math.nan if observation.value is None else observation.value,
                started,
                self.now,
                worker,
                member.runs - 1,
                self.reported / self.max_budget,
            )
        )
        if member.iteration >= self.max_budget:
            self.searcher.tell(observation)
            self._free(tid, worker, "ended")
            self.searcher.on_trial_end(tid)
            return
        if not self.searcher.due(tid, member.iteration):
            self.searcher.tell(observation)
            self._step(tid, worker)
            return
        decision = self.searcher.perturb(observation)
        # A member keeps a checkpoint until its next perturbation point (Ray forgets it
        # when the member is not at the top there).
        member.kept = (member.weights, member.iteration) if decision.checkpoint else None
        exploit = decision.exploit
        if exploit is not None:
            source = self.members.get(exploit.source)
            if source is None or source.kept is None:
                raise ContractError(
                    f"the searcher has {tid!r} copy {exploit.source!r}, which kept no "
                    "checkpoint at its latest perturbation point"
                )
            member.weights, member.iteration = source.kept
            member.config = dict(exploit.config)
            member.config_json = json.dumps(member.config, sort_keys=True)
            self._free(tid, worker, "paused")
        elif self._pending() is not None or self._paused() is not None:
            self._free(tid, worker, "paused")
        else:
            self._step(tid, worker)

    def _free(self, tid: str, worker: int, status: str) -> None:
        self.members[tid].status = status
        heapq.heappush(self.idle, worker)

    def _stop(self, reason: StopReason) -> StopReason:
        """End every member still running (cut) or paused, in the order they joined."""
        for tid, m in self.members.items():
            if m.status in ("running", "paused"):
                m.status = "ended"
                self.searcher.on_trial_end(tid)
        return reason
