"""Two processes write one knowledge base and one storage root at the same time.

Both writers start together behind a barrier and make many small writes: knowledge-base
observations of their own task and of a task they share, both add the same finished job
at once, each appends the results of its own job under a shared storage root, and both
append to one shared ResultStore. The test process reads all of it the whole time.
Afterwards every row is there exactly once; during the writes no read fails, warns or
sees a row twice, and each read sees everything the read before it saw.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from warmtune.jobdir import JobDir
from warmtune.knowledge import KnowledgeBase
from warmtune.spec import JobSpec, job_from_dict
from warmtune.store import ResultStore

WRITERS = 2
WRITES = 50  # small writes per writer to each of its three stores

# Spawned children cannot import this module (importlib mode), so they exec this source.
_WRITER = """
from warmtune.jobdir import JobDir
from warmtune.knowledge import KnowledgeBase
from warmtune.store import ResultStore

kb = KnowledgeBase(kb_path)
own = ResultStore(JobDir.find(own_job, storage=storage).results)
shared = ResultStore(shared_path)
barrier.wait(timeout=120)
kb.add_job(common_job, storage=storage)  # the other writer adds it at the same moment
for i in range(writes):
    if i == writes // 2:  # halfway: hold until the reader has read this state
        halfway.wait(timeout=120)
        resume.wait(timeout=120)
    kb.add_observations([
        {"task": "shared" if i % 2 else f"own-{writer}", "value": float(i), "metric": "loss",
         "mode": "min", "job": f"w{writer}", "trial_id": f"t{i}", "budget": 1.0,
         "config": {"i": i, "writer": writer}}
    ])
    own.append([{"job": own_job, "trial_id": "t0", "training_iteration": i + 1,
                 "loss": 1.0 / (i + 1), "config": {"i": i}}])
    shared.append([{"job": f"w{writer}", "trial_id": f"t{i}", "training_iteration": 1,
                    "loss": float(i)}])
kb.add_job(own_job, storage=storage)
"""


def _spec(storage: Path, name: str, task: str) -> JobSpec:
    return job_from_dict(
        {
            "name": name,
            "task": {"name": task},
            "trainable": {"name": "quadratic"},
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "objective": {"metric": "loss", "mode": "min"},
            "budget": {"trials": 1, "max_iterations": WRITES},
            "storage": str(storage),
        }
    )


def _keys(df: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return list(df[columns].itertuples(index=False, name=None))


class _Reader:
    """Reads everything, checking each snapshot against the one before it."""

    def __init__(self, kb: KnowledgeBase, stores: dict[str, ResultStore]) -> None:
        self.kb = kb
        self.stores = stores
        self.seen: dict[str, set[tuple]] = {"kb": set(), **{name: set() for name in stores}}
        self.sizes: dict[str, list[int]] = {name: [] for name in self.seen}

    def snapshot(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a half-written file would warn (or raise)
            frames = {"kb": self.kb.observations(strict=True)}
            for name, store in self.stores.items():
                frames[name] = store.read(strict=True, dedupe=False)
        for name, df in frames.items():
            columns = ["task", "job", "trial_id", "budget"] if name == "kb" else ["job"]
            columns += [] if name == "kb" else ["trial_id", "training_iteration"]
            keys = _keys(df, columns)
            assert len(keys) == len(set(keys)), f"{name}: a row seen twice in one read"
            missing = self.seen[name] - set(keys)
            assert not missing, f"{name}: rows seen before are gone: {sorted(missing)[:3]}"
            self.seen[name] = set(keys)
            self.sizes[name].append(len(keys))


def test_two_processes_write_kb_and_stores_at_once(tmp_path):
    storage, kb_path, shared_path = tmp_path / "results", tmp_path / "kb", tmp_path / "shared"
    common = _spec(storage, "common", "bowl")
    JobDir.of(common).write_spec(common)
    ResultStore(JobDir.of(common).results).append(
        [
            {"job": "common", "trial_id": f"c{t}", "training_iteration": it, "loss": t + 1 / it}
            for t in range(3)
            for it in (1, 2)
        ]
    )
    for w in range(WRITERS):
        spec = _spec(storage, f"job-{w}", f"task-{w}")
        JobDir.of(spec).write_spec(spec)

    ctx = multiprocessing.get_context("spawn")
    barrier, halfway, resume = (ctx.Barrier(WRITERS + 1) for _ in range(3))
    procs = [
        ctx.Process(
            target=exec,
            args=(
                _WRITER,
                {
                    "kb_path": str(kb_path),
                    "storage": str(storage),
                    "shared_path": str(shared_path),
                    "own_job": f"job-{w}",
                    "common_job": "common",
                    "writer": w,
                    "writes": WRITES,
                    "barrier": barrier,
                    "halfway": halfway,
                    "resume": resume,
                },
            ),
        )
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    kb = KnowledgeBase(kb_path)
    stores = {
        f"job-{w}": ResultStore(JobDir.find(f"job-{w}", storage=str(storage)).results)
        for w in range(WRITERS)
    }
    stores["shared"] = ResultStore(shared_path)
    reader = _Reader(kb, stores)
    try:
        barrier.wait(timeout=120)
        reader.snapshot()  # races the first writes
        halfway.wait(timeout=120)
        reader.snapshot()  # every writer paused halfway: a read during the writes, for sure
        during = {name: sizes[-1] for name, sizes in reader.sizes.items()}
        resume.wait(timeout=120)
        deadline = time.monotonic() + 120
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            reader.snapshot()
    finally:
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    reader.snapshot()

    # The reads did overlap the writes (else this test would prove nothing): the writers
    # paused halfway for one read, and the free-running reads raced them before and after.
    totals = {name: sizes[-1] for name, sizes in reader.sizes.items()}
    for name, count in during.items():
        assert 0 < count < totals[name], f"{name}: the halfway read saw {count} of {totals[name]}"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obs = kb.observations(strict=True)
    for w in range(WRITERS):
        own = obs[obs.task == f"own-{w}"]
        assert own.trial_id.tolist() == [f"t{i}" for i in range(0, WRITES, 2)]
        assert own.value.tolist() == [float(i) for i in range(0, WRITES, 2)]
        mine = obs[(obs.task == "shared") & (obs.job == f"w{w}")]
        assert mine.trial_id.tolist() == [f"t{i}" for i in range(1, WRITES, 2)]
        job = obs[obs.task == f"task-{w}"]
        assert job.budget.tolist() == [float(i) for i in range(1, WRITES + 1)]
        pd.testing.assert_series_equal(
            job.value.reset_index(drop=True),
            pd.Series([1.0 / i for i in range(1, WRITES + 1)], name="value"),
        )
    # Added by both writers at once: possibly stored twice, counted once.
    common_rows = obs[obs.task == "bowl"]
    assert sorted(_keys(common_rows, ["trial_id", "budget"])) == [
        (f"c{t}", float(it)) for t in range(3) for it in (1, 2)
    ]
    assert len(obs) == WRITERS * (WRITES + WRITES) + 6
    assert kb.tasks()["task"].tolist() == ["bowl", "own-0", "own-1", "shared", "task-0", "task-1"]

    for w in range(WRITERS):
        df = stores[f"job-{w}"].read(strict=True)
        assert df.training_iteration.tolist() == list(range(1, WRITES + 1))
    shared = ResultStore(shared_path).read(strict=True, dedupe=False)
    assert len(shared) == WRITERS * WRITES
    for w in range(WRITERS):
        # Each writer's rows come back once, in the order it wrote them.
        assert shared[shared.job == f"w{w}"].loss.tolist() == [float(i) for i in range(WRITES)]

    # Every temporary file was renamed into place; none is left behind.
    leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith(".tmp-")]
    assert leftovers == []


@pytest.mark.parametrize("hidden", [".tmp-part-1.parquet", "_partial.parquet"])
def test_reader_ignores_a_file_being_written(tmp_path, hidden):
    """What a reader meets mid-write: a hidden, truncated file. It is never read."""
    kb = KnowledgeBase(tmp_path)
    kb.add_observations([{"task": "a", "value": 1.0, "metric": "loss", "mode": "min"}])
    (done,) = Path(tmp_path, "observations").glob("part-*.parquet")
    Path(tmp_path, "observations", hidden).write_bytes(done.read_bytes()[:50])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kb.observations(strict=True).value.tolist() == [1.0]
