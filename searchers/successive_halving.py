"""Successive halving on ask/tell: Hyperband's bracket schedule, run synchronously or as ASHA.

This module holds the bookkeeping every multi-fidelity searcher shares (which trial
runs to which budget, which trials a rung promotes) and leaves one decision to its
subclasses: where a *new* configuration comes from (:meth:`SuccessiveHalvingSearcher._new_config`).
Random sampling gives Hyperband and ASHA (:mod:`warmtune.searchers.hyperband`),
a density-ratio model gives BOHB (:mod:`warmtune.searchers.bohb`).

Two ways to promote:

* ``sync`` (Hyperband, Li et al. 2017): Hyperband's brackets one after another; a
  rung promotes its top ``1/eta`` only once every member has a result. While a
  bracket waits for stragglers, a free worker starts the next bracket (as
  HpBandSter does), unless ``max_concurrent_brackets`` brackets are already open;
  then :meth:`~SuccessiveHalvingSearcher.ask` returns ``None``.
* ``async`` (ASHA, Li et al. 2020): one ladder of rungs from the lowest budget to
  the highest; whenever asked, promote the best not-yet-promoted trial of the
  highest rung that has one in its top ``1/eta``, else start a new trial at the
  lowest rung. No worker ever idles.

A trial runs *segments*: from its start (or the checkpoint of its last rung) up to
a rung's budget, where the engine pauses it. A promotion resumes it under its own
id. A segment is over when the trial reports at (or past) its budget, or when the
engine calls ``on_trial_end``, whichever comes first; ending before the budget
counts as a failure at that rung (and so at every rung above it).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from warmtune.searchers.base import Observation, Searcher, Suggestion
from warmtune.space import SearchSpace

# Budgets are compared after float arithmetic (max_budget * eta ** -k).
_EPS = 1e-9


def rung_budgets(*, min_budget: float, max_budget: float, eta: float) -> list[float]:
    """Budgets of the most aggressive bracket's rungs, lowest first, ending at ``max_budget``.

    The lowest budget is ``max_budget * eta ** -s_max >= min_budget`` with
    ``s_max = floor(log_eta(max_budget / min_budget))``. Budgets are training
    iterations: when both ends are whole numbers the rungs are rounded to whole
    iterations (``max_budget=100, eta=3`` gives 1, 4, 11, 33, 100).
    """
    _check_budgets(min_budget, max_budget, eta)
    s_max = int(math.floor(math.log(max_budget / min_budget) / math.log(eta) + _EPS))
    budgets = [max_budget * eta ** (k - s_max) for k in range(s_max + 1)]
    if float(min_budget).is_integer() and float(max_budget).is_integer():
        budgets = [float(round(b)) for b in budgets]
    return budgets


def hyperband_brackets(
    *, min_budget: float, max_budget: float, eta: float
) -> list[list[tuple[int, float]]]:
    """Hyperband's brackets, most aggressive first: each a list of rungs ``(n_configs, budget)``.

    Bracket ``s`` (from ``s_max`` down to 0) starts ``n = ceil((s_max + 1) / (s + 1) * eta**s)``
    configurations at budget ``max_budget * eta**-s`` and keeps ``floor(n * eta**-i)`` of
    them at its ``i``-th rung. For ``max_budget=27, eta=3``: 27/9/3/1 at budgets
    1/3/9/27, then 12/4/1 at 3/9/27, 6/2 at 9/27 and 4 at 27 (Li et al. 2017, Table 1).
    """
    ladder = rung_budgets(min_budget=min_budget, max_budget=max_budget, eta=eta)
    s_max = len(ladder) - 1
    brackets = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s - _EPS)
        brackets.append(
            [(int(math.floor(n * eta**-i + _EPS)), ladder[s_max - s + i]) for i in range(s + 1)]
        )
    return brackets


def _check_budgets(min_budget: float, max_budget: float, eta: float) -> None:
    if max_budget is None:
        raise ValueError(
            "max_budget is required: pass the job's full budget in training iterations "
            "(budget.max_iterations), e.g. options={'max_budget': 27}"
        )
    if not (isinstance(min_budget, (int, float)) and min_budget > 0):
        raise ValueError(f"min_budget must be a number > 0, got {min_budget!r}; e.g. 1")
    if not (isinstance(max_budget, (int, float)) and max_budget >= min_budget):
        raise ValueError(
            f"max_budget ({max_budget!r}) must be a number >= min_budget ({min_budget}); "
            "pass the job's full budget in training iterations"
        )
    if not (isinstance(eta, (int, float)) and eta >= 2):
        raise ValueError(f"eta must be a number >= 2, got {eta!r}; 3 is the usual choice")


@dataclass
class _Rung:
    """One rung of a bracket; plain data so that ``asdict`` makes it JSON-able."""

    budget: float
    size: int  # configurations it keeps (sync); 0 = no limit (async)
    members: list[str] = field(default_factory=list)  # handed out here, in order
    results: dict[str, float | None] = field(default_factory=dict)  # None = failed
    promoted: list[str] | None = None  # sync: decided once complete; async: grows


@dataclass
class _Bracket:
    rungs: list[_Rung]
    done: bool = False


@dataclass
class _Trial:
    config: dict[str, Any]
    bracket: int
    rung: int  # the rung it runs towards, or the last one it reached
    running: bool = True
    failed: bool = False
    # Last observation at or below the rung's budget: [budget, value].
    last: list[float] | None = None


class SuccessiveHalvingSearcher(Searcher):
    """Base of the successive-halving searchers; subclasses choose new configurations.

    It decides when trials pause (``schedules_trials``): on Ray Tune the runner pairs
    it with :class:`~warmtune.searchers.ray_adapter.BudgetScheduler`.

    Args:
        space: the search space.
        seed: seed of the searcher's own generator.
        max_budget: the job's full budget in training iterations (required).
        min_budget: the smallest budget a trial runs to before its first decision.
        eta: the halving rate: a rung keeps its top ``1/eta``.
        mode: ``"sync"`` (Hyperband brackets) or ``"async"`` (ASHA promotions).
        max_concurrent_brackets: sync mode only: how many brackets may be open at
            once; ``None`` opens a new one whenever a worker would otherwise idle.

    Raises:
        ValueError: missing ``max_budget`` or an invalid option.
    """

    schedules_trials = True

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None = None,
        max_budget: float | None = None,
        min_budget: float = 1,
        eta: float = 3,
        mode: str = "async",
        max_concurrent_brackets: int | None = None,
    ) -> None:
        super().__init__(space=space, seed=seed)
        SuccessiveHalvingSearcher._check(locals())
        self.max_budget = max_budget
        self.min_budget = min_budget
        self.eta = eta
        self.mode = mode
        self.max_concurrent_brackets = max_concurrent_brackets
        self.schedule = hyperband_brackets(min_budget=min_budget, max_budget=max_budget, eta=eta)  # type: ignore[arg-type]
        self._trials: dict[str, _Trial] = {}
        self._brackets: list[_Bracket] = []
        if mode == "async":
            # ASHA: the most aggressive bracket's ladder, without size limits.
            self._brackets.append(_Bracket([_Rung(b, 0, promoted=[]) for _, b in self.schedule[0]]))

    @staticmethod
    def _check(args: Mapping[str, Any]) -> None:
        """The budgets, mode and bracket limit (see ``Searcher.check_options``)."""
        _check_budgets(args.get("min_budget", 1), args.get("max_budget"), args.get("eta", 3))
        mode = args.get("mode", "async")
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        brackets = args.get("max_concurrent_brackets")
        if brackets is not None and not (isinstance(brackets, int) and brackets >= 1):
            raise ValueError(
                f"max_concurrent_brackets must be an int >= 1 or None, got "
                f"{brackets!r}; None never lets a worker idle"
            )

    # Subclass hook --------------------------------------------------------------------
    @abc.abstractmethod
    def _new_config(self, budget: float) -> dict[str, Any]:
        """A new configuration to start at ``budget`` (valid in ``self.space``)."""

    def _full_budget_config(self) -> dict[str, Any] | None:
        """A configuration to run straight to the full budget, skipping the rungs below.

        Async mode only, asked before any promotion. For configurations already known
        to be good (a warm start's portfolio), where a low-budget rung would only delay
        the first full-budget result. None (the default) starts nothing this way.
        """
        return None

    # Searcher API ---------------------------------------------------------------------
    def ask(self, trial_id: str) -> Suggestion | None:
        if self.mode == "async":
            direct = self._full_budget_config()
            if direct is not None:
                return self._start(trial_id, 0, config=direct, rung=-1)
            return self._promotion_async() or self._start(trial_id, 0)
        return self._ask_sync(trial_id)

    def promotion(self) -> Suggestion | None:
        """The promotion :meth:`ask` would hand out now, if any; never starts a new trial.

        For engines that resume paused trials on their own schedule (the Ray
        adapter's scheduler asks this whenever a worker is free). Like :meth:`ask`,
        it commits: the returned trial counts as running towards its new budget.
        """
        if self.mode == "async":
            return self._promotion_async()
        for index, bracket in enumerate(self._brackets):
            if not bracket.done:
                suggestion = self._next_in_bracket(index, None)
                if suggestion is not None:
                    return suggestion
        return None

    def tell(self, observation: Observation) -> None:
        trial = self._trials.get(observation.trial_id)
        if trial is None or not trial.running:
            # Not ours, or a report past the budget the trial was paused at.
            return
        rung = self._brackets[trial.bracket].rungs[trial.rung]
        if observation.failed:
            self._fail(observation.trial_id)
            return
        if observation.budget < rung.budget - _EPS:
            trial.last = [observation.budget, observation.value]  # type: ignore[list-item]
            return
        # At (or, with coarse reporting, past) the rung's budget: the rung's value is
        # the observation at its budget, or the last one below it.
        if observation.budget <= rung.budget + _EPS or trial.last is None:
            value = observation.value
        else:
            value = trial.last[1]
        rung.results[observation.trial_id] = value
        trial.running = False
        trial.last = None

    def on_trial_end(self, trial_id: str) -> None:
        trial = self._trials.get(trial_id)
        if trial is not None and trial.running:
            # Stopped before its budget: no result at this rung, so never promoted.
            self._fail(trial_id)

    # State ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "trials": {tid: asdict(t) for tid, t in self._trials.items()},
            "brackets": [asdict(b) for b in self._brackets],
        }

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._trials = {tid: _Trial(**t) for tid, t in state["trials"].items()}
        self._brackets = [
            _Bracket([_Rung(**r) for r in b["rungs"]], done=b["done"]) for b in state["brackets"]
        ]

    # What the models see ----------------------------------------------------------------
    def results_by_budget(self) -> dict[float, list[tuple[str, float | None]]]:
        """Every rung result, grouped by budget: ``budget -> [(trial_id, value or None)]``.

        Ordered by budget, then by the order results arrived in each rung, so models
        built from it are deterministic.
        """
        out: dict[float, list[tuple[str, float | None]]] = {}
        for bracket in self._brackets:
            for rung in bracket.rungs:
                out.setdefault(rung.budget, []).extend(rung.results.items())
        return dict(sorted(out.items()))

    def trial_ids(self) -> list[str]:
        """Every trial handed out so far, in order."""
        return list(self._trials)

    def trial_config(self, trial_id: str) -> dict[str, Any]:
        """The configuration of a trial this searcher handed out."""
        return self._trials[trial_id].config

    # Internals ------------------------------------------------------------------------
    def _fail(self, trial_id: str) -> None:
        trial = self._trials[trial_id]
        trial.running = False
        trial.failed = True
        trial.last = None
        self._brackets[trial.bracket].rungs[trial.rung].results[trial_id] = None

    def _start(
        self,
        trial_id: str,
        bracket: int,
        *,
        config: dict[str, Any] | None = None,
        rung: int = 0,
    ) -> Suggestion:
        """A new trial in ``bracket`` at its rung ``rung`` (-1: the full budget)."""
        if trial_id in self._trials:
            raise ValueError(
                f"trial id {trial_id!r} was handed out before; the engine must offer a fresh id"
            )
        rungs = self._brackets[bracket].rungs
        index = rung % len(rungs)
        rung_ = rungs[index]
        config = self.space.validate(self._new_config(rung_.budget) if config is None else config)
        self._trials[trial_id] = _Trial(config=config, bracket=bracket, rung=index)
        rung_.members.append(trial_id)
        return Suggestion(trial_id=trial_id, config=dict(config), budget=rung_.budget)

    def _promote(self, trial_id: str, bracket: int, to_rung: int) -> Suggestion:
        trial = self._trials[trial_id]
        rungs = self._brackets[bracket].rungs
        if self.mode == "async":
            rungs[to_rung - 1].promoted.append(trial_id)  # type: ignore[union-attr]
        rungs[to_rung].members.append(trial_id)
        trial.rung, trial.running, trial.last = to_rung, True, None
        return Suggestion(
            trial_id=trial_id,
            config=dict(trial.config),
            budget=rungs[to_rung].budget,
            resume_from=trial_id,
        )

    def _ranked(self, rung: _Rung) -> list[str]:
        """Trials with a valid result at ``rung``, best first (ties: first reported first)."""
        valid = [(v, i, tid) for i, (tid, v) in enumerate(rung.results.items()) if v is not None]
        return [tid for _, _, tid in sorted(valid)]

    # Async (ASHA) -------------------------------------------------------------------------
    def _promotion_async(self) -> Suggestion | None:
        rungs = self._brackets[0].rungs
        for k in range(len(rungs) - 2, -1, -1):
            rung = rungs[k]
            # Failures count as worst: they take places in the rung but never a top one.
            n_top = int(len(rung.results) / self.eta + _EPS)
            for tid in self._ranked(rung)[:n_top]:
                if tid not in rung.promoted:  # type: ignore[operator]
                    return self._promote(tid, 0, k + 1)
        return None

    # Sync (Hyperband) ---------------------------------------------------------------------
    def _ask_sync(self, trial_id: str) -> Suggestion | None:
        for index, bracket in enumerate(self._brackets):
            if bracket.done:
                continue
            suggestion = self._next_in_bracket(index, trial_id)
            if suggestion is not None:
                return suggestion
        n_open = sum(not b.done for b in self._brackets)
        if self.max_concurrent_brackets is not None and n_open >= self.max_concurrent_brackets:
            return None  # every open bracket waits for stragglers
        shape = self.schedule[len(self._brackets) % len(self.schedule)]
        self._brackets.append(_Bracket([_Rung(budget, size) for size, budget in shape]))
        return self._next_in_bracket(len(self._brackets) - 1, trial_id)

    def _next_in_bracket(self, index: int, trial_id: str | None) -> Suggestion | None:
        """The bracket's next promotion, else (given a ``trial_id``) its next new trial."""
        bracket = self._brackets[index]
        rungs = bracket.rungs
        # Decide promotions bottom-up: a rung is decided once all its members have results.
        for k, rung in enumerate(rungs):
            expected = rung.size if k == 0 else len(rungs[k - 1].promoted or [])
            if k > 0 and rungs[k - 1].promoted is None:
                break
            complete = len(rung.members) == expected and len(rung.results) == expected
            if not complete:
                break
            if k == len(rungs) - 1:
                bracket.done = True
                return None
            if rung.promoted is None:
                rung.promoted = self._ranked(rung)[: rungs[k + 1].size]
                if not rung.promoted:
                    bracket.done = True  # everything failed: nothing to continue
                    return None
        # Hand out: promotions from the highest rung first, then new configurations.
        for k in range(len(rungs) - 1, 0, -1):
            for tid in rungs[k - 1].promoted or []:
                if tid not in rungs[k].members:
                    return self._promote(tid, index, k)
        if trial_id is not None and len(rungs[0].members) < rungs[0].size:
            return self._start(trial_id, index)
        return None
