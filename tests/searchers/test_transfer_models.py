"""The pieces transfer is built from: one encoding, one kernel density (alone or stacked),
rank statistics, and the past tasks' models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmtune.searchers.encoding import SpaceCodec
from warmtune.searchers.kde import DensityStack, ProductKernelDensity
from warmtune.searchers.pastmodels import PastModels
from warmtune.searchers.pasttask import PastTask
from warmtune.searchers.ranks import concordance, concordance_variance, rank01, stratified
from warmtune.space import SearchSpace

MIXED = SearchSpace(
    {
        "a": {"type": "float", "low": 0.0, "high": 1.0},
        "b": {"type": "int", "low": 1, "high": 50, "log": True},
        "c": {"type": "categorical", "choices": ["x", "y", "z"]},
        "d": {"type": "float", "low": 1e-3, "high": 1.0, "log": True, "when": {"c": ["x"]}},
    }
)
BOX = SearchSpace({n: {"type": "float", "low": 0.0, "high": 1.0} for n in ("x0", "x1")})


# Encoding ---------------------------------------------------------------------------------
def test_foreign_values_carry_no_information():
    codec = SpaceCodec(MIXED)
    rows = codec.encode(
        [{"a": 2.0, "b": 3.0, "c": "w", "other": 1}, {"a": 0.25, "b": 3, "c": "y"}],
        foreign=True,
    )
    # Out of range, an unlisted choice and an unknown parameter are absent; an
    # integer-valued float of an int parameter is that int.
    assert np.isnan(rows[0, 0]) and np.isnan(rows[0, 2]) and np.isnan(rows[0, 3])
    assert rows[0, 1] == rows[1, 1] == codec.encode_value(1, 3)
    assert rows[1, 0] == 0.25 and rows[1, 2] == 1.0
    with pytest.raises(ValueError):
        codec.encode([{"a": 0.5, "b": 3, "c": "w"}])  # this space's own configs must fit


def test_decode_inverts_encode():
    codec = SpaceCodec(MIXED)
    rng = np.random.default_rng(0)
    for config in (MIXED.sample(rng) for _ in range(50)):
        decoded = codec.decode(codec.encode([config])[0])
        assert decoded["b"] == config["b"] and decoded["c"] == config["c"]
        assert decoded["a"] == pytest.approx(config["a"])


# Densities --------------------------------------------------------------------------------
def test_a_stack_evaluates_exactly_what_each_density_does():
    codec = SpaceCodec(MIXED)
    rng = np.random.default_rng(1)
    densities = [
        ProductKernelDensity(
            codec.encode([MIXED.sample(rng) for _ in range(n)]), codec, min_bandwidth=1e-3
        )
        for n in (5, 17, 1)
    ]
    rows = codec.encode([MIXED.sample(rng) for _ in range(40)])
    rows[3, 0] = np.nan  # a row without a numeric parameter: its kernel factor is skipped
    alone = np.stack([d.log_pdf(rows) for d in densities], axis=1)
    stacked = DensityStack(densities).log_pdf(rows)
    np.testing.assert_allclose(stacked, alone, rtol=0, atol=1e-10)
    some = DensityStack(densities).log_pdf(rows, which=np.array([2, 0]))
    np.testing.assert_allclose(some, alone[:, [2, 0]], rtol=0, atol=1e-10)
    # An all-categorical space (NAS-Bench-201's cells) has no numeric part at all.
    cells = SearchSpace(
        {f"e{i}": {"type": "categorical", "choices": list("abc")} for i in range(3)}
    )
    cat = SpaceCodec(cells)
    stack = [
        ProductKernelDensity(
            cat.encode([cells.sample(rng) for _ in range(n)]), cat, min_bandwidth=1e-3
        )
        for n in (4, 9)
    ]
    rows = cat.encode([cells.sample(rng) for _ in range(6)])
    alone = np.stack([d.log_pdf(rows) for d in stack], axis=1)
    np.testing.assert_allclose(
        DensityStack(stack).log_pdf(rows, which=np.array([1])), alone[:, [1]]
    )
    # A density integrates to one over a 1-d unit interval.
    box = SpaceCodec(SearchSpace({"x": {"type": "float", "low": 0, "high": 1}}))
    kde = DensityStack([ProductKernelDensity(np.array([[0.2], [0.9]]), box, min_bandwidth=0.05)])
    grid = np.linspace(0, 1, 20001)[:, None]
    assert np.trapezoid(np.exp(kde.log_pdf(grid)[:, 0]), grid[:, 0]) == pytest.approx(1, abs=1e-3)


def test_a_stack_refuses_mixed_codecs():
    a = ProductKernelDensity(np.array([[0.5, 0.5]]), SpaceCodec(BOX), min_bandwidth=1e-3)
    b = ProductKernelDensity(np.array([[0.5, 0.5]]), SpaceCodec(BOX), min_bandwidth=1e-3)
    with pytest.raises(ValueError, match="same SpaceCodec"):
        DensityStack([a, b])


# Rank statistics --------------------------------------------------------------------------
def test_concordance_counts_same_budget_pairs_with_ties_half():
    y = np.array([1.0, 2.0, 3.0, 1.0, 5.0])
    budgets = np.array([1.0, 1.0, 1.0, 3.0, 3.0])
    # Pairs at budget 1: (0,1) (0,2) (1,2); at budget 3: (3,4). Higher score = better.
    scores = np.array([[3.0, 2.0, 1.0, 2.0, 1.0], [1.0, 2.0, 3.0, 1.0, 2.0], [0, 0, 0, 0, 0]])
    agree, pairs = concordance(scores, y, budgets)
    assert pairs == 4
    np.testing.assert_array_equal(agree, [4.0, 0.0, 2.0])
    assert concordance(scores, y, np.arange(5.0))[1] == 0  # no two at the same budget
    # Kendall's null variance of tau for n = 4 (6 pairs), over four.
    assert concordance_variance(6) == pytest.approx(2 * 13 / (9 * 4 * 3) / 4)
    assert math.isinf(concordance_variance(0))


def test_rank01_and_stratified():
    np.testing.assert_allclose(rank01(np.array([3.0, 1.0, 2.0, 2.0])), [1.0, 0.0, 0.5, 0.5])
    values, budgets = np.arange(100.0), np.repeat([1.0, 2.0], 50)
    idx = stratified(values, budgets, 10)
    assert len(idx) == 10 and set(budgets[idx]) == {1.0, 2.0}
    assert len(stratified(values, budgets, 200)) == 100


# Past models ------------------------------------------------------------------------------
def bowl_task(name, center, *, n=80, seed=0, budgets=None, space=BOX, extra=None):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 2))
    configs = [{"x0": float(a), "x1": float(b), **(extra or {})} for a, b in x]
    values = ((x - np.asarray(center)) ** 2).sum(axis=1)
    return PastTask(
        name=name, meta_features={}, space=space, configs=configs, values=values, budgets=budgets
    )


def test_a_past_model_prefers_its_own_good_region():
    models = PastModels(
        space=BOX, past_tasks=[bowl_task("a", (0.2, 0.2)), bowl_task("b", (0.8, 0.8))]
    )
    rows = SpaceCodec(BOX).encode([{"x0": 0.2, "x1": 0.2}, {"x0": 0.8, "x1": 0.8}])
    s = models.scores(rows)
    assert s.shape == (2, 2)
    assert s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0]
    # Predicted ranks: near the task's own best, near 0; far away, near 1.
    r = models.predicted_ranks(rows)
    assert r[0, 0] < 0.1 and r[0, 1] > 0.7
    np.testing.assert_allclose(models.scores(rows, tasks=np.array([1]))[1], s[1])


def test_a_low_rung_is_scored_by_the_past_same_rung():
    # At the low budget the task's ranking is the other way round from its top budget.
    top = bowl_task("t", (0.2, 0.2), n=40, seed=1)
    low = bowl_task("t", (0.8, 0.8), n=40, seed=2)
    task = PastTask(
        name="t",
        meta_features={},
        space=BOX,
        configs=top.configs + low.configs,
        values=np.concatenate([top.values, low.values]),
        budgets=np.concatenate([np.full(40, 9.0), np.full(40, 1.0)]),
    )
    models = PastModels(space=BOX, past_tasks=[task])
    assert models.top[0].budget == 9.0 and set(models.models[0]) == {1.0, 9.0}
    rows = SpaceCodec(BOX).encode([{"x0": 0.2, "x1": 0.2}, {"x0": 0.8, "x1": 0.8}])
    at_top, at_low = models.scores(rows), models.scores(rows, budget=1.0)
    assert at_top[0, 0] > at_top[0, 1] and at_low[0, 1] > at_low[0, 0]
    # A budget the past never measured falls back to its top model.
    np.testing.assert_allclose(models.scores(rows, budget=3.0), at_top)


def test_a_past_from_another_space_transfers_what_it_shares():
    wider = SearchSpace(
        {
            **{n: {"type": "float", "low": 0.0, "high": 1.0} for n in ("x0", "x1")},
            "extra": {"type": "categorical", "choices": ["p", "q"]},
        }
    )
    task = bowl_task("wide", (0.2, 0.2), space=wider, extra={"extra": "p"})
    models = PastModels(space=BOX, past_tasks=[task])
    rows = SpaceCodec(BOX).encode([{"x0": 0.2, "x1": 0.2}, {"x0": 0.8, "x1": 0.8}])
    s = models.scores(rows)
    assert s[0, 0] > s[0, 1]
    (t, config, rank) = models.best_configs(1)[0]
    assert t == 0 and set(config) == {"x0", "x1"} and rank == 0.0


def test_a_rank_bank_ranks_exactly_as_each_regression_does():
    tasks = [bowl_task(f"t{k}", (0.2 + 0.3 * k, 0.5), n=30 + 10 * k, seed=k) for k in range(3)]
    models = PastModels(space=BOX, past_tasks=tasks)
    rows = SpaceCodec(BOX).encode([BOX.sample(np.random.default_rng(3)) for _ in range(25)])
    rows[0, 1] = np.nan  # a row lacking a parameter: only the shared one counts
    alone = np.stack([m.ranker.scores(rows) for m in models.top])
    np.testing.assert_allclose(models.rank_scores(rows), alone, rtol=0, atol=1e-12)


def test_draws_from_the_past_good_regions_are_valid_and_where_the_past_was_good():
    tasks = [bowl_task("low", (0.1, 0.1), seed=1), bowl_task("high", (0.9, 0.9), seed=2)]
    models = PastModels(space=BOX, past_tasks=tasks)
    rng = np.random.default_rng(0)
    draws = models.sample_good_many(np.array([200, 0]), rng, bandwidth_factor=1.0)
    assert len(draws) == 200
    for config in draws:
        BOX.validate(config)
    x = np.array([[c["x0"], c["x1"]] for c in draws])
    assert np.median(x, axis=0).max() < 0.35  # near task "low"'s optimum, not "high"'s
    # A conditional space goes task by task and stays valid.
    models = PastModels(space=MIXED, past_tasks=[_mixed_task()])
    for config in models.sample_good_many(np.array([50]), rng, bandwidth_factor=3.0):
        MIXED.validate(config)


def _mixed_task():
    rng = np.random.default_rng(5)
    configs = [MIXED.sample(rng) for _ in range(60)]
    values = [(c["a"] - 0.3) ** 2 + (c["c"] != "x") for c in configs]
    return PastTask(name="m", meta_features={}, space=MIXED, configs=configs, values=values)
