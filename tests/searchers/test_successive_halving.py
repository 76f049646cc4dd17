"""Hyperband's schedule, synchronous and asynchronous promotion, and the budget contract."""

from __future__ import annotations

import pytest

from warmtune.searchers import ASHA, Hyperband, Observation
from warmtune.searchers.successive_halving import hyperband_brackets, rung_budgets
from warmtune.space import SearchSpace

SPACE = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 1.0}})


def test_hyperband_brackets_match_the_paper_for_27_and_eta_3():
    assert hyperband_brackets(min_budget=1, max_budget=27, eta=3) == [
        [(27, 1), (9, 3), (3, 9), (1, 27)],
        [(12, 3), (4, 9), (1, 27)],
        [(6, 9), (2, 27)],
        [(4, 27)],
    ]


def test_rung_budgets_are_whole_iterations_for_whole_budgets():
    assert rung_budgets(min_budget=1, max_budget=100, eta=3) == [1, 4, 11, 33, 100]
    assert rung_budgets(min_budget=0.5, max_budget=2.0, eta=2) == [0.5, 1.0, 2.0]


def test_float_fidelity_rungs_start_at_the_range_minimum():
    # trainsize 0.03..1.0 with eta 3: floor(log3(1 / 0.03)) = 3 halvings, not rounded.
    rungs = rung_budgets(min_budget=0.03, max_budget=1.0, eta=3)
    assert rungs == pytest.approx([1 / 27, 1 / 9, 1 / 3, 1.0], rel=1e-12)
    assert rungs[-1] == 1.0 and rungs[0] >= 0.03
    brackets = hyperband_brackets(min_budget=0.03, max_budget=1.0, eta=3)
    assert [[n for n, _ in b] for b in brackets] == [[27, 9, 3, 1], [12, 4, 1], [6, 2], [4]]
    assert [b[0][1] for b in brackets] == pytest.approx([1 / 27, 1 / 9, 1 / 3, 1.0])
    for searcher in (
        ASHA(space=SPACE, seed=0, max_budget=1.0, min_budget=0.03),
        Hyperband(space=SPACE, seed=0, max_budget=1.0, min_budget=0.03),
    ):
        first = searcher.ask("t0")
        assert first.budget == pytest.approx(1 / 27)
        # A report at the rung's float budget completes the rung.
        _report(searcher, "t0", first.budget, 0.5)
        assert searcher.results_by_budget()[first.budget] == [("t0", 0.5)]


def _bowl(config, budget):
    return (config["x"] - 0.3) ** 2 + 1 / budget


def _report(searcher, trial_id, budget, value):
    searcher.tell(Observation.of(trial_id, searcher.trial_config(trial_id), budget, value))


def test_sync_hyperband_runs_the_first_bracket_as_in_the_paper(driver_cls):
    driver = driver_cls(Hyperband(space=SPACE, seed=0, max_budget=27), objective=_bowl)
    suggestions = driver.run(27 + 9 + 3 + 1 + 12)
    new, rest = suggestions[:27], suggestions[27:]
    assert all(s.budget == 1 and s.resume_from is None for s in new)
    for start, size, budget in [(0, 9, 3), (9, 3, 9), (12, 1, 27)]:
        rung = rest[start : start + size]
        assert all(s.budget == budget and s.resume_from == s.trial_id for s in rung)
    # The 9 promoted are the 9 best at budget 1.
    first = {s.trial_id for s in new}
    at_1 = sorted(
        (o.value, o.trial_id) for o in driver.results if o.trial_id in first and o.budget == 1
    )
    assert {s.trial_id for s in rest[:9]} == {tid for _, tid in at_1[:9]}
    # Then the second bracket starts 12 configurations at budget 3.
    assert all(s.budget == 3 and s.resume_from is None for s in rest[13:])


def test_sync_waits_for_stragglers_when_one_bracket_may_be_open():
    searcher = Hyperband(space=SPACE, seed=0, max_budget=27, max_concurrent_brackets=1)
    ids = [searcher.ask(f"t{i}").trial_id for i in range(27)]
    assert searcher.ask("t27") is None
    for i, tid in enumerate(ids[:-1]):
        _report(searcher, tid, 1, float(i))
    assert searcher.ask("t27") is None  # one member is still out
    _report(searcher, ids[-1], 1, -1.0)
    promotion = searcher.ask("t27")
    assert promotion.trial_id == promotion.resume_from == ids[-1]
    assert promotion.budget == 3


def test_sync_starts_the_next_bracket_rather_than_idle():
    searcher = Hyperband(space=SPACE, seed=0, max_budget=27)
    for i in range(27):
        searcher.ask(f"t{i}")
    extra = searcher.ask("t27")
    assert extra.trial_id == "t27" and extra.budget == 3 and extra.resume_from is None


def test_asha_promotes_the_best_unpromoted_of_the_top_third():
    searcher = ASHA(space=SPACE, seed=0, max_budget=9)
    for i, value in enumerate([3.0, 1.0, 2.0]):
        searcher.ask(f"t{i}")
        _report(searcher, f"t{i}", 1, value)
    promotion = searcher.ask("t3")
    assert (promotion.trial_id, promotion.budget, promotion.resume_from) == ("t1", 3, "t1")
    # The top third (1 of 3) is promoted already: start something new.
    assert searcher.ask("t3").trial_id == "t3"


def test_asha_promotes_from_the_highest_rung_first():
    searcher = ASHA(space=SPACE, seed=0, max_budget=9)
    for i in range(9):
        assert searcher.ask(f"t{i}").resume_from is None
    for i in range(9):
        _report(searcher, f"t{i}", 1, float(i))
    assert [searcher.ask("x").trial_id for _ in range(3)] == ["t0", "t1", "t2"]
    assert [searcher.ask(f"t{i}").trial_id for i in (9, 10, 11)] == ["t9", "t10", "t11"]
    for tid, value in [("t9", -1.0), ("t10", 10.0), ("t11", 11.0)]:
        _report(searcher, tid, 1, value)
    for tid, value in [("t0", 0.3), ("t1", 0.1), ("t2", 0.2)]:
        _report(searcher, tid, 3, value)
    # Rung 0's top third holds an unpromoted t9, but rung 1's best goes first.
    first, second = searcher.ask("t12"), searcher.ask("t12")
    assert (first.trial_id, first.budget) == ("t1", 9)
    assert (second.trial_id, second.budget) == ("t9", 3)


def test_the_rung_value_is_the_last_observation_at_or_below_its_budget():
    searcher = ASHA(space=SPACE, seed=0, max_budget=9)
    searcher.ask("a")
    _report(searcher, "a", 1, 4.0)
    for tid, value in [("b", 5.0), ("c", 6.0)]:
        searcher.ask(tid)
        _report(searcher, tid, 1, value)
    promotion = searcher.ask("d")
    assert promotion.trial_id == "a"
    # Reports every 2 iterations: 2 then 4 passes the rung at 3; the value at 2 counts.
    _report(searcher, "a", 2, 0.7)
    _report(searcher, "a", 4, 99.0)
    assert dict(searcher.results_by_budget()[3]) == {"a": 0.7}


def test_failed_and_early_stopped_trials_are_worst_and_never_promoted():
    searcher = ASHA(space=SPACE, seed=0, max_budget=9)
    for tid in ["a", "b", "c"]:
        searcher.ask(tid)
    searcher.tell(Observation.of("a", searcher.trial_config("a"), 1, float("nan")))
    searcher.on_trial_end("a")
    searcher.on_trial_end("b")  # stopped by the engine before its budget
    _report(searcher, "c", 1, 10.0)
    assert dict(searcher.results_by_budget()[1]) == {"a": None, "b": None, "c": 10.0}
    # Late reports of a stopped trial change nothing.
    _report(searcher, "b", 1, -1.0)
    promotion = searcher.ask("d")
    assert promotion.trial_id == "c"


def test_unknown_trials_are_ignored():
    searcher = ASHA(space=SPACE, seed=0, max_budget=9)
    searcher.tell(Observation.of("ghost", {"x": 0.5}, 1, 1.0))
    searcher.on_trial_end("ghost")
    assert all(not r for r in searcher.results_by_budget().values())


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "max_budget is required"),
        ({"max_budget": 27, "eta": 1.5}, "eta must be"),
        ({"max_budget": 1, "min_budget": 3}, "max_budget"),
        ({"max_budget": 27, "min_budget": 0}, "min_budget"),
    ],
)
def test_bad_options_raise_with_the_fix(options, match):
    with pytest.raises(ValueError, match=match):
        ASHA(space=SPACE, seed=0, **options)


def test_bad_concurrency_option_raises():
    with pytest.raises(ValueError, match="max_concurrent_brackets"):
        Hyperband(space=SPACE, max_budget=27, max_concurrent_brackets=0)


@pytest.mark.parametrize(("searcher_cls", "n", "then"), [(ASHA, 3, None), (Hyperband, 9, "t1")])
def test_promotion_never_starts_a_trial_and_commits_what_it_returns(searcher_cls, n, then):
    searcher = searcher_cls(space=SPACE, seed=0, max_budget=9)
    assert searcher.promotion() is None
    ids = [searcher.ask(f"t{i}").trial_id for i in range(n)]
    assert searcher.promotion() is None  # nothing reported yet
    for value, tid in enumerate(ids):
        _report(searcher, tid, 1, float(value))
    promotion = searcher.promotion()
    assert (promotion.trial_id, promotion.resume_from, promotion.budget) == ("t0", "t0", 3)
    # t0 now runs towards 3; ASHA has nothing else in its top third, Hyperband's rung
    # keeps three.
    following = searcher.promotion()
    assert (following.trial_id if following else None) == then
