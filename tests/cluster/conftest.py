"""The local multi-node cluster of ``cluster/local/`` for the cluster tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import soak

REPO = Path(__file__).resolve().parents[2]
START = REPO / "cluster" / "local" / "start.sh"
STOP = REPO / "cluster" / "local" / "stop.sh"

StartCluster = Callable[..., tuple[Path, dict[str, str]]]


@pytest.fixture(scope="module")
def start_cluster() -> Iterator[StartCluster]:
    """Starts local clusters (a head with no CPUs plus worker nodes, on free ports) with
    ``start.sh``; stops each with ``stop.sh`` after the module's tests (never `ray stop`,
    which stops every Ray on the machine) and checks that none of its processes is left.

    Call it as ``start(env=..., workers=N, cpus_per_worker=C, prefix="wt-")``; it returns
    the cluster's Ray temp dir and the variables of its ``cluster.env``.
    """
    started: list[tuple[Path, dict[str, str]]] = []

    def start(
        *, env: dict[str, str], workers: int, cpus_per_worker: int, prefix: str = "wt-"
    ) -> tuple[Path, dict[str, str]]:
        # Ray's Unix socket paths live under the temp dir, so it must be short.
        ray_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        started.append((ray_dir, env))
        for _ in range(3):
            base = soak.free_port_block(20 + 10 * workers)  # GCS, dashboard, then 10 per node
            args = ["--workers", str(workers), "--cpus-per-worker", str(cpus_per_worker)]
            args += ["--head-cpus", "0", "--dir", str(ray_dir), "--port", str(base)]
            args += ["--dashboard-port", str(base + 1), "--base-port", str(base + 10)]
            args += ["--object-store-mb", "100"]
            done = subprocess.run(
                [str(START), *args], env=env, capture_output=True, text=True, timeout=120
            )
            if done.returncode == 0 or "is in use" not in done.stderr:
                break
        assert done.returncode == 0, done.stdout + done.stderr
        return ray_dir, soak.read_cluster_env(ray_dir)

    yield start
    for ray_dir, env in started:
        stopped = subprocess.run(
            [str(STOP), "--dir", str(ray_dir), "--grace-period", "3"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        left = subprocess.run(
            [str(STOP), "--dir", str(ray_dir), "--list"], env=env, capture_output=True, text=True
        ).stdout.split()
        shutil.rmtree(ray_dir, ignore_errors=True)
        assert stopped.returncode == 0 and not left, (stopped.stdout, stopped.stderr, left)
