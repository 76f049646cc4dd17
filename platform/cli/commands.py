"""The ``warmtune`` command line."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from warmtune.cli.bench import bench
from warmtune.cli.data import data
from warmtune.cli.jobs import JOB_COMMANDS
from warmtune.cli.kb import kb
from warmtune.cli.report import report
from warmtune.spec import JobSpecError

_STORAGE_HELP = "Where jobs live (default: $WARMTUNE_STORAGE or ~/warmtune_results)."


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"warmtune: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="warmtune")
def main() -> None:
    """warmtune: hyperparameter and architecture search on Ray Tune.

    Write a search as one YAML job file, run it on an embedded Ray instance or a
    cluster, then inspect and export the best configuration:

    \b
      warmtune demo                          # a real search, in about a minute
      warmtune run job.yaml                  # run a job file
      warmtune run job.yaml --resume         # continue an interrupted job
      warmtune results NAME                  # the best trials so far
      warmtune export NAME -o best.yaml      # the best configuration
      warmtune run job.yaml --config best.yaml   # rerun just that configuration
    """


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="Continue the interrupted job of the same name.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run only this configuration (a `warmtune export` file) at full budget.",
)
@click.option("--name", help="Run under this job name instead of the file's.")
@click.option("--storage", help="Override the job file's storage (path or URI).")
@click.option(
    "--address",
    help="Ray address: 'local' for a new embedded instance, HOST:PORT for a cluster "
    "(default: $RAY_ADDRESS, a cluster started on this machine, else embedded).",
)
@click.option("--quiet", is_flag=True, help="No progress lines; print only the summary.")
def run(
    job_file: Path,
    resume: bool,
    config_file: Path | None,
    name: str | None,
    storage: str | None,
    address: str | None,
    quiet: bool,
) -> None:
    """Run the search described by JOB_FILE.

    Results are written as they arrive to STORAGE/NAME (Ray's experiment
    directory, with warmtune's Parquet results under warmtune/). Interrupt with
    Ctrl+C and continue later with --resume.
    """
    from warmtune.export import read_export
    from warmtune.spec import load_job

    overrides: dict[str, Any] = {}
    if name:
        overrides["name"] = name
    if storage:
        overrides["storage"] = storage
    try:
        spec = load_job(job_file, overrides=overrides)
        config = read_export(config_file) if config_file else None
    except (JobSpecError, ValueError) as e:
        _fail(str(e))
    from warmtune.cluster.submit import RESUME_HINT_VARIABLE

    # A submitted job is continued by submitting it again (`warmtune submit` says how).
    hint = os.environ.get(RESUME_HINT_VARIABLE) or (
        f"warmtune run {job_file} --resume" + (f" --name {name}" if name else "")
    )
    hint += f" --storage {storage}" if storage else ""
    _run(spec, resume=resume, config=config, address=address, quiet=quiet, resume_hint=hint)


@main.command()
@click.option(
    "--name",
    help="Job name (default: quickstart, or quickstart-2, -3, ... when that one exists).",
)
@click.option("--storage", help=_STORAGE_HELP)
@click.option("--address", help="Ray address (see `warmtune run --help`).")
@click.option("--show", is_flag=True, help="Print the quickstart job file and exit.")
@click.option("--resume", is_flag=True, help="Continue an interrupted demo.")
def demo(
    name: str | None, storage: str | None, address: str | None, show: bool, resume: bool
) -> None:
    """Run the quickstart: MAML on sinusoid regression, searched with random
    search and ASHA on an embedded Ray (about 1.5 minutes on 2 CPU cores).

    Running it again starts a new job (quickstart-2, ...) rather than touching the
    results of the last one; --resume continues the latest.
    """
    from warmtune.jobdir import JobDir
    from warmtune.spec import load_job

    path = example_path("quickstart.yaml")
    if show:
        click.echo(path.read_text(), nl=False)
        return
    overrides: dict[str, Any] = {"storage": storage} if storage else {}
    spec = load_job(path, overrides=overrides)
    if name is None:
        # The latest existing demo job (for --resume) or the next free name.
        candidates = ["quickstart"] + [f"quickstart-{i}" for i in range(2, 1000)]
        taken = list(itertools.takewhile(lambda c: JobDir.of(spec, name=c).exists(), candidates))
        if resume:
            name = taken[-1] if taken else "quickstart"
        else:
            name = next(c for c in candidates if c not in taken)
    spec = load_job(path, overrides={**overrides, "name": name})
    hint = f"warmtune demo --resume --name {name}" + (f" --storage {storage}" if storage else "")
    _run(spec, resume=resume, config=None, address=address, quiet=False, resume_hint=hint)


def example_path(name: str) -> Path:
    """A job file shipped in the package (examples/ of the repository)."""
    # importlib.resources trips over namespace packages in editable installs on
    # Python 3.11, so look the folder up through the import system directly.
    spec = importlib.util.find_spec("warmtune.examples")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise FileNotFoundError(f"example {name!r} is not installed with warmtune")


def _run(
    spec: Any,
    *,
    resume: bool,
    config: Any,
    address: str | None,
    quiet: bool,
    resume_hint: str = "warmtune run JOB.yaml --resume",
) -> None:
    from warmtune.cluster.connect import RayAuthError
    from warmtune.runner import EXIT_JOB_EXISTS, JobExistsError, run_job

    try:
        summary = run_job(spec, resume=resume, config=config, address=address, progress=not quiet)
    except JobExistsError as e:
        _fail(str(e), code=EXIT_JOB_EXISTS)
    except (RayAuthError, ValueError) as e:
        _fail(str(e))
    click.echo("")
    state = "was interrupted after" if summary.interrupted else "finished in"
    click.echo(
        f"warmtune: job {summary.job!r} {state} {summary.wall_s:.0f}s: "
        f"{summary.n_trials} trials, {summary.n_errors} failed"
    )
    if summary.best is None:
        click.echo("warmtune: no trial reported the objective; see the trial logs above")
    else:
        best = summary.best
        metric = spec.objective.metric
        click.echo(
            f"warmtune: best {metric} = {best[metric]:.6g} "
            f"(trial {best['trial_id']}'s last report, iteration {best['training_iteration']})"
        )
        click.echo("warmtune: best configuration:")
        for key, value in best["config"].items():
            click.echo(f"    {key}: {value!r}")
    if summary.n_trials:
        click.echo(f"warmtune: results written to {summary.root}")
    else:
        click.echo(f"warmtune: no trial reported anything; no results in {summary.root}")
    if summary.kb_rows:
        click.echo(
            f"warmtune: added {summary.kb_rows} observations of task {spec.task.name!r} "
            f"to the knowledge base at {spec.knowledge_base.path}"
        )
    if summary.best is not None:
        click.echo(f"warmtune: next: warmtune results {summary.root}")
        click.echo(f"          warmtune export {summary.root} -o best.yaml")
    if summary.interrupted:
        click.echo(f"warmtune: continue it with: {resume_hint}")
        sys.exit(130)
    if summary.n_errors:
        sys.exit(1)


@main.command()
@click.argument("job")
@click.option("--storage", help=_STORAGE_HELP)
@click.option("-k", "--top", default=10, show_default=True, help="How many trials to show.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option("--all-rows", is_flag=True, help="Every reported row, not one per trial.")
def results(job: str, storage: str | None, top: int, fmt: str, all_rows: bool) -> None:
    """Show the best trials of JOB (a job name or its result directory).

    One row per trial (its last report), best first: trial id, the objective,
    the iteration reached, and the configuration. Works while the job runs.
    """
    import pandas as pd

    from warmtune.export import EXIT_NO_RESULTS, top_trials
    from warmtune.jobdir import JobDir, JobNotFoundError
    from warmtune.store import ResultStore

    try:
        jobdir = JobDir.find(job, storage=storage)
        spec = jobdir.read_spec()
    except (JobNotFoundError, JobSpecError) as e:
        _fail(str(e))
    df = ResultStore(jobdir.results).read()
    metric, mode = spec.objective.metric, spec.objective.mode
    if df.empty:
        _fail(f"job {spec.name!r} has no results yet (at {jobdir.results})", code=EXIT_NO_RESULTS)
    if all_rows:
        table = df
    else:
        table = top_trials(df, metric=metric, mode=mode, k=top)
        config_cols = [c for c in table.columns if c.startswith("config/")]
        cols = ["trial_id", metric, "training_iteration", "time_total_s", *config_cols]
        table = table[[c for c in cols if c in table.columns]].rename(
            columns=lambda c: c.removeprefix("config/")
        )
    if fmt == "csv":
        click.echo(table.to_csv(index=False), nl=False)
    elif fmt == "json":
        records = json.loads(table.to_json(orient="records", double_precision=15))
        click.echo(json.dumps(records, indent=2))
    else:
        with pd.option_context("display.max_columns", None, "display.width", 200):
            click.echo(f"job {spec.name!r} (task {spec.task.name}), {metric} ({mode}):")
            click.echo(table.to_string(index=False))


@main.command()
@click.argument("job")
@click.option("--storage", help=_STORAGE_HELP)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File to write.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default=None,
    help="Default: from the output file's extension, else yaml.",
)
def export(job: str, storage: str | None, output: str | None, fmt: str | None) -> None:
    """Export the best configuration of JOB with its provenance.

    The file holds the configuration, its objective value and budget, the trial
    id, the job and task names, and the versions of warmtune, Ray and torch.
    Feed it back with `warmtune run JOB.yaml --config FILE`.
    """
    from warmtune.export import EXIT_NO_RESULTS, NoResultsError, export_best, write_export
    from warmtune.jobdir import JobDir, JobNotFoundError

    if fmt is None:
        fmt = "json" if output and output.endswith(".json") else "yaml"
    try:
        doc = export_best(JobDir.find(job, storage=storage))
    except NoResultsError as e:
        _fail(str(e), code=EXIT_NO_RESULTS)
    except (JobNotFoundError, JobSpecError, ValueError) as e:
        _fail(str(e))
    text = write_export(doc, output, fmt)
    if output:
        click.echo(
            f"warmtune: wrote {output} ({doc['objective']['metric']} = "
            f"{doc['objective']['value']:.6g}, trial {doc['trial_id']})"
        )
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
def validate(job_file: Path) -> None:
    """Check JOB_FILE without running it (exit status 2 and the problems if invalid)."""
    from warmtune.spec import load_job

    try:
        spec = load_job(job_file)
    except JobSpecError as e:
        _fail(str(e))
    click.echo(
        f"{job_file}: ok: job {spec.name!r}, {len(spec.space)} parameters, "
        f"trainable {spec.trainable.name}, {spec.objective.mode} {spec.objective.metric}"
    )


@main.command()
def trainables() -> None:
    """List the built-in trainables and the metrics they report."""
    from warmtune.trainables import BUILTIN

    for info in BUILTIN.values():
        metrics = (
            ", ".join(f"{m} ({mode})" for m, mode in info.metrics.items())
            if info.metrics is not None
            else "depend on the params (checked when the run starts)"
        )
        click.echo(f"{info.name}: {info.description}\n    metrics: {metrics}")


main.add_command(kb)
main.add_command(bench)
for _command in JOB_COMMANDS:
    main.add_command(_command)
main.add_command(report)
main.add_command(data)

if __name__ == "__main__":
    main()
