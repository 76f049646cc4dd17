"""warmtune's Ray metrics: the callback's bookkeeping, that metrics never break a run,
and (slow) that a real `ray start` head exports them to Prometheus with the job tag."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from warmtune.cluster import metrics
from warmtune.cluster.metrics import MetricsCallback, count_states
from warmtune.searchers import make_searcher
from warmtune.searchers.ray_adapter import TuneSearcher
from warmtune.space import SearchSpace

RAY_BIN = Path(sys.executable).with_name("ray")


def _trials(*statuses: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(status=s) for s in statuses]


@pytest.fixture
def recorded(monkeypatch):
    """What the callback and the adapter would send to Ray, by metric."""
    calls: dict[str, list[tuple]] = {"states": [], "best": []}
    monkeypatch.setattr(metrics, "record_trial_states", lambda *a: calls["states"].append(a))
    monkeypatch.setattr(metrics, "record_best_objective", lambda *a: calls["best"].append(a))
    return calls


def test_count_states_names_every_state_and_counts_tunes_statuses():
    counts = count_states(["RUNNING", "PENDING", "RUNNING", "TERMINATED", "ERROR"])
    assert counts == {"pending": 1, "running": 2, "paused": 0, "terminated": 1, "error": 1}
    assert count_states([]) == dict.fromkeys(metrics.TRIAL_STATES, 0)


@pytest.mark.parametrize("mode,expected", [("min", [3.0, 1.0]), ("max", [3.0, 5.0])])
def test_callback_records_the_best_objective_only_when_it_improves(recorded, mode, expected):
    cb = MetricsCallback(job="j", metric="loss", mode=mode)
    for value in (3.0, 5.0, float("nan"), None, 1.0, 4.0):
        cb.on_trial_result(0, [], SimpleNamespace(status="RUNNING"), {"loss": value})
    best = [v for _, _, v in recorded["best"]]
    assert best == expected and cb.best == expected[-1]
    assert {(job, metric) for job, metric, _ in recorded["best"]} == {("j", "loss")}


def test_callback_throttles_state_updates_but_always_records_at_the_end(recorded):
    cb = MetricsCallback(job="j", metric="loss", mode="min", interval_s=3600)
    trials = _trials("RUNNING", "PENDING")
    cb.on_step_end(0, trials)
    cb.on_step_end(1, trials)  # within the interval: skipped
    assert len(recorded["states"]) == 1
    trials = _trials("TERMINATED", "ERROR")
    cb.on_trial_error(2, trials, trials[1])
    cb.on_experiment_end(trials)
    assert len(recorded["states"]) == 3
    job, counts = recorded["states"][-1]
    assert job == "j" and counts["terminated"] == 1 and counts["error"] == 1


def test_callback_state_round_trips_the_best_value(recorded):
    cb = MetricsCallback(job="j", metric="loss", mode="min")
    cb.on_trial_result(0, [], SimpleNamespace(status="RUNNING"), {"loss": 0.25})
    restored = MetricsCallback(job="j", metric="loss", mode="min")
    restored.set_state(cb.get_state())
    assert restored.best == 0.25
    other = MetricsCallback(job="other", metric="loss", mode="min")
    other.set_state(cb.get_state())
    assert other.best is None


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"job": "", "metric": "loss", "mode": "min"}, "job"),
        ({"job": "j", "metric": "", "mode": "min"}, "metric"),
        ({"job": "j", "metric": "loss", "mode": "minimum"}, "mode"),
        ({"job": "j", "metric": "loss", "mode": "min", "interval_s": -1}, "interval_s"),
    ],
)
def test_callback_rejects_bad_arguments_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MetricsCallback(**kwargs)


def test_the_adapter_times_each_ask_under_the_job_and_searcher(monkeypatch):
    from warmtune.cluster.metrics import JobMetrics

    seen: list[tuple] = []
    monkeypatch.setattr(metrics, "record_suggest_latency", lambda *a: seen.append(a))
    space = SearchSpace({"x": {"type": "float", "low": 0, "high": 1}})
    searcher = make_searcher("random", space=space, seed=0, options={}, max_budget=3)
    adapter = TuneSearcher(searcher, metric="loss", mode="min", metrics=JobMetrics("j"))
    for i in range(3):
        assert adapter.suggest(f"t{i}") is not None
    assert [(job, name) for job, name, _ in seen] == [("j", "random")] * 3
    assert all(0 <= s < 1 for _, _, s in seen)
    # No hook, no metrics (a TuneSearcher built outside a warmtune run).
    TuneSearcher(searcher, metric="loss", mode="min").suggest("t9")
    assert len(seen) == 3


def test_broken_ray_metrics_never_break_a_run(monkeypatch, caplog):
    import ray.util.metrics

    def fail(*args, **kwargs):
        raise RuntimeError("no metrics agent")

    monkeypatch.setattr(metrics, "_state", {"metrics": None, "broken": False})
    monkeypatch.setattr(ray.util.metrics, "Gauge", fail)
    with caplog.at_level(logging.WARNING, logger="warmtune.cluster.metrics"):
        metrics.record_trial_states("j", {"running": 1})
        metrics.record_best_objective("j", "loss", 0.5)
        metrics.record_suggest_latency("j", "bohb", 0.01)
        metrics.record_kb_top_weight("j", "task", 0.5)
    warnings = [r for r in caplog.records if "metrics are off" in r.getMessage()]
    assert len(warnings) == 1 and "no metrics agent" in warnings[0].getMessage()


def test_refresh_sets_a_jobs_gauges_again_to_their_last_values(monkeypatch):
    sets: list[tuple] = []

    class Gauge:
        def __init__(self, name):
            self.name = name

        def set(self, value, tags):
            sets.append((self.name, value, tags))

    fake = SimpleNamespace(**{k: Gauge(k) for k in ("trials", "best_objective", "kb_top_weight")})
    monkeypatch.setattr(metrics, "_state", {"metrics": fake, "broken": False})
    monkeypatch.setattr(metrics, "_last", {})
    metrics.record_best_objective("a", "loss", 0.5)
    metrics.record_best_objective("a", "loss", 0.25)
    metrics.record_kb_top_weight("a", "t1", 0.75)
    metrics.record_kb_top_weight("a", "t2", 0.5, previous="t1")
    metrics.record_best_objective("b", "loss", 9.0)
    sets.clear()
    metrics.refresh_gauges("a")
    assert sorted(sets, key=str) == sorted(
        [
            ("best_objective", 0.25, {"job": "a", "metric": "loss"}),
            ("kb_top_weight", 0.0, {"job": "a", "task": "t1"}),
            ("kb_top_weight", 0.5, {"job": "a", "task": "t2"}),
        ],
        key=str,
    )


def test_a_failing_record_is_swallowed_once(monkeypatch, caplog):
    class Broken:
        def set(self, *a, **k):
            raise TypeError("bad tag")

        observe = set

    fake = SimpleNamespace(
        trials=Broken(), best_objective=Broken(), suggest_latency=Broken(), kb_top_weight=Broken()
    )
    monkeypatch.setattr(metrics, "_state", {"metrics": fake, "broken": False})
    with caplog.at_level(logging.WARNING, logger="warmtune.cluster.metrics"):
        metrics.record_best_objective("j", "loss", 0.5)
        metrics.record_best_objective("j", "loss", 0.4)
    assert metrics._state["broken"] is True
    assert sum("metrics are off" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------------------------------
# A real head node, a real search, a real scrape
# ---------------------------------------------------------------------------------------
DRIVER = r"""
import json, os, select, sys
from warmtune.runner import run_job
from warmtune.spec import job_from_dict

root = sys.argv[1]
space = {
    "x": {"type": "float", "low": 0, "high": 1},
    "y": {"type": "float", "low": 0.01, "high": 1, "log": True},
}
common = {
    "trainable": {"name": "quadratic"},
    "space": space,
    "objective": {"metric": "loss", "mode": "min"},
    "storage": os.path.join(root, "results"),
}
address = os.environ["RAY_ADDRESS"]
for k in range(2):  # two past tasks, so the warm start has something to weigh
    past = dict(common, name=f"metrics-past{k}", task={"name": f"bowl-{k}"}, seed=k,
                budget={"trials": 10, "max_iterations": 1},
                knowledge_base={"path": os.path.join(root, "kb")})
    run_job(job_from_dict(past), address=address, progress=False)
# Slow trials (1 s per iteration), so that the test sees the job running.
new = dict(common, name="metrics-bohb", task={"name": "bowl-new"}, searcher={"name": "bohb"},
           trainable={"name": "quadratic", "params": {"sleep_s": 1.0}},
           budget={"trials": 4, "max_iterations": 3}, max_concurrency=1,
           knowledge_base={"path": os.path.join(root, "kb"), "add": False})
summary = run_job(job_from_dict(new), address=address, progress=False)
with open(os.path.join(root, "ready.tmp"), "w") as f:
    json.dump({"best": summary.best["loss"], "n_trials": summary.n_trials}, f)
os.replace(os.path.join(root, "ready.tmp"), os.path.join(root, "ready.json"))
# Ray drops gauges that are not set again; keep the finished job's final values
# exported until the test has scraped them (it closes stdin).
from warmtune.cluster.metrics import refresh_gauges
while not select.select([sys.stdin], [], [], 0.5)[0]:
    refresh_gauges("metrics-bohb")
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _session_pids(sid: int) -> list[int]:
    """Processes in session ``sid`` (the `ray start` this test launched and its children)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # state ppid pgrp session ...
            pids.append(int(stat.parent.name))
    return pids


def _scrape(port: int) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_warmtune_"):
                samples.setdefault(sample.name, []).append(sample)
    return samples


@pytest.mark.slow
@pytest.mark.skipif(not RAY_BIN.exists(), reason="the `ray` command is not installed")
def test_a_search_on_a_ray_start_cluster_exports_warmtune_metrics_to_prometheus(tmp_path):
    (gcs, nm, om, client, dash, agent_http, agent_grpc, runtime_env, prom) = _free_ports(9)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        # Ship metrics every second instead of every ten, so the scrape comes sooner.
        "RAY_metrics_report_interval_ms": "1000",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    # Ray's socket paths must stay short: a temp dir under /tmp, not pytest's tmp_path.
    ray_tmp = tempfile.mkdtemp(prefix="wt-ray-", dir="/tmp")
    head_log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(
        [
            str(RAY_BIN),
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            "--num-gpus=0",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            f"--node-manager-port={nm}",
            f"--object-manager-port={om}",
            f"--ray-client-server-port={client}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={prom}",
            f"--temp-dir={ray_tmp}",
            "--disable-usage-stats",
        ],  # fmt: skip
        env=env,
        stdout=head_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own session: stopped below without `ray stop`
    )
    driver = None
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (tmp_path / "head.log").read_text():
            assert head.poll() is None, (tmp_path / "head.log").read_text()
            assert time.monotonic() < deadline, "ray start did not come up in 90 s"
            time.sleep(0.5)

        # Token auth is on: the dashboard refuses a client without the token.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/jobs/", timeout=10)
        assert refused.value.code in (401, 403)

        script = tmp_path / "driver.py"
        script.write_text(DRIVER)
        driver = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)],
            env={**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "driver.log").open("w"),
            text=True,
        )

        def ours(name: str, job: str = "metrics-bohb") -> list:
            return [s for s in samples.get(name, []) if s.labels.get("job") == job]

        # While the search runs, the trial gauge is live on the node's metrics port.
        ready = tmp_path / "ready.json"
        running_seen = 0.0
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the driver did not finish in 240 s"
            samples = _scrape(prom)
            for s in ours("ray_warmtune_trials"):
                if s.labels["state"] == "running":
                    running_seen = max(running_seen, s.value)
            time.sleep(0.5)
        assert running_seen >= 1.0
        summary = json.loads(ready.read_text())

        deadline = time.monotonic() + 60
        while True:
            samples = _scrape(prom)
            states = {s.labels["state"]: s.value for s in ours("ray_warmtune_trials")}
            if states.get("terminated") == summary["n_trials"] and ours(
                "ray_warmtune_kb_top_weight"
            ):
                break
            assert time.monotonic() < deadline, f"metrics incomplete after 60 s: {samples}"
            time.sleep(1)

        assert summary["n_trials"] == 4
        assert states == {"pending": 0, "running": 0, "paused": 0, "terminated": 4, "error": 0}
        (best,) = ours("ray_warmtune_best_objective")
        assert best.labels["metric"] == "loss"
        assert best.value == pytest.approx(summary["best"])
        (count,) = ours("ray_warmtune_suggest_latency_seconds_count")
        assert count.labels["searcher"] == "bohb" and count.value >= 4
        buckets = ours("ray_warmtune_suggest_latency_seconds_bucket")
        assert {float(b.labels["le"]) for b in buckets} == {
            *metrics.SUGGEST_LATENCY_BOUNDARIES,
            float("inf"),
        }
        top = ours("ray_warmtune_kb_top_weight")
        assert {s.labels["task"] for s in top} <= {"bowl-0", "bowl-1"}
        assert all(0.0 <= s.value <= 1.0 for s in top)
        assert sum(s.value > 0 for s in top) <= 1
        # The cold past jobs: random search, timed under their own job names.
        (past,) = ours("ray_warmtune_suggest_latency_seconds_count", job="metrics-past0")
        assert past.labels["searcher"] == "random" and past.value >= 10
        assert not ours("ray_warmtune_kb_top_weight", job="metrics-past0")
        # Ray adds its own labels; the node is this machine.
        assert {"SessionName", "NodeAddress", "WorkerId"} <= set(best.labels)
    finally:
        if driver is not None:
            driver.communicate(timeout=60)
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its processes
        try:
            head.wait(timeout=60)
        finally:
            for pid in _session_pids(head.pid):
                os.kill(pid, signal.SIGKILL)
            head_log.close()
            shutil.rmtree(ray_tmp, ignore_errors=True)
