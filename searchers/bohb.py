"""BOHB (Falkner et al. 2018): successive halving with new configurations from a TPE model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from warmtune.searchers.successive_halving import SuccessiveHalvingSearcher
from warmtune.searchers.tpe import DensityRatioModel, PriorModel, SpaceCodec
from warmtune.searchers.warmstart import WarmStart
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
        warm_start: a :class:`~warmtune.searchers.warmstart.WarmStart` over the
            knowledge base. It supplies the first ``initial_design`` configurations
            (a portfolio of the most similar tasks' best ones) and the prior: its
            good-region density, mixed into ``l`` with the weight the similarity
            model gives the past for the own observations so far (zero for a
            dissimilar past, which makes this a cold start). Overrides ``prior`` and
            ``prior_weight``. Not part of :meth:`state`: pass it again to
            :meth:`from_state`.
        initial_design: how many configurations the warm start designs. In async mode
            they run straight to ``max_budget``: they are already known to be good, and a
            low rung would only delay the first full-budget result.
        warm_design: use the warm start's initial design (an ablation switch).
        warm_prior: use the warm start's prior (an ablation switch).

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
        warm_start: WarmStart | None = None,
        initial_design: int = 5,
        warm_design: bool = True,
        warm_prior: bool = True,
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
        if not (isinstance(initial_design, int) and initial_design >= 0):
            raise ValueError(f"initial_design must be an int >= 0, got {initial_design!r}; e.g. 5")
        self.min_points_in_model = min_points_in_model
        self.top_n_percent = top_n_percent
        self.num_samples = num_samples
        self.random_fraction = random_fraction
        self.bandwidth_factor = bandwidth_factor
        self.min_bandwidth = min_bandwidth
        self.prior = prior
        self.prior_weight = prior_weight
        self.warm_start = warm_start
        self.initial_design = initial_design
        self.warm_design = bool(warm_design)
        self.warm_prior = bool(warm_prior)
        # The design is drawn once, the first time the past has any weight: at once
        # when meta-features make a past task similar, else after the own results
        # show one is. It has a generator of its own, so the searcher's stream does
        # not depend on it, and it is part of the state.
        self._design: list[dict[str, Any]] | None = None
        self._design_used = 0
        self._warm_n = -1  # own observations at the last re-weighting of the past
        self._agreement = 1.0  # how well the prior ranks own results (see _prior_agreement)
        self._codec = SpaceCodec(space)
        # Derived from the state, never saved: encoded rows per trial, the last model.
        self._rows: dict[str, np.ndarray] = {}
        self._keys: list[str] = []  # configurations of trial_ids(), in order
        self._key_set: set[str] = set()
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
            "initial_design": self.initial_design,
            "warm_design": self.warm_design,
            "warm_prior": self.warm_prior,
        }

    def state(self) -> dict[str, Any]:
        return {**super().state(), "design": self._design, "design_used": self._design_used}

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._design = state.get("design")
        self._design_used = int(state.get("design_used", 0))

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        space: SearchSpace,
        *,
        prior: PriorModel | None = None,
        warm_start: WarmStart | None = None,
    ) -> BOHB:
        """Rebuild from :meth:`state`; a prior or warm start, not being data, is passed
        again here."""
        searcher = cls(
            space=space,
            seed=state["seed"],
            prior=prior,
            warm_start=warm_start,
            **state.get("options", {}),
        )
        searcher._restore(state)
        return searcher

    def model(self) -> DensityRatioModel | None:
        """The density-ratio model on the largest budget with enough results, if any."""
        for budget, results in reversed(self.results_by_budget().items()):
            key = (budget, len(results))
            if key == self._model_key:
                return self._model
            rows = np.stack([self._row(tid) for tid, _ in results]) if results else None
            prior, prior_weight = self._prior()
            model = (
                DensityRatioModel.fit(
                    self._codec,
                    rows,
                    [v for _, v in results],
                    top_n_percent=self.top_n_percent,
                    min_points=self.min_points_in_model,
                    min_bandwidth=self.min_bandwidth,
                    prior=prior,
                    prior_weight=prior_weight,
                )
                if rows is not None
                else None
            )
            if model is not None:
                self._model_key, self._model = key, model
                return model
        return None

    def _prior(self) -> tuple[PriorModel | None, float]:
        """The prior and its worth in observations: the warm start's when there is one."""
        if self.warm_start is None:
            return self.prior, self.prior_weight
        strength = self._past_strength(self.warm_start)
        if not self.warm_prior:
            return None, 0.0
        return _GoodRegion(self.warm_start), strength

    def _past_strength(self, warm_start: WarmStart) -> float:
        """What the warm start's past is worth in own observations now (re-weighted when due)."""
        own = [
            (self.trial_config(tid), value, budget)
            for budget, results in self.results_by_budget().items()
            for tid, value in results
            if value is not None
        ]
        # Re-weight the past when the own evidence has grown by a tenth: the
        # similarity estimate's variance shrinks like 1/n, so smaller steps change
        # the weights little and would cost a similarity pass per suggestion.
        if len(own) >= self._warm_n + max(1, self._warm_n // 10):
            configs, values, budgets = zip(*own, strict=True) if own else ((), (), ())
            warm_start.update(configs=configs, values=values, budgets=budgets)
            self._warm_n = len(own)
            self._agreement = self._prior_agreement(own)
        return warm_start.weights.prior_strength * self._agreement

    def _draw_design(self) -> None:
        if self.warm_start is not None and self.warm_design:
            self._design = self.warm_start.initial_design(
                self.initial_design, rng=np.random.default_rng(self.seed)
            )
        else:
            self._design = []

    def _full_budget_config(self) -> dict[str, Any] | None:
        if self.warm_start is None or not self.warm_design:
            return None
        if self._design is None:
            if self._past_strength(self.warm_start) <= 0:
                return None  # the past has no say yet; asked again on the next ask
            self._draw_design()
        design = self._design or []
        if self._design_used < len(design):
            self._design_used += 1
            return dict(design[self._design_used - 1])
        return None

    def _prior_agreement(self, own: list[tuple[dict[str, Any], float, float]]) -> float:
        """How well the prior's good region separates own good results from bad ones.

        ``2 * AUC - 1`` (clipped to [0, 1]) of the prior's log density as a classifier of
        each budget's top ``top_n_percent`` against the rest: 1 when the prior ranks every
        own good result above every bad one, 0 when it does no better than chance or
        points the wrong way. The similarity model weighs tasks; this checks the
        resulting density itself on the evidence, so a misleading past loses its say
        after a handful of results instead of decaying with ``1 / n``.
        """
        by_budget: dict[float, list[tuple[dict[str, Any], float]]] = {}
        for config, value, budget in own:
            by_budget.setdefault(budget, []).append((config, value))
        wins = pairs = 0.0
        for results in by_budget.values():
            if len(results) < 4:
                continue
            results.sort(key=lambda r: r[1])
            n_good = max(1, int(round(len(results) * self.top_n_percent / 100)))
            # At most 64 of each side: enough to estimate the AUC, cheap to evaluate.
            good = [c for c, _ in results[:n_good]][:64]
            bad = [c for c, _ in results[n_good:]][:: max(1, (len(results) - n_good) // 64)]
            density = self.warm_start.good_log_density(good + bad)
            dg, db = density[: len(good)], density[len(good) :]
            wins += float(
                (dg[:, None] > db[None, :]).sum() + 0.5 * (dg[:, None] == db[None, :]).sum()
            )
            pairs += len(dg) * len(db)
        if pairs == 0:
            return 1.0  # no evidence yet: the similarity model's weight stands
        return float(np.clip(2.0 * wins / pairs - 1.0, 0.0, 1.0))

    def _new_config(self, budget: float) -> dict[str, Any]:
        # Always draw both coins, so the stream of random numbers does not depend on
        # whether a model or a past happens to exist.
        u_random, u_past = self.rng.random(2)
        prior, weight = self._prior()
        n_own = sum(v is not None for rs in self.results_by_budget().values() for _, v in rs)
        # How much the past counts now: all of it before any own result, then less as
        # own evidence grows, and nothing once the similarity model finds it misleading.
        trust = weight / (weight + n_own) if prior is not None and weight > 0 else 0.0
        if self._design is None and trust > 0:
            self._draw_design()
        design = self._design or []
        if self._design_used < len(design) and u_past < trust:
            self._design_used += 1
            return dict(design[self._design_used - 1])
        if u_random < self.random_fraction:
            return self._unseen_sample()
        model = self.model()
        if model is not None:
            proposal = model.propose(
                self.rng,
                num_samples=self.num_samples,
                bandwidth_factor=self.bandwidth_factor,
                exclude=self._seen,
            )
            return proposal if proposal is not None else self._unseen_sample()
        if prior is not None and u_past < trust:
            (drawn,) = prior.sample(self.rng, 1)
            return self.space.complete(self.space.project(drawn), self.rng)
        return self._unseen_sample()

    def _seen(self, config: dict[str, Any]) -> bool:
        """Whether a trial already has this configuration (only possible in discrete spaces)."""
        for tid in self.trial_ids()[len(self._keys) :]:
            self._keys.append(json.dumps(self.trial_config(tid), sort_keys=True))
            self._key_set.add(self._keys[-1])
        return json.dumps(self.space.validate(config), sort_keys=True) in self._key_set

    def _unseen_sample(self) -> dict[str, Any]:
        """A uniform draw, redrawn (a few times) while it repeats an earlier trial."""
        config = self.space.sample(self.rng)
        for _ in range(20):
            if not self._seen(config):
                break
            config = self.space.sample(self.rng)
        return config

    def _row(self, trial_id: str) -> np.ndarray:
        row = self._rows.get(trial_id)
        if row is None:
            row = self._rows[trial_id] = self._codec.encode([self.trial_config(trial_id)])[0]
        return row


class _GoodRegion:
    """A warm start's good-region density as BOHB's :class:`PriorModel`."""

    def __init__(self, warm_start: WarmStart) -> None:
        self.warm_start = warm_start

    def log_density(self, configs: Any) -> np.ndarray:
        return self.warm_start.good_log_density(configs)

    def sample(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        return self.warm_start.sample(n, rng, which="good")
