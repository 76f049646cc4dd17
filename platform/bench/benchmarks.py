"""Benchmarks ``warmtune bench`` knows: their tasks, space, backends and full-fidelity values.

* ``lcbench``: the YAHPO Gym scenario folder ``DATA/yahpo/lcbench``; tasks are its
  OpenML instances, fidelity ``epoch`` (1..52), metric ``val_accuracy`` (max).
* ``yahpo:NAME`` or ``yahpo:PATH``: any YAHPO scenario, by its name in the data
  directory (``yahpo:iaml_glmnet``) or its folder; metric and fidelity default to the
  scenario's first non-runtime output and its first integer fidelity (else its
  first fidelity). An integer fidelity is simulated as training iterations, a float
  one (``trainsize``) as fits from scratch whose budgets are the fidelity values
  themselves (see :mod:`warmtune.bench.backends`).
* ``nb201:DATASET``: NAS-Bench-201, target ``DATASET`` (cifar10, cifar100,
  imagenet16-120); tasks are the three datasets. A single fidelity (``max_budget=1``)
  whose cost is :func:`~warmtune.trainables.benchmarks.nb201.evaluation_cost`.
* ``nqm``: SGD on the noisy quadratic model (:mod:`warmtune.trainables.nqm`), exact
  and computed, no data; tasks are 12 variants (dimensions x curvature spectrum x
  gradient noise), ``lr`` and ``batch_size`` searched, 32 iterations of 4,096
  examples, metric ``loss`` (min). Its trials have weights, so PBT runs on it.

``full_costs`` gives the seconds of one full-fidelity evaluation from scratch, the
unit of the regret-against-time tables (:mod:`warmtune.bench.wallclock`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warmtune.bench.backends import FixedFidelity, NB201Backend, YahpoBackend, YahpoFloatBackend
from warmtune.space import IntParam, SearchSpace

__all__ = ["NB201_DATASETS", "Benchmark", "load_benchmark"]

NB201_DATASETS = ("cifar10", "cifar100", "imagenet16-120")


@dataclass
class Benchmark:
    """A benchmark: its tasks, space, backends and full-fidelity values.

    Attributes:
        name: how results name it (``lcbench``, ``nb201``, a scenario name).
        tasks: every task; the knowledge base of one is all the others.
        space: the search space shared by the tasks.
        max_budget: full fidelity: iterations, or a float fidelity's upper bound.
        metric: the optimised metric; ``mode`` its direction (``min``/``max``).
        backend: task -> a simulator backend.
        full_values: (task, configs) -> metric at full fidelity, natural direction.
        default_tasks: targets run when ``--tasks`` is not given.
        reference_configs: every configuration of the space when it is small enough to
            enumerate (nb201): the reference is then exhaustive.
        target_gap: the ``evals_to_target`` tolerance, in metric units.
        source: :func:`load_benchmark`'s arguments, so worker processes can rebuild it.
        min_budget: the lowest budget successive halving starts at: 1 iteration, or
            a float fidelity's lower bound (iaml's ``trainsize``: 0.03).
        full_costs: (task, configs) -> simulated seconds of one evaluation at full
            fidelity from scratch, from the backend's cost model (the surrogate's
            runtime output at the top fidelity; nb201: ``evaluation_cost``); ``None``
            when the benchmark has no clock.
        meta_features: task -> what a user knows of the task before searching it
            (numbers or labels): YAHPO tasks carry their scenario and task id as labels,
            nb201's datasets their class count, image size and training-set size. None
            is ever computed from a task's results.
        weights: its trials have weights that one trial can copy from another (its
            backends are ``TrainingBackend``s): PBT runs on it.
    """

    name: str
    tasks: list[str]
    space: SearchSpace
    max_budget: float
    metric: str
    mode: str
    backend: Callable[[str], Any]
    full_values: Callable[[str, Sequence[Mapping[str, Any]]], np.ndarray]
    default_tasks: list[str] = field(default_factory=list)
    reference_configs: list[dict[str, Any]] | None = None
    target_gap: float = 0.5
    source: dict[str, Any] = field(default_factory=dict)
    min_budget: float = 1
    full_costs: Callable[[str, Sequence[Mapping[str, Any]]], np.ndarray] | None = None
    meta_features: Callable[[str], dict[str, Any]] = field(default=lambda task: {})
    weights: bool = False

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
    target_gap: float | None = None,
) -> Benchmark:
    """Build a :class:`Benchmark` from ``lcbench``, ``yahpo:PATH`` or ``nb201:DATASET``.

    ``target_gap`` overrides the benchmark's ``evals_to_target`` tolerance; it is part of
    the source, so worker processes rebuild the benchmark with it.

    Raises:
        ValueError: an unknown benchmark, missing data, or a bad metric/fidelity.
    """
    source = {
        "spec": spec,
        "data_dir": data_dir,
        "metric": metric,
        "mode": mode,
        "fidelity": fidelity,
        "target_gap": target_gap,
    }
    bench = _load(spec, data_dir=data_dir, metric=metric, mode=mode, fidelity=fidelity)
    if target_gap is not None:
        bench.target_gap = target_gap
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
        return _yahpo(_dataset("lcbench", data_dir), metric, mode, fidelity)
    if spec.startswith("yahpo:"):
        # A scenario by name (yahpo:iaml_glmnet) or a scenario folder by path.
        from warmtune import data

        target = spec.partition(":")[2]
        path = (
            _dataset(target, data_dir)
            if data.is_dataset_name(target)
            else Path(target).expanduser()
        )
        return _yahpo(path, metric, mode, fidelity)
    if spec == "nqm":
        if metric is not None or fidelity is not None or mode is not None:
            raise ValueError("nqm has one metric (loss, min) and one fidelity; drop them")
        return _nqm()
    if spec.startswith("nb201:"):
        if metric is not None or fidelity is not None:
            raise ValueError("nb201 has one metric (test accuracy) and no fidelity; drop them")
        return _nb201(_dataset("nb201", data_dir), spec.partition(":")[2])
    raise ValueError(
        f"unknown benchmark {spec!r}; use lcbench, yahpo:NAME or yahpo:PATH (a YAHPO "
        "scenario by name, e.g. yahpo:iaml_glmnet, or its folder), "
        f"nb201:DATASET with DATASET one of {list(NB201_DATASETS)}, or nqm"
    )


def _dataset(name: str, data_dir: str | Path | None) -> Path:
    """A dataset's folder by name, from ``--data-dir`` or the data directory
    (:func:`warmtune.data.data_dir`); missing data names the command that fetches it."""
    from warmtune import data

    try:
        return data.require(name, root=data_dir)
    except data.DatasetMissingError as e:
        raise ValueError(str(e)) from None


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
    names = list(scenario.fidelity_space)
    ints = [n for n, p in scenario.fidelity_space.items() if isinstance(p, IntParam)]
    if fidelity is None:
        if not names:
            raise ValueError(f"{scenario.name} has no fidelity parameter; it cannot be simulated")
        fidelity = ints[0] if ints else names[0]
    if fidelity not in names:
        raise ValueError(
            f"--fidelity must be one of {scenario.name}'s fidelities {names}, got {fidelity!r}"
        )
    kind = YahpoBackend if fidelity in ints else YahpoFloatBackend
    others = {
        n: p.high for n, p in scenario.fidelity_space.items() if n != fidelity
    }  # fixed at their maximum

    def backend(task: str) -> YahpoBackend | YahpoFloatBackend:
        b = kind(scenario, instance=task, metric=metric, mode=mode, fidelity=fidelity)
        if others:
            b.scenario = FixedFidelity(scenario, others)
        return b

    def full_values(task: str, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        top = scenario.fidelity_space[fidelity].high
        rows = [{**c, fidelity: top, **others} for c in configs]
        return scenario.evaluate(rows, instance=task)[metric].to_numpy(dtype=float)

    tasks = list(scenario.instances)
    first = backend(tasks[0])

    def full_costs(task: str, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if first.runtime is None:  # the backends' cost model without a runtime output
            return np.full(len(configs), float(first.max_budget))
        top = scenario.fidelity_space[fidelity].high
        rows = [{**c, fidelity: top, **others} for c in configs]
        seconds = scenario.evaluate(rows, instance=task)[first.runtime].to_numpy(dtype=float)
        return np.maximum(seconds, 0.0)  # as the backends clip their costs

    return Benchmark(
        name=scenario.name,
        tasks=tasks,
        space=scenario.space,
        max_budget=first.max_budget,
        min_budget=first.min_budget if isinstance(first, YahpoFloatBackend) else 1,
        full_costs=full_costs,
        metric=metric,
        mode=mode,
        backend=backend,
        full_values=full_values,
        default_tasks=tasks,
        # Labels only: a scenario's instances are OpenML tasks whose dataset properties
        # the scenario folder does not hold, and none is invented from results.
        meta_features=lambda task: {"scenario": scenario.name, "task_id": str(task)},
    )


#: What a user knows of each NAS-Bench-201 dataset before searching it, as the datasets
#: are published: classes, image side in pixels, training images.
NB201_META_FEATURES: dict[str, dict[str, Any]] = {
    "cifar10": {"classes": 10, "image_size": 32, "train_images": 50_000},
    "cifar100": {"classes": 100, "image_size": 32, "train_images": 50_000},
    "imagenet16-120": {"classes": 120, "image_size": 16, "train_images": 151_700},
}


def _nb201(data_dir: Path, dataset: str) -> Benchmark:
    from warmtune.trainables.benchmarks.nb201 import (
        NB201Table,
        all_archs,
        evaluation_cost,
        search_space,
    )

    if dataset not in NB201_DATASETS:
        raise ValueError(f"unknown nb201 dataset {dataset!r}; use one of {list(NB201_DATASETS)}")
    table = NB201Table(data_dir)
    return Benchmark(
        name="nb201",
        tasks=list(NB201_DATASETS),
        space=search_space(),
        max_budget=1,
        metric="test_accuracy",
        mode="max",
        backend=lambda task: NB201Backend(table, task),
        full_values=lambda task, configs: table.accuracies(configs, task),
        default_tasks=[dataset],
        reference_configs=all_archs(),
        # The same cost on every dataset: the proxy counts a cell's operations.
        full_costs=lambda task, configs: np.array([evaluation_cost(c) for c in configs]),
        meta_features=lambda task: dict(NB201_META_FEATURES[task]),
    )


#: The NQM benchmark's tasks: (dimensions, curvature exponent, gradient noise).
NQM_TASKS = {
    f"nqm-d{d}-p{p:g}-n{n:g}": (d, p, n)
    for d in (100, 1000)
    for p in (1.0, 2.0)
    for n in (0.1, 1.0, 10.0)
}
NQM_ITERATIONS = 32


def _nqm() -> Benchmark:
    from warmtune.bench.backends import NQMBackend
    from warmtune.trainables.nqm import NoisyQuadratic

    def model(task: str) -> NoisyQuadratic:
        d, p, n = NQM_TASKS[task]
        return NoisyQuadratic(dims=d, exponent=p, noise=n)

    def full_values(task: str, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        m = model(task)
        # In chunks: a chunk's second moments are (configs x dims) floats.
        chunks = [
            m.losses(configs[i : i + 2048], NQM_ITERATIONS) for i in range(0, len(configs), 2048)
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0)

    def full_costs(task: str, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.full(len(configs), NQMBackend(model(task), NQM_ITERATIONS).cost * NQM_ITERATIONS)

    return Benchmark(
        name="nqm",
        tasks=list(NQM_TASKS),
        space=SearchSpace(
            {
                "lr": {"type": "float", "low": 1e-3, "high": 4.0, "log": True},
                "batch_size": {"type": "int", "low": 4, "high": 1024, "log": True},
            }
        ),
        max_budget=NQM_ITERATIONS,
        metric="loss",
        mode="min",
        backend=lambda task: NQMBackend(model(task), NQM_ITERATIONS),
        full_values=full_values,
        default_tasks=list(NQM_TASKS),
        # Losses span orders of magnitude between tasks; evals_to_target in loss units.
        target_gap=0.001,
        full_costs=full_costs,
        meta_features=lambda task: dict(
            zip(("dims", "exponent", "noise"), NQM_TASKS[task], strict=True)
        ),
        weights=True,
    )
