"""The reference values of a task (``y*`` and the median) and the cache they live in.

Normalised regret at a budget of ``b`` full-fidelity equivalents (FFE)::

    regret(b) = (y* - y_best(b)) / (y* - y_median)

in the metric's natural direction, where ``y*`` and ``y_median`` are the best and the
median of :data:`REFERENCE_CONFIGS` random configurations of the task at full
fidelity (seed :data:`REFERENCE_SEED`; nb201: all 15,625 architectures, so ``y*`` is the
true optimum). The reference is computed from the target alone and is never shown to
a searcher.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from warmtune.space import SearchSpace

if TYPE_CHECKING:
    from warmtune.bench.benchmarks import Benchmark

__all__ = [
    "REFERENCE_CONFIGS",
    "REFERENCE_SEED",
    "normalized_regret",
    "reference",
    "sample_configs",
    "task_values",
    "write_atomically",
]

#: Random configurations that define ``y*`` and ``y_median`` of a task, and their seed.
REFERENCE_CONFIGS = 20_000
REFERENCE_SEED = 12345


def sample_configs(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` uniform random configurations, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def task_values(
    bench: Benchmark, task: str, *, n: int, seed: int, cache_dir: Path | None
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``n`` seeded random configurations and their full-fidelity metric on ``task``.

    Cached as ``{benchmark}-{task}-{metric}-n{n}-s{seed}.parquet`` in ``cache_dir``.
    """
    path = None
    if cache_dir is not None:
        safe = f"{bench.name}-{task}-{bench.metric}-n{n}-s{seed}".replace("/", "_")
        path = cache_dir / f"{safe}.parquet"
        if path.is_file():
            df = pd.read_parquet(path)
            return [json.loads(c) for c in df["config_json"]], df["value"].to_numpy(dtype=float)
    configs = sample_configs(bench.space, n, seed)
    values = np.asarray(bench.full_values(task, configs), dtype=float)
    if path is not None:
        frame = pd.DataFrame(
            {"config_json": [json.dumps(c, sort_keys=True) for c in configs], "value": values}
        )
        write_atomically(frame, path)
    return configs, values


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write a cache file so that a concurrent reader sees all of it or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def reference(
    bench: Benchmark, task: str, *, n: int = REFERENCE_CONFIGS, cache_dir: Path | None = None
) -> tuple[float, float]:
    """``(y*, y_median)`` of ``task`` in the metric's natural direction."""
    if bench.reference_configs is not None:
        values = np.asarray(bench.full_values(task, bench.reference_configs), dtype=float)
    else:
        _, values = task_values(bench, task, n=n, seed=REFERENCE_SEED, cache_dir=cache_dir)
    values = values[np.isfinite(values)]
    best = values.min() if bench.mode == "min" else values.max()
    return float(best), float(np.median(values))


def normalized_regret(best: float, y_star: float, y_median: float) -> float:
    """``(y* - best) / (y* - y_median)``: 0 at the reference best, 1 at the median."""
    if not math.isfinite(best):
        return math.nan
    spread = y_star - y_median
    if spread == 0:
        return 0.0 if best == y_star else math.inf
    return (y_star - best) / spread
