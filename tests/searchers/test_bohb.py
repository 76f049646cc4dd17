"""BOHB: its density-ratio model, its options, its warm-start seam, and that it pays off."""

from __future__ import annotations

import json

import numpy as np
import pytest

from warmtune.searchers import BOHB, Observation, make_searcher, searcher_from_state
from warmtune.searchers.tpe import DensityRatioModel, ProductKernelDensity, SpaceCodec
from warmtune.space import SearchSpace

OPTIMUM = np.array([0.2, 0.7, 0.35, 0.8, 0.5])
BOX = SearchSpace({f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(5)})


def _sphere(config, budget):
    x = np.array([config[f"x{i}"] for i in range(5)])
    return float(((x - OPTIMUM) ** 2).sum()) + 0.5 / budget


def _best_after(name, seed, driver_cls, **options):
    searcher = make_searcher(name, space=BOX, seed=seed, options=options)
    driver = driver_cls(searcher, objective=_sphere, workers=2)
    driver.run(10**6, max_spent=30 * 27)  # 30 full-budget evaluations' worth of iterations
    return driver.best(27)


def test_bohb_beats_random_search_for_the_same_budget(driver_cls):
    seeds = range(5)
    bohb = np.mean([_best_after("bohb", s, driver_cls, max_budget=27) for s in seeds])
    rand = np.mean([_best_after("random", s, driver_cls) for s in seeds])
    # 0.5 / 27 is the fidelity term both pay at the full budget.
    floor = 0.5 / 27
    assert bohb - floor < 0.5 * (rand - floor), (bohb, rand)


def _random_data(space, objective, n, seed):
    rng = np.random.default_rng(seed)
    configs = [space.sample(rng) for _ in range(n)]
    return configs, [objective(c, 27) for c in configs]


def test_the_density_ratio_prefers_the_good_region(mixed_space, objectives):
    codec = SpaceCodec(mixed_space)
    configs, values = _random_data(mixed_space, objectives["quadratic"], 200, seed=0)
    model = DensityRatioModel.fit(codec, codec.encode(configs), values)
    optimum = {"lr": 1e-2, "layers": 3, "width": 64, "optimizer": "adam", "dropout": 0.1}
    rng = np.random.default_rng(1)
    elsewhere = [mixed_space.sample(rng) for _ in range(50)]
    far = {
        "lr": 0.9,
        "layers": 8,
        "width": 500,
        "optimizer": "sgd",
        "momentum": 0.0,
        "nesterov": False,
        "dropout": 0.5,
    }
    ratio_opt, ratio_far = model.log_ratio([optimum, far])
    assert ratio_opt > ratio_far
    assert ratio_opt > np.quantile(model.log_ratio(elsewhere), 0.9)
    # And what it proposes is better than what it was fitted on, on average.
    proposals = [model.propose(rng) for _ in range(20)]
    quadratic = objectives["quadratic"]
    assert np.mean([quadratic(c, 27) for c in proposals]) < np.mean(values)


def test_kernel_samples_respect_conditions_and_bounds(mixed_space):
    codec = SpaceCodec(mixed_space)
    rng = np.random.default_rng(0)
    # Good points all use adam (no momentum, no nesterov): wide kernels must still
    # draw children only when their parent makes them active.
    points = codec.encode([{**mixed_space.sample(rng), "optimizer": "adam"} for _ in range(5)])
    points[:, 4:6] = np.nan
    density = ProductKernelDensity(points, codec, min_bandwidth=1e-3)
    for config in density.sample(rng, 300, bandwidth_factor=10.0):
        assert mixed_space.validate(config) == config
    assert np.isfinite(density.log_pdf(codec.encode(density.sample(rng, 50)))).all()


def test_the_model_uses_the_largest_budget_with_enough_results(driver_cls):
    searcher = BOHB(space=BOX, seed=0, max_budget=27, min_points_in_model=3)
    driver_cls(searcher, objective=_sphere).run(60)
    counts = {b: len(r) for b, r in searcher.results_by_budget().items()}
    eligible = [b for b, n in counts.items() if n >= 3 + 2]
    model = searcher.model()
    assert model is not None
    assert searcher._model_key[0] == max(eligible)


def test_the_kde_density_integrates_to_one_on_a_conditional_space():
    space = SearchSpace(
        {
            "c": {"type": "categorical", "choices": ["a", "b"]},
            "x": {"type": "float", "low": 0.0, "high": 1.0, "when": {"c": ["a"]}},
        }
    )
    codec = SpaceCodec(space)
    points = codec.encode([{"c": "a", "x": 0.1}, {"c": "b"}, {"c": "a", "x": 0.95}])
    density = ProductKernelDensity(points, codec, min_bandwidth=1e-3)
    grid = np.linspace(0, 1, 2001)
    rows_a = np.column_stack([np.zeros_like(grid), grid])
    mass_a = np.trapezoid(np.exp(density.log_pdf(rows_a)), grid)
    mass_b = float(np.exp(density.log_pdf(np.array([[1.0, np.nan]])))[0])
    assert mass_a + mass_b == pytest.approx(1.0, abs=1e-3)


class _PointPrior:
    """A prior that puts everything near one configuration (the warm-start seam's shape)."""

    def __init__(self, centre):
        self.centre = centre

    def log_density(self, configs):
        x = np.array([[c[f"x{i}"] for i in range(5)] for c in configs])
        return -(((x - self.centre) / 0.05) ** 2).sum(axis=1) / 2

    def sample(self, rng, n):
        x = np.clip(self.centre + 0.05 * rng.standard_normal((n, 5)), 0, 1)
        return [{f"x{i}": float(v) for i, v in enumerate(row)} for row in x]


def test_a_prior_steers_early_configurations_and_its_weight_decays(driver_cls):
    prior = _PointPrior(OPTIMUM)
    searcher = BOHB(space=BOX, seed=0, max_budget=27, prior=prior, random_fraction=0.0)
    first = [searcher.ask(f"t{i}").config for i in range(5)]
    assert all(np.abs([c[f"x{i}"] for i in range(5)] - OPTIMUM).max() < 0.3 for c in first)
    for tid, config in zip([f"t{i}" for i in range(5)], first, strict=True):
        searcher.tell(Observation.of(tid, config, 1, _sphere(config, 1)))
    driver_cls(searcher, objective=_sphere, next_id=5).run(40)
    assert searcher.model().prior is prior
    # The prior's weight decays as the model's own observations grow.
    codec = SpaceCodec(BOX)
    configs, values = _random_data(BOX, _sphere, 200, seed=0)
    rows = codec.encode(configs)
    few = DensityRatioModel.fit(codec, rows[:20], values[:20], prior=prior, prior_weight=10)
    many = DensityRatioModel.fit(codec, rows, values, prior=prior, prior_weight=10)
    assert many.prior_mix < few.prior_mix < 1
    # The prior is not data: from_state takes it again, and the search continues.
    state = json.loads(json.dumps(searcher.state()))
    assert "prior" not in state["options"]
    restored = BOHB.from_state(state, BOX, prior=prior)
    assert restored.ask("next") == searcher.ask("next")
    assert searcher_from_state(state, BOX).prior is None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"top_n_percent": 0}, "top_n_percent"),
        ({"num_samples": 0}, "num_samples"),
        ({"random_fraction": 1.5}, "random_fraction"),
        ({"min_points_in_model": 0}, "min_points_in_model"),
        ({"mode": "fast"}, "mode"),
        ({"prior": object()}, "prior"),
    ],
)
def test_bad_options_raise_with_the_fix(options, match):
    with pytest.raises(ValueError, match=match):
        BOHB(space=BOX, max_budget=27, **options)


def test_a_discrete_space_is_not_evaluated_twice():
    # NAS-Bench-201-like: only categoricals. Without the check, the best l/g candidate
    # is often a cell already evaluated, and about half the evaluations were repeats.
    space = SearchSpace(
        {f"e{i}": {"type": "categorical", "choices": ["a", "b", "c"]} for i in range(3)}
    )
    searcher = BOHB(space=space, seed=0, max_budget=1)
    seen = []
    for i in range(20):
        suggestion = searcher.ask(f"t{i}")
        config = suggestion.config
        seen.append(json.dumps(config, sort_keys=True))
        value = sum("abc".index(config[f"e{j}"]) for j in range(3))
        searcher.tell(Observation(trial_id=f"t{i}", config=config, budget=1, value=float(value)))
    assert len(set(seen)) == len(seen)  # 20 of the 27 cells, no repeat
