"""The README's quickstart, run as written: `warmtune demo`, then results, export and a rerun
of the best configuration, each on its own embedded Ray."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from warmtune.jobdir import JobDir
from warmtune.store import ResultStore

REPO = Path(__file__).resolve().parents[1]


def quickstart_commands() -> str:
    """The shell lines of the README's ``<!-- quickstart -->`` block."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- quickstart -->\n```bash\n(.*?)\n```", text, re.S)
    assert match, "README.md has no <!-- quickstart --> bash block"
    return match.group(1)


def test_the_quickstart_block_is_what_the_test_runs():
    lines = [line.split("#")[0].strip() for line in quickstart_commands().splitlines()]
    assert lines[:2] == ["source .venv/bin/activate", "warmtune demo"]
    assert "warmtune export quickstart -o best.yaml" in lines


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_written(tmp_path):
    venv = Path(sys.prefix)
    if not (venv / "bin" / "activate").is_file():
        pytest.skip(f"{sys.executable} is not in a virtualenv; the quickstart sources one")
    # A working directory like the checkout's: .venv and examples/ beside the commands,
    # so that best.yaml lands here and not in the repository.
    (tmp_path / ".venv").symlink_to(venv)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    storage = tmp_path / "results"
    env = {
        **os.environ,
        "WARMTUNE_STORAGE": str(storage),
        "WARMTUNE_KB": str(tmp_path / "kb"),
        "RAY_ADDRESS": "local",  # an embedded Ray, even if a cluster runs on this machine
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", quickstart_commands()],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
        env=env,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    # warmtune demo
    assert "trials:" in out and "best loss" in out
    assert "best configuration" in out and f"results written to {storage}/quickstart" in out
    df = ResultStore(JobDir(str(storage / "quickstart")).results).read()
    assert df["trial_id"].nunique() == 16
    # A real learning problem: the best trial adapts far better than the worst.
    last = df.sort_values("training_iteration").groupby("trial_id").tail(1)
    assert last["loss"].min() < 0.5 * last["loss"].median()
    assert yaml.safe_load(Path(JobDir(str(storage / "quickstart")).spec_path).read_text())
    # warmtune export, then the rerun of exactly that configuration at full budget
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["job"] == "quickstart" and best["objective"]["metric"] == "loss"
    reruns = [p for p in storage.iterdir() if p.name.startswith("quickstart-config-")]
    assert len(reruns) == 1, sorted(p.name for p in storage.iterdir())
    rerun = ResultStore(JobDir(str(reruns[0])).results).read()
    assert rerun["trial_id"].nunique() == 1
    assert rerun["training_iteration"].max() == best["budget"]["max_iterations"]
