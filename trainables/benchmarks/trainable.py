"""Ray Tune function trainables over the YAHPO Gym and NAS-Bench-201 benchmarks.

Same contract as :mod:`warmtune.trainables.quadratic`: ``fn(config, *,
max_iterations, seed, **params)``, one ``tune.report`` per iteration with a tiny
checkpoint (the iteration), resume from ``tune.get_checkpoint()``. The
benchmarks are deterministic, so ``seed`` changes nothing.

A YAHPO fidelity maps onto iterations by its type (:func:`fidelity_schedule`): an
integer fidelity (lcbench's ``epoch``) is one step per iteration; a float fidelity
(``trainsize``) follows the job's budget, iteration ``i`` of ``max_iterations``
evaluating at ``max(low, high * i / max_iterations)``, so successive halving's rungs
land on the same fidelities as in ``warmtune bench``.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
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
        None,
        description="Fidelity that follows the iterations (default: the first one); "
        "see fidelity_schedule.",
    )
    threads: int = Field(1, ge=1, description="onnxruntime threads per trial.")

    @model_validator(mode="before")
    @classmethod
    def _no_fidelity_steps(cls, data: Any) -> Any:
        if isinstance(data, dict) and "fidelity_steps" in data:
            raise ValueError(
                "fidelity_steps was removed: a float fidelity now follows the job's budget "
                "(iteration i of budget.max_iterations evaluates at max(low, high * i / "
                "max_iterations)); delete fidelity_steps and set budget.max_iterations to "
                "the number of steps you want"
            )
        return data

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
    scenario: YahpoScenario, fidelity: str | None = None, *, max_iterations: int
) -> list[dict[str, Any]]:
    """Fidelity values of iterations 1, 2, ... of a trial (its length caps ``max_iterations``).

    * An integer fidelity goes up by one per iteration from its minimum (lcbench:
      epoch 1..52, whatever ``max_iterations``): iteration ``i`` is epoch ``low + i - 1``,
      and a promotion continues the same training.
    * A float fidelity (``trainsize``, a fraction of the training set) follows the
      job's budget: iteration ``i`` evaluates at ``max(low, high * i / max_iterations)``,
      the full fidelity at ``max_iterations``. Successive halving's rungs at
      ``max_iterations * eta**-k`` iterations thus land on the fidelities
      ``high * eta**-k`` (``max_iterations=27``, ``eta=3``: trainsize 1/27, 1/9, 1/3,
      1), the rungs ``warmtune bench`` simulates. Iterations below the minimum
      evaluate at it. Each report is the surrogate's answer for a model fitted at
      that fidelity, not a continuation of the previous one.

    Every other fidelity stays at its maximum (e.g. rbv2's ``repl``).

    Raises:
        ValueError: ``fidelity`` is not one of the scenario's fidelities, or
            ``max_iterations`` is not an int >= 1.
    """
    names = scenario.fidelity_names
    if not names:
        raise ValueError(f"scenario {scenario.name!r} has no fidelity parameter to step")
    name = fidelity or names[0]
    if name not in scenario.fidelity_space:
        raise ValueError(f"fidelity {name!r} is not one of {names}; pick one of them")
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, int)
        or max_iterations < 1
    ):
        raise ValueError(
            f"max_iterations must be an int >= 1 (budget.max_iterations), got {max_iterations!r}"
        )
    top = {n: p.high for n, p in scenario.fidelity_space.items()}
    p = scenario.fidelity_space[name]
    if isinstance(p.low, int) and isinstance(p.high, int):
        values: list[Any] = list(range(p.low, p.high + 1))
    else:
        low, high, m = float(p.low), float(p.high), max_iterations
        # The last iteration is the full fidelity exactly (high * m / m may round past it).
        values = [high if i == m else min(high, max(low, high * i / m)) for i in range(1, m + 1)]
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
    """Report the YAHPO surrogate's outputs once per iteration, at the fidelity
    :func:`fidelity_schedule` gives it (an integer fidelity caps the iterations)."""
    settings = YahpoSettings(
        scenario=scenario, instance=instance, metric=metric, fidelity=fidelity, **params
    )
    bench = _scenario(settings.scenario, settings.threads)
    if settings.metric is not None and settings.metric not in bench.outputs:
        raise ValueError(f"metric {settings.metric!r} is not an output; use one of {bench.outputs}")
    schedule = fidelity_schedule(bench, settings.fidelity, max_iterations=max_iterations)
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
