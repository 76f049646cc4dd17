"""The benchmark simulator: event order, time, FFE accounting, and every searcher's contract."""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
from typing import Any

import numpy as np
import pandas as pd
import pytest

import warmtune.searchers
from warmtune.bench.backends import Backend, BatchedBackend, SyntheticBackend
from warmtune.bench.results import ContractError, SimulationResult
from warmtune.bench.simulator import simulate
from warmtune.searchers import (
    Observation,
    Searcher,
    Suggestion,
    make_searcher,
    registered_searchers,
    searcher_class,
)
from warmtune.space import SearchSpace

# A searcher registers when its module is imported: import them all, so that the
# contract test covers every searcher whichever tests ran before.
for _module in pkgutil.iter_modules(warmtune.searchers.__path__):
    if _module.name != "ray_adapter":
        importlib.import_module(f"warmtune.searchers.{_module.name}")

MAX_BUDGET = 9


def mixed_space() -> SearchSpace:
    """Float (log), int, categorical and a conditional child."""
    return SearchSpace(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "layers": {"type": "int", "low": 1, "high": 8},
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": ["sgd"]}},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        }
    )


class Wrapped:
    """A backend around :class:`SyntheticBackend`: deep networks are slow or fail.

    Only ``evaluate`` (no batched path), so both of the simulator's paths are tested.
    """

    def __init__(self, inner: SyntheticBackend, *, slow: float = 1.0, failing: bool = False):
        self.inner = inner
        self.max_budget = inner.max_budget
        self.slow = slow
        self.failing = failing

    def evaluate(self, config: dict[str, Any], budget: int) -> tuple[float | None, float]:
        value, cost = self.inner.evaluate(config, budget)
        if config["layers"] >= 7:
            cost *= self.slow
            if self.failing:
                return None, cost  # a crash at once
        if self.failing and config["layers"] == 6 and budget >= 2:
            return math.nan, cost  # a divergence, after a good first iteration
        return value, cost


def backend(*, max_budget: int = MAX_BUDGET, cost: float = 1.0) -> SyntheticBackend:
    return SyntheticBackend(space=mixed_space(), max_budget=max_budget, cost_per_iteration=cost)


def random_search(seed: int = 0) -> Searcher:
    return make_searcher("random", space=mixed_space(), seed=seed)


def record(searcher: Searcher) -> dict[str, list[Any]]:
    """Log every call the simulator makes on ``searcher`` (in order, one shared list)."""
    log: dict[str, list[Any]] = {"calls": []}
    ask, tell, end = searcher.ask, searcher.tell, searcher.on_trial_end

    def _ask(trial_id: str) -> Suggestion | None:
        suggestion = ask(trial_id)
        log["calls"].append(("ask", suggestion))
        return suggestion

    def _tell(observation: Observation) -> None:
        log["calls"].append(("tell", observation))
        tell(observation)

    def _end(trial_id: str) -> None:
        log["calls"].append(("end", trial_id))
        end(trial_id)

    searcher.ask, searcher.tell, searcher.on_trial_end = _ask, _tell, _end  # type: ignore[method-assign]
    return log


def of_kind(log: dict[str, list[Any]], kind: str) -> list[Any]:
    return [item for k, item in log["calls"] if k == kind]


def handed_out(log: dict[str, list[Any]]) -> set[str]:
    """Ids of every trial the searcher handed out (including any cut before a report)."""
    return {s.trial_id for s in of_kind(log, "ask") if s is not None}


# Protocol and determinism ---------------------------------------------------------------
def test_synthetic_backend_is_a_batched_backend_and_improves_with_budget():
    b = backend()
    assert isinstance(b, Backend) and isinstance(b, BatchedBackend)
    config = mixed_space().sample(np.random.default_rng(0))
    values = [b.evaluate(config, i)[0] for i in range(1, MAX_BUDGET + 1)]
    assert values == sorted(values, reverse=True)
    assert b.evaluate_many(config, range(1, MAX_BUDGET + 1)) == [
        b.evaluate(config, i) for i in range(1, MAX_BUDGET + 1)
    ]


@pytest.mark.parametrize("name", ["random", "asha"])
def test_same_seed_gives_identical_results(name):
    def run(seed: int) -> SimulationResult:
        searcher = make_searcher(name, space=mixed_space(), seed=3, max_budget=MAX_BUDGET)
        return simulate(searcher, backend(), workers=4, budget_ffe=12, seed=seed, jitter=0.3)

    first, second = run(1), run(1)
    pd.testing.assert_frame_equal(first.evaluations, second.evaluations)
    assert first.end_time == second.end_time
    # The seed drives the runtime jitter, so another seed interleaves differently.
    assert not first.evaluations["end_time"].equals(run(2).evaluations["end_time"])


# Time -----------------------------------------------------------------------------------
def test_one_worker_runs_sequentially():
    result = simulate(random_search(), backend(cost=2.0), workers=1, budget_ffe=5)
    df = result.evaluations
    assert (df["start_time"].iloc[1:].to_numpy() == df["end_time"].iloc[:-1].to_numpy()).all()
    assert (df["end_time"] - df["start_time"] == 2.0).all()
    assert result.end_time == 2.0 * 5 * MAX_BUDGET
    assert set(df["worker"]) == {0}


def test_four_workers_take_a_quarter_of_the_time():
    one = simulate(random_search(), backend(), workers=1, budget_ffe=20)
    four = simulate(random_search(), backend(), workers=4, budget_ffe=20)
    assert len(one.evaluations) == len(four.evaluations) == 20 * MAX_BUDGET
    assert four.end_time == pytest.approx(one.end_time / 4, rel=0.05)
    assert set(four.evaluations["worker"]) == {0, 1, 2, 3}


def test_max_time_cuts_the_work_in_flight():
    result = simulate(random_search(), backend(), workers=3, max_time=20.5)
    assert result.stop_reason == "max_time"
    assert result.end_time == 20.5
    assert result.evaluations["end_time"].max() <= 20.5
    assert len(result.evaluations) == 3 * 20


def test_observations_are_told_in_time_order_across_workers():
    searcher = random_search()
    log = record(searcher)
    result = simulate(
        searcher, Wrapped(backend(), slow=7.0), workers=4, max_evaluations=300, jitter=0.2
    )
    df = result.evaluations
    assert df["end_time"].is_monotonic_increasing
    told = [(o.trial_id, int(o.budget)) for o in of_kind(log, "tell")]
    assert told == list(zip(df["trial_id"], df["budget"], strict=True))
    # Fast trials started after a slow one finish before it: reports interleave across
    # trials as they would on a cluster, not one trial after another.
    spans = df.groupby("trial_id")["end_time"].agg(["min", "max"])
    overtaken = [
        (a, b)
        for a in spans.index
        for b in spans.index
        if spans.at[a, "min"] < spans.at[b, "min"] and spans.at[b, "max"] < spans.at[a, "max"]
    ]
    assert overtaken


def test_asynchronous_promotions_happen_before_slow_trials_report():
    space = mixed_space()
    searcher = make_searcher("asha", space=space, seed=0, max_budget=MAX_BUDGET)
    result = simulate(searcher, Wrapped(backend(), slow=50.0), workers=4, budget_ffe=6)
    df = result.evaluations
    slow = df[df["config_json"].map(lambda c: json.loads(c)["layers"] >= 7)]
    first_promotion = df.loc[df["segment"] >= 1, "start_time"].min()
    assert len(slow) and first_promotion < slow["end_time"].min()


# FFE ------------------------------------------------------------------------------------
def test_budget_ffe_with_one_worker_makes_that_many_full_evaluations():
    result = simulate(random_search(), backend(), workers=1, budget_ffe=10)
    df = result.evaluations
    assert result.stop_reason == "budget_ffe"
    assert result.ffe_spent == 10
    assert (df["budget"] == MAX_BUDGET).sum() == 10
    assert df["ffe_spent_so_far"].iloc[-1] == 10
    assert df["ffe_spent_so_far"].diff().dropna().round(12).eq(round(1 / MAX_BUDGET, 12)).all()


def test_budget_ffe_cuts_in_flight_work_with_many_workers():
    searcher = random_search()
    log = record(searcher)
    result = simulate(searcher, backend(), workers=4, budget_ffe=10, jitter=0.3)
    full = (result.evaluations["budget"] == MAX_BUDGET).sum()
    assert result.ffe_spent == 10
    assert 10 - 4 < full <= 10  # at most one evaluation per worker was in flight at the cut
    # The cut trials still end, and every trial ends exactly once.
    assert sorted(of_kind(log, "end")) == sorted(handed_out(log))


def test_max_evaluations_counts_reported_iterations():
    result = simulate(random_search(), backend(), workers=2, max_evaluations=50)
    assert result.stop_reason == "max_evaluations"
    assert len(result.evaluations) == 50


def test_incumbent_trajectory_and_best_at():
    searcher = make_searcher("asha", space=mixed_space(), seed=1, max_budget=MAX_BUDGET)
    result = simulate(searcher, backend(), workers=4, budget_ffe=15)
    curve = result.incumbent_trajectory()
    full = result.evaluations[result.evaluations["budget"] == MAX_BUDGET]
    assert len(curve) == len(full) > 0
    assert curve["value"].is_monotonic_decreasing and curve["ffe"].is_monotonic_increasing
    assert curve["value"].iloc[-1] == full["value"].min()
    best_trial = full.loc[full["value"].idxmin(), "trial_id"]
    assert curve["trial_id"].iloc[-1] == best_trial
    assert result.best_at(math.inf) == full["value"].min()
    assert result.best_at(0) == math.inf
    assert result.best_at(curve["ffe"].iloc[0]) == curve["value"].iloc[0]
    low = result.incumbent_trajectory(at_budget=1)
    assert low["value"].iloc[-1] == result.evaluations.query("budget == 1")["value"].min()
    with pytest.raises(ValueError, match="at_budget"):
        result.incumbent_trajectory(at_budget=MAX_BUDGET + 1)


# Every searcher -------------------------------------------------------------------------
# Every registered searcher with its defaults, plus the synchronous variants that make
# ask() return None while a bracket waits for stragglers.
# Searchers that copy checkpoints (PBT) run in the population engine, on a backend with
# weights: tests/bench/test_population.py.
VARIANTS = [
    (name, {}) for name in registered_searchers() if not searcher_class(name).copies_checkpoints
] + [
    ("bohb", {"mode": "sync", "max_concurrent_brackets": 1}),
    ("hyperband", {"max_concurrent_brackets": 1}),
]


@pytest.mark.parametrize(
    ("name", "options"),
    VARIANTS,
    ids=[name + "".join(f"-{k}={v}" for k, v in o.items()) for name, o in VARIANTS],
)
def test_every_searcher_keeps_the_contract(name, options):
    space = mixed_space()
    searcher = make_searcher(name, space=space, seed=4, options=options, max_budget=MAX_BUDGET)
    log = record(searcher)
    b = Wrapped(backend(), slow=3.0, failing=True)
    # simulate() raises ContractError on a trial handed out while running, a reused
    # id, or a resume from a failed trial; running to the limit is the first check.
    result = simulate(searcher, b, workers=4, budget_ffe=12, jitter=0.2)
    assert result.stop_reason in ("budget_ffe", "exhausted")
    for suggestion in of_kind(log, "ask"):
        if suggestion is not None:
            assert space.validate(suggestion.config) == suggestion.config
    df = result.evaluations
    for trial_id, rows in df.groupby("trial_id", sort=False):
        budgets = rows["budget"].tolist()
        first = budgets[0]
        # Resumes continue from the paused iteration: no iteration repeated or skipped.
        assert budgets == list(range(first, first + len(budgets))), trial_id
        if rows["value"].isna().any():
            assert rows["value"].isna().tolist() == [False] * (len(rows) - 1) + [True]
    assert df["value"].isna().any(), "the backend should have produced failures"
    assert sorted(of_kind(log, "end")) == sorted(handed_out(log))


def test_promotions_resume_from_the_paused_progress():
    searcher = make_searcher("hyperband", space=mixed_space(), seed=0, max_budget=MAX_BUDGET)
    log = record(searcher)
    result = simulate(searcher, backend(), workers=3, budget_ffe=10)
    promotions = [s for s in of_kind(log, "ask") if s is not None and s.resume_from]
    assert promotions
    df = result.evaluations
    for s in promotions:
        rows = df[df["trial_id"] == s.trial_id]
        assert rows["budget"].is_unique
    resumed = df[df["segment"] >= 1].groupby(["trial_id", "segment"])["budget"].min()
    for (trial_id, segment), first in resumed.items():
        before = df[(df["trial_id"] == trial_id) & (df["segment"] == segment - 1)]
        assert first == before["budget"].max() + 1


def test_a_paused_trial_is_not_ended_until_it_stops_for_good():
    searcher = make_searcher("asha", space=mixed_space(), seed=2, max_budget=MAX_BUDGET)
    log = record(searcher)
    simulate(searcher, backend(), workers=2, budget_ffe=8)
    calls = log["calls"]
    stop = max(i for i, (kind, _) in enumerate(calls) if kind != "end")
    ended_early = {tid for kind, tid in calls[:stop] if kind == "end"}
    reached = {o.trial_id for k, o in calls[:stop] if k == "tell" and o.budget == MAX_BUDGET}
    assert ended_early == reached  # before the stop, only trials done at max_budget end


def test_failures_are_told_ended_and_never_resumed():
    searcher = make_searcher("asha", space=mixed_space(), seed=5, max_budget=MAX_BUDGET)
    log = record(searcher)
    result = simulate(searcher, Wrapped(backend(), failing=True), workers=4, budget_ffe=10)
    failed = [o for o in of_kind(log, "tell") if o.failed]
    assert failed
    calls = log["calls"]
    for o in failed:
        i = calls.index(("tell", o))
        assert calls[i + 1] == ("end", o.trial_id)  # ended at once, before the next ask
        later = [s for kind, s in calls[i:] if kind == "ask" and s is not None]
        assert all(s.resume_from != o.trial_id for s in later)
    # Failures happen both at a trial's first iteration and after a promotion.
    assert {o.budget for o in failed} >= {1.0, 2.0}
    assert result.evaluations["value"].isna().sum() == len(failed)


# Stopping and refusing ------------------------------------------------------------------
class _Few(Searcher):
    """Hands out ``n`` full-budget trials, then nothing."""

    name = ""  # not registered

    def __init__(self, *, space: SearchSpace, n: int) -> None:
        super().__init__(space=space, seed=0)
        self.n = n

    def ask(self, trial_id: str) -> Suggestion | None:
        if self.n == 0:
            return None
        self.n -= 1
        return Suggestion(trial_id=trial_id, config=self.space.sample(self.rng))


def test_the_search_is_over_when_the_searcher_has_nothing_and_no_worker_is_busy():
    searcher = _Few(space=mixed_space(), n=3)
    log = record(searcher)
    result = simulate(searcher, backend(), workers=2, budget_ffe=100)
    assert result.stop_reason == "exhausted"
    assert result.ffe_spent == 3
    assert result.end_time == 2 * MAX_BUDGET  # two in parallel, then the third
    assert sorted(of_kind(log, "end")) == ["t0", "t1", "t2"]


class _Rogue(Searcher):
    """Breaks the contract in the way it is told to."""

    name = ""

    def __init__(self, *, space: SearchSpace, how: str) -> None:
        super().__init__(space=space, seed=0)
        self.how = how
        self.first: Suggestion | None = None

    def ask(self, trial_id: str) -> Suggestion | None:
        if self.first is None:
            self.first = Suggestion(trial_id, self.space.sample(self.rng), budget=2)
            return self.first
        if self.how == "running":
            return self.first
        if self.how == "resume":  # resumes a trial that has just failed
            return Suggestion(self.first.trial_id, self.first.config, 4, self.first.trial_id)
        return Suggestion(self.first.trial_id, self.first.config)  # a new trial, old id


@pytest.mark.parametrize(
    ("how", "match"),
    [("running", "still running"), ("resume", "failed"), ("reuse", "reused")],
)
def test_contract_violations_are_refused(how, match):
    class FailsAtOnce:
        max_budget = MAX_BUDGET

        def evaluate(self, config, budget):
            return (None if how == "resume" else 1.0), 1.0

    workers = 2 if how == "running" else 1
    with pytest.raises(ContractError, match=match):
        simulate(_Rogue(space=mixed_space(), how=how), FailsAtOnce(), workers=workers, max_time=50)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": 0, "budget_ffe": 1}, "workers"),
        ({"workers": 1}, "at least one limit"),
        ({"workers": 1, "budget_ffe": -1}, "budget_ffe"),
        ({"workers": 1, "max_evaluations": 0}, "max_evaluations"),
        ({"workers": 1, "max_time": 0}, "max_time"),
        ({"workers": 1, "max_time": 5, "jitter": -1}, "jitter"),
    ],
)
def test_bad_arguments_say_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(random_search(), backend(), **kwargs)


def test_the_searcher_budget_must_match_the_backend():
    searcher = make_searcher("asha", space=mixed_space(), seed=0, max_budget=27)
    with pytest.raises(ValueError, match="max_budget=backend.max_budget"):
        simulate(searcher, backend(), workers=1, budget_ffe=1)


def test_a_bad_cost_is_refused():
    class Negative:
        max_budget = 3

        def evaluate(self, config, budget):
            return 1.0, -1.0

    with pytest.raises(ValueError, match="cost"):
        simulate(random_search(), Negative(), workers=1, budget_ffe=1)


# Retrain (float) fidelities ------------------------------------------------------------
class Refit:
    """A ``retrain`` backend: a fit at data fraction ``b`` takes ``1 + 10 b`` seconds."""

    fidelity_kind = "retrain"
    min_budget = 0.1
    max_budget = 1.0

    def __init__(self) -> None:
        self.calls: list[float] = []

    def evaluate(self, config: dict[str, Any], budget: float) -> tuple[float, float]:
        self.calls.append(budget)
        return config["x"] + 0.1 / budget, 1.0 + 10.0 * budget


class _Script(Searcher):
    """Hands out a fixed list of suggestions (``None`` trial id: the fresh one)."""

    name = ""

    def __init__(self, script: list[tuple[str | None, float | None, str | None]]) -> None:
        super().__init__(space=SearchSpace({"x": {"type": "float", "low": 0, "high": 9}}), seed=0)
        self.script = list(script)
        self.configs: dict[str, dict[str, float]] = {}

    def ask(self, trial_id: str) -> Suggestion | None:
        if not self.script:
            return None
        tid, budget, resume = self.script.pop(0)
        tid = tid or trial_id
        config = self.configs.setdefault(tid, {"x": float(len(self.configs))})
        return Suggestion(tid, config, budget=budget, resume_from=resume)


def test_retrain_reports_once_charges_a_promotion_in_full_and_cuts_at_the_budget():
    # t0 at 0.25, t0 promoted to 1.0, t1 at 0.5, t2 at full fidelity (None).
    searcher = _Script(
        [(None, 0.25, None), ("t0", 1.0, "t0"), (None, 0.5, None), (None, None, None)]
    )
    log = record(searcher)
    b = Refit()
    result = simulate(searcher, b, workers=1, budget_ffe=2.0)
    df = result.evaluations
    # One report per evaluation, at the fidelity itself; the promotion refits at 1.0.
    assert list(zip(df["trial_id"], df["budget"], df["segment"], strict=True)) == [
        ("t0", 0.25, 0),
        ("t0", 1.0, 1),
        ("t1", 0.5, 0),
    ]
    # FFE: 0.25, then the promotion's full 1.0 (not the increment 0.75), then 0.5.
    assert df["ffe_spent_so_far"].tolist() == pytest.approx([0.25, 1.25, 1.75])
    # Time: 1 + 10 b seconds per fit; the promotion takes 11 s, not 11 - 3.5.
    assert df["start_time"].tolist() == pytest.approx([0.0, 3.5, 14.5])
    assert df["end_time"].tolist() == pytest.approx([3.5, 14.5, 20.5])
    # t2's full fit would take the spend to 2.75 > 2: it is cut when due (20.5 + 11 s).
    assert b.calls == [0.25, 1.0, 0.5, 1.0]
    assert result.stop_reason == "budget_ffe"
    assert result.ffe_spent == pytest.approx(1.75)
    assert result.end_time == pytest.approx(31.5)
    assert sorted(of_kind(log, "end")) == ["t0", "t1", "t2"]
    told = [(o.trial_id, o.budget) for o in of_kind(log, "tell")]
    assert told == [("t0", 0.25), ("t0", 1.0), ("t1", 0.5)]
    assert result.best_at(1.25) == pytest.approx(0.0 + 0.1)  # t0 at full fidelity
    assert result.best_at(1.0) == math.inf  # nothing at full fidelity yet
    assert result.best_at_time(14.5) == pytest.approx(0.1)
    assert result.best_at_time(14.4) == math.inf


def test_retrain_spend_that_lands_on_the_budget_stops_there():
    searcher = _Script(
        [(None, 0.25, None), ("t0", 1.0, "t0"), (None, 0.5, None), (None, None, None)]
    )
    result = simulate(searcher, Refit(), workers=1, budget_ffe=1.75)
    assert result.stop_reason == "budget_ffe"
    assert len(result.evaluations) == 3
    assert result.end_time == pytest.approx(20.5)


def test_retrain_budgets_must_be_inside_the_fidelity_range():
    with pytest.raises(ContractError, match="min_budget=backend.min_budget"):
        simulate(_Script([(None, 0.05, None)]), Refit(), workers=1, budget_ffe=1)
    with pytest.raises(ContractError, match="higher fidelity"):
        simulate(_Script([(None, 0.5, None), ("t0", 0.5, "t0")]), Refit(), workers=1, budget_ffe=2)


def test_a_retrain_backend_declares_its_range():
    class NoMin:
        fidelity_kind = "retrain"
        max_budget = 1.0

        def evaluate(self, config, budget):
            return 1.0, 1.0

    class Unknown(NoMin):
        fidelity_kind = "epochs"

    with pytest.raises(ValueError, match="min_budget"):
        simulate(random_search(), NoMin(), workers=1, budget_ffe=1)
    with pytest.raises(ValueError, match="fidelity_kind must be one of"):
        simulate(random_search(), Unknown(), workers=1, budget_ffe=1)


@pytest.mark.parametrize("name", ["hyperband", "asha", "bohb"])
def test_successive_halving_on_a_float_fidelity(name):
    class Fraction(Refit):
        min_budget = 0.03

    space = SearchSpace({"x": {"type": "float", "low": 0, "high": 1}})
    searcher = make_searcher(
        name, space=space, seed=0, max_budget=1.0, options={"min_budget": 0.03}
    )
    log = record(searcher)
    result = simulate(searcher, Fraction(), workers=3, budget_ffe=6)
    df = result.evaluations
    rungs = [1 / 27, 1 / 9, 1 / 3, 1.0]
    assert all(any(math.isclose(b, r) for r in rungs) for b in df["budget"])
    assert {round(b, 9) for b in df["budget"]} >= {round(r, 9) for r in rungs[:2]}
    # One report per segment; a promotion goes up the ladder and is charged in full.
    assert not df.duplicated(["trial_id", "segment"]).any()
    for _, rows in df.groupby("trial_id"):
        assert rows["budget"].is_monotonic_increasing and rows["budget"].is_unique
    spend = np.diff(np.concatenate([[0.0], df["ffe_spent_so_far"].to_numpy()]))
    np.testing.assert_allclose(spend, df["budget"].to_numpy())
    assert result.ffe_spent <= 6 + 1e-9
    assert sorted(of_kind(log, "end")) == sorted(handed_out(log))
