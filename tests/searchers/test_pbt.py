import json

import numpy as np
import pytest

from warmtune.searchers import PBT, make_searcher, searcher_from_state
from warmtune.space import SearchSpace

SPACE = SearchSpace(
    {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "momentum": {"type": "float", "low": 0.0, "high": 0.99},
        "layers": {"type": "int", "low": 1, "high": 4},
        "act": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
    }
)


def test_explore_stays_inside_the_space_even_at_the_edges():
    pbt = PBT(space=SPACE, seed=0, resample_probability=0.0)
    edge = {"lr": 1e-1, "momentum": 0.99, "layers": 4, "act": "gelu"}
    for _ in range(300):
        new = pbt.explore(edge)
        assert SPACE.validate(new) == new
    # Perturbation moves values by a factor / a fraction of the range, not anywhere.
    mid = {"lr": 1e-2, "momentum": 0.5, "layers": 2, "act": "tanh"}
    lrs = {round(pbt.explore(mid)["lr"], 6) for _ in range(100)}
    assert lrs == {0.008, 0.0125}


def test_explore_also_works_for_conditional_children():
    space = SearchSpace(
        {
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"opt": ["sgd"]}},
        }
    )
    pbt = PBT(space=space, seed=1, resample_probability=0.5)
    config = {"opt": "adam"}
    for _ in range(100):
        config = pbt.explore(config)
        assert space.validate(config) == config


def test_seeded_and_state_round_trip():
    a = PBT(space=SPACE, seed=3)
    b = PBT(space=SPACE, seed=3)
    assert [a.ask(str(i)).config for i in range(5)] == [b.ask(str(i)).config for i in range(5)]
    state = json.loads(json.dumps(a.state()))
    c = searcher_from_state(state, SPACE)
    start = {"lr": 1e-3, "momentum": 0.1, "layers": 1, "act": "relu"}
    assert [a.explore(start) for _ in range(5)] == [c.explore(start) for _ in range(5)]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"quantile_fraction": 0.7}, "quantile_fraction"),
        ({"perturbation_interval": 0}, "perturbation_interval"),
        ({"resample_probability": 2}, "resample_probability"),
        ({"population": 8}, "no option"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        make_searcher("pbt", space=SPACE, seed=0, options=options)


def test_population_is_uniform():
    pbt = PBT(space=SPACE, seed=0)
    acts = [pbt.ask(str(i)).config["act"] for i in range(600)]
    counts = np.unique(acts, return_counts=True)[1]
    assert counts.min() > 150


def test_warm_population_starts_in_the_past_good_region():
    from warmtune.searchers.pasttask import PastTask
    from warmtune.searchers.warmstart import WarmStart

    space = SearchSpace({n: {"type": "float", "low": 0.0, "high": 1.0} for n in ("a", "b")})
    tasks = []
    for k in range(4):
        x = np.random.default_rng(k).uniform(size=(80, 2))
        values = ((x - [0.2 + 0.02 * k, 0.7]) ** 2).sum(axis=1)
        configs = [{"a": float(r[0]), "b": float(r[1])} for r in x]
        tasks.append(
            PastTask(
                name=f"t{k}", meta_features={"k": k}, space=space, configs=configs, values=values
            )
        )
    warm = WarmStart(space=space, past_tasks=tasks, meta_features={"k": 1.5}, seed=0)
    pbt = PBT(space=space, seed=0, warm_start=warm, initial_design=3)
    population = [pbt.ask(str(i)).config for i in range(8)]
    assert population[:3] == warm.initial_design(3, rng=np.random.default_rng(0))
    near = [abs(c["a"] - 0.23) < 0.15 and abs(c["b"] - 0.7) < 0.15 for c in population]
    assert sum(near) >= 4
    cold = PBT(space=space, seed=0)
    assert (
        sum(
            abs(c["a"] - 0.23) < 0.15 and abs(c["b"] - 0.7) < 0.15
            for c in (cold.ask(str(i)).config for i in range(8))
        )
        <= 2
    )
