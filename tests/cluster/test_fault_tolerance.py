"""Fault tolerance on a real multi-node Ray cluster on this machine
(cluster/local/start.sh: a head with no CPUs and two one-CPU worker nodes, each its
own raylet), with the driver as a user runs it: ``warmtune run JOB --address
HOST:PORT`` in a subprocess, with no ``RAY_*`` variable set and the token only in
``~/.ray/auth_token`` (of a private ``$HOME``).

- A driver finds the token and connects by itself (no ``RAY_AUTH_MODE=token``).
- Ctrl+C: the run says it was interrupted and ``--resume`` finishes it.
- SIGKILL of the driver: ``--resume`` continues from the saved experiment and
  searcher state; trials finished by then do not run again.
- SIGKILL of a worker node: its trials are retried from their last checkpoints
  on the other node, and no reported row is lost.

The node is killed last: the tests before it need both workers.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.cluster.helpers import BIN, dashboard_api, user_env
from warmtune.store import ResultStore, configs

REPO = Path(__file__).resolve().parents[2]
STOP = REPO / "cluster" / "local" / "stop.sh"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Cluster:
    address: str
    dashboard: str
    dir: Path
    home: Path  # $HOME of the cluster and its drivers: the token is in .ray/auth_token
    env: dict[str, str]  # a user's environment: no RAY_* variables at all

    def api(self, path: str) -> dict:
        token = (self.home / ".ray" / "auth_token").read_text().strip()
        return dashboard_api(self.dashboard, token, path)

    def node_pids(self, node: int) -> set[int]:
        """The processes of worker node ``node`` (its raylet, agents and workers)."""
        done = subprocess.run(
            [str(STOP), "--dir", str(self.dir), "--node", str(node), "--list"],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return set(map(int, done.stdout.split()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, start_cluster):
    home = tmp_path_factory.mktemp("home")
    env = user_env(HOME=str(home), PYTHONUNBUFFERED="1")
    ray_dir, info = start_cluster(env=env, workers=2, cpus_per_worker=1, prefix="wt-ft-")
    # start.sh made the token where a user's Ray looks for it by default.
    assert (home / ".ray" / "auth_token").is_file()
    return Cluster(info["RAY_ADDRESS"], info["WARMTUNE_DASHBOARD"], ray_dir, home, env)


def write_job(tmp_path: Path, name: str, *, trials: int, iters: int, kb: bool = False) -> Path:
    job = {
        "name": name,
        "task": {"name": "bowl"},
        # Every iteration sleeps, then reports and checkpoints.
        "trainable": {"name": "quadratic", "params": {"sleep_s": 0.5}},
        "space": {
            "x": {"type": "float", "low": 0, "high": 1},
            "y": {"type": "float", "low": 0, "high": 1},
        },
        "objective": {"metric": "loss", "mode": "min"},
        "budget": {"trials": trials, "max_iterations": iters},
        "max_retries": 2,
        "storage": str(tmp_path / "results"),
        "knowledge_base": {"add": kb, "path": str(tmp_path / "kb")},
        "seed": 3,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def store_of(job_file: Path) -> ResultStore:
    return ResultStore(job_file.parent / "results" / job_file.stem / "warmtune" / "results")


def warmtune(cluster: Cluster, *args: str, log: Path) -> subprocess.Popen:
    """``warmtune ARGS --address HOST:PORT`` as a user runs it; output to ``log``."""
    return subprocess.Popen(
        [str(BIN / "warmtune"), *args, "--address", cluster.address],
        env=cluster.env,
        cwd=log.parent,  # not the repository root: see DESIGN.md
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"warmtune did not finish in {timeout}s:\n{log.read_text()[-3000:]}")
    return log.read_text()


def wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 90):
    """Poll ``check()`` until it returns something true; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def progress(store: ResultStore) -> pd.DataFrame:
    """Per trial: the last iteration in the store and the pid that reported it."""
    df = store.read()
    if df.empty:
        return pd.DataFrame(columns=["it", "pid"])
    return df.groupby("trial_id").agg(it=("training_iteration", "max"), pid=("pid", "last"))


def checkpoint_iteration(trial: Any) -> int:
    """The iteration of the checkpoint a resumed trial starts from (the quadratic
    trainable writes it into every checkpoint)."""
    with open(Path(trial.checkpoint.path) / "state.json") as f:
        return int(json.load(f)["iteration"])


def saved_trials(root: Path) -> dict:
    """The trials of the experiment state Tune saved last: what ``--resume`` sees."""
    from ray.tune import ExperimentAnalysis

    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    return {t.trial_id: t for t in ExperimentAnalysis(str(root)).trials}


def test_a_driver_connects_with_the_token_file_alone(cluster, tmp_path):
    # The two ways a cluster address reaches Ray: an argument, and $RAY_ADDRESS with
    # "auto" (how a job submitted through the Jobs API runs `--address auto`).
    probe = (
        "import os, sys, ray; from warmtune.cluster.connect import connect_ray; "
        "print(connect_ray(sys.argv[1])); "
        "print(int(ray.cluster_resources()['CPU']), os.environ['RAY_AUTH_MODE'])"
    )
    for address, extra in ((cluster.address, {}), ("auto", {"RAY_ADDRESS": cluster.address})):
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", probe, address],
            env={**cluster.env, **extra}, cwd=tmp_path, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        took = time.monotonic() - start
        assert done.returncode == 0, done.stdout + done.stderr
        where, resources = done.stdout.strip().splitlines()[-2:]
        assert where.startswith(f"Ray at {cluster.address}")
        assert resources == "2 token"  # the two worker CPUs; token mode was turned on
        # Without the token Ray retries for 20 s before it gives up.
        assert took < 15, done.stderr


def test_a_driver_without_a_token_is_told_what_to_do(cluster, tmp_path):
    job_file = write_job(tmp_path, "tokenless", trials=1, iters=1)
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    done = subprocess.run(
        [str(BIN / "warmtune"), "run", str(job_file), "--address", cluster.address],
        env={**cluster.env, "HOME": str(empty_home)}, cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"the Ray cluster at {cluster.address} uses token authentication" in done.stderr
    assert "~/.ray/auth_token" in done.stderr and "RAY_AUTH_TOKEN" in done.stderr
    assert not store_of(job_file).files()


def test_ctrl_c_is_an_interruption_and_resume_finishes_the_trials(cluster, tmp_path):
    # Two trials, both running when Ctrl+C comes: Tune stops them and reports them
    # as terminated, which must not read as a finished search.
    job_file = write_job(tmp_path, "ctrlc", trials=2, iters=8, kb=True)
    store, log = store_of(job_file), tmp_path / "run.log"
    proc = warmtune(cluster, "run", str(job_file), log=log)
    wait_for(
        "both trials at iteration 2",
        lambda: len(p := progress(store)) == 2 and (p.it >= 2).all(),
        proc,
        log,
    )
    proc.send_signal(signal.SIGINT)
    out = finish(proc, log)
    stopped_at = time.time()
    assert proc.returncode == 130, out
    assert "warmtune: job 'ctrlc' was interrupted after" in out
    assert f"continue it with: warmtune run {job_file} --resume" in out
    assert "knowledge base" not in out and not (tmp_path / "kb").exists()
    before = store.read(dedupe=False)
    reached = before.groupby("trial_id").training_iteration.max()
    assert len(reached) == 2 and (reached < 8).all(), out
    # Tune saved them as running, before it stopped them: --resume continues them.
    saved = saved_trials(tmp_path / "results" / "ctrlc")
    assert sorted(saved) == sorted(reached.index)
    assert not any(t.status == "TERMINATED" for t in saved.values())
    # The iteration each trial's last saved checkpoint belongs to. An iteration the
    # trial reported after Tune's last save (Ctrl+C races with it) runs again.
    # Read from the checkpoint itself: the saved last result can be one iteration
    # ahead of the checkpoint Tune restores from (seen in CI under load).
    checkpointed = {t: checkpoint_iteration(s) for t, s in saved.items()}
    assert all(2 <= checkpointed[t] <= reached[t] for t in saved), (checkpointed, reached)

    resumed = warmtune(cluster, "run", str(job_file), "--resume", log=tmp_path / "resume.log")
    out = finish(resumed, tmp_path / "resume.log")
    assert resumed.returncode == 0, out
    assert "warmtune: job 'ctrlc' finished in" in out and "2 trials, 0 failed" in out
    assert "added 16 observations of task 'bowl' to the knowledge base" in out
    after, kept = store.read(dedupe=False), store.read()
    for trial in reached.index:
        rows = after[after.trial_id == trial]
        # Continued from its last checkpoint, not from the start; the store keeps one
        # row per iteration.
        assert rows[rows.timestamp > stopped_at].training_iteration.min() == (
            checkpointed[trial] + 1
        ), trial
        assert (rows.training_iteration == 1).sum() == 1, trial
        assert sorted(kept[kept.trial_id == trial].training_iteration) == list(range(1, 9))


def test_a_killed_driver_resumes_without_rerunning_finished_trials(cluster, tmp_path):
    job_file = write_job(tmp_path, "killed", trials=10, iters=5)
    store, log = store_of(job_file), tmp_path / "run.log"
    root = tmp_path / "results" / "killed"
    proc = warmtune(cluster, "run", str(job_file), log=log)

    # Kill it right after Tune saved a state with two finished trials and others
    # still to run: what a crash leaves behind for --resume.
    seen: dict = {"mtime": None}

    def saved_two_finished():
        states = list(root.glob("experiment_state-*.json"))
        mtime = max((s.stat().st_mtime_ns for s in states), default=None)
        if mtime is None or mtime == seen["mtime"]:
            return None
        try:
            trials = saved_trials(root)
        except ValueError:  # Tune rewrites the file in place: caught mid-write, poll again
            return None
        seen["mtime"] = mtime
        finished = {t for t, trial in trials.items() if trial.status == "TERMINATED"}
        return (finished, mtime) if 2 <= len(finished) < len(trials) else None

    finished, saved_at = wait_for("a saved state with two finished trials", saved_two_finished,
                                  proc, log)  # fmt: skip
    proc.kill()
    proc.wait(timeout=30)
    killed_at = time.time()

    resumed = warmtune(cluster, "run", str(job_file), "--resume", log=tmp_path / "resume.log")
    out = finish(resumed, tmp_path / "resume.log")
    assert resumed.returncode == 0, out
    assert "warmtune: job 'killed' finished in" in out and "0 failed" in out

    after = store.read(dedupe=False)
    trials = saved_trials(root)
    assert len(trials) == 10 and all(t.status == "TERMINATED" for t in trials.values())
    rows = after[after.trial_id.isin(trials)]
    assert (rows.groupby("trial_id").training_iteration.nunique() == 5).all()
    assert rows.groupby("trial_id").training_iteration.max().eq(5).all()
    # Finished trials did not run again: no rows after the kill, none added.
    for trial in finished:
        mine = after[after.trial_id == trial]
        assert (mine.timestamp < killed_at).all() and len(mine) == 5, trial
    # A trial Tune had not saved yet when the driver died (started after the last
    # save) is unknown to --resume; the searcher, restored from the same save,
    # proposes its configuration again under a new trial id.
    orphans = after[~after.trial_id.isin(trials)]
    assert (orphans.timestamp >= saved_at / 1e9 - 1).all()  # whole seconds
    # The searcher continued its own sequence: the ten configurations are the
    # first ten that the seeded searcher proposes.
    from warmtune.searchers import make_searcher
    from warmtune.spec import load_job

    spec = load_job(job_file)
    searcher = make_searcher("random", space=spec.search_space, seed=spec.seed, max_budget=5)
    expected = sorted(str(searcher.ask(f"t{i}").config) for i in range(10))
    assert sorted(map(str, configs(rows.drop_duplicates("trial_id")))) == expected


def test_a_killed_worker_node_retries_its_trials_from_checkpoints(cluster, tmp_path):
    job_file = write_job(tmp_path, "nodekill", trials=4, iters=10)
    store, log = store_of(job_file), tmp_path / "run.log"
    node_1 = cluster.node_pids(1)
    assert node_1 and not node_1 & cluster.node_pids(2)
    proc = warmtune(cluster, "run", str(job_file), log=log)

    def trial_on_node_1():
        p = progress(store)
        on_1 = p[(p.it >= 2) & (p.it <= 5) & p.pid.isin(cluster.node_pids(1))]
        return list(on_1.index) or None

    (victim, *_) = wait_for("a trial on node 1 at iteration 2", trial_on_node_1, proc, log)
    before = store.read(dedupe=False)
    victim_pid = int(before[before.trial_id == victim].pid.iloc[-1])
    killed = subprocess.run(
        [str(STOP), "--dir", str(cluster.dir), "--node", "1", "--kill"],
        env=cluster.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert killed.returncode == 0 and "worker node 1" in killed.stdout, killed.stderr
    assert not cluster.node_pids(1) and cluster.node_pids(2)  # only node 1 is gone

    out = finish(proc, log)
    assert proc.returncode == 0, out
    assert "warmtune: job 'nodekill' finished in" in out and "4 trials, 0 failed" in out

    after = store.read(dedupe=False)
    # No row reported before the kill was lost, nor changed.
    key = ["trial_id", "training_iteration", "loss", "pid"]
    merged = before[key].merge(after[key], how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    # Every trial has all its iterations.
    reached = after.groupby("trial_id").training_iteration.agg(["nunique", "max"])
    assert len(reached) == 4 and (reached["nunique"] == 10).all() and (reached["max"] == 10).all()
    # The victim was retried once, in a new process (on node 2, the only one left),
    # from the checkpoint of its last iteration: after every row already stored, and
    # no iteration ran twice.
    trials = saved_trials(tmp_path / "results" / "nodekill")
    assert {t: trial.num_failures for t, trial in trials.items()} == {
        t: int(t == victim) for t in trials
    }
    mine = after[after.trial_id == victim]
    retried = mine[mine.pid != victim_pid]
    last_before = before[before.trial_id == victim].training_iteration.max()
    assert retried.training_iteration.min() > last_before
    assert sorted(mine.training_iteration) == list(range(1, 11))

    # The cluster itself saw the node die.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        nodes = cluster.api("/api/v0/nodes?detail=1")["data"]["result"]["result"]
        state = {
            k: n["state"] for n in nodes for k in n["resources_total"] if k.startswith("node_")
        }
        if state.get("node_1") == "DEAD":
            break
        time.sleep(1)
    assert state == {"node_0": "ALIVE", "node_1": "DEAD", "node_2": "ALIVE"}
