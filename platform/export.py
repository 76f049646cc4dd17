"""Read a job's results: the top trials, the best configuration, and its export file.

An export is a small YAML or JSON document that says what was best and where it
came from, and that ``warmtune run JOB.yaml --config best.yaml`` accepts back::

    warmtune_export: 1
    job: quickstart
    task: sinusoid
    trial_id: 5e1f2_00003
    objective: {metric: loss, mode: min, value: 0.0213}
    budget: {training_iteration: 10, max_iterations: 10}
    config: {inner_lr: 0.04, ...}
    versions: {warmtune: 0.1.0, ray: 2.60.0, torch: 2.13.0, python: 3.11.7}
    created: '2026-11-22T08:30:00+00:00'
    source: /home/me/warmtune_results/quickstart
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from warmtune.jobdir import JobDir
from warmtune.spec import JobSpec
from warmtune.store import ResultStore, configs

__all__ = ["best_trial", "export_best", "read_export", "top_trials", "write_export"]

EXPORT_VERSION = 1


def _last_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Each trial's furthest result (Ray Tune's ``scope="last"``)."""
    order = df.sort_values(["trial_id", "training_iteration"], kind="stable")
    return order.groupby("trial_id", sort=False).tail(1)


def top_trials(df: pd.DataFrame, *, metric: str, mode: str, k: int | None = 10) -> pd.DataFrame:
    """One row per trial (its last result), best first; trials without the metric last."""
    if df.empty:
        return df
    if metric not in df.columns:
        raise ValueError(
            f"no trial reported {metric!r}; reported columns: "
            f"{', '.join(c for c in df.columns if not c.startswith('config'))}"
        )
    last = _last_rows(df)
    ranked = last.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")
    return ranked if k is None else ranked.head(k)


def best_trial(df: pd.DataFrame, *, metric: str, mode: str) -> pd.Series | None:
    """The best trial's last result row, or ``None`` when no trial reported the metric."""
    top = top_trials(df, metric=metric, mode=mode, k=1)
    if top.empty or pd.isna(top.iloc[0][metric]):
        return None
    return top.iloc[0]


def versions() -> dict[str, str]:
    out = {}
    for dist in ("warmtune", "ray", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    return out


class NoResultsError(ValueError):
    """The job has no result with its objective yet (``warmtune results`` and ``export``
    exit with :data:`EXIT_NO_RESULTS`)."""


EXIT_NO_RESULTS = 1
"""Exit status of ``warmtune results`` and ``warmtune export`` for a job with no results
yet, so a script can wait for the first result; other errors exit with 2."""


def export_best(jobdir: JobDir) -> dict[str, Any]:
    """The export document of a job's best configuration.

    Raises:
        NoResultsError: the job has no finished results yet.
    """
    spec = jobdir.read_spec()
    df = ResultStore(jobdir.results).read()
    row = best_trial(df, metric=spec.objective.metric, mode=spec.objective.mode)
    if row is None:
        raise NoResultsError(
            f"job {spec.name!r} has no result with {spec.objective.metric!r} yet; "
            "wait for trials to report, or check `warmtune results` for errors"
        )
    return _document(spec, jobdir, row)


def _document(spec: JobSpec, jobdir: JobDir, row: pd.Series) -> dict[str, Any]:
    (config,) = configs(pd.DataFrame([row]))
    return {
        "warmtune_export": EXPORT_VERSION,
        "job": spec.name,
        "task": spec.task.name,
        "trial_id": str(row["trial_id"]),
        "objective": {
            "metric": spec.objective.metric,
            "mode": spec.objective.mode,
            "value": float(row[spec.objective.metric]),
        },
        "budget": {
            "training_iteration": int(row["training_iteration"]),
            "max_iterations": spec.budget.max_iterations,
        },
        "config": config,
        "versions": versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": jobdir.root,
    }


def write_export(doc: dict[str, Any], path: str | None, fmt: str) -> str:
    """Serialise ``doc`` as ``yaml`` or ``json``, write it to ``path`` if given; return the text."""
    if fmt == "json":
        text = json.dumps(doc, indent=2) + "\n"
    elif fmt == "yaml":
        text = yaml.safe_dump(doc, sort_keys=False)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use 'yaml' or 'json'")
    if path is not None:
        Path(path).write_text(text)
    return text


def read_export(path: str | Path) -> dict[str, Any]:
    """Read an export file (YAML or JSON) and return its configuration.

    Raises:
        ValueError: the file is missing or is not a warmtune export.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}; pass a file written by `warmtune export`")
    try:
        doc = yaml.safe_load(path.read_text())  # JSON is YAML too
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not YAML/JSON: {e}") from None
    if not isinstance(doc, dict) or "config" not in doc or not isinstance(doc["config"], dict):
        raise ValueError(
            f"{path} is not a warmtune export (no 'config' mapping); "
            "write one with `warmtune export JOB -o best.yaml`"
        )
    return dict(doc["config"])
