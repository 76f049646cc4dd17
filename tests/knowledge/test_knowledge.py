"""KnowledgeBase: round trip, jobs in, removal, damaged files, concurrent writers, speed."""

from __future__ import annotations

import json
import multiprocessing
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest

from warmtune.jobdir import JobDir
from warmtune.knowledge import (
    KB_COLUMNS,
    KnowledgeBase,
    KnowledgeBaseWarning,
    configs,
    default_kb_path,
)
from warmtune.spec import job_from_dict
from warmtune.store import ResultStore

# Spawned children cannot import this module (importlib mode), so they exec this source.
_WRITER = """
from warmtune.knowledge import KnowledgeBase

kb = KnowledgeBase(path)
for batch in range(batches):
    kb.add_observations(
        [{"task": "race", "value": float(i), "metric": "loss", "mode": "min",
          "job": f"w{writer}", "trial_id": f"b{batch}", "budget": float(i),
          "config": {"i": i}}
         for i in range(rows)]
    )
"""


def _obs(task: str, value: float, **extra) -> dict:
    return {"task": task, "value": value, "metric": "loss", "mode": "min", **extra}


def make_job(
    storage: Path, name: str = "bowl-1", *, task: str = "bowl", trials: int = 3, iters: int = 3
) -> JobDir:
    """A finished job directory as the runner leaves it, without running Ray."""
    spec = job_from_dict(
        {
            "name": name,
            "task": {"name": task, "meta_features": {"dim": 2, "kind": "bowl"}},
            "trainable": {"name": "quadratic"},
            "space": {
                "x": {"type": "float", "low": 0, "high": 1},
                "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            },
            "objective": {"metric": "loss", "mode": "min"},
            "budget": {"trials": trials, "max_iterations": iters},
            "storage": str(storage),
        }
    )
    jobdir = JobDir.of(spec)
    jobdir.write_spec(spec)
    store = ResultStore(jobdir.results)
    for t in range(trials):
        config = {"x": 0.1 * (t + 1), "opt": ["sgd", "adam"][t % 2]}
        store.append(
            [
                {
                    "job": name,
                    "trial_id": f"t{t}",
                    "training_iteration": i,
                    "timestamp": 1.7e9 + 10 * t + i,
                    "loss": (config["x"] - 0.5) ** 2 + 1 / i,
                    "config": config,
                }
                for i in range(1, iters + 1)
            ]
        )
    # A result without the objective (a crash report, say) is not an observation.
    store.append([{"job": name, "trial_id": "t9", "training_iteration": 1, "other": 1.0}])
    return jobdir


def test_round_trip_mixed_config_types(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb")
    cfgs = [
        {"cat": 1, "lr": 0.1, "net": {"depth": 2}},
        {"cat": "a", "lr": 0.01, "net": {"depth": 3}},
        {"cat": None, "lr": 1e-3, "net": {"depth": 4}},
        {"cat": True, "lr": 1.0, "net": {"depth": 5}, "tags": ["x", 2]},
    ]
    space = {"lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True}}
    rows = [
        _obs(
            "t",
            0.5 / (i + 1),
            config=cfg,
            meta_features={"n": 5, "name": "omni"},
            space=space,
            job="j",
            trial_id=f"t{i}",
            budget=1,
            max_budget=4,
            time=1.7e9 + i,
            source="bench",
        )
        for i, cfg in enumerate(cfgs)
    ]
    assert kb.add_observations(rows) == 4

    df = kb.observations()
    assert list(df.columns[: len(KB_COLUMNS)]) == list(KB_COLUMNS)
    assert configs(df) == cfgs
    assert [type(c["cat"]) for c in configs(df)] == [int, str, type(None), bool]
    assert df["value"].tolist() == [r["value"] for r in rows]
    assert df["budget"].dtype == "float64" and df["max_budget"].tolist() == [4.0] * 4
    assert df["config/net/depth"].tolist() == [2, 3, 4, 5]
    assert json.loads(df["meta_features_json"][0]) == {"n": 5, "name": "omni"}
    assert json.loads(df["space_json"][0]) == space
    assert df["space_signature"].nunique() == 1 and len(df["space_signature"][0]) == 16
    assert set(df["source"]) == {"bench"}

    tasks = kb.tasks()
    assert tasks.to_dict("records") == [
        {
            "task": "t",
            "meta_features": {"n": 5, "name": "omni"},
            "n_observations": 4,
            "n_jobs": 1,
            "metric": "loss",
            "mode": "min",
            "last_time": 1.7e9 + 3,
        }
    ]
    best = kb.best_configs("t", k=2)
    assert best["config"].tolist() == [cfgs[3], cfgs[2]]
    assert best["value"].tolist() == [0.125, 0.5 / 3]


def test_add_observations_rejects_bad_rows_and_writes_nothing(tmp_path):
    kb = KnowledgeBase(tmp_path)
    with pytest.raises(ValueError, match="lacks metric, mode"):
        kb.add_observations([_obs("t", 1.0), {"task": "t", "value": 1.0}])
    with pytest.raises(ValueError, match="'min' or 'max'"):
        kb.add_observations([_obs("t", 1.0, mode="lowest")])
    with pytest.raises(ValueError, match="value must be a number"):
        kb.add_observations([_obs("t", "good")])
    with pytest.raises(ValueError, match="budget must be a number"):
        kb.add_observations([_obs("t", 1.0, budget="full")])
    assert kb.add_observations([]) == 0
    assert kb.observations().empty and not (tmp_path / "observations").exists()
    with pytest.raises(ValueError, match="non-empty"):
        KnowledgeBase("")


def test_add_job_from_a_job_directory(tmp_path):
    jobdir = make_job(tmp_path / "results")
    kb = KnowledgeBase(tmp_path / "kb")
    assert kb.add_job(jobdir) == 9  # 3 trials x 3 iterations; the row without loss skipped

    df = kb.observations("bowl")
    assert len(df) == 9
    assert set(df["job"]) == {"bowl-1"} and set(df["source"]) == {"job"}
    assert json.loads(df["meta_features_json"][0]) == {"dim": 2, "kind": "bowl"}
    assert df["budget"].tolist() == [1.0, 2.0, 3.0] * 3
    assert set(df["max_budget"]) == {3.0}
    assert configs(df)[0] == {"x": 0.1, "opt": "sgd"}
    assert df["config/opt"].tolist()[:4] == ["sgd"] * 3 + ["adam"]
    space = jobdir.read_spec().search_space
    assert set(df["space_signature"]) == {space.signature()}
    assert json.loads(df["space_json"][0]) == space.to_dict()
    assert df["time"].min() == 1.7e9 + 1

    best = kb.best_configs("bowl", k=5)
    # t2 (x=0.3) is closest to 0.5, then t1 (x=0.2), t0 (x=0.1); each at its last budget.
    assert best["trial_id"].tolist() == ["t2", "t1", "t0"]
    assert best["budget"].tolist() == [3.0] * 3
    assert best["config"][0] == {"x": pytest.approx(0.3), "opt": "sgd"}

    # By name under a storage, with extra meta-features computed by a trainable.
    other = make_job(tmp_path / "results", "bowl-2", trials=1)
    n = kb.add_job("bowl-2", storage=str(tmp_path / "results"), meta_features={"noise": 0.1})
    assert n == 3 and other.name == "bowl-2"
    tasks = kb.tasks()
    assert tasks["n_jobs"].tolist() == [2] and tasks["n_observations"].tolist() == [12]
    assert tasks["meta_features"][0] == {"dim": 2, "kind": "bowl", "noise": 0.1}
    jobs = kb.jobs("bowl")
    assert jobs["job"].tolist() == ["bowl-1", "bowl-2"]
    assert jobs["n_trials"].tolist() == [3, 1]


def test_add_job_is_idempotent(tmp_path):
    jobdir = make_job(tmp_path / "results")
    kb = KnowledgeBase(tmp_path / "kb")
    assert kb.add_job(jobdir) == 9
    files = sorted((tmp_path / "kb" / "observations").iterdir())
    assert kb.add_job(jobdir) == 0  # nothing new: no file written
    assert sorted((tmp_path / "kb" / "observations").iterdir()) == files
    assert len(kb.observations()) == 9

    # The job went on (a resumed trial re-reported an iteration with a new value).
    ResultStore(jobdir.results).append(
        [
            {"job": "bowl-1", "trial_id": "t0", "training_iteration": 4, "loss": 0.01},
            {"job": "bowl-1", "trial_id": "t1", "training_iteration": 3, "loss": 0.02},
        ]
    )
    assert kb.add_job(jobdir) == 2
    df = kb.observations()
    assert len(df) == 10
    t1 = df[(df.trial_id == "t1") & (df.budget == 3.0)]
    assert t1["value"].tolist() == [0.02]  # the last written row wins

    # Rows written twice anyway (two processes adding the same job) count once.
    again = kb.observations().drop(columns=["added_ns"])
    kb.add_observations(again)
    assert len(kb.observations()) == 10


def test_remove_task_hides_it_and_later_rows_show(tmp_path):
    kb = KnowledgeBase(tmp_path)
    kb.add_observations([_obs("a", 1.0, job="j1", trial_id="t", budget=1), _obs("b", 2.0)])
    assert kb.remove_task("a") == 1
    assert kb.tasks()["task"].tolist() == ["b"]
    assert kb.observations("a").empty
    with pytest.raises(ValueError, match="no task 'a'.*known tasks: b"):
        kb.remove_task("a")
    with pytest.raises(ValueError, match="no task 'a'"):
        kb.best_configs("a")

    # Re-adding after the removal: only the new observations show, even with the same key.
    kb.add_observations([_obs("a", 5.0, job="j1", trial_id="t", budget=1)])
    kb.add_observations([_obs("a", 6.0, job="j2", trial_id="u", budget=1)])
    df = kb.observations("a")
    assert df["value"].tolist() == [5.0, 6.0]
    assert kb.tasks().set_index("task")["n_observations"].to_dict() == {"a": 2, "b": 1}
    # Nothing was deleted: the tombstone is a file of its own.
    assert len(list((tmp_path / "removed").iterdir())) == 1
    assert len(list((tmp_path / "observations").iterdir())) == 3

    # A removed job can be imported again.
    jobdir = make_job(tmp_path / "results", task="a", trials=1)
    assert kb.add_job(jobdir) == 3
    kb.remove_task("a")
    assert kb.add_job(jobdir) == 3
    assert len(kb.observations("a")) == 3


def test_corrupt_or_foreign_file_warns_and_rest_reads(tmp_path):
    kb = KnowledgeBase(tmp_path)
    kb.add_observations([_obs("a", 1.0), _obs("a", 2.0)])
    obs = tmp_path / "observations"
    (obs / "part-99999999999999999999-1-cafecafe.parquet").write_bytes(b"PAR1 not really")
    pd.DataFrame({"q": [1, 2]}).to_parquet(obs / "part-99999999999999999999-1-f0f0f0f0.parquet")

    with pytest.warns(KnowledgeBaseWarning) as record:
        df = kb.observations()
    messages = [str(w.message) for w in record]
    assert any("cafecafe.parquet" in m and str(tmp_path) in m for m in messages)
    assert any("f0f0f0f0.parquet" in m and "not a knowledge-base file" in m for m in messages)
    assert df["value"].tolist() == [1.0, 2.0]
    with pytest.warns(KnowledgeBaseWarning):
        assert kb.tasks()["n_observations"].tolist() == [2]

    with pytest.raises(ValueError, match="cafecafe.parquet"):
        kb.observations(strict=True)
    (obs / "part-99999999999999999999-1-cafecafe.parquet").unlink()
    with pytest.raises(ValueError, match="f0f0f0f0.parquet"):
        kb.tasks(strict=True)


def test_several_metrics_need_a_choice(tmp_path):
    kb = KnowledgeBase(tmp_path)
    kb.add_observations(
        [
            _obs("a", 1.0, config={"x": 1}),
            _obs("a", 0.9, config={"x": 2}, metric="acc", mode="max"),
            _obs("a", 0.8, config={"x": 3}, metric="acc", mode="max"),
        ]
    )
    with pytest.raises(ValueError, match="several metrics.*pass metric="):
        kb.best_configs("a")
    assert kb.best_configs("a", metric="acc")["config"].tolist() == [{"x": 2}, {"x": 3}]
    assert len(kb.observations(metric="acc")) == 2
    with pytest.raises(ValueError, match="no observations of metric 'f1'"):
        kb.best_configs("a", metric="f1")
    with pytest.raises(ValueError, match="positive integer"):
        kb.best_configs("a", k=0)


def test_two_processes_add_at_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=exec,
            args=(_WRITER, {"path": str(tmp_path), "writer": w, "batches": 20, "rows": 5}),
        )
        for w in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0

    kb = KnowledgeBase(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = kb.observations("race")
    assert len(df) == 200
    assert df.groupby("job").size().to_dict() == {"w0": 100, "w1": 100}
    assert kb.tasks()["n_jobs"].tolist() == [2]


def test_file_uri(tmp_path):
    uri = (tmp_path / "kb").as_uri()
    assert uri.startswith("file://")
    kb = KnowledgeBase(uri)
    assert kb.add_job(make_job(tmp_path / "results")) == 9
    kb.add_observations([_obs("other", 1.0, config={"k": "v"})])
    plain = KnowledgeBase(tmp_path / "kb")
    pd.testing.assert_frame_equal(kb.observations(), plain.observations())
    assert kb.remove_task("other") == 1
    assert plain.tasks()["task"].tolist() == ["bowl"]


def test_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("WARMTUNE_KB", str(tmp_path / "env-kb"))
    assert default_kb_path() == str(tmp_path / "env-kb")
    assert KnowledgeBase().path == str(tmp_path / "env-kb")
    monkeypatch.delenv("WARMTUNE_KB")
    assert default_kb_path() == os.path.expanduser("~/warmtune_kb")


def test_reads_are_right_at_50k_observations(tmp_path):
    kb = KnowledgeBase(tmp_path)
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}
    for batch in range(10):
        kb.add_observations(
            [
                _obs(
                    f"task{i % 20}",
                    1.0 / (i + 1),
                    config={"lr": 1e-3 * (i % 97 + 1), "opt": ["sgd", "adam"][i % 2]},
                    meta_features={"n": i % 20},
                    space=space,
                    job=f"job{batch}",
                    trial_id=f"t{i // 4}",
                    budget=float(i % 4 + 1),
                    max_budget=4.0,
                )
                for i in range(5000)
            ]
        )
    # Correct at scale; how fast is measured by `warmtune bench latency`.
    df = kb.observations()
    tasks = kb.tasks()
    best = kb.best_configs("task3", k=10)
    assert len(df) == 50_000 and len(tasks) == 20 and len(best) == 10
