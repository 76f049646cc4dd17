"""The knowledge base's rows: their schema, rows from a job or an import, and rows
grouped into the :class:`~warmtune.searchers.pasttask.PastTask` objects searchers read.

Observation row schema (one row per reported result of one trial):

- ``task`` (str): the task name, the key of the knowledge base.
- ``meta_features_json`` (str): the task's meta-features as JSON (sorted keys).
- ``space_signature`` (str): :meth:`SearchSpace.signature` of the space searched.
- ``space_json`` (str): :meth:`SearchSpace.to_dict` as JSON, so a configuration can be
  projected into a different space later.
- ``config_json`` (str): the configuration, exactly (decode with :func:`configs`);
  plus ``config/<name>`` columns flattened for pandas, as :class:`ResultStore` writes.
- ``budget`` (float): training iterations the value was measured after.
- ``max_budget`` (float): the full budget of one trial in that search.
- ``value`` (float): the objective as reported (not sign-flipped; see ``mode``).
- ``metric`` (str), ``mode`` (``"min"`` | ``"max"``): what ``value`` is.
- ``job`` (str), ``trial_id`` (str): where the observation came from.
- ``time`` (float): unix seconds when the trial reported the value (when unknown,
  :meth:`KnowledgeBase.add_observations` uses the time the row is added).
- ``runtime`` (float): seconds the trial had trained when it reported (Ray's
  ``time_total_s``); NaN where unknown. Warm starts use it to prefer cheap good
  configurations when workers run in parallel.
- ``seed`` (float): the seed of the job that measured it; NaN where unknown. A new
  search of the same task does not re-run a configuration measured under its seed.
- ``source`` (str): ``"job"`` (:meth:`KnowledgeBase.add_job`), ``"import"`` (the
  default of :meth:`KnowledgeBase.add_observations`), ``"bench"``, ...
- ``added_ns`` (int): unix nanoseconds when the row joined the knowledge base; the
  tombstones compare against it.

Rows may carry further columns (say, a second metric); reads return the union.

"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from warmtune.searchers.pasttask import PastTask
from warmtune.space import SearchSpace
from warmtune.store import CONFIG_PREFIX, ResultStore

if TYPE_CHECKING:
    from warmtune.jobdir import JobDir

__all__ = [
    "KB_COLUMNS",
    "REQUIRED",
    "job_rows",
    "loads_meta",
    "meta_json",
    "normalise",
    "past_tasks",
    "pick_metric",
    "space_columns",
    "trial_keys",
    "unseen",
    "with_schema",
]

KB_COLUMNS: tuple[str, ...] = (
    "task",
    "meta_features_json",
    "space_signature",
    "space_json",
    "config_json",
    "budget",
    "max_budget",
    "value",
    "metric",
    "mode",
    "job",
    "trial_id",
    "time",
    "runtime",
    "seed",
    "source",
    "added_ns",
)

REQUIRED = ("task", "value", "metric", "mode")
_FLOATS = ("budget", "max_budget", "value", "time", "runtime", "seed")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def normalise(
    i: int, row: Mapping[str, Any], added_ns: int, spaces: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """One ``add_observations`` row as stored: JSON columns filled, types checked."""
    record = {k: v for k, v in dict(row).items() if not _missing(v) or k in REQUIRED}
    missing = [k for k in REQUIRED if _missing(record.get(k))]
    if missing:
        raise ValueError(
            f"observation {i} lacks {', '.join(missing)}; every row needs task, value, "
            "metric and mode (e.g. {'task': 'sinusoid', 'value': 0.1, 'metric': 'loss', "
            "'mode': 'min', 'config': {...}})"
        )
    if record["mode"] not in ("min", "max"):
        raise ValueError(f"observation {i}: mode must be 'min' or 'max', got {record['mode']!r}")
    if not isinstance(record["task"], str) or not record["task"]:
        raise ValueError(f"observation {i}: task must be a non-empty string")
    if isinstance(record["value"], bool) or not isinstance(record["value"], numbers.Real):
        raise ValueError(
            f"observation {i}: value must be a number, got {record['value']!r}; "
            "store the objective as reported (mode says whether lower is better)"
        )
    meta = record.pop("meta_features", None)
    if meta is not None:
        record["meta_features_json"] = meta_json(meta)
    space = record.pop("space", None)
    if space is not None:
        record["space_json"], record["space_signature"] = space_columns(space, spaces)
    for name in _FLOATS:
        if name in record:
            try:
                record[name] = float(record[name])
            except (TypeError, ValueError):
                raise ValueError(
                    f"observation {i}: {name} must be a number, got {record[name]!r}"
                ) from None
    record.setdefault("source", "import")
    # Unknown observation time: the time it joined is the best stand-in.
    record.setdefault("time", added_ns / 1e9)
    record["added_ns"] = added_ns
    return record


def meta_json(meta: Mapping[str, Any]) -> str:
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta_features must be a dict, got {type(meta).__name__}")
    return json.dumps(dict(meta), sort_keys=True, default=str)


def space_columns(space: Any, cache: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """``(space_json, signature)``; cached, since one batch usually shares one space."""

    as_dict = space.to_dict() if isinstance(space, SearchSpace) else dict(space)
    text = json.dumps(as_dict, sort_keys=True)
    if text not in cache:
        space = space if isinstance(space, SearchSpace) else SearchSpace(as_dict)
        cache[text] = (text, space.signature())
    return cache[text]


def job_rows(jobdir: JobDir, meta_features: Mapping[str, Any]) -> pd.DataFrame:
    """The job's results with its objective, as knowledge-base rows (vectorised)."""
    spec = jobdir.read_spec()
    results = ResultStore(jobdir.results).read()
    metric = spec.objective.metric
    if results.empty or metric not in results.columns:
        return pd.DataFrame(columns=list(KB_COLUMNS))
    results = results[pd.to_numeric(results[metric], errors="coerce").notna()]
    space = spec.search_space
    n = len(results)
    job = results["job"] if "job" in results else pd.Series(spec.name, index=results.index)
    frame = pd.DataFrame(
        {
            "task": spec.task.name,
            "meta_features_json": meta_json({**spec.task.meta_features, **meta_features}),
            "space_signature": space.signature(),
            "space_json": json.dumps(space.to_dict(), sort_keys=True),
            "config_json": results.get("config_json", pd.Series([None] * n)).to_numpy(),
            "budget": results["training_iteration"].astype(float).to_numpy(),
            "max_budget": float(spec.budget.max_iterations),
            "value": results[metric].astype(float).to_numpy(),
            "metric": metric,
            "mode": spec.objective.mode,
            "job": job.fillna(spec.name).astype(str).to_numpy(),
            "trial_id": results["trial_id"].astype(str).to_numpy(),
            "time": results.get("timestamp", pd.Series([math.nan] * n)).astype(float).to_numpy(),
            "runtime": results.get("time_total_s", pd.Series([math.nan] * n))
            .astype(float)
            .to_numpy(),
            "seed": float(spec.seed),
            "source": "job",
        },
        index=range(n),
    )
    flat = results[[c for c in results.columns if c.startswith(CONFIG_PREFIX)]]
    return pd.concat([frame, flat.reset_index(drop=True)], axis=1)


def unseen(frame: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` the knowledge base does not hold yet, identically."""
    if known.empty:
        return frame
    keys = ["task", "trial_id", "budget", "value", "meta_features_json"]
    fresh = ~pd.MultiIndex.from_frame(frame[keys]).isin(pd.MultiIndex.from_frame(known[keys]))
    return frame[fresh].reset_index(drop=True)


def with_schema(df: pd.DataFrame) -> pd.DataFrame:
    """Every schema column present (rows added without, say, ``job`` have it empty)."""
    df = df.assign(**{name: None for name in KB_COLUMNS if name not in df.columns})
    schema = list(KB_COLUMNS)
    config = [c for c in df.columns if c.startswith(CONFIG_PREFIX)]
    rest = [c for c in df.columns if c not in schema and c not in config]
    return df[schema + rest + config]


def trial_keys(df: pd.DataFrame) -> pd.Series:
    """One key per trial; a row without a trial id is a trial of its own."""
    row = "#" + pd.Series(df.index.astype(str), index=df.index)
    trial = df["trial_id"].astype(str).where(df["trial_id"].notna(), row)
    return df["job"].fillna("").astype(str) + "/" + trial


def pick_metric(task: str, df: pd.DataFrame, metric: str | None) -> str:
    metrics = sorted(df["metric"].dropna().unique())
    if metric is None:
        if len(metrics) > 1:
            raise ValueError(
                f"task {task!r} has observations of several metrics ({', '.join(metrics)}); "
                "pass metric= (or --metric) to choose one"
            )
        return metrics[0]
    if metric not in metrics:
        raise ValueError(
            f"task {task!r} has no observations of metric {metric!r}; it has: {', '.join(metrics)}"
        )
    return metric


def loads_meta(text: Any) -> dict[str, Any]:
    return json.loads(text) if isinstance(text, str) else {}


def past_tasks(frame: pd.DataFrame) -> list[Any]:
    """Group knowledge-base rows into :class:`~warmtune.searchers.pasttask.PastTask`
    objects, one per task (what searchers read: they never see the store's columns).

    Meta-features, space and mode are read from each task's first row; ``runtime`` is
    used where present.

    Raises:
        ValueError: a column is missing.
    """

    needed = [
        "task",
        "meta_features_json",
        "space_json",
        "config_json",
        "budget",
        "max_budget",
        "value",
        "mode",
    ]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"knowledge-base frame lacks column(s) {missing}; it needs {needed}")
    # Rows added without a space or configuration (a bare import) cannot transfer.
    frame = frame[
        frame["space_json"].map(lambda v: isinstance(v, str))
        & frame["config_json"].map(lambda v: isinstance(v, str))
        & frame["value"].notna()
    ]
    tasks = []
    for name, rows in frame.groupby("task", sort=True):
        first = rows.iloc[0]
        runtimes = (
            pd.to_numeric(rows["runtime"], errors="coerce").to_numpy(dtype=float)
            if "runtime" in rows.columns
            else None
        )
        tasks.append(
            PastTask(
                name=str(name),
                meta_features=loads_meta(first["meta_features_json"]),
                space=SearchSpace(json.loads(first["space_json"])),
                configs=[json.loads(s) for s in rows["config_json"]],
                values=rows["value"].to_numpy(dtype=float),
                budgets=rows["budget"].to_numpy(dtype=float),
                max_budget=float(rows["max_budget"].max()),
                mode=str(first["mode"]),
                runtimes=runtimes,
            )
        )
    return tasks
