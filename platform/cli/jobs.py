"""``warmtune submit / jobs / status / logs / stop``: search jobs on a Ray cluster.

They talk to the cluster's Jobs API (the dashboard address, ``--address``) through
:mod:`warmtune.cluster.jobs_api`; :mod:`warmtune.cluster.submit` prepares what a
submission carries. The main command line registers :data:`JOB_COMMANDS`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

__all__ = ["JOB_COMMANDS", "jobs", "logs", "status", "stop", "submit"]

FAILED_TAIL_LINES = 15
"""Lines of a failed job's output that ``submit --wait`` prints."""

_ADDRESS_HELP = (
    "The cluster's dashboard / Jobs API, e.g. http://HEAD:8265 (default: "
    "$RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS, else http://127.0.0.1:8265)."
)
address_option = click.option("--address", metavar="URL", help=_ADDRESS_HELP)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"warmtune: error: {message}", err=True)
    sys.exit(code)


def _client(address: str | None) -> Any:
    from warmtune.cluster.jobs_api import ClusterError, JobsClient

    try:
        return JobsClient(address)
    except ClusterError as e:
        _fail(str(e))


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _duration(info: Any) -> str:
    if not info.start_time:
        return "-"
    end = info.end_time or dt.datetime.now().timestamp() * 1000
    return f"{(end - info.start_time) / 1000:.0f}s"


def _finish(client: Any, submission_id: str, info: Any) -> NoReturn:
    """Say how the job ended and exit with 0 (succeeded) or 1."""
    from warmtune.cluster.jobs_api import ClusterError, status_name

    state = status_name(info)
    meta = info.metadata or {}
    if state == "SUCCEEDED":
        click.echo(f"warmtune: job {submission_id} SUCCEEDED in {_duration(info)}")
        job, storage = meta.get("warmtune_job"), meta.get("storage")
        if job:
            where = f" --storage {storage}" if storage and not storage.startswith("(") else ""
            click.echo(f"warmtune: next: warmtune results {job}{where}")
        sys.exit(0)
    click.echo(f"warmtune: job {submission_id} {state}: {info.message or ''}".rstrip(": "))
    if state == "FAILED":
        # What went wrong is at the end of the driver's output (a traceback, or
        # warmtune's own error line); the message only says the entrypoint failed.
        try:
            output = client.logs(submission_id)
        except ClusterError:
            output = ""
        last = [line for line in output.splitlines() if line.strip()][-FAILED_TAIL_LINES:]
        if last:
            click.echo("warmtune: the end of its output:")
            for line in last:
                click.echo(f"    {line}")
    click.echo(f"warmtune: its output: warmtune logs {submission_id} --address {client.address}")
    sys.exit(1)


@click.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@address_option
@click.option("--name", help="Run under this job name instead of the file's.")
@click.option(
    "--storage",
    help="Where the cluster writes the results: a path every node sees (shared file "
    "system) or a URI (s3://...). Default: the job file's storage, else the cluster's "
    "$WARMTUNE_STORAGE or ~/warmtune_results on the head node.",
)
@click.option("--resume", is_flag=True, help="Continue the interrupted job of the same name.")
@click.option(
    "--code",
    type=click.Choice(["wheel", "installed"]),
    default="wheel",
    show_default=True,
    help="wheel: ship this warmtune with the job, built from its source checkout (cached). "
    "installed: use the cluster image's warmtune, which must be this version.",
)
@click.option(
    "--no-check",
    is_flag=True,
    help="Do not validate JOB_FILE here (when its data paths exist only on the cluster).",
)
@click.option("--wait", is_flag=True, help="Wait until the job ends; exit 1 unless it succeeded.")
@click.option("--follow", is_flag=True, help="Print the job's output as it runs (implies --wait).")
def submit(
    job_file: Path,
    address: str | None,
    name: str | None,
    storage: str | None,
    resume: bool,
    code: str,
    no_check: bool,
    wait: bool,
    follow: bool,
) -> None:
    """Submit JOB_FILE to a Ray cluster through the Ray Jobs API.

    The head node runs `warmtune run JOB_FILE` attached to the cluster, with the
    job file and (with --code wheel) this warmtune shipped alongside. The job shows
    in the dashboard's Jobs view with warmtune's metadata; follow it with
    `warmtune jobs`, `warmtune status ID`, `warmtune logs ID --follow`.
    """
    from warmtune.cluster.jobs_api import ClusterError
    from warmtune.cluster.submit import existing_job, package_code, prepare_submission
    from warmtune.spec import JobSpecError

    # Ray logs every package it uploads at INFO; the summary line below says it once.
    for logger in ("ray.dashboard", "ray._private.runtime_env"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    client = _client(address)
    try:
        bundle = package_code("wheel" if code == "wheel" else "installed")
        sub = prepare_submission(
            job_file,
            name=name,
            storage=storage,
            resume=resume,
            code=bundle,
            check=not no_check,
            address=client.address,
        )
        held = None if resume else existing_job(sub.storage, sub.job)
        if held is not None:
            raise ClusterError(
                f"job {sub.job!r} already has results at {held}; nothing was submitted. "
                "Continue it with --resume, or give the new run another name (--name NEW "
                "or 'name:' in the job file)"
            )
        submission_id = client.submit(sub)
    except (JobSpecError, ClusterError) as e:
        _fail(str(e))
    shipped = "this warmtune as a wheel" if bundle.mode == "wheel" else "the cluster's warmtune"
    click.echo(
        f"warmtune: submitted job {sub.job!r} as {submission_id} to {client.address} "
        f"(warmtune {bundle.version}, {shipped})"
    )
    click.echo(f"warmtune: results -> {sub.storage or 'the cluster default storage'}/{sub.job}")
    if not (wait or follow):
        click.echo(f"warmtune: follow it: warmtune logs {submission_id} --follow")
        return
    try:
        if follow:
            client.follow(submission_id, sys.stdout)
        info = client.wait(
            submission_id,
            on_change=None if follow else lambda s: click.echo(f"warmtune: {submission_id}: {s}"),
        )
    except ClusterError as e:
        _fail(str(e))
    _finish(client, submission_id, info)


@click.command()
@address_option
@click.option("--all", "show_all", is_flag=True, help="Also jobs not submitted by warmtune.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
def jobs(address: str | None, show_all: bool, fmt: str) -> None:
    """List the jobs on the cluster, oldest first, with their status and metadata."""
    from warmtune.cluster.jobs_api import ClusterError, status_name

    client = _client(address)
    try:
        found = client.list()
    except ClusterError as e:
        _fail(str(e))
    if not show_all:
        found = [j for j in found if "warmtune_version" in (j.metadata or {})]
    if fmt == "json":
        rows = [
            {
                "submission_id": j.submission_id,
                "status": status_name(j),
                "start_time": j.start_time,
                "end_time": j.end_time,
                "metadata": j.metadata or {},
                "message": j.message,
            }
            for j in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo(f"no {'' if show_all else 'warmtune '}jobs on the cluster at {client.address}")
        return
    header = ("SUBMISSION ID", "STATUS", "JOB", "TASK", "SEARCHER", "STARTED", "TOOK")
    table = [header]
    for j in found:
        meta = j.metadata or {}
        table.append(
            (
                j.submission_id or j.job_id or "-",
                status_name(j),
                meta.get("warmtune_job", "-"),
                meta.get("task", "-"),
                meta.get("searcher", "-"),
                _when(j.start_time),
                _duration(j),
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@click.command()
@click.argument("submission_id")
@address_option
def status(submission_id: str, address: str | None) -> None:
    """Show a job's status and metadata (SUBMISSION_ID, or a warmtune job name).

    For a job name: its latest submission that ran, and any later ones the cluster
    refused because the name already had results.
    """
    from warmtune.cluster.jobs_api import ClusterError, status_name

    client = _client(address)
    try:
        info, refused = client.lookup(submission_id)
    except ClusterError as e:
        _fail(str(e))
    click.echo(f"{info.submission_id}: {status_name(info)}")
    if info.message:
        click.echo(f"  message:    {info.message}")
    click.echo(f"  started:    {_when(info.start_time)}")
    click.echo(f"  ended:      {_when(info.end_time)}")
    click.echo(f"  took:       {_duration(info)}")
    click.echo(f"  entrypoint: {info.entrypoint}")
    for key, value in sorted((info.metadata or {}).items()):
        click.echo(f"  {key + ':':<11} {value}")
    if refused:
        click.echo(
            f"  refused:    {', '.join(refused)}: submitted later under the same name and "
            "refused, since the job already had results (resubmit with --resume or --name)"
        )


@click.command()
@click.argument("submission_id")
@address_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
def logs(submission_id: str, address: str | None, follow: bool) -> None:
    """Print a job's output (SUBMISSION_ID, or a warmtune job name)."""
    from warmtune.cluster.jobs_api import ClusterError

    client = _client(address)
    try:
        info = client.info(submission_id)
        if follow:
            client.follow(info.submission_id, sys.stdout)
        else:
            click.echo(client.logs(info.submission_id), nl=False)
    except ClusterError as e:
        _fail(str(e))


@click.command()
@click.argument("submission_id")
@address_option
@click.option("--wait", is_flag=True, help="Wait until the job has stopped.")
def stop(submission_id: str, address: str | None, wait: bool) -> None:
    """Stop a running job (SUBMISSION_ID, or a warmtune job name).

    Its trials stop; what they reported stays in the result store, and
    `warmtune submit JOB.yaml --resume` continues the search.
    """
    from warmtune.cluster.jobs_api import ClusterError, status_name

    client = _client(address)
    try:
        info = client.info(submission_id)
        sid = info.submission_id
        if not client.stop(sid):
            click.echo(f"warmtune: job {sid} had already ended ({status_name(info)})")
            return
        click.echo(f"warmtune: asked job {sid} to stop")
        if wait:
            info = client.wait(sid, timeout_s=120)
            click.echo(f"warmtune: job {sid} is {status_name(info)}")
        meta = info.metadata or {}
        if meta.get("warmtune_job"):
            storage = meta.get("storage", "")
            where = f" --storage {storage}" if storage and not storage.startswith("(") else ""
            click.echo(
                "warmtune: continue it with: warmtune submit JOB.yaml --resume "
                f"--name {meta['warmtune_job']}{where} --address {client.address}"
            )
    except ClusterError as e:
        _fail(str(e))


JOB_COMMANDS = (submit, jobs, status, logs, stop)
