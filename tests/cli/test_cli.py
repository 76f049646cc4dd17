"""The command line: help everywhere, run/resume, results, export and feeding it back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from warmtune.cli import main
from warmtune.jobdir import JobDir
from warmtune.store import ResultStore, configs

JOB_YAML = """
name: {name}
task: {{name: bowl, meta_features: {{dim: 2}}}}
trainable: {{name: quadratic, params: {{sleep_s: {sleep}}}}}
space:
  x: {{type: float, low: 0, high: 1}}
  y: {{type: float, low: 0.01, high: 1, log: true}}
objective: {{metric: loss, mode: min}}
budget: {{trials: {trials}, max_iterations: {iters}}}
max_concurrency: 2
storage: {storage}
seed: 5
"""


def write_job(tmp_path: Path, name="bowl", sleep=0.0, trials=4, iters=3) -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(
        JOB_YAML.format(
            name=name, sleep=sleep, trials=trials, iters=iters, storage=tmp_path / "results"
        )
    )
    return f


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


COMMANDS = [[], ["run"], ["demo"], ["results"], ["export"], ["validate"], ["trainables"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_every_command_explains_itself(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output and len(result.output.splitlines()) > 5


def test_validate_reports_problems_with_exit_2(tmp_path):
    good = write_job(tmp_path)
    assert invoke("validate", str(good)).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("mode: min", "mode: smallest"))
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "objective.mode" in result.output


def test_demo_show_prints_the_quickstart():
    result = invoke("demo", "--show")
    assert "maml-sinusoid" in result.output
    assert yaml.safe_load(result.output)["objective"]["metric"] == "loss"


@pytest.fixture(scope="module")
def finished_job(ray_session, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cli")
    job_file = write_job(tmp_path)
    result = invoke("run", str(job_file))
    assert result.exit_code == 0, result.output
    assert "best configuration" in result.output
    # The summary ranks trials by their last report, as results and export do, and says so.
    assert re.search(r"best \S+ = \S+ \(trial \w+'s last report, iteration \d+\)", result.output)
    return job_file, tmp_path / "results"


def test_results_in_every_format(finished_job):
    _, storage = finished_job
    table = invoke("results", "bowl", "--storage", str(storage))
    assert table.exit_code == 0 and "trial_id" in table.output
    as_json = json.loads(invoke("results", str(storage / "bowl"), "--format", "json").output)
    assert len(as_json) == 4
    losses = [r["loss"] for r in as_json]
    assert losses == sorted(losses)  # best first
    csv = invoke("results", "bowl", "--storage", str(storage), "--format", "csv", "-k", "2")
    assert len(csv.output.strip().splitlines()) == 3
    rows = invoke("results", "bowl", "--storage", str(storage), "--all-rows", "--format", "json")
    assert len(json.loads(rows.output)) == 4 * 3


def test_results_of_an_unknown_job_says_where_it_looked(tmp_path):
    result = CliRunner().invoke(main, ["results", "ghost", "--storage", str(tmp_path)])
    assert result.exit_code == 2 and "no warmtune job" in result.output


def test_export_round_trips_and_feeds_back(finished_job, tmp_path):
    job_file, storage = finished_job
    out = tmp_path / "best.yaml"
    assert invoke("export", "bowl", "--storage", str(storage), "-o", str(out)).exit_code == 0
    doc = yaml.safe_load(out.read_text())
    df = ResultStore(JobDir(str(storage / "bowl")).results).read()
    assert doc["objective"] == {"metric": "loss", "mode": "min", "value": df["loss"].min()}
    assert doc["job"] == "bowl" and doc["task"] == "bowl"
    assert doc["budget"] == {"training_iteration": 3, "max_iterations": 3}
    assert set(doc["versions"]) >= {"warmtune", "ray", "torch"}
    best_row = df.loc[df["loss"].idxmin()]
    assert doc["trial_id"] == best_row["trial_id"]
    assert doc["config"] == configs(best_row.to_frame().T)[0]

    as_json = json.loads(invoke("export", str(storage / "bowl"), "--format", "json").output)
    assert as_json["config"] == doc["config"]

    rerun = invoke("run", str(job_file), "--config", str(out), "--quiet")
    assert rerun.exit_code == 0, rerun.output
    reruns = [p for p in storage.iterdir() if p.name.startswith("bowl-config-")]
    assert len(reruns) == 1
    df2 = ResultStore(JobDir(str(reruns[0])).results).read()
    assert configs(df2)[0] == doc["config"] and df2["training_iteration"].max() == 3
    assert df2["loss"].iloc[-1] == pytest.approx(doc["objective"]["value"])


def test_run_refuses_to_overwrite_and_bad_config_files(finished_job, tmp_path):
    job_file, _ = finished_job
    again = CliRunner().invoke(main, ["run", str(job_file)])
    assert again.exit_code == 3 and "--resume" in again.output
    junk = tmp_path / "junk.yaml"
    junk.write_text("hello: world\n")
    bad = CliRunner().invoke(main, ["run", str(job_file), "--config", str(junk)])
    assert bad.exit_code == 2 and "not a warmtune export" in bad.output


def _warmtune(*args: str, address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "warmtune", *args, "--address", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parent,  # not the repository root: see DESIGN.md
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_interrupt_then_resume_continues_without_rerunning(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    job_file = write_job(tmp_path, name="slow", sleep=0.4, trials=6, iters=5)
    store = ResultStore(tmp_path / "results" / "slow" / "warmtune" / "results")

    proc = _warmtune("run", str(job_file), address=address)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        df = store.read()
        if len(df) and (df.groupby("trial_id").training_iteration.max() == 5).sum() >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 130, out
    assert "was interrupted" in out and "--resume" in out

    before = store.read()
    done_before = set(
        before.groupby("trial_id").training_iteration.max().loc[lambda s: s == 5].index
    )
    assert 2 <= len(done_before) < 6

    proc = _warmtune("run", str(job_file), "--resume", address=address)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out

    after = store.read(dedupe=False)
    reached = after.groupby("trial_id").training_iteration.max()
    assert len(reached) == 6 and (reached == 5).all()
    # Trials that had finished were not run again: no new rows for them.
    for trial in done_before:
        assert len(after[after.trial_id == trial]) == len(before[before.trial_id == trial])

    # The searcher resumed from its state: the six configurations are those an
    # uninterrupted run with the same seed proposes.
    fresh = write_job(tmp_path, name="fresh", sleep=0.0, trials=6, iters=1)
    assert invoke("run", str(fresh), "--quiet").exit_code == 0
    fresh_df = ResultStore(tmp_path / "results" / "fresh" / "warmtune" / "results").read()
    key = lambda df: sorted(map(str, configs(df.drop_duplicates("trial_id"))))  # noqa: E731
    assert key(after) == key(fresh_df)


def test_demo_picks_a_fresh_name_and_resumes_the_latest(tmp_path, monkeypatch):
    import warmtune.cli.commands as cli
    from warmtune.spec import load_job

    seen = []
    monkeypatch.setattr(cli, "_run", lambda spec, **kw: seen.append((spec.name, kw["resume"])))
    quickstart = load_job(cli.example_path("quickstart.yaml"), overrides={"storage": str(tmp_path)})
    for name in ("quickstart", "quickstart-2"):
        JobDir.of(quickstart, name=name).write_spec(quickstart)
    invoke("demo", "--storage", str(tmp_path))
    invoke("demo", "--storage", str(tmp_path), "--resume")
    assert seen == [("quickstart-3", False), ("quickstart-2", True)]


def test_a_job_without_results_says_so_with_one_exit_status(ray_session, tmp_path):
    """Every trial fails before its first report: the summary points at no results, and
    results and export exit with the same "no results yet" status (1, not 2)."""
    job_file = tmp_path / "broken.yaml"
    job_file.write_text(
        JOB_YAML.format(
            name="broken", sleep=0.0, trials=2, iters=2, storage=tmp_path / "r"
        ).replace("params: {sleep_s: 0.0}", "params: {sleep_s: 0.0, fail_at: 1}")
        + "max_retries: 0\n"
    )
    run = invoke("run", str(job_file), "--quiet")
    assert run.exit_code == 1, run.output
    assert "no trial reported anything; no results in" in run.output
    assert "results written" not in run.output and "warmtune export" not in run.output
    results = CliRunner().invoke(main, ["results", "broken", "--storage", str(tmp_path / "r")])
    export = CliRunner().invoke(main, ["export", "broken", "--storage", str(tmp_path / "r")])
    assert (results.exit_code, export.exit_code) == (1, 1), (results.output, export.output)
    assert (
        "has no results yet" in results.output and "has no result with 'loss' yet" in export.output
    )
