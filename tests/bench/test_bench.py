"""``warmtune bench``: outputs, regret sanity, determinism, and nb201 leave-one-out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from warmtune.bench import (
    ALL_METHODS,
    YahpoBackend,
    YahpoFloatBackend,
    ZeroShot,
    budget_grid,
    knowledge_base,
    load_benchmark,
    make_method,
    normalized_regret,
)
from warmtune.bench.reference import REFERENCE_SEED, sample_configs
from warmtune.bench.wallclock import TIME_COLUMNS, time_rows, time_unit
from warmtune.cli.bench import bench
from warmtune.trainables.benchmarks.nb201 import all_archs, evaluation_cost

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

COMPARISON_COLUMNS = [
    "method",
    "other",
    "budget_ffe",
    "tasks",
    "mean_difference",
    "ci_low",
    "ci_high",
    "wilcoxon_p",
    "wins",
    "ties",
    "losses",
    "note",
    "pooled_mean_difference",
    "pooled_ci_low",
    "pooled_ci_high",
    "pooled_pairs",
]

NO_HARM_COLUMNS = [
    "method",
    "baseline",
    "benchmark",
    "task",
    "budget_ffe",
    "method_mean",
    "method_std",
    "method_seeds",
    "baseline_mean",
    "baseline_std",
    "baseline_seeds",
    "mannwhitney_p",
    "holm_p",
    "harmed",
    "note",
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
        "random,bohb,bohb-warm,bohb-warm-nodesign,bohb-warm-nomodel,bohb-warm-uniform,zeroshot",
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
    methods |= {"bohb-warm-nodesign", "bohb-warm-nomodel", "bohb-warm-uniform"}
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
    assert list(comparison.columns) == COMPARISON_COLUMNS
    # Every pair once, bohb-warm first in its pairs; two budgets each.
    assert len(comparison) == 7 * 6 // 2 * 2
    warm = comparison[comparison["method"] == "bohb-warm"]
    assert set(warm["other"]) == methods - {"bohb-warm"}
    assert list(comparison["method"].iloc[: len(warm)]) == ["bohb-warm"] * len(warm)
    # Two tasks: no task-level interval or Wilcoxon p, and the note says why; the
    # pooled (task, seed) numbers are there, labelled pooled.
    assert (comparison["tasks"] == 2).all()
    assert comparison[["ci_low", "ci_high", "wilcoxon_p"]].isna().all().all()
    assert comparison["note"].str.contains("fewer than 6").all()
    assert (comparison[["wins", "ties", "losses"]].sum(axis=1) == 2).all()
    assert (comparison["pooled_pairs"] == 2).all()
    assert (comparison["pooled_ci_low"] <= comparison["pooled_mean_difference"] + 1e-12).all()
    assert "Wilcoxon p" in table and "(task, seed) pairs are not independent" in table
    assert "No harm" in table and "Holm" in table
    harm = pd.read_csv(out / "no_harm.csv", dtype={"task": str})
    assert list(harm.columns) == NO_HARM_COLUMNS
    # Every warm method against cold bohb, on every task at every budget.
    assert set(harm["method"]) == methods - {"random", "bohb"}
    assert (harm["baseline"] == "bohb").all()
    assert len(harm) == 5 * 2 * 2
    assert set(harm["task"]) == set(lcbench_tasks)
    # One seed: the one-sided test is not run, and the table says so.
    assert harm["mannwhitney_p"].isna().all() and harm["harmed"].isna().all()
    assert harm["note"].str.contains("fewer than 5 per method").all()


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
        ("bohb-warm-nomodel", True),
        ("bohb-warm-uniform", True),
        ("bohb-warm-nodesign", False),
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
    # Missing data names the command that fetches it.
    with pytest.raises(ValueError, match="warmtune data fetch lcbench"):
        load_benchmark("lcbench", data_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="nb201"):
        load_benchmark("nb201:cifar10", data_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="nb201:DATASET"):
        load_benchmark("nope")
    result = CliRunner().invoke(bench, ["nope", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown benchmark" in result.output


# Float fidelities: iaml_glmnet's trainsize ----------------------------------------------
IAML_RUNGS = [1 / 27, 1 / 9, 1 / 3, 1.0]  # eta = 3 on trainsize 0.03..1.0


@pytest.fixture(scope="module")
def iaml(data_dir, need_data):
    need_data("iaml_glmnet")
    return load_benchmark(
        f"yahpo:{data_dir / 'yahpo' / 'iaml_glmnet'}", fidelity="trainsize", metric="mmce"
    )


def test_a_float_fidelity_is_a_retrain_backend(iaml):
    assert (iaml.min_budget, iaml.max_budget, iaml.mode) == (0.03, 1.0, "min")
    backend = iaml.backend("1489")
    assert isinstance(backend, YahpoFloatBackend) and backend.fidelity_kind == "retrain"
    config = {"alpha": 0.3, "s": 0.01}
    value, cost = backend.evaluate(config, 1 / 3)
    out = backend.scenario.evaluate([{**config, "trainsize": 1 / 3}], instance="1489")
    assert value == out["mmce"][0]
    assert cost == out["timetrain"][0] > 0  # the whole fit at that fidelity


def test_multi_fidelity_methods_rung_on_the_float_range(iaml, tmp_path):
    past = knowledge_base(iaml, "1489", cache_dir=tmp_path)
    for method in ("hyperband", "asha", "bohb", "bohb-warm"):
        searcher = make_method(method, bench=iaml, seed=0, past_tasks=past)
        assert searcher.options()["min_budget"] == 0.03, method
        budgets = sorted({b for bracket in searcher.schedule for _, b in bracket})
        np.testing.assert_allclose(budgets, IAML_RUNGS, rtol=1e-12)


def test_iaml_glmnet_runs_every_method_through_the_cli(tmp_path, data_dir, need_data):
    path = need_data("iaml_glmnet")
    summary = _run(
        [f"yahpo:{path}", "--fidelity", "trainsize", "--metric", "mmce", "--mode", "min"]
        + ["--tasks", "1489", "--budget", "5", "--workers", "2", "--seeds", "1"]
        + ["--methods", "all"],
        tmp_path,
        data_dir,
    )
    # Every method but PBT, which needs trials with weights (see test_nqm_bench.py).
    assert set(summary["method"]) == set(ALL_METHODS) - {"pbt"}
    assert sorted(summary["budget_ffe"].unique()) == [1.0, 2.0, 5.0]
    final = summary[summary["budget_ffe"] == 5.0]
    assert final["has_incumbent"].all()
    assert np.isfinite(final["normalized_regret"]).all()
    evaluations = pd.read_parquet(tmp_path / "evaluations.parquet")
    # A retrain report costs its whole fidelity, and nothing is told past the budget.
    assert evaluations["ffe_spent_so_far"].max() <= 5.0 + 1e-9
    for method, rows in evaluations.groupby("method"):
        spent = np.diff(np.concatenate([[0.0], rows["ffe_spent_so_far"].to_numpy()]))
        np.testing.assert_allclose(spent, rows["budget"].to_numpy(), err_msg=method)
        assert not rows.duplicated(["trial_id", "segment"]).any(), method
        budgets = rows["budget"].to_numpy()
        assert np.isclose(budgets[:, None], IAML_RUNGS).any(axis=1).all(), method
        if method in ("hyperband", "asha", "bohb"):
            assert budgets.min() == pytest.approx(1 / 27), method


def test_an_unknown_fidelity_names_the_choices(data_dir, need_data):
    need_data("iaml_glmnet")
    with pytest.raises(ValueError, match=r"fidelities \['trainsize'\]"):
        load_benchmark(f"yahpo:{data_dir / 'yahpo' / 'iaml_glmnet'}", fidelity="epoch")


# Regret against simulated wall-clock time -----------------------------------------------
def test_time_rows_by_hand():
    # Full fidelity is 9; T = 10 s. Rows at a lower budget and failures never count.
    evaluations = pd.DataFrame(
        {
            "budget": [3, 9, 9, 9, 9],
            "value": [-99.0, -90.0, np.nan, -95.0, -92.0],  # minimised (a "max" metric)
            "end_time": [4.0, 12.0, 20.0, 25.0, 31.0],
        }
    )
    rows = time_rows(
        evaluations,
        end_time=31.0,
        unit=10.0,
        grid=[0.5, 1.2, 2.5, 5.0],
        max_budget=9,
        sign=-1.0,
        ref=(100.0, 80.0),
    )
    assert [r["budget_time"] for r in rows] == [0.5, 1.2, 2.5, 5.0, 3.1]
    assert [r["at_end"] for r in rows] == [False] * 4 + [True]
    assert [r["has_incumbent"] for r in rows] == [False, True, True, True, True]
    assert rows[0]["normalized_regret"] == 1.0 and math.isnan(rows[0]["best_value"])
    # 90 by 12 s; 95 by 25 s; after the run ended (31 s) it keeps 95.
    assert [r["best_value"] for r in rows[1:]] == [90.0, 95.0, 95.0, 95.0]
    assert [r["normalized_regret"] for r in rows[1:]] == [0.5, 0.25, 0.25, 0.25]


def test_time_unit_is_the_median_full_evaluation_time(data_dir, need_data, tmp_path):
    need_data("nb201")
    need_data("lcbench")
    nb = load_benchmark("nb201:cifar10", data_dir=data_dir)
    costs = [evaluation_cost(c) for c in all_archs()]
    assert time_unit(nb, "cifar10", n=10, cache_dir=None) == np.median(costs)
    lc = load_benchmark("lcbench", data_dir=data_dir)
    task = lc.tasks[0]
    unit = time_unit(lc, task, n=50, cache_dir=tmp_path)
    configs = sample_configs(lc.space, 50, REFERENCE_SEED)  # the reference's own sample
    top = lc.backend(task).scenario.evaluate([{**c, "epoch": 52} for c in configs], instance=task)[
        "time"
    ]
    assert unit == pytest.approx(float(np.median(top)), rel=1e-12)
    assert list(tmp_path.glob(f"lcbench-{task}-fullcost-n50-s{REFERENCE_SEED}.parquet"))
    assert time_unit(lc, task, n=50, cache_dir=tmp_path) == unit  # from the cache


def test_tiny_lcbench_writes_regret_against_time(tiny_lcbench, data_dir, lcbench_tasks):
    _, out, summary = tiny_lcbench
    table = pd.read_csv(out / "summary_time.csv", dtype={"task": str})
    assert list(table.columns) == TIME_COLUMNS
    # 2 workers, FFE grid 1, 2: times 0.5 and 1 T, plus a row at each run's end.
    grid = table[~table["at_end"]]
    assert sorted(grid["budget_time"].unique()) == [0.5, 1.0]
    assert len(table) == len(summary) // 2 * 3
    runs = pd.read_csv(out / "runs.csv", dtype={"task": str})
    ends = table[table["at_end"]].merge(runs, on=["task", "method", "seed"])
    lc = load_benchmark("lcbench", data_dir=data_dir)
    for task, rows in ends.groupby("task"):
        unit = time_unit(lc, task, n=2000, cache_dir=out / "cache")
        np.testing.assert_allclose(rows["budget_time"] * unit, rows["end_time"], rtol=1e-9)
    # At its end a run has found what it has at its last FFE.
    final = summary[summary["budget_ffe"] == 2.0].merge(ends, on=["task", "method", "seed"])
    np.testing.assert_allclose(final["normalized_regret_x"], final["normalized_regret_y"])
    assert (grid["normalized_regret"][~grid["has_incumbent"]] == 1.0).all()
    assert "simulated wall-clock time" in (out / "summary.md").read_text()
    assert (out / "regret_time.png").read_bytes()[:4] == b"\x89PNG"


def test_the_target_gap_reaches_worker_processes(data_dir, need_data):
    # Worker processes rebuild the benchmark from its source: --target-gap must be in it,
    # or runs.csv's evals_to_target silently falls back to the default with --jobs > 1.
    need_data("lcbench")
    from warmtune.bench.protocol import _worker_bench

    spec = load_benchmark("lcbench", data_dir=data_dir, target_gap=0.01)
    assert spec.target_gap == 0.01
    assert _worker_bench(dict(spec.source)).target_gap == 0.01
    assert load_benchmark("lcbench", data_dir=data_dir).target_gap == 0.5
