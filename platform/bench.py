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
task of the benchmark. Two kinds of past (``past=``):

* ``random`` (default, comparable with published transfer baselines): each other task
  with the same :data:`KB_CONFIGS` random configurations evaluated at full fidelity
  (seed :data:`KB_SEED`). The same configurations on every task make the zero-shot
  portfolio exact: a configuration's average normalised rank across the past tasks.
  A table benchmark (nb201) holds every architecture of the other datasets instead.
* ``searches`` (what users' knowledge bases hold): each other task with the
  observations of one earlier simulated cold BOHB search of :data:`PAST_SEARCH_FFE`
  full-fidelity equivalents (seed :data:`KB_SEED`, one worker): multi-fidelity, and
  different configurations on every task. Zero-shot then ranks each task's
  full-fidelity configurations on the other tasks by their surrogates
  (:meth:`~warmtune.searchers.similarity.TaskSimilarity.predict_ranks`).

Normalised regret at a budget of ``b`` full-fidelity equivalents (FFE)::

    regret(b) = (y* - y_best(b)) / (y* - y_median)

in the metric's natural direction, where ``y*`` and ``y_median`` are the best and the
median of :data:`REFERENCE_CONFIGS` random configurations of the task at full
fidelity (seed :data:`REFERENCE_SEED`; nb201: all 15,625 architectures, so ``y*`` is the
true optimum), and ``y_best(b)`` the best full-fidelity value the method reported with
at most ``b`` FFE spent. 0 is the reference best, 1 is a median configuration; a method
can beat the sampled optimum, so slightly negative values are possible. Before its
first full-fidelity result a method has no incumbent: its ``best_value`` is NaN and its
``normalized_regret`` counts as 1 (a median configuration, what a guess is worth), so
that averages over runs do not flatter methods that reach full fidelity late;
``has_incumbent`` tells such rows apart.

FFE are counted as iterations are *reported*, across all workers: with ``N`` workers,
``N`` trials share the clock, so a full-fidelity result arrives later in FFE than with
one worker. Published references are sequential (``--workers 1``).

Per run, ``runs.csv`` also holds ``evals_to_target``: full-fidelity results reported up
to and including the first within ``target_gap`` (metric units, absolute) of ``y*``
(the NAS-Bench-201 measure: 0.5 percentage points of test accuracy).

Method comparisons (``comparison.csv``, in ``summary.md``): per budget, bohb-warm's
regret minus each other method's, paired over (task, seed), with a 95 % t-interval;
``no_harm.csv``: per task, bohb-warm's and cold bohb's final regret and seed-to-seed
standard deviations.

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
from concurrent.futures import ProcessPoolExecutor, as_completed
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

#: Methods ``warmtune bench`` knows, in report order. ``bohb-warm-design`` uses only the
#: warm start's initial design, ``bohb-warm-prior`` only its prior, ``bohb-warm-uniform``
#: both with every past task weighted equally (ablations of ``bohb-warm``).
ALL_METHODS = (
    "random",
    "hyperband",
    "asha",
    "bohb",
    "bohb-warm",
    "bohb-warm-design",
    "bohb-warm-prior",
    "bohb-warm-uniform",
    "zeroshot",
    "optuna",
    "hyperopt",
)
WARM_METHODS = ("bohb-warm", "bohb-warm-design", "bohb-warm-prior", "bohb-warm-uniform", "zeroshot")
#: The kinds of past a knowledge base can hold (see the module docstring).
PASTS = ("random", "searches")
#: Budget of each earlier simulated search in a ``searches`` past.
PAST_SEARCH_FFE = 20.0
#: Random configurations per past task in the knowledge base, and their seed.
KB_CONFIGS = 100
KB_SEED = 0
#: Random configurations that define ``y*`` and ``y_median`` of a task, and their seed.
REFERENCE_CONFIGS = 20_000
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
        reference_configs: every configuration of the space when it is small enough to
            enumerate (nb201): the reference is then exhaustive.
        target_gap: the ``evals_to_target`` tolerance, in metric units.
        source: :func:`load_benchmark`'s arguments, so worker processes can rebuild it.
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
    reference_configs: list[dict[str, Any]] | None = None
    target_gap: float = 0.5
    source: dict[str, Any] = field(default_factory=dict)

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
    source = {
        "spec": spec,
        "data_dir": data_dir,
        "metric": metric,
        "mode": mode,
        "fidelity": fidelity,
    }
    bench = _load(spec, data_dir=data_dir, metric=metric, mode=mode, fidelity=fidelity)
    bench.source = source
    return bench


def _load(
    spec: str,
    *,
    data_dir: str | Path | None,
    metric: str | None,
    mode: str | None,
    fidelity: str | None,
) -> Benchmark:
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
    from warmtune.trainables.benchmarks.nb201 import NB201Table, all_archs, search_space

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
        reference_configs=all_archs(),
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
        frame = pd.DataFrame(
            {"config_json": [json.dumps(c, sort_keys=True) for c in configs], "value": values}
        )
        _write_atomically(frame, path)
    return configs, values


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
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
        _write_atomically(df, path)
    return (
        [json.loads(c) for c in df["config_json"]],
        df["value"].to_numpy(dtype=float),
        df["budget"].to_numpy(dtype=float),
    )


# Methods --------------------------------------------------------------------------------
def _rank01(y: np.ndarray) -> np.ndarray:
    """Normalised ranks in [0, 1], 0 = best (smallest); ties share their mean rank."""
    return (pd.Series(y).rank(method="average").to_numpy() - 1.0) / max(len(y) - 1, 1)


class ZeroShot(Searcher):
    """The past tasks' configurations by average normalised rank, then random search.

    When every past task holds the same configurations (a ``random`` past), the ranks
    are the measured ones. Otherwise the candidates are every task's full-fidelity
    configurations, ranked on each task by measurement where it has one and by that
    task's surrogate elsewhere. Each is evaluated at full fidelity.

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
        shared = (
            all(
                len(t.configs) == len(past_tasks[0].configs)
                and bool(np.all(t.budgets == t.budgets[0]))
                for t in past_tasks
            )
            and len({json.dumps(t.configs, sort_keys=True) for t in past_tasks}) == 1
        )
        self.portfolio = (
            _average_rank_order(past_tasks) if shared else _predicted_rank_order(space, past_tasks)
        )
        self._next = 0

    def ask(self, trial_id: str) -> Suggestion:
        if self._next < len(self.portfolio):
            config = self.portfolio[self._next]
            self._next += 1
        else:
            config = self.space.sample(self.rng)
        return Suggestion(trial_id=trial_id, config=config)


def _average_rank_order(past_tasks: Sequence[Any]) -> list[dict[str, Any]]:
    """Shared configurations, best average measured normalised rank first."""
    keys = [json.dumps(c, sort_keys=True) for c in past_tasks[0].configs]
    ranks = np.zeros(len(keys))
    for task in past_tasks:
        own = {
            json.dumps(c, sort_keys=True): v for c, v in zip(task.configs, task.values, strict=True)
        }
        # A config missing on a task (failed there) counts as its worst.
        y = np.array([own.get(k, np.inf) for k in keys])
        ranks += _rank01(y)
    order = np.argsort(ranks, kind="stable")
    return [dict(past_tasks[0].configs[i]) for i in order]


def _predicted_rank_order(space: SearchSpace, past_tasks: Sequence[Any]) -> list[dict[str, Any]]:
    """Every task's full-fidelity configurations, best average (measured or predicted) rank
    first."""
    from warmtune.searchers.similarity import TaskSimilarity

    candidates: list[dict[str, Any]] = []
    origin: list[tuple[int, float]] = []
    seen: set[str] = set()
    for t, task in enumerate(past_tasks):
        final = task.final_indices()
        ranks = _rank01(task.values[final])
        for i, r in zip(final, ranks, strict=True):
            key = json.dumps(task.configs[i], sort_keys=True)
            if key not in seen:
                seen.add(key)
                candidates.append(dict(task.configs[i]))
                origin.append((t, float(r)))
    scores = TaskSimilarity(past_tasks=list(past_tasks), seed=0).predict_ranks(
        space=space, configs=candidates
    )
    for c, (t, r) in enumerate(origin):
        scores[t, c] = r  # measured beats predicted
    order = np.argsort(scores.mean(axis=0), kind="stable")
    return [candidates[i] for i in order]


def make_method(method: str, *, bench: Benchmark, seed: int, past_tasks: Sequence[Any]) -> Searcher:
    """A fresh searcher for ``method`` (one of :data:`ALL_METHODS`)."""
    space, max_budget = bench.space, bench.max_budget
    if method == "zeroshot":
        return ZeroShot(space=space, seed=seed, past_tasks=past_tasks)
    if method.startswith("bohb-warm") and method in ALL_METHODS:
        from warmtune.searchers.warmstart import WarmStart

        warm = WarmStart(
            space=space,
            past_tasks=list(past_tasks),
            meta_features={},
            seed=seed,
            uniform_weights=method == "bohb-warm-uniform",
        )
        return make_searcher(
            "bohb",
            space=space,
            seed=seed,
            max_budget=max_budget,
            warm_start=warm,
            options={
                "warm_design": method != "bohb-warm-prior",
                "warm_prior": method != "bohb-warm-design",
            },
        )
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
) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, Any]]:
    """One (task, method, seed): its evaluations, its summary rows and its run row."""
    searcher = make_method(method, bench=bench, seed=seed, past_tasks=past_tasks)
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
    full = full[(full["budget"] == bench.max_budget) & full["value"].notna()]
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


# The last task's reference and knowledge base: units arrive in task order, so a
# process reuses them for every method of the task instead of rereading the cache.
_TASK_INPUTS: dict[str, tuple[tuple[float, float], list[Any]]] = {}


def _task_inputs(
    bench: Benchmark, task: str, options: dict[str, Any]
) -> tuple[tuple[float, float], list[Any]]:
    key = json.dumps(
        [bench.source, bench.name, task, options["past"], options["reference_configs"],
         options["cache_dir"]],
        sort_keys=True, default=str,
    )  # fmt: skip
    if key not in _TASK_INPUTS:
        cache_dir = options["cache_dir"]
        ref = reference(bench, task, n=options["reference_configs"], cache_dir=cache_dir)
        past = (
            knowledge_base(bench, task, cache_dir=cache_dir, past=options["past"])
            if len(bench.tasks) > 1
            else []
        )
        _TASK_INPUTS.clear()
        _TASK_INPUTS[key] = (ref, past)
    return _TASK_INPUTS[key]


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
    ref, past = _task_inputs(bench, task, options)
    evaluations, summary, runs = [], [], []
    for seed in seeds:
        evals, rows, run = run_one(
            bench, task, method, seed,
            budget=options["budget"], workers=options["workers"], past_tasks=past, ref=ref,
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
    jobs: int = 1,
    progress: TextIO | None = sys.stderr,
) -> pd.DataFrame:
    """Run every (task, method, seed) and write the outputs to ``out``.

    Writes ``summary.csv``, ``runs.csv``, ``evaluations.parquet``, ``comparison.csv``
    and ``no_harm.csv`` (when bohb-warm ran), ``summary.md`` and ``regret.png``.

    Args:
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
    if not budget > 0:
        raise ValueError(f"--budget must be > 0 full-fidelity evaluations, got {budget}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"--workers must be an int >= 1, got {workers!r}")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"--jobs must be an int >= 1, got {jobs!r}")
    if past not in PASTS:
        raise ValueError(f"--past must be one of {list(PASTS)}, got {past!r}")
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
        "budget": budget,
        "workers": workers,
    }
    # The knowledge base is shared by every target: build (and cache) it here, once,
    # so worker processes only read it.
    if len(bench.tasks) > 1 and any(m in WARM_METHODS for m in methods):
        for task in bench.tasks:
            if past == "random":
                task_values(bench, task, n=KB_CONFIGS, seed=KB_SEED, cache_dir=cache_dir)
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
    comparison = compare(table, "bohb-warm") if "bohb-warm" in methods else None
    if comparison is not None:
        comparison.to_csv(out / "comparison.csv", index=False)
    harm = no_harm(table) if {"bohb-warm", "bohb"} <= set(methods) else None
    if harm is not None:
        harm.to_csv(out / "no_harm.csv", index=False)
    (out / "summary.md").write_text(
        markdown_table(table) + markdown_extras(pd.DataFrame(runs), comparison, harm)
    )
    plot_regret(table, out / "regret.png")
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


def compare(table: pd.DataFrame, method: str) -> pd.DataFrame | None:
    """``method``'s regret minus every other method's, paired over (task, seed), per budget.

    Columns: ``method, other, budget_ffe, mean_difference, ci_low, ci_high, pairs``
    (a 95 % t-interval; negative means ``method`` is better).
    """
    from scipy import stats

    wide = table.pivot_table(
        index=["task", "seed", "budget_ffe"], columns="method", values="normalized_regret"
    )
    if method not in wide.columns:
        return None
    rows = []
    for other in [m for m in ALL_METHODS if m in wide.columns and m != method]:
        diff = (wide[method] - wide[other]).dropna()
        for budget, d in diff.groupby(level="budget_ffe"):
            n = len(d)
            mean = float(d.mean())
            half = (
                float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
                if n > 1
                else math.nan
            )
            rows.append(
                {
                    "method": method,
                    "other": other,
                    "budget_ffe": float(budget),
                    "mean_difference": mean,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                    "pairs": n,
                }
            )
    return pd.DataFrame(rows)


def no_harm(table: pd.DataFrame) -> pd.DataFrame:
    """Per task: bohb-warm's and cold bohb's final regret (mean, seed-to-seed std).

    ``harmed`` is true where bohb-warm's mean is worse than bohb's by more than the
    larger of the two standard deviations (or, with one seed, by any margin).
    """
    final = table[table["budget_ffe"] == table["budget_ffe"].max()]
    final = final[final["method"].isin(["bohb-warm", "bohb"])]
    stats_ = final.groupby(["task", "method"])["normalized_regret"].agg(["mean", "std"]).unstack()
    out = pd.DataFrame(
        {
            "task": stats_.index,
            "warm_mean": stats_[("mean", "bohb-warm")].to_numpy(),
            "warm_std": stats_[("std", "bohb-warm")].to_numpy(),
            "cold_mean": stats_[("mean", "bohb")].to_numpy(),
            "cold_std": stats_[("std", "bohb")].to_numpy(),
        }
    )
    spread = np.fmax(out["warm_std"].fillna(0.0), out["cold_std"].fillna(0.0))
    out["harmed"] = (out["warm_mean"] - out["cold_mean"]) > spread
    return out


def markdown_extras(
    runs: pd.DataFrame, comparison: pd.DataFrame | None, harm: pd.DataFrame | None
) -> str:
    """Incumbent coverage, evaluations to target, the paired comparison and no-harm."""
    parts = []
    to_target = runs.groupby("method")["evals_to_target"]
    lines = [
        "| method | median evaluations to target | runs that reached it |",
        "|---|---|---|",
    ]
    for method in [m for m in ALL_METHODS if m in to_target.groups]:
        values = to_target.get_group(method)
        reached = int(values.notna().sum())
        median = values.fillna(np.inf).median()  # unreached runs count as never
        cell = f"{median:.0f}" if np.isfinite(median) else f"> {int(runs['evaluations'].max())}"
        lines.append(f"| {method} | {cell} | {reached}/{len(values)} |")
    parts.append("\n".join(lines))
    if comparison is not None and len(comparison):
        lines = [
            "| bohb-warm minus | "
            + " | ".join(f"{b:g} FFE" for b in sorted(comparison["budget_ffe"].unique()))
            + " |",
        ]
        lines.append("|---|" + "---|" * comparison["budget_ffe"].nunique())
        for other, group in comparison.groupby("other", sort=False):
            cells = [
                f"{r.mean_difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                for r in group.sort_values("budget_ffe").itertuples()
            ]
            lines.append(f"| {other} | " + " | ".join(cells) + " |")
        parts.append(
            "\n".join(lines)
            + "\n\nPaired differences of normalised regret over (task, seed) with 95 % "
            "t-intervals; negative: bohb-warm is better."
        )
    if harm is not None:
        harmed = harm[harm["harmed"]]
        names = ", ".join(str(t) for t in harmed["task"]) or "none"
        parts.append(
            f"No harm: tasks where bohb-warm's final regret is worse than cold bohb's by "
            f"more than the seed-to-seed spread: {len(harmed)}/{len(harm)} ({names})."
        )
    return "\n" + "\n\n".join(parts) + "\n"


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
    covered = table.groupby("budget_ffe")["has_incumbent"].mean()
    note = (
        f"\nMean normalised regret over {n_tasks} task(s) x {n_seeds} seed(s) "
        "(0 = best of the reference sample, 1 = its median; a run without a "
        "full-fidelity result yet counts as 1). Runs with a full-fidelity result: "
        + ", ".join(f"{100 * v:.0f} % at {b:g} FFE" for b, v in covered.items())
        + ".\n"
    )
    return "\n".join(lines) + "\n" + note


def plot_regret(table: pd.DataFrame, path: Path) -> None:
    """Mean normalised regret against FFE, one line per method (see
    :func:`warmtune.plots.regret_figure`, shared with ``warmtune report``)."""
    from warmtune.plots import regret_figure, save

    save(regret_figure(mean_regret(table)), path, dpi=100)
