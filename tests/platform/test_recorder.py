"""ResultRecorder: result rows, buffering and flushing, state, and one real Tune run."""

from __future__ import annotations

import pickle
import socket
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from warmtune.recorder import ResultRecorder, result_to_row
from warmtune.store import ResultStore, configs

LOSS = {1: 0.1, "a": 0.2, None: 0.3}


def _train(config):
    from ray import tune

    for i in range(3):
        tune.report({"loss": LOSS[config["cat"]] * (i + 1), "step_note": f"it{i}"})


def _ray_result(trial_id: str, iteration: int, **metrics) -> dict:
    """A result dict shaped like the one Tune hands to ``on_trial_result``."""
    return {
        **metrics,
        "timestamp": 1_700_000_000 + iteration,
        "checkpoint_dir_name": None,
        "should_checkpoint": False,
        "done": False,
        "training_iteration": iteration,
        "trial_id": trial_id,
        "date": "2025-01-01_00-00-00",
        "time_this_iter_s": 0.1,
        "time_total_s": 0.1 * iteration,
        "pid": 123,
        "hostname": "host",
        "node_ip": "10.0.0.1",
        "config": {"lr": 0.1, "cat": "a"},
        "time_since_restore": 0.1,
        "iterations_since_restore": iteration,
        "timesteps_total": None,
        "episodes_total": None,
        "experiment_tag": "0_lr=0.1",
    }


def _trial(trial_id: str = "t0", status: str = "RUNNING"):
    return SimpleNamespace(trial_id=trial_id, status=status)


def test_result_to_row_keeps_standard_columns_and_metrics():
    result = _ray_result(
        "t0", 2, loss=np.float32(0.5), ok=True, note="x", val={"acc": 0.9}, hist=[1, 2]
    )
    row = result_to_row(result, job="j", status="RUNNING")
    assert row == {
        "job": "j",
        "trial_id": "t0",
        "training_iteration": 2,
        "timestamp": 1_700_000_002.0,
        "time_total_s": 0.2,
        "node_ip": "10.0.0.1",
        "hostname": "host",
        "pid": 123,
        "status": "RUNNING",
        "loss": 0.5,
        "ok": True,
        "note": "x",
        "val/acc": 0.9,
        "config": {"lr": 0.1, "cat": "a"},
    }
    assert type(row["loss"]) is float
    assert type(row["timestamp"]) is float


def test_buffer_flushes_when_full_and_at_trial_end(tmp_path):
    store = ResultStore(tmp_path)
    rec = ResultRecorder(store, job="j", flush_interval_s=3600, max_buffer=3)
    for i in range(1, 3):
        rec.on_trial_result(i, [], _trial(), _ray_result("t0", i, loss=1.0))
    assert store.files() == []
    rec.on_trial_result(3, [], _trial(), _ray_result("t0", 3, loss=1.0))
    assert len(store.files()) == 1
    rec.on_trial_result(4, [], _trial(), _ray_result("t0", 4, loss=1.0))
    rec.on_trial_complete(4, [], _trial(status="TERMINATED"))
    assert len(store.files()) == 2
    rec.on_experiment_end([])  # nothing buffered: no empty file
    assert len(store.files()) == 2
    assert store.read().training_iteration.tolist() == [1, 2, 3, 4]


def test_buffer_flushes_when_old(tmp_path):
    store = ResultStore(tmp_path)
    rec = ResultRecorder(store, job="j", flush_interval_s=0, max_buffer=100)
    rec.on_trial_result(1, [], _trial(), _ray_result("t0", 1, loss=1.0))
    assert len(store.files()) == 1


def test_state_and_pickle(tmp_path):
    store = ResultStore(tmp_path)
    rec = ResultRecorder(store, job="j", flush_interval_s=3600)
    rec.on_trial_result(1, [], _trial(), _ray_result("t0", 1, loss=1.0))

    copy = pickle.loads(pickle.dumps(rec))
    assert (copy.store.path, copy.job) == (store.path, "j")
    copy.on_experiment_end([])  # a pickled copy never re-writes the original's buffer
    assert store.files() == []

    state = rec.get_state()  # Tune checkpoints the experiment: buffer goes to the store
    assert state == {"store": store.path, "job": "j"}
    assert len(store.read()) == 1
    pickle.dumps(state)

    restored = ResultRecorder(ResultStore(tmp_path), job="j")
    restored.set_state(state)
    with pytest.warns(UserWarning, match="Pass the original store path and job"):
        ResultRecorder(store, job="other").set_state(state)


def test_bad_arguments_raise_value_error(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(ValueError, match="ResultStore"):
        ResultRecorder(str(tmp_path), job="j")
    with pytest.raises(ValueError, match="job"):
        ResultRecorder(store, job="")
    with pytest.raises(ValueError, match="max_buffer"):
        ResultRecorder(store, job="j", max_buffer=0)
    with pytest.raises(ValueError, match="flush_interval_s"):
        ResultRecorder(store, job="j", flush_interval_s=-1)
    with pytest.raises(ValueError, match="^ends must be a ResultStore or None, got str"):
        ResultRecorder(store, job="j", ends=str(tmp_path / "ends"))


def test_records_a_real_tune_run(ray_session, tmp_path):
    from ray import tune

    store = ResultStore(tmp_path / "results")
    # A long interval and a big buffer: every row must still arrive via the end hooks.
    recorder = ResultRecorder(store, job="rec-job", flush_interval_s=3600, max_buffer=1000)
    tuner = tune.Tuner(
        _train,
        param_space={"cat": tune.grid_search([1, "a", None]), "lr": 0.1},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="rec", callbacks=[recorder], verbose=0
        ),
    )
    results = tuner.fit()
    assert not results.errors

    df = store.read()
    trial_ids = sorted(r.metrics["trial_id"] for r in results)
    assert len(df) == 9
    assert sorted(df.trial_id.unique()) == trial_ids
    assert (df.job == "rec-job").all()
    by_trial = df.groupby("trial_id").training_iteration.apply(list).to_dict()
    assert by_trial == {t: [1, 2, 3] for t in trial_ids}
    for cfg, it, loss in zip(configs(df), df.training_iteration, df.loss, strict=True):
        assert cfg["lr"] == 0.1
        assert loss == pytest.approx(LOSS[cfg["cat"]] * it)
    assert Counter(c["cat"] for c in configs(df)) == {1: 3, "a": 3, None: 3}
    # Trials run concurrently, so rows interleave; each row still matches its iteration.
    assert df.step_note.tolist() == [f"it{i - 1}" for i in df.training_iteration]
    assert df.hostname.eq(socket.gethostname()).all()
    assert df.node_ip.notna().all() and df.pid.gt(0).all()
    assert df.timestamp.dtype == "float64" and df.timestamp.gt(1e9).all()
    assert df.time_total_s.ge(0).all()
    assert df.status.eq("RUNNING").all()
    assert set(df.columns).isdisjoint({"done", "date", "time_this_iter_s", "experiment_tag"})
