"""Warm starts from the knowledge base: other tasks become a WarmStart, the same task
becomes the search's own history, and the knowledge base carries runtimes and seeds."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from warmtune.jobdir import JobDir
from warmtune.knowledge import KnowledgeBase, past_tasks
from warmtune.searchers import make_searcher
from warmtune.spec import job_from_dict
from warmtune.store import ResultStore
from warmtune.trainables.quadratic import objective
from warmtune.warm import warm_start_for

SPACE = {
    "x": {"type": "float", "low": 0, "high": 1},
    "opt": {"type": "categorical", "choices": ["a", "b"]},
}
JOB = {
    "name": "bowl",
    "task": {"name": "bowl"},
    "trainable": {"name": "quadratic"},
    "space": SPACE,
    "objective": {"metric": "loss", "mode": "min"},
    "budget": {"trials": 10, "max_iterations": 3},
    "seed": 3,
}


def finished_job(tmp_path: Path, name: str, task: str, seed: int, n: int = 12) -> Any:
    """A finished job with ``n`` trials of the quadratic, added to the knowledge base."""
    data = copy.deepcopy(JOB)
    data.update(
        name=name,
        task={"name": task},
        seed=seed,
        storage=str(tmp_path / "results"),
        knowledge_base={"path": str(tmp_path / "kb")},
    )
    spec = job_from_dict(data)
    jobdir = JobDir.of(spec)
    jobdir.write_spec(spec)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        config = spec.search_space.sample(rng)
        for it in range(1, 4):
            rows.append(
                {
                    "job": name,
                    "trial_id": f"{name}-t{i}",
                    "training_iteration": it,
                    "timestamp": 1.7e9 + 10 * i + it,
                    "time_total_s": 0.5 * it,
                    "status": "RUNNING",
                    "loss": objective(config, it),
                    "config": config,
                }
            )
    ResultStore(jobdir.results).append(rows)
    KnowledgeBase(spec.knowledge_base.path).add_job(jobdir)
    return spec


def test_the_knowledge_base_carries_runtimes_and_the_job_seed(tmp_path):
    finished_job(tmp_path, "bowl-1", "bowl", seed=3)
    frame = KnowledgeBase(tmp_path / "kb").observations("bowl")
    assert set(frame["seed"]) == {3.0}
    assert sorted(set(frame["runtime"])) == [0.5, 1.0, 1.5]
    (task,) = past_tasks(frame)
    assert task.name == "bowl" and len(task) == 36
    np.testing.assert_allclose(sorted(set(task.runtimes)), [0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="lacks column"):
        past_tasks(frame.drop(columns=["space_json"]))


def test_the_same_task_is_history_and_other_tasks_are_the_past(tmp_path):
    finished_job(tmp_path, "bowl-1", "bowl", seed=3)  # the same task, the same seed
    finished_job(tmp_path, "bowl-2", "bowl", seed=8)  # the same task, another seed
    finished_job(tmp_path, "dish-1", "dish", seed=3)  # another task
    data = copy.deepcopy(JOB)
    data.update(storage=str(tmp_path / "results"), knowledge_base={"path": str(tmp_path / "kb")})
    data["searcher"] = {"name": "bohb"}
    spec = job_from_dict(data)
    warm, history, source = warm_start_for(spec)
    assert warm is not None and set(warm.weights.past) == {"dish"}
    assert len(history.observations) == 72  # both earlier searches of the task
    # Only the configurations measured at the full budget under this job's seed are known.
    frame = KnowledgeBase(tmp_path / "kb").observations("bowl")
    same_seed = frame[(frame["seed"] == 3) & (frame["budget"] == 3)]
    assert history.known == {
        json.dumps(json.loads(c), sort_keys=True) for c in same_seed["config_json"]
    }
    assert len(history.known) == 12
    # The recipe rebuilds both on resume, and keeps to the tasks the job started with.
    extras = source()
    assert set(extras["warm_start"].weights.past) == {"dish"}
    assert len(extras["history"].observations) == 72
    searcher = make_searcher(
        "bohb", space=spec.search_space, seed=3, max_budget=3, warm_start=warm, history=history
    )
    assert searcher.model() is not None  # fitted on the history before any result
    for k in range(20):
        s = searcher.ask(f"n{k}")
        assert json.dumps(s.config, sort_keys=True) not in history.known


def test_repeat_history_lets_known_configurations_run_again(tmp_path):
    finished_job(tmp_path, "bowl-1", "bowl", seed=3)
    data = copy.deepcopy(JOB)
    data.update(storage=str(tmp_path / "results"), knowledge_base={"path": str(tmp_path / "kb")})
    data["searcher"] = {"name": "bohb", "options": {"repeat_history": True}}
    warm, history, _ = warm_start_for(job_from_dict(data))
    assert warm is None and len(history.observations) == 36 and not history.known
    off = {**data, "searcher": {"name": "bohb", "options": {"warm_start": False}}}
    assert warm_start_for(job_from_dict(off)) == (None, None, None)
    bad = {**data, "searcher": {"name": "random", "options": {"repeat_history": True}}}
    with pytest.raises(ValueError, match="repeat_history"):
        make_searcher("random", space=job_from_dict(data).search_space, seed=0,
                      options=bad["searcher"]["options"])  # fmt: skip


def test_pairwise_concordances_are_stored_as_jobs_join_and_reused(tmp_path):
    finished_job(tmp_path, "bowl-1", "bowl", seed=3)
    kb = KnowledgeBase(tmp_path / "kb")
    assert kb.similarities() == {}  # one task: nothing to compare with
    finished_job(tmp_path, "dish-1", "dish", seed=4)
    finished_job(tmp_path, "cup-1", "cup", seed=5)
    stored = kb.similarities()
    # Every ordered pair of the three tasks, measured when the later of the two joined.
    assert {(t, s) for t, row in stored.items() for s in row} == {
        (a, b) for a in ("bowl", "dish", "cup") for b in ("bowl", "dish", "cup") if a != b
    }
    for row in stored.values():
        for concordance, pairs in row.values():
            assert 0.0 <= concordance <= 1.0 and pairs > 0
    # A warm start over the knowledge base reads them instead of measuring them again.
    data = copy.deepcopy(JOB)
    data.update(
        task={"name": "pot"},
        storage=str(tmp_path / "results"),
        knowledge_base={"path": str(tmp_path / "kb")},
        searcher={"name": "bohb"},
    )
    warm, _, _ = warm_start_for(job_from_dict(data))
    names = warm.similarity.task_names
    i, j = names.index("dish"), names.index("bowl")
    assert warm.similarity.pairwise[i, j] == pytest.approx(stored["bowl"]["dish"][0])
