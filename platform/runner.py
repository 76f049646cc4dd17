"""Run a job: JobSpec -> ``ray.tune.Tuner`` -> results in the job's ResultStore.

:func:`run_job` validates what Ray cannot (an existing job of the same name, a
resume of a changed job), attaches to Ray, and runs the search with the job's
searcher, scheduler, budget and resources. Every reported row goes to the
ResultStore as it arrives; ``resume=True`` continues an interrupted job through
``Tuner.restore`` (trials from their checkpoints, the searcher from its state).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, TextIO

from warmtune.export import best_trial
from warmtune.jobdir import JobDir
from warmtune.knowledge import KnowledgeBase
from warmtune.searchers import make_searcher
from warmtune.spec import AshaOptions, JobSpec, dump_job, job_from_dict
from warmtune.store import ResultStore, configs
from warmtune.warm import warm_start_for

# Ray, and the modules built on it (the Tune callbacks and adapters, the cluster
# connection), are imported where a run needs them: `warmtune --help`, `results` and
# `export` never start Ray (tests/test_layout.py holds the command line to that).

__all__ = ["EXIT_JOB_EXISTS", "JobExistsError", "RunSummary", "run_job"]


EXIT_JOB_EXISTS = 3
"""Exit status of ``warmtune run`` for a job name that already has results, so a cluster
job rejected for it can be told apart from a failed search (``warmtune status``)."""


class JobExistsError(RuntimeError):
    """A job with this name already has results (and ``resume`` was not asked for)."""


@dataclass(frozen=True)
class RunSummary:
    """What a finished run produced.

    Attributes:
        job: the job name.
        root: the job directory (Ray experiment dir; results under ``warmtune/``).
        n_trials: trials that reported at least once.
        n_errors: trials that ended in an error.
        wall_s: seconds the run took.
        best: the best trial's last row as a dict (``trial_id``, metric,
            ``training_iteration``, ``config``), or ``None``.
        interrupted: the run stopped before its budget (Ctrl+C); ``resume`` continues it.
        kb_rows: observations added to the knowledge base (0 when opted out or interrupted).
    """

    job: str
    root: str
    n_trials: int
    n_errors: int
    wall_s: float
    best: dict[str, Any] | None
    interrupted: bool = False
    kb_rows: int = 0


def run_job(
    spec: JobSpec,
    *,
    resume: bool = False,
    config: dict[str, Any] | None = None,
    address: str | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
) -> RunSummary:
    """Run (or resume) a search job on Ray.

    Args:
        spec: the validated job.
        resume: continue the interrupted job of the same name.
        config: run only this configuration, at full budget, as a new job named
            ``NAME-config-<time>`` (what ``warmtune run --config best.yaml`` does).
        address: Ray address (see :func:`warmtune.cluster.connect.connect_ray`).
        progress: print a status line every few seconds.
        stream: where progress goes (default stdout).

    Raises:
        JobExistsError: the job already has results and ``resume`` is false.
        ValueError: nothing to resume, the job file changed since the run
            started, or ``config`` does not fit the search space.
    """
    from warmtune.cluster.connect import connect_ray

    if config is not None:
        if resume:
            raise ValueError(
                "--config runs a new single-trial job; it cannot be combined with --resume"
            )
        spec = _single_config_job(spec, config)
    jobdir = JobDir.of(spec)
    if resume:
        _check_resumable(spec, jobdir)
    elif jobdir.exists():
        raise JobExistsError(
            f"job {spec.name!r} already has results at {jobdir.root}; continue it with "
            "--resume, or give the new run another name (--name NEW or 'name:' in the job file)"
        )

    where = connect_ray(address)
    if progress:
        print(f"warmtune: job {spec.name!r} on {where}", file=stream, flush=True)
        print(f"warmtune: results -> {jobdir.root}", file=stream, flush=True)
    if not resume:
        try:
            jobdir.write_spec(spec)
        except FileExistsError:
            raise JobExistsError(
                f"job {spec.name!r} was started by another run at the same moment "
                f"({jobdir.root}); give this run another name (--name NEW)"
            ) from None

    # Tune warns whenever it snapshots often, which checkpoint-every-iteration
    # trainables do by design; the warning is noise for a warmtune user.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    start = time.monotonic()
    tuner = _tuner(
        spec, jobdir, resume=resume, fixed_config=config, progress=progress, stream=stream
    )
    grid = tuner.fit()
    wall_s = time.monotonic() - start
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    out_of_time = spec.budget.time is not None and wall_s >= spec.budget.time
    if not unfinished and not out_of_time:
        # On Ctrl+C (or `warmtune stop`) Tune saves the experiment, then stops the
        # running trials and reports them as terminated, so the grid alone cannot
        # tell an interrupted search from a finished one; the saved state can.
        unfinished = _unfinished_in_saved_state(jobdir.root)
    missing = spec.budget.trials is not None and len(grid) < spec.budget.trials
    interrupted = unfinished > 0 or (missing and not out_of_time)
    summary = _summary(spec, jobdir, wall_s=wall_s, n_errors=grid.num_errors)
    kb_rows = 0
    if spec.knowledge_base.add and not interrupted and config is None:
        # Idempotent: a resumed job adds only what the knowledge base lacks.
        kb_rows = KnowledgeBase(spec.knowledge_base.path).add_job(
            jobdir, meta_features=spec.task_meta_features
        )
    return dataclasses.replace(summary, interrupted=interrupted, kb_rows=kb_rows)


def _unfinished_in_saved_state(root: str) -> int:
    """Trials that were running when Tune last saved the experiment: those that
    ``Tuner.restore`` (``--resume``) continues from their checkpoints.

    Only for a run whose grid shows every trial finished. PAUSED does not count
    then: a paused trial that a scheduler stops at the end without running it
    again keeps that status in the saved state (Tune saves a trial's new status
    when the trial has an actor), and one still paused at an interrupt would not
    show as finished in the grid."""
    from ray.tune import ExperimentAnalysis

    # It reads the trials' results too, and warns about a trial that has none yet
    # (one interrupted before its first report), which is no news here.
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        trials = ExperimentAnalysis(root).trials
    finally:
        log.setLevel(level)
    return sum(trial.status in ("RUNNING", "PENDING") for trial in trials)


def _single_config_job(spec: JobSpec, config: dict[str, Any]) -> JobSpec:
    try:
        spec.search_space.validate(config)
    except ValueError as e:
        raise ValueError(f"--config does not fit the job's search space: {e}") from None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    data = spec.model_dump(mode="json")
    data.update(
        name=f"{spec.name}-config-{stamp}",
        searcher={"name": "random", "options": {}},
        scheduler={"name": "fifo", "options": {}},
        budget={"trials": 1, "max_iterations": spec.budget.max_iterations},
        max_concurrency=1,
    )
    return job_from_dict(data, source="--config job")


def _check_resumable(spec: JobSpec, jobdir: JobDir) -> None:
    if not jobdir.exists():
        raise ValueError(
            f"nothing to resume: job {spec.name!r} has no results at {jobdir.root}; "
            "run it without --resume first"
        )
    saved = jobdir.read_spec()
    if dump_job(saved) != dump_job(spec):
        old, new = saved.model_dump(), spec.model_dump()
        changed = sorted(k for k in new if old.get(k) != new.get(k))
        raise ValueError(
            f"the job file changed since job {spec.name!r} started (fields: {changed}); "
            "a resumed search must keep its spec: restore the file, or start a new job "
            f"under another name (the original is at {jobdir.spec_path})"
        )


def _tuner(
    spec: JobSpec,
    jobdir: JobDir,
    *,
    resume: bool,
    fixed_config: dict[str, Any] | None,
    progress: bool,
    stream: TextIO | None,
) -> Any:
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(
            _quiet(spec.trainable_info.load()),
            max_iterations=spec.budget.max_iterations,
            seed=spec.seed,
            **spec.trainable_params,
        ),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    if resume:
        # Tune restores its own run and tune configs (callbacks, searcher,
        # scheduler) from the experiment directory.
        return tune.Tuner.restore(
            jobdir.root, trainable=trainable, resume_unfinished=True, resume_errored=True
        )

    from warmtune.cluster.metrics import MetricsCallback
    from warmtune.progress import ProgressPrinter
    from warmtune.recorder import ResultRecorder
    from warmtune.searchers.ray_adapter import BudgetScheduler, PBTScheduler

    callbacks: list[Any] = [
        ResultRecorder(
            ResultStore(jobdir.results), job=spec.name, ends=ResultStore(jobdir.trial_ends)
        ),
        MetricsCallback(job=spec.name, metric=spec.objective.metric, mode=spec.objective.mode),
    ]
    if progress:
        callbacks.append(
            ProgressPrinter(
                metric=spec.objective.metric,
                mode=spec.objective.mode,
                max_iterations=spec.budget.max_iterations,
                stream=stream,
            )
        )
    if fixed_config is not None:
        search_alg, param_space, scheduler = None, dict(fixed_config), None
    else:
        search_alg, scheduler, param_space = _search_alg_and_scheduler(spec)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=spec.objective.metric,
            mode=spec.objective.mode,
            num_samples=spec.budget.trials or -1,
            time_budget_s=spec.budget.time,
            search_alg=search_alg,
            scheduler=scheduler,
            # Tune's own limit counts paused trials as running; the budget and PBT
            # schedulers apply max_concurrency themselves.
            max_concurrent_trials=None
            if isinstance(scheduler, (BudgetScheduler, PBTScheduler))
            else spec.max_concurrency,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=jobdir.name,
            storage_path=jobdir.storage,
            stop={"training_iteration": spec.budget.max_iterations},
            # PBT clones checkpoints of other trials later on, so it must keep them all.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=None if spec.searcher_class.copies_checkpoints else 2
            ),
            failure_config=tune.FailureConfig(max_failures=spec.max_retries),
            callbacks=callbacks,
            verbose=0,
        ),
    )


def _quiet(fn: Any) -> Any:
    """Run ``fn`` with Ray Train's per-checkpoint INFO lines silenced in the worker."""

    @functools.wraps(fn)
    def run(config: dict, **kwargs: Any) -> Any:
        logging.getLogger("ray.train").setLevel(logging.WARNING)
        return fn(config, **kwargs)

    return run


def _search_alg_and_scheduler(spec: JobSpec) -> tuple[Any, Any, dict[str, Any]]:
    """Tune's search algorithm, scheduler and param space for the job's searcher.

    A warmtune searcher supplies whole configurations, so the param space stays empty.
    """
    from warmtune.cluster.metrics import JobMetrics
    from warmtune.searchers.ray_adapter import BudgetScheduler, PBTScheduler, TuneSearcher

    warm, history, source = warm_start_for(spec)
    searcher = make_searcher(
        spec.searcher.name,
        space=spec.search_space,
        seed=spec.seed,
        options=spec.searcher.options,
        max_budget=spec.budget.max_iterations,
        population_size=spec.budget.trials,
        warm_start=warm,
        history=history,
    )
    adapter = TuneSearcher(
        searcher,
        metric=spec.objective.metric,
        mode=spec.objective.mode,
        rebuild=source,
        metrics=JobMetrics(spec.name),
    )
    if searcher.copies_checkpoints:
        # PBT: its decisions, carried out by Ray's population-based training scheduler.
        return adapter, PBTScheduler(max_concurrent=spec.max_concurrency), {}
    if searcher.schedules_trials:
        # Successive halving decided by the searcher, carried out by pausing and
        # resuming Tune's trials.
        scheduler = BudgetScheduler(
            max_budget=spec.budget.max_iterations, max_concurrent=spec.max_concurrency
        )
        return adapter, scheduler, {}
    return adapter, _scheduler(spec), {}


def _scheduler(spec: JobSpec) -> Any:
    if spec.scheduler.name == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    options = AshaOptions.model_validate(spec.scheduler.options)
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=spec.budget.max_iterations,
        grace_period=options.grace_period,
        reduction_factor=options.reduction_factor,
        brackets=options.brackets,
    )


def _summary(spec: JobSpec, jobdir: JobDir, *, wall_s: float, n_errors: int) -> RunSummary:

    df = ResultStore(jobdir.results).read()
    best = None
    row = best_trial(df, metric=spec.objective.metric, mode=spec.objective.mode)
    if row is not None:
        (config,) = configs(row.to_frame().T)
        best = {
            "trial_id": str(row["trial_id"]),
            spec.objective.metric: float(row[spec.objective.metric]),
            "training_iteration": int(row["training_iteration"]),
            "config": config,
        }
    n_trials = int(df["trial_id"].nunique()) if len(df) else 0
    return RunSummary(spec.name, jobdir.root, n_trials, n_errors, wall_s, best)
