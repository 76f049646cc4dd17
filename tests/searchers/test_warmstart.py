"""WarmStart: weights from the target's results, the portfolio, its state, the ablations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from warmtune.searchers.pasttask import PastTask
from warmtune.searchers.warmstart import WarmStart
from warmtune.space import SearchSpace

NAMES = ("x0", "x1")
SPACE = SearchSpace({n: {"type": "float", "low": 0.0, "high": 1.0} for n in NAMES})


def task(name, center, *, n=60, seed=0, sign=1.0, runtime=None):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 2))
    configs = [dict(zip(NAMES, map(float, row), strict=True)) for row in x]
    values = sign * ((x - np.asarray(center)) ** 2).sum(axis=1)
    times = None if runtime is None else np.array([runtime(c) for c in configs])
    return PastTask(
        name=name, meta_features={}, space=SPACE, configs=configs, values=values, runtimes=times
    )


def observations(center, n, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 2))
    configs = [dict(zip(NAMES, map(float, row), strict=True)) for row in x]
    return configs, ((x - np.asarray(center)) ** 2).sum(axis=1)


def test_the_first_pick_is_the_consensus_and_the_next_one_hedges():
    # Two tasks with different optima: the consensus first, then the one that most helps
    # the task the first pick serves worst.
    past = [task("a", (0.2, 0.2), seed=1), task("b", (0.8, 0.8), seed=2), task("c", (0.25, 0.2))]
    warm = WarmStart(space=SPACE, past_tasks=past, seed=0)
    rng = np.random.default_rng(0)
    first = warm.next_design([], rng, objective="coverage")
    second = warm.next_design([first], rng, objective="coverage")
    assert first["x0"] < 0.5  # two of three tasks like the lower corner
    assert second["x0"] > 0.5 and second["x1"] > 0.5  # task b's best
    assert warm.next_design([first], rng, objective="average")["x0"] < 0.5
    # initial_design (PBT's population) gives picks in order, none repeated.
    picks = warm.initial_design(4)
    assert len({json.dumps(p, sort_keys=True) for p in picks}) == 4
    with pytest.raises(ValueError, match="objective"):
        warm.next_design([], rng, objective="best")


def test_cost_aware_picks_the_cheaper_of_good_configurations():
    def runtime(config):  # the upper half of x1 costs ten times as much
        return 10.0 if config["x1"] > 0.5 else 1.0

    past = [task(f"t{k}", (0.5, 0.5), seed=k, runtime=runtime) for k in range(3)]
    warm = WarmStart(space=SPACE, past_tasks=past, seed=0)
    rng = np.random.default_rng(0)
    plain = [warm.next_design([], rng, objective="average")]
    cheap = warm.next_design([], rng, objective="average", cost_aware=True)
    assert cheap["x1"] <= 0.5
    assert len(plain) == 1


def test_update_reweights_and_the_own_model_competes():
    past = [task("near", (0.3, 0.3), seed=1), task("mirror", (0.3, 0.3), seed=2, sign=-1)]
    warm = WarmStart(space=SPACE, past_tasks=past, seed=0)
    configs, values = observations((0.3, 0.3), 12)
    w = warm.update(configs=configs, values=values, budgets=np.ones(12))
    assert w.past["near"] > 0.99 * w.past_share and w.own == 0.0 and w.n_own == 12
    # The own model ordering its results perfectly (scores = -values) takes weight.
    mine = warm.update(configs=configs, values=values, budgets=np.ones(12), own_scores=-values)
    assert mine.own > 0.2
    # Different budgets never pair up: one observation per budget is no evidence.
    alone = warm.update(configs=configs, values=values, budgets=np.arange(12.0))
    assert alone.explanations["near"]["pairs"] == 0
    with pytest.raises(ValueError, match="one value and one budget"):
        warm.update(configs=configs, values=values[:3], budgets=np.ones(12))


def test_state_round_trips():
    past = [task("a", (0.2, 0.2), seed=1), task("b", (0.8, 0.8), seed=2)]
    warm = WarmStart(space=SPACE, past_tasks=past, seed=3)
    configs, values = observations((0.2, 0.2), 8)
    warm.update(configs=configs, values=values, budgets=np.ones(8))
    state = json.loads(json.dumps(warm.state()))
    again = WarmStart.from_state(state, past_tasks=past)
    assert again.weights.past == pytest.approx(warm.weights.past)
    assert again.weights.random == pytest.approx(warm.weights.random)
    rng1, rng2 = np.random.default_rng(1), np.random.default_rng(1)
    assert again.next_design(configs, rng1) == warm.next_design(configs, rng2)
    with pytest.raises(ValueError, match="knowledge base changed"):
        WarmStart.from_state(state, past_tasks=past[:1])


def test_uniform_weighting_runs_no_similarity_and_uses_a_fixed_pseudo_count():
    past = [task("a", (0.2, 0.2), seed=1), task("mirror", (0.2, 0.2), seed=2, sign=-1)]
    warm = WarmStart(space=SPACE, past_tasks=past, weighting="uniform", past_weight=10)
    assert warm.similarity is None
    configs, values = observations((0.2, 0.2), 10)
    w = warm.update(configs=configs, values=values, budgets=np.ones(10))
    # The mirrored task keeps its equal share: that is what this ablation removes.
    assert w.past == {"a": pytest.approx(0.25), "mirror": pytest.approx(0.25)}
    assert w.random == pytest.approx(0.5)


def test_the_oracle_needs_a_sample_of_the_target_and_trusts_it():
    past = [task("a", (0.2, 0.2), seed=1), task("b", (0.8, 0.8), seed=2)]
    with pytest.raises(ValueError, match="oracle"):
        WarmStart(space=SPACE, past_tasks=past, weighting="oracle")
    configs, values = observations((0.8, 0.8), 200, seed=9)
    warm = WarmStart(space=SPACE, past_tasks=past, weighting="oracle", oracle=(configs, values))
    # Before any own result, the oracle already knows which past task is the target's.
    assert warm.weights.past["b"] > 0.99 * warm.weights.past_share


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="past_tasks is empty"):
        WarmStart(space=SPACE, past_tasks=[])
    with pytest.raises(ValueError, match="duplicate"):
        WarmStart(space=SPACE, past_tasks=[task("a", (0, 0)), task("a", (1, 1))])
    with pytest.raises(ValueError, match="weighting must be one of"):
        WarmStart(space=SPACE, past_tasks=[task("a", (0, 0))], weighting="best")


def test_a_large_knowledge_base_is_cut_to_the_nearest_tasks():
    from warmtune.searchers.warmstart import nearest_tasks

    wider = SearchSpace(
        {**SPACE.to_dict(), "extra": {"type": "categorical", "choices": ["p", "q"]}}
    )
    near = [
        PastTask(name=f"n{k}", meta_features={"size": 10 + k}, space=SPACE,
                 configs=[{"x0": 0.5, "x1": 0.5}] * 3, values=[1, 2, 3])
        for k in range(4)
    ]  # fmt: skip
    far = PastTask(name="far", meta_features={"size": 1000}, space=SPACE,
                   configs=[{"x0": 0.5, "x1": 0.5}] * 3, values=[1, 2, 3])  # fmt: skip
    other_space = PastTask(name="other", meta_features={"size": 10}, space=wider,
                           configs=[{"extra": "p"}] * 3, values=[1, 2, 3])  # fmt: skip
    chosen = nearest_tasks([far, *near, other_space], SPACE, {"size": 11}, 3)
    # The ones sharing both parameters, nearest by size; the original order kept.
    assert [t.name for t in chosen] == ["n0", "n1", "n2"]
    assert len(nearest_tasks(near, SPACE, {}, 10)) == 4


def test_the_portfolio_objective_is_learned_leave_one_task_out():
    # Two recurring kinds of task: hedging across them holds up better on a held-out
    # one than the consensus, which serves only the majority kind.
    split = [task(f"lo{k}", (0.1, 0.1), seed=k) for k in range(4)]
    split += [task(f"hi{k}", (0.9, 0.9), seed=10 + k) for k in range(3)]
    warm = WarmStart(space=SPACE, past_tasks=split)
    assert warm.design_objective() == "coverage"
    assert warm.design_objective() is warm.design_objective()  # learned once
