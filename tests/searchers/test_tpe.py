"""TPE's density-ratio model, which BOHB's own model and its warm start build on."""

from __future__ import annotations

import numpy as np
import pytest

from warmtune.searchers.encoding import SpaceCodec
from warmtune.searchers.tpe import DensityRatioModel
from warmtune.space import SearchSpace

SPACE = SearchSpace(
    {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "opt": {"type": "categorical", "choices": ["a", "b", "c"]},
    }
)
CODEC = SpaceCodec(SPACE)


def observations(n=60, seed=0):
    """Values best near x = 0.2 with opt = 'b'."""
    rng = np.random.default_rng(seed)
    configs = [SPACE.sample(rng) for _ in range(n)]
    values = [(c["x"] - 0.2) ** 2 + (0.0 if c["opt"] == "b" else 0.3) for c in configs]
    return configs, values


def test_the_split_is_bohbs_top_percent_and_needs_enough_observations():
    configs, values = observations(40)
    rows = CODEC.encode(configs)
    model = DensityRatioModel.fit(CODEC, rows, values, top_n_percent=15.0)
    order = np.argsort(values)
    # n_good = max(dim + 1, 15 % of 40) = 6 best; n_bad = 85 % of 40 = 34 worst.
    assert np.array_equal(model.l.points, rows[order[:6]])
    assert np.array_equal(model.g.points, rows[order[-34:]])
    assert DensityRatioModel.fit(CODEC, rows[:3], values[:3]) is None
    # Failures are the worst: with too few valid results there is no good set.
    assert DensityRatioModel.fit(CODEC, rows[:8], [None] * 6 + values[:2]) is None


def test_the_ratio_and_proposals_favour_the_good_region():
    configs, values = observations()
    model = DensityRatioModel.fit(CODEC, CODEC.encode(configs), values)
    near, far = {"x": 0.2, "opt": "b"}, {"x": 0.9, "opt": "a"}
    assert model.log_ratio([near])[0] > model.log_ratio([far])[0]
    rng = np.random.default_rng(1)
    proposals = [model.propose(rng) for _ in range(30)]
    assert all(SPACE.validate(p) == p for p in proposals)
    assert np.mean([abs(p["x"] - 0.2) < 0.2 and p["opt"] == "b" for p in proposals]) > 0.7
    assert model.propose(rng, exclude=lambda c: True) is None


class _PointPrior:
    """An expert's density: all its mass near x = 0.8."""

    def log_density(self, configs):
        return np.array([0.0 if abs(c["x"] - 0.8) < 0.05 else -20.0 for c in configs])

    def sample(self, rng, n):
        return [{"x": 0.8, "opt": "a"} for _ in range(n)]


@pytest.mark.parametrize(("n", "expected"), [(10, 0.5), (90, 0.1)])
def test_a_prior_weighs_as_many_observations_as_its_weight(n, expected):
    configs, values = observations(n)
    model = DensityRatioModel.fit(
        CODEC, CODEC.encode(configs), values, prior=_PointPrior(), prior_weight=10.0
    )
    assert model.prior_mix == pytest.approx(expected)
    plain = DensityRatioModel.fit(CODEC, CODEC.encode(configs), values)
    # Where the prior puts its mass, the ratio rises above the model's own.
    assert (
        model.log_ratio([{"x": 0.8, "opt": "a"}])[0] > plain.log_ratio([{"x": 0.8, "opt": "a"}])[0]
    )
