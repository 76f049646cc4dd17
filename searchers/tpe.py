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

from warmtune.searchers.encoding import SpaceCodec
from warmtune.searchers.kde import ProductKernelDensity

__all__ = [
    "DensityRatioModel",
    "PriorModel",
    "ProductKernelDensity",
    "SpaceCodec",
]


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
