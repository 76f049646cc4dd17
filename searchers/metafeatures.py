"""Meta-features of tasks: what a user knows of a task before searching it.

Numeric meta-features are standardised over the past tasks, labels compared as they
are; :func:`meta_kernel` turns the two distances into the similarity prior's kernel
(:mod:`~warmtune.searchers.similarity`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["MetaTable", "meta_distances", "meta_kernel"]


def meta_distances(
    metas: Sequence[Mapping[str, Any]], target: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """``(squared distance, label mismatches)`` of each of ``metas`` to ``target``: the
    numeric meta-features standardised over ``metas``, labels compared as they are."""
    table = MetaTable(metas)
    zt, lt = table.encode(target)
    d2, mism = np.zeros(len(metas)), np.zeros(len(metas))
    for i, m in enumerate(metas):
        d2[i], mism[i] = MetaTable.distance(zt, lt, *table.encode(m))
    return d2, mism


class MetaTable:
    """Numeric meta-features standardised over the past tasks, plus labels."""

    def __init__(self, metas: Sequence[Mapping[str, Any]]) -> None:
        names: dict[str, None] = {}
        for m in metas:
            names.update(dict.fromkeys(m))
        self.num: list[str] = []
        self.cat: list[str] = []
        for name in names:
            vals = [m[name] for m in metas if name in m]
            if all(_is_number(v) for v in vals):
                self.num.append(name)
            else:
                self.cat.append(name)
        cols = np.array([[_num(m.get(n)) for n in self.num] for m in metas], dtype=float)
        cols = cols.reshape(len(metas), len(self.num))
        with np.errstate(invalid="ignore"):
            self.mean = np.nanmean(cols, axis=0) if len(metas) else np.zeros(len(self.num))
            std = np.nanstd(cols, axis=0) if len(metas) else np.ones(len(self.num))
        # A feature constant over the past cannot tell past tasks apart: drop it.
        keep = np.isfinite(std) & (std > 0)
        self.num = [n for n, k in zip(self.num, keep, strict=True) if k]
        self.mean, self.std = self.mean[keep], std[keep]
        # A label every past task shares, or that no two share, cannot either.
        self.cat = [
            n
            for n in self.cat
            if 1 < len({_key(m[n]) for m in metas if n in m}) < sum(n in m for m in metas)
        ]

    def encode(self, meta: Mapping[str, Any]) -> tuple[np.ndarray, list[str | None]]:
        z = np.array([_num(meta.get(n)) for n in self.num], dtype=float)
        z = (z - self.mean) / self.std
        labels = [None if n not in meta else _key(meta[n]) for n in self.cat]
        return z, labels

    @staticmethod
    def distance(
        za: np.ndarray, la: list[str | None], zb: np.ndarray, lb: list[str | None]
    ) -> tuple[float, int]:
        """(mean squared standardised difference over shared numeric features, label
        mismatches over shared labels)."""
        both = np.isfinite(za) & np.isfinite(zb)
        d2 = float(np.mean((za[both] - zb[both]) ** 2)) if both.any() else 0.0
        mism = sum(
            1 for a, b in zip(la, lb, strict=True) if a is not None and b is not None and a != b
        )
        return d2, mism


def _key(value: Any) -> str:
    return json.dumps(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def _num(v: Any) -> float:
    return float(v) if _is_number(v) else math.nan


def meta_kernel(d2: np.ndarray, mism: np.ndarray, bandwidth: float, mismatch: float) -> np.ndarray:
    k = np.ones_like(d2) if math.isinf(bandwidth) else np.exp(-d2 / (2.0 * bandwidth**2))
    return k * np.power(mismatch, mism)
