"""The Grafana dashboard's queries, run: a real Prometheus scrapes a local cluster
(cluster/local/start.sh: a head and one worker node) through the service-discovery
file Ray writes, and every panel's PromQL in ``cluster/grafana/warmtune-dashboard.json``
is sent to Prometheus's HTTP API while a warmtune search runs on the cluster.

Prometheus comes from the Debian package (``.ci/run`` installs it as it installs
Chromium); without it the test skips. Two scrape pools read the same file, as the
dashboard's ``Job label`` variable allows: one with ``honor_labels: true`` (the
warmtune job name stays ``job``) and one as Ray's generated ``prometheus.yml`` (it
becomes ``exported_job``). Each panel must return data under both.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.cluster.helpers import BIN, BOWL_JOB, dashboard_api, user_env
from warmtune.knowledge import KnowledgeBase

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "cluster" / "grafana" / "warmtune-dashboard.json"
PROMETHEUS = shutil.which("prometheus")
SD_FILE = "prom_metrics_service_discovery.json"
JOB = "prom-bowl"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="no prometheus on PATH: install it (Debian: `apt-get install -y prometheus`) "
        "to run the Grafana dashboard's queries against a cluster",
    ),
]

# The Grafana dashboard's default for $__rate_interval: at least four scrape intervals
# of the data source, whose scrape interval is 15 s unless set.
RATE_INTERVAL = "1m"

# A search long enough to be seen running (8 trials of 3 s, two at a time), with BOHB
# warm-started from a knowledge base, so that every warmtune metric is recorded.
SEARCH: dict[str, Any] = {
    **BOWL_JOB,
    "name": JOB,
    "task": {"name": "bowl-new"},
    "searcher": {"name": "bohb"},
    "budget": {"trials": 8, "max_iterations": 3},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill_knowledge_base(path: Path) -> None:
    """Two past tasks on the job's space, so that BOHB's warm start weighs them."""
    kb = KnowledgeBase(path)
    rows = []
    for k, centre in enumerate([(0.3, 0.3), (0.7, 0.6)]):
        for i in range(12):
            x, y = (i % 4) / 3, (i // 4) / 2
            rows.append({
                "task": f"bowl-past{k}", "space": SEARCH["space"],
                "config": {"x": x, "y": y}, "budget": 3, "max_budget": 3,
                "value": (x - centre[0]) ** 2 + (y - centre[1]) ** 2,
                "metric": "loss", "mode": "min", "job": f"past{k}", "trial_id": str(i),
            })  # fmt: skip
    kb.add_observations(rows)


@dataclass(frozen=True)
class Prometheus:
    url: str
    sd_file: Path

    def get(self, path: str, **params: Any) -> Any:
        r = requests.get(self.url + path, params=params, timeout=10)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        return data["result"]


@dataclass(frozen=True)
class Cluster:
    address: str
    dashboard: str
    dir: Path
    token_file: Path
    env: dict[str, str]

    def api(self, path: str) -> Any:
        return dashboard_api(self.dashboard, self.token_file.read_text().strip(), path)


@pytest.fixture(scope="module")
def prometheus_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, start_cluster, prometheus_port) -> Cluster:
    """A head (0 CPUs) and one worker node (2 CPUs). Metrics are shipped every second
    (instead of every ten), and the head's dashboard is told where Prometheus is."""
    home = tmp_path_factory.mktemp("prometheus-cluster")
    token_file = home / "auth_token"  # start.sh creates it
    env = user_env(
        RAY_AUTH_TOKEN_PATH=str(token_file),
        XDG_CACHE_HOME=str(home / "cache"),
        RAY_metrics_report_interval_ms="1000",
        RAY_PROMETHEUS_HOST=f"http://127.0.0.1:{prometheus_port}",
    )
    ray_dir, info = start_cluster(env=env, workers=1, cpus_per_worker=2, prefix="wt-prom-")
    return Cluster(info["RAY_ADDRESS"], info["WARMTUNE_DASHBOARD"], ray_dir, token_file, env)


@pytest.fixture(scope="module")
def prometheus(cluster, prometheus_port, tmp_path_factory) -> Iterator[Prometheus]:
    """Prometheus on 127.0.0.1, scraping every second the targets of the head's
    service-discovery file; stopped by its pid."""
    home = tmp_path_factory.mktemp("prometheus")
    # The head writes the file into its session dir every 5 s (and links it from the
    # temp dir); the session dir is the file's real home, watched for changes.
    sd_file = cluster.dir / "session_latest" / SD_FILE
    deadline = time.monotonic() + 30
    while not sd_file.exists():
        assert time.monotonic() < deadline, f"Ray wrote no {sd_file} in 30 s"
        time.sleep(0.5)
    sd = {"files": [str(sd_file)], "refresh_interval": "5s"}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "ray", "honor_labels": True, "file_sd_configs": [sd]},
            {
                # As Ray's own prometheus.yml (no honor_labels), for warmtune's metrics
                # only, under a job label of its own: the same series would clash.
                "job_name": "ray-exported",
                "file_sd_configs": [sd],
                "relabel_configs": [{"target_label": "job", "replacement": "ray-exported"}],
                "metric_relabel_configs": [
                    {"source_labels": ["__name__"], "regex": "ray_warmtune_.*", "action": "keep"}
                ],
            },
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (home / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{prometheus_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (home / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus was not ready in 30 s"
            try:
                if requests.get(url + "/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        yield Prometheus(url, sd_file)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def _substitute(expr: str, **values: str) -> str:
    """Grafana's variable interpolation: ``$name`` and ``${name}``; an unknown variable
    fails, so that a new one in the dashboard is noticed here."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in values, f"the dashboard uses ${name}; give it a value in this test"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def _has_data(result: list[dict[str, Any]]) -> bool:
    """A panel draws something: some series has a number (not NaN)."""
    return any(math.isfinite(float(s["value"][1])) for s in result)


def test_prometheus_scrapes_every_node_it_finds_in_rays_service_discovery_file(cluster, prometheus):
    nodes = cluster.api("/api/v0/nodes?detail=1")["data"]["result"]["result"]
    alive = sum(n["state"] == "ALIVE" for n in nodes)
    assert alive == 2
    # The head rewrites the file every 5 s as nodes join; besides the nodes' metrics
    # export ports it lists the head's dashboard and autoscaler metrics servers
    # (start.sh puts them on --base-port + 7 and + 8). Each raylet's own
    # metrics (ray_resources) must come from a listed address, whatever address the
    # node has, and be scraped by both pools.
    pools = ("ray", "ray-exported")
    deadline = time.monotonic() + 45
    while True:
        (group,) = json.loads(prometheus.sd_file.read_text())
        listed = {(pool, target) for pool in pools for target in group["targets"]}
        targets = prometheus.get("/api/v1/targets", state="active")["activeTargets"]
        found = {(t["scrapePool"], t["labels"]["instance"]) for t in targets}
        up = {(t["scrapePool"], t["labels"]["instance"]) for t in targets if t["health"] == "up"}
        raylets = {r["metric"]["instance"] for r in prometheus.query("ray_resources")}
        exports = {(pool, raylet) for pool in pools for raylet in raylets}
        if found == listed and len(raylets) == alive and exports <= up & listed:
            break
        assert time.monotonic() < deadline, f"after 45 s: {listed=} {targets=} {raylets=}"
        time.sleep(1)


def test_the_ray_dashboard_reaches_prometheus_at_RAY_PROMETHEUS_HOST(cluster, prometheus):
    health = cluster.api("/api/prometheus_health")
    assert health["result"] is True, health


def test_every_dashboard_panel_returns_data_for_a_running_job(cluster, prometheus, tmp_path):
    queries = _panel_queries()
    assert len(queries) >= 7  # 4 panels; the latency panel has 4 queries
    # The values Grafana gives the dashboard's variables: either job label it offers,
    # and for $job this job alone or All (the variable's allValue, its default).
    choices = [
        {"job_label": label, "job": job, "__rate_interval": RATE_INTERVAL}
        for label in ("job", "exported_job")
        for job in (JOB, ".+")
    ]
    pending = {
        f"{title} with {v['job_label']}=~{v['job']!r}": _substitute(expr, **v)
        for v in choices
        for title, expr in queries
    }
    unlisted = {"job", "exported_job"}  # $job's options not yet listing this job
    running_seen = False

    _fill_knowledge_base(tmp_path / "kb")
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        yaml.safe_dump({**SEARCH, "knowledge_base": {"path": str(tmp_path / "kb"), "add": False}})
    )
    driver_log = tmp_path / "driver.log"
    start = time.monotonic()
    with driver_log.open("w") as log:
        driver = subprocess.Popen(
            [str(BIN / "warmtune"), "run", str(job_file), "--address", cluster.address,
             "--storage", str(tmp_path / "results"), "--quiet"],
            env=cluster.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        while pending or unlisted or not running_seen:
            assert driver.poll() is None, (
                f"the search ended before these returned data: {sorted(pending)}, "
                f"$job options by {sorted(unlisted)}, a running trial ({running_seen=}); "
                f"driver output:\n{driver_log.read_text()[-3000:]}"
            )
            assert time.monotonic() - start < 150, f"no data after 150 s: {sorted(pending)}"
            for label in list(unlisted):
                # label_values(ray_warmtune_trials, ${job_label}), as Grafana asks it.
                options = prometheus.get(
                    f"/api/v1/label/{label}/values", **{"match[]": "ray_warmtune_trials"}
                )
                if JOB in options:
                    unlisted.remove(label)
            for key, promql in list(pending.items()):
                if _has_data(prometheus.query(promql)):
                    del pending[key]
            running_seen = running_seen or bool(
                prometheus.query(f'ray_warmtune_trials{{job="{JOB}", state="running"}} > 0')
            )
            time.sleep(1)
        seen_after = time.monotonic() - start
        assert driver.wait(timeout=120) == 0, driver_log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.terminate()
            driver.wait(timeout=60)
    print(
        f"every panel had data {seen_after:.1f}s into the search, "
        f"which took {time.monotonic() - start:.1f}s"
    )
