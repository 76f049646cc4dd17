"""Contract tests shared by the library-backed baselines (Optuna TPE, Hyperopt TPE).

Importing the modules registers the searchers under their names, which
``searcher_from_state`` relies on.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from warmtune.searchers.base import Observation, Searcher, searcher_class, searcher_from_state
from warmtune.searchers.hyperopt_search import HyperOptTPE
from warmtune.searchers.optuna_search import OptunaTPE
from warmtune.searchers.random_search import RandomSearch
from warmtune.space import SearchSpace

BASELINES = [OptunaTPE, HyperOptTPE]


def mixed_space() -> SearchSpace:
    return SearchSpace(
        {
            "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
            "layers": {"type": "int", "low": 1, "high": 6},
            "width": {"type": "int", "low": 8, "high": 512, "log": True},
            # True/1/1.0 and False/0 are distinct choices that == confuses.
            "act": {"type": "categorical", "choices": ["relu", None, True, 1, 1.0, False, 0]},
            "opt": {"type": "categorical", "choices": ["sgd", "adam", "adamw"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"opt": ["sgd"]}},
            "beta2": {
                "type": "float",
                "low": 0.9,
                "high": 0.999,
                "when": {"opt": ["adam", "adamw"]},
            },
            "nesterov": {"type": "categorical", "choices": [True, False], "when": {"opt": ["sgd"]}},
            "dampening": {"type": "int", "low": 0, "high": 3, "when": {"nesterov": [False]}},
        }
    )


def objective(config: dict) -> float:
    """A cheap deterministic value for any config of ``mixed_space``."""
    v = (math.log10(config["lr"]) + 3) ** 2 + (config["layers"] - 3) ** 2 / 4
    v += 0.5 * (config["opt"] == "sgd") + config.get("momentum", 0.5) + config.get("dampening", 0)
    return v


def run(searcher: Searcher, ids: range, *, value=objective) -> list[dict]:
    configs = []
    for i in ids:
        s = searcher.ask(f"t{i}")
        configs.append(s.config)
        searcher.tell(Observation.of(s.trial_id, s.config, 1, value(s.config)))
        searcher.on_trial_end(s.trial_id)
    return configs


def assert_valid(space: SearchSpace, config: dict) -> None:
    # validate() canonicalises types; equality with type checks proves they were right.
    assert space.validate(config) == config
    for name, v in config.items():
        assert type(v) is type(space.validate(config)[name]), name
    for name, p in space.items():
        if p.type == "categorical" and name in config:
            assert any(type(c) is type(config[name]) and c == config[name] for c in p.choices)


@pytest.mark.parametrize("cls", BASELINES)
def test_registered_under_its_name(cls):
    assert searcher_class(cls.name) is cls


@pytest.mark.parametrize("cls", BASELINES)
def test_reproducible_with_a_seed(cls):
    space = mixed_space()
    a = run(cls(space=space, seed=3, **fast(cls)), range(20))
    b = run(cls(space=space, seed=3, **fast(cls)), range(20))
    c = run(cls(space=space, seed=4, **fast(cls)), range(20))
    assert a == b
    assert a != c


@pytest.mark.parametrize("cls", BASELINES)
def test_state_round_trip_continues_identically(cls):
    space = mixed_space()
    original = cls(space=space, seed=7, **fast(cls))
    run(original, range(12))
    # Two trials still running at save time, one with a reported value.
    for tid in ("r0", "r1"):
        s = original.ask(tid)
        if tid == "r0":
            original.tell(Observation.of(tid, s.config, 1, 0.25))

    state = json.loads(json.dumps(original.state()))
    resumed = searcher_from_state(state, space)
    assert type(resumed) is cls
    assert resumed.state() == original.state()

    for searcher in (original, resumed):
        searcher.on_trial_end("r0")
        searcher.on_trial_end("r1")
    assert run(original, range(100, 115)) == run(resumed, range(100, 115))


@pytest.mark.parametrize("cls", BASELINES)
def test_state_from_another_space_is_refused(cls):
    searcher = cls(space=mixed_space(), seed=0, **fast(cls))
    run(searcher, range(3))
    other = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    with pytest.raises(ValueError, match="different search space"):
        searcher_from_state(json.loads(json.dumps(searcher.state())), other)


@pytest.mark.parametrize("cls", BASELINES)
def test_suggestions_valid_in_a_mixed_conditional_space(cls):
    space = mixed_space()
    configs = run(cls(space=space, seed=11, **fast(cls)), range(40))
    for config in configs:
        assert_valid(space, config)
    # Both sides of each condition, and the chained one, were explored.
    assert {"momentum" in c for c in configs} == {True, False}
    assert {"beta2" in c for c in configs} == {True, False}
    assert {"dampening" in c for c in configs} == {True, False}


@pytest.mark.parametrize("cls", BASELINES)
def test_failures_and_nan_do_not_crash(cls):
    space = mixed_space()
    searcher = cls(space=space, seed=5, **fast(cls))
    for i in range(25):
        s = searcher.ask(f"t{i}")
        assert_valid(space, s.config)
        if i % 4 == 0:
            value = float("nan")  # Observation.of turns it into a failure
        elif i % 4 == 1:
            value = None
        elif i % 4 == 2:
            value = objective(s.config)
        else:
            value = "no report"
        if value != "no report":
            searcher.tell(Observation.of(s.trial_id, s.config, 1, value))
        # A hand-built non-finite observation is a failure too.
        if i == 6:
            searcher.tell(Observation(s.trial_id, s.config, 2.0, float("inf")))
        searcher.on_trial_end(s.trial_id)
        searcher.on_trial_end(s.trial_id)  # a repeated end is ignored
    searcher.tell(Observation.of("unknown", {}, 1, 1.0))  # not ours: ignored
    searcher.on_trial_end("unknown")
    assert_valid(space, searcher.ask("last").config)


@pytest.mark.parametrize("cls", BASELINES)
def test_asks_with_outstanding_trials(cls):
    space = mixed_space()
    searcher = cls(space=space, seed=2, **fast(cls))
    pending: list = []
    for i in range(24):
        pending.append(searcher.ask(f"t{i}"))
        if len(pending) == 4:  # four workers busy: report the oldest
            s = pending.pop(0)
            searcher.tell(Observation.of(s.trial_id, s.config, 1, objective(s.config)))
            searcher.on_trial_end(s.trial_id)
    for s in pending:
        assert_valid(space, s.config)


@pytest.mark.parametrize("cls", BASELINES)
def test_last_reported_value_is_the_one_told(cls):
    # Multi-fidelity: only the last value counts, so two searchers that saw
    # different early values but the same last ones suggest the same things.
    space = mixed_space()
    a, b = (cls(space=space, seed=9, **fast(cls)) for _ in range(2))
    for i in range(12):
        sa, sb = a.ask(f"t{i}"), b.ask(f"t{i}")
        assert sa.config == sb.config
        a.tell(Observation.of(sa.trial_id, sa.config, 1, 100.0 + i))
        for searcher, s in ((a, sa), (b, sb)):
            searcher.tell(Observation.of(s.trial_id, s.config, 3, objective(s.config)))
            searcher.on_trial_end(s.trial_id)
    assert a.ask("next").config == b.ask("next").config


@pytest.mark.parametrize("cls", BASELINES)
def test_reused_trial_id_is_refused(cls):
    searcher = cls(space=mixed_space(), seed=0)
    searcher.ask("a")
    with pytest.raises(ValueError, match="fresh id"):
        searcher.ask("a")


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (OptunaTPE, {"n_startup_trials": -1}),
        (OptunaTPE, {"multivariate": False, "group": True}),
        (HyperOptTPE, {"n_startup_jobs": 0}),
        (HyperOptTPE, {"n_startup_jobs": 2.5}),
    ],
)
def test_bad_options_raise_value_error(cls, options):
    with pytest.raises(ValueError):
        cls(space=mixed_space(), seed=0, **options)


def test_optuna_groups_conditional_spaces_by_default():
    assert OptunaTPE(space=mixed_space(), seed=0).options()["group"] is True
    flat = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    assert OptunaTPE(space=flat, seed=0).options()["group"] is False


def test_hyperopt_ints_reach_both_ends_and_nothing_outside():
    space = SearchSpace(
        {
            "n": {"type": "int", "low": -2, "high": 1},
            "m": {"type": "int", "low": 1, "high": 4, "log": True},
        }
    )
    # With only random start-up trials this is hyperopt's prior, the full range.
    prior = HyperOptTPE(space=space, seed=0, n_startup_jobs=1000)
    configs = run(prior, range(300), value=lambda c: 0.0)
    assert {c["n"] for c in configs} == {-2, -1, 0, 1}
    assert {c["m"] for c in configs} == {1, 2, 3, 4}
    # TPE pushed against the edges (the optimum is a corner) stays inside.
    pushed = HyperOptTPE(space=space, seed=0, n_startup_jobs=5)
    for config in run(pushed, range(40), value=lambda c: c["n"] - c["m"]):
        assert_valid(space, config)


@pytest.mark.parametrize(
    ("when", "match"),
    [
        ({"opt": ["sgd"], "flag": [True]}, "several parameters"),
        ({"layers": [2]}, "non-categorical"),
    ],
)
def test_hyperopt_refuses_conditions_it_cannot_express(when, match):
    space = SearchSpace(
        {
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "flag": {"type": "categorical", "choices": [True, False]},
            "layers": {"type": "int", "low": 1, "high": 4},
            "child": {"type": "float", "low": 0.0, "high": 1.0, "when": when},
        }
    )
    with pytest.raises(ValueError, match=match) as info:
        HyperOptTPE(space=space, seed=0)
    assert "'child'" in str(info.value) and "optuna" in str(info.value)


def test_both_beat_random_search_on_a_quadratic():
    space = SearchSpace({k: {"type": "float", "low": -5.0, "high": 5.0} for k in "xyz"})
    center = {"x": 1.3, "y": -2.1, "z": 0.7}

    def quadratic(config: dict) -> float:
        return sum((config[k] - c) ** 2 for k, c in center.items())

    def best(searcher: Searcher) -> float:
        return min(quadratic(c) for c in run(searcher, range(40), value=quadratic))

    random_mean = np.mean([best(RandomSearch(space=space, seed=s)) for s in range(20)])
    for cls in BASELINES:
        tpe_mean = np.mean([best(cls(space=space, seed=s)) for s in range(3)])
        # Typical ratios are ~0.15 (optuna) and ~0.3 (hyperopt); 0.5 leaves room.
        assert tpe_mean < 0.5 * random_mean, (cls.name, tpe_mean, random_mean)


def fast(cls: type[Searcher]) -> dict:
    """Fewer random start-up trials so that short tests reach the model."""
    return {"n_startup_trials": 5} if cls is OptunaTPE else {"n_startup_jobs": 5}
