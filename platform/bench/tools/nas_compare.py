"""Train given cells and random cells with a job's recipe at its full budget, side by side.

The yardstick for an architecture search: is the cell it found better than a typical
random cell trained the same way? ::

    python -m warmtune.bench.tools.nas_compare examples/nas-omniglot.yaml \\
        --cell '|nor_conv_3x3~0|+|...' --random 8 --jobs 2 --out nas-compare.csv

Every child trains for the job's ``budget.max_iterations`` reported iterations with the
job's fixed ``trainable.params`` (the same cosine schedule, the same data) and the same
trial seed rule as under Ray; the table lists validation and test accuracy, parameters and
latency per cell, and the summary the median random cell. Random cells are drawn uniformly
from the 15,625 cells with ``--seed``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "train_cell"]


def train_cell(
    params: dict[str, Any], cell: str, *, max_iterations: int, seed: int
) -> dict[str, Any]:
    """Trains one cell to ``max_iterations`` on one thread; its last metrics and wall time."""
    import torch

    from warmtune.trainables import trial_seed
    from warmtune.trainables.benchmarks.nb201 import string_to_arch
    from warmtune.trainables.nas.trainable import ChildTraining, NASSettings

    torch.set_num_threads(1)
    config = string_to_arch(cell)
    settings = NASSettings(**{**params, **config})
    start = time.perf_counter()
    child = ChildTraining(
        settings=settings, seed=trial_seed(seed, config), max_iterations=max_iterations
    )
    while child.iteration < max_iterations:
        metrics = child.step()
    metrics.update(child.test())
    return {"cell": cell, **metrics, "seconds": time.perf_counter() - start}


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    import pandas as pd

    from warmtune.spec import load_job
    from warmtune.trainables.benchmarks.nb201 import all_archs, arch_to_string

    parser = argparse.ArgumentParser(
        prog="warmtune bench compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("job", type=Path, help="a job file of the nas-omniglot trainable")
    parser.add_argument("--cell", action="append", default=[], help="a cell string to train")
    parser.add_argument("--random", type=int, default=8, help="random cells to train")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cells")
    parser.add_argument("--jobs", type=int, default=1, help="cells trained in parallel")
    parser.add_argument("--out", type=Path, help="CSV of every cell's result")
    args = parser.parse_args(argv)

    spec = load_job(args.job)
    if spec.trainable.name != "nas-omniglot":
        parser.error(f"{args.job}: trainable is {spec.trainable.name!r}, not 'nas-omniglot'")
    params = dict(spec.trainable.params)
    archs = all_archs()
    rng = np.random.default_rng(args.seed)
    cells = [arch_to_string(archs[i]) for i in rng.choice(len(archs), args.random, replace=False)]
    kinds = ["given"] * len(args.cell) + ["random"] * len(cells)
    todo = [*args.cell, *cells]
    max_iterations = spec.budget.max_iterations
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(train_cell, params, cell, max_iterations=max_iterations, seed=spec.seed)
            for cell in todo
        ]
        rows = []
        for kind, future in zip(kinds, futures, strict=True):
            row = {"kind": kind, **future.result()}
            rows.append(row)
            print(
                f"{kind:6s} val {row['val_accuracy']:.3f} test {row['test_accuracy']:.3f} "
                f"params {int(row['params']):>7d} {row['seconds']:6.1f}s  {row['cell']}",
                flush=True,
            )
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    random_rows = table[table["kind"] == "random"]
    print(
        f"\n{len(todo)} cells, {max_iterations} iterations each, "
        f"{time.perf_counter() - start:.0f} s wall with {args.jobs} job(s)"
    )
    if len(random_rows):
        print(
            f"median random cell: val {statistics.median(random_rows['val_accuracy']):.3f} "
            f"test {statistics.median(random_rows['test_accuracy']):.3f} "
            f"(of {len(random_rows)}; best random val {random_rows['val_accuracy'].max():.3f})"
        )


if __name__ == "__main__":
    main()
