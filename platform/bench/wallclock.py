"""Regret against simulated wall-clock time, next to regret against FFE.

Full-fidelity equivalents (FFE) count what a search paid in fidelity; with several
workers they do not say how long it took. The simulator's clock does
(:mod:`warmtune.bench.simulator`: each report takes the backend's runtime, and
``workers`` trials run at once). To average tasks whose evaluations take seconds
with tasks whose evaluations take minutes, time is counted in units ``T`` of the
task's *median full-evaluation time*:

1. ``T`` is the median, over the task's reference sample (the configurations that
   define ``y*`` and the median, :mod:`warmtune.bench.reference`), of the seconds
   one evaluation at full fidelity takes from scratch
   (:attr:`~warmtune.bench.benchmarks.Benchmark.full_costs`: lcbench's ``time`` at
   epoch 52, iaml's ``timetrain`` at trainsize 1, nb201's ``evaluation_cost``). It is
   computed from the target's own reference configurations, cached beside the
   reference (:func:`time_unit`), and never shown to a searcher. (LCBench's clock
   adds the surrogate's per-epoch time steps with the rare negative step clipped to
   zero, so a whole run can take slightly longer than ``time`` at epoch 52.)
2. The grid is ``k / workers`` T for every ``k`` of the FFE grid: ``workers``
   machines finish ``k`` median full evaluations in about ``k / workers`` T, so the
   two tables line up for a search that only runs full evaluations.
3. The regret at time ``t`` is that of the best full-fidelity result reported by
   ``t`` (1 before the first, as in the FFE table). A run keeps its last incumbent
   after it ends; each run also has a row at its own end (``at_end``), the moment
   its FFE budget ran out, so the tables say when each method stopped.

:func:`write_time_outputs` writes ``summary_time.csv``, a section of ``summary.md``
and ``regret_time.png``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from warmtune.bench.methods import ALL_METHODS
from warmtune.bench.reference import (
    REFERENCE_SEED,
    normalized_regret,
    reference,
    task_values,
    write_atomically,
)

if TYPE_CHECKING:
    from warmtune.bench.benchmarks import Benchmark

__all__ = [
    "TIME_COLUMNS",
    "markdown_time_table",
    "mean_time_regret",
    "plot_regret_time",
    "time_grid",
    "time_rows",
    "time_unit",
    "write_time_outputs",
]

#: Columns of ``summary_time.csv``.
TIME_COLUMNS = [
    "benchmark",
    "task",
    "method",
    "seed",
    "budget_time",
    "best_value",
    "normalized_regret",
    "has_incumbent",
    "at_end",
]

# Report times are sums of floats; a result due at t counts at t.
_EPS = 1e-9


def time_unit(bench: Benchmark, task: str, *, n: int, cache_dir: Path | None) -> float:
    """The task's median full-evaluation time ``T`` in seconds (see the module docstring).

    Over the same configurations as :func:`~warmtune.bench.reference.reference`: every
    configuration of a table benchmark, else the ``n`` seeded random ones. Cached as
    ``{benchmark}-{task}-fullcost-n{n}-s{seed}.parquet`` beside the reference.

    Raises:
        ValueError: the benchmark has no clock, or the median is not a positive time.
    """
    if bench.full_costs is None:
        raise ValueError(f"{bench.name} has no full_costs: it has no clock to measure time by")
    if bench.reference_configs is not None:
        costs = np.asarray(bench.full_costs(task, bench.reference_configs), dtype=float)
    else:
        costs = _cached_costs(bench, bench.full_costs, task, n=n, cache_dir=cache_dir)
    costs = costs[np.isfinite(costs)]
    unit = float(np.median(costs)) if len(costs) else math.nan
    if not unit > 0:
        raise ValueError(
            f"the median full-evaluation time of {bench.name} task {task} is {unit}; "
            "Benchmark.full_costs must give positive seconds"
        )
    return unit


def _cached_costs(
    bench: Benchmark,
    full_costs: Callable[[str, Sequence[Mapping[str, Any]]], np.ndarray],
    task: str,
    *,
    n: int,
    cache_dir: Path | None,
) -> np.ndarray:
    path = None
    if cache_dir is not None:
        safe = f"{bench.name}-{task}-fullcost-n{n}-s{REFERENCE_SEED}".replace("/", "_")
        path = cache_dir / f"{safe}.parquet"
        if path.is_file():
            return pd.read_parquet(path)["cost"].to_numpy(dtype=float)
    # The reference's own configurations (read from its cache when it is there).
    configs, _ = task_values(bench, task, n=n, seed=REFERENCE_SEED, cache_dir=cache_dir)
    costs = np.asarray(full_costs(task, configs), dtype=float)
    if path is not None:
        write_atomically(pd.DataFrame({"cost": costs}), path)
    return costs


def time_grid(ffe_grid: Sequence[float], workers: int) -> list[float]:
    """The times (in T) the table reports: ``k / workers`` for each ``k`` of the FFE grid."""
    return [float(k) / workers for k in ffe_grid]


def time_rows(
    evaluations: pd.DataFrame,
    *,
    end_time: float,
    unit: float,
    grid: Sequence[float],
    max_budget: float,
    sign: float,
    ref: tuple[float, float],
) -> list[dict[str, Any]]:
    """One run's rows of ``summary_time.csv``, without its key columns.

    Args:
        evaluations: the run's evaluations (simulator columns; values minimised).
        end_time: simulated seconds at the run's end.
        unit: the task's ``T`` in seconds.
        grid: times in T (:func:`time_grid`).
        max_budget: the full fidelity; only results at it count.
        sign: 1 for ``min`` metrics, -1 for ``max`` (back to the natural direction).
        ref: the task's ``(y*, y_median)``.
    """
    full = evaluations[
        np.isclose(evaluations["budget"], max_budget, rtol=_EPS, atol=0)
        & evaluations["value"].notna()
    ]
    reported = full["end_time"].to_numpy(dtype=float) / unit
    best = np.minimum.accumulate(full["value"].to_numpy(dtype=float))
    rows = []
    end = end_time / unit
    for t, at_end in [*((t, False) for t in grid), (end, True)]:
        # A run keeps its incumbent after it ended.
        found = int(np.searchsorted(reported, min(t, end) * (1 + _EPS), side="right"))
        value = sign * best[found - 1] if found else math.nan
        rows.append(
            {
                "budget_time": float(t),
                "best_value": value,
                "normalized_regret": normalized_regret(value, *ref) if found else 1.0,
                "has_incumbent": bool(found),
                "at_end": at_end,
            }
        )
    return rows


def mean_time_regret(table: pd.DataFrame) -> pd.DataFrame:
    """Mean normalised regret on the time grid, methods as rows and times (T) as columns."""
    grid = table[~table["at_end"]]
    pivot = grid.pivot_table(
        index="method", columns="budget_time", values="normalized_regret", aggfunc="mean"
    )
    order = [m for m in ALL_METHODS if m in pivot.index]
    return pivot.reindex(index=order, columns=sorted(grid["budget_time"].unique()))


def markdown_time_table(table: pd.DataFrame, units: Mapping[str, float], workers: int) -> str:
    """The mean regret against time as Markdown, with each method's mean end time."""
    pivot = mean_time_regret(table)
    ends = table[table["at_end"]].groupby("method")["budget_time"].mean()
    head = ["method", *[f"{t:g} T" for t in pivot.columns], "ends at (mean)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in pivot.iterrows():
        cells = [f"{v:.3f}" if np.isfinite(v) else "n/a" for v in row]
        lines.append("| " + " | ".join([str(method), *cells, f"{ends[method]:.2f} T"]) + " |")
    per_task = ", ".join(f"{task}: {seconds:.3g} s" for task, seconds in units.items())
    note = (
        f"\nMean normalised regret against simulated wall-clock time with {workers} "
        f"worker(s), at k/{workers} T for each k of the FFE table; T is the task's median "
        f"full-evaluation time over its reference sample ({per_task}). A run keeps its "
        "last incumbent after it ends; 'ends at' is when its FFE budget ran out (its "
        "regret there is the last column of the FFE table).\n"
    )
    return "\n".join(lines) + "\n" + note


def plot_regret_time(table: pd.DataFrame, path: Path) -> None:
    """Mean normalised regret against simulated time (in T), one line per method."""
    from warmtune.report.plots import regret_figure, save

    fig = regret_figure(mean_time_regret(table))
    fig.axes[0].set_xlabel("simulated wall-clock time (median full-evaluation times T)")
    save(fig, path, dpi=100)


def write_time_outputs(
    bench: Benchmark,
    *,
    out: Path,
    evaluations: Sequence[pd.DataFrame],
    runs: Sequence[Mapping[str, Any]],
    ffe_grid: Sequence[float],
    workers: int,
    reference_configs: int,
    cache_dir: Path | None,
) -> pd.DataFrame | None:
    """Write ``summary_time.csv`` and ``regret_time.png``; append to ``summary.md``.

    Args:
        evaluations: the evaluations of each (task, method) unit, with their key columns.
        runs: the run rows (``task``, ``method``, ``seed``, ``end_time``).
        ffe_grid: the FFE table's budgets (:func:`~warmtune.bench.protocol.budget_grid`).

    Returns:
        The time table, or ``None`` for a benchmark without a clock.
    """
    if bench.full_costs is None:
        return None
    tasks = list(dict.fromkeys(str(r["task"]) for r in runs))
    units = {t: time_unit(bench, t, n=reference_configs, cache_dir=cache_dir) for t in tasks}
    refs = {t: reference(bench, t, n=reference_configs, cache_dir=cache_dir) for t in tasks}
    grid = time_grid(ffe_grid, workers)
    sign = 1.0 if bench.mode == "min" else -1.0
    keys = ["task", "method", "seed"]
    frames = [e[keys + ["budget", "value", "end_time"]] for e in evaluations]
    by_run = {
        (str(k[0]), k[1], k[2]): rows
        for k, rows in pd.concat(frames, ignore_index=True).groupby(keys, sort=False)
    }
    rows = []
    for run in runs:
        task = str(run["task"])
        key = {"benchmark": bench.name, "task": task, "method": run["method"], "seed": run["seed"]}
        evals = by_run.get((task, run["method"], run["seed"]), frames[0].iloc[:0])
        for row in time_rows(
            evals,
            end_time=float(run["end_time"]),
            unit=units[task],
            grid=grid,
            max_budget=bench.max_budget,
            sign=sign,
            ref=refs[task],
        ):
            rows.append({**key, **row})
    table = pd.DataFrame(rows, columns=TIME_COLUMNS)
    table.to_csv(out / "summary_time.csv", index=False)
    with open(out / "summary.md", "a") as f:
        f.write("\n" + markdown_time_table(table, units, workers))
    plot_regret_time(table, out / "regret_time.png")
    return table
