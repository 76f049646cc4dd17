"""A task's ranking of configurations as a kernel regression: how transfer judges a model.

Weights ask whether a model *orders* the target's results rightly (see
:mod:`warmtune.searchers.similarity`). The model that answers for a task is a
Nadaraya-Watson regression of the task's normalised ranks (0 = its best) on its
configurations, with a Gaussian kernel on the mean squared per-parameter distance in
the encoded unit space (parameters both configurations have; a categorical mismatch
counts 1) and the bandwidth that best orders the task's own observations left out one
at a time. It ranks configurations markedly better than a TPE classifier's density
ratio, which only separates a good share from the rest (on LCBench the mean
concordance between tasks is 0.66 against 0.59), so similarities are measured with
it; BOHB's acquisition still mixes the TPE densities.

Leaving one observation out is exact and free for a kernel regression (drop the
diagonal), so the target's own model is judged the same way, out of sample, on the
same observations as the past tasks' models.
"""

from __future__ import annotations

import numpy as np

from warmtune.searchers.encoding import SpaceCodec
from warmtune.searchers.ranks import concordance, rank01

__all__ = ["BANDWIDTHS", "RankBank", "RankRegression", "leave_one_out_scores"]

#: Bandwidths tried by leave-one-out, in units of the root mean squared per-parameter
#: distance on the unit scale (1 = the whole range): a search range, from "a few grid
#: cells" to "flat", not tuned values.
BANDWIDTHS = np.geomspace(0.02, 1.0, 12)


def _features(rows: np.ndarray, codec: SpaceCodec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(left, right, mask)`` with ``left_a @ right_b`` the summed squared difference
    (numbers) or mismatch (choices) over the parameters both rows have, and
    ``mask_a @ mask_b`` how many parameters both have."""
    numeric = ~codec.is_categorical
    x = rows[:, numeric]
    has = ~np.isnan(x)
    x = np.where(has, x, 0.0)
    pn = has.astype(float)
    onehot, present = [], []
    for j in np.flatnonzero(codec.is_categorical):
        c = int(codec.n_choices[j])
        col = rows[:, j]
        ok = ~np.isnan(col)
        present.append(ok.astype(float)[:, None])
        onehot.append((np.nan_to_num(col, nan=-1)[:, None] == np.arange(c)[None, :]).astype(float))
    has_c = np.concatenate(present, axis=1) if present else np.zeros((len(rows), 0))
    oh = np.concatenate(onehot, axis=1) if onehot else np.zeros((len(rows), 0))
    left = np.concatenate([x * x, pn, x, has_c, oh], axis=1)
    right = np.concatenate([pn, x * x, -2.0 * x, has_c, -oh], axis=1)
    mask = np.concatenate([pn, has_c], axis=1)
    return left, right, mask


def _sq_dist(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    """Mean squared per-parameter distance; 1 (as far as two unit ranges get) when two
    configurations share no parameter."""
    total = a[0] @ b[1].T
    count = a[2] @ b[2].T
    with np.errstate(invalid="ignore", divide="ignore"):
        d2 = np.where(count > 0, total / np.maximum(count, 1.0), 1.0)
    return np.maximum(d2, 0.0)


def _predict(d2: np.ndarray, ranks: np.ndarray, bandwidth: float) -> np.ndarray:
    """Kernel-weighted mean rank; distances relative to each row's nearest reference,
    so far from every reference the prediction tends to the nearest one's."""
    d2 = d2 - d2.min(axis=1, keepdims=True)
    k = np.exp(-d2 / (2.0 * bandwidth * bandwidth))
    return (k @ ranks) / np.maximum(k.sum(axis=1), 1e-300)


class RankRegression:
    """A task's normalised ranks regressed on its configurations (see the module docstring).

    Args:
        rows: the task's observations encoded with ``codec`` (``NaN`` = absent).
        values: their values, to minimise (one budget).
        codec: the encoding of the space the rows are in.
    """

    def __init__(self, rows: np.ndarray, values: np.ndarray, codec: SpaceCodec) -> None:
        self.codec = codec
        self.ranks = rank01(np.asarray(values, dtype=float))
        self._ref = _features(rows, codec)
        self.bandwidth = _best_bandwidth(_sq_dist(self._ref, self._ref), self.ranks)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Higher = predicted better: minus the predicted normalised rank of each row."""
        if len(rows) == 0:
            return np.zeros(0)
        return -_predict(
            _sq_dist(_features(rows, self.codec), self._ref), self.ranks, self.bandwidth
        )


class RankBank:
    """Several :class:`RankRegression` over one codec, evaluated in one matrix product.

    The references of every regression are laid out padded (regressions x their largest
    size), so that each one's kernel-weighted mean is a reduction over the last axis; a
    padding reference weighs nothing.

    Args:
        regressions: the regressions (at least one), all with the same codec.
    """

    def __init__(self, regressions: list[RankRegression]) -> None:
        if not regressions:
            raise ValueError("a RankBank needs at least one regression")
        self.codec = regressions[0].codec
        k = len(regressions)
        width = max(len(r.ranks) for r in regressions)
        n_feat = regressions[0]._ref[1].shape[1]
        n_mask = regressions[0]._ref[2].shape[1]
        self._right = np.zeros((k, width, n_feat))
        self._mask = np.zeros((k, width, n_mask))
        self._ranks = np.zeros((k, width))
        self._real = np.zeros((k, width), dtype=bool)
        self._inv = np.array([1.0 / (2.0 * r.bandwidth**2) for r in regressions])
        for i, r in enumerate(regressions):
            n = len(r.ranks)
            self._right[i, :n], self._mask[i, :n] = r._ref[1], r._ref[2]
            self._ranks[i, :n], self._real[i, :n] = r.ranks, True
        self._right_t = np.ascontiguousarray(self._right.reshape(k * width, n_feat).T)
        self._mask_t = np.ascontiguousarray(self._mask.reshape(k * width, n_mask).T)
        self._shape = (k, width)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """``(regressions, len(rows))``: each regression's :meth:`RankRegression.scores`."""
        k, width = self._shape
        if len(rows) == 0:
            return np.zeros((k, 0))
        left, _, mask = _features(rows, self.codec)
        total = (left @ self._right_t).reshape(len(rows), k, width)
        count = (mask @ self._mask_t).reshape(len(rows), k, width)
        with np.errstate(invalid="ignore", divide="ignore"):
            d2 = np.where(count > 0, total / np.maximum(count, 1.0), 1.0)
        d2 = np.maximum(d2, 0.0)
        d2 = np.where(self._real[None], d2, np.inf)
        d2 -= d2.min(axis=2, keepdims=True)
        kern = np.exp(-d2 * self._inv[None, :, None])
        mean = (kern * self._ranks[None]).sum(axis=2) / np.maximum(kern.sum(axis=2), 1e-300)
        return -mean.T


def _loo(d2: np.ndarray, ranks: np.ndarray, bandwidth: float) -> np.ndarray:
    """Leave-one-out predictions: every row predicted from the others."""
    n = len(ranks)
    d2 = d2 + np.eye(n) * 1e12  # a row never sees itself
    return _predict(d2, ranks, bandwidth)


def _best_bandwidth(d2: np.ndarray, ranks: np.ndarray) -> float:
    """The bandwidth whose leave-one-out predictions best order the task's own ranks."""
    if len(ranks) < 3:
        return float(BANDWIDTHS[-1])
    predictions = np.stack([-_loo(d2, ranks, h) for h in BANDWIDTHS])
    agree, _ = concordance(predictions, ranks, np.zeros(len(ranks)))
    return float(BANDWIDTHS[int(np.argmax(agree))])


def leave_one_out_scores(
    rows: np.ndarray, values: np.ndarray, budgets: np.ndarray, codec: SpaceCodec
) -> np.ndarray | None:
    """The target's own ranking model, out of sample: per budget with at least three
    observations, each observation scored (higher = better) by the kernel regression of
    the others at that budget, with the bandwidth chosen on them the same way. ``NaN``
    elsewhere; ``None`` when no budget has three."""
    values = np.asarray(values, dtype=float)
    budgets = np.asarray(budgets, dtype=float)
    out = np.full(len(values), np.nan)
    for level in np.unique(budgets):
        at = np.flatnonzero(budgets == level)
        if len(at) < 3:
            continue
        feats = _features(rows[at], codec)
        d2 = _sq_dist(feats, feats)
        ranks = rank01(values[at])
        out[at] = -_loo(d2, ranks, _best_bandwidth(d2, ranks))
    return out if np.isfinite(out).any() else None
