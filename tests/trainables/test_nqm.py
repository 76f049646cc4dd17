"""The noisy quadratic model: its closed form is what SGD with gradient noise does."""

import numpy as np
import pytest

from warmtune.bench.backends import NQMBackend
from warmtune.trainables.nqm import NoisyQuadratic, meta_features


def sgd_second_moments(model, schedule, runs=40000, seed=0):
    """Monte Carlo: run plain SGD with Gaussian gradient noise, `runs` times at once."""
    rng = np.random.default_rng(seed)
    h = model.curvatures
    theta = np.ones((runs, model.dims))
    for config in schedule:
        lr, batch = config["lr"], config["batch_size"]
        for _ in range(model.examples // batch):
            noise = rng.normal(size=theta.shape) * np.sqrt(model.noise * h / batch)
            theta = theta - lr * (h * theta + noise)
    return (theta**2).mean(axis=0)


def test_the_closed_form_is_the_mean_of_sgd_runs():
    model = NoisyQuadratic(dims=3, exponent=1.0, noise=2.0, examples=64)
    schedule = [
        {"lr": 0.5, "batch_size": 8},
        {"lr": 0.5, "batch_size": 8},
        {"lr": 0.1, "batch_size": 32},
    ]
    weights = model.initial()
    for config in schedule:
        weights = model.train(weights, config)
    assert weights == pytest.approx(sgd_second_moments(model, schedule), rel=0.03)


def test_iterations_compose_and_many_configurations_train_at_once():
    model = NoisyQuadratic(dims=50)
    configs = [{"lr": 0.05, "batch_size": 16}, {"lr": 0.3, "batch_size": 256}]
    one_by_one = []
    for c in configs:
        w = model.initial()
        for _ in range(5):
            w = model.train(w, c)
        one_by_one.append(model.loss(w))
    assert model.losses(configs, 5) == pytest.approx(one_by_one, rel=1e-9)


def test_a_learning_rate_beyond_two_over_the_top_curvature_diverges_and_fails():
    model = NoisyQuadratic(dims=10)
    assert model.losses([{"lr": 2.5, "batch_size": 4}], 32)[0] == np.inf
    backend = NQMBackend(model, max_budget=32)
    assert backend.evaluate({"lr": 2.5, "batch_size": 4}, 32)[0] is None
    assert backend.evaluate({"lr": 0.1, "batch_size": 4}, 32)[0] > 0


def test_the_backend_steps_what_it_evaluates_and_never_changes_given_weights():
    backend = NQMBackend(NoisyQuadratic(dims=20), max_budget=6)
    config = {"lr": 0.2, "batch_size": 64}
    weights = backend.initial(config)
    steps = []
    for it in range(1, 7):
        given, snapshot = weights, weights.copy()
        weights, value, cost = backend.step(given, config, it)
        assert np.array_equal(given, snapshot)  # a kept checkpoint stays as it was
        steps.append((value, cost))
    assert np.array(steps) == pytest.approx(np.array(backend.evaluate_many(config, range(1, 7))))
    assert steps[-1] == pytest.approx(backend.evaluate(config, 6))


def test_meta_features_are_the_task_settings():
    assert meta_features({"dims": 100, "noise": 0.1}) == {
        "dims": 100,
        "exponent": 1.0,
        "noise": 0.1,
    }
