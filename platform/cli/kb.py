"""``warmtune kb ...``: look into the knowledge base, add finished jobs, remove tasks.

The main command line registers the group with ``main.add_command(kb)``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from warmtune.knowledge import KnowledgeBase

__all__ = ["kb"]

T = TypeVar("T")

_KB_HELP = "Knowledge base directory or URI (default: $WARMTUNE_KB or ~/warmtune_kb)."
_STORAGE_HELP = "Where jobs live (default: $WARMTUNE_STORAGE or ~/warmtune_results)."

kb_option = click.option("--kb", "kb_path", metavar="PATH", help=_KB_HELP)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"warmtune: error: {message}", err=True)
    sys.exit(code)


def _open(kb_path: str | None) -> KnowledgeBase:
    """The knowledge base ``--kb`` names, or a usage error (exit 2) saying what to fix."""
    if kb_path is not None and "://" not in kb_path and Path(kb_path).expanduser().is_file():
        _fail(f"--kb {kb_path} is a file; pass the knowledge base's directory")
    try:
        return KnowledgeBase(kb_path)
    except ValueError as e:
        _fail(f"--kb: {e}")


def _read(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a knowledge-base read; its warnings become one tidy line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn(*args, **kwargs)
        except ValueError as e:
            _fail(str(e))
    for w in caught:
        click.echo(f"warmtune: warning: {w.message}", err=True)
    return result


def _when(seconds: Any) -> Any:
    """Unix seconds as UTC 'YYYY-MM-DD HH:MM' text, '-' when unknown."""
    import pandas as pd

    stamps = pd.to_datetime(pd.Series(seconds, dtype="float64"), unit="s", utc=True)
    return stamps.dt.strftime("%Y-%m-%d %H:%M").fillna("-").to_numpy()


def _describe(meta: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in meta.items()) or "-"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def kb() -> None:
    """The knowledge base: observations of every past search, keyed by task.

    A new search on a task similar to a past one starts warm from what is stored
    here. It lives in one directory (or URI) of append-only Parquet files; pick it
    with --kb or $WARMTUNE_KB (default ~/warmtune_kb).

    \b
      warmtune kb import NAME         # add a finished (or running) job's results
      warmtune kb list                # the tasks, with counts and meta-features
      warmtune kb show TASK -k 5      # one task: its jobs and best configurations
      warmtune kb rm TASK             # hide a task (files are kept)
    """


@kb.command("list")
@kb_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table for reading, csv or json for other programs.",
)
def list_tasks(kb_path: str | None, fmt: str) -> None:
    """List the tasks in the knowledge base.

    One line per task: how many observations and jobs it holds, the objective
    (metric and mode) of its latest observation, when it was last observed
    (UTC), and its meta-features.
    """
    import pandas as pd

    base = _open(kb_path)
    tasks = _read(base.tasks)
    if fmt == "json":
        records = json.loads(tasks.to_json(orient="records", double_precision=15))
        click.echo(json.dumps(records, indent=2))
        return
    if fmt == "csv":
        out = tasks.assign(meta_features=[json.dumps(m) for m in tasks["meta_features"]])
        click.echo(out.to_csv(index=False), nl=False)
        return
    if tasks.empty:
        click.echo(
            f"warmtune: the knowledge base at {base.path} is empty; "
            "add a job with: warmtune kb import JOB"
        )
        return
    table = pd.DataFrame(
        {
            "task": tasks["task"],
            "observations": tasks["n_observations"],
            "jobs": tasks["n_jobs"],
            "metric": tasks["metric"],
            "mode": tasks["mode"],
            "last (UTC)": _when(tasks["last_time"]),
            # Last: meta-features can be long, the counts should stay aligned.
            "meta-features": [_describe(m) for m in tasks["meta_features"]],
        }
    )
    click.echo(f"knowledge base {base.path}: {len(tasks)} task(s)")
    click.echo(table.to_string(index=False))


@kb.command()
@click.argument("task")
@kb_option
@click.option(
    "-k",
    "--top",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="How many best configurations to show.",
)
@click.option("--metric", help="Rank by this metric (needed when the task has several).")
def show(task: str, kb_path: str | None, top: int, metric: str | None) -> None:
    """Show one task: meta-features, jobs, best configurations.

    TASK is a task name as `warmtune kb list` shows it. Each trial counts with
    its furthest result; configurations are ranked by the objective and shown
    with the budget (iterations / full budget) they reached.
    """
    import pandas as pd

    base = _open(kb_path)
    best = _read(base.best_configs, task, top, metric=metric)
    jobs = _read(base.jobs, task)
    info = _read(base.tasks).set_index("task").loc[task]
    spaces = _read(base.observations, task)["space_signature"].nunique()
    click.echo(f"task {task!r} in {base.path}")
    click.echo(f"meta-features: {_describe(info['meta_features'])}")
    click.echo(
        f"observations: {info['n_observations']} from {len(jobs)} job(s), {spaces} search space(s)"
    )
    click.echo("\njobs:")
    jobs = jobs.assign(first_time=_when(jobs["first_time"]), last_time=_when(jobs["last_time"]))
    headers = {
        "n_observations": "observations",
        "n_trials": "trials",
        "first_time": "first (UTC)",
        "last_time": "last (UTC)",
    }
    click.echo(jobs.drop(columns="task").rename(columns=headers).to_string(index=False))
    if best.empty:
        click.echo("\nno configurations recorded for this task")
        return
    click.echo(f"\nbest configurations ({best['metric'][0]}, {best['mode'][0]}):")
    flat = pd.json_normalize(best["config"].tolist(), sep="/")
    budget = [f"{b:g}/{m:g}" for b, m in zip(best["budget"], best["max_budget"], strict=True)]
    table = pd.concat(
        [best[["value"]].assign(budget=budget, job=best["job"], trial=best["trial_id"]), flat],
        axis=1,
    )
    with pd.option_context("display.max_columns", None, "display.width", 200):
        click.echo(table.to_string(index=False))


@kb.command("import")
@click.argument("job")
@click.option("--storage", help=_STORAGE_HELP)
@kb_option
def import_job(job: str, storage: str | None, kb_path: str | None) -> None:
    """Add a job's results to the knowledge base.

    JOB is a job name (looked up under --storage) or its result directory.
    Every result that reports the job's objective becomes one observation of the
    job's task. Importing a job again adds only what is new since last time, so it
    is safe to repeat (and to run on a job that is still going).
    """
    from warmtune.jobdir import JobDir, JobNotFoundError
    from warmtune.spec import JobSpecError

    base = _open(kb_path)
    try:
        jobdir = JobDir.find(job, storage=storage)
        spec = jobdir.read_spec()
    except (JobNotFoundError, JobSpecError) as e:
        _fail(str(e))
    added = _read(base.add_job, jobdir)
    name, task = spec.name, spec.task.name
    if added:
        click.echo(
            f"warmtune: added {added} observation(s) of job {name!r} (task {task!r}) to {base.path}"
        )
        return
    held = _read(base.observations, task)
    if (held["job"] == name).any():
        click.echo(f"warmtune: job {name!r} is already in {base.path}; nothing new to add")
        return
    _fail(
        f"job {name!r} has no results reporting {spec.objective.metric!r} yet "
        f"(at {jobdir.results}); import it once trials have reported",
        code=1,
    )


@kb.command()
@click.argument("task")
@kb_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm(task: str, kb_path: str | None, yes: bool) -> None:
    """Remove a task (hide its observations) from the knowledge base.

    Its observations are hidden by a tombstone, not deleted (the files stay, as
    everything in the knowledge base is append-only). Observations added later,
    by a new search or by importing a job again, show as usual.
    """
    base = _open(kb_path)
    tasks = _read(base.tasks)
    if task not in set(tasks["task"]):
        known = ", ".join(tasks["task"]) or "none; the knowledge base is empty"
        _fail(
            f"no task {task!r} in the knowledge base at {base.path} (tasks: {known}); "
            "check the name with `warmtune kb list`"
        )
    n = int(tasks.set_index("task").loc[task, "n_observations"])
    if not yes:
        click.confirm(f"Remove task {task!r} ({n} observations) from {base.path}?", abort=True)
    hidden = _read(base.remove_task, task)
    click.echo(f"warmtune: removed task {task!r} ({hidden} observations hidden)")


@kb.command()
@click.argument("task")
@kb_option
@click.option("-k", "--top", default=10, show_default=True, help="How many past tasks to show.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def similar(task: str, kb_path: str | None, top: int, fmt: str) -> None:
    """The past tasks most similar to TASK, with their weights and why.

    These are the weights a warm-started BOHB on TASK would use now, given TASK's own
    results in the knowledge base: each past task's learned prior (how well its model
    ordered the other past tasks, calibrated leave-one-task-out, with the meta-features)
    and its measured concordance with TASK's results, competing with TASK's own model
    and with chance. TASK's own earlier searches are its history, not a past task.
    """
    from warmtune.knowledge import past_tasks
    from warmtune.searchers.encoding import SpaceCodec
    from warmtune.searchers.kernelreg import leave_one_out_scores
    from warmtune.searchers.warmstart import WarmStart

    store = _open(kb_path)
    frame = _read(store.observations)
    if frame.empty:
        _fail(f"the knowledge base at {store.path} is empty; run or import a job first")
    mine = frame[frame["task"] == task]
    if mine.empty:
        known = ", ".join(sorted(frame["task"].unique()))
        _fail(f"no task {task!r} in the knowledge base; known tasks: {known}")
    (target,) = past_tasks(mine)
    best = float(target.values.min())
    sign = 1.0 if str(mine.iloc[0]["mode"]) == "min" else -1.0
    history = {
        "observations": len(target.values),
        "jobs": int(mine["job"].nunique()) if "job" in mine else 0,
        "best": sign * best,
        "metric": str(mine.iloc[0]["metric"]),
    }
    names = set(target.space)
    others = frame[frame["task"] != task]
    others = others[others["space_json"].map(lambda s: bool(names & set(json.loads(s))))]
    if others.empty:
        if fmt == "json":
            click.echo(json.dumps({"task": task, "history": history, "similar": []}, indent=2))
            return
        click.echo(
            f"{task!r}: {history['observations']} observations from {history['jobs']} job(s), "
            f"best {history['metric']} {history['best']:.6g}."
        )
        click.echo(
            "No other task in the knowledge base shares a parameter with it: a new search of "
            f"{task!r} continues from this history alone (its own evidence, weight 1.0), "
            "and does not re-run a configuration measured at the full budget with its seed."
        )
        return
    warm = WarmStart(
        space=target.space, past_tasks=past_tasks(others), meta_features=target.meta_features
    )
    codec = SpaceCodec(target.space)
    rows = codec.encode(target.configs, foreign=True)
    own = leave_one_out_scores(rows, target.values, target.budgets, codec)
    weights = warm.update(
        configs=target.configs, values=target.values, budgets=target.budgets, own_scores=own
    )
    rows_out = []
    for name, weight in weights.ranked()[:top]:
        rows_out.append({"task": name, "weight": weight, **weights.explanations[name]})
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "task": task,
                    "history": history,
                    "n_own": weights.n_own,
                    "past_share": weights.past_share,
                    "own": weights.own,
                    "random": weights.random,
                    "similar": rows_out,
                },
                indent=2,
                default=float,
            )
        )
        return
    click.echo(
        f"tasks most similar to {task!r} ({weights.n_own} own observations, best "
        f"{history['metric']} {history['best']:.6g}): the past {weights.past_share:.3f}, "
        f"its own model {weights.own:.3f}, chance {weights.random:.3f}"
    )
    click.echo(
        f"  {'task':24} {'weight':>7} {'prior':>6} {'±':>5} {'measured':>8} {'pairs':>6} "
        f"{'meta dist':>9}"
    )
    for r in rows_out:
        click.echo(
            f"  {r['task']:24} {r['weight']:7.3f} {r['prior_mean']:6.3f} {r['prior_sd']:5.3f} "
            f"{_num(r.get('measured')):>8} {int(r.get('pairs') or 0):>6} "
            f"{_num(r.get('meta_distance')):>9}"
        )
    click.echo(
        "  weight: posterior probability that the task's model orders this task's results "
        "best; prior ± sd: its concordance expected from the other past tasks (learned "
        "leave-one-task-out) and meta-features; measured: the share of pairs of this "
        "task's results it orders rightly"
    )


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"
