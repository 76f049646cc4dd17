"""Shared fixtures: one Ray instance per test session, and the datasets by name.

Tests find real data only through :mod:`warmtune.data` (``$WARMTUNE_DATA``, else
``~/.cache/warmtune/data``). A test that needs a dataset asks the ``need_data`` fixture
for it and is skipped, naming the dataset and the ``warmtune data`` command that
provides it, when it is not there; so a fresh clone passes with no data at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import warmtune.data

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _private_storage(tmp_path_factory):
    """Keep tests out of the user's ~/warmtune_results and ~/warmtune_kb."""
    base = tmp_path_factory.mktemp("warmtune-home")
    saved = {k: os.environ.get(k) for k in ("WARMTUNE_STORAGE", "WARMTUNE_KB")}
    os.environ["WARMTUNE_STORAGE"] = str(base / "results")
    os.environ["WARMTUNE_KB"] = str(base / "kb")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data directory, :func:`warmtune.data.data_dir` (it may hold nothing: ask
    ``need_data`` for what a test needs)."""
    return warmtune.data.data_dir()


@pytest.fixture(scope="session")
def need_data() -> Callable[[str], Path]:
    """``need_data(NAME)``: the folder of dataset NAME, or a skip that says how to get it."""

    def need(name: str) -> Path:
        try:
            return warmtune.data.require(name)
        except warmtune.data.DatasetMissingError as e:
            pytest.skip(str(e))

    return need


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny nets gain nothing from threads, and oversubscribed cores make them 10x slower
    (the trainables' tests, and the throughput tool's in tests/bench)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
