"""Product-kernel densities over encoded configurations (BOHB's KDE), one or many at once.

Rows come from :class:`~warmtune.searchers.encoding.SpaceCodec`: numbers in ``[0, 1]``,
choice indices, ``NaN`` for an inactive parameter. Numeric parameters get Gaussian
kernels truncated to ``[0, 1]``; categoricals an Aitchison-Aitken kernel (keep the
value with probability ``1 - lambda``, else any other choice uniformly). Bandwidths
follow the normal-reference rule ``1.06 * sigma * n ** (-1 / (4 + d))`` that BOHB gets
from statsmodels, over the observations where the parameter is active, floored at
``min_bandwidth``.

Conditional parameters. A density has, for each configuration, a factor only for the
parameters *active in it*. Each kernel centred on an observation contributes, for such
a parameter, its Gaussian or Aitchison-Aitken factor when the parameter was active in
that observation too, and the *uniform* density when it was not: that observation says
nothing about the parameter::

    l(x) = 1/n * sum_i prod_{j active in x} k_j(x_j | x_ij),  k_j uniform if j inactive in i.

:class:`DensityStack` evaluates several densities over the same codec (the good and
bad densities of every past task, say) in one pass over the parameters, with the very
same kernel terms as :meth:`ProductKernelDensity.log_pdf`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from warmtune.searchers.encoding import SpaceCodec

__all__ = ["DensityStack", "ProductKernelDensity", "truncated_normal"]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)
# The log kernel of a padding column in a DensityStack: exp() of it is exactly 0.
_PADDING = -1e300


class ProductKernelDensity:
    """A product-kernel density (BOHB's KDE) on encoded rows of a conditional space.

    Args:
        points: encoded observations, shape ``(n, dim)`` with ``n >= 1``.
        codec: the space's codec.
        min_bandwidth: the smallest bandwidth (keeps the model exploring).
    """

    def __init__(self, points: np.ndarray, codec: SpaceCodec, *, min_bandwidth: float) -> None:
        if len(points) == 0:
            raise ValueError("a kernel density needs at least one point")
        self.points = points
        self.codec = codec
        self.active = ~np.isnan(points)
        n_dim = codec.dim
        self.bandwidths = np.empty(n_dim)
        for j in range(n_dim):
            values = points[self.active[:, j], j]
            k = len(values)
            if codec.is_categorical[j]:
                c = int(codec.n_choices[j])
                # Dispersion that, unlike the std of choice indices, ignores their order.
                freq = np.bincount(values.astype(int), minlength=c) / max(k, 1)
                sigma = math.sqrt(max(1.0 - float((freq**2).sum()), 0.0)) if k else 1.0
                cap = (c - 1) / c if c > 1 else 0.0
                rule = 1.06 * sigma * max(k, 1) ** (-1.0 / (4 + n_dim))
                self.bandwidths[j] = min(max(rule, min_bandwidth), cap)
            elif k >= 2:
                sigma = float(values.std(ddof=1))
                self.bandwidths[j] = max(1.06 * sigma * k ** (-1.0 / (4 + n_dim)), min_bandwidth)
            else:
                # One point says little about spread: stay broad rather than spike.
                self.bandwidths[j] = 0.5
        # Truncated-Gaussian normalisers depend only on the points: compute once.
        centres = np.nan_to_num(points)
        h = self.bandwidths[None, :]
        mass = _normal_cdf((1.0 - centres) / h) - _normal_cdf(-centres / h)
        self._log_norm = np.log(np.maximum(mass, 1e-300)) + np.log(h)
        # Per-dimension pieces of log_pdf that depend on the points only.
        self._centres = centres
        self._numeric_offset = np.where(self.active, -_LOG_SQRT_2PI - self._log_norm, 0.0)

    def __len__(self) -> int:
        return len(self.points)

    def log_pdf(self, rows: np.ndarray) -> np.ndarray:
        """Log density at encoded ``rows`` (shape ``(m, dim)``)."""
        log_k = _log_kernels(rows, _Terms.of([self]))
        return _logsumexp_rows(log_k) - math.log(len(self.points))

    def sample(
        self, rng: np.random.Generator, n: int, *, bandwidth_factor: float = 1.0
    ) -> list[dict[str, Any]]:
        """``n`` valid configurations drawn from the density, bandwidths times ``bandwidth_factor``.

        Parameters are decided in space order, so a child is drawn only when its
        parents make it active; an observation that lacked an active parameter
        contributes a uniform draw for it, exactly as its kernel says.
        """
        codec = self.codec
        space = codec.space
        centre = rng.integers(len(self.points), size=n)
        configs: list[dict[str, Any]] = [{} for _ in range(n)]
        conditional = space.is_conditional
        for j, name in enumerate(codec.names):
            active = (
                np.array([space.is_active(name, c) for c in configs])
                if conditional
                else np.ones(n, dtype=bool)
            )
            base = self.points[centre, j]
            # Draw for every candidate so the generator's stream does not depend on
            # which candidates happen to be active.
            uniform = rng.random(n)
            if codec.is_categorical[j]:
                c = int(codec.n_choices[j])
                lam = min(self.bandwidths[j] * bandwidth_factor, (c - 1) / c if c > 1 else 0.0)
                switch = rng.random(n) < lam
                other = rng.integers(max(c - 1, 1), size=n)
                kept = np.nan_to_num(base).astype(int)
                value = np.where(switch, (kept + 1 + other) % max(c, 1), kept)
                value = np.where(np.isnan(base), np.floor(uniform * c).clip(0, c - 1), value)
            else:
                h = self.bandwidths[j] * bandwidth_factor
                value = truncated_normal(rng, np.nan_to_num(base), h)
                value = np.where(np.isnan(base), uniform, value)
            for i in np.flatnonzero(active):
                configs[i][name] = codec.decode_value(j, value[i])
        return configs


class DensityStack:
    """Several :class:`ProductKernelDensity` over one codec, evaluated in one pass.

    Args:
        densities: the densities (at least one), all built with the same codec.
    """

    def __init__(self, densities: Sequence[ProductKernelDensity]) -> None:
        if not densities:
            raise ValueError("a DensityStack needs at least one density")
        codecs = {id(d.codec) for d in densities}
        if len(codecs) != 1:
            raise ValueError("every density of a DensityStack must use the same SpaceCodec")
        self.densities = list(densities)
        self.codec = densities[0].codec
        self.sizes = np.array([len(d) for d in densities], dtype=int)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self._terms = _Terms.of(self.densities)
        # The numeric part of every kernel as one matrix product: expanding
        # -(x - p)^2 / (2 h^2) + offset over the parameters both sides have gives
        # [x^2, x, 1] @ W, so one BLAS call replaces a pass per parameter (a stack holds
        # every past task's points and is evaluated at every suggestion). Points are laid
        # out padded, densities x their largest size, so that each density's
        # log-sum-exp is a reduction over the last axis; a padding column's offset is
        # so low that its kernel is exactly 0.
        t = self._terms
        numeric = ~self.codec.is_categorical
        a = np.where(t.active, 0.5 * t.inv_h**2, 0.0)[:, numeric]
        p = t.centres[:, numeric]
        per_dim = t.numeric_offset[:, numeric] - a * p * p  # the constant part, per parameter
        w = np.concatenate([-a, 2.0 * a * p, per_dim.sum(axis=1, keepdims=True)], axis=1)
        self._width = int(self.sizes.max())
        self._slot = np.concatenate(
            [k * self._width + np.arange(n) for k, n in enumerate(self.sizes)]
        )
        padded = np.zeros((len(self.densities) * self._width, w.shape[1]))
        padded[:, -1] = _PADDING
        padded[self._slot] = w
        absent = np.zeros((len(self.densities) * self._width, per_dim.shape[1]))
        absent[self._slot] = per_dim
        self._numeric = numeric
        self._w = np.ascontiguousarray(padded.T)
        self._absent = np.ascontiguousarray(absent.T)

    def __len__(self) -> int:
        return len(self.densities)

    def log_pdf(self, rows: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """Log density of every density (or of those in ``which``) at ``rows``: shape
        ``(m, len(densities))`` (or ``(m, len(which))``)."""
        k = len(self.densities)
        w, absent, sizes = self._w, self._absent, self.sizes
        if which is not None:
            which = np.asarray(which, dtype=int)
            # Explicit sizes: an all-categorical space has no numeric rows in ``absent``.
            columns = len(which) * self._width
            w = w.reshape(len(w), k, self._width)[:, which, :].reshape(len(w), columns)
            absent = absent.reshape(len(absent), k, self._width)[:, which, :]
            absent = absent.reshape(len(absent), columns)
            sizes = sizes[which]
            k = len(which)
        x = rows[:, self._numeric]
        has = ~np.isnan(x)
        x = np.where(has, x, 0.0)
        features = np.concatenate([x * x, x, np.ones((len(rows), 1))], axis=1)
        # The offset column holds sum_j offset_j - a_j p_j^2 over every numeric
        # parameter; a parameter a row lacks must not count: take its part back out.
        log_k = features @ w
        if not has.all():
            log_k -= (~has).astype(float) @ absent
        if self.codec.is_categorical.any():
            only = rows.copy()
            only[:, self._numeric] = np.nan  # the categorical parameters alone
            full = np.zeros((len(rows), len(self.densities) * self._width))
            full[:, self._slot] = _log_kernels(only, self._terms)
            if which is not None:
                full = full.reshape(len(rows), -1, self._width)[:, which, :]
            log_k += full.reshape(len(rows), -1)
        log_k = log_k.reshape(len(rows), k, self._width)
        top = log_k.max(axis=2, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            return np.log(np.exp(log_k - top).sum(axis=2)) + top[:, :, 0] - np.log(sizes)


class _Terms:
    """The per-point constants of the kernels of one or more densities, concatenated."""

    __slots__ = (
        "active",
        "centres",
        "inv_h",
        "is_categorical",
        "log_other",
        "log_same",
        "n_choices",
        "numeric_offset",
    )

    @classmethod
    def of(cls, densities: Sequence[ProductKernelDensity]) -> _Terms:
        codec = densities[0].codec
        inv_h, log_same, log_other = [], [], []
        for d in densities:
            n = len(d.points)
            # Scalars per density, repeated per point: the same floats as a scalar
            # computation, so one density evaluates exactly as it always has.
            inv, same, other = [], [], []
            for j, h in enumerate(d.bandwidths):
                c = int(codec.n_choices[j])
                inv.append(1.0 / h)
                categorical = codec.is_categorical[j] and c > 1
                same.append(math.log1p(-h) if categorical else 0.0)
                other.append(math.log(h / (c - 1)) if categorical else 0.0)
            for out, row in ((inv_h, inv), (log_same, same), (log_other, other)):
                out.append(np.repeat(np.array(row, dtype=float)[None, :], n, axis=0))
        terms = cls()
        terms.active = np.concatenate([d.active for d in densities])
        terms.centres = np.concatenate([d._centres for d in densities])
        terms.numeric_offset = np.concatenate([d._numeric_offset for d in densities])
        terms.inv_h = np.concatenate(inv_h)
        terms.log_same = np.concatenate(log_same)
        terms.log_other = np.concatenate(log_other)
        terms.is_categorical = codec.is_categorical
        terms.n_choices = codec.n_choices
        return terms


def _log_kernels(rows: np.ndarray, terms: _Terms) -> np.ndarray:
    """``(m, n)``: log of each point's kernel at each row (product over active parameters)."""
    m, n = len(rows), len(terms.centres)
    log_k = np.zeros((m, n))
    for j in range(rows.shape[1]):
        cand_active = ~np.isnan(rows[:, j])
        if not cand_active.any():
            continue
        x = rows[cand_active, j][:, None]
        p = terms.centres[None, :, j]
        point_active = terms.active[:, j]
        if terms.is_categorical[j]:
            c = int(terms.n_choices[j])
            if c == 1:
                continue
            # Matching an active point: 1 - lambda; another value: lambda / (c - 1);
            # a point without the parameter: uniform.
            miss = np.where(point_active, terms.log_other[:, j], -math.log(c))
            term = np.where(
                (x == p) & point_active[None, :], terms.log_same[None, :, j], miss[None, :]
            )
        else:
            z = (x - p) * terms.inv_h[None, :, j]
            # A point without the parameter contributes the uniform density, log 1 = 0.
            term = (-0.5 * z * z) * point_active[None, :] + terms.numeric_offset[None, :, j]
        if cand_active.all():
            log_k += term
        else:
            log_k[cand_active] += term
    return log_k


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.asarray(_erf(np.asarray(z) / _SQRT2), dtype=float))


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=1)
    return top + np.log(np.exp(a - top[:, None]).sum(axis=1))


def truncated_normal(rng: np.random.Generator, mean: np.ndarray, sd: float) -> np.ndarray:
    """Normal draws around ``mean`` restricted to ``[0, 1]`` (by rejection, then clipping)."""
    x = mean + sd * rng.standard_normal(mean.shape)
    # Means lie in [0, 1], so each try lands inside with probability >= ~1/3:
    # a fixed number of redraws leaves a negligible remainder to clip.
    for _ in range(20):
        outside = (x < 0) | (x > 1)
        if not outside.any():
            break
        x[outside] = mean[outside] + sd * rng.standard_normal(int(outside.sum()))
    return np.clip(x, 0.0, 1.0)
