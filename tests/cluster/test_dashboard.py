"""The Ray dashboard of a local cluster (cluster/local/start.sh: a head and one worker
node), as a user sees it: a job submitted with ``warmtune submit`` shows in the Jobs
view of a real browser (headless Chromium, logged in with the cluster's token through
the dashboard's own token dialog) with warmtune's metadata, and its trials show in
the cluster's actor table as actors of the trainable.

Screenshots are test artifacts: they go to the test's tmp_path and, when
``$WARMTUNE_ARTIFACTS`` is set, are copied to ``$WARMTUNE_ARTIFACTS/dashboard/``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chromium import Chromium, requires_chromium
from tests.cluster.helpers import BIN, BOWL_JOB, dashboard_api, user_env
from warmtune.store import ResultStore
from warmtune.trainables import resolve_trainable

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cluster:
    dashboard: str
    dir: Path
    token_file: Path
    storage: Path
    env: dict[str, str]

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def api(self, path: str) -> Any:
        return dashboard_api(self.dashboard, self.token(), path)

    def actors(self) -> list[dict[str, Any]]:
        return self.api("/api/v0/actors?detail=1&limit=10000")["data"]["result"]["result"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, start_cluster):
    """A head (0 CPUs) and one worker node (2 CPUs), with its own token file, temp dir
    and ports."""
    home = tmp_path_factory.mktemp("dashboard-cluster")
    token_file = home / "auth_token"
    env = user_env(RAY_AUTH_TOKEN_PATH=str(token_file), XDG_CACHE_HOME=str(home / "cache"))
    ray_dir, info = start_cluster(env=env, workers=1, cpus_per_worker=2)
    return Cluster(info["WARMTUNE_DASHBOARD"], ray_dir, token_file, home / "results", env)


@dataclass(frozen=True)
class Submitted:
    submission_id: str
    job_id: str  # the driver's Ray job id, which the dashboard's URLs use
    output: str
    running_trial_actors: list[dict[str, Any]]  # seen while the job ran


@pytest.fixture(scope="module")
def submitted(cluster, tmp_path_factory):
    """The bowl search, submitted with ``warmtune submit --wait``; while it runs, the
    actor table is read until trial actors are alive."""
    job_file = tmp_path_factory.mktemp("job") / "bowl.yaml"
    job_file.write_text(yaml.safe_dump(BOWL_JOB))
    start = time.monotonic()
    submit = subprocess.Popen(
        [str(BIN / "warmtune"), "submit", str(job_file), "--address", cluster.dashboard,
         "--storage", str(cluster.storage), "--wait"],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    running: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while not running and submit.poll() is None and time.monotonic() < deadline:
            jobs = [j for j in cluster.api("/api/jobs/") if j["metadata"].get("warmtune_job")]
            driver = {j["job_id"] for j in jobs if j.get("job_id")}
            running = [
                a
                for a in cluster.actors()
                if a["job_id"] in driver
                and a["state"] == "ALIVE"
                and a["class_name"] == "ImplicitFunc"
            ]
            time.sleep(0.5)
        output, _ = submit.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()
    print(f"submit --wait took {time.monotonic() - start:.1f}s")
    assert submit.returncode == 0 and "SUCCEEDED" in output, output
    submission_id = next(w for w in output.split() if w.startswith("warmtune-bowl-"))
    (job,) = [j for j in cluster.api("/api/jobs/") if j["submission_id"] == submission_id]
    return Submitted(submission_id, job["job_id"], output, running)


@pytest.mark.slow
def test_trials_show_as_actors_of_the_trainable(cluster, submitted):
    """Ray Tune runs each trial in an actor of class ``ImplicitFunc`` whose repr is the
    trainable function's name. Tune (Ray 2.60) gives them no Ray actor name and reuses
    them across trials, so the dashboard shows the trainable, not the trial id."""
    trainable = resolve_trainable("quadratic").load().__name__
    assert trainable == "train_quadratic"
    nodes = cluster.api("/api/v0/nodes?detail=1")["data"]["result"]["result"]
    (worker,) = [n["node_id"] for n in nodes if not n["is_head_node"]]

    # While the job ran: trial actors alive, named after the trainable, on the worker.
    assert submitted.running_trial_actors, "no trial actor was ever alive while the job ran"
    for actor in submitted.running_trial_actors:
        assert actor["repr_name"] == trainable and actor["node_id"] == worker, actor

    # Afterwards: every process that reported a trial result was one of them.
    rows = ResultStore(str(cluster.storage / "bowl" / "warmtune" / "results")).read()
    assert rows["trial_id"].nunique() == BOWL_JOB["budget"]["trials"]
    of_job = [a for a in cluster.actors() if a["job_id"] == submitted.job_id]
    trial_actors = {a["pid"]: a for a in of_job if a["class_name"] == "ImplicitFunc"}
    assert {int(pid) for pid in rows["pid"].unique()} <= set(trial_actors)
    assert {a["repr_name"] for a in trial_actors.values()} == {trainable}
    summary = sorted({(a["class_name"], a["repr_name"], a["name"]) for a in of_job})
    print(f"actors of job {submitted.job_id} (class, repr, name): {summary}")


# ---------------------------------------------------------------------------------------
# The dashboard in a real browser
# ---------------------------------------------------------------------------------------
needs_chromium = requires_chromium("open the Ray dashboard in a real browser")

_TOKEN_DIALOG = "!!document.querySelector('input[type=password]')"
_SUBMIT_TOKEN = (
    "[...document.querySelectorAll('button')]"
    ".find(b => b.innerText.trim().toUpperCase() === 'SUBMIT').click()"
)
_TABLE_ROWS = (
    "[...document.querySelectorAll('tbody tr')]"
    ".map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()))"
)
# The "Expand" link of the job page's metadata field, which shows all of it.
_EXPAND_METADATA = """(() => {
  const label = [...document.querySelectorAll('*')].find(
    e => e.childElementCount === 0 && e.textContent.trim() === 'User-provided metadata');
  const expand = box => [...box.querySelectorAll('a, button')].find(
    x => x.innerText.trim() === 'Expand');
  let box = label.parentElement;
  while (!expand(box)) box = box.parentElement;
  expand(box).click();
  return true;
})()"""
# The bottom of the lowest thing drawn: a screenshot that tall holds the whole page
# and no empty viewport below it.
_CONTENT_HEIGHT = (
    "Math.ceil(Math.max(...[...document.body.querySelectorAll('*')]"
    ".map(e => e.getBoundingClientRect().bottom + window.scrollY))) + 24"
)


def keep(png: Path) -> None:
    """Copy a screenshot to ``$WARMTUNE_ARTIFACTS/dashboard/`` when that is set."""
    print(f"\ndashboard screenshot: {png}")
    if os.environ.get("WARMTUNE_ARTIFACTS"):
        folder = Path(os.environ["WARMTUNE_ARTIFACTS"], "dashboard")
        folder.mkdir(parents=True, exist_ok=True)
        print(f"dashboard screenshot kept as {shutil.copy2(png, folder / png.name)}")


def shown_metadata(text: str) -> dict[str, Any]:
    """The JSON object shown after the words "User-provided metadata" in ``text``."""
    label = text.index("User-provided metadata")
    found, _ = json.JSONDecoder().raw_decode(text, text.index("{", label))
    return found


@pytest.fixture
def chromium(tmp_path):
    browser = Chromium(tmp_path / "chromium-profile")
    yield browser
    browser.close()


@needs_chromium
@pytest.mark.slow
def test_the_dashboard_shows_the_job_with_its_metadata(cluster, submitted, chromium, tmp_path):
    sid, job_id = submitted.submission_id, submitted.job_id
    width = 1600  # the jobs table is wide; narrower, its right-hand columns scroll away

    # Without the token the dashboard asks for it: its API refuses the page (401).
    chromium.navigate(cluster.dashboard + "/#/jobs", width=width)
    chromium.wait_until(_TOKEN_DIALOG, timeout=30)
    assert "Authentication Token Required" in chromium.evaluate("document.body.innerText")
    assert any(status == 401 for status, _ in chromium.http_errors())
    # Logging in as a user does: the token into the dialog. The dashboard checks it
    # (POST /api/authenticate), keeps it in an HttpOnly cookie and reloads the page.
    logged_in = len(chromium.events)
    chromium.evaluate("document.querySelector('input[type=password]').focus()")
    chromium.call("Input.insertText", {"text": cluster.token()}, session=True)
    chromium.evaluate(_SUBMIT_TOKEN)
    try:
        chromium.wait_for("Page.loadEventFired", timeout=30, since=logged_in)
    except TimeoutError:
        page = chromium.evaluate("document.body.innerText")
        pytest.fail(f"the dashboard did not take the cluster's token; it shows:\n{page[-400:]}")

    # The Jobs view: the submission's row, with the warmtune job name as its Name
    # (the dashboard reads it from the metadata's job_name) and its final status.
    chromium.wait_until(f"document.body.innerText.includes({json.dumps(sid)})", timeout=60)
    cookies = chromium.call("Network.getCookies", {"urls": [cluster.dashboard]}, session=True)
    auth = [c for c in cookies["cookies"] if c["name"] == "ray-authentication-token"]
    assert [c["httpOnly"] for c in auth] == [True]
    (row,) = [r for r in chromium.evaluate(_TABLE_ROWS) if sid in r]
    assert row[:3] == [job_id, "bowl", sid], row
    assert "SUCCEEDED" in row
    jobs_png = tmp_path / "jobs.png"
    chromium.screenshot(jobs_png, width=width, height=chromium.evaluate(_CONTENT_HEIGHT))
    keep(jobs_png)

    # The job's page: its metadata, as warmtune submitted it.
    chromium.navigate(f"{cluster.dashboard}/#/jobs/{job_id}", width=width)
    chromium.wait_until(
        "document.body.innerText.includes('User-provided metadata') && "
        f"document.body.innerText.includes({json.dumps(sid)})",
        timeout=60,
    )
    # The driver's log (loaded on its own), from its first line as `warmtune run`
    # printed it on the cluster; the log view draws only the lines in its window.
    chromium.wait_until(
        "document.body.innerText.includes(\"warmtune: job 'bowl' on Ray at\")", timeout=30
    )
    job_png = tmp_path / "job.png"
    chromium.screenshot(job_png, width=width)
    keep(job_png)
    # The field shows the start of the metadata; its "Expand" opens all of it.
    chromium.viewport(width, 900)
    chromium.evaluate(_EXPAND_METADATA)
    dialog = "document.querySelector('[role=dialog]')"
    chromium.wait_until(f"!!{dialog} && {dialog}.innerText.includes('warmtune_version')")
    chromium.wait_until("document.getAnimations().length === 0")  # the dialog's fade-in
    metadata = shown_metadata(chromium.evaluate(f"{dialog}.innerText"))
    assert metadata["warmtune_version"] == importlib.metadata.version("warmtune")
    assert metadata["job_name"] == metadata["warmtune_job"] == "bowl"
    assert (metadata["searcher"], metadata["trainable"], metadata["task"]) == (
        "random",
        "quadratic",
        "bowl",
    )
    assert metadata["storage"] == str(cluster.storage) and metadata["code"] == "wheel"
    metadata_png = tmp_path / "job-metadata.png"
    chromium.screenshot(metadata_png, width=width, height=900)
    keep(metadata_png)

    # Errors in the browser: ours fail the test (a refused token after logging in, a
    # failed request or message about this job); the dashboard's own (no Prometheus
    # or Grafana here, say) are only reported.
    markers = (sid, job_id, "bowl")
    after = chromium.http_errors(since=logged_in)
    ours = [f"HTTP {s} {u}" for s, u in after if s in (401, 403) or any(m in u for m in markers)]
    ours += [p for p in chromium.problems() if any(m in p for m in markers)]
    theirs = [f"HTTP {s} {u}" for s, u in after if f"HTTP {s} {u}" not in ours]
    theirs += [p for p in chromium.problems(since=logged_in) if p not in ours]
    print("\nthe dashboard's own errors (not failing the test):", *theirs, sep="\n  ")
    assert ours == []
