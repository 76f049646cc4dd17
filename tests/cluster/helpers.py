"""What the cluster tests share: the bowl job, a user's environment, the dashboard API."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import requests

BIN = Path(sys.executable).parent


def _load_soak():
    """``cluster/local/soak.py``, a script beside start.sh, as a module: the soak, and
    the port and cluster.env helpers the cluster fixture shares with it."""
    path = Path(__file__).resolve().parents[2] / "cluster" / "local" / "soak.py"
    spec = importlib.util.spec_from_file_location("soak", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = _load_soak()
"""This environment's ``bin``: ``warmtune`` and ``ray`` as a user runs them."""

BOWL_JOB: dict[str, Any] = {
    "name": "bowl",
    "task": {"name": "bowl"},
    # Trials of 3 s: long enough to see them run, and the second starts while the first
    # runs, so on another worker when there is one.
    "trainable": {"name": "quadratic", "params": {"sleep_s": 1.0}},
    "space": {
        "x": {"type": "float", "low": 0, "high": 1},
        "y": {"type": "float", "low": 0, "high": 1},
    },
    "objective": {"metric": "loss", "mode": "min"},
    "budget": {"trials": 4, "max_iterations": 3},
    "knowledge_base": {"add": False},
    "seed": 1,
}
"""A small search on the ``quadratic`` trainable; copy it (``{**BOWL_JOB, ...}``) to change it."""


def user_env(**extra: str) -> dict[str, str]:
    """A user's environment: no ``RAY_*`` variable, this environment's ``bin`` first on
    the PATH, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", **extra)
    return env


def dashboard_api(dashboard: str, token: str, path: str) -> Any:
    """``GET dashboard + path`` with the bearer token; the decoded JSON (raises on an
    HTTP error)."""
    r = requests.get(dashboard + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    r.raise_for_status()
    return r.json()
