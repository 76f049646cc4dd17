"""``warmtune report``: a job's results as one self-contained HTML page."""

from __future__ import annotations

import sys

import click

from warmtune.spec import JobSpecError

__all__ = ["report"]


@click.command()
@click.argument("job")
@click.option(
    "--storage", help="Where jobs live (default: $WARMTUNE_STORAGE or ~/warmtune_results)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="HTML file to write (default: NAME-report.html in the current directory).",
)
def report(job: str, storage: str | None, output: str | None) -> None:
    """Write the report of JOB (a job name or its result directory) as one HTML file.

    The page needs nothing else to be viewed (figures are inline SVG, no scripts):
    the best objective so far against wall time and budget, each trial's learning
    curve, the configurations in parallel coordinates, hyperparameter importance,
    the warm start's past tasks and weights, the top trials and the exported best
    configuration. It shows what the result store holds now, so it works while
    the job runs; run it again to refresh.
    """
    from warmtune.jobdir import JobDir, JobNotFoundError

    try:
        jobdir = JobDir.find(job, storage=storage)
    except JobNotFoundError as e:
        click.echo(f"warmtune: error: {e}", err=True)
        sys.exit(2)
    try:
        from warmtune.report import write_report
    except ImportError as e:  # matplotlib is a dependency; a broken install lacks it
        click.echo(
            f"warmtune: error: the report needs matplotlib ({e}); "
            "install it with `pip install matplotlib`",
            err=True,
        )
        sys.exit(2)
    path = output or f"{jobdir.name}-report.html"
    try:
        shown = write_report(jobdir, path)
    except JobSpecError as e:
        click.echo(f"warmtune: error: {e}", err=True)
        sys.exit(2)
    n_trials = int(shown.rows["trial_id"].nunique()) if len(shown.rows) else 0
    if shown.rows.empty:
        click.echo(
            f"warmtune: job {shown.spec.name!r} has no results yet; wrote {path} anyway "
            "(run this again once trials have reported)"
        )
    else:
        click.echo(
            f"warmtune: wrote {path} ({n_trials} trials, {len(shown.rows)} result rows; "
            f"warm start: {shown.warm.status})"
        )
