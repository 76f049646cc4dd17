"""YAHPO Gym v1.0.2 surrogate benchmarks, read directly with onnxruntime.

A YAHPO scenario folder holds ``config_space.json`` (ConfigSpace JSON, including the
instance parameter and the fidelity parameters), ``encoding.json`` (integer codes of
every categorical value) and ``model.onnx`` (the surrogate). The official
``yahpo-gym`` package pins numpy<2 and ConfigSpace<=0.6.1, so this module
re-implements its evaluation path (``BenchmarkSet._config_to_xs`` and
``objective_function``) on numpy 2 / ConfigSpace 1.x:

* ``x_cont`` (float32): the scenario's ``cont_names`` in that order, raw values (ints
  become floats; no log transform here: the ONNX graph applies the input transforms
  it was fitted with). Inactive or missing values become ``0``.
* ``x_cat`` (int32): the ``cat_names`` (minus ``drop_predict``) in that order, each the
  code from ``encoding.json``; inactive or missing values are coded as ``"#na#"``.
* Outputs: the model's single output, columns named ``y_names``, returned as is. The
  output back-transforms (``tfms_*`` in ``best_params_*.json``) are part of the ONNX
  graph; ``yahpo-gym`` applies none in Python, and neither do we.

Equality with the official package is checked by ``tests/trainables/test_yahpo.py``
against outputs of ``yahpo_gym.BenchmarkSet("lcbench").objective_function``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from warmtune.space import FloatParam, IntParam, SearchSpace

from ._yahpo_scenarios import SCENARIOS

__all__ = ["SCENARIOS", "ScenarioMeta", "YahpoScenario"]

_NA = "#na#"  # yahpo-gym's code for an inactive categorical value


@dataclass(frozen=True)
class ScenarioMeta:
    """What the official package knows about a scenario beyond its folder.

    Attributes:
        y_names: model outputs, in the model's column order.
        cont_names: continuous model inputs (``x_cont``), in order.
        cat_names: categorical model inputs (``x_cat``), in order; includes the instance.
        instance_name: the instance parameter (``None`` for single-instance scenarios).
        fidelity_params: fidelity parameters (part of the config space).
        y_minimize: per output, whether smaller is better.
        runtime_name: the output holding the (simulated) training time, if any.
        drop_predict: categorical parameters the model does not take.
        instances: instances of a scenario without an instance parameter.
    """

    y_names: tuple[str, ...]
    cont_names: tuple[str, ...]
    cat_names: tuple[str, ...]
    instance_name: str | None
    fidelity_params: tuple[str, ...]
    y_minimize: tuple[bool, ...] | None = None
    runtime_name: str | None = None
    drop_predict: tuple[str, ...] = ()
    instances: tuple[str, ...] = field(default=())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScenarioMeta:
        """Build from a :data:`SCENARIOS`-style mapping (lists are fine)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown scenario metadata {sorted(unknown)}; use {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class YahpoScenario:
    """One YAHPO Gym scenario folder, evaluated with onnxruntime.

    Args:
        path: the scenario folder (``config_space.json``, ``encoding.json``, ``model.onnx``),
            or a scenario's name (``"lcbench"``), found in the data directory
            (:func:`warmtune.data.require`).
        instance: default instance for :meth:`evaluate` (e.g. ``"3945"`` for lcbench).
        scenario: key in :data:`SCENARIOS`; defaults to the folder name.
        meta: metadata overriding (or replacing) the :data:`SCENARIOS` entry.
        threads: onnxruntime intra-op threads (``None``: onnxruntime's default); use 1
            inside Ray trials that each hold one CPU.

    Raises:
        ValueError: a file is missing, the scenario is unknown and no ``meta`` is given,
            or ``instance`` is not one of :attr:`instances`; for a name whose data is not
            there, :class:`~warmtune.data.DatasetMissingError` says how to get it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        instance: str | int | None = None,
        scenario: str | None = None,
        meta: ScenarioMeta | Mapping[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        from warmtune.data import is_dataset_name, require

        self.path = require(path) if is_dataset_name(path, kind="yahpo") else Path(path)
        for name in ("config_space.json", "encoding.json"):
            if not (self.path / name).is_file():
                raise ValueError(
                    f"{self.path / name} not found; pass the folder of one YAHPO scenario "
                    "(e.g. .../yahpo/lcbench)"
                )
        self.name = scenario or self.path.name
        self.meta = _resolve_meta(self.name, meta)
        self._threads = threads
        self._session: Any = None
        with open(self.path / "encoding.json") as f:
            self.encoding: dict[str, dict[str, int]] = json.load(f)
        full = _read_space(self.path / "config_space.json")
        self.full_space = full
        m = self.meta
        missing = [
            n for n in (*m.cont_names, *m.cat_names) if n not in full and n not in m.drop_predict
        ]
        if missing:
            raise ValueError(
                f"scenario {self.name!r}: model inputs {missing} are not in config_space.json; "
                "check the metadata (meta=) matches this folder"
            )
        fixed = {m.instance_name, *m.fidelity_params} - {None}
        self.space = _drop(full, fixed)
        self.fidelity_space: dict[str, IntParam | FloatParam] = {}
        for name in m.fidelity_params:
            p = full[name]
            if not isinstance(p, (IntParam, FloatParam)):
                raise ValueError(f"fidelity {name!r} must be numeric in config_space.json")
            self.fidelity_space[name] = p
        if m.instance_name is not None:
            self.instances: list[str] = [str(c) for c in full[m.instance_name].choices]  # type: ignore[union-attr]
        else:
            self.instances = list(m.instances)
        self.instance = None if instance is None else self._check_instance(instance)

    # Metadata -------------------------------------------------------------------------
    @property
    def instance_name(self) -> str | None:
        """The instance parameter (lcbench: ``OpenML_task_id``), ``None`` if there is none."""
        return self.meta.instance_name

    @property
    def fidelity_names(self) -> list[str]:
        return list(self.meta.fidelity_params)

    @property
    def outputs(self) -> list[str]:
        """Model outputs in order (lcbench: time, val_accuracy, ...)."""
        return list(self.meta.y_names)

    def output_modes(self) -> dict[str, str]:
        """Output -> ``"min"``/``"max"`` (from yahpo-gym's ``y_minimize``)."""
        flags = self.meta.y_minimize or (True,) * len(self.meta.y_names)
        return {n: "min" if lo else "max" for n, lo in zip(self.meta.y_names, flags, strict=True)}

    # Evaluation -----------------------------------------------------------------------
    def encode(
        self,
        configs: Sequence[Mapping[str, Any]],
        *,
        instance: str | int | None = None,
        fidelity: Mapping[str, Any] | None = None,
        check: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model inputs ``(x_cont, x_cat)`` for ``configs``, as yahpo-gym builds them.

        Args:
            configs: configurations of :attr:`space` (inactive parameters absent).
            instance: the instance (default: the constructor's).
            fidelity: fidelity values for every config; a config may carry its own
                (e.g. mixed epochs in one batch), which then wins.
            check: validate each configuration against the space first.

        Raises:
            ValueError: an invalid configuration, instance or fidelity value.
        """
        m = self.meta
        fixed: dict[str, Any] = dict(fidelity or {})
        unknown = set(fixed) - set(self.fidelity_space)
        if unknown:
            raise ValueError(
                f"unknown fidelity {sorted(unknown)}; this scenario's are {self.fidelity_names}"
            )
        if m.instance_name is not None:
            inst = instance if instance is not None else self.instance
            if inst is None:
                raise ValueError(
                    f"no instance given; pass instance= one of {self.instances[:5]}..."
                )
            fixed[m.instance_name] = self._check_instance(inst)
        cat_names = [n for n in m.cat_names if n not in m.drop_predict]
        x_cont = np.empty((len(configs), len(m.cont_names)), dtype=np.float32)
        x_cat = np.empty((len(configs), len(cat_names)), dtype=np.int32)
        for i, config in enumerate(configs):
            merged = {**fixed, **config}
            if check:
                self._check(config, merged)
            # None counts as missing, as in yahpo-gym (``configuration.get(k) is not None``).
            x_cont[i] = [_or(merged.get(n), 0) for n in m.cont_names]
            x_cat[i] = [self._code(n, _or(merged.get(n), _NA)) for n in cat_names]
        return x_cont, x_cat

    def evaluate(
        self,
        configs: Sequence[Mapping[str, Any]],
        *,
        instance: str | int | None = None,
        fidelity: Mapping[str, Any] | None = None,
        check: bool = True,
    ) -> pd.DataFrame:
        """Surrogate outputs for a batch of configurations (one model call).

        Args: as :meth:`encode`.

        Returns:
            One row per configuration, one column per output (:attr:`outputs`).
        """
        if not configs:
            return pd.DataFrame(columns=self.outputs, dtype=np.float64)
        x_cont, x_cat = self.encode(configs, instance=instance, fidelity=fidelity, check=check)
        session = self._get_session()
        inputs = [i.name for i in session.get_inputs()]
        # yahpo-gym feeds inputs by position: first x_cat, then x_cont.
        y = session.run(None, {inputs[0]: x_cat, inputs[1]: x_cont})[0]
        return pd.DataFrame(np.asarray(y, dtype=np.float64), columns=self.outputs)

    # Internals ------------------------------------------------------------------------
    def _check_instance(self, instance: str | int) -> str:
        value = str(instance)
        if value not in self.instances:
            raise ValueError(
                f"instance {value!r} is not part of scenario {self.name!r}; "
                f"use one of {self.instances}"
            )
        return value

    def _check(self, config: Mapping[str, Any], merged: Mapping[str, Any]) -> None:
        searched = {k: v for k, v in config.items() if k not in self.fidelity_space}
        self.space.validate(searched)
        for name, p in self.fidelity_space.items():
            if name not in merged:
                raise ValueError(f"fidelity {name!r} is missing; pass fidelity={{{name!r}: ...}}")
            if not p.contains(merged[name]):
                raise ValueError(f"fidelity {name}={merged[name]!r} is outside [{p.low}, {p.high}]")

    def _code(self, name: str, value: Any) -> int:
        codes = self.encoding.get(name)
        if codes is None:
            raise ValueError(f"encoding.json has no codes for {name!r}; is the folder complete?")
        code = codes.get(value) if isinstance(value, str) else None
        if code is None:
            # JSON keys are strings: 1 and True are stored as "1" / "True".
            code = codes.get(str(value))
        if code is None:
            raise ValueError(
                f"{name}={value!r} has no code in encoding.json; use one of {list(codes)}"
            )
        return int(code)

    def _get_session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            model = self.path / "model.onnx"
            if not model.is_file():
                raise ValueError(f"{model} not found; the scenario folder needs its model.onnx")
            options = ort.SessionOptions()
            if self._threads is not None:
                options.intra_op_num_threads = self._threads
                options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        return self._session


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _resolve_meta(name: str, meta: ScenarioMeta | Mapping[str, Any] | None) -> ScenarioMeta:
    if isinstance(meta, ScenarioMeta):
        return meta
    base = dict(SCENARIOS.get(name, {}))
    if meta is None and not base:
        raise ValueError(
            f"unknown YAHPO scenario {name!r} (known: {sorted(SCENARIOS)}); pass scenario= "
            "with its name or meta= with its y_names, cont_names, cat_names, instance_name "
            "and fidelity_params"
        )
    base.update(meta or {})
    return ScenarioMeta.from_dict(base)


def _read_space(path: Path) -> SearchSpace:
    from ConfigSpace.read_and_write import json as cs_json

    text = path.read_text()
    with warnings.catch_warnings():
        # YAHPO's files use the older JSON format (e.g. 'default'); ConfigSpace 1.x
        # reads it fine but warns once per hyperparameter.
        warnings.simplefilter("ignore")
        cs = cs_json.read(text)
    params = SearchSpace.from_configspace(cs).to_dict()
    # ConfigSpace 1.x rounds bounds (0.10000000000000002 -> 0.1), which would reject
    # values yahpo-gym (ConfigSpace 0.6) accepts; and the files' float noise
    # (0.00010000000000000009) would reject the bound a user writes (0.0001). Accept
    # both: the wider of the exact and the rounded (12 significant digits) bounds.
    for hp in json.loads(text).get("hyperparameters", []):
        p = params.get(hp.get("name"))
        if p is not None and p["type"] in ("float", "int") and "lower" in hp:
            low, high = hp["lower"], hp["upper"]
            if p["type"] == "float":
                low, high = min(low, float(f"{low:.12g}")), max(high, float(f"{high:.12g}"))
            p["low"], p["high"] = low, high
    return SearchSpace(params)


def _drop(space: SearchSpace, names: set[str]) -> SearchSpace:
    params = {}
    for name, p in space.to_dict().items():
        if name in names:
            continue
        when = {k: v for k, v in (p.get("when") or {}).items() if k not in names}
        p = {k: v for k, v in p.items() if k != "when"}
        if when:
            p["when"] = when
        params[name] = p
    return SearchSpace(params)
