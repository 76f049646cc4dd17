"""Attach to Ray: an existing cluster when one is given or running, else an embedded one.

Token authentication stays on. Ray reads the token from ``$RAY_AUTH_TOKEN``,
``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` and enables token mode when it
finds one (a new embedded instance generates one); warmtune checks up front that
a token exists before it connects to a cluster, and says what to do if not.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["RayAuthError", "connect_ray", "find_token"]


class RayAuthError(RuntimeError):
    """A Ray cluster needs a token and none was found."""


def find_token() -> str | None:
    """Where Ray will find its auth token (a description), or ``None``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).expanduser().is_file():
        return path
    default = Path("~/.ray/auth_token").expanduser()
    return str(default) if default.is_file() else None


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
    # Ray 2.60 turns token auth on by itself for a new embedded instance and for a
    # cluster whose token it finds; setting RAY_AUTH_MODE here, after Ray cached its
    # config at import, would split driver and cluster, so leave it to Ray.
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target not in (None, "local") and find_token() is None:
        raise RayAuthError(
            f"the Ray cluster at {target} uses token authentication and no token was found; "
            "set RAY_AUTH_TOKEN, or copy the cluster's token file to ~/.ray/auth_token "
            "(on the head node it is ~/.ray/auth_token too)"
        )
    kwargs: dict = {"address": target, "logging_level": logging.WARNING}
    if target in (None, "local"):
        kwargs.update(num_cpus=num_cpus, include_dashboard=dashboard)
    ctx: Any = ray.init(**kwargs)
    url = getattr(ctx, "dashboard_url", None)
    return f"Ray at {ctx.address_info.get('gcs_address')}" + (
        f" (dashboard http://{url})" if url else ""
    )
