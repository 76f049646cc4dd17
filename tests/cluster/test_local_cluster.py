"""A real multi-node Ray cluster on this machine (cluster/local/start.sh: a head and two
worker nodes, each its own raylet), driven only through warmtune's Jobs API commands
and HTTP, never an in-process Ray (the session's embedded Ray fixture is not used).

Token authentication is on; the cluster's token lives in a file of its own
(``RAY_AUTH_TOKEN_PATH``), so these tests never touch ~/.ray/auth_token.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner

from tests.cluster.helpers import BIN, BOWL_JOB, dashboard_api, user_env
from tests.cluster.sockets import listening_sockets
from warmtune.cli import main
from warmtune.cluster.jobs_api import dashboard_address
from warmtune.cluster.submit import CodeBundle, package_code, prepare_submission
from warmtune.store import ResultStore

REPO = Path(__file__).resolve().parents[2]
STOP = REPO / "cluster" / "local" / "stop.sh"


@dataclass(frozen=True)
class Cluster:
    dashboard: str
    address: str
    dir: Path
    token_file: Path
    storage: Path
    env: dict[str, str]

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def api(self, path: str) -> dict:
        return dashboard_api(self.dashboard, self.token(), path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, start_cluster):
    home = tmp_path_factory.mktemp("cluster")
    token_file = home / "auth_token"
    # As `ray get-auth-token --generate` leaves it: readable by everyone. start.sh must
    # make it private (test_the_token_file_is_private).
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o644)
    env = user_env(RAY_AUTH_TOKEN_PATH=str(token_file))
    ray_dir, info = start_cluster(env=env, workers=2, cpus_per_worker=1)
    return Cluster(
        dashboard=info["WARMTUNE_DASHBOARD"],
        address=info["RAY_ADDRESS"],
        dir=ray_dir,
        token_file=token_file,
        storage=home / "shared-results",
        env=env,
    )


@pytest.fixture(scope="module")
def cli(cluster, tmp_path_factory):
    """Run a warmtune command as a user of the cluster: its token, a private code cache."""
    cache = tmp_path_factory.mktemp("xdg-cache")

    def run(*args: str, **env: str | None):
        full = {
            "RAY_AUTH_TOKEN": None,
            "RAY_ADDRESS": None,
            "RAY_API_SERVER_ADDRESS": None,
            "RAY_AUTH_TOKEN_PATH": str(cluster.token_file),
            "XDG_CACHE_HOME": str(cache),
            **env,
        }
        return CliRunner().invoke(main, list(args), env=full, catch_exceptions=False)

    return run


@pytest.fixture(scope="module")
def finished_search(cluster, cli, tmp_path_factory):
    """The bowl search, submitted with --wait; (submission id, output)."""
    job_file = tmp_path_factory.mktemp("job") / "bowl.yaml"
    job_file.write_text(yaml.safe_dump(BOWL_JOB))
    start = time.monotonic()
    result = cli(
        "submit", str(job_file), "--address", cluster.dashboard, "--storage", str(cluster.storage),
        "--wait",
    )  # fmt: skip
    took = time.monotonic() - start
    assert result.exit_code == 0, result.output
    submission_id = next(
        w for line in result.output.splitlines() for w in line.split() if w.startswith("warmtune-")
    )
    print(f"submit --wait took {took:.1f}s")
    return submission_id, result.output


@pytest.mark.slow
def test_cluster_has_a_head_and_two_worker_nodes_on_this_machine(cluster):
    nodes = cluster.api("/api/v0/nodes?detail=1")["data"]["result"]["result"]
    alive = [n for n in nodes if n["state"] == "ALIVE"]
    assert len(alive) == 3
    assert len({n["node_id"] for n in alive}) == 3
    assert len({n["node_ip"] for n in alive}) == 1  # one machine
    workers = [n for n in alive if not n["is_head_node"]]
    assert sorted(k for n in workers for k in n["resources_total"] if k.startswith("node_")) == [
        "node_1",
        "node_2",
    ]
    assert all(n["resources_total"]["CPU"] == 1 for n in workers)


@pytest.mark.slow
def test_submitted_search_runs_its_trials_on_two_worker_nodes(cluster, cli, finished_search):
    submission_id, output = finished_search
    assert "SUCCEEDED" in output and "this warmtune as a wheel" in output

    # Results, read from the storage the cluster wrote to.
    result = cli("results", "bowl", "--storage", str(cluster.storage), "--format", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 4
    rows = ResultStore(str(cluster.storage / "bowl" / "warmtune" / "results")).read()
    assert len(rows) == 4 * 3

    # Where the trials ran: the result rows carry the pid of the process that ran each
    # trial; the cluster's actor table says which node each Tune trial actor lived on.
    jobs = cluster.api("/api/jobs/")
    (job,) = [j for j in jobs if j["submission_id"] == submission_id]
    actors = cluster.api("/api/v0/actors?detail=1&limit=10000")["data"]["result"]["result"]
    trial_actors = {
        a["pid"]: a["node_id"]
        for a in actors
        if a["job_id"] == job["job_id"] and "ImplicitFunc" in a["class_name"]
    }
    nodes = cluster.api("/api/v0/nodes?detail=1")["data"]["result"]["result"]
    worker_ids = {n["node_id"] for n in nodes if not n["is_head_node"]}
    trial_nodes = {trial_actors[int(pid)] for pid in rows["pid"].unique()}
    assert trial_nodes == worker_ids  # both worker nodes, never the head (0 CPUs)

    # The job ran the shipped wheel, not the repository: its runtime env has py_modules.
    assert len(job["runtime_env"]["py_modules"]) == 2
    assert job["metadata"]["warmtune_version"] and job["metadata"]["searcher"] == "random"


@pytest.mark.slow
def test_jobs_status_and_logs(cluster, cli, finished_search):
    submission_id, _ = finished_search
    listed = cli("jobs", "--address", cluster.dashboard)
    assert listed.exit_code == 0, listed.output
    (line,) = [ln for ln in listed.output.splitlines() if ln.startswith(submission_id)]
    assert line.split()[1:5] == ["SUCCEEDED", "bowl", "bowl", "random"]

    status = cli("status", submission_id, "--address", cluster.dashboard)
    assert status.exit_code == 0, status.output
    assert f"{submission_id}: SUCCEEDED" in status.output
    assert "warmtune_version:" in status.output and "trainable:  quadratic" in status.output
    # A warmtune job name finds its latest submission.
    by_name = cli("status", "bowl", "--address", cluster.dashboard)
    assert by_name.output.splitlines()[0] == f"{submission_id}: SUCCEEDED"

    logs = cli("logs", submission_id, "--address", cluster.dashboard)
    assert logs.exit_code == 0
    assert "warmtune: job 'bowl' finished in" in logs.output
    assert "4 trials, 0 failed" in logs.output

    missing = cli("status", "no-such-job", "--address", cluster.dashboard)
    assert missing.exit_code == 2 and "warmtune jobs" in missing.output


@pytest.mark.slow
def test_follow_then_stop_a_running_job(cluster, cli, tmp_path):
    long_job = {
        **BOWL_JOB,
        "name": "long",
        "trainable": {"name": "quadratic", "params": {"sleep_s": 1.0}},
        "budget": {"trials": 2, "max_iterations": 60},
    }
    job_file = tmp_path / "long.yaml"
    job_file.write_text(yaml.safe_dump(long_job))
    submitted = cli(
        "submit", str(job_file), "--address", cluster.dashboard, "--storage", str(cluster.storage)
    )
    assert submitted.exit_code == 0, submitted.output
    sid = next(w for w in submitted.output.split() if w.startswith("warmtune-long-"))

    follower = subprocess.Popen(
        [str(BIN / "warmtune"), "logs", sid, "--follow", "--address", cluster.dashboard],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = cli("logs", sid, "--address", cluster.dashboard).output
        if "best loss" in out:  # a progress line after the first result
            break
        time.sleep(1)
    else:
        pytest.fail(f"job {sid} never reported progress:\n{out}")

    stopped = cli("stop", sid, "--wait", "--address", cluster.dashboard)
    assert stopped.exit_code == 0, stopped.output
    assert f"job {sid} is STOPPED" in stopped.output
    try:
        followed, _ = follower.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        follower.kill()
        pytest.fail("logs --follow did not return when the job stopped")
    assert follower.returncode == 0, followed
    assert "trials:" in followed  # it printed while the job ran
    again = cli("stop", sid, "--address", cluster.dashboard)
    assert "had already ended (STOPPED)" in again.output
    # The stop was a Ctrl+C (RAY_JOB_STOP_SIGNAL=SIGINT), not a kill: Tune saved the
    # experiment, the run printed its summary, and the recorder wrote what it held.
    out = cli("logs", sid, "--address", cluster.dashboard).output
    assert "Stop signal received" in out and "most recent state was saved" in out, out
    assert "warmtune: results written to" in out
    # The job's own log says how to continue it: by submitting it again, not `run`.
    assert (
        f"continue it with: warmtune submit JOB.yaml --resume --name long --storage "
        f"{cluster.storage} --address {cluster.dashboard}"
    ) in out, out
    rows = ResultStore(str(cluster.storage / "long" / "warmtune" / "results")).read()
    reached = rows.groupby("trial_id")["training_iteration"].max()
    assert len(reached) == 2 and (reached >= 1).all() and (reached < 60).all()


@pytest.mark.slow
def test_wrong_or_missing_token_is_refused_with_what_to_do(cluster, cli, tmp_path):
    job_file = tmp_path / "bowl.yaml"
    job_file.write_text(yaml.safe_dump({**BOWL_JOB, "name": "refused"}))
    before = len(cluster.api("/api/jobs/"))

    wrong = cli("submit", str(job_file), "--address", cluster.dashboard, RAY_AUTH_TOKEN="garbage")
    assert wrong.exit_code == 2
    assert "refused the token from $RAY_AUTH_TOKEN (HTTP 403)" in wrong.output
    assert "ray get-auth-token" in wrong.output and "unset it" in wrong.output

    empty_home = tmp_path / "home"
    empty_home.mkdir()
    missing = cli(
        "submit", str(job_file), "--address", cluster.dashboard,
        RAY_AUTH_TOKEN_PATH=None, HOME=str(empty_home),
    )  # fmt: skip
    assert missing.exit_code == 2
    assert "found no token (HTTP 401)" in missing.output
    assert "~/.ray/auth_token" in missing.output and "RAY_AUTH_TOKEN" in missing.output

    # The refused submissions never reached the cluster.
    assert len(cluster.api("/api/jobs/")) == before
    # Without any header at all, the cluster itself says 401.
    assert requests.get(cluster.dashboard + "/api/jobs/", timeout=10).status_code == 401


@pytest.mark.slow
def test_the_token_file_is_private(cluster):
    assert cluster.token_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_nothing_of_the_cluster_listens_beyond_this_machine(cluster, finished_search):
    """After a search ran (so the nodes' workers, the job driver's supervisor and the
    agents are up), every socket a process of the cluster listens on is a loopback one."""
    assert cluster.address.startswith("127.0.0.1:")
    pids = subprocess.run(
        [str(STOP), "--dir", str(cluster.dir), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    listening = listening_sockets([int(pid) for pid in pids])
    processes = {s.process for s in listening}
    # The GCS, three raylets (two ports each), agents, the dashboard with its Jobs API.
    assert {"gcs_server", "raylet"} <= processes and len(listening) >= 3 * 5 + 2, listening
    assert [str(s) for s in listening if not s.loopback] == []


@pytest.mark.slow
def test_an_explicit_address_beats_ray_address(cluster, cli):
    """Ray's Jobs API client lets $RAY_ADDRESS replace the address it is given; here
    $RAY_ADDRESS holds the GCS address (what `ray start` prints), which is no dashboard."""
    for variable in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        listed = cli("jobs", "--address", cluster.dashboard, **{variable: cluster.address})
        assert listed.exit_code == 0, listed.output
    # Without --address the variable is the address, and the message says so.
    wrong = cli("jobs", RAY_ADDRESS=cluster.address)
    assert wrong.exit_code != 0
    assert "(from $RAY_ADDRESS)" in wrong.output and "when --address is not given" in wrong.output


@pytest.mark.slow
def test_a_second_run_of_a_job_name_is_refused_before_the_upload(
    cluster, cli, finished_search, tmp_path, monkeypatch
):
    import warmtune.cluster.submit

    sid, _ = finished_search
    job_file = tmp_path / "bowl.yaml"
    job_file.write_text(yaml.safe_dump(BOWL_JOB))
    before = len(cluster.api("/api/jobs/"))
    args = ("submit", str(job_file), "--address", cluster.dashboard)
    again = cli(*args, "--storage", str(cluster.storage))
    assert again.exit_code == 2, again.output
    assert f"already has results at {cluster.storage}/bowl; nothing was submitted" in again.output
    assert len(cluster.api("/api/jobs/")) == before

    # Where this machine cannot read the storage, the cluster refuses the run: --wait
    # shows why, and `status NAME` still shows the run that holds the results.
    monkeypatch.setattr(warmtune.cluster.submit, "existing_job", lambda storage, job: None)
    refused = cli(*args, "--storage", str(cluster.storage), "--wait")
    assert refused.exit_code == 1, refused.output
    assert "FAILED" in refused.output and "the end of its output:" in refused.output
    assert "already has results" in refused.output.split("the end of its output:")[1]
    shown = cli("status", "bowl", "--address", cluster.dashboard)
    assert shown.output.startswith(f"{sid}: SUCCEEDED"), shown.output
    assert "refused:    warmtune-bowl-" in shown.output


def test_the_jobs_client_uses_the_address_it_resolved(monkeypatch):
    import ray.job_submission

    from warmtune.cluster.jobs_api import JobsClient

    seen = []

    class Recorder:
        def __init__(self, address, headers):
            seen.append(
                (address, os.environ.get("RAY_ADDRESS"), os.environ.get("RAY_API_SERVER_ADDRESS"))
            )

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", Recorder)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://10.0.0.6:8265")
    client = JobsClient("http://127.0.0.1:8265")
    assert seen == [("http://127.0.0.1:8265", None, None)]  # hidden from Ray's client
    assert os.environ["RAY_ADDRESS"] == "10.0.0.5:6379"  # and back afterwards
    assert client._where() == "http://127.0.0.1:8265"
    from_env = JobsClient(None)
    assert seen[-1] == ("http://10.0.0.6:8265", None, None)
    assert from_env._where() == "http://10.0.0.6:8265 (from $RAY_API_SERVER_ADDRESS)"
    from_env.token, from_env.token_source = "old", "$RAY_AUTH_TOKEN"
    assert "at http://10.0.0.6:8265 (from $RAY_API_SERVER_ADDRESS) refused" in str(
        from_env._auth_error(403)
    )


def test_a_failed_job_shows_the_end_of_its_output(monkeypatch):
    from types import SimpleNamespace

    from warmtune.cli.jobs import FAILED_TAIL_LINES, _finish

    output = "\n".join(f"line {i}" for i in range(40)) + "\nValueError: bad thing\n\n"

    class Client:
        address = "http://127.0.0.1:9"

        def logs(self, submission_id):
            return output

    info = SimpleNamespace(
        status="FAILED", metadata={}, message="Job entrypoint command failed with exit code 1"
    )
    import click

    @click.command()
    def show():
        _finish(Client(), "warmtune-x-1", info)

    result = CliRunner().invoke(show)
    assert result.exit_code == 1
    shown = result.output
    assert "warmtune-x-1 FAILED: Job entrypoint command failed" in shown
    assert "    ValueError: bad thing" in shown and f"line {40 - FAILED_TAIL_LINES + 1}" in shown
    assert f"line {40 - FAILED_TAIL_LINES}\n" not in shown


def test_dashboard_address_follows_rays_cli(monkeypatch):
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    assert dashboard_address(None) == ("http://127.0.0.1:8265", "the default")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:8265")
    assert dashboard_address(None) == ("http://10.0.0.5:8265", "$RAY_ADDRESS")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://ray.example:443/")
    assert dashboard_address(None) == ("https://ray.example:443", "$RAY_API_SERVER_ADDRESS")
    assert dashboard_address("h:1") == ("http://h:1", "--address")


def test_submission_ships_only_the_job_file_and_names_itself(tmp_path):
    import datetime as dt

    job_file = tmp_path / "bowl.yaml"
    job_file.write_text(yaml.safe_dump({**BOWL_JOB, "storage": "rel/results"}))
    code = CodeBundle("installed", "9.9.9")
    sub = prepare_submission(job_file, name="b2", code=code, now=dt.datetime(2026, 1, 2, 3, 4, 5))
    assert sub.submission_id == "warmtune-b2-20260102-030405"
    assert sub.metadata["warmtune_job"] == "b2" and sub.metadata["task"] == "bowl"
    assert sub.metadata["warmtune_version"] == "9.9.9" and sub.metadata["code"] == "installed"
    # A relative storage is made absolute here, where the user meant it.
    assert sub.storage == str(Path("rel/results").resolve())
    assert "--storage " + sub.storage in sub.entrypoint
    assert sub.entrypoint.endswith(
        f"python -m warmtune run job.yaml --address auto --name b2 --storage {sub.storage}"
    )
    # The installed code is checked to be the submitter's version before the run.
    assert "9.9.9" in sub.entrypoint.split(" && ")[0]
    env = sub.runtime_env("/tmp/x")
    assert env["working_dir"] == "/tmp/x" and "py_modules" not in env
    # Stopped, its log names the command that continues it (see the cluster test).
    assert env["env_vars"]["WARMTUNE_RESUME_HINT"] == (
        f"warmtune submit JOB.yaml --resume --name b2 --storage {sub.storage}"
    )
    there = prepare_submission(job_file, code=code, address="http://127.0.0.1:9")
    assert there.env_vars["WARMTUNE_RESUME_HINT"].endswith(" --address http://127.0.0.1:9")
    assert yaml.safe_load(sub.job_text)["name"] == "bowl"  # the file travels as written


def test_installed_code_guard_checks_the_clusters_version(tmp_path):
    import importlib.metadata

    job_file = tmp_path / "bowl.yaml"
    job_file.write_text(yaml.safe_dump(BOWL_JOB))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    for version, ok in ((importlib.metadata.version("warmtune"), True), ("0.0.0", False)):
        sub = prepare_submission(job_file, code=CodeBundle("installed", version))
        guard = sub.entrypoint.split(" && ")[0]
        done = subprocess.run(["bash", "-c", guard], env=env, capture_output=True, text=True)
        assert (done.returncode == 0) is ok, done.stderr
        if not ok:
            assert "submitted by warmtune 0.0.0" in done.stderr
            assert "--code wheel" in done.stderr


def test_wheel_is_built_once_and_imports_without_the_repository(tmp_path):
    import importlib.metadata

    bundle = package_code("wheel", cache_dir=tmp_path / "cache")
    package, dist_info = map(Path, bundle.py_modules)
    assert bundle.wheel is not None and Path(bundle.wheel).name.endswith("-py3-none-any.whl")
    assert bundle.version == importlib.metadata.version("warmtune")
    assert package.name == "warmtune" and (package / "searchers" / "bohb.py").is_file()
    assert dist_info.name == f"warmtune-{bundle.version}.dist-info"
    assert not (package.parent / "platform").exists()
    # The same sources give the same (cached) build.
    again = package_code("wheel", cache_dir=tmp_path / "cache")
    assert again == bundle
    assert len(list((tmp_path / "cache").iterdir())) == 1
    # On a cluster these two folders are on PYTHONPATH: warmtune and its version come
    # from them, and the standard library's platform module is untouched.
    probe = (
        "import importlib.metadata as m, platform, warmtune.cli as c; "
        "print(c.__file__, m.version('warmtune'), platform.system())"
    )
    env = {**os.environ, "PYTHONPATH": f"{package.parent}:{dist_info.parent}"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    where, version, system = done.stdout.split()
    assert where == str(package / "cli" / "__init__.py")
    assert version == bundle.version and system == "Linux"


def test_relative_data_paths_travel_absolute(tmp_path, monkeypatch):
    # The job runs in the cluster's temporary directory, so a path meant relative to
    # where the user submits must not travel relative.
    table = tmp_path / "mine" / "nas-bench-201" / "nats_bench.csv"
    table.parent.mkdir(parents=True)
    table.write_text("ArchitectureString\n")  # validation checks the file is there
    monkeypatch.chdir(tmp_path)
    job_file = tmp_path / "nb.yaml"
    job = {
        "name": "nb",
        "task": {"name": "nb201-cifar10"},
        "trainable": {
            "name": "nb201",
            "params": {"path": "mine/nas-bench-201", "dataset": "cifar10"},
        },
        "objective": {"metric": "accuracy", "mode": "max"},
        "space": {"edge_1_0": {"type": "categorical", "choices": ["none", "skip_connect"]}},
        "budget": {"trials": 1, "max_iterations": 1},
    }
    job_file.write_text(yaml.safe_dump(job))
    sub = prepare_submission(job_file, code=CodeBundle("installed", "9.9.9"))
    shipped = yaml.safe_load(sub.job_text)
    assert shipped["trainable"]["params"]["path"] == str(table.parent.resolve())
    assert {k: v for k, v in shipped.items() if k != "trainable"} == {
        k: v for k, v in job.items() if k != "trainable"
    }
    assert sub.job_text.startswith("# Submitted by warmtune submit; trainable.params path")


def test_dataset_names_travel_as_names(tmp_path, monkeypatch):
    # A name resolves in the data directory of the machine that runs the job, so the
    # cluster's own copy is used, not a path that exists only where the user submits.
    monkeypatch.setenv("WARMTUNE_DATA", str(tmp_path / "data"))
    table = tmp_path / "data" / "nas-bench-201" / "nats_bench.csv"
    table.parent.mkdir(parents=True)
    table.write_text("ArchitectureString\n")  # validation checks the file is there
    job = {
        "name": "nb",
        "task": {"name": "nb201-cifar10"},
        "trainable": {"name": "nb201", "params": {"path": "nb201", "dataset": "cifar10"}},
        "objective": {"metric": "accuracy", "mode": "max"},
        "space": {"edge_1_0": {"type": "categorical", "choices": ["none", "skip_connect"]}},
        "budget": {"trials": 1, "max_iterations": 1},
    }
    job_file = tmp_path / "nb.yaml"
    job_file.write_text(yaml.safe_dump(job))
    sub = prepare_submission(job_file, code=CodeBundle("installed", "9.9.9"))
    assert yaml.safe_load(sub.job_text)["trainable"]["params"]["path"] == "nb201"
    assert not sub.job_text.startswith("# Submitted by warmtune submit")
