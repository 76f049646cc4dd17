"""Configurations as rows of numbers: the one encoding every model in warmtune uses.

A float or int parameter becomes a number in ``[0, 1]`` on its own (log) scale, a
categorical one its choice index, an inactive or absent one ``NaN``. Ints encode to
the centre of their cell, on the scale the space samples them on, so decoding any
number in ``[0, 1]`` gives a valid int with the same probability mass per value as
:meth:`~warmtune.space.SearchSpace.sample`.

Configurations of *another* space (a past task's, in a knowledge base) encode with
``foreign=True``: a value the current space cannot hold (unknown parameter, out of
range, unlisted choice) is ``NaN``, as :meth:`~warmtune.space.SearchSpace.project`
would drop it, so it carries no information rather than the wrong one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from warmtune.space import CategoricalParam, FloatParam, SearchSpace

__all__ = ["SpaceCodec"]


class SpaceCodec:
    """Configurations <-> rows of numbers (``[0, 1]`` or a choice index; ``NaN`` = inactive).

    Args:
        space: the space whose configurations are encoded.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.names = list(space)
        self.params = [space[n] for n in self.names]
        self.is_categorical = np.array([isinstance(p, CategoricalParam) for p in self.params])
        self.n_choices = np.array(
            [len(p.choices) if isinstance(p, CategoricalParam) else 0 for p in self.params]
        )

    @property
    def dim(self) -> int:
        return len(self.names)

    def encode(self, configs: Sequence[Mapping[str, Any]], *, foreign: bool = False) -> np.ndarray:
        """Rows for ``configs``: shape ``(len(configs), dim)``.

        Args:
            configs: configurations of this space; with ``foreign``, of any space.
            foreign: map values this space cannot hold to ``NaN`` instead of failing.
        """
        out = np.full((len(configs), self.dim), np.nan)
        for j, (name, p) in enumerate(zip(self.names, self.params, strict=True)):
            if foreign and not isinstance(p, CategoricalParam):
                out[:, j] = self._encode_numbers(j, [c.get(name) for c in configs])
                continue
            for i, config in enumerate(configs):
                if name not in config:
                    continue
                value = config[name]
                if foreign and not p.contains(value):
                    continue
                out[i, j] = self.encode_value(j, value)
        return out

    def _encode_numbers(self, j: int, values: list[Any]) -> np.ndarray:
        """A numeric column of foreign configurations at once (knowledge bases hold many):
        what :meth:`encode_value` gives, ``NaN`` where the value is absent, not a number,
        out of range or, for an int, not whole."""
        p = self.params[j]
        x = np.array(
            [
                float(v)
                if isinstance(v, (int, float, np.integer, np.floating))
                and not isinstance(v, (bool, np.bool_))
                else np.nan
                for v in values
            ],
            dtype=float,
        )
        ok = np.isfinite(x) & (x >= p.low) & (x <= p.high)
        if not isinstance(p, FloatParam):
            ok &= np.floor(np.where(ok, x, 0.0)) == np.where(ok, x, 0.0)
        x = np.where(ok, x, np.nan)
        low, high = float(p.low), float(p.high)
        with np.errstate(invalid="ignore", divide="ignore"):
            if isinstance(p, FloatParam):
                if p.log:
                    return (np.log(x) - math.log(low)) / (math.log(high) - math.log(low))
                return (x - low) / (high - low)
            if p.log:
                centre = 0.5 * (np.log(x) + np.log(x + 1))
                return (centre - math.log(low)) / (math.log(high + 1) - math.log(low))
            return (x + 0.5 - low) / (high + 1 - low)

    def encode_value(self, j: int, value: Any) -> float:
        p = self.params[j]
        if isinstance(p, CategoricalParam):
            return float(p.index(value))
        low, high = p.low, p.high
        if isinstance(p, FloatParam):
            if p.log:
                return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
            return (value - low) / (high - low)
        if p.log:
            centre = 0.5 * (math.log(value) + math.log(value + 1))
            return (centre - math.log(low)) / (math.log(high + 1) - math.log(low))
        return (value + 0.5 - low) / (high + 1 - low)

    def decode_value(self, j: int, u: float) -> Any:
        """The parameter's value at ``u`` (a choice index for a categorical)."""
        p = self.params[j]
        if isinstance(p, CategoricalParam):
            return p.choices[int(u)]
        u = min(max(float(u), 0.0), 1.0)
        low, high = p.low, p.high
        if isinstance(p, FloatParam):
            if p.log:
                x = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
            else:
                x = low + u * (high - low)
            return min(max(x, low), high)
        if p.log:
            x = math.exp(math.log(low) + u * (math.log(high + 1) - math.log(low)))
        else:
            x = low + u * (high + 1 - low)
        return int(min(max(math.floor(x), low), high))

    def decode(self, row: np.ndarray) -> dict[str, Any]:
        """A (possibly partial) configuration from one row: ``NaN`` entries are left out."""
        return {
            name: self.decode_value(j, row[j])
            for j, name in enumerate(self.names)
            if not math.isnan(row[j])
        }

    def log_uniform(self, rows: np.ndarray) -> np.ndarray:
        """Log density of the uniform distribution (the space's own sampler) at ``rows``."""
        active = ~np.isnan(rows)
        per_dim = np.where(self.is_categorical, -np.log(np.maximum(self.n_choices, 1)), 0.0)
        return (active * per_dim).sum(axis=1)
