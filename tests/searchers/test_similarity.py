"""The learned similarity: priors fitted leave-one-task-out on the past, evidence from the
target's results, and the competition of past, own model and chance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmtune.searchers.pastmodels import PastModels
from warmtune.searchers.pasttask import PastTask
from warmtune.searchers.similarity import UNINFORMED_VARIANCE, Evidence, TaskSimilarity
from warmtune.searchers.warmstart import WarmStart
from warmtune.space import SearchSpace

NAMES = ("x0", "x1", "x2")
SPACE = SearchSpace({n: {"type": "float", "low": 0.0, "high": 1.0} for n in NAMES})


def bowl(center, *, sign=1.0, n=100, seed=0, name="t", meta=None, permute=False):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 3))
    values = sign * ((x - np.asarray(center)) ** 2).sum(axis=1)
    if permute:  # the relation between configuration and value destroyed
        x = np.stack([rng.permutation(x[:, j]) for j in range(3)], axis=1)
    configs = [dict(zip(NAMES, map(float, row), strict=True)) for row in x]
    return PastTask(
        name=name, meta_features=meta or {}, space=SPACE, configs=configs, values=values
    )


def target_obs(center, n, seed=99):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 3))
    configs = [dict(zip(NAMES, map(float, row), strict=True)) for row in x]
    return configs, ((x - np.asarray(center)) ** 2).sum(axis=1), np.ones(n)


ALIGNED = [(0.3 + 0.05 * k, 0.6 - 0.05 * k, 0.5) for k in range(4)]


def test_the_prior_is_learned_from_how_past_tasks_predict_each_other():
    tasks = [bowl(c, seed=k, name=f"real{k}") for k, c in enumerate(ALIGNED)]
    tasks += [bowl(ALIGNED[0], seed=10 + k, name=f"noise{k}", permute=True) for k in range(2)]
    sim = TaskSimilarity(models=PastModels(space=SPACE, past_tasks=tasks))
    mean, var = sim.prior()
    real, noise = mean[:4], mean[4:]
    # A task that predicts the others transfers well; one that predicts nothing does not
    # (its concordance is chance's, give or take its one random function).
    assert real.min() > 0.6 and real.min() > noise.max() + 0.1 and noise.max() < 0.6
    assert np.all(var > 0) and np.all(var < UNINFORMED_VARIANCE)
    # The pairwise concordances behind it, in both directions, and chance's prior: most
    # held-out tasks had a past task ordering them, so chance starts small.
    assert sim.pairwise[0, 1] > 0.8 and math.isnan(sim.pairwise[0, 0])
    assert sim.null_prior < 0.5
    assert set(sim.calibration()) >= {"loto_error", "typical_concordance", "prior_sd"}


def test_a_mirrored_past_task_loses_its_weight_within_a_few_observations():
    tasks = [bowl(c, seed=k, name=f"real{k}") for k, c in enumerate(ALIGNED)]
    tasks += [bowl(c, sign=-1.0, seed=20 + k, name=f"mirror{k}") for k, c in enumerate(ALIGNED)]
    warm = WarmStart(space=SPACE, past_tasks=tasks, seed=0)
    before = warm.weights.past
    mirrored = [n for n in before if n.startswith("mirror")]
    # Before any evidence the mirrored copies weigh as much as the real tasks: nothing
    # but the target's own results can tell them apart.
    assert sum(before[n] for n in mirrored) == pytest.approx(warm.weights.past_share / 2, rel=0.05)
    for n, expected in ((6, 0.01), (10, 1e-3), (15, 1e-4)):
        configs, values, budgets = target_obs(ALIGNED[1], n)
        w = warm.update(configs=configs, values=values, budgets=budgets)
        assert sum(w.past[m] for m in mirrored) < expected * w.past_share, n
    assert w.explanations["mirror0"]["measured"] < 0.3
    assert w.explanations["real1"]["measured"] > 0.7


def test_the_own_model_takes_over_when_it_orders_its_results_better():
    tasks = [bowl((0.9, 0.9, 0.9), seed=k, name=f"far{k}") for k in range(3)]
    sim = TaskSimilarity(models=PastModels(space=SPACE, past_tasks=tasks))
    pairs = 190  # 20 observations at one budget
    # The past orders them at chance, the own model nearly always rightly.
    past_only = sim.weights(evidence=Evidence(np.full(3, 95.0), pairs, None, 20))
    with_own = sim.weights(evidence=Evidence(np.full(3, 95.0), pairs, 180.0, 20))
    assert with_own.own > 0.99 and with_own.past_share < 0.01
    # Without an own model, a past at chance loses to chance itself (which knows it is
    # at chance for certain).
    assert past_only.own == 0.0 and past_only.random > past_only.past_share
    for w in (past_only, with_own):
        assert w.past_share + w.own + w.random == pytest.approx(1.0)


def test_meta_features_learned_leave_one_task_out_move_the_prior():
    # Two families that rank configurations the opposite way; the label tells them apart.
    tasks = [bowl(c, seed=k, name=f"a{k}", meta={"family": "a"}) for k, c in enumerate(ALIGNED)] + [
        bowl(c, sign=-1.0, seed=30 + k, name=f"b{k}", meta={"family": "b"})
        for k, c in enumerate(ALIGNED)
    ]
    sim = TaskSimilarity(models=PastModels(space=SPACE, past_tasks=tasks))
    assert sim.meta_slope > 0 and sim.loto_error["meta"] < sim.loto_error["typical"]
    mean_a, _ = sim.prior({"family": "a"})
    mean_b, _ = sim.prior({"family": "b"})
    assert mean_a[:4].min() > 0.6 and mean_a[4:].max() < 0.4
    assert mean_b[4:].min() > 0.6 and mean_b[:4].max() < 0.4
    # And before any result, the weights follow: family a's target listens to family a.
    w = sim.weights(meta_features={"family": "a"})
    assert sum(w.past[f"a{k}"] for k in range(4)) > 0.9 * w.past_share


def test_weights_are_deterministic_and_stored_pairs_are_reused():
    tasks = [bowl(c, seed=k, name=f"real{k}") for k, c in enumerate(ALIGNED)]
    models = PastModels(space=SPACE, past_tasks=tasks)
    sim = TaskSimilarity(models=models)
    evidence = Evidence(np.array([30.0, 28.0, 20.0, 10.0]), 45, 25.0, 10)
    first, second = sim.weights(evidence=evidence), sim.weights(evidence=evidence)
    assert first == second
    again = TaskSimilarity(models=models, pairwise=sim.pairwise_state())
    np.testing.assert_allclose(again.pairwise, sim.pairwise, equal_nan=True)
    assert again.weights(evidence=evidence).past == pytest.approx(first.past)


def test_the_flat_prior_ablation_knows_nothing_before_evidence():
    tasks = [bowl(c, seed=k, name=f"real{k}") for k, c in enumerate(ALIGNED)]
    sim = TaskSimilarity(models=PastModels(space=SPACE, past_tasks=tasks), prior="flat")
    mean, var = sim.prior()
    np.testing.assert_allclose(mean, 0.5)
    np.testing.assert_allclose(var, UNINFORMED_VARIANCE)
    with pytest.raises(ValueError, match="prior must be"):
        TaskSimilarity(models=PastModels(space=SPACE, past_tasks=tasks), prior="nope")
