"""The benchmark protocol: every (task, method, seed) through the simulator.

``warmtune bench`` (:mod:`warmtune.cli.bench`) calls :func:`run_bench`, which runs
each (task, method) unit, in worker processes when ``jobs > 1``, and writes the
tables and plots of :mod:`warmtune.bench.summary`.

Before its first full-fidelity result a method has no incumbent: its ``best_value``
is NaN and its ``normalized_regret`` counts as 1 (a median configuration, what a guess
is worth), so that averages over runs do not flatter methods that reach full fidelity
late; ``has_incumbent`` tells such rows apart.

FFE are counted as iterations are *reported*, across all workers: with ``N`` workers,
``N`` trials share the clock, so a full-fidelity result arrives later in FFE than with
one worker. Published references are sequential (``--workers 1``).

Per run, ``runs.csv`` also holds ``evals_to_target``: full-fidelity results reported up
to and including the first within ``target_gap`` (metric units, absolute) of ``y*``
(the NAS-Bench-201 measure: 0.5 percentage points of test accuracy).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from warmtune.bench.benchmarks import Benchmark, load_benchmark
from warmtune.bench.methods import ALL_METHODS, WARM_METHODS, WEIGHT_METHODS, make_method
from warmtune.bench.pasts import (
    KB_CONFIGS,
    PASTS,
    knowledge_base,
    parse_mix,
    past_search,
    random_past,
)
from warmtune.bench.reference import (
    REFERENCE_CONFIGS,
    REFERENCE_SEED,
    normalized_regret,
    reference,
    task_values,
)
from warmtune.bench.results import SimulationResult
from warmtune.bench.simulator import simulate
from warmtune.bench.summary import compare, markdown_extras, markdown_table, no_harm, plot_regret
from warmtune.bench.wallclock import time_unit, write_time_outputs

__all__ = ["BUDGET_GRID", "budget_grid", "run_bench", "run_one"]

#: Budgets (FFE) the summary reports, capped at the run's budget.
BUDGET_GRID = (1, 2, 5, 10, 20)


def budget_grid(budget: float) -> list[float]:
    """:data:`BUDGET_GRID` capped at ``budget``, plus ``budget`` itself."""
    grid = [float(b) for b in BUDGET_GRID if b < budget]
    return [*grid, float(budget)]


def run_one(
    bench: Benchmark,
    task: str,
    method: str,
    seed: int,
    *,
    budget: float,
    workers: int,
    past_tasks: Sequence[Any],
    ref: tuple[float, float],
    oracle: tuple[list[dict[str, Any]], np.ndarray] | None = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, Any]]:
    """One (task, method, seed): its evaluations, its summary rows and its run row.

    ``oracle`` is the target's sample for ``bohb-warm-oracle`` (see :func:`oracle_sample`).
    """
    searcher = make_method(
        method,
        bench=bench,
        seed=seed,
        past_tasks=past_tasks,
        meta_features=bench.meta_features(task),
        oracle=oracle if method == "bohb-warm-oracle" else None,
    )
    result: SimulationResult = simulate(
        searcher, bench.backend(task), workers=workers, budget_ffe=budget, seed=seed
    )
    key = {"benchmark": bench.name, "task": str(task), "method": method, "seed": seed}
    sign = 1.0 if bench.mode == "min" else -1.0
    rows = []
    for b in budget_grid(budget):
        best = sign * result.best_at(b)  # back to the natural direction
        found = math.isfinite(best)
        rows.append(
            {
                **key,
                "budget_ffe": b,
                "best_value": best if found else math.nan,
                # No incumbent yet: worth a median configuration (see the module docstring).
                "normalized_regret": normalized_regret(best, *ref) if found else 1.0,
                "has_incumbent": found,
            }
        )
    full = result.evaluations
    at_max = np.isclose(full["budget"], bench.max_budget, rtol=1e-9, atol=0)  # float budgets
    full = full[at_max & full["value"].notna()]
    natural = sign * full["value"].to_numpy(dtype=float)
    # How far each full-fidelity result is from y*, in the direction that counts.
    short_of_best = sign * (natural - ref[0])
    hits = np.flatnonzero(short_of_best <= bench.target_gap)
    run = {
        **key,
        "evaluations": int(result.evaluations["trial_id"].nunique()),
        "full_fidelity_results": len(full),
        "ffe_spent": float(result.ffe_spent),
        "final_regret": rows[-1]["normalized_regret"],
        "evals_to_target": int(hits[0]) + 1 if len(hits) else math.nan,
        "end_time": float(result.end_time),  # simulated seconds (see warmtune.bench.wallclock)
    }
    evaluations = result.evaluations.assign(**key)
    return evaluations, rows, run


# Worker processes rebuild the benchmark once from its source and keep it.
_WORKER_BENCH: dict[str, Benchmark] = {}


def _worker_bench(source: dict[str, Any] | None) -> Benchmark:
    key = json.dumps(source, sort_keys=True, default=str)
    if key not in _WORKER_BENCH:
        _WORKER_BENCH[key] = load_benchmark(**(source or {}))
    return _WORKER_BENCH[key]


def _reference_of(source: dict[str, Any], task: str, options: dict[str, Any]) -> None:
    bench = _worker_bench(source)
    reference(bench, task, n=options["reference_configs"], cache_dir=options["cache_dir"])
    if bench.full_costs is not None:  # the unit of the time table, cached like the reference
        time_unit(bench, task, n=options["reference_configs"], cache_dir=options["cache_dir"])


#: Configurations of the target the oracle ablation sees (a seeded subset of the reference).
ORACLE_SAMPLE = 2000


def oracle_sample(
    bench: Benchmark, task: str, *, n: int, cache_dir: Path | None
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The target's own sample behind ``bohb-warm-oracle``'s weights: up to
    :data:`ORACLE_SAMPLE` configurations of its reference sample and their full-fidelity
    values (minimised). Only that ablation, an upper bound, ever sees it."""
    if bench.reference_configs is not None:
        pick = np.random.default_rng(REFERENCE_SEED).permutation(len(bench.reference_configs))
        configs = [bench.reference_configs[i] for i in pick[:ORACLE_SAMPLE]]
        values = np.asarray(bench.full_values(task, configs), dtype=float)
    else:
        configs, values = task_values(bench, task, n=n, seed=REFERENCE_SEED, cache_dir=cache_dir)
        configs, values = configs[:ORACLE_SAMPLE], values[:ORACLE_SAMPLE]
    ok = np.isfinite(values)
    return [c for c, k in zip(configs, ok, strict=True) if k], bench.minimised(values[ok])


# The last task's reference, knowledge base and oracle sample: units arrive in task
# order, so a process reuses them for every method of the task instead of rereading the
# cache.
_TASK_INPUTS: dict[str, tuple[tuple[float, float], list[Any], Any]] = {}


def _task_inputs(
    bench: Benchmark, task: str, options: dict[str, Any], method: str
) -> tuple[tuple[float, float], list[Any], Any]:
    key = json.dumps(
        [bench.source, bench.name, task, options["past"], options["mix"],
         options["reference_configs"], options["cache_dir"]],
        sort_keys=True, default=str,
    )  # fmt: skip
    if key not in _TASK_INPUTS:
        cache_dir = options["cache_dir"]
        ref = reference(bench, task, n=options["reference_configs"], cache_dir=cache_dir)
        past = (
            knowledge_base(
                bench, task, cache_dir=cache_dir, past=options["past"], mix=options["mix"]
            )
            if len(bench.tasks) > 1
            else []
        )
        _TASK_INPUTS.clear()
        _TASK_INPUTS[key] = (ref, past, None)
    ref, past, oracle = _TASK_INPUTS[key]
    if method == "bohb-warm-oracle" and oracle is None:
        oracle = oracle_sample(
            bench, task, n=options["reference_configs"], cache_dir=options["cache_dir"]
        )
        _TASK_INPUTS[key] = (ref, past, oracle)
    return ref, past, oracle


def _run_unit(
    source: dict[str, Any] | None,
    bench: Benchmark | None,
    task: str,
    method: str,
    seeds: Sequence[int],
    options: dict[str, Any],
) -> tuple[pd.DataFrame, list[dict[str, Any]], list[dict[str, Any]]]:
    """Every seed of one (task, method); in a worker process ``bench`` is rebuilt."""
    if bench is None:
        bench = _worker_bench(source)
    ref, past, oracle = _task_inputs(bench, task, options, method)
    evaluations, summary, runs = [], [], []
    for seed in seeds:
        evals, rows, run = run_one(
            bench, task, method, seed,
            budget=options["budget"], workers=options["workers"], past_tasks=past, ref=ref,
            oracle=oracle,
        )  # fmt: skip
        evaluations.append(evals)
        summary.extend(rows)
        runs.append(run)
    return pd.concat(evaluations, ignore_index=True), summary, runs


def run_bench(
    bench: Benchmark,
    *,
    tasks: Sequence[str],
    methods: Sequence[str],
    budget: float,
    workers: int,
    seeds: Sequence[int],
    out: Path,
    cache_dir: Path | None = None,
    reference_configs: int = REFERENCE_CONFIGS,
    past: str = "random",
    past_mix: str | None = None,
    jobs: int = 1,
    progress: TextIO | None = sys.stderr,
) -> pd.DataFrame:
    """Run every (task, method, seed) and write the outputs to ``out``.

    Writes ``summary.csv``, ``runs.csv``, ``evaluations.parquet``, ``comparison.csv``
    (every pair of methods; with 2+ methods), ``no_harm.csv`` (each warm method against
    cold bohb; when both kinds ran), ``summary.md`` and ``regret.png``; and, for a
    benchmark with a clock, regret against simulated time in ``summary_time.csv``,
    ``regret_time.png`` and a section of ``summary.md`` (:mod:`warmtune.bench.wallclock`).

    Args:
        past: the kind of past (:data:`~warmtune.bench.pasts.PASTS`).
        past_mix: distractors per past task, ``"K:KIND[,K:KIND]"``
            (:func:`~warmtune.bench.pasts.parse_mix`).
        jobs: processes to run (task, method) units in; 1 runs everything here.

    Returns:
        The summary table.

    Raises:
        ValueError: an unknown task, method or past, or a bad budget/worker count.
    """
    unknown = [t for t in tasks if t not in bench.tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; {bench.name} has {bench.tasks}")
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {list(ALL_METHODS)}")
    if not bench.weights and any(m in WEIGHT_METHODS for m in methods):
        raise ValueError(
            f"{[m for m in methods if m in WEIGHT_METHODS]} copy trials' weights, and "
            f"{bench.name}'s trials have none; run them on nqm"
        )
    if not budget > 0:
        raise ValueError(f"--budget must be > 0 full-fidelity evaluations, got {budget}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"--workers must be an int >= 1, got {workers!r}")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"--jobs must be an int >= 1, got {jobs!r}")
    if past not in PASTS:
        raise ValueError(f"--past must be one of {list(PASTS)}, got {past!r}")
    mix = parse_mix(past_mix)
    if len(bench.tasks) < 2 and any(m in WARM_METHODS for m in methods):
        raise ValueError("warm methods need a benchmark with 2+ tasks (leave-one-task-out)")
    if jobs > 1 and not bench.source:
        raise ValueError("--jobs > 1 needs a benchmark made by load_benchmark (it is rebuilt)")
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir if cache_dir is not None else out / "cache"
    options = {
        "cache_dir": cache_dir,
        "reference_configs": reference_configs,
        "past": past,
        "mix": mix,
        "budget": budget,
        "workers": workers,
    }
    # The knowledge base is shared by every target: build (and cache) it here, once,
    # so worker processes only read it.
    if len(bench.tasks) > 1 and any(m in WARM_METHODS for m in methods):
        for task in bench.tasks:
            if past == "random":
                random_past(bench, task, n=KB_CONFIGS, cache_dir=cache_dir)
            else:
                past_search(bench, task, cache_dir=cache_dir)
    units = [(task, method) for task in tasks for method in methods]
    bar = _Progress(len(units) * len(seeds), progress)
    evaluations, summary, runs = [], [], []

    results: dict[int, tuple[pd.DataFrame, list[dict[str, Any]], list[dict[str, Any]]]] = {}
    if jobs == 1:
        for i, (task, method) in enumerate(units):
            results[i] = _run_unit(None, bench, task, method, seeds, options)
            bar.advance(len(seeds), results[i][2][-1])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            # References first, a task per process: the units of one task would
            # otherwise all compute (and cache) the same reference at once.
            n = len(tasks)
            list(pool.map(_reference_of, [bench.source] * n, tasks, [options] * n))
            futures = {
                pool.submit(_run_unit, bench.source, None, task, method, list(seeds), options): i
                for i, (task, method) in enumerate(units)
            }
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.advance(len(seeds), results[futures[future]][2][-1])
            except BaseException:
                # Fail now (a unit raised, or Ctrl+C), not after every queued unit ran.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    bar.close()
    # In unit order, whatever order they finished in: the outputs are deterministic.
    for i in range(len(units)):
        evaluations.append(results[i][0])
        summary.extend(results[i][1])
        runs.extend(results[i][2])
    table = pd.DataFrame(summary)
    table.to_csv(out / "summary.csv", index=False)
    pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)
    pd.concat(evaluations, ignore_index=True).to_parquet(out / "evaluations.parquet", index=False)
    comparison = compare(table, "bohb-warm")
    if comparison is not None:
        comparison.to_csv(out / "comparison.csv", index=False)
    harm = no_harm(table)
    if harm is not None:
        harm.to_csv(out / "no_harm.csv", index=False)
    (out / "summary.md").write_text(
        markdown_table(table) + markdown_extras(pd.DataFrame(runs), comparison, harm)
    )
    plot_regret(table, out / "regret.png")
    write_time_outputs(
        bench,
        out=out,
        evaluations=evaluations,
        runs=runs,
        ffe_grid=budget_grid(budget),
        workers=workers,
        reference_configs=reference_configs,
        cache_dir=cache_dir,
    )
    return table


class _Progress:
    """A one-line progress bar on a terminal; a line per finished unit elsewhere."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.start = time.perf_counter()
        self.tty = stream is not None and stream.isatty()

    def advance(self, n: int, last: Mapping[str, Any]) -> None:
        self.done += n
        if self.stream is None:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        width = 30
        filled = int(width * self.done / self.total)
        text = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} runs "
            f"{elapsed:.0f}s elapsed, ~{eta:.0f}s left ({last['task']} {last['method']}: "
            f"final regret {last['final_regret']:.3f})"
        )
        print(("\r" + text) if self.tty else text, end="" if self.tty else "\n",
              file=self.stream, flush=True)  # fmt: skip

    def close(self) -> None:
        if self.stream is not None and self.tty:
            print(file=self.stream, flush=True)
