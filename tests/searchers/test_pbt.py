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


# The exploit decisions ----------------------------------------------------------------
ONE = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 1.0}})


def _population(values, **options):
    """A PBT whose members m0, m1, ... reached their first perturbation point with these
    results, in this order; returns it and the decisions."""
    from warmtune.searchers.base import Observation

    pbt = PBT(space=ONE, seed=0, perturbation_interval=2, **options)
    members = [pbt.ask(f"m{i}") for i in range(len(values))]
    decisions = {}
    for m, v in zip(members, values, strict=True):
        decisions[m.trial_id] = pbt.perturb(Observation.of(m.trial_id, m.config, 2, v))
    return pbt, members, decisions


def test_the_top_quantile_keeps_checkpoints_and_the_bottom_copies_one_of_them():
    from warmtune.searchers.base import Observation

    # m0..m3 perturb in turn: m0 alone is unranked; then the ranking grows.
    pbt, members, d = _population([0.4, 0.1, 0.3, 0.2], quantile_fraction=0.25)
    assert d["m0"].checkpoint is False and d["m0"].exploit is None  # alone: no quantiles
    # m1 joins: n=2, q=1: m0 (0.4) is the bottom, m1 (0.1) the top.
    assert d["m1"].checkpoint is True and d["m1"].exploit is None
    # m2 (0.3) among 0.4, 0.1, 0.3: q=1, neither top nor bottom.
    assert d["m2"] == type(d["m2"])(checkpoint=False)
    # m3 (0.2) among four: q=1; m3 is not bottom (m0 is), not top (m1 is).
    assert d["m3"].checkpoint is False and d["m3"].exploit is None
    # m0 at its next point, still the worst: copies the top member, m1, explored.
    again = pbt.perturb(Observation.of("m0", members[0].config, 4, 0.5))
    assert again.exploit is not None and again.exploit.source == "m1"
    assert again.exploit.config != members[1].config
    assert ONE.validate(again.exploit.config) == again.exploit.config
    # The exploited member takes the source's perturbation point (iteration 2).
    assert not pbt.due("m0", 3) and pbt.due("m0", 4)


def test_a_top_member_without_a_checkpoint_is_not_copied():
    from warmtune.searchers.base import Observation

    pbt, members, d = _population([0.1, 0.4], quantile_fraction=0.5)
    assert d["m0"].checkpoint is False  # it was alone when it perturbed: no checkpoint kept
    # m1 is the bottom; the top, m0, kept no checkpoint: nothing to copy.
    assert d["m1"].exploit is None
    # m0 perturbs again, now at the top: it keeps one, and m1 copies it next time.
    assert pbt.perturb(Observation.of("m0", members[0].config, 4, 0.1)).checkpoint
    assert pbt.perturb(Observation.of("m1", members[1].config, 4, 0.4)).exploit.source == "m0"


def test_a_failed_member_ranks_last_and_an_ended_one_is_left_out():
    from warmtune.searchers.base import Observation

    pbt, members, d = _population([0.1, 0.3, None], quantile_fraction=0.5)
    # m2 failed (diverged): the bottom of three; the top, m0, has no checkpoint yet.
    assert d["m1"].checkpoint is False  # m0 (0.1) was the top when m1 perturbed
    assert d["m2"].exploit is None  # m0 kept no checkpoint (it was alone at its point)
    assert pbt.perturb(Observation.of("m0", members[0].config, 4, 0.1)).checkpoint
    assert pbt.perturb(Observation.of("m2", members[2].config, 4, None)).exploit.source == "m0"
    # A failed member never keeps a checkpoint, even at the top.
    pbt.on_trial_end("m0")
    pbt.on_trial_end("m1")
    alone = pbt.perturb(Observation.of("m2", members[2].config, 6, None))
    assert alone == type(alone)(checkpoint=False)


def test_a_restored_pbt_makes_the_same_decisions():
    from warmtune.searchers.base import Observation

    pbt, members, _ = _population([0.4, 0.1, 0.3, 0.2], quantile_fraction=0.5)
    twin = searcher_from_state(json.loads(json.dumps(pbt.state())), ONE)
    for step in range(3):
        for m in members:
            obs = Observation.of(m.trial_id, pbt._population[m.trial_id]["config"], 4 + step, 0.2)
            assert pbt.perturb(obs) == twin.perturb(obs)


def test_a_trial_that_is_not_a_member_is_never_due():
    pbt, _, _ = _population([0.1, 0.2])
    assert not pbt.due("stranger", 100)
    assert pbt.due("m0", 4) and not pbt.due("m0", 3)


def test_the_population_size_ends_the_asking():
    pbt = PBT(space=ONE, seed=0, population_size=3)
    assert [pbt.ask(str(i)) is None for i in range(5)] == [False, False, False, True, True]
    with pytest.raises(ValueError, match="population_size"):
        PBT(space=ONE, seed=0, population_size=1)
