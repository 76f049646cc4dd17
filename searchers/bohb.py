"""BOHB (Falkner et al. 2018): successive halving with new configurations from a TPE model."""

from __future__ import annotations

from typing import Any

import numpy as np

from warmtune.searchers.successive_halving import SuccessiveHalvingSearcher
from warmtune.searchers.tpe import DensityRatioModel, PriorModel, SpaceCodec
from warmtune.space import SearchSpace


class BOHB(SuccessiveHalvingSearcher):
    """Hyperband's brackets, with new configurations proposed by a density-ratio model.

    The model is fitted on the largest budget that has enough results
    (``min_points_in_model``, by default the number of parameters plus one, and
    two more than that in all): the top ``top_n_percent`` form the good density
    ``l``, the rest the bad density ``g`` (see :mod:`warmtune.searchers.tpe`);
    ``num_samples`` candidates drawn from ``l`` with bandwidths widened by
    ``bandwidth_factor`` compete on ``l(x) / g(x)``. A ``random_fraction`` of new
    configurations is drawn uniformly, which keeps BOHB's worst case Hyperband's.

    By default promotions are asynchronous (ASHA's rule), so no worker ever waits
    for a rung to fill; ``mode="sync"`` runs the paper's synchronous brackets.

    The model is rebuilt from the rung results whenever they change and is never
    saved: :meth:`state` holds the results, so a restored searcher refits the same
    model and continues identically.

    Args:
        space: the search space.
        seed: seed of the searcher's own generator.
        max_budget: the job's full budget in training iterations (required).
        min_budget: the smallest budget a trial runs to.
        eta: the halving rate.
        mode: ``"async"`` (ASHA promotions) or ``"sync"`` (Hyperband brackets).
        max_concurrent_brackets: sync mode only; see
            :class:`~warmtune.searchers.hyperband.Hyperband`.
        min_points_in_model: results a budget needs before a model is fitted on it;
            ``None`` means the number of parameters plus one.
        top_n_percent: the share of results that counts as good.
        num_samples: candidates drawn per new configuration.
        random_fraction: the share of new configurations drawn uniformly.
        bandwidth_factor: how much wider than the fitted kernels candidates are drawn.
        min_bandwidth: the smallest kernel bandwidth (on the ``[0, 1]`` scale).
        prior: warm start seam: a density learned from past tasks
            (:class:`~warmtune.searchers.tpe.PriorModel`). Before the model exists,
            non-random configurations come from it; afterwards it is mixed into
            ``l`` with a weight that decays as own observations grow. Not part of
            :meth:`state`: pass it again to :meth:`from_state`.
        prior_weight: the prior's worth in observations (its weight is
            ``prior_weight / (prior_weight + n)`` with ``n`` the model's observations).

    Raises:
        ValueError: a missing ``max_budget`` or an option out of range.
    """

    name = "bohb"

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None = None,
        max_budget: float | None = None,
        min_budget: float = 1,
        eta: float = 3,
        mode: str = "async",
        max_concurrent_brackets: int | None = None,
        min_points_in_model: int | None = None,
        top_n_percent: float = 15.0,
        num_samples: int = 64,
        random_fraction: float = 1 / 3,
        bandwidth_factor: float = 3.0,
        min_bandwidth: float = 1e-3,
        prior: PriorModel | None = None,
        prior_weight: float = 10.0,
    ) -> None:
        super().__init__(
            space=space,
            seed=seed,
            max_budget=max_budget,
            min_budget=min_budget,
            eta=eta,
            mode=mode,
            max_concurrent_brackets=max_concurrent_brackets,
        )
        if min_points_in_model is not None and not (
            isinstance(min_points_in_model, int) and min_points_in_model >= 1
        ):
            raise ValueError(
                f"min_points_in_model must be an int >= 1 or None, got {min_points_in_model!r}; "
                "None uses the number of parameters plus one"
            )
        if not 0 < top_n_percent < 100:
            raise ValueError(f"top_n_percent must lie in (0, 100), got {top_n_percent}; e.g. 15")
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}; e.g. 64")
        if not 0 <= random_fraction <= 1:
            raise ValueError(f"random_fraction must lie in [0, 1], got {random_fraction}; e.g. 1/3")
        if not bandwidth_factor > 0:
            raise ValueError(f"bandwidth_factor must be > 0, got {bandwidth_factor}; e.g. 3")
        if not 0 < min_bandwidth < 1:
            raise ValueError(f"min_bandwidth must lie in (0, 1), got {min_bandwidth}; e.g. 1e-3")
        if prior is not None and not isinstance(prior, PriorModel):
            raise ValueError(
                "prior must have log_density(configs) and sample(rng, n) (see tpe.PriorModel), "
                f"got {type(prior).__name__}"
            )
        if not prior_weight >= 0:
            raise ValueError(f"prior_weight must be >= 0, got {prior_weight}; e.g. 10")
        self.min_points_in_model = min_points_in_model
        self.top_n_percent = top_n_percent
        self.num_samples = num_samples
        self.random_fraction = random_fraction
        self.bandwidth_factor = bandwidth_factor
        self.min_bandwidth = min_bandwidth
        self.prior = prior
        self.prior_weight = prior_weight
        self._codec = SpaceCodec(space)
        # Derived from the state, never saved: encoded rows per trial, the last model.
        self._rows: dict[str, np.ndarray] = {}
        self._model_key: tuple[float, int] | None = None
        self._model: DensityRatioModel | None = None

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "min_points_in_model": self.min_points_in_model,
            "top_n_percent": self.top_n_percent,
            "num_samples": self.num_samples,
            "random_fraction": self.random_fraction,
            "bandwidth_factor": self.bandwidth_factor,
            "min_bandwidth": self.min_bandwidth,
            "prior_weight": self.prior_weight,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], space: SearchSpace, *, prior: PriorModel | None = None
    ) -> BOHB:
        """Rebuild from :meth:`state`; a prior, not being data, is passed again here."""
        searcher = cls(space=space, seed=state["seed"], prior=prior, **state.get("options", {}))
        searcher._restore(state)
        return searcher

    def model(self) -> DensityRatioModel | None:
        """The density-ratio model on the largest budget with enough results, if any."""
        for budget, results in reversed(self.results_by_budget().items()):
            key = (budget, len(results))
            if key == self._model_key:
                return self._model
            rows = np.stack([self._row(tid) for tid, _ in results]) if results else None
            model = (
                DensityRatioModel.fit(
                    self._codec,
                    rows,
                    [v for _, v in results],
                    top_n_percent=self.top_n_percent,
                    min_points=self.min_points_in_model,
                    min_bandwidth=self.min_bandwidth,
                    prior=self.prior,
                    prior_weight=self.prior_weight,
                )
                if rows is not None
                else None
            )
            if model is not None:
                self._model_key, self._model = key, model
                return model
        return None

    def _new_config(self, budget: float) -> dict[str, Any]:
        # Always draw the coin, so the stream of random numbers does not depend on
        # whether a model happens to exist.
        if self.rng.random() < self.random_fraction:
            return self.space.sample(self.rng)
        model = self.model()
        if model is not None:
            return model.propose(
                self.rng, num_samples=self.num_samples, bandwidth_factor=self.bandwidth_factor
            )
        if self.prior is not None:
            (drawn,) = self.prior.sample(self.rng, 1)
            return self.space.complete(self.space.project(drawn), self.rng)
        return self.space.sample(self.rng)

    def _row(self, trial_id: str) -> np.ndarray:
        row = self._rows.get(trial_id)
        if row is None:
            row = self._rows[trial_id] = self._codec.encode([self.trial_config(trial_id)])[0]
        return row
