import json

import ConfigSpace as CS
import numpy as np
import pytest
from pydantic import ValidationError

from warmtune.space import SearchSpace


def mixed_space():
    return SearchSpace(
        {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": ["sgd"]}},
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "layers": {"type": "int", "low": 1, "high": 8},
            "width": {"type": "int", "low": 8, "high": 512, "log": True},
            "flag": {"type": "categorical", "choices": [True, False, None]},
        }
    )


def test_samples_are_valid_and_never_hold_inactive_parameters():
    space = mixed_space()
    rng = np.random.default_rng(0)
    seen_momentum = {True: 0, False: 0}
    for _ in range(500):
        config = space.sample(rng)
        assert space.validate(config) == config
        has = "momentum" in config
        assert has == (config["optimizer"] == "sgd")
        seen_momentum[has] += 1
        assert 1 <= config["layers"] <= 8 and isinstance(config["layers"], int)
        assert 8 <= config["width"] <= 512 and isinstance(config["width"], int)
    assert min(seen_momentum.values()) > 100


def test_int_bounds_are_inclusive_and_log_ints_reach_both_ends():
    space = SearchSpace({"n": {"type": "int", "low": 1, "high": 4, "log": True}})
    rng = np.random.default_rng(1)
    values = {space.sample(rng)["n"] for _ in range(400)}
    assert values == {1, 2, 3, 4}


def test_log_float_is_uniform_in_log_space():
    space = SearchSpace({"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}})
    rng = np.random.default_rng(2)
    logs = np.log10([space.sample(rng)["lr"] for _ in range(4000)])
    assert abs(np.mean(logs < -2) - 0.5) < 0.05


def test_same_seed_same_samples():
    space = mixed_space()
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


@pytest.mark.parametrize(
    "config, message",
    [
        ({"optimizer": "adam", "lr": 2.0, "layers": 1, "width": 8, "flag": None}, "'lr' = 2.0"),
        ({"optimizer": "adam", "lr": 0.1, "layers": 1, "width": 8}, "'flag' is missing"),
        (
            {"optimizer": "adam", "momentum": 0.5, "lr": 0.1, "layers": 1, "width": 8, "flag": 1},
            "'momentum' is inactive",
        ),
        ({"optimizer": "adam", "lr": 0.1, "layers": 1.5, "width": 8, "flag": None}, "'layers'"),
        ({"optimizer": "adam", "lr": 0.1, "layers": 1, "width": 8, "flag": 1}, "'flag' = 1"),
        ({"color": "red"}, "unknown parameter"),
    ],
)
def test_validate_names_the_problem(config, message):
    with pytest.raises(ValueError, match=message):
        mixed_space().validate(config)


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "empty"),
        ({"x": {"type": "float", "low": 1, "high": 1}}, "must be smaller than high"),
        ({"x": {"type": "float", "low": 0, "high": 1, "log": True}}, "log range needs low > 0"),
        ({"x": {"type": "int", "low": -1, "high": 3, "log": True}}, "log range needs low > 0"),
        ({"x": {"type": "categorical", "choices": []}}, "empty"),
        ({"x": {"type": "categorical", "choices": [1, 1]}}, "duplicates"),
        ({"x": {"type": "float", "low": 0, "high": 1, "when": {"y": [1]}}}, "not defined"),
        (
            {
                "x": {"type": "float", "low": 0, "high": 1, "when": {"y": ["a"]}},
                "y": {"type": "categorical", "choices": ["a"]},
            },
            "defined later",
        ),
        (
            {
                "y": {"type": "categorical", "choices": ["a"]},
                "x": {"type": "float", "low": 0, "high": 1, "when": {"y": ["b"]}},
            },
            "can never take",
        ),
        ({"x": {"type": "gaussian", "low": 0, "high": 1}}, "type"),
    ],
)
def test_bad_spaces_are_rejected(params, message):
    with pytest.raises((ValueError, ValidationError), match=message):
        SearchSpace(params)


def test_true_and_one_are_different_choices():
    space = SearchSpace({"x": {"type": "categorical", "choices": [True, 1]}})
    assert space.validate({"x": 1}) == {"x": 1}
    assert space["x"].index(True) == 0 and space["x"].index(1) == 1


def test_nested_conditions_follow_the_parent_chain():
    space = SearchSpace(
        {
            "a": {"type": "categorical", "choices": ["on", "off"]},
            "b": {"type": "categorical", "choices": ["x", "y"], "when": {"a": ["on"]}},
            "c": {"type": "float", "low": 0, "high": 1, "when": {"b": ["y"]}},
        }
    )
    assert not space.is_active("c", {"a": "off", "b": "y"})
    assert space.is_active("c", {"a": "on", "b": "y"})
    rng = np.random.default_rng(0)
    for _ in range(200):
        config = space.sample(rng)
        assert ("c" in config) == (config.get("b") == "y")


def test_configspace_round_trip_keeps_conditions():
    space = mixed_space()
    cs = space.to_configspace(seed=0)
    assert isinstance(cs, CS.ConfigurationSpace)
    assert len(cs.conditions) == 1
    back = SearchSpace.from_configspace(cs)
    assert back == space
    # ConfigSpace's own sampler respects the condition we exported.
    for c in cs.sample_configuration(50):
        d = dict(c)
        assert ("momentum" in d) == (d["optimizer"] == "sgd")


def test_to_tune_domains_cover_the_same_ranges():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = SearchSpace(
        {
            "lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
            "n": {"type": "int", "low": 1, "high": 4},
            "act": {"type": "categorical", "choices": ["relu", "tanh"]},
        }
    )
    domains = space.to_tune()
    assert isinstance(domains["lr"], Float) and domains["lr"].lower == 1e-3
    assert isinstance(domains["n"], Integer)
    samples = {domains["n"].sample() for _ in range(300)}
    assert samples == {1, 2, 3, 4}  # the upper bound is included, as in warmtune
    assert isinstance(domains["act"], Categorical)


def test_to_tune_refuses_conditional_spaces_with_a_reason():
    with pytest.raises(ValueError, match="conditional"):
        mixed_space().to_tune()


def test_project_and_complete_transfer_what_is_compatible():
    space = mixed_space()
    other = {"optimizer": "sgd", "momentum": 5.0, "lr": 0.01, "dropout": 0.1}
    partial = space.project(other)
    assert partial == {"optimizer": "sgd", "lr": 0.01}  # momentum out of range, dropout unknown
    full = space.complete(partial, np.random.default_rng(0))
    assert space.validate(full) == full and full["lr"] == 0.01


def test_dict_form_round_trips_through_json():
    space = mixed_space()
    again = SearchSpace(json.loads(json.dumps(space.to_dict())))
    assert again == space and again.signature() == space.signature()
    assert SearchSpace({"x": {"type": "float", "low": 0, "high": 2}}).signature() != (
        SearchSpace({"x": {"type": "float", "low": 0, "high": 1}}).signature()
    )
