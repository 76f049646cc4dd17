"""TPE-style density-ratio model over a mixed, conditional search space (BOHB's model).

Configurations are encoded as rows: a float or int parameter as a number in
``[0, 1]`` on its (log) scale, a categorical one as its choice index, an inactive
one as ``NaN``. Two product-kernel densities are fitted, ``l`` on the good
configurations and ``g`` on the rest; new configurations are drawn from ``l``
(with widened bandwidths) and the one with the largest ``l(x) / g(x)`` wins
(Bergstra et al. 2011; Falkner et al. 2018).

Conditional parameters. A density over a conditional space has, for each
configuration, a factor only for the parameters *active in it*. Each kernel
centred on an observation contributes, for such a parameter, a Gaussian (numeric)
or Aitchison-Aitken (categorical) factor when the parameter was active in that
observation too, and the *uniform* density when it was not: that observation
says nothing about the parameter. So

    l(x) = 1/n * sum_i prod_{j active in x} k_j(x_j | x_ij),  k_j uniform if j inactive in i.

Why this rather than the alternatives: fitting each parameter's marginal only
on the observations where it is active (Optuna's independent TPE) would drop the
correlations the product kernel keeps (BOHB's model is multivariate); imputing a
dedicated inactive *value* would put density mass on values that no
configuration can take and let the imputed constant drive bandwidths. The
uniform factor is what HpBandSter's random imputation of inactive values gives
in expectation, without the noise, and ``l`` stays a normalised density over
valid configurations, so its ratio to ``g`` (or to a prior) means what it says.
Sampling follows the same model: pick a good observation, then walk the
parameters in order (parents first) and draw each *active* one from its kernel
(uniform if the observation did not have it), so no candidate ever holds an
inactive parameter.

Warm start seam: a :class:`PriorModel` can be mixed into ``l`` (and the uniform
density into ``g``) with a weight that decays as the search's own observations
accumulate (see :class:`DensityRatioModel`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from warmtune.space import CategoricalParam, FloatParam, SearchSpace

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)


@runtime_checkable
class PriorModel(Protocol):
    """A density over the search space learned elsewhere (past tasks, an expert).

    The warm-start model implements this; :class:`DensityRatioModel` mixes it into
    ``l`` and draws part of its candidates from it.
    """

    def log_density(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Log density of each configuration (same encoding-free, config-level view)."""
        ...

    def sample(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        """``n`` configurations drawn from the prior with the caller's generator."""
        ...


class SpaceCodec:
    """Configurations <-> rows of numbers (``[0, 1]`` or a choice index; ``NaN`` = inactive).

    Ints encode to the centre of their cell, on the scale the space samples them on,
    so decoding any number in ``[0, 1]`` gives a valid int with the same probability
    mass per value as :meth:`SearchSpace.sample`.
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

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows for ``configs``: shape ``(len(configs), dim)``."""
        out = np.full((len(configs), self.dim), np.nan)
        for i, config in enumerate(configs):
            for j, name in enumerate(self.names):
                if name in config:
                    out[i, j] = self.encode_value(j, config[name])
        return out

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

    def log_uniform(self, rows: np.ndarray) -> np.ndarray:
        """Log density of the uniform distribution (the space's own sampler) at ``rows``."""
        active = ~np.isnan(rows)
        per_dim = np.where(self.is_categorical, -np.log(np.maximum(self.n_choices, 1)), 0.0)
        return (active * per_dim).sum(axis=1)


class ProductKernelDensity:
    """A product-kernel density (BOHB's KDE) on encoded rows of a conditional space.

    Numeric parameters get truncated Gaussian kernels on ``[0, 1]``; categoricals an
    Aitchison-Aitken kernel (keep the value with probability ``1 - lambda``, else any
    other choice uniformly). Bandwidths follow the normal-reference rule
    ``1.06 * sigma * n ** (-1 / (4 + d))`` that BOHB gets from statsmodels, over the
    observations where the parameter is active, floored at ``min_bandwidth``.

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

    def log_pdf(self, rows: np.ndarray) -> np.ndarray:
        """Log density at encoded ``rows`` (shape ``(m, dim)``)."""
        codec = self.codec
        m, n = len(rows), len(self.points)
        log_k = np.zeros((m, n))
        for j in range(codec.dim):
            cand_active = ~np.isnan(rows[:, j])
            if not cand_active.any():
                continue
            x = rows[cand_active, j][:, None]
            p = self._centres[None, :, j]
            point_active = self.active[:, j]
            if codec.is_categorical[j]:
                c = int(codec.n_choices[j])
                if c == 1:
                    continue
                lam = self.bandwidths[j]
                # Matching an active point: 1 - lambda; another value: lambda / (c - 1);
                # a point without the parameter: uniform.
                miss = np.where(point_active, math.log(lam / (c - 1)), -math.log(c))
                term = np.where((x == p) & point_active[None, :], math.log1p(-lam), miss[None, :])
            else:
                z = (x - p) * (1.0 / self.bandwidths[j])
                # A point without the parameter contributes the uniform density, log 1 = 0.
                term = (-0.5 * z * z) * point_active[None, :] + self._numeric_offset[None, :, j]
            if cand_active.all():
                log_k += term
            else:
                log_k[cand_active] += term
        return _logsumexp_rows(log_k) - math.log(n)

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
        for j, name in enumerate(codec.names):
            active = np.array([space.is_active(name, c) for c in configs])
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
                value = _truncated_normal(rng, np.nan_to_num(base), h)
                value = np.where(np.isnan(base), uniform, value)
            for i in np.flatnonzero(active):
                configs[i][name] = codec.decode_value(j, value[i])
        return configs


class DensityRatioModel:
    """TPE's good/bad split with one :class:`ProductKernelDensity` each.

    Args:
        codec: the space's codec.
        good: encoded good observations.
        bad: encoded bad observations.
        min_bandwidth: passed to both densities.
        prior: an optional density learned elsewhere (the warm-start seam). It is
            mixed into ``l`` as ``w * prior + (1 - w) * l`` and the uniform density
            into ``g`` with the same ``w``, so where the prior puts mass the ratio
            rises until the search's own evidence outweighs it; ``w`` of the
            candidates are drawn from the prior.
        prior_weight: the prior's worth in observations:
            ``w = prior_weight / (prior_weight + n_observations)``, so it decays
            as own observations arrive.
        n_observations: how many observations ``good`` and ``bad`` were chosen
            from (they may overlap); ``None`` counts ``good``.
    """

    def __init__(
        self,
        *,
        codec: SpaceCodec,
        good: np.ndarray,
        bad: np.ndarray,
        min_bandwidth: float = 1e-3,
        prior: PriorModel | None = None,
        prior_weight: float = 0.0,
        n_observations: int | None = None,
    ) -> None:
        self.codec = codec
        self.l = ProductKernelDensity(good, codec, min_bandwidth=min_bandwidth)
        self.g = ProductKernelDensity(bad, codec, min_bandwidth=min_bandwidth)
        self.prior = prior
        n_own = len(good) if n_observations is None else n_observations
        self.prior_mix = prior_weight / (prior_weight + n_own) if prior is not None else 0.0

    @classmethod
    def fit(
        cls,
        codec: SpaceCodec,
        rows: np.ndarray,
        values: Sequence[float | None],
        *,
        top_n_percent: float = 15.0,
        min_points: int | None = None,
        min_bandwidth: float = 1e-3,
        prior: PriorModel | None = None,
        prior_weight: float = 0.0,
    ) -> DensityRatioModel | None:
        """Split observations (``None`` = failed, worst) into good and bad, as BOHB does.

        ``n_good = max(min_points, top_n_percent% of n)`` best valid observations and
        ``n_bad = max(min_points, (100 - top_n_percent)% of n)`` worst ones (failures
        first among them). Returns ``None`` when there are fewer than
        ``min_points + 2`` observations or fewer than ``n_good`` valid ones.
        """
        n_min = codec.dim + 1 if min_points is None else min_points
        n = len(values)
        if n < n_min + 2:
            return None
        loss = np.array([np.inf if v is None else v for v in values], dtype=float)
        order = np.argsort(loss, kind="stable")
        n_good = max(n_min, int(top_n_percent * n // 100))
        n_bad = max(n_min, int((100 - top_n_percent) * n // 100))
        if np.isfinite(loss).sum() < n_good:
            return None
        return cls(
            codec=codec,
            good=rows[order[:n_good]],
            bad=rows[order[n - n_bad :]],
            min_bandwidth=min_bandwidth,
            prior=prior,
            prior_weight=prior_weight,
            n_observations=n,
        )

    def log_ratio(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``log l(x) - log g(x)`` for each configuration (higher is more promising)."""
        rows = self.codec.encode(configs)
        log_l, log_g = self.l.log_pdf(rows), self.g.log_pdf(rows)
        if self.prior is not None and self.prior_mix > 0:
            w = self.prior_mix
            prior = np.asarray(self.prior.log_density(configs), dtype=float)
            log_l = np.logaddexp(math.log(w) + prior, math.log1p(-w) + log_l)
            log_g = np.logaddexp(math.log(w) + self.codec.log_uniform(rows), math.log1p(-w) + log_g)
        return log_l - log_g

    def propose(
        self,
        rng: np.random.Generator,
        *,
        num_samples: int = 64,
        bandwidth_factor: float = 3.0,
        exclude: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any] | None:
        """Draw ``num_samples`` candidates (from ``l`` and the prior) and return the best ratio.

        ``exclude`` marks candidates not to propose (configurations already evaluated:
        in a discrete space the best ratio is often one of them, and a repeat teaches
        nothing). Returns None when it excludes every candidate.
        """
        n_prior = int(round(self.prior_mix * num_samples)) if self.prior is not None else 0
        candidates = self.l.sample(rng, num_samples - n_prior, bandwidth_factor=bandwidth_factor)
        if n_prior:
            space = self.codec.space
            drawn = self.prior.sample(rng, n_prior)  # type: ignore[union-attr]
            # A prior from another space may miss or add parameters: make each valid here.
            candidates += [space.complete(space.project(c), rng) for c in drawn]
        if exclude is not None:
            candidates = [c for c in candidates if not exclude(c)]
            if not candidates:
                return None
        return candidates[int(np.argmax(self.log_ratio(candidates)))]


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.asarray(_erf(np.asarray(z) / _SQRT2), dtype=float))


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=1)
    return top + np.log(np.exp(a - top[:, None]).sum(axis=1))


def _truncated_normal(rng: np.random.Generator, mean: np.ndarray, sd: float) -> np.ndarray:
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
