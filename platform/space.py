"""Search spaces: one internal representation for every searcher and engine.

A space is an ordered set of named parameters. Each parameter is a float or an
int on a linear or log scale, or a categorical over JSON scalars, and may be
*conditional*: active only while a parent parameter takes one of given values
(``when: {optimizer: [sgd]}``). Parents come before their children, so one pass
in order samples or validates a configuration. An inactive parameter is never
part of a configuration: it is absent, not ``None``.

Conversions: :meth:`SearchSpace.to_tune` (Ray Tune domains),
:meth:`SearchSpace.to_configspace` and :meth:`SearchSpace.from_configspace`
(ConfigSpace), :meth:`SearchSpace.to_dict` (the job-file form).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Scalar = str | int | float | bool | None


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: dict[str, list[Scalar]] | None = Field(
        default=None,
        description="Active only while each named parent takes one of the listed values.",
    )

    @model_validator(mode="after")
    def _check_when(self) -> _Param:
        if self.when is not None:
            if not self.when:
                raise ValueError("'when' is empty: name a parent and its values, or drop 'when'")
            for parent, values in self.when.items():
                if not values:
                    raise ValueError(f"'when.{parent}' lists no values: give at least one")
        return self


class FloatParam(_Param):
    """A real number in ``[low, high]``, uniform on a linear or log scale."""

    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        return self

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )


class IntParam(_Param):
    """An integer in ``[low, high]`` (both included), uniform on a linear or log scale."""

    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        return self

    def contains(self, value: Any) -> bool:
        return bool(
            isinstance(value, (int, np.integer))
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )


class CategoricalParam(_Param):
    """One of a fixed list of JSON scalars (strings, numbers, booleans, null)."""

    type: Literal["categorical"] = "categorical"
    choices: list[Scalar]

    @model_validator(mode="after")
    def _check_choices(self) -> CategoricalParam:
        if not self.choices:
            raise ValueError("'choices' is empty: list at least one value")
        keys = [_choice_key(c) for c in self.choices]
        if len(set(keys)) != len(keys):
            raise ValueError(f"'choices' has duplicates: {self.choices}; list each value once")
        return self

    def contains(self, value: Any) -> bool:
        return _choice_key(value) in {_choice_key(c) for c in self.choices}

    def index(self, value: Any) -> int:
        """Position of ``value`` in ``choices`` (``True`` and ``1`` are different choices)."""
        key = _choice_key(value)
        for i, choice in enumerate(self.choices):
            if _choice_key(choice) == key:
                return i
        raise ValueError(f"{value!r} is not one of {self.choices}")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
_PARAM_ADAPTER: TypeAdapter[FloatParam | IntParam | CategoricalParam] = TypeAdapter(Param)


def _check_bounds(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"bounds must be finite numbers, got low={low}, high={high}")
    if low >= high:
        raise ValueError(
            f"low ({low}) must be smaller than high ({high}); "
            "for a fixed value, put it in trainable.params instead"
        )
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got low={low}; use a positive lower bound")


def _choice_key(value: Any) -> str:
    # JSON text tells True from 1 and 1 from 1.0 apart; Python's == does not.
    return json.dumps(value)


class SearchSpace(Mapping[str, FloatParam | IntParam | CategoricalParam]):
    """An ordered, validated set of named parameters.

    Args:
        params: name -> parameter (a model or its job-file dict). Parents must
            come before the parameters that depend on them.

    Raises:
        ValueError: the space is empty, a parameter is invalid, or a ``when``
            names an unknown or later parameter or a value the parent cannot take.
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        if not params:
            raise ValueError("the search space is empty: define at least one parameter")
        parsed: dict[str, FloatParam | IntParam | CategoricalParam] = {}
        for name, param in params.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
            p = (
                param
                if isinstance(param, (FloatParam, IntParam, CategoricalParam))
                else _PARAM_ADAPTER.validate_python(param)
            )
            for parent, values in (p.when or {}).items():
                if parent not in parsed:
                    where = "defined later" if parent in params else "not defined"
                    raise ValueError(
                        f"'{name}.when' names '{parent}', which is {where}; "
                        "conditions refer to parameters listed before them"
                    )
                for v in values:
                    if not parsed[parent].contains(v):
                        raise ValueError(
                            f"'{name}.when.{parent}' lists {v!r}, which '{parent}' can never take"
                        )
            parsed[name] = p
        self._params = parsed

    # Mapping protocol -----------------------------------------------------------------
    def __getitem__(self, name: str) -> FloatParam | IntParam | CategoricalParam:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    # Activity -------------------------------------------------------------------------
    def is_active(self, name: str, config: Mapping[str, Any]) -> bool:
        """Whether ``name`` is active given the (already decided) parent values in ``config``."""
        when = self._params[name].when
        if not when:
            return True
        for parent, values in when.items():
            if parent not in config or not self.is_active(parent, config):
                return False
            if _choice_key(config[parent]) not in {_choice_key(v) for v in values}:
                return False
        return True

    @property
    def is_conditional(self) -> bool:
        return any(p.when for p in self._params.values())

    # Sampling and validation ----------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One configuration drawn uniformly (on each parameter's scale); inactive ones absent."""
        config: dict[str, Any] = {}
        for name, p in self._params.items():
            if self.is_active(name, config):
                config[name] = sample_param(p, rng)
        return config

    def validate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check a configuration against the space and return it in canonical types.

        Raises:
            ValueError: a value is out of range, an active parameter is missing,
                or an inactive or unknown parameter is present.
        """
        unknown = [k for k in config if k not in self._params]
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; the space has {list(self._params)}")
        out: dict[str, Any] = {}
        for name, p in self._params.items():
            active = self.is_active(name, out)
            if not active:
                if name in config:
                    raise ValueError(
                        f"'{name}' is inactive here (its condition {p.when} does not hold); "
                        "leave it out of the configuration"
                    )
                continue
            if name not in config:
                raise ValueError(f"'{name}' is missing; the configuration needs a value for it")
            value = config[name]
            if isinstance(p, FloatParam) and isinstance(value, (int, np.integer)):
                value = float(value)
            if isinstance(p, IntParam) and isinstance(value, float) and value.is_integer():
                value = int(value)
            if not p.contains(value):
                raise ValueError(f"'{name}' = {value!r} is outside the space: {_describe(p)}")
            out[name] = value.item() if isinstance(value, np.generic) else value
        return out

    def project(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Keep what is compatible with this space from a config of another space.

        Values of parameters that exist here and lie in range are kept; the rest
        (unknown names, out-of-range values, inactive parameters) is dropped.
        The result may lack active parameters: complete it with :meth:`complete`.
        """
        out: dict[str, Any] = {}
        for name, p in self._params.items():
            if name in config and self.is_active(name, out) and p.contains(config[name]):
                out[name] = config[name]
        return out

    def complete(self, partial: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Fill the active parameters missing from ``partial`` by sampling them."""
        out: dict[str, Any] = {}
        for name, p in self._params.items():
            if not self.is_active(name, out):
                continue
            out[name] = partial[name] if name in partial else sample_param(p, rng)
        return out

    # Conversions ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The job-file form (JSON-able); ``SearchSpace(space.to_dict()) == space``."""
        return {name: p.model_dump(exclude_none=True) for name, p in self._params.items()}

    def signature(self) -> str:
        """A short stable hash of the space, to tell identical spaces apart from others."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_tune(self) -> dict[str, Any]:
        """Ray Tune domains, for spaces without conditions.

        Raises:
            ValueError: the space has conditional parameters, which Ray Tune's
                flat domains cannot express; run it with a warmtune searcher.
        """
        from ray import tune

        if self.is_conditional:
            conditional = [n for n, p in self._params.items() if p.when]
            raise ValueError(
                f"parameters {conditional} are conditional, which Ray Tune domains cannot "
                "express; use a warmtune searcher (random, bohb, ...) for this space"
            )
        out: dict[str, Any] = {}
        for name, p in self._params.items():
            if isinstance(p, FloatParam):
                out[name] = (tune.loguniform if p.log else tune.uniform)(p.low, p.high)
            elif isinstance(p, IntParam):
                # Ray's randint excludes the upper bound; ours includes it.
                out[name] = (tune.lograndint if p.log else tune.randint)(p.low, p.high + 1)
            else:
                out[name] = tune.choice(list(p.choices))
        return out

    def to_configspace(self, *, seed: int | None = None) -> Any:
        """An equivalent ``ConfigSpace.ConfigurationSpace`` (conditions included)."""
        import ConfigSpace as CS

        cs = CS.ConfigurationSpace(seed=seed)
        hps: dict[str, Any] = {}
        for name, p in self._params.items():
            hp: Any
            if isinstance(p, FloatParam):
                hp = CS.UniformFloatHyperparameter(name, p.low, p.high, log=p.log)
            elif isinstance(p, IntParam):
                hp = CS.UniformIntegerHyperparameter(name, p.low, p.high, log=p.log)
            else:
                hp = CS.CategoricalHyperparameter(name, list(p.choices))
            hps[name] = hp
        cs.add(list(hps.values()))
        conditions: list[Any] = []
        for name, p in self._params.items():
            parts: list[Any] = []
            for parent, values in (p.when or {}).items():
                parent_hp, child_hp = hps[parent], hps[name]
                if len(values) == 1:
                    parts.append(CS.EqualsCondition(child_hp, parent_hp, values[0]))
                else:
                    parts.append(CS.InCondition(child_hp, parent_hp, values))
            if len(parts) == 1:
                conditions.append(parts[0])
            elif parts:
                conditions.append(CS.AndConjunction(*parts))
        if conditions:
            cs.add(conditions)
        return cs

    @classmethod
    def from_configspace(cls, cs: Any) -> SearchSpace:
        """Build a space from a ConfigSpace space (uniform float/int, categorical,
        ordinal and constant hyperparameters; equals/in conditions and their AND)."""
        import ConfigSpace as CS

        params: dict[str, dict[str, Any]] = {}
        for hp in cs.values():
            if isinstance(hp, CS.UniformFloatHyperparameter):
                params[hp.name] = {
                    "type": "float",
                    "low": float(hp.lower),
                    "high": float(hp.upper),
                    "log": bool(hp.log),
                }
            elif isinstance(hp, CS.UniformIntegerHyperparameter):
                params[hp.name] = {
                    "type": "int",
                    "low": int(hp.lower),
                    "high": int(hp.upper),
                    "log": bool(hp.log),
                }
            elif isinstance(hp, CS.CategoricalHyperparameter):
                params[hp.name] = {"type": "categorical", "choices": [_py(c) for c in hp.choices]}
            elif isinstance(hp, CS.OrdinalHyperparameter):
                params[hp.name] = {"type": "categorical", "choices": [_py(c) for c in hp.sequence]}
            elif isinstance(hp, CS.Constant):
                params[hp.name] = {"type": "categorical", "choices": [_py(hp.value)]}
            else:
                raise ValueError(
                    f"ConfigSpace hyperparameter '{hp.name}' of type {type(hp).__name__} "
                    "is not supported; use uniform float/int, categorical, ordinal or constant"
                )
        for cond in cs.conditions:
            parts = cond.components if isinstance(cond, CS.AndConjunction) else [cond]
            when: dict[str, list[Scalar]] = {}
            for part in parts:
                if isinstance(part, CS.EqualsCondition):
                    when[part.parent.name] = [_py(part.value)]
                elif isinstance(part, CS.InCondition):
                    when[part.parent.name] = [_py(v) for v in part.values]
                else:
                    raise ValueError(
                        f"condition {part} is not supported; use equals/in conditions "
                        "(optionally joined with AND)"
                    )
            params[cond.child.name]["when"] = when
        # Parents first: ConfigSpace orders topologically, but keep it explicit.
        ordered = {n: params[n] for n in _topological(params)}
        return cls(ordered)


def sample_param(p: FloatParam | IntParam | CategoricalParam, rng: np.random.Generator) -> Any:
    """Draw one value of a single parameter, uniform on its scale."""
    if isinstance(p, CategoricalParam):
        return p.choices[int(rng.integers(len(p.choices)))]
    if isinstance(p, FloatParam):
        if p.log:
            return float(np.exp(rng.uniform(np.log(p.low), np.log(p.high))))
        return float(rng.uniform(p.low, p.high))
    if p.log:
        # Log-uniform over [low, high + 1), floored: every integer gets the mass of its
        # unit interval on the log scale, the top one included.
        x = np.exp(rng.uniform(np.log(p.low), np.log(p.high + 1)))
        return int(min(np.floor(x), p.high))
    return int(rng.integers(p.low, p.high + 1))


def _describe(p: FloatParam | IntParam | CategoricalParam) -> str:
    if isinstance(p, CategoricalParam):
        return f"one of {p.choices}"
    scale = "log" if p.log else "linear"
    return f"{p.type} in [{p.low}, {p.high}] ({scale})"


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _topological(params: Mapping[str, Mapping[str, Any]]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for parent in params[name].get("when") or {}:
            visit(parent)
        order.append(name)

    for name in params:
        visit(name)
    return order
