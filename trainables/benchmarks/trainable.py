"""Ray Tune function trainables over the YAHPO Gym and NAS-Bench-201 benchmarks.

Same contract as :mod:`warmtune.trainables.quadratic`: ``fn(config, *,
max_iterations, seed, **params)``, one ``tune.report`` per iteration with a tiny
checkpoint (the iteration), resume from ``tune.get_checkpoint()``. The
benchmarks are deterministic, so ``seed`` changes nothing.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import tune

from .nb201 import Dataset, NB201Table, evaluation_cost
from .yahpo import YahpoScenario

__all__ = [
    "NB201_METRICS",
    "YAHPO_LCBENCH_METRICS",
    "NB201Settings",
    "YahpoSettings",
    "fidelity_schedule",
    "train_nb201",
    "train_yahpo",
]

#: What ``train_yahpo`` reports on lcbench (the surrogate's outputs) and their modes.
YAHPO_LCBENCH_METRICS: dict[str, str] = {
    "time": "min",
    "val_accuracy": "max",
    "val_cross_entropy": "min",
    "val_balanced_accuracy": "max",
    "test_cross_entropy": "min",
    "test_balanced_accuracy": "max",
}
#: What ``train_nb201`` reports: test accuracy (percent) and the cost proxy.
NB201_METRICS: dict[str, str] = {"accuracy": "max", "cost": "min"}


class YahpoSettings(BaseModel):
    """Fixed parameters of :func:`train_yahpo` (searched keys are allowed too)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    scenario: str = Field(
        description="A YAHPO scenario's name (lcbench, rbv2_svm, ...), found in the data "
        "directory, or the path of one scenario folder."
    )
    instance: str = Field(description="Instance (lcbench: an OpenML task id such as '3945').")
    metric: str | None = Field(None, description="Output the search optimizes; checked early.")
    fidelity: str | None = Field(
        None, description="Fidelity stepped once per iteration (default: the first one)."
    )
    fidelity_steps: int = Field(
        10, ge=1, description="Iterations to reach the maximum of a float fidelity."
    )
    threads: int = Field(1, ge=1, description="onnxruntime threads per trial.")

    @field_validator("scenario")
    @classmethod
    def _scenario_folder(cls, v: str) -> str:
        return _existing_path(
            v, kind="yahpo", what="YAHPO scenario folder (with model.onnx)", file="model.onnx"
        )


class NB201Settings(BaseModel):
    """Fixed parameters of :func:`train_nb201` (searched keys are allowed too)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    path: str = Field(
        description="nb201 (the table in the data directory), nats_bench.csv, or the "
        "folder holding it."
    )
    dataset: Dataset = Field(description="cifar10, cifar100 or imagenet16-120.")

    @field_validator("path")
    @classmethod
    def _table_path(cls, v: str) -> str:
        return _existing_path(v, kind="nb201", what="NAS-Bench-201 table", file="nats_bench.csv")


def _existing_path(value: str, *, kind: str, what: str, file: str) -> str:
    """``value`` as an absolute path that exists: a dataset name of ``kind`` resolved in
    the data directory, or a path with ``~`` and ``$VARS`` expanded.

    Absolute, because trials run in Ray workers whose working directory is not the
    user's; the platform passes the validated value on to them.

    Raises:
        ValueError: A named dataset that is not there (the message says how to get it),
            or a path without ``file``.
    """
    from warmtune.data import names, resolve

    path = resolve(value, kind=kind)
    if not (path.is_file() or (path / file).is_file()):
        raise ValueError(
            f"no {what} at {path} (from {value!r}); give a dataset name "
            f"({', '.join(names(kind))}; `warmtune data list`) or the path of a folder "
            f"holding {file}"
        )
    return str(path)


@functools.lru_cache(maxsize=8)
def _scenario(path: str, threads: int) -> YahpoScenario:
    # One ONNX session per worker process, shared by the trials it runs.
    return YahpoScenario(path, threads=threads)


@functools.lru_cache(maxsize=2)
def _table(path: str) -> NB201Table:
    return NB201Table(path)


def fidelity_schedule(
    scenario: YahpoScenario, fidelity: str | None = None, *, steps: int = 10
) -> list[dict[str, Any]]:
    """Fidelity values of iterations 1, 2, ... (its length caps ``max_iterations``).

    The stepped fidelity goes up by one per iteration if it is an integer (lcbench:
    epoch 1..52), else linearly over ``steps`` iterations; every other fidelity stays
    at its maximum (e.g. rbv2's ``repl``).

    Raises:
        ValueError: ``fidelity`` is not one of the scenario's fidelities.
    """
    names = scenario.fidelity_names
    if not names:
        raise ValueError(f"scenario {scenario.name!r} has no fidelity parameter to step")
    name = fidelity or names[0]
    if name not in scenario.fidelity_space:
        raise ValueError(f"fidelity {name!r} is not one of {names}; pick one of them")
    top = {n: p.high for n, p in scenario.fidelity_space.items()}
    p = scenario.fidelity_space[name]
    if isinstance(p.low, int) and isinstance(p.high, int):
        values: list[Any] = list(range(p.low, p.high + 1))
    else:
        values = [p.low + (p.high - p.low) * k / steps for k in range(1, steps + 1)]
    return [{**top, name: v} for v in values]


def train_yahpo(
    config: dict,
    *,
    max_iterations: int,
    seed: int,
    scenario: str,
    instance: str,
    metric: str | None = None,
    fidelity: str | None = None,
    **params: Any,
) -> None:
    """Report the YAHPO surrogate's outputs once per fidelity step (capped at its max)."""
    settings = YahpoSettings(
        scenario=scenario, instance=instance, metric=metric, fidelity=fidelity, **params
    )
    bench = _scenario(settings.scenario, settings.threads)
    if settings.metric is not None and settings.metric not in bench.outputs:
        raise ValueError(f"metric {settings.metric!r} is not an output; use one of {bench.outputs}")
    schedule = fidelity_schedule(bench, settings.fidelity, steps=settings.fidelity_steps)
    searched = {k: v for k, v in config.items() if k in bench.space}
    start = _restore()
    for it in range(start, min(max_iterations, len(schedule)) + 1):
        row = bench.evaluate([searched], instance=settings.instance, fidelity=schedule[it - 1])
        _report({**row.iloc[0].to_dict(), **schedule[it - 1]}, it)


def train_nb201(config: dict, *, max_iterations: int, seed: int, path: str, dataset: str) -> None:
    """Report the cell's test accuracy and cost proxy once (a single fidelity)."""
    settings = NB201Settings(path=path, dataset=dataset)  # type: ignore[arg-type]
    if _restore() > 1:
        return  # already reported before the restart
    cell = {k: v for k, v in config.items() if k.startswith("edge_")}
    accuracy = _table(settings.path).accuracy(cell, settings.dataset)
    _report({"accuracy": accuracy, "cost": evaluation_cost(cell)}, 1)


def _restore() -> int:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 1
    with checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as f:
        return json.load(f)["iteration"] + 1


def _report(metrics: dict[str, Any], iteration: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"iteration": iteration}, f)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
