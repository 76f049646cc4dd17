"""`warmtune bench nqm`: a benchmark with weights, where PBT runs beside every method."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from warmtune.bench import load_benchmark, run_bench
from warmtune.bench.methods import expand_methods, make_method
from warmtune.cli.bench import bench


def test_the_keywords_include_pbt_only_where_trials_have_weights():
    assert "pbt" in expand_methods("default", weights=True)
    assert "pbt" not in expand_methods("default")
    assert "pbt" not in expand_methods("all")
    assert expand_methods("random,pbt") == ["random", "pbt"]


def test_nqm_is_a_benchmark_with_weights_and_meta_features():
    nqm = load_benchmark("nqm")
    assert nqm.weights and len(nqm.tasks) == 12 and nqm.default_tasks == nqm.tasks
    assert nqm.meta_features("nqm-d100-p2-n0.1") == {"dims": 100, "exponent": 2.0, "noise": 0.1}
    values = nqm.full_values("nqm-d100-p1-n1", [{"lr": 0.05, "batch_size": 4}] * 3000)
    assert values.shape == (3000,) and (values == values[0]).all()
    with pytest.raises(ValueError, match="nqm has one metric"):
        load_benchmark("nqm", metric="accuracy")


def test_pbt_is_refused_where_trials_have_no_weights(tmp_path):
    from warmtune.bench.benchmarks import Benchmark

    nqm = load_benchmark("nqm")
    flat = Benchmark(**{**nqm.__dict__, "weights": False})
    with pytest.raises(ValueError, match="copy trials' weights.*nqm"):
        run_bench(
            flat,
            tasks=flat.tasks[:2],
            methods=["pbt"],
            budget=2,
            workers=1,
            seeds=[0],
            out=tmp_path,
            jobs=1,
        )
    with pytest.raises(ValueError, match="have none; run it on a benchmark with weights"):
        make_method("pbt", bench=flat, seed=0, past_tasks=[])


def test_the_cli_runs_pbt_with_the_other_methods_on_nqm(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        bench,
        [
            "nqm",
            "--tasks",
            "nqm-d100-p1-n1,nqm-d100-p2-n1",
            "--methods",
            "random,bohb-warm,pbt",
            "--seeds",
            "2",
            "--budget",
            "20",
            "--reference-configs",
            "500",
            "--jobs",
            "1",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["method"]) == {"random", "bohb-warm", "pbt"}
    evaluations = pd.read_parquet(out / "evaluations.parquet")
    pbt = evaluations[evaluations["method"] == "pbt"]
    # 16 members, each trained to the full 32 iterations.
    assert pbt.groupby(["task", "seed"])["trial_id"].nunique().eq(16).all()
    assert (pbt.groupby(["task", "seed", "trial_id"])["budget"].max() == 32).all()
