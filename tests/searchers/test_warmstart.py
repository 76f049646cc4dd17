"""Warm start: initial design, prior densities for BOHB, their weight, and state."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from warmtune.searchers.similarity import PastTask, TaskSimilarity
from warmtune.searchers.warmstart import WarmStart
from warmtune.space import SearchSpace

NAMES = ("x0", "x1", "x2")
SPACE = SearchSpace({n: {"type": "float", "low": 0.0, "high": 1.0} for n in NAMES})
FAMILY_S = np.linspace(0.0, 1.0, 8)


def center(s: float) -> np.ndarray:
    return np.array([0.1 + 0.8 * s, 0.9 - 0.8 * s, 0.5])


def f(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return ((np.asarray(x) - c) ** 2).sum(axis=-1)


def as_configs(x: np.ndarray) -> list[dict]:
    return [{k: float(v) for k, v in zip(NAMES, row, strict=True)} for row in x]


def as_array(configs: list[dict]) -> np.ndarray:
    return np.array([[c[n] for n in NAMES] for c in configs])


def task(name, c, meta, *, seed, n=120, sign=1.0):
    x = np.random.default_rng(seed).uniform(size=(n, 3))
    return PastTask(
        name=name, meta_features=meta, space=SPACE, configs=as_configs(x), values=sign * f(x, c)
    )


def family(sign=1.0):
    return [
        task(f"s{k}", center(s), {"s": float(s)}, seed=100 + k, sign=sign)
        for k, s in enumerate(FAMILY_S)
    ]


def own(c, n, seed=7):
    x = np.random.default_rng(seed).uniform(size=(n, 3))
    return as_configs(x), f(x, c)


@pytest.fixture(scope="module")
def fam():
    tasks = family()
    return tasks, TaskSimilarity(past_tasks=tasks, seed=0)


def test_initial_design_from_similar_past_lies_in_the_good_region(fam):
    tasks, sim = fam
    target = center(0.3)
    warm = WarmStart(
        space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.3}, seed=0
    )
    design = warm.initial_design(5)
    assert len(design) == 5
    values = f(as_array(design), target)
    random_values = f(np.random.default_rng(1).uniform(size=(2000, 3)), target)
    assert values[0] < np.quantile(random_values, 0.05)
    assert np.median(values) < np.quantile(random_values, 0.15)
    assert len({json.dumps(c, sort_keys=True) for c in design}) == 5


def test_greedy_portfolio_beats_top_k_of_the_single_best_task():
    # Two families with distant optima; the target's family label is unknown, so the past
    # is split between them and a portfolio must cover both.
    ca, cb = np.array([0.15, 0.15, 0.5]), np.array([0.85, 0.85, 0.5])
    tasks = [task(f"a{k}", ca + 0.03 * k, {"fam": "a"}, seed=k) for k in range(3)]
    tasks += [task(f"b{k}", cb - 0.03 * k, {"fam": "b"}, seed=10 + k) for k in range(3)]
    sim = TaskSimilarity(past_tasks=tasks, seed=0)
    warm = WarmStart(space=SPACE, past_tasks=tasks, similarity=sim, meta_features={}, seed=0)
    k = 4
    design = as_array(warm.initial_design(k))
    best_task = warm.weights.ranked()[0][0]
    single = next(t for t in tasks if t.name == best_task)
    top_single = as_array([single.configs[i] for i in np.argsort(single.values)[:k]])
    other = cb if best_task.startswith("a") else ca  # the family the single task misses
    assert f(design, other).min() < 0.02
    assert f(top_single, other).min() > 0.2
    # The portfolio's worst case over both families beats the single task's.
    worst = max(f(design, ca).min(), f(design, cb).min())
    worst_single = max(f(top_single, ca).min(), f(top_single, cb).min())
    assert worst < worst_single


def test_prior_weight_decays_with_own_evidence(fam):
    tasks, sim = fam
    warm = WarmStart(
        space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.3}, seed=0
    )
    c = center(0.3)
    weights = [warm.weight_of_past(0)]
    for n in (10, 50, 200):
        configs, values = own(c, n)
        warm.update(configs=configs, values=values)
        weights.append(warm.weight_of_past(n))
    assert weights[0] > 0.9
    assert all(a > b for a, b in zip(weights, weights[1:], strict=False))
    assert weights[-1] < 0.5


def test_adversarial_past_gets_no_prior_weight():
    # Inverted copies of the target's own objective, with the target's meta-features.
    tasks = [
        task(f"evil{k}", center(s), {"s": s}, seed=k, sign=-1.0)
        for k, s in enumerate((0.25, 0.3, 0.35))
    ]
    warm = WarmStart(space=SPACE, past_tasks=tasks, meta_features={"s": 0.3}, seed=0)
    configs, values = own(center(0.3), 30)
    warm.update(configs=configs, values=values)
    assert warm.weight_of_past(30) == 0.0
    assert warm.initial_design(5) == []
    probe = as_configs(np.random.default_rng(0).uniform(size=(4, 3)))
    assert np.all(warm.good_log_density(probe) == 0.0)  # uniform: inert when mixed at 0


def test_good_density_peaks_near_the_target_optimum(fam):
    tasks, sim = fam
    warm = WarmStart(
        space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.3}, seed=0
    )
    near = as_configs(center(0.3)[None, :])
    far = as_configs(center(1.0)[None, :])
    good_near, good_far = warm.good_log_density(near)[0], warm.good_log_density(far)[0]
    assert good_near > good_far + 1.0
    ratio_near = good_near - warm.bad_log_density(near)[0]
    ratio_far = good_far - warm.bad_log_density(far)[0]
    assert ratio_near > ratio_far
    # The density integrates to about one over the unit cube (truncated kernels).
    grid = np.random.default_rng(0).uniform(size=(4000, 3))
    mass = np.exp(warm.good_log_density(as_configs(grid))).mean()
    assert 0.85 < mass < 1.15
    samples = as_array(warm.sample(200, np.random.default_rng(0)))
    assert np.median(f(samples, center(0.3))) < 0.5 * np.median(f(grid, center(0.3)))


def test_projected_configs_always_pass_validate():
    space = SearchSpace(
        {
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"opt": ["sgd"]}},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "layers": {"type": "int", "low": 1, "high": 4},
            "width": {"type": "int", "low": 16, "high": 256, "log": True},
        }
    )
    wider = SearchSpace(
        {
            "opt": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.99},
            "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
            "layers": {"type": "int", "low": 1, "high": 8},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        }
    )
    rng = np.random.default_rng(0)
    tasks = []
    for k, sp in enumerate((wider, wider, space, wider)):
        configs = [sp.sample(rng) for _ in range(80)]
        values = [abs(np.log10(c["lr"]) + 2.5) + 0.1 * c["layers"] for c in configs]
        tasks.append(
            PastTask(name=f"t{k}", meta_features={"k": k}, space=sp, configs=configs, values=values)
        )
    warm = WarmStart(space=space, past_tasks=tasks, meta_features={"k": 1}, seed=0)
    design = warm.initial_design(10)
    assert design
    drawn = warm.sample(100, np.random.default_rng(1)) + warm.sample(
        30, np.random.default_rng(2), which="bad"
    )
    for config in design + drawn:
        assert space.validate(config) == config
    assert np.isfinite(warm.good_log_density(design)).all()


def test_state_round_trip_continues_identically(fam):
    tasks, sim = fam
    warm = WarmStart(
        space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.3}, seed=4
    )
    configs, values = own(center(0.3), 20)
    warm.update(configs=configs, values=values, budgets=[3.0] * 20)
    warm.sample(3)
    state = json.loads(json.dumps(warm.state()))
    again = WarmStart.from_state(state, past_tasks=tasks, similarity=sim)
    assert again.weights == warm.weights
    assert again.initial_design(4) == warm.initial_design(4)
    assert again.sample(5) == warm.sample(5)
    with pytest.raises(ValueError, match="knowledge base changed"):
        WarmStart.from_state(state, past_tasks=tasks[:-1])


def test_bad_arguments_say_how_to_fix(fam):
    tasks, sim = fam
    with pytest.raises(ValueError, match="good_fraction"):
        WarmStart(space=SPACE, past_tasks=tasks, similarity=sim, good_fraction=1.5)
    with pytest.raises(ValueError, match="same list"):
        WarmStart(space=SPACE, past_tasks=tasks[:3], similarity=sim)
    warm = WarmStart(space=SPACE, past_tasks=tasks, similarity=sim)
    with pytest.raises(ValueError, match="which"):
        warm.sample(1, which="ugly")


def test_timing_design_and_densities(fam):
    tasks, sim = fam
    warm = WarmStart(space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.3})
    probe = as_configs(np.random.default_rng(0).uniform(size=(64, 3)))
    t0 = time.perf_counter()
    warm.initial_design(10)
    t1 = time.perf_counter()
    warm.good_log_density(probe)
    warm.bad_log_density(probe)
    t2 = time.perf_counter()
    print(
        f"\nWarmStart (8 tasks x 120 obs): initial_design(10) {1e3 * (t1 - t0):.1f} ms, "
        f"good+bad density at 64 configs {1e3 * (t2 - t1):.1f} ms"
    )


def test_design_scores_shared_configurations_by_measurement():
    # Every task evaluated the same configurations: the first pick must be the one with
    # the best measured average rank (zero-shot's), not a surrogate's guess.
    x = np.random.default_rng(3).uniform(size=(40, 3))
    configs = as_configs(x)
    tasks = [
        PastTask(name=f"t{k}", meta_features={}, space=SPACE, configs=configs,
                 values=f(x, center(s)) + np.random.default_rng(k).normal(0, 0.05, len(x)))
        for k, s in enumerate((0.2, 0.4, 0.6))
    ]  # fmt: skip
    warm = WarmStart(space=SPACE, past_tasks=tasks, seed=0)
    w = np.array([warm.weights.past[t.name] for t in tasks])
    ranks = np.array([(np.argsort(np.argsort(t.values)) / (len(x) - 1)) for t in tasks])
    best = int(np.argmin(w @ ranks))
    assert warm.initial_design(3)[0] == configs[best]


def test_uniform_weights_ablation(fam):
    tasks, sim = fam
    warm = WarmStart(
        space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.0}, seed=0,
        uniform_weights=True,
    )  # fmt: skip
    assert np.allclose(warm._task_weights(), 1.0 / len(tasks))  # noqa: SLF001
    similar = WarmStart(
        space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.0}, seed=0
    )
    assert not np.allclose(similar._task_weights(), 1.0 / len(tasks))  # noqa: SLF001
    back = WarmStart.from_state(json.loads(json.dumps(warm.state())), past_tasks=tasks)
    assert back.uniform_weights
