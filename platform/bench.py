"""Benchmark harness: searchers on surrogate/tabular benchmarks, leave-one-task-out.

``warmtune bench`` (:mod:`warmtune.cli_bench`) runs every (task, method, seed) of a
benchmark through :func:`warmtune.simulator.simulate` and reports anytime regret.

Benchmarks (:func:`load_benchmark`):

* ``lcbench``: the YAHPO Gym scenario folder ``DATA/yahpo/lcbench``; tasks are its
  OpenML instances, fidelity ``epoch`` (1..52), metric ``val_accuracy`` (max).
* ``yahpo:PATH``: any YAHPO scenario folder; metric and fidelity default to the
  scenario's first non-runtime output and its first integer fidelity.
* ``nb201:DATASET``: NAS-Bench-201, target ``DATASET`` (cifar10, cifar100,
  imagenet16-120); tasks are the three datasets. A single fidelity (``max_budget=1``)
  whose cost is :func:`~warmtune.trainables.benchmarks.nb201.evaluation_cost`.

Protocol, leave-one-task-out: for a target task, the knowledge base is every *other*
task of the benchmark, each with the same :data:`KB_CONFIGS` random configurations
evaluated at full fidelity (seed :data:`KB_SEED`). The same configurations on every
task make the zero-shot portfolio well defined: a configuration's average normalised
rank across the past tasks needs its value on each of them.

Normalised regret at a budget of ``b`` full-fidelity equivalents (FFE)::

    regret(b) = (y* - y_best(b)) / (y* - y_median)

in the metric's natural direction, where ``y*`` and ``y_median`` are the best and the
median of :data:`REFERENCE_CONFIGS` random configurations of the task at full
fidelity (seed :data:`REFERENCE_SEED`), and ``y_best(b)`` the best full-fidelity value
the method reported with at most ``b`` FFE spent. 0 is the reference best, 1 is a
median configuration; a method can beat the sampled optimum, so slightly negative
values are possible. Before its first full-fidelity result a method has no incumbent:
its ``best_value`` and ``normalized_regret`` are NaN (tables and plots average the
runs that have one).

Knowledge bases and references are cached as Parquet in the cache folder
(default ``OUT/cache``), keyed by benchmark, task, metric, size and seed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from warmtune.searchers import make_searcher
from warmtune.searchers.base import Searcher, Suggestion
from warmtune.simulator import SimulationResult, simulate
from warmtune.space import IntParam, SearchSpace

__all__ = [
    "ALL_METHODS",
    "Benchmark",
    "NB201Backend",
    "YahpoBackend",
    "ZeroShot",
    "budget_grid",
    "load_benchmark",
    "run_bench",
]

#: Methods ``warmtune bench`` knows, in report order.
ALL_METHODS = (
    "random",
    "hyperband",
    "asha",
    "bohb",
    "bohb-warm",
    "zeroshot",
    "optuna",
    "hyperopt",
)
#: Random configurations per past task in the knowledge base, and their seed.
KB_CONFIGS = 100
KB_SEED = 0
#: Random configurations that define ``y*`` and ``y_median`` of a task, and their seed.
REFERENCE_CONFIGS = 2000
REFERENCE_SEED = 12345
#: Budgets (FFE) the summary reports, capped at the run's budget.
BUDGET_GRID = (1, 2, 5, 10, 20)
_NB201_DATASETS = ("cifar10", "cifar100", "imagenet16-120")


# Backends -------------------------------------------------------------------------------
class YahpoBackend:
    """One YAHPO instance as a simulator backend (iteration ``b`` = fidelity ``low + b - 1``).

    Args:
        scenario: the :class:`~warmtune.trainables.benchmarks.yahpo.YahpoScenario`.
        instance: the task (e.g. an OpenML id for lcbench).
        metric: the surrogate output to optimise.
        mode: ``"min"`` or ``"max"``; values are negated for ``"max"``.
        fidelity: the integer fidelity parameter (e.g. ``epoch``).
    """

    def __init__(
        self, scenario: Any, *, instance: str, metric: str, mode: str, fidelity: str
    ) -> None:
        self.scenario = scenario
        self.instance = instance
        self.metric = metric
        self.sign = 1.0 if mode == "min" else -1.0
        self.fidelity = fidelity
        p = scenario.fidelity_space[fidelity]
        self.low = int(p.low)
        self.max_budget = int(p.high) - self.low + 1
        self.runtime = scenario.meta.runtime_name or (
            "time" if "time" in scenario.outputs else None
        )

    def evaluate(self, config: dict[str, Any], budget: int) -> tuple[float | None, float]:
        """``(value to minimise, seconds from iteration budget - 1 to budget)``."""
        return self.evaluate_many(config, [budget])[0]

    def evaluate_many(
        self, config: dict[str, Any], budgets: Sequence[int]
    ) -> list[tuple[float | None, float]]:
        """:meth:`evaluate` for a whole segment in one surrogate call."""
        budgets = list(budgets)
        if not budgets:
            return []
        # One batch: every needed iteration plus the one before the first, so that the
        # per-iteration cost is a difference of the surrogate's cumulative runtime.
        first = max(budgets[0] - 1, 1)
        steps = list(range(first, budgets[-1] + 1))
        rows = [{**config, self.fidelity: self.low + b - 1} for b in steps]
        out = self.scenario.evaluate(rows, instance=self.instance)
        values = dict(zip(steps, self.sign * out[self.metric].to_numpy(), strict=True))
        times = (
            dict(zip(steps, out[self.runtime].to_numpy(), strict=True))
            if self.runtime
            else dict.fromkeys(steps, 0.0)
        )
        results: list[tuple[float | None, float]] = []
        for b in budgets:
            previous = times[b - 1] if b > 1 else 0.0
            # The surrogate's cumulative time is not exactly monotone; a negative step
            # would be an invalid cost, so clip it.
            cost = max(float(times[b]) - float(previous), 0.0) if self.runtime else 1.0
            value = float(values[b])
            results.append((value if math.isfinite(value) else None, cost))
        return results


class NB201Backend:
    """A NAS-Bench-201 dataset as a single-fidelity backend (negated test accuracy).

    Args:
        table: the :class:`~warmtune.trainables.benchmarks.nb201.NB201Table`.
        dataset: ``cifar10``, ``cifar100`` or ``imagenet16-120``.
    """

    max_budget = 1

    def __init__(self, table: Any, dataset: str) -> None:
        self.table = table
        self.dataset = dataset

    def evaluate(self, config: dict[str, Any], budget: int) -> tuple[float, float]:
        """``(-accuracy, evaluation_cost(config))``."""
        from warmtune.trainables.benchmarks.nb201 import evaluation_cost

        return -self.table.accuracy(config, self.dataset), evaluation_cost(config)


# Benchmarks -----------------------------------------------------------------------------
@dataclass
class Benchmark:
    """A benchmark: its tasks, space, backends and full-fidelity values.

    Attributes:
        name: how results name it (``lcbench``, ``nb201``, a scenario name).
        tasks: every task; the knowledge base of one is all the others.
        space: the search space shared by the tasks.
        max_budget: full fidelity in iterations.
        metric: the optimised metric; ``mode`` its direction (``min``/``max``).
        backend: task -> a simulator backend.
        full_values: (task, configs) -> metric at full fidelity, natural direction.
        default_tasks: targets run when ``--tasks`` is not given.
    """

    name: str
    tasks: list[str]
    space: SearchSpace
    max_budget: int
    metric: str
    mode: str
    backend: Callable[[str], Any]
    full_values: Callable[[str, Sequence[Mapping[str, Any]]], np.ndarray]
    default_tasks: list[str] = field(default_factory=list)

    def minimised(self, values: np.ndarray) -> np.ndarray:
        """Values in the direction the searchers minimise."""
        return np.asarray(values, dtype=float) * (1.0 if self.mode == "min" else -1.0)


def load_benchmark(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    metric: str | None = None,
    mode: str | None = None,
    fidelity: str | None = None,
) -> Benchmark:
    """Build a :class:`Benchmark` from ``lcbench``, ``yahpo:PATH`` or ``nb201:DATASET``.

    Raises:
        ValueError: an unknown benchmark, missing data, or a bad metric/fidelity.
    """
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"--mode must be 'min' or 'max', got {mode!r}")
    if spec == "lcbench":
        return _yahpo(_data_dir(data_dir) / "yahpo" / "lcbench", metric, mode, fidelity)
    if spec.startswith("yahpo:"):
        return _yahpo(Path(spec.partition(":")[2]).expanduser(), metric, mode, fidelity)
    if spec.startswith("nb201:"):
        if metric is not None or fidelity is not None:
            raise ValueError("nb201 has one metric (test accuracy) and no fidelity; drop them")
        return _nb201(_data_dir(data_dir), spec.partition(":")[2])
    raise ValueError(
        f"unknown benchmark {spec!r}; use lcbench, yahpo:PATH (a YAHPO scenario folder) "
        f"or nb201:DATASET with DATASET one of {list(_NB201_DATASETS)}"
    )


def _data_dir(data_dir: str | Path | None) -> Path:
    raw = data_dir if data_dir is not None else os.environ.get("WARMTUNE_DATA")
    if raw is None or not Path(raw).is_dir():
        raise ValueError(
            f"benchmark data not found (--data-dir={data_dir and str(data_dir)!r}, "
            f"$WARMTUNE_DATA={os.environ.get('WARMTUNE_DATA')!r}); pass --data-dir or set "
            "WARMTUNE_DATA to the folder holding yahpo/ and nas-bench-201/"
        )
    return Path(raw)


def _yahpo(path: Path, metric: str | None, mode: str | None, fidelity: str | None) -> Benchmark:
    from warmtune.trainables.benchmarks.yahpo import YahpoScenario

    # One intra-op thread: each call is a small batch, and threads only add overhead.
    scenario = YahpoScenario(path, threads=1)
    modes = scenario.output_modes()
    runtime = scenario.meta.runtime_name or "time"
    if metric is None:
        metric = (
            "val_accuracy"
            if "val_accuracy" in modes
            else next(n for n in scenario.outputs if n != runtime)
        )
    if metric not in modes:
        raise ValueError(f"unknown --metric {metric!r}; {scenario.name} has {scenario.outputs}")
    mode = mode or modes[metric]
    ints = [n for n, p in scenario.fidelity_space.items() if isinstance(p, IntParam)]
    if fidelity is None:
        if not ints:
            raise ValueError(f"{scenario.name} has no integer fidelity; it cannot be simulated")
        fidelity = ints[0]
    if fidelity not in ints:
        raise ValueError(
            f"--fidelity must be one of the integer fidelities {ints}, got {fidelity!r}"
        )
    others = {
        n: p.high for n, p in scenario.fidelity_space.items() if n != fidelity
    }  # fixed at their maximum

    def backend(task: str) -> YahpoBackend:
        b = YahpoBackend(scenario, instance=task, metric=metric, mode=mode, fidelity=fidelity)
        if others:
            b.scenario = _FixedFidelity(scenario, others)
        return b

    def full_values(task: str, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        top = scenario.fidelity_space[fidelity].high
        rows = [{**c, fidelity: top, **others} for c in configs]
        return scenario.evaluate(rows, instance=task)[metric].to_numpy(dtype=float)

    tasks = list(scenario.instances)
    return Benchmark(
        name=scenario.name,
        tasks=tasks,
        space=scenario.space,
        max_budget=backend(tasks[0]).max_budget,
        metric=metric,
        mode=mode,
        backend=backend,
        full_values=full_values,
        default_tasks=tasks,
    )


class _FixedFidelity:
    """A scenario whose other fidelities are pinned (e.g. a data fraction at its maximum)."""

    def __init__(self, scenario: Any, fixed: Mapping[str, Any]) -> None:
        self._scenario = scenario
        self._fixed = dict(fixed)
        self.meta, self.outputs = scenario.meta, scenario.outputs
        self.fidelity_space = scenario.fidelity_space

    def evaluate(self, configs: Sequence[Mapping[str, Any]], **kwargs: Any) -> pd.DataFrame:
        return self._scenario.evaluate([{**c, **self._fixed} for c in configs], **kwargs)


def _nb201(data_dir: Path, dataset: str) -> Benchmark:
    from warmtune.trainables.benchmarks.nb201 import NB201Table, search_space

    if dataset not in _NB201_DATASETS:
        raise ValueError(f"unknown nb201 dataset {dataset!r}; use one of {list(_NB201_DATASETS)}")
    table = NB201Table(data_dir / "nas-bench-201")
    return Benchmark(
        name="nb201",
        tasks=list(_NB201_DATASETS),
        space=search_space(),
        max_budget=1,
        metric="test_accuracy",
        mode="max",
        backend=lambda task: NB201Backend(table, task),
        full_values=lambda task, configs: table.accuracies(configs, task),
        default_tasks=[dataset],
    )


# Knowledge base and reference -----------------------------------------------------------
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
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"config_json": [json.dumps(c, sort_keys=True) for c in configs], "value": values}
        ).to_parquet(path, index=False)
    return configs, values


def reference(
    bench: Benchmark, task: str, *, n: int = REFERENCE_CONFIGS, cache_dir: Path | None = None
) -> tuple[float, float]:
    """``(y*, y_median)`` of ``task`` in the metric's natural direction."""
    _, values = task_values(bench, task, n=n, seed=REFERENCE_SEED, cache_dir=cache_dir)
    values = values[np.isfinite(values)]
    best = values.min() if bench.mode == "min" else values.max()
    return float(best), float(np.median(values))


def knowledge_base(
    bench: Benchmark, target: str, *, n: int = KB_CONFIGS, cache_dir: Path | None = None
) -> list[Any]:
    """The past tasks of ``target``: every other task, ``n`` random configs each."""
    from warmtune.searchers.similarity import PastTask

    past = []
    for task in bench.tasks:
        if task == target:
            continue
        configs, values = task_values(bench, task, n=n, seed=KB_SEED, cache_dir=cache_dir)
        past.append(
            PastTask(
                name=str(task),
                meta_features={},
                space=bench.space,
                configs=configs,
                values=values,
                max_budget=bench.max_budget,
                mode=bench.mode,
            )
        )
    return past


# Methods --------------------------------------------------------------------------------
def _rank01(y: np.ndarray) -> np.ndarray:
    """Normalised ranks in [0, 1], 0 = best (smallest); ties share their mean rank."""
    return (pd.Series(y).rank(method="average").to_numpy() - 1.0) / max(len(y) - 1, 1)


class ZeroShot(Searcher):
    """The past tasks' configurations by average normalised rank, then random search.

    Every past task must hold the same configurations (the knowledge base of
    :func:`knowledge_base` does); each is evaluated at full fidelity.

    Args:
        space: the search space.
        seed: seed of the random search after the portfolio.
        past_tasks: the knowledge base.
    """

    # No name: a benchmark baseline, not a searcher for job files.

    def __init__(self, *, space: SearchSpace, seed: int | None, past_tasks: Sequence[Any]) -> None:
        super().__init__(space=space, seed=seed)
        if not past_tasks:
            raise ValueError("zeroshot needs at least one past task; give the benchmark 2+ tasks")
        keys = [json.dumps(c, sort_keys=True) for c in past_tasks[0].configs]
        ranks = np.zeros(len(keys))
        for task in past_tasks:
            own = {
                json.dumps(c, sort_keys=True): v
                for c, v in zip(task.configs, task.values, strict=True)
            }
            # A config missing on a task (failed there) counts as its worst.
            y = np.array([own.get(k, np.inf) for k in keys])
            ranks += _rank01(y)
        order = np.argsort(ranks, kind="stable")
        self.portfolio = [dict(past_tasks[0].configs[i]) for i in order]
        self._next = 0

    def ask(self, trial_id: str) -> Suggestion:
        if self._next < len(self.portfolio):
            config = self.portfolio[self._next]
            self._next += 1
        else:
            config = self.space.sample(self.rng)
        return Suggestion(trial_id=trial_id, config=config)


def make_method(method: str, *, bench: Benchmark, seed: int, past_tasks: Sequence[Any]) -> Searcher:
    """A fresh searcher for ``method`` (one of :data:`ALL_METHODS`)."""
    space, max_budget = bench.space, bench.max_budget
    if method == "zeroshot":
        return ZeroShot(space=space, seed=seed, past_tasks=past_tasks)
    if method == "bohb-warm":
        from warmtune.searchers.warmstart import WarmStart

        warm = WarmStart(space=space, past_tasks=list(past_tasks), meta_features={}, seed=seed)
        return make_searcher("bohb", space=space, seed=seed, max_budget=max_budget, warm_start=warm)
    if method in ALL_METHODS:
        return make_searcher(method, space=space, seed=seed, max_budget=max_budget)
    raise ValueError(f"unknown method {method!r}; choose from {list(ALL_METHODS)}")


# Running --------------------------------------------------------------------------------
def budget_grid(budget: float) -> list[float]:
    """:data:`BUDGET_GRID` capped at ``budget``, plus ``budget`` itself."""
    grid = [float(b) for b in BUDGET_GRID if b < budget]
    return [*grid, float(budget)]


def normalized_regret(best: float, y_star: float, y_median: float) -> float:
    """``(y* - best) / (y* - y_median)``: 0 at the reference best, 1 at the median."""
    if not math.isfinite(best):
        return math.nan
    spread = y_star - y_median
    if spread == 0:
        return 0.0 if best == y_star else math.inf
    return (y_star - best) / spread


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
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """One (task, method, seed): its evaluations and its summary rows."""
    searcher = make_method(method, bench=bench, seed=seed, past_tasks=past_tasks)
    result: SimulationResult = simulate(
        searcher, bench.backend(task), workers=workers, budget_ffe=budget, seed=seed
    )
    key = {"benchmark": bench.name, "task": str(task), "method": method, "seed": seed}
    sign = 1.0 if bench.mode == "min" else -1.0
    rows = []
    for b in budget_grid(budget):
        best = sign * result.best_at(b)  # back to the natural direction
        best_value = best if math.isfinite(best) else math.nan
        rows.append(
            {
                **key,
                "budget_ffe": b,
                "best_value": best_value,
                "normalized_regret": normalized_regret(best_value, *ref),
            }
        )
    evaluations = result.evaluations.assign(**key)
    return evaluations, rows


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
    progress: TextIO | None = sys.stderr,
) -> pd.DataFrame:
    """Run every (task, method, seed) and write the outputs to ``out``.

    Writes ``summary.csv``, ``evaluations.parquet``, ``summary.md`` (mean normalised
    regret per method and budget) and ``regret.png`` (mean regret against FFE).

    Returns:
        The summary table.

    Raises:
        ValueError: an unknown task or method, or a bad budget/worker count.
    """
    unknown = [t for t in tasks if t not in bench.tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; {bench.name} has {bench.tasks}")
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {list(ALL_METHODS)}")
    if not budget > 0:
        raise ValueError(f"--budget must be > 0 full-fidelity evaluations, got {budget}")
    if len(bench.tasks) < 2 and any(m in ("zeroshot", "bohb-warm") for m in methods):
        raise ValueError("warm methods need a benchmark with 2+ tasks (leave-one-task-out)")
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir if cache_dir is not None else out / "cache"
    total, done, start = len(tasks) * len(methods) * len(seeds), 0, time.perf_counter()
    evaluations, summary = [], []
    for task in tasks:
        ref = reference(bench, task, n=reference_configs, cache_dir=cache_dir)
        past = knowledge_base(bench, task, cache_dir=cache_dir)
        for method in methods:
            for seed in seeds:
                evals, rows = run_one(
                    bench, task, method, seed,
                    budget=budget, workers=workers, past_tasks=past, ref=ref,
                )  # fmt: skip
                evaluations.append(evals)
                summary.extend(rows)
                done += 1
                if progress is not None:
                    final = rows[-1]["normalized_regret"]
                    print(
                        f"[{done}/{total}] {task} {method} seed={seed} "
                        f"regret={final:.3f} ({time.perf_counter() - start:.1f}s)",
                        file=progress,
                        flush=True,
                    )
    table = pd.DataFrame(summary)
    table.to_csv(out / "summary.csv", index=False)
    pd.concat(evaluations, ignore_index=True).to_parquet(out / "evaluations.parquet", index=False)
    (out / "summary.md").write_text(markdown_table(table))
    plot_regret(table, out / "regret.png")
    return table


def mean_regret(table: pd.DataFrame) -> pd.DataFrame:
    """Mean normalised regret, methods as rows and budgets as columns (NaN runs skipped)."""
    pivot = table.pivot_table(
        index="method",
        columns="budget_ffe",
        values="normalized_regret",
        aggfunc="mean",
        dropna=False,
    )
    order = [m for m in ALL_METHODS if m in pivot.index]
    # Keep budgets where no run had a result yet: the table shows them as n/a.
    return pivot.reindex(index=order, columns=sorted(table["budget_ffe"].unique()))


def markdown_table(table: pd.DataFrame) -> str:
    """The mean-regret table as Markdown (``n/a``: no run had a full-fidelity result)."""
    pivot = mean_regret(table)
    head = ["method", *[f"{b:g} FFE" for b in pivot.columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in pivot.iterrows():
        cells = ["n/a" if not np.isfinite(v) else f"{v:.3f}" for v in row]
        lines.append("| " + " | ".join([str(method), *cells]) + " |")
    n_tasks, n_seeds = table["task"].nunique(), table["seed"].nunique()
    note = (
        f"\nMean normalised regret over {n_tasks} task(s) x {n_seeds} seed(s) "
        "(0 = best of the reference sample, 1 = its median).\n"
    )
    return "\n".join(lines) + "\n" + note


def plot_regret(table: pd.DataFrame, path: Path) -> None:
    """Mean normalised regret against FFE, one line per method (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pivot = mean_regret(table)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, row in pivot.iterrows():
        ax.plot(
            row.index.to_numpy(dtype=float), row.to_numpy(dtype=float), marker="o", label=method
        )
    ax.set_xlabel("full-fidelity equivalents (FFE)")
    ax.set_ylabel("mean normalised regret")
    ax.set_xscale("log")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
