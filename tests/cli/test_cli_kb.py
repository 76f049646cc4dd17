"""``warmtune kb``: list, show, import, rm and similar: their help and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from warmtune.cli.kb import kb
from warmtune.jobdir import JobDir
from warmtune.knowledge import KnowledgeBase
from warmtune.spec import job_from_dict
from warmtune.store import ResultStore


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(kb, list(args), input=input)


def make_job(storage: Path, name: str = "bowl-1", task: str = "bowl", reported: int = 3) -> JobDir:
    """A job directory with ``reported`` trials' results, as if Ray had run it."""
    spec = job_from_dict(
        {
            "name": name,
            "task": {"name": task, "meta_features": {"dim": 2}},
            "trainable": {"name": "quadratic"},
            "space": {
                "x": {"type": "float", "low": 0, "high": 1},
                "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            },
            "objective": {"metric": "loss", "mode": "min"},
            "budget": {"trials": 3, "max_iterations": 2},
            "storage": str(storage),
        }
    )
    jobdir = JobDir.of(spec)
    jobdir.write_spec(spec)
    ResultStore(jobdir.results).append(
        [
            {
                "job": name,
                "trial_id": f"t{t}",
                "training_iteration": i,
                "timestamp": 1.7e9 + t,
                "loss": (0.2 * t - 0.5) ** 2 + 1 / i,
                "config": {"x": 0.2 * t, "opt": "adam"},
            }
            for t in range(reported)
            for i in (1, 2)
        ]
    )
    return jobdir


@pytest.fixture
def filled(tmp_path):
    """A knowledge base holding one imported job (task 'bowl') and one other task."""
    path = tmp_path / "kb"
    make_job(tmp_path / "results")
    kb_ = KnowledgeBase(path)
    kb_.add_job(JobDir.find("bowl-1", storage=str(tmp_path / "results")))
    kb_.add_observations(
        [{"task": "other", "value": 0.9, "metric": "acc", "mode": "max", "config": {"y": 1}}]
    )
    return path


COMMANDS = [[], ["list"], ["show"], ["import"], ["rm"], ["similar"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "kb")
def test_every_command_explains_itself(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and len(result.output.splitlines()) > 5
    if command:
        assert "--kb PATH" in result.output and "WARMTUNE_KB" in result.output


def test_import_then_list(tmp_path):
    make_job(tmp_path / "results")
    kb_path = str(tmp_path / "kb")
    storage = str(tmp_path / "results")

    result = invoke("import", "bowl-1", "--storage", storage, "--kb", kb_path)
    assert result.exit_code == 0, result.output
    assert "added 6 observation(s) of job 'bowl-1' (task 'bowl')" in result.output
    # Again: nothing new, and says so.
    result = invoke("import", "bowl-1", "--storage", storage, "--kb", kb_path)
    assert result.exit_code == 0 and "already in" in result.output
    # By result directory instead of name.
    root = str(tmp_path / "results" / "bowl-1")
    assert invoke("import", root, "--kb", kb_path).exit_code == 0

    result = invoke("list", "--kb", kb_path)
    assert result.exit_code == 0
    assert "1 task(s)" in result.output
    line = [x for x in result.output.splitlines() if x.lstrip().startswith("bowl")][0]
    assert line.split()[:5] == ["bowl", "6", "1", "loss", "min"] and "dim=2" in line


def test_list_formats(filled, monkeypatch):
    monkeypatch.setenv("WARMTUNE_KB", str(filled))  # no --kb: the environment decides
    records = json.loads(invoke("list", "--format", "json").output)
    assert [r["task"] for r in records] == ["bowl", "other"]
    assert records[0]["meta_features"] == {"dim": 2}
    assert records[0]["n_observations"] == 6 and records[1]["mode"] == "max"
    csv = invoke("list", "--format", "csv").output.splitlines()
    assert csv[0] == "task,meta_features,n_observations,n_jobs,metric,mode,last_time"
    assert csv[1].startswith('bowl,"{""dim"": 2}",6,1,loss,min,')


def test_list_empty_kb(tmp_path):
    result = invoke("list", "--kb", str(tmp_path / "nothing"))
    assert result.exit_code == 0 and "is empty" in result.output
    assert "warmtune kb import" in result.output
    assert json.loads(invoke("list", "--kb", str(tmp_path), "--format", "json").output) == []


def test_show(filled):
    result = invoke("show", "bowl", "--kb", str(filled), "-k", "2")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "meta-features: dim=2" in out
    assert "observations: 6 from 1 job(s), 1 search space(s)" in out
    assert "bowl-1" in out and "best configurations (loss, min)" in out
    best = out.split("best configurations")[1].splitlines()[2:]
    assert len(best) == 2  # -k 2
    assert best[0].split()[1:4] == ["2/2", "bowl-1", "t2"]  # x=0.4 is nearest 0.5
    assert "adam" in best[0]


def test_show_errors(filled):
    result = invoke("show", "nope", "--kb", str(filled))
    assert result.exit_code == 2
    assert "no task 'nope'" in result.output and "known tasks: bowl, other" in result.output
    result = invoke("show", "bowl", "--kb", str(filled), "-k", "0")
    assert result.exit_code == 2 and "-k" in result.output


def test_import_errors(tmp_path):
    result = invoke("import", "ghost", "--storage", str(tmp_path), "--kb", str(tmp_path / "kb"))
    assert result.exit_code == 2
    assert "no warmtune job" in result.output and "--storage" in result.output

    (tmp_path / "a-file").write_text("")
    make_job(tmp_path / "results")
    storage = str(tmp_path / "results")
    result = invoke("import", "bowl-1", "--storage", storage, "--kb", str(tmp_path / "a-file"))
    assert result.exit_code == 2 and "is a file" in result.output

    # A job that has not reported yet: nothing to import (exit 1, not a usage error).
    empty = make_job(tmp_path / "results", name="fresh", reported=0)
    result = invoke("import", empty.root, "--kb", str(tmp_path / "kb"))
    assert result.exit_code == 1 and "no results reporting 'loss' yet" in result.output


def test_rm_asks_and_hides(filled):
    result = invoke("rm", "bowl", "--kb", str(filled), input="n\n")
    assert result.exit_code == 1 and "Remove task 'bowl' (6 observations)" in result.output
    assert KnowledgeBase(filled).tasks()["task"].tolist() == ["bowl", "other"]

    result = invoke("rm", "bowl", "--kb", str(filled), input="y\n")
    assert result.exit_code == 0 and "6 observations hidden" in result.output
    assert KnowledgeBase(filled).tasks()["task"].tolist() == ["other"]

    result = invoke("rm", "other", "--kb", str(filled), "--yes")
    assert result.exit_code == 0
    assert "is empty" in invoke("list", "--kb", str(filled)).output


def test_rm_unknown_task(filled):
    result = invoke("rm", "bowl2", "--kb", str(filled), "--yes")
    assert result.exit_code == 2
    assert "no task 'bowl2'" in result.output and "tasks: bowl, other" in result.output


def test_damaged_file_warns_but_lists(filled):
    (filled / "observations" / "part-9-1-deadbeef.parquet").write_bytes(b"junk")
    result = CliRunner().invoke(kb, ["list", "--kb", str(filled)])
    assert result.exit_code == 0
    assert "warmtune: warning:" in result.output and "deadbeef.parquet" in result.output
    assert "bowl" in result.output and "other" in result.output
