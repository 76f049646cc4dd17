"""NAS-Bench-201 table: cell strings, optimum per dataset, cost proxy, Ray trainable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmtune.trainables.benchmarks.nb201 import (
    DATASETS,
    EDGES,
    OPS,
    NB201Table,
    all_archs,
    arch_to_string,
    evaluation_cost,
    search_space,
    string_to_arch,
)
from warmtune.trainables.benchmarks.trainable import NB201_METRICS, NB201Settings, train_nb201


@pytest.fixture(scope="module")
def table(need_data) -> NB201Table:
    return NB201Table(need_data("nb201") / "nats_bench.csv")


def test_string_round_trip_for_every_cell(table):
    archs = all_archs()
    strings = {arch_to_string(a) for a in archs}
    assert len(archs) == len(strings) == 15625
    assert all(string_to_arch(arch_to_string(a)) == a for a in archs)
    # Every cell string is a row of the table (KeyError otherwise).
    assert len(table.accuracies(archs, "cifar10")) == 15625


def test_string_format_and_edge_order():
    text = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    arch = string_to_arch(text)
    assert (
        list(arch)
        == list(EDGES)
        == ["edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2"]
    )
    assert arch["edge_2_1"] == "skip_connect" and arch["edge_3_0"] == "avg_pool_3x3"
    assert arch_to_string(arch) == text
    with pytest.raises(ValueError, match="nodes"):
        string_to_arch("|none~0|")
    with pytest.raises(ValueError, match="every edge"):
        arch_to_string({**arch, "edge_1_0": "conv_5x5"})


@pytest.mark.parametrize(
    ("dataset", "best"), [("cifar10", 94.373), ("cifar100", 73.513), ("imagenet16-120", 47.311)]
)
def test_optimum_matches_the_readme(table, dataset, best):
    value, arch = table.optimum(dataset)
    assert value == pytest.approx(best, abs=5e-4)
    assert table.accuracy(arch, dataset) == value


def test_every_op_appears_and_space_matches(table):
    space = search_space()
    assert list(space) == list(EDGES)
    assert all(list(p.choices) == list(OPS) for p in space.values())
    for edge in EDGES:
        assert {a[edge] for a in all_archs()} == set(OPS)
    with pytest.raises(ValueError, match="use one of"):
        table.accuracy(all_archs()[0], "mnist")  # type: ignore[arg-type]


def test_cost_proxy():
    cheapest = {e: "none" for e in EDGES}
    dearest = {e: "nor_conv_3x3" for e in EDGES}
    assert evaluation_cost(cheapest) == 1.0
    assert evaluation_cost(dearest) == 1.0 + 9 * 6
    assert evaluation_cost({**cheapest, "edge_1_0": "nor_conv_1x1"}) == 2.0


def test_train_nb201_under_tune(ray_session, need_data, table, tmp_path):
    from ray import tune

    settings = NB201Settings(path="nb201", dataset="cifar100")
    assert settings.path == str(need_data("nb201"))
    arch = table.optimum("cifar100")[1]
    tuner = tune.Tuner(
        tune.with_parameters(train_nb201, max_iterations=5, seed=0, **settings.model_dump()),
        param_space=arch,
        tune_config=tune.TuneConfig(num_samples=1, metric="accuracy", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="nb201"),
    )
    results = tuner.fit()
    assert not results.errors
    result = results[0]
    assert result.metrics["training_iteration"] == 1
    assert set(NB201_METRICS) <= set(result.metrics)
    assert result.metrics["accuracy"] == pytest.approx(73.513, abs=5e-4)
    with result.checkpoint.as_directory() as d:
        assert json.loads((Path(d) / "state.json").read_text()) == {"iteration": 1}


def test_settings_validate_the_dataset():
    import pydantic

    with pytest.raises(pydantic.ValidationError):
        NB201Settings(path="x", dataset="cifar-10")  # type: ignore[arg-type]
    assert set(DATASETS) == {"cifar10", "cifar100", "imagenet16-120"}
