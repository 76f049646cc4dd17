"""The knowledge base: every past search's observations, keyed by task.

A new search on a task similar to a past one starts warm from what the past one
learned (the similarity model and the warm-start searcher read this store). The
knowledge base only stores and serves observations; it never rewrites a file.

The rows' schema, and how they are built and grouped into past tasks:
:mod:`warmtune.knowledge.rows`.

Layout, under one local directory or pyarrow filesystem URI (``file://``, ``s3://``)::

    PATH/observations/   a ResultStore: one Parquet file per add (never rewritten)
    PATH/removed/        a ResultStore of tombstones, one file per ``remove_task``
    PATH/similarity/     a ResultStore of pairwise concordances, written as each job
                         joins (:meth:`KnowledgeBase.similarities`)

Reads apply two rules, both at read time so that writers only ever append:

- Removal is time based: a tombstone ``(task, removed_ns)`` hides the task's rows added
  at or before ``removed_ns``. Rows added later (a re-import, a new search) show again.
- Duplicates: rows sharing (``task``, ``job``, ``trial_id``, ``budget``) keep the last
  written one, so adding the same job twice, or from two processes at once, counts
  each observation once. :meth:`KnowledgeBase.add_job` also skips rows the knowledge
  base already holds, so re-adding a job writes nothing new.

Tombstones use the clocks of the machines that add and remove; across machines they
are as exact as the clocks are in sync.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from warmtune.jobdir import JobDir, filesystem
from warmtune.knowledge.rows import (
    REQUIRED,
    job_rows,
    loads_meta,
    normalise,
    past_tasks,
    pick_metric,
    trial_keys,
    unseen,
    with_schema,
)
from warmtune.searchers.similarity import task_concordances
from warmtune.searchers.warmstart import nearest_tasks
from warmtune.store import ResultStore, configs, next_timestamp_ns

__all__ = ["KnowledgeBase", "KnowledgeBaseWarning", "default_kb_path"]


#: How many other tasks a joining task's concordances are measured with (the nearest
#: by space and meta-features): as many as a warm start weighs.
SIMILARITY_NEIGHBOURS = 128
_DEDUPE_KEYS = ["task", "job", "trial_id", "budget"]
_TOMBSTONE_COLUMNS = ("task", "removed_ns", "removed_time")


class KnowledgeBaseWarning(UserWarning):
    """Something in the knowledge base could not be read; the rest still was."""


def default_kb_path() -> str:
    """Where the knowledge base lives unless told otherwise.

    Returns:
        ``$WARMTUNE_KB`` when set, else ``~/warmtune_kb`` (expanded).
    """
    return os.environ.get("WARMTUNE_KB") or str(Path("~/warmtune_kb").expanduser())


def _resolve(path: str | os.PathLike[str] | None) -> str:
    path = default_kb_path() if path is None else os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(
            f"KnowledgeBase path must be a non-empty directory path or URI, got {path!r}; "
            "pass e.g. ~/warmtune_kb or s3://bucket/kb (or set $WARMTUNE_KB)"
        )
    if "://" in path:
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())


class KnowledgeBase:
    """Observations of every past search, keyed by task; see the module docstring.

    Args:
        path: A local directory or a pyarrow filesystem URI; ``None`` means
            :func:`default_kb_path`. Created on the first add.

    Example:
        >>> kb = KnowledgeBase("/tmp/kb")  # doctest: +SKIP
        >>> kb.add_job(JobDir.find("quickstart"))  # doctest: +SKIP
        >>> kb.tasks()  # doctest: +SKIP
        >>> kb.best_configs("sinusoid", k=3)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = _resolve(path)
        self._observations = ResultStore(self._path + "/observations")
        self._removed = ResultStore(self._path + "/removed")
        self._similarity = ResultStore(self._path + "/similarity")

    @property
    def path(self) -> str:
        """The resolved path or URI of the knowledge base."""
        return self._path

    def __repr__(self) -> str:
        return f"KnowledgeBase({self._path!r})"

    # Writing -------------------------------------------------------------------------
    def add_observations(self, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> int:
        """Append observations as one new file.

        Args:
            rows: Dicts (or a DataFrame) with the columns of the module docstring.
                ``task``, ``value``, ``metric`` and ``mode`` are required. Instead of
                the JSON columns a row may give ``config`` (a dict),
                ``meta_features`` (a dict) and ``space`` (a ``SearchSpace`` or its
                dict form); ``source`` defaults to ``"import"``.

        Returns:
            The number of rows written (0 writes no file).

        Raises:
            ValueError: A row lacks a required column or has a bad ``mode``/``value``;
                nothing is written then.
        """
        if isinstance(rows, pd.DataFrame):
            rows = rows.to_dict("records")
        added_ns = next_timestamp_ns()
        spaces: dict[str, tuple[str, str]] = {}
        records = [normalise(i, row, added_ns, spaces) for i, row in enumerate(rows)]
        self._observations.append(records)
        return len(records)

    def add_job(
        self,
        job: JobDir | str,
        *,
        storage: str | None = None,
        meta_features: Mapping[str, Any] | None = None,
        strict: bool = False,
    ) -> int:
        """Add every result a job reported for its objective (one row per result).

        Idempotent: rows the knowledge base already holds (same task, trial, budget,
        value and meta-features) are skipped, so adding a job twice writes nothing the
        second time, and adding a job that has progressed writes only the new rows.
        Reads also drop duplicates, which covers two processes adding at once.

        Args:
            job: A :class:`~warmtune.jobdir.JobDir`, or a job name or result directory
                (found with :meth:`JobDir.find`).
            storage: Where to look a job name up (default: ``$WARMTUNE_STORAGE``).
            meta_features: Added to (and overriding) the spec's ``task.meta_features``,
                e.g. features a trainable computed from the data.
            strict: Raise on an unreadable knowledge-base file instead of warning.

        Returns:
            The number of new rows written; 0 when the job has no result with its
            objective metric yet, or when all of them are in the knowledge base.

        Raises:
            warmtune.jobdir.JobNotFoundError: ``job`` is not a job directory or name.
            warmtune.spec.JobSpecError: The job's ``job.yaml`` is invalid.
        """

        jobdir = job if isinstance(job, JobDir) else JobDir.find(job, storage=storage)
        frame = job_rows(jobdir, meta_features or {})
        if frame.empty:
            return 0
        known = self.observations(frame["task"].iloc[0], strict=strict)
        frame = unseen(frame, known[known["job"].isin(frame["job"].unique())])
        if frame.empty:
            return 0
        frame["added_ns"] = next_timestamp_ns()
        self._observations.append(frame)
        try:
            self.update_similarities(str(frame["task"].iloc[0]), strict=strict)
        except Exception as e:  # the observations are in; a search can measure pairs itself
            warnings.warn(
                f"knowledge base {self._path!r}: {len(frame)} observations added, but their "
                f"task's similarities were not measured ({type(e).__name__}: {e}); a warm "
                "start measures the missing pairs itself",
                KnowledgeBaseWarning,
                stacklevel=2,
            )
        return len(frame)

    def update_similarities(self, task: str, *, strict: bool = False) -> int:
        """Measure and append ``task``'s pairwise concordances with the other tasks.

        Both directions, in ``task``'s space: every other task's ranking of ``task``'s
        results, and ``task``'s ranking of theirs (the at most
        :data:`SIMILARITY_NEIGHBOURS` tasks nearest by space and meta-features, see
        :func:`warmtune.searchers.warmstart.nearest_tasks`). A warm start reads them back
        instead of measuring every pair of past tasks itself, so its set-up grows with
        the knowledge base, not with its square. Called by :meth:`add_job`; rows a later
        call writes for the same pair win.

        Returns:
            The number of pairs written.
        """

        frame = self.observations(strict=strict)
        frame = frame[frame["value"].notna()] if not frame.empty else frame
        if frame.empty or task not in set(frame["task"]):
            return 0
        tasks = past_tasks(frame)
        (mine,) = [t for t in tasks if t.name == task]
        names = set(mine.space)
        others = [t for t in tasks if t.name != task and names & set(t.space)]
        others = nearest_tasks(others, mine.space, mine.meta_features, SIMILARITY_NEIGHBOURS)
        if not others:
            return 0
        rows = [
            {
                "target": target,
                "source": source,
                "concordance": c,
                "pairs": p,
                "added_ns": next_timestamp_ns(),
            }
            for target, source, c, p in task_concordances(mine, others)
        ]
        if rows:
            self._similarity.append(rows)
        return len(rows)

    def similarities(self, *, strict: bool = False) -> dict[str, dict[str, list[float]]]:
        """The stored pairwise concordances: ``target -> {source: [concordance, pairs]}``
        (the latest measurement of each pair), what a warm start takes as ``pairwise=``."""
        df = self._read(self._similarity, ("target", "source", "concordance"), strict)
        if df.empty:
            return {}
        df = df.sort_values("added_ns", kind="stable").drop_duplicates(
            ["target", "source"], keep="last"
        )
        out: dict[str, dict[str, list[float]]] = {}
        for row in df.itertuples(index=False):
            out.setdefault(str(row.target), {})[str(row.source)] = [
                float(row.concordance),
                int(row.pairs),
            ]
        return out

    def remove_task(self, task: str, *, strict: bool = False) -> int:
        """Hide every observation of ``task`` added so far (a tombstone; nothing deleted).

        Observations added afterwards show again.

        Args:
            task: The task name.
            strict: Raise on an unreadable knowledge-base file instead of warning.

        Returns:
            The number of observations hidden.

        Raises:
            ValueError: The knowledge base has no (visible) task of that name.
        """
        visible = self.observations(task, strict=strict)
        if visible.empty:
            raise ValueError(self._unknown_task(task, strict=strict))
        removed_ns = next_timestamp_ns()
        self._removed.append(
            [{"task": task, "removed_ns": removed_ns, "removed_time": removed_ns / 1e9}]
        )
        return len(visible)

    # Reading -------------------------------------------------------------------------
    def observations(
        self, task: str | None = None, *, metric: str | None = None, strict: bool = False
    ) -> pd.DataFrame:
        """Visible observations (tombstones and duplicates applied), in write order.

        Configs stay JSON text here (decode the rows you need with :func:`configs`),
        so reading is vectorised and fast.

        Args:
            task: Only this task's rows.
            metric: Only rows whose objective is this metric.
            strict: Raise on an unreadable file instead of skipping it with a warning.

        Returns:
            A DataFrame with the schema columns first and ``config/*`` last, a fresh
            ``RangeIndex``; empty (with the schema columns) when nothing matches.

        Raises:
            ValueError: With ``strict=True``, naming the first unreadable file.
        """
        df = with_schema(self._read(self._observations, REQUIRED, strict))
        if task is not None:
            df = df[df["task"] == task]
        if metric is not None:
            df = df[df["metric"] == metric]
        df = self._hide_removed(df, strict)
        keyed = df[_DEDUPE_KEYS].notna().all(axis=1)
        duplicated = df[keyed].duplicated(subset=_DEDUPE_KEYS, keep="last")
        df = df.drop(index=duplicated[duplicated].index)
        return df.reset_index(drop=True)

    def tasks(self, *, strict: bool = False) -> pd.DataFrame:
        """One row per visible task, sorted by name.

        Args:
            strict: Raise on an unreadable file instead of skipping it with a warning.

        Returns:
            Columns ``task``, ``meta_features`` (dict), ``n_observations``, ``n_jobs``,
            ``metric`` and ``mode`` (of the latest observation; a task searched with
            several objectives shows the latest), ``last_time`` (unix seconds).
        """
        df = self.observations(strict=strict)
        columns = ["task", "meta_features", "n_observations", "n_jobs", "metric", "mode"]
        if df.empty:
            return pd.DataFrame(columns=[*columns, "last_time"])
        # "last" skips missing values: a row added without meta-features keeps the
        # task's latest known ones.
        out = df.groupby("task", sort=True).agg(
            n_observations=("task", "size"),
            n_jobs=("job", "nunique"),
            metric=("metric", "last"),
            mode=("mode", "last"),
            meta_features_json=("meta_features_json", "last"),
            last_time=("time", "max"),
        )
        # One decode per task, not per row.
        out["meta_features"] = [loads_meta(s) for s in out["meta_features_json"]]
        out = out.reset_index()
        return out[[*columns, "last_time"]]

    def jobs(self, task: str | None = None, *, strict: bool = False) -> pd.DataFrame:
        """One row per (task, job): how much it contributed and when.

        Args:
            task: Only this task's jobs.
            strict: Raise on an unreadable file instead of skipping it with a warning.

        Returns:
            Columns ``task``, ``job``, ``n_observations``, ``n_trials``, ``metric``,
            ``mode``, ``source``, ``first_time``, ``last_time``, oldest job first.
        """
        df = self.observations(task, strict=strict)
        df = df.assign(job=df["job"].fillna("(none)"))
        columns = ["task", "job", "n_observations", "n_trials", "metric", "mode", "source"]
        if df.empty:
            return pd.DataFrame(columns=[*columns, "first_time", "last_time"])
        out = (
            df.groupby(["task", "job"], sort=False)
            .agg(
                n_observations=("task", "size"),
                n_trials=("trial_id", "nunique"),
                metric=("metric", "last"),
                mode=("mode", "last"),
                source=("source", "last"),
                first_time=("time", "min"),
                last_time=("time", "max"),
            )
            .reset_index()
        )
        return out.sort_values("first_time", kind="stable").reset_index(drop=True)

    def best_configs(
        self, task: str, k: int = 5, *, metric: str | None = None, strict: bool = False
    ) -> pd.DataFrame:
        """The ``k`` best distinct configurations seen on ``task``.

        Each trial counts with its furthest observation (highest ``budget``, Ray Tune's
        ``scope="last"``); configurations are then ranked by ``value`` in the task's
        ``mode``, ties broken by the larger fraction of the full budget, and a
        configuration tried several times counts once, with its best result.

        Args:
            task: The task name.
            k: How many configurations (at least 1).
            metric: The objective to rank by; needed only when the task's
                observations use several.
            strict: Raise on an unreadable file instead of skipping it with a warning.

        Returns:
            Columns ``config`` (dict), ``value``, ``budget``, ``max_budget``,
            ``metric``, ``mode``, ``job``, ``trial_id``, ``space_signature``,
            ``config_json``; best first; fewer than ``k`` rows if fewer exist.

        Raises:
            ValueError: ``k`` < 1, the task is unknown, or ``metric`` is ambiguous.
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        df = self.observations(task, strict=strict)
        if df.empty:
            raise ValueError(self._unknown_task(task, strict=strict))
        df = df[df["metric"] == pick_metric(task, df, metric)]
        # Without a configuration an observation cannot seed anything.
        df = df[df["value"].notna() & df["config_json"].notna()]
        columns = ["value", "budget", "max_budget", "metric", "mode", "job", "trial_id"]
        columns += ["space_signature", "config_json"]
        if df.empty:
            return pd.DataFrame(columns=["config", *columns])
        mode = df["mode"].iloc[-1]
        last = (
            df.assign(_trial=trial_keys(df), _fraction=df["budget"] / df["max_budget"])
            .sort_values(["_trial", "budget"], kind="stable", na_position="first")
            .groupby("_trial", sort=False)
            .tail(1)
        )
        ranked = last.sort_values(
            ["value", "_fraction"], ascending=[mode == "min", False], kind="stable"
        )
        top = ranked.drop_duplicates("config_json", keep="first").head(k)
        out = top[columns].reset_index(drop=True)
        out.insert(0, "config", configs(out))
        return out

    # Internals -----------------------------------------------------------------------
    def _read(self, store: ResultStore, required: Iterable[str], strict: bool) -> pd.DataFrame:
        """``store.read()``, its warnings re-raised naming the knowledge base."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = store.read(dedupe=False, strict=strict)
        for w in caught:
            warnings.warn(
                f"knowledge base {self._path!r}: {w.message}", KnowledgeBaseWarning, stacklevel=3
            )
        return _drop_foreign(df, store, tuple(required), strict)

    def _hide_removed(self, df: pd.DataFrame, strict: bool) -> pd.DataFrame:
        tombstones = self._read(self._removed, ("task", "removed_ns"), strict)
        if tombstones.empty or df.empty:
            return df
        latest = tombstones.groupby("task")["removed_ns"].max()
        hidden = pd.Series(False, index=df.index)
        added = df["added_ns"].fillna(0)
        # Few tasks are ever removed: one vectorised comparison per removed task keeps
        # the exact int64 nanoseconds (a mapped column with NaN would turn float).
        for task, removed_ns in latest.items():
            hidden |= (df["task"] == task) & (added <= removed_ns)
        return df[~hidden]

    def _unknown_task(self, task: str, *, strict: bool) -> str:
        known = self.tasks(strict=strict)["task"].tolist()
        listing = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        hint = f"known tasks: {listing}" if known else "the knowledge base is empty"
        return (
            f"no task {task!r} in the knowledge base at {self._path} ({hint}); "
            "check the name with `warmtune kb list`, or pass the right --kb"
        )


def _drop_foreign(
    df: pd.DataFrame, store: ResultStore, required: tuple[str, ...], strict: bool
) -> pd.DataFrame:
    """Drop rows without the required columns (a foreign Parquet file), naming the files."""
    if df.empty:
        return pd.DataFrame(columns=list(required))
    if all(c in df.columns for c in required):
        bad = df[list(required)].isna().any(axis=1)
    else:
        bad = pd.Series(True, index=df.index)
    if bad.any():
        files = ", ".join(_foreign_files(store, required)) or "some rows"
        message = (
            f"{store.path}: {files}: no {'/'.join(required)} columns (or empty ones), so "
            "not a knowledge-base file; its rows are ignored. Move it out of the directory "
            "(or rename it to start with '_') to silence this."
        )
        if strict:
            raise ValueError(message)
        warnings.warn(message, KnowledgeBaseWarning, stacklevel=4)
        df = df[~bad]
    for name in required:
        if name not in df.columns:
            df[name] = None
    return df


def _foreign_files(store: ResultStore, required: tuple[str, ...]) -> list[str]:
    """Only called when something is off: look at each file's schema to name culprits."""
    fs, _ = filesystem(store.path)
    names = []
    for path in store.files():
        try:
            with fs.open_input_file(path) as src:
                schema = pq.read_schema(src)
        except (OSError, ValueError):
            continue  # unreadable: ResultStore.read already named it
        if not set(required) <= set(schema.names):
            names.append(path)
    return names
