"""The Ray Jobs API of one cluster: a client with warmtune's token handling and errors.

Token authentication: the token comes from where Ray looks for it
(``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``; see
:func:`warmtune.cluster.connect.find_token`) and goes in the ``Authorization`` header,
whatever ``RAY_AUTH_MODE`` says in this process. A refusal (HTTP 401/403) becomes
a :class:`ClusterAuthError` that says where to put the right token. What a submission
carries is prepared by :mod:`warmtune.cluster.submit`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from warmtune.cluster.connect import find_token

if TYPE_CHECKING:
    from warmtune.cluster.submit import Submission

__all__ = [
    "ADDRESS_VARIABLES",
    "DEFAULT_DASHBOARD",
    "ClusterAuthError",
    "ClusterError",
    "JobsClient",
    "dashboard_address",
    "is_terminal",
    "read_token",
    "rejected_for_existing_results",
    "status_name",
]

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
"""Ray's Jobs API client lets these override the address it is given, in this order."""
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class ClusterError(RuntimeError):
    """The cluster could not be reached, or refused or failed a Jobs API request."""


class ClusterAuthError(ClusterError):
    """The cluster refused the request's token (or its absence)."""


def dashboard_address(address: str | None = None) -> tuple[str, str]:
    """The Jobs API address to use and where it came from.

    ``address`` (``--address``), else ``$RAY_API_SERVER_ADDRESS``, else ``$RAY_ADDRESS``
    (``http://`` is added when it has no scheme), else :data:`DEFAULT_DASHBOARD`. Unlike
    Ray's own client, where the variables override an explicit address, the address the
    user typed wins.
    """
    for value, source in (
        (address, "--address"),
        *((os.environ.get(name), f"${name}") for name in ADDRESS_VARIABLES),
    ):
        if value:
            url = value if "://" in value else f"http://{value}"
            return url.rstrip("/"), source
    return DEFAULT_DASHBOARD, "the default"


@contextlib.contextmanager
def _without(names: Iterable[str]) -> Iterator[None]:
    """Hides environment variables from this process for the duration of the block."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def read_token() -> tuple[str | None, str | None]:
    """The auth token and a description of where it came from, or ``(None, None)``."""
    source = find_token()
    if source is None:
        return None, None
    if source == "$RAY_AUTH_TOKEN":
        return os.environ["RAY_AUTH_TOKEN"].strip(), source
    return Path(source).expanduser().read_text().strip(), source


class JobsClient:
    """The Ray Jobs API of one cluster, with warmtune's token handling and errors.

    Args:
        address: the dashboard address (see :func:`dashboard_address`).

    Raises:
        ClusterError: nothing answers at the address.
        ClusterAuthError: the cluster refused the token or its absence.
    """

    def __init__(self, address: str | None = None) -> None:
        self.address, self.address_source = dashboard_address(address)
        self.token, self.token_source = read_token()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._client: Any = self._call(self._connect, headers)

    def _connect(self, headers: dict[str, str]) -> Any:
        from ray.job_submission import JobSubmissionClient

        # Ray's client resolves its address once, here, and would let $RAY_ADDRESS or
        # $RAY_API_SERVER_ADDRESS replace the one given; self.address already follows
        # them where no --address was given.
        with _without(ADDRESS_VARIABLES):
            return JobSubmissionClient(self.address, headers=headers)

    def _where(self) -> str:
        """The address and, unless the user typed it, where it came from."""
        if self.address_source == "--address":
            return self.address
        return f"{self.address} (from {self.address_source})"

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from ray.exceptions import AuthenticationError

        try:
            return fn(*args, **kwargs)
        except AuthenticationError as e:
            raise self._auth_error(401 if "required" in str(e) else 403) from None
        except ConnectionError:
            raise ClusterError(
                f"no Ray dashboard answers at {self.address} (from {self.address_source}); "
                "pass --address http://HEAD:8265, the dashboard's address (not the GCS port), "
                "or start a cluster, e.g. cluster/local/start.sh"
                + (
                    f"; {self.address_source} is set in your environment and is used only "
                    "when --address is not given"
                    if self.address_source.startswith("$")
                    else ""
                )
            ) from None

    def _auth_error(self, status: int) -> ClusterAuthError:
        where = (
            "Put the cluster's token (on the head node: `ray get-auth-token`; for "
            "cluster/local/start.sh, the token file it printed) in ~/.ray/auth_token, "
            "or set RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file>"
        )
        if self.token is None or status == 401:
            return ClusterAuthError(
                f"the Ray cluster at {self._where()} uses token authentication and "
                f"warmtune found no token (HTTP 401). {where}."
            )
        return ClusterAuthError(
            f"the Ray cluster at {self._where()} refused the token from {self.token_source} "
            f"(HTTP 403): it is not this cluster's token. {where}; $RAY_AUTH_TOKEN wins "
            "over the files, so unset it if it holds an old token."
        )

    def submit(self, submission: Submission) -> str:
        """Submit; returns the submission id."""
        with tempfile.TemporaryDirectory(prefix="warmtune-job-") as tmp:
            (Path(tmp) / "job.yaml").write_text(submission.job_text)
            try:
                return str(
                    self._call(
                        self._client.submit_job,
                        entrypoint=submission.entrypoint,
                        submission_id=submission.submission_id,
                        runtime_env=submission.runtime_env(tmp),
                        metadata=submission.metadata,
                    )
                )
            except RuntimeError as e:
                if isinstance(e, ClusterError):
                    raise
                raise ClusterError(f"the cluster did not accept the job: {e}") from None

    def list(self) -> list[Any]:
        """All jobs on the cluster (Ray's ``JobDetails``), oldest first."""
        jobs = self._call(self._client.list_jobs)
        return sorted(jobs, key=lambda j: (j.start_time or 0, j.submission_id or ""))

    def info(self, ref: str) -> Any:
        """A job by submission id, or the latest submission of a warmtune job name that
        ran (see :meth:`lookup`).

        Raises:
            ClusterError: no such job on the cluster.
        """
        return self.lookup(ref)[0]

    def lookup(self, ref: str) -> tuple[Any, builtins.list[str]]:
        """A job as :meth:`info` finds it, and for a job name the submission ids of later
        submissions the cluster refused because the name already had results.

        Raises:
            ClusterError: no such job on the cluster.
        """
        try:
            return self._call(self._client.get_job_info, ref), []
        except ClusterError:
            raise
        except RuntimeError as e:
            if "404" not in str(e) and "does not exist" not in str(e):
                raise ClusterError(f"the cluster could not look up job {ref!r}: {e}") from None
        named = [j for j in self.list() if (j.metadata or {}).get("warmtune_job") == ref]
        if not named:
            raise ClusterError(
                f"no job {ref!r} on the cluster at {self.address}; `warmtune jobs` lists "
                "the submission ids (a warmtune job name works too, for its latest submission)"
            )
        # The latest submission that ran: later ones refused for the name are not it.
        ran = [j for j in named if not rejected_for_existing_results(j)]
        info = (ran or named)[-1]
        refused = [
            j.submission_id
            for j in named
            if rejected_for_existing_results(j) and (j.start_time or 0) > (info.start_time or 0)
        ]
        return info, refused

    def logs(self, submission_id: str) -> str:
        return str(self._call(self._client.get_job_logs, submission_id))

    def follow(self, submission_id: str, stream: TextIO) -> None:
        """Print the job's logs as they come, until the job ends."""
        import aiohttp

        async def tail() -> None:
            async for chunk in self._client.tail_job_logs(submission_id):
                stream.write(chunk)
                stream.flush()

        try:
            asyncio.run(tail())
        except aiohttp.WSServerHandshakeError as e:
            if e.status in (401, 403):
                raise self._auth_error(e.status) from None
            raise ClusterError(f"following the logs of {submission_id} failed: {e}") from None

    def stop(self, submission_id: str) -> bool:
        """Ask the job to stop; ``False`` when it had already ended."""
        return bool(self._call(self._client.stop_job, submission_id))

    def wait(
        self,
        submission_id: str,
        *,
        timeout_s: float | None = None,
        on_change: Callable[[str], None] | None = None,
        poll_s: float = 1.0,
    ) -> Any:
        """Wait until the job ends (or ``timeout_s`` passes); returns its info."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last = None
        while True:
            info = self._call(self._client.get_job_info, submission_id)
            status = str(info.status.value if hasattr(info.status, "value") else info.status)
            if status != last and on_change is not None:
                on_change(status)
            last = status
            if status in _TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return info
            time.sleep(poll_s)


def status_name(info: Any) -> str:
    """``SUCCEEDED``, ``RUNNING``, ... of a job info."""
    status = info.status
    return str(status.value if hasattr(status, "value") else status)


def is_terminal(info: Any) -> bool:
    return status_name(info) in _TERMINAL


def rejected_for_existing_results(info: Any) -> bool:
    """Whether a cluster job is a submission the driver refused because its job name
    already had results (``warmtune run`` exits with :data:`EXIT_JOB_EXISTS`)."""
    from warmtune.runner import EXIT_JOB_EXISTS

    return status_name(info) == "FAILED" and f"exit code {EXIT_JOB_EXISTS}" in (info.message or "")
