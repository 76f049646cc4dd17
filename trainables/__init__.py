"""warmtune's trainables and the registry that names them in job files.

A trainable is a Ray Tune function trainable with the signature::

    def train(config: dict, *, max_iterations: int, seed: int, **params) -> None

``config`` holds the searched hyperparameters, ``params`` the job file's fixed
``trainable.params``. It reports one result per training iteration (one unit of
budget) with ``ray.tune.report(metrics, checkpoint=...)``, stops after
``max_iterations`` iterations, and resumes from ``ray.tune.get_checkpoint()``.

Job files name a built-in trainable (``maml-sinusoid``) or any importable
function as ``"package.module:function"``. A function may declare what it reports
and what it accepts with the :func:`trainable` decorator, so a job file with a
wrong metric or parameter fails before Ray starts.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BUILTIN", "TrainableInfo", "resolve_trainable", "trainable", "trial_seed"]


@dataclass(frozen=True)
class TrainableInfo:
    """What warmtune knows about a trainable before running it.

    Attributes:
        name: the job-file name (built-in name or ``module:function``).
        target: ``"module:function"`` of the function trainable.
        metrics: reported metric -> its natural mode (``"min"``/``"max"``), or
            ``None`` when the trainable does not declare its metrics.
        settings: ``"module:Class"`` of a pydantic model that validates the merged
            fixed params and searched config, or ``None``.
        description: one line for ``warmtune trainables``.
        meta_features: ``"module:function"`` computing task meta-features from the
            fixed params (``fn(params: dict) -> dict``), or ``None``. The job file's
            ``task.meta_features`` add to (and override) them.
    """

    name: str
    target: str
    metrics: Mapping[str, str] | None = None
    settings: str | None = None
    description: str = ""
    meta_features: str | None = None

    def task_meta_features(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The meta-features this trainable computes for its fixed ``params``."""
        return dict(_import(self.meta_features)(dict(params))) if self.meta_features else {}

    def load(self) -> Callable[..., None]:
        return _import(self.target)

    def load_settings(self) -> Any:
        return _import(self.settings) if self.settings else None


BUILTIN: dict[str, TrainableInfo] = {
    info.name: info
    for info in [
        TrainableInfo(
            name="maml-sinusoid",
            target="warmtune.trainables.maml.trainable:train_sinusoid",
            metrics={"loss": "min", "pre_loss": "min", "train_loss": "min"},
            settings="warmtune.trainables.maml.trainable:SinusoidSettings",
            description="MAML on sinusoid regression (Finn et al. 2017); loss = MSE after "
            "adaptation on held-out tasks",
            meta_features="warmtune.trainables.maml.trainable:sinusoid_meta_features",
        ),
        TrainableInfo(
            name="maml-omniglot",
            target="warmtune.trainables.maml.omniglot_trainable:train_omniglot",
            metrics={
                "val_accuracy": "max",
                "val_loss": "min",
                "train_loss": "min",
                "test_accuracy": "max",
                "test_accuracy_ci95": "min",
                "test_loss": "min",
            },
            settings="warmtune.trainables.maml.omniglot_settings:OmniglotSettings",
            description="Few-shot Omniglot N-way K-shot (params.data: the omniglot folder): "
            "MAML, first-order MAML, ANIL, Meta-SGD, Reptile, Prototypical or Matching "
            "Networks; val_accuracy on held-out characters",
            meta_features="warmtune.trainables.maml.omniglot_trainable:omniglot_meta_features",
        ),
        TrainableInfo(
            name="nas-omniglot",
            target="warmtune.trainables.nas.trainable:train_nas",
            metrics={
                "val_accuracy": "max",
                "val_loss": "min",
                "train_loss": "min",
                "train_accuracy": "max",
                "test_accuracy": "max",
                "test_loss": "min",
                "params": "min",
                "latency_ms": "min",
                "images_per_second": "max",
            },
            settings="warmtune.trainables.nas.trainable:NASSettings",
            description="NAS-Bench-201 cell network trained on Omniglot classification "
            "(params.data: the omniglot folder); one iteration = epochs_per_report epochs",
            meta_features="warmtune.trainables.nas.trainable:nas_meta_features",
        ),
        TrainableInfo(
            name="yahpo",
            target="warmtune.trainables.benchmarks.trainable:train_yahpo",
            # Outputs differ between scenarios (lcbench: val_accuracy, time, ...;
            # rbv2_*: acc, auc, logloss, ...), so the metric is checked at run time.
            metrics=None,
            settings="warmtune.trainables.benchmarks.trainable:YahpoSettings",
            description="YAHPO Gym surrogate of any scenario folder (params.scenario, "
            "params.instance); one iteration = one fidelity step",
        ),
        TrainableInfo(
            name="nb201",
            target="warmtune.trainables.benchmarks.trainable:train_nb201",
            metrics={"accuracy": "max", "cost": "min"},
            settings="warmtune.trainables.benchmarks.trainable:NB201Settings",
            description="NAS-Bench-201 table lookup (cifar10, cifar100, imagenet16-120); "
            "a single fidelity",
        ),
        TrainableInfo(
            name="quadratic",
            target="warmtune.trainables.quadratic:train_quadratic",
            metrics={"loss": "min"},
            settings="warmtune.trainables.quadratic:QuadraticSettings",
            description="a noiseless quadratic bowl with a learning curve; for smoke tests "
            "and examples that must run in seconds",
        ),
        TrainableInfo(
            name="nqm",
            target="warmtune.trainables.nqm:train_nqm",
            metrics={"loss": "min"},
            settings="warmtune.trainables.nqm:NQMSettings",
            description="SGD on the noisy quadratic model (Zhang et al. 2019), exact in "
            "closed form: weights a schedule (PBT) improves; runs in milliseconds",
            meta_features="warmtune.trainables.nqm:meta_features",
        ),
    ]
}


def trainable(
    *, metrics: Mapping[str, str], settings: type | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Declare a user trainable's metrics (name -> ``"min"``/``"max"``) and settings model.

    Example::

        @trainable(metrics={"accuracy": "max"})
        def train(config, *, max_iterations, seed, **params): ...
    """
    for metric, mode in metrics.items():
        if mode not in ("min", "max"):
            raise ValueError(f"metric {metric!r}: mode must be 'min' or 'max', got {mode!r}")

    def mark(fn: Callable[..., None]) -> Callable[..., None]:
        fn.warmtune_metrics = dict(metrics)  # type: ignore[attr-defined]
        fn.warmtune_settings = settings  # type: ignore[attr-defined]
        return fn

    return mark


def resolve_trainable(ref: str) -> TrainableInfo:
    """Find a trainable by built-in name or ``"module:function"``.

    Raises:
        ValueError: unknown name, or the module/function cannot be imported.
    """
    if ref in BUILTIN:
        return BUILTIN[ref]
    if ":" not in ref:
        raise ValueError(
            f"unknown trainable {ref!r}; use a built-in name ({', '.join(sorted(BUILTIN))}) "
            "or 'package.module:function'"
        )
    fn = _import(ref)
    if not callable(fn):
        raise ValueError(f"trainable {ref!r} is not callable")
    settings = getattr(fn, "warmtune_settings", None)
    return TrainableInfo(
        name=ref,
        target=ref,
        metrics=getattr(fn, "warmtune_metrics", None),
        settings=f"{settings.__module__}:{settings.__qualname__}" if settings else None,
    )


def trial_seed(seed: int, config: Mapping[str, Any]) -> int:
    """A per-trial seed that depends only on the job seed and the configuration.

    Stable across processes and runs (unlike ``hash()``), so a trial restarted on
    another node draws the same data.
    """
    text = json.dumps([seed, sorted(config.items())], default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"cannot import module {module_name!r} for {target!r}: {e}; "
            "check the name and that the module is installed on every Ray node"
        ) from None
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj
