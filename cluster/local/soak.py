"""A search on a local cluster under repeated faults, and what it lost.

Starts ``cluster/local/start.sh`` (a head with no CPUs and N one-CPU worker nodes) in
a private ``$HOME`` (its own token), runs two jobs on one knowledge base, and while
they run:

- SIGKILLs a random worker node every ``kill_every_s`` seconds (never sooner after a
  driver or head restart, whose resume re-runs would be blamed on it) and starts it
  again (``stop.sh --node I --kill``, ``start.sh --rejoin I``);
- SIGKILLs the driver of the main job once, then ``warmtune run JOB --resume``;
- once, the head machine dies: the drivers and every process of the cluster are
  SIGKILLed, the cluster is started again and the unfinished jobs ``--resume``.

The main job is random search, whose proposals depend on its seed alone, so the
configurations it ran can be checked against the searcher run on its own. The second
job is BOHB. Every iteration of either sleeps, reports and checkpoints
(``quadratic``). At the end it checks, per job:

- every iteration of every finished trial (up to the last one Tune recorded for it:
  the budget, or the rung the scheduler stopped it at) is in the result store exactly
  once after deduplication (``lost``: missing ones; ``duplicated``: raw rows the dedup
  removed);
- which iterations ran again after they had been reported with their checkpoint,
  and after which fault (``rerun``);
- the main job's configurations equal the searcher's own first draws for the seed,
  and its saved searcher state equals the state of that searcher asked as often;
- the knowledge base holds each job's deduplicated results, once.

``--baseline`` first runs the same two jobs on the same cluster without faults, for
the wall-time overhead. Run it from the repository root with the virtualenv active::

    python cluster/local/soak.py --workers 3 --minutes 10 --baseline --out soak.json

The slow test ``tests/cluster/test_soak.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from collections.abc import Callable

    from ray.tune.experiment import Trial

    from warmtune.jobdir import JobDir
    from warmtune.spec import JobSpec

HERE = Path(__file__).resolve().parent
START, STOP = HERE / "start.sh", HERE / "stop.sh"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Plan:
    """What runs and when; times in seconds from the start of the main job."""

    workers: int = 3
    trials: int = 48
    iterations: int = 12
    sleep_s: float = 2.5
    second_trials: int = 12
    second_iterations: int = 6
    second_start_s: float = 20.0
    kill_every_s: float = 90.0
    node_down_s: float = 5.0
    driver_kill_s: float = 200.0
    head_kill_s: float = 400.0
    seed: int = 0
    timeout_s: float = 1800.0

    @classmethod
    def for_minutes(cls, minutes: float, workers: int) -> Plan:
        """A plan whose main job runs about ``minutes`` without faults."""
        total = minutes * 60
        iterations, sleep_s = 12, 2.5
        trials = max(8, round(total * workers / (iterations * sleep_s) * 0.9))
        return cls(
            workers=workers,
            trials=trials,
            iterations=iterations,
            sleep_s=sleep_s,
            driver_kill_s=total / 3,
            head_kill_s=2 * total / 3,
            kill_every_s=min(90.0, total / 4),
            timeout_s=max(1800.0, 4 * total),
        )


@dataclass
class JobOutcome:
    """What one job's stores, Tune's saved state and the knowledge base say at the end."""

    name: str
    trials_finished: int = 0
    trials_forgotten: int = 0  # trials a --resume did not know (started after Tune's save)
    rows_expected: int = 0  # every iteration of every finished trial
    rows_found: int = 0
    rows_duplicated: int = 0
    rows_lost: int = 0
    rerun: dict[str, int] = field(default_factory=dict)  # fault -> iterations run again
    kb_rows: int = 0
    kb_matches_store: bool = False
    wall_s: float = 0.0


@dataclass
class Report:
    """The plan, the faults as they happened, and each job's outcome."""

    plan: Plan
    faults: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, JobOutcome] = field(default_factory=dict)
    configs_match_searcher: bool | None = None
    searcher_state_matches: bool | None = None
    wall_s: float = 0.0
    baseline_wall_s: float | None = None


def _job(name: str, searcher: str, trials: int, iterations: int, plan: Plan, root: Path) -> Path:
    job = {
        "name": name,
        "task": {"name": "bowl-soak"},
        "trainable": {"name": "quadratic", "params": {"sleep_s": plan.sleep_s}},
        "space": {
            "x": {"type": "float", "low": 0, "high": 1},
            "y": {"type": "float", "low": 0, "high": 1},
        },
        "objective": {"metric": "loss", "mode": "min"},
        "searcher": {"name": searcher},
        "budget": {"trials": trials, "max_iterations": iterations},
        "max_retries": 50,  # every node kill fails the trials on that node
        "storage": str(root / "results"),
        "knowledge_base": {"add": True, "path": str(root / "kb")},
        "seed": plan.seed,
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


class Soak:
    """One local cluster in a private ``$HOME``, its drivers, and the faults.

    Args:
        plan: what runs and when.
        root: where the jobs' files, results and knowledge base go.
        log: called with one line per event.
    """

    def __init__(self, plan: Plan, root: Path, *, log: Callable[[str], Any] = print) -> None:
        self.plan = plan
        self.root = root
        self.say = log
        self.dir = Path(tempfile.mkdtemp(prefix="wt-soak-", dir="/tmp"))  # short: sockets
        home = root / "home"
        (home / ".ray").mkdir(parents=True, exist_ok=True)
        token = home / ".ray" / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "WARMTUNE_DATA", "PYTHONPATH")
        self.env = {k: os.environ[k] for k in keep if k in os.environ}
        self.env.update(HOME=str(home), PYTHONUNBUFFERED="1")
        self.env["PATH"] = f"{BIN}:{self.env.get('PATH', '/usr/bin:/bin')}"
        self.address = ""
        self.start_args: list[str] = []
        self.rng = random.Random(plan.seed)
        self.t0 = 0.0

    # The cluster ---------------------------------------------------------------------
    def start_cluster(self) -> None:
        if not self.start_args:
            base = free_port_block(20 + 10 * self.plan.workers)
            self.start_args = [
                "--workers", str(self.plan.workers), "--cpus-per-worker", "1",
                "--head-cpus", "0", "--dir", str(self.dir), "--port", str(base),
                "--dashboard-port", str(base + 1), "--base-port", str(base + 10),
                "--object-store-mb", "100",
            ]  # fmt: skip
        done = self._run([str(START), *self.start_args], timeout=180)
        self.address = read_cluster_env(self.dir)["RAY_ADDRESS"]
        self.say(done.stdout.splitlines()[0])

    def stop_cluster(self, *, kill: bool = False) -> None:
        self._run([str(STOP), "--dir", str(self.dir), *(["--kill"] if kill else [])], timeout=120)

    def kill_node(self, node: int) -> None:
        self._run([str(STOP), "--dir", str(self.dir), "--node", str(node), "--kill"], timeout=60)

    def rejoin(self, node: int) -> None:
        self._run([str(START), "--dir", str(self.dir), "--rejoin", str(node)], timeout=120)

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    # Drivers -------------------------------------------------------------------------
    def driver(self, job_file: Path, *, resume: bool) -> subprocess.Popen:
        log = job_file.with_suffix(".log")
        args = [str(BIN / "warmtune"), "run", str(job_file), "--address", self.address]
        if resume:
            args.append("--resume")
        with log.open("a") as out:
            out.write(f"\n=== {' '.join(args[1:])} at {self.now():.0f}s\n")
        return subprocess.Popen(
            args, env=self.env, cwd=self.root, stdout=log.open("a"), stderr=subprocess.STDOUT
        )

    def now(self) -> float:
        return time.monotonic() - self.t0

    # The run -------------------------------------------------------------------------
    def run(self, *, faults: bool, tag: str) -> tuple[dict[str, Path], Report]:
        plan = self.plan
        root = self.root / tag
        root.mkdir(parents=True)
        jobs = {
            "main": _job("soak-main", "random", plan.trials, plan.iterations, plan, root),
            "second": _job(
                "soak-second", "bohb", plan.second_trials, plan.second_iterations, plan, root
            ),
        }
        report = Report(plan=plan)
        self.t0 = time.monotonic()
        procs: dict[str, subprocess.Popen | None] = {"main": None, "second": None}
        procs["main"] = self.driver(jobs["main"], resume=False)
        ended: dict[str, float] = {}
        next_node_kill = plan.kill_every_s
        driver_killed = head_killed = False

        def fault(kind: str, **details: Any) -> None:
            report.faults.append(
                {"at_s": round(self.now(), 1), "time": time.time(), "kind": kind, **details}
            )
            self.say(f"[{self.now():6.0f}s] {kind} {details or ''}")

        while len(ended) < len(jobs):
            if self.now() > plan.timeout_s:
                raise TimeoutError(f"the jobs did not finish in {plan.timeout_s:.0f}s")
            second_due = self.now() >= plan.second_start_s
            if procs["second"] is None and "second" not in ended and second_due:
                procs["second"] = self.driver(jobs["second"], resume=False)
            for name, proc in procs.items():
                if proc is not None and name not in ended and proc.poll() is not None:
                    if proc.returncode != 0:
                        raise RuntimeError(
                            f"the {name} job's driver exited {proc.returncode}:\n"
                            + jobs[name].with_suffix(".log").read_text()[-3000:]
                        )
                    ended[name] = self.now()
                    self.say(f"[{self.now():6.0f}s] {name} job finished")
            if faults and "main" not in ended:
                if not driver_killed and self.now() >= plan.driver_kill_s:
                    driver_killed = True
                    fault("driver SIGKILL", job="main")
                    procs["main"].send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                    procs["main"].wait()  # type: ignore[union-attr]
                    time.sleep(2)
                    procs["main"] = self.driver(jobs["main"], resume=True)
                    # The resume re-runs what Tune had not saved; a node kill right
                    # after would take the blame for it (and the two would mix).
                    next_node_kill = max(next_node_kill, self.now() + plan.kill_every_s)
                elif not head_killed and self.now() >= plan.head_kill_s:
                    head_killed = True
                    fault("head SIGKILL (drivers, every node)")
                    for name, proc in procs.items():
                        if proc is not None and name not in ended:
                            proc.send_signal(signal.SIGKILL)
                            proc.wait()
                    self.stop_cluster(kill=True)
                    self.start_cluster()
                    fault("cluster restarted")
                    for name, proc in procs.items():
                        if proc is not None and name not in ended:
                            procs[name] = self.driver(jobs[name], resume=True)
                    next_node_kill = max(next_node_kill, self.now() + plan.kill_every_s)
                elif self.now() >= next_node_kill:
                    node = self.rng.randint(1, plan.workers)
                    fault("worker node SIGKILL", node=node)
                    self.kill_node(node)
                    time.sleep(plan.node_down_s)
                    self.rejoin(node)
                    next_node_kill = self.now() + plan.kill_every_s
            time.sleep(0.5)
        report.wall_s = round(self.now(), 1)
        for name in jobs:
            report.jobs[name] = JobOutcome(name=name, wall_s=round(ended[name], 1))
        return jobs, report


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive ports that are free right now, below Linux's
    ephemeral range (so no outgoing connection takes one between check and use)."""
    import socket

    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 32000 - n)
        try:
            for port in range(base, base + n):
                with socket.socket() as s:
                    # As servers do: a port whose old connections linger in TIME_WAIT is free.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {n} consecutive free ports")


def read_cluster_env(cluster_dir: Path) -> dict[str, str]:
    """The variables ``start.sh`` wrote to ``DIR/cluster.env``, read as data."""
    lines = (cluster_dir / "cluster.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


# What the stores say ---------------------------------------------------------------
def check(jobs: dict[str, Path], report: Report) -> Report:
    """Fill the report's per-job numbers from the result stores, Tune's saved state,
    the searcher state and the knowledge base."""
    import pandas as pd
    from ray.tune import ExperimentAnalysis

    from warmtune.jobdir import JobDir
    from warmtune.knowledge import KnowledgeBase
    from warmtune.spec import load_job
    from warmtune.store import ResultStore

    restarts = [f for f in report.faults if f["kind"] != "cluster restarted"]
    # The driver SIGKILL is the main job's; the node and head faults hit both jobs.
    hits = {
        "main": restarts,
        "second": [f for f in restarts if not f["kind"].startswith("driver")],
    }
    for name, job_file in jobs.items():
        spec = load_job(job_file)
        jobdir = JobDir.of(spec)
        outcome = report.jobs[name]
        store = ResultStore(jobdir.results)
        raw, kept = store.read(dedupe=False), store.read()
        trials = ExperimentAnalysis(jobdir.root).trials
        # Ended, or paused at a rung that was never promoted (BOHB's Hyperband) when the
        # job finished.
        finished = {t.trial_id for t in trials if t.status in ("TERMINATED", "PAUSED")}
        known = {t.trial_id for t in trials}
        outcome.trials_finished = len(finished)
        outcome.trials_forgotten = len(set(raw["trial_id"]) - known)
        mine = kept[kept["trial_id"].isin(finished)]
        # Up to the iteration Tune recorded last for the trial: the full budget, or the
        # rung a scheduler stopped it at.
        reached = {
            t.trial_id: int(t.last_result.get("training_iteration", 0))
            for t in trials
            if t.trial_id in finished
        }
        expected = {(t, i) for t, last in reached.items() for i in range(1, last + 1)}
        found = set(zip(mine["trial_id"], mine["training_iteration"].astype(int), strict=True))
        outcome.rows_expected, outcome.rows_found = len(expected), len(found & expected)
        outcome.rows_lost = len(expected - found)
        outcome.rows_duplicated = len(raw) - len(kept)
        # A row reported again: the iteration ran again after it had been reported with
        # its checkpoint. Blame the last fault of this job before the repeat (Tune's
        # timestamps are whole seconds, hence the second of slack).
        for _, group in raw.sort_values("timestamp").groupby(["trial_id", "training_iteration"]):
            for ts in group["timestamp"].iloc[1:]:
                cause = "none"
                for f in hits[name]:
                    if f["time"] <= float(ts) + 1:
                        cause = f["kind"]
                outcome.rerun[cause] = outcome.rerun.get(cause, 0) + 1
        observed = KnowledgeBase(spec.knowledge_base.path).observations(spec.task.name)
        observed = observed[observed["job"] == spec.name]
        scored = kept[pd.to_numeric(kept[spec.objective.metric], errors="coerce").notna()]
        outcome.kb_rows = len(observed)
        outcome.kb_matches_store = sorted(
            zip(observed["trial_id"], observed["budget"].astype(int), strict=True)
        ) == sorted(zip(scored["trial_id"], scored["training_iteration"].astype(int), strict=True))
        if name == "main":
            report.configs_match_searcher, report.searcher_state_matches = _same_as_searcher(
                spec, jobdir, trials
            )
    return report


def _same_as_searcher(spec: JobSpec, jobdir: JobDir, trials: list[Trial]) -> tuple[bool, bool]:
    """The main job's trial configurations against the random searcher's own first
    draws for the seed (as a set: Tune's trial ids do not say their order); and the
    saved searcher state against that searcher's after as many asks."""
    from warmtune.report import searcher_state
    from warmtune.searchers import make_searcher

    names = list(spec.search_space)
    ran = sorted(json.dumps({k: t.config[k] for k in names}, sort_keys=True) for t in trials)
    searcher = make_searcher(spec.searcher.name, space=spec.search_space, seed=spec.seed)
    own = [searcher.ask(f"t{i}").config for i in range(len(ran))]
    saved = searcher_state(jobdir)
    same_state = saved is not None and _rng(saved) == _rng(searcher.state())
    return ran == sorted(json.dumps(c, sort_keys=True) for c in own), same_state


def _rng(state: Any) -> Any:
    """The searcher generator's state, wherever the saved state nests it."""
    if isinstance(state, dict):
        if "rng" in state:
            return state["rng"]
        for value in state.values():
            found = _rng(value)
            if found is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--baseline", action="store_true", help="also run without faults")
    parser.add_argument("--out", type=Path, help="write the report here (JSON)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    args = parser.parse_args(argv)
    plan = Plan.for_minutes(args.minutes, args.workers)
    root = Path(tempfile.mkdtemp(prefix="warmtune-soak-"))
    soak = Soak(plan, root)
    try:
        soak.start_cluster()
        baseline = None
        if args.baseline:
            _, baseline = soak.run(faults=False, tag="baseline")
        jobs, report = soak.run(faults=True, tag="faults")
        report = check(jobs, report)
        report.baseline_wall_s = baseline.wall_s if baseline else None
    finally:
        soak.stop_cluster()
        shutil.rmtree(soak.dir, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(asdict(report), indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
