"""The README's first command, as a user runs it: `warmtune demo` on its own embedded Ray."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from warmtune.jobdir import JobDir
from warmtune.store import ResultStore


@pytest.mark.slow
def test_demo_runs_a_real_search_and_says_where_results_are(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "warmtune",
            "demo",
            "--storage",
            str(tmp_path),
            "--address",
            "local",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "trials:" in out and "best loss" in out
    assert "best configuration" in out and f"results written to {tmp_path}/quickstart" in out
    df = ResultStore(JobDir(str(tmp_path / "quickstart")).results).read()
    assert df["trial_id"].nunique() == 16
    # A real learning problem: the best trial adapts far better than the worst.
    last = df.sort_values("training_iteration").groupby("trial_id").tail(1)
    assert last["loss"].min() < 0.5 * last["loss"].median()
    assert yaml.safe_load(Path(JobDir(str(tmp_path / "quickstart")).spec_path).read_text())
