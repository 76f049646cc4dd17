"""ResultStore: exact round trip, append-only files, concurrent writers, crash safety."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from warmtune.store import STANDARD_COLUMNS, ResultStore, configs

# Child processes run this source via ``exec``: spawned children cannot import this test
# module (pytest's importlib mode keeps the tests folder off sys.path), but ``exec`` is a
# builtin, so it pickles by reference and the child only needs ``warmtune`` installed.
_WRITER = """
from warmtune.store import ResultStore

store = ResultStore(path)
for batch in range(batches):
    store.append(
        [{"trial_id": f"w{writer}", "training_iteration": batch * rows + i, "batch": batch}
         for i in range(rows)]
    )
"""

_CRASHER = """
import os

from warmtune.store import ResultStore

store = ResultStore(path)
store.append([{"trial_id": "first", "training_iteration": i, "loss": 0.5} for i in range(10)])
started.set()
# Few rows with large incompressible payloads: the time goes into writing the file,
# so the kill most likely lands mid-write.
pad = os.urandom(1_500_000).hex()
big = [{"trial_id": "big", "training_iteration": i, "pad": pad} for i in range(20)]
while True:  # keep writing big batches until the parent kills us
    store.append(big)
"""


def _rows(trial: str, iterations: range, **extra) -> list[dict]:
    return [{"trial_id": trial, "training_iteration": i, **extra} for i in iterations]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir()}


def test_round_trip_mixed_config_types(tmp_path):
    store = ResultStore(tmp_path / "store")
    cfgs = [
        {"cat": 1, "lr": 0.1, "net": {"depth": 2}},
        {"cat": "a", "lr": 0.01, "net": {"depth": 3}},
        {"cat": None, "lr": 1e-3, "net": {"depth": 4}},
        {"cat": True, "lr": 1.0, "net": {"depth": 5}, "tags": ["x", 2]},
    ]
    rows = [
        {
            "job": "j",
            "trial_id": f"t{i}",
            "training_iteration": 1,
            "timestamp": 1.7e9 + i,
            "loss": 0.5 / (i + 1),
            "ok": i % 2 == 0,
            "config": cfg,
        }
        for i, cfg in enumerate(cfgs)
    ]
    store.append(rows)

    df = store.read()
    assert configs(df) == cfgs
    assert [type(c["cat"]) for c in configs(df)] == [int, str, type(None), bool]
    assert df["loss"].tolist() == [r["loss"] for r in rows]
    assert df["loss"].dtype == "float64"
    assert df["training_iteration"].dtype == "int64"
    assert df["ok"].dtype == bool
    assert df["config/net/depth"].tolist() == [2, 3, 4, 5]
    # Mixed types in one config column fall back to strings in that file.
    assert df["config/cat"].tolist()[:2] == ["1", "a"]
    assert df["config/cat"].isna().tolist() == [False, False, True, False]


def test_columns_union_across_files(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_rows("a", range(2), loss=1.0, config={"x": 1}))
    store.append(_rows("b", range(2), acc=0.5, config={"x": "s", "y": 2.5}))
    df = store.read()
    assert len(df) == 4
    assert df["loss"].isna().tolist() == [False, False, True, True]
    assert df["acc"].isna().tolist() == [True, True, False, False]
    assert df["config/x"].tolist() == [1, 1, "s", "s"]
    assert configs(df)[2] == {"x": "s", "y": 2.5}


def test_append_never_rewrites(tmp_path):
    store = ResultStore(tmp_path)
    first = store.append(_rows("a", range(3), loss=1.0))
    before = _snapshot(tmp_path)
    assert list(before) == [os.path.basename(first)]
    second = store.append(_rows("a", range(3, 6), loss=2.0))
    after = _snapshot(tmp_path)
    assert set(after) == set(before) | {os.path.basename(second)}
    assert all(after[name] == data for name, data in before.items())
    assert store.files() == [first, second]  # names sort in write order
    assert not [n for n in after if n.startswith(".")]  # no temp file left behind


def test_empty_append_writes_nothing(tmp_path):
    store = ResultStore(tmp_path / "never")
    assert store.append([]) is None
    assert store.append(pd.DataFrame()) is None
    assert not (tmp_path / "never").exists()


def test_empty_or_missing_store_reads_empty_frame(tmp_path):
    for store in (ResultStore(tmp_path / "missing"), ResultStore(tmp_path)):
        df = store.read()
        assert df.empty
        assert list(df.columns) == list(STANDARD_COLUMNS)


def test_dedupe_keeps_last_written_row(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_rows("a", range(1, 4), loss=1.0))
    store.append(_rows("b", range(1, 3), loss=5.0))
    # A resumed trial "a" re-reports iterations 2 and 3.
    store.append(_rows("a", range(2, 5), loss=2.0))

    df = store.read()
    keys = zip(df.trial_id, df.training_iteration, strict=True)
    got = dict(zip(keys, df.loss, strict=True))
    assert got == {
        ("a", 1): 1.0,
        ("a", 2): 2.0,
        ("a", 3): 2.0,
        ("a", 4): 2.0,
        ("b", 1): 5.0,
        ("b", 2): 5.0,
    }
    assert len(df) == 6
    assert list(df.index) == list(range(6))
    assert len(store.read(dedupe=False)) == 8


def test_dataframe_input_and_file_uri(tmp_path):
    plain = ResultStore(tmp_path)
    frame = pd.DataFrame({"trial_id": ["a", "b"], "training_iteration": [1, 1], "loss": [0.1, 0.2]})
    plain.append(frame)
    uri = ResultStore(tmp_path.as_uri())
    assert tmp_path.as_uri().startswith("file://")
    uri.append(_rows("c", range(1, 2), loss=0.3, config={"k": "v"}))
    df_uri, df_plain = uri.read(), plain.read()
    pd.testing.assert_frame_equal(df_uri, df_plain)
    assert df_uri["loss"].tolist() == [0.1, 0.2, 0.3]
    assert configs(df_uri) == [None, None, {"k": "v"}]


def test_two_writers_at_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=exec,
            args=(_WRITER, {"path": str(tmp_path), "writer": w, "batches": 50, "rows": 3}),
        )
        for w in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    store = ResultStore(tmp_path)
    assert len(store.files()) == 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = store.read()
    assert len(df) == 300
    for w in range(2):
        mine = df[df.trial_id == f"w{w}"]
        # Each writer's own rows stay in its write order.
        assert mine.training_iteration.tolist() == list(range(150))


def test_sigkill_mid_write_keeps_earlier_data(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=exec, args=(_CRASHER, {"path": str(tmp_path), "started": started}))
    proc.start()
    try:
        assert started.wait(timeout=60), "writer child did not start"
        time.sleep(0.5)  # let it write a few big batches; the kill lands wherever it lands
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a half-written file must never be visible
        df = ResultStore(tmp_path).read(strict=True, dedupe=False)
    first = df[df.trial_id == "first"]
    assert first.training_iteration.tolist() == list(range(10))
    big = df[df.trial_id == "big"]
    assert len(big) % 20 == 0  # each batch is in the store whole or not at all
    assert big.training_iteration.tolist() == list(range(20)) * (len(big) // 20)


def test_unreadable_files_are_skipped_with_warning(tmp_path):
    store = ResultStore(tmp_path)
    good = store.append(_rows("a", range(3), loss=1.0))
    # What a crash or a foreign tool can leave behind.
    (tmp_path / ".tmp-part-00000000000000000001-1-deadbeef.parquet").write_bytes(b"PAR1\x00")
    truncated = tmp_path / "part-99999999999999999999-1-cafecafe.parquet"
    truncated.write_bytes(Path(good).read_bytes()[:40])
    (tmp_path / "_SUCCESS").write_text("")

    with pytest.warns(UserWarning, match="cafecafe.parquet") as record:
        df = store.read()
    assert len(record) == 1
    assert "move it out" in str(record[0].message)
    assert df.trial_id.tolist() == ["a"] * 3

    with pytest.raises(ValueError, match="cafecafe.parquet"):
        store.read(strict=True)


def test_store_pickles_by_path(tmp_path):
    import pickle

    store = ResultStore(tmp_path)
    store.append(_rows("a", range(2), loss=1.0))
    clone = pickle.loads(pickle.dumps(store))
    assert clone.path == store.path
    pd.testing.assert_frame_equal(clone.read(), store.read())


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        ResultStore("")
    with pytest.raises(ValueError, match="must be a dict"):
        ResultStore(tmp_path).append([{"trial_id": "a", "config": [1, 2]}])
