"""Append-only Parquet store for per-iteration trial results.

A store is one directory (local, or any pyarrow filesystem URI such as ``file:///tmp/x``
or ``s3://bucket/prefix``). Every :meth:`ResultStore.append` writes one new Parquet file
named ``part-<ns timestamp>-<pid>-<uuid8>.parquet`` and never touches existing files, so
a crash, or two jobs writing at once, cannot damage what is already stored. On local
(and other non object-store) filesystems the file is written under a hidden
``.tmp-...`` name and renamed when complete. Readers ignore names that start with ``.``
or ``_``, so a partial write is never seen.

Standard row columns (written by :class:`warmtune.recorder.ResultRecorder`):

- ``job`` (str): the search job the row belongs to.
- ``trial_id`` (str): Ray Tune trial id.
- ``training_iteration`` (int): 1-based iteration the row reports.
- ``timestamp`` (float): unix seconds when the trial produced the result.
- ``time_total_s`` (float): trial wall time so far.
- ``node_ip``, ``hostname`` (str), ``pid`` (int): where the trial ran.
- ``status`` (str, optional): trial status when the row was recorded, e.g. ``RUNNING``,
  ``TERMINATED``, ``ERROR``.
- metric columns: every scalar the trainable reported (nested dicts as ``a/b``).
- ``config_json`` (str): the trial config as JSON; the exact round trip (see
  :func:`configs`).
- ``config/<name>``: the config flattened for pandas (nested keys joined with ``/``).
  A column whose values have mixed types within one file (say ``1``, ``"a"``, ``True``)
  is stored there as strings; use ``config_json`` when the type matters.

Files may differ in columns (configs differ between jobs, metrics appear later);
:meth:`ResultStore.read` returns the union, with missing values as NaN/None.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["STANDARD_COLUMNS", "ResultStore", "configs", "next_timestamp_ns"]

STANDARD_COLUMNS: tuple[str, ...] = (
    "job",
    "trial_id",
    "training_iteration",
    "timestamp",
    "time_total_s",
    "node_ip",
    "hostname",
    "pid",
    "status",
    "config_json",
)

CONFIG_PREFIX = "config/"

# Object stores publish an object only once its upload completes, so a direct write is
# already all-or-nothing there (and a rename would be a full copy).
_ATOMIC_PUT_FILESYSTEMS = frozenset({"s3", "gcs", "abfs"})

_name_lock = threading.Lock()
_last_ns = 0


def next_timestamp_ns() -> int:
    """A strictly increasing ns timestamp, so one process's files (and the knowledge
    base's removal records) sort in write order."""
    global _last_ns
    with _name_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return _last_ns


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays are common in configs (np.random, tune.sample_from).
    if hasattr(value, "tolist"):
        return value.tolist()
    # Anything else (a class, a function) cannot round-trip; keep a readable trace.
    return repr(value)


def _flatten(mapping: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=_json_default)
    return str(value)


def _column(values: list[Any]) -> pa.Array:
    """Infer one typed column; fall back to strings when the values' types are mixed."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return pa.array([_as_text(v) for v in values], type=pa.string())


def _to_table(rows: list[Mapping[str, Any]]) -> pa.Table:
    records: list[dict[str, Any]] = []
    names: dict[str, None] = {}  # ordered set: columns in order of first appearance
    for row in rows:
        record = dict(row)
        config = record.pop("config", None)
        if config is not None:
            if not isinstance(config, Mapping):
                raise ValueError(
                    f"row 'config' must be a dict, got {type(config).__name__}; pass the "
                    "trial config as a dict (or leave 'config' out)"
                )
            record["config_json"] = json.dumps(dict(config), default=_json_default)
            record.update(_flatten(config, CONFIG_PREFIX))
        records.append(record)
        names.update(dict.fromkeys(record))
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"column names must be strings, got {name!r}; rename the key")
    columns = {name: _column([r.get(name) for r in records]) for name in names}
    return pa.table(columns)


def _order_columns(df: pd.DataFrame) -> pd.DataFrame:
    standard = [c for c in STANDARD_COLUMNS if c in df.columns]
    config = [c for c in df.columns if c.startswith(CONFIG_PREFIX)]
    rest = [c for c in df.columns if c not in standard and c not in config]
    return df[standard + rest + config]


def configs(df: pd.DataFrame) -> list[dict[str, Any] | None]:
    """Decode the ``config_json`` column back into config dicts, exactly as recorded.

    Args:
        df: A frame returned by :meth:`ResultStore.read` (or a slice of it).

    Returns:
        One dict per row, in row order; ``None`` for rows recorded without a config.
    """
    if "config_json" not in df.columns:
        return [None] * len(df)
    return [json.loads(s) if isinstance(s, str) else None for s in df["config_json"]]


class ResultStore:
    """Append-only Parquet result store; see the module docstring for the layout.

    Args:
        path: A local directory, or a pyarrow filesystem URI (``file://``, ``s3://``,
            ``gs://``, ...). The directory is created on the first append.

    Example:
        >>> store = ResultStore("/tmp/results")  # doctest: +SKIP
        >>> store.append([{"trial_id": "t1", "training_iteration": 1, "loss": 0.3,
        ...                "config": {"lr": 0.1}}])  # doctest: +SKIP
        >>> store.read()  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise ValueError(
                f"ResultStore path must be a non-empty directory path or URI, got {path!r}"
            )
        self._path = path
        self._fs, self._root = self._resolve(path)

    @staticmethod
    def _resolve(path: str) -> tuple[pafs.FileSystem, str]:
        if "://" in path:
            try:
                return pafs.FileSystem.from_uri(path)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(
                    f"cannot open store URI {path!r} ({exc}); use a local path or a URI "
                    "pyarrow understands, e.g. file:///abs/dir or s3://bucket/prefix"
                ) from exc
        return pafs.LocalFileSystem(), os.path.abspath(path)

    @property
    def path(self) -> str:
        """The path or URI the store was opened with."""
        return self._path

    def __repr__(self) -> str:
        return f"ResultStore({self._path!r})"

    # Re-resolve from the path after unpickling: filesystem handles (and any credentials
    # inside them) should come from the environment where the store is used.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self._path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._path = state["path"]
        self._fs, self._root = self._resolve(self._path)

    def append(self, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> str | None:
        """Write ``rows`` as one new Parquet file.

        Args:
            rows: Dicts (or a DataFrame) with any scalar columns. A ``config`` dict is
                stored as ``config_json`` plus flattened ``config/<name>`` columns.

        Returns:
            The path of the new file inside the store's filesystem, or ``None`` when
            ``rows`` is empty (no file is written).

        Raises:
            ValueError: If a row's ``config`` is not a dict or a column name is not a str.
        """
        if isinstance(rows, pd.DataFrame):
            rows = rows.to_dict("records")
        rows = list(rows)
        if not rows:
            return None
        table = _to_table(rows)

        name = f"part-{next_timestamp_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        final = self._join(name)
        self._fs.create_dir(self._root, recursive=True)
        if self._fs.type_name in _ATOMIC_PUT_FILESYSTEMS:
            with self._fs.open_output_stream(final) as out:
                pq.write_table(table, out)
            return final
        tmp = self._join(f".tmp-{name}")
        try:
            with self._fs.open_output_stream(tmp) as out:
                pq.write_table(table, out)
            self._fs.move(tmp, final)
        except BaseException:
            # Best effort only: a leftover hidden .tmp file is harmless to readers.
            with contextlib.suppress(OSError):
                self._fs.delete_file(tmp)
            raise
        return final

    def _join(self, name: str) -> str:
        # Plain paths are OS paths; URI paths are always '/'-separated.
        if "://" in self._path:
            return posixpath.join(self._root, name)
        return os.path.join(self._root, name)

    def files(self) -> list[str]:
        """Data file paths in write order (hidden ``.``/``_`` names excluded)."""
        selector = pafs.FileSelector(self._root, allow_not_found=True, recursive=False)
        infos = self._fs.get_file_info(selector)
        names = sorted(
            info.base_name
            for info in infos
            if info.type == pafs.FileType.File and not info.base_name.startswith((".", "_"))
        )
        return [self._join(n) for n in names]

    def read(self, *, dedupe: bool = True, strict: bool = False) -> pd.DataFrame:
        """Read every row of every file, in write order.

        Write order is file name order: the writer's clock in ns, so across hosts it is
        as good as their clock sync; within one process it is exact.

        Args:
            dedupe: For rows sharing (``job``, ``trial_id``, ``training_iteration``), keep
                only the last written one (a resumed trial may re-report an iteration).
                Rows missing ``trial_id`` or ``training_iteration`` are always kept.
            strict: Raise on an unreadable file instead of skipping it with a warning.

        Returns:
            One DataFrame with the union of all files' columns (standard columns first,
            ``config/*`` last) and a fresh ``RangeIndex``; empty, with the standard
            columns, when the store is empty or does not exist yet.

        Raises:
            ValueError: With ``strict=True``, naming the first file that is not valid
                Parquet.
        """
        tables = []
        for path in self.files():
            try:
                with self._fs.open_input_file(path) as src:
                    tables.append(pq.read_table(src))
            except (pa.ArrowException, OSError) as exc:
                message = (
                    f"ResultStore {self._path!r}: cannot read {path!r} as Parquet ({exc}). "
                    "It is corrupt, truncated, or not a store file; move it out of the "
                    "store directory (or rename it to start with '_') to silence this."
                )
                if strict:
                    raise ValueError(message) from exc
                warnings.warn(message, stacklevel=2)
        if not tables:
            return pd.DataFrame(columns=list(STANDARD_COLUMNS))
        try:
            df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            # Types that Arrow cannot unify (a config column int in one file, str in
            # another): let pandas fall back to object columns.
            df = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        df = _order_columns(df)
        if dedupe and {"trial_id", "training_iteration"} <= set(df.columns):
            keys = [c for c in ("job", "trial_id", "training_iteration") if c in df.columns]
            keyed = df["trial_id"].notna() & df["training_iteration"].notna()
            duplicated = df[keyed].duplicated(subset=keys, keep="last")
            df = df.drop(index=duplicated[duplicated].index)
        return df.reset_index(drop=True)
