"""warmtune.bench.tools.overhead: the report's structure on a tiny search (no timing thresholds)."""

from __future__ import annotations

import csv

import pytest

from warmtune.bench.tools.overhead import OverheadReport, Run, main, measure
from warmtune.store import ResultStore

TINY = {"meta_iters_per_report": 1, "eval_tasks": 2}


def test_measure_tiny_search(ray_session, tmp_path):
    report = measure(
        trials=2,
        iterations=1,
        workers=1,
        scaling=(),  # the same warmtune runs; test_bad_counts_and_skipped_series has its lines
        params=TINY,
        warmup=False,
        storage=tmp_path,
    )
    assert [(r.series, r.engine, r.workers) for r in report.runs] == [
        ("overhead", "ray-tune", 1),
        ("overhead", "warmtune", 1),
    ]
    for run in report.runs:
        assert (run.trials, run.iterations, run.ray_cpus) == (2, 1, 2.0)
        assert run.driver_cpu_s > 0 and run.wall_s > 0
        assert run.per_trial_s == pytest.approx(run.wall_s / 2)
    assert ray_session.is_initialized()  # the caller's Ray stays up

    bare, warm = report.runs[0].wall_s, report.runs[1].wall_s
    assert report.overhead_per_trial_s == pytest.approx((warm - bare) / 2)
    assert report.ratio == pytest.approx(warm / bare)
    # Both engines really ran their trials, into the storage asked for.
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["warmtune-2"]
    assert [p.name for p in (tmp_path / "bare").iterdir()] == ["ray-tune-1"]
    results = ResultStore(tmp_path / "results" / "warmtune-2" / "warmtune" / "results").read()
    assert results.trial_id.nunique() == 2

    table = report.markdown().splitlines()
    assert table[0].startswith("| series | engine | workers |")
    assert len([line for line in table if line.startswith("| overhead")]) == 2
    assert any(line.startswith("warmtune overhead: ") for line in table)
    assert any(line.startswith("driver CPU per trial: warmtune ") for line in table)
    assert not any("worker(s): " in line for line in table)  # no scaling series

    out = tmp_path / "runs.csv"
    report.write_csv(out)
    rows = list(csv.DictReader(out.open()))
    assert [row["engine"] for row in rows] == ["ray-tune", "warmtune"]
    assert float(rows[1]["per_trial_s"]) == pytest.approx(report.runs[1].per_trial_s)


def test_needs_enough_cpus_on_the_callers_ray(ray_session):
    with pytest.raises(ValueError, match="has 2 CPUs and the series needs 4"):
        measure(trials=1, iterations=1, workers=0, scaling=(4,), params=TINY, warmup=False)


def test_bad_counts_and_skipped_series():
    with pytest.raises(ValueError, match="trials must be at least 1"):
        measure(trials=0)
    for argv in (["--scaling", "1,x"], ["--scaling", "0,2"], ["--trials", "0"]):
        with pytest.raises(SystemExit):
            main(argv)
    report = OverheadReport(
        runs=[
            Run("scaling", "warmtune", 1, 1.0, 2, 1, 3.0, 0.1, False, 0.5),
            Run("scaling", "warmtune", 2, 2.0, 2, 1, 2.0, 0.1, False, 0.5),
            Run("scaling", "warmtune", 1, 1.0, 2, 1, 4.0, 0.1, False, 0.5),
            Run("scaling", "warmtune", 4, 4.0, 2, 1, 2.5, 0.1, True, 0.5),
        ],
        cores=2,
        load_before=0.5,
        load_after=0.5,
    )
    lines = report.markdown().splitlines()
    assert lines[-4:] == [
        "1 worker(s): 3.00 s (fastest run), speed-up 1.00x over 1 worker",
        "2 worker(s): 2.00 s (fastest run), speed-up 1.50x over 1 worker",
        "4 worker(s): 2.50 s (fastest run), speed-up 1.20x over 1 worker "
        "(4 workers on 2 cores: oversubscribed)",
        "load average (1 min) before 0.50, after 0.50, on 2 cores",
    ]
    with pytest.raises(ValueError, match="no overhead series"):
        report.ratio  # noqa: B018
