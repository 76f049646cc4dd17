"""``warmtune bench``: outputs, regret sanity, determinism, and nb201 leave-one-out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from warmtune.bench import (
    YahpoBackend,
    ZeroShot,
    budget_grid,
    knowledge_base,
    load_benchmark,
    normalized_regret,
)
from warmtune.cli_bench import bench

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

SUMMARY_COLUMNS = [
    "benchmark",
    "task",
    "method",
    "seed",
    "budget_ffe",
    "best_value",
    "normalized_regret",
    "has_incumbent",
]


def _run(args, out, data_dir, jobs=1):
    # A small reference sample keeps the tests fast; the default is 20,000.
    extra = ["--out", str(out), "--data-dir", str(data_dir), "--jobs", str(jobs)]
    extra += ["--reference-configs", "2000"]
    result = CliRunner().invoke(bench, [*args, *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "summary.csv", dtype={"task": str})


@pytest.fixture(scope="module")
def lcbench_tasks(data_dir, need_data):
    need_data("lcbench")
    return load_benchmark("lcbench", data_dir=data_dir).tasks[:2]


@pytest.fixture(scope="module")
def tiny_lcbench(tmp_path_factory, data_dir, lcbench_tasks):
    args = [
        "lcbench",
        "--tasks",
        ",".join(lcbench_tasks),
        "--methods",
        "random,bohb,bohb-warm,bohb-warm-design,bohb-warm-prior,bohb-warm-uniform,zeroshot",
        "--budget",
        "2",
        "--workers",
        "2",
        "--seeds",
        "1",
    ]
    out = tmp_path_factory.mktemp("bench")
    return args, out, _run(args, out, data_dir)


def test_tiny_lcbench_writes_every_output(tiny_lcbench, lcbench_tasks):
    _, out, summary = tiny_lcbench
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert set(summary["task"]) == set(lcbench_tasks)
    methods = {"random", "bohb", "bohb-warm", "zeroshot"}
    methods |= {"bohb-warm-design", "bohb-warm-prior", "bohb-warm-uniform"}
    assert set(summary["method"]) == methods
    assert sorted(summary["budget_ffe"].unique()) == [1.0, 2.0]
    assert len(summary) == 2 * 7 * 1 * 2
    evaluations = pd.read_parquet(out / "evaluations.parquet")
    for column in ("benchmark", "task", "method", "seed", "budget", "value", "ffe_spent_so_far"):
        assert column in evaluations.columns
    assert evaluations["ffe_spent_so_far"].max() <= 2.0 + 1e-9
    table = (out / "summary.md").read_text()
    assert "| method |" in table and "bohb-warm" in table
    assert (out / "regret.png").read_bytes()[:4] == b"\x89PNG"
    assert list((out / "cache").glob("*.parquet"))  # knowledge base and references cached
    runs = pd.read_csv(out / "runs.csv", dtype={"task": str})
    assert len(runs) == 2 * 7
    assert {"evaluations", "full_fidelity_results", "final_regret", "evals_to_target"} <= set(
        runs.columns
    )
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(comparison["other"]) == methods - {"bohb-warm"}
    assert (comparison["ci_low"] <= comparison["mean_difference"]).all()
    assert "t-intervals" in table and "No harm" in table
    harm = pd.read_csv(out / "no_harm.csv", dtype={"task": str})
    assert set(harm["task"]) == set(lcbench_tasks)


def test_no_incumbent_counts_as_a_median_configuration(tiny_lcbench):
    _, _, summary = tiny_lcbench
    none = summary[~summary["has_incumbent"]]
    assert none["best_value"].isna().all()
    assert (none["normalized_regret"] == 1.0).all()
    # Cold BOHB starts at the lowest rung: no full-fidelity result after 1 FFE.
    first = summary[(summary["method"] == "bohb") & (summary["budget_ffe"] == 1.0)]
    assert not first["has_incumbent"].any()


def test_warm_design_runs_at_full_fidelity(tiny_lcbench):
    _, out, _ = tiny_lcbench
    evaluations = pd.read_parquet(out / "evaluations.parquet")
    for method, design in [
        ("bohb-warm", True),
        ("bohb-warm-design", True),
        ("bohb-warm-uniform", True),
        ("bohb-warm-prior", False),
        ("bohb", False),
    ]:
        runs = evaluations[evaluations["method"] == method]
        first = runs[runs["trial_id"] == runs.sort_values("start_time")["trial_id"].iloc[0]]
        reached = first[first["segment"] == 0]["budget"].max()
        # BOHB's lowest rung is epoch 2 of 52; a design configuration runs on past it.
        assert bool(reached > 2) is design, (method, reached)


def test_regrets_are_finite_and_sensible(tiny_lcbench):
    _, _, summary = tiny_lcbench
    final = summary[summary["budget_ffe"] == 2.0]
    # zeroshot runs full fidelity from the first trial: 2 workers finish by 2 FFE.
    assert np.isfinite(final[final["method"] == "zeroshot"]["normalized_regret"]).all()
    found = final[final["has_incumbent"]]["normalized_regret"]
    assert len(found) >= len(final) // 2
    assert np.isfinite(found).all()
    # Negative only by beating the sampled optimum, which is rare and slight.
    assert (found >= -0.1).all()
    assert found.median() < 1.5


def test_same_arguments_same_summary(tiny_lcbench, tmp_path, data_dir):
    args, _, first = tiny_lcbench
    # In two worker processes: the same numbers, in the same order.
    second = _run(args, tmp_path / "again", data_dir, jobs=2)
    pd.testing.assert_frame_equal(first, second)


def test_nb201_leaves_the_target_dataset_out(tmp_path, data_dir, need_data):
    need_data("nb201")
    summary = _run(
        [
            "nb201:cifar100",
            "--methods",
            "random,zeroshot",
            "--budget",
            "5",
            "--workers",
            "2",
            "--seeds",
            "1",
        ],
        tmp_path,
        data_dir,
    )
    assert set(summary["task"]) == {"cifar100"}
    assert sorted(summary["budget_ffe"].unique()) == [1.0, 2.0, 5.0]
    assert np.isfinite(summary["normalized_regret"]).all()
    assert summary["best_value"].between(0, 100).all()
    nb = load_benchmark("nb201:cifar100", data_dir=data_dir)
    past = knowledge_base(nb, "cifar100", cache_dir=tmp_path / "cache")
    assert [t.name for t in past] == ["cifar10", "imagenet16-120"]
    # Architectures transfer well across these datasets: the portfolio's first pick
    # is far better than a median cell.
    zs = summary[(summary["method"] == "zeroshot") & (summary["budget_ffe"] == 1.0)]
    assert zs["normalized_regret"].iloc[0] < 0.5


def test_zeroshot_orders_by_average_rank(data_dir, need_data, tmp_path):
    need_data("nb201")
    nb = load_benchmark("nb201:cifar10", data_dir=data_dir)
    past = knowledge_base(nb, "cifar10", cache_dir=tmp_path)
    searcher = ZeroShot(space=nb.space, seed=0, past_tasks=past)
    first, second = searcher.ask("t0").config, searcher.ask("t1").config
    ranks = []
    for config in (first, second):
        ranks.append(
            sum(
                (t.values < t.values[t.configs.index(config)]).mean()  # share that beat it
                for t in past
            )
        )
    assert ranks[0] <= ranks[1] + 1e-9


def test_yahpo_backend_costs_are_time_differences(data_dir, need_data):
    need_data("lcbench")
    lc = load_benchmark("lcbench", data_dir=data_dir)
    backend = lc.backend(lc.tasks[0])
    assert isinstance(backend, YahpoBackend) and backend.max_budget == 52
    config = lc.space.sample(np.random.default_rng(0))
    many = backend.evaluate_many(config, [3, 4, 5])
    assert many == [backend.evaluate(config, b) for b in (3, 4, 5)]
    out = lc.backend(lc.tasks[0]).scenario.evaluate(
        [{**config, "epoch": e} for e in (4, 5)], instance=lc.tasks[0]
    )
    assert math.isclose(many[2][1], max(out["time"][1] - out["time"][0], 0.0), rel_tol=1e-9)
    assert math.isclose(many[2][0], -out["val_accuracy"][1], rel_tol=1e-9)


def test_helpers_and_errors(tmp_path, monkeypatch):
    assert budget_grid(20) == [1.0, 2.0, 5.0, 10.0, 20.0]
    assert budget_grid(7) == [1.0, 2.0, 5.0, 7.0]
    assert normalized_regret(10.0, 10.0, 5.0) == 0.0
    assert normalized_regret(5.0, 10.0, 5.0) == 1.0
    assert math.isnan(normalized_regret(math.nan, 10.0, 5.0))
    monkeypatch.delenv("WARMTUNE_DATA", raising=False)
    with pytest.raises(ValueError, match="WARMTUNE_DATA"):
        load_benchmark("lcbench", data_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="nb201:DATASET"):
        load_benchmark("nope")
    result = CliRunner().invoke(bench, ["nope", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown benchmark" in result.output
