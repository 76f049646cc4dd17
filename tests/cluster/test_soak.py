"""The soak of ``cluster/local/soak.py``, short: two jobs on one knowledge base on a
local cluster (a head and two one-CPU worker nodes) while worker nodes are SIGKILLed
and started again, the main job's driver is SIGKILLed and resumed, and the head dies
with the drivers and the cluster is started again. The recorded 10-minute run is in
docs/cluster.md."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pytest

from tests.cluster.helpers import soak

pytestmark = pytest.mark.slow


def test_a_search_under_repeated_faults_loses_nothing(tmp_path):
    # The soak runs its drivers and the cluster in a user's environment of its own
    # (a private $HOME with the token, no RAY_* variable).
    plan = soak.Plan(
        workers=2, trials=10, iterations=6, sleep_s=1.0,
        second_trials=4, second_iterations=3, second_start_s=5,
        kill_every_s=15, node_down_s=3, driver_kill_s=15, head_kill_s=35, timeout_s=400,
    )  # fmt: skip
    run = soak.Soak(plan, tmp_path, log=print)
    try:
        run.start_cluster()
        jobs, report = run.run(faults=True, tag="faults")
        report = soak.check(jobs, report)
    finally:
        run.stop_cluster()
        shutil.rmtree(run.dir, ignore_errors=True)
    print(json.dumps(asdict(report), indent=1))
    kinds = [f["kind"] for f in report.faults]
    assert kinds.count("driver SIGKILL") == 1 and "cluster restarted" in kinds
    assert kinds.count("worker node SIGKILL") >= 2
    for name, job in report.jobs.items():
        assert job.trials_finished == (plan.trials if name == "main" else plan.second_trials)
        assert job.rows_lost == 0 and job.rows_found == job.rows_expected > 0, job
        # A node's trials continue from the checkpoint of their last reported
        # iteration: nothing reported runs again because a node died.
        assert job.rerun.get("worker node SIGKILL", 0) == job.rerun.get("none", 0) == 0, job
        assert job.kb_matches_store and job.kb_rows >= job.rows_found, job
    assert report.configs_match_searcher and report.searcher_state_matches
