"""What a job's report shows, read once from its job directory: the result rows, how
each trial ended, the warm-start story from the saved searcher state, hyperparameter
importances and the export document (:class:`JobReport`, :func:`load_report`).
:mod:`warmtune.report.page` draws it."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from warmtune.export import best_trial, export_best, top_trials
from warmtune.jobdir import JobDir, filesystem
from warmtune.spec import JobSpec
from warmtune.store import ResultStore, configs

__all__ = [
    "JobReport",
    "WarmStory",
    "best_trial_or_none",
    "load_report",
    "param_importances",
    "searcher_state",
    "warm_story",
]

# Fewer finished trials than this and PED-ANOVA has nothing to compare.
MIN_TRIALS_FOR_IMPORTANCE = 4


@dataclass(frozen=True)
class WarmStory:
    """What the job's warm start did, as far as the job directory records it.

    Attributes:
        status: ``warm`` (a weight log exists), ``cold`` (the searcher could start warm
            but found no usable past task), ``off`` (switched off in the job file),
            ``unsupported`` (the searcher never starts warm) or ``unknown`` (the
            searcher state is not saved yet, or predates the weight log). A searcher
            that weighs the past once (PBT, for its first population) has a log of one
            record.
        message: one paragraph saying so, for people.
        log: the weight records, oldest first (see ``TuneSearcher.warm_start_log``).
        design: the configurations the warm start designed (BOHB), if any.
        design_used: how many of them have been handed out.
    """

    status: str
    message: str
    log: list[dict[str, Any]] = field(default_factory=list)
    design: list[dict[str, Any]] = field(default_factory=list)
    design_used: int = 0


@dataclass(frozen=True)
class JobReport:
    """Everything the page shows, read once from the job directory.

    Attributes:
        jobdir: the job.
        spec: its job file.
        rows: every stored result row (may be empty).
        ends: how trials ended, one row per end (``JobDir.trial_ends``; may be empty).
        warm: the warm-start story.
        export: the export document of the best trial, or ``None`` before any result.
        generated: when this was read (UTC).
    """

    jobdir: JobDir
    spec: JobSpec
    rows: pd.DataFrame
    warm: WarmStory
    export: dict[str, Any] | None
    generated: dt.datetime
    ends: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def metric(self) -> str:
        return self.spec.objective.metric

    @property
    def mode(self) -> str:
        return self.spec.objective.mode

    def scored_rows(self) -> pd.DataFrame:
        """Rows that carry a finite objective value."""
        if self.rows.empty or self.metric not in self.rows.columns:
            return self.rows.iloc[0:0]
        values = pd.to_numeric(self.rows[self.metric], errors="coerce")
        return self.rows[values.notna()]

    def last_rows(self) -> pd.DataFrame:
        """One row per trial, its furthest result, best first."""
        scored = self.scored_rows()
        if scored.empty:
            return scored
        return top_trials(scored, metric=self.metric, mode=self.mode, k=None)

    def trial_states(self) -> pd.Series:
        """Per trial (index ``trial_id``), how it ended: ``finished`` (the full budget),
        ``stopped early`` (ended by the scheduler before it), ``failed``, or ``not
        ended`` (still running, or the job was stopped before it ended)."""
        trials = set(self.rows["trial_id"].dropna()) if "trial_id" in self.rows else set()
        last: dict[str, tuple[str, float]] = {}
        if not self.ends.empty:
            for _, end in self.ends.iterrows():  # write order: the latest end wins
                iteration = pd.to_numeric(end.get("training_iteration"), errors="coerce")
                ended_at = 0.0 if pd.isna(iteration) else float(iteration)
                last[str(end["trial_id"])] = (str(end["status"]), ended_at)
        trials |= set(last)
        reached = (
            pd.to_numeric(self.rows.groupby("trial_id")["training_iteration"].max())
            if len(self.rows)
            else pd.Series(dtype=float)
        )
        states = {}
        for trial in sorted(trials):
            status, ended_at = last.get(trial, (None, 0.0))
            if status == "ERROR":
                states[trial] = "failed"
            elif status == "TERMINATED":
                furthest = max(float(reached.get(trial, 0)), ended_at)
                full = furthest >= self.spec.budget.max_iterations
                states[trial] = "finished" if full else "stopped early"
            else:
                states[trial] = "not ended"
        return pd.Series(states, dtype=object)

    def start_time(self) -> float | None:
        """Unix time the job started, as well as the records tell: the earliest trial
        start (result time minus the trial's time so far) or warm-start record."""
        times: list[float] = [float(e["time"]) for e in self.warm.log[:1]]
        if not self.rows.empty and "timestamp" in self.rows.columns:
            started = pd.to_numeric(self.rows["timestamp"], errors="coerce")
            if "time_total_s" in self.rows.columns:
                started = started - pd.to_numeric(self.rows["time_total_s"], errors="coerce")
            started = started.dropna()
            if len(started):
                times.append(float(started.min()))
        return min(times) if times else None


def load_report(jobdir: JobDir) -> JobReport:
    """Read the job file, the result store and the searcher state of ``jobdir``.

    Raises:
        warmtune.spec.JobSpecError: the job file cannot be read.
    """
    spec = jobdir.read_spec()
    rows = ResultStore(jobdir.results).read()
    ends = ResultStore(jobdir.trial_ends).read()
    export = None
    if best_trial_or_none(rows, spec) is not None:
        export = export_best(jobdir)
    return JobReport(
        jobdir=jobdir,
        spec=spec,
        rows=rows,
        warm=warm_story(jobdir, spec),
        export=export,
        generated=dt.datetime.now(dt.timezone.utc),
        ends=ends,
    )


def best_trial_or_none(rows: pd.DataFrame, spec: JobSpec) -> pd.Series | None:
    if rows.empty or spec.objective.metric not in rows.columns:
        return None
    return best_trial(rows, metric=spec.objective.metric, mode=spec.objective.mode)


# ---------------------------------------------------------------------------------------
# Warm start
# ---------------------------------------------------------------------------------------
def searcher_state(jobdir: JobDir) -> dict[str, Any] | None:
    """The latest searcher state Ray Tune saved in the experiment directory, if any.

    Tune saves it (``warmtune-searcher-<session>.json``, written atomically) with every
    experiment checkpoint; a resumed job adds a file per session, so the latest session
    wins. The session is in the name (``YYYY-MM-DD_HH-MM-SS``, which sorts by time);
    modification times do not tell, since Tune rewrites every session's file when it
    syncs the experiment at the end.
    """
    fs, root = filesystem(jobdir.root)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    found = [
        i
        for i in infos
        if i.type == pafs.FileType.File
        and i.base_name.startswith("warmtune-searcher-")
        and i.base_name.endswith(".json")
    ]
    for info in sorted(found, key=lambda i: (i.base_name, i.mtime_ns or 0), reverse=True):
        try:
            with fs.open_input_stream(info.path) as f:
                state = json.loads(f.read().decode())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict):
            return state
    return None


def warm_story(jobdir: JobDir, spec: JobSpec) -> WarmStory:
    """What the job's warm start did (see :class:`WarmStory` for the cases)."""
    name = spec.searcher.name
    kb = spec.knowledge_base.path
    cls = spec.searcher_class
    if not cls.supports_warm_start:
        return WarmStory(
            "unsupported",
            f"No warm start: the {name!r} searcher does not start warm from the knowledge "
            "base (bohb and pbt do).",
        )
    if spec.searcher.options.get("warm_start") is False:
        return WarmStory(
            "off", "No warm start: the job file switches it off (searcher.options.warm_start)."
        )
    state = searcher_state(jobdir)
    if state is None:
        return WarmStory(
            "unknown",
            "The searcher state has not been saved yet (Ray Tune saves it with each "
            "experiment checkpoint, every few seconds); generate the report again shortly.",
        )
    if "warm_start_log" not in state:
        return WarmStory(
            "unknown",
            "This job's searcher state has no warm-start record (it was run by a warmtune "
            "that did not log the weights).",
        )
    inner = state.get("searcher") or {}
    # The portfolio configurations the warm design handed out, in order.
    design = [json.loads(k) for k in inner.get("design_keys") or []]
    log = [dict(e) for e in state["warm_start_log"]]
    if not log:
        return WarmStory(
            "cold",
            f"This job started cold: when it started, the knowledge base at {kb} held no "
            "past task that shares a parameter with this search space.",
        )
    tasks = sorted(log[0]["past"])
    return WarmStory(
        "warm",
        f"This job started warm from {len(tasks)} past task(s) of the knowledge base at "
        f"{kb}. The task weights were re-computed {len(log) - 1} time(s) as the job's own "
        "results arrived.",
        log=log,
        design=design,
        design_used=len(design),
    )


# ---------------------------------------------------------------------------------------
# Importance
# ---------------------------------------------------------------------------------------
def param_importances(last: pd.DataFrame, *, spec: JobSpec) -> tuple[dict[str, float] | None, str]:
    """Optuna's PED-ANOVA importances over the trials' last results.

    The trials become an in-memory Optuna study (``create_trial`` with the search
    space's distributions; choices as their indices, so any JSON scalar works).

    Returns:
        ``(importances, note)``; ``importances`` is ``None`` when there are too few
        trials, and ``note`` then says why.
    """
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space = spec.search_space
    dists: dict[str, BaseDistribution] = {}
    for name, p in space.items():
        if p.type == "categorical":
            dists[name] = CategoricalDistribution(list(range(len(p.choices))))
        elif p.type == "int":
            dists[name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            dists[name] = FloatDistribution(float(p.low), float(p.high), log=p.log)
    trials = []
    for config, value in zip(configs(last), last[spec.objective.metric], strict=True):
        if config is None or pd.isna(value):
            continue
        params: dict[str, Any] = {}
        for name, p in space.items():
            v = config.get(name)
            if v is None or not p.contains(v):
                continue  # inactive conditional parameter
            params[name] = p.index(v) if p.type == "categorical" else v
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions={k: dists[k] for k in params},
                value=float(value),
            )
        )
    if len(trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (
            f"Not enough trials yet: importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} "
            f"trials with a result, this job has {len(trials)}."
        )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            direction="minimize" if spec.objective.mode == "min" else "maximize"
        )
        study.add_trials(trials)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = optuna.importance.get_param_importances(study)
    finally:
        optuna.logging.set_verbosity(verbosity)
    note = (
        f"Optuna's PED-ANOVA importance (optuna {optuna.__version__}) over {len(trials)} "
        f"trials, each with its last reported {spec.objective.metric}: how much each "
        "parameter's distribution in the top 10 % of trials differs from its distribution "
        "over all trials. Trials stopped early enter with their value at the budget they "
        "reached. Conditional parameters count only where they are active."
    )
    equal = [str(w.message) for w in caught if "will be equal" in str(w.message)]
    if equal:
        note += f" Optuna says: {equal[0]}"
    return {k: float(v) for k, v in result.items()}, note
