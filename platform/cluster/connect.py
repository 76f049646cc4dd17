"""Attach to Ray: an existing cluster when one is given or running, else an embedded one.

Token authentication stays on. Ray reads the token from ``$RAY_AUTH_TOKEN``,
``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``. A new embedded instance turns
token mode on by itself (and generates a token when there is none), and so does
``ray.init()`` when it finds a ``ray start`` cluster on this machine by itself.
Given a cluster address (``--address HOST:PORT``, ``$RAY_ADDRESS``, ``ray://``),
Ray 2.60 connects without a token unless ``RAY_AUTH_MODE=token`` is set, and the
cluster refuses it ("Failed to connect", after 20 s). So before connecting to a
cluster warmtune checks that a token exists (and says what to do if not) and
turns token mode on for this process, unless ``RAY_AUTH_MODE`` says otherwise.

A new embedded instance listens on 127.0.0.1 only (Ray's default on Linux is every
interface, with the metrics port open to anyone who reaches the machine). A cluster
on a loopback address (``cluster/local/start.sh``'s default) needs this process's Ray
node address to be 127.0.0.1 as well; Ray would otherwise replace ``127.0.0.1`` by
the machine's network address, where nothing of the cluster listens. See
:func:`_stay_on_loopback`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_TOKEN_FILE", "RayAuthError", "connect_ray", "find_token", "secure_token_file"]

DEFAULT_TOKEN_FILE = "~/.ray/auth_token"
"""Where Ray keeps its token when neither ``$RAY_AUTH_TOKEN`` nor ``$RAY_AUTH_TOKEN_PATH``
says otherwise (``ray get-auth-token --generate`` writes it, mode 0644)."""

logger = logging.getLogger(__name__)


class RayAuthError(RuntimeError):
    """A Ray cluster needs a token and none was found."""


def find_token() -> str | None:
    """Where Ray will find its auth token (a description), or ``None``.

    A token file that others can read is made private (see :func:`secure_token_file`).
    """
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).expanduser().is_file():
        secure_token_file(Path(path).expanduser())
        return path
    default = Path(DEFAULT_TOKEN_FILE).expanduser()
    if default.is_file():
        secure_token_file(default)
        return str(default)
    return None


def secure_token_file(path: Path) -> None:
    """Makes a token file readable by its owner only (0600), with a warning, when others
    can read it; warns only when it belongs to someone else.

    Anyone who can read the token can submit jobs to the cluster, which run code on it.
    Ray's ``get-auth-token --generate`` writes the file with mode 0644.
    """
    try:
        stat = path.stat()
    except OSError:
        return
    if not stat.st_mode & 0o077:
        return
    mode = oct(stat.st_mode & 0o777)
    if stat.st_uid != os.getuid():
        logger.warning(
            "the Ray token file %s (mode %s) can be read by other users, and it is not "
            "yours to change; ask its owner to `chmod 600 %s`",
            path,
            mode,
            path,
        )
        return
    path.chmod(0o600)
    logger.warning(
        "the Ray token file %s could be read by other users (mode %s); warmtune made it "
        "private (mode 0600): anyone who can read it can run code on the cluster",
        path,
        mode,
    )


def connect_ray(
    address: str | None = None, *, num_cpus: int | None = None, dashboard: bool | None = None
) -> str:
    """Make sure this process is connected to Ray and say to what.

    Args:
        address: ``None`` follows Ray's own rules ($RAY_ADDRESS, then a cluster
            started with ``ray start`` on this machine, else a new embedded
            instance); ``"local"`` always starts an embedded instance; anything
            else is a cluster address (``HOST:6379`` or ``ray://HOST:10001``).
        num_cpus: CPUs of an embedded instance (default: all).
        dashboard: start the dashboard of an embedded instance (default: Ray's choice).

    Returns:
        A short description, e.g. ``"embedded Ray (dashboard http://127.0.0.1:8265)"``.

    Raises:
        RayAuthError: connecting to a cluster without any token available.
    """
    import ray

    if ray.is_initialized():
        return "the Ray instance this process is already connected to"
    target = address or os.environ.get("RAY_ADDRESS") or None
    # An explicit RAY_AUTH_MODE other than token (a cluster without auth) is the
    # user's choice; otherwise a cluster gets the token.
    if target not in (None, "local") and os.environ.get("RAY_AUTH_MODE", "token") == "token":
        if find_token() is None:
            raise RayAuthError(
                f"the Ray cluster at {target} uses token authentication and no token was "
                "found; set RAY_AUTH_TOKEN, or copy the cluster's token file to "
                "~/.ray/auth_token (on the head node it is ~/.ray/auth_token too)"
            )
        _enable_token_mode()
    if _node_on_loopback(target):
        _stay_on_loopback()
    kwargs: dict = {"address": target, "logging_level": logging.WARNING}
    if target in (None, "local"):
        kwargs.update(num_cpus=num_cpus, include_dashboard=dashboard)
    ctx: Any = ray.init(**kwargs)
    # A new embedded instance generates ~/.ray/auth_token when there is none, mode 0644.
    find_token()
    url = getattr(ctx, "dashboard_url", None)
    return f"Ray at {ctx.address_info.get('gcs_address')}" + (
        f" (dashboard http://{url})" if url else ""
    )


def _enable_token_mode() -> None:
    """Send the token to the cluster: ``RAY_AUTH_MODE=token`` for this process.

    Ray reads ``RAY_AUTH_MODE`` into its config once, when it is imported, so the
    variable alone comes too late; the config is re-read, which is what Ray does
    itself when ``ray.init(address="auto")`` finds a token
    (``ray._private.authentication.authentication_token_setup``). An explicit
    ``RAY_AUTH_MODE`` is the user's choice and stays. Child processes inherit the
    variable.
    """
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    from ray._raylet import Config  # type: ignore[attr-defined]  # missing from its stub

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


def _node_on_loopback(target: str | None) -> bool:
    """Whether this process's Ray node belongs on 127.0.0.1: a new embedded instance
    (``local``, or nothing given and no cluster found by Ray's own lookup), or a
    cluster whose address is a loopback one."""
    if target == "local":
        return True
    if target is None or target == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            # Typed str, but Ray's own callers pass None ("start one if none is found").
            found = get_ray_address_from_environment(target, None)  # type: ignore[arg-type]
        except Exception:  # "auto" and no cluster: ray.init says so itself
            return False
        if found is None:
            return True
        target = found
    return _is_loopback(target)


def _is_loopback(address: str) -> bool:
    """Whether a cluster address (``HOST:PORT``, ``ray://HOST:PORT``, ``[::1]:PORT``)
    names this machine's loopback interface."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stay_on_loopback() -> None:
    """Keep this process's Ray node, and the embedded instance it may start, on
    127.0.0.1.

    Ray 2.60 turns a loopback cluster address into the machine's network address
    (``ray._private.services.resolve_ip_for_localhost``) unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, its switch for loopback-only Ray, which it
    reads once, on import; so the constant is set here and the variable for child
    processes. The switch also refuses ``ray start --address`` (joining a worker node),
    which a driver never does.
    """
    import ray
    import ray._private.ray_constants as ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise RuntimeError(
            f"Ray {ray.__version__} has no ray._private.ray_constants.ENABLE_RAY_CLUSTER, "
            "which warmtune sets to keep a node on 127.0.0.1 (written for Ray 2.60); "
            "connect to the cluster by its network address, or install ray 2.60"
        )
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
