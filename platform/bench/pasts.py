"""The past a target is warm-started from: leave one task out.

For a target task, the knowledge base is every *other* task of the benchmark. Two
kinds of past (``past=``):

* ``random`` (default, comparable with published transfer baselines): each other task
  with the same :data:`KB_CONFIGS` random configurations evaluated at full fidelity
  (seed :data:`KB_SEED`). A table benchmark (nb201) holds every architecture of the
  other datasets instead.
* ``searches`` (what users' knowledge bases hold): each other task with the
  observations of one earlier simulated cold BOHB search of :data:`PAST_SEARCH_FFE`
  full-fidelity equivalents (seed :data:`KB_SEED`, one worker): multi-fidelity, and
  different configurations on every task.

Every past is built from the other tasks alone, never from the target, and cached
as Parquet in the cache folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from warmtune.bench.reference import task_values, write_atomically
from warmtune.bench.simulator import simulate
from warmtune.searchers import make_searcher

if TYPE_CHECKING:
    from warmtune.bench.benchmarks import Benchmark

__all__ = ["KB_CONFIGS", "KB_SEED", "PAST_SEARCH_FFE", "PASTS", "knowledge_base", "past_search"]

#: The kinds of past a knowledge base can hold (see the module docstring).
PASTS = ("random", "searches")
#: Budget of each earlier simulated search in a ``searches`` past.
PAST_SEARCH_FFE = 20.0
#: Random configurations per past task in the knowledge base, and their seed.
KB_CONFIGS = 100
KB_SEED = 0


def knowledge_base(
    bench: Benchmark,
    target: str,
    *,
    n: int = KB_CONFIGS,
    cache_dir: Path | None = None,
    past: str = "random",
) -> list[Any]:
    """The past tasks of ``target``: every other task, as ``past`` says (see :data:`PASTS`)."""
    from warmtune.searchers.similarity import PastTask

    if past not in PASTS:
        raise ValueError(f"--past must be one of {list(PASTS)}, got {past!r}")
    tasks = []
    for task in bench.tasks:
        if task == target:
            continue
        if past == "random" and bench.reference_configs is not None:
            # A table (nb201): the past is the other datasets, every entry of them.
            configs = bench.reference_configs
            values = np.asarray(bench.full_values(task, configs), dtype=float)
            budgets = np.full(len(values), float(bench.max_budget))
        elif past == "random":
            configs, values = task_values(bench, task, n=n, seed=KB_SEED, cache_dir=cache_dir)
            budgets = np.full(len(values), float(bench.max_budget))
        else:
            configs, values, budgets = past_search(bench, task, cache_dir=cache_dir)
        tasks.append(
            PastTask(
                name=str(task),
                meta_features={},
                space=bench.space,
                configs=configs,
                values=values,
                budgets=budgets,
                max_budget=bench.max_budget,
                mode=bench.mode,
            )
        )
    return tasks


def past_search(
    bench: Benchmark, task: str, *, cache_dir: Path | None
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """An earlier simulated search on ``task``: the end of each segment of a cold BOHB run.

    Values are in the metric's natural direction. Cached like :func:`task_values`.
    """
    path = None
    if cache_dir is not None:
        safe = f"{bench.name}-{task}-{bench.metric}-bohb{PAST_SEARCH_FFE:g}-s{KB_SEED}"
        path = cache_dir / f"{safe.replace('/', '_')}.parquet"
        if path.is_file():
            df = pd.read_parquet(path)
            return (
                [json.loads(c) for c in df["config_json"]],
                df["value"].to_numpy(dtype=float),
                df["budget"].to_numpy(dtype=float),
            )
    searcher = make_searcher("bohb", space=bench.space, seed=KB_SEED, max_budget=bench.max_budget)
    result = simulate(searcher, bench.backend(task), workers=1, budget_ffe=PAST_SEARCH_FFE)
    ev = result.evaluations.dropna(subset=["value"])
    ends = ev.groupby(["trial_id", "segment"], sort=False).tail(1)
    df = pd.DataFrame(
        {
            "config_json": ends["config_json"].to_numpy(),
            "value": bench.minimised(ends["value"].to_numpy(dtype=float)),  # back to natural
            "budget": ends["budget"].to_numpy(dtype=float),
        }
    )
    if path is not None:
        write_atomically(df, path)
    return (
        [json.loads(c) for c in df["config_json"]],
        df["value"].to_numpy(dtype=float),
        df["budget"].to_numpy(dtype=float),
    )
