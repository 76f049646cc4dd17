"""BOHB (Falkner et al. 2018): successive halving with new configurations from a TPE model,
warm-started from the knowledge base when it has a past.

Cold, BOHB is the paper's: Hyperband's rungs (ASHA's asynchronous promotions by
default), and new configurations that maximise ``l(x) / g(x)`` of TPE densities fitted
on the largest budget with enough results, a ``random_fraction`` of them uniform.

Warm (``warm_start=``, a :class:`~warmtune.searchers.warmstart.WarmStart`), three things
change, each with an ablation switch, and nothing else:

1. *Weights.* Whenever its own results have grown by a tenth, the searcher re-weights the
   past on all of them: each past task's ranking model, its own (scored out of sample,
   leaving each result out) and random search compete on how well they order the results
   (:mod:`~warmtune.searchers.similarity`).
2. *Design* (``warm_design``). New trials start from the past's portfolio, one at a time
   with the weights of the moment, straight at the full budget: they were good on
   similar tasks, and a low rung would only delay the first full-budget result. The
   design keeps going while it keeps winning and stops for good when it loses (see
   :meth:`BOHB._design_active`). With workers running in parallel, one of the first
   picks is chosen for its expected cost as well (``design_cost``), so that a full-budget
   result comes early.
3. *Transfer in the model* (``warm_model``). The acquisition is the weighted mixture of
   every model's probability of being good, own and past, and candidates are drawn from
   each model's good density in proportion to its weight. With all weight on its own
   model this is cold BOHB's proposal exactly; with a past task the results contradict,
   that task has no say.

The random fraction stays as it is, so BOHB's worst case stays Hyperband's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from warmtune.searchers.base import History, Observation
from warmtune.searchers.encoding import SpaceCodec
from warmtune.searchers.kernelreg import leave_one_out_scores
from warmtune.searchers.ranks import stratified
from warmtune.searchers.successive_halving import SuccessiveHalvingSearcher
from warmtune.searchers.tpe import DensityRatioModel, PriorModel
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
    With a warm start the module docstring's three mechanisms join in.

    By default promotions are asynchronous (ASHA's rule), so no worker ever waits
    for a rung to fill; ``mode="sync"`` runs the paper's synchronous brackets.

    The model is rebuilt from the rung results whenever they change and is never
    saved: :meth:`state` holds the results (and the warm start's last weights), so a
    restored searcher refits the same model and continues identically.

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
        prior: an expert's density over good configurations
            (:class:`~warmtune.searchers.tpe.PriorModel`), cold searches only: before the
            model exists non-random configurations come from it; afterwards it is mixed
            into ``l`` with a weight that decays as own observations grow. Not part of
            :meth:`state`: pass it again to :meth:`from_state`.
        prior_weight: the expert prior's worth in observations (its weight is
            ``prior_weight / (prior_weight + n)`` with ``n`` the model's observations).
        warm_start: a :class:`~warmtune.searchers.warmstart.WarmStart` over the
            knowledge base (see the module docstring). Not part of :meth:`state`: pass it
            again to :meth:`from_state`.
        initial_design: the most portfolio configurations the warm design runs; ``None``
            (the default) keeps going while the past outweighs the own model and chance.
        design_cost: ``"parallel"`` (one cheap pick while other trials run, before any
            full-budget result), ``"always"`` (every pick by gain per expected second) or
            ``"never"``; the expected cost is the past's measured runtimes.
        warm_design: use the warm start's portfolio (an ablation switch).
        warm_model: use the past in the acquisition (an ablation switch).
        history: earlier results of this very task (:class:`~warmtune.searchers.base.
            History`): the model is fitted on them along with the search's own results,
            and a configuration in ``history.known`` is never proposed again, so a second
            search of a task continues where the first stopped. Not part of
            :meth:`state`: pass it again to :meth:`from_state`.

    Raises:
        ValueError: a missing ``max_budget`` or an option out of range.
    """

    name = "bohb"
    supports_warm_start = True
    takes_history = True
    passed_again = ("prior", "warm_start", "history")

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
        initial_design: int | None = None,
        design_cost: str = "parallel",
        warm_design: bool = True,
        warm_model: bool = True,
        history: History | None = None,
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
        BOHB._check(locals())
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
        self.design_cost = design_cost
        self.warm_design = bool(warm_design)
        self.warm_model = bool(warm_model)
        self.history = history or History()
        # History observations under ids of their own, grouped by the budget they were at.
        self._history_configs: dict[str, dict[str, Any]] = {}
        self._history_results: dict[float, list[tuple[str, float | None]]] = {}
        for i, obs in enumerate(self.history.observations):
            hid = f"history/{i}"
            # What the space can hold of it (a history from an edited space keeps the rest).
            self._history_configs[hid] = space.project(obs.config)
            self._history_results.setdefault(float(obs.budget), []).append((hid, obs.value))
        # The warm design, part of the state: the portfolio configurations handed out
        # (as JSON keys), and whether the past has lost its lead for good.
        self._design_keys: list[str] = []
        self._design_stopped = False
        # Reports at rung budgets, by budget, as evidence (see tell); part of the state.
        self._ladder = [float(b) for _, b in self.schedule[0]]
        self._passed: dict[float, dict[str, float | None]] = {}
        self._warm_n = -1  # own observations at the last re-weighting of the past
        self._codec = SpaceCodec(space)
        # Derived from the state, never saved: encoded rows per trial, the last model.
        self._rows: dict[str, np.ndarray] = {}
        self._keys: list[str] = []  # configurations of trial_ids(), in order
        self._key_set: set[str] = set()
        self._model_key: tuple[float, int] | None = None
        self._model: DensityRatioModel | None = None

    def state(self) -> dict[str, Any]:
        warm = None
        if self.warm_start is not None:
            warm = {"n": self._warm_n, "weights": self.warm_start.weights.to_dict()}
        return {
            **super().state(),
            "design_keys": list(self._design_keys),
            "design_stopped": self._design_stopped,
            "passed": [[b, r] for b, r in self._passed.items()],
            "warm": warm,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._design_keys = list(state.get("design_keys", []))
        self._design_stopped = bool(state.get("design_stopped", False))
        self._passed = {float(b): dict(r) for b, r in state.get("passed", [])}
        warm = state.get("warm")
        if warm is not None and self.warm_start is not None:
            self._warm_n = int(warm["n"])
            self.warm_start.set_weights(warm["weights"])

    @staticmethod
    def _check(args: Mapping[str, Any]) -> None:
        """BOHB's own options (see ``Searcher.check_options``)."""
        min_points_in_model = args["min_points_in_model"]
        top_n_percent = args["top_n_percent"]
        num_samples = args["num_samples"]
        random_fraction = args["random_fraction"]
        bandwidth_factor = args["bandwidth_factor"]
        min_bandwidth = args["min_bandwidth"]
        prior = args["prior"]
        prior_weight = args["prior_weight"]
        initial_design = args["initial_design"]
        design_cost = args["design_cost"]
        warm_start = args["warm_start"]
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
        if initial_design is not None and not (
            isinstance(initial_design, int) and initial_design >= 0
        ):
            raise ValueError(
                f"initial_design must be an int >= 0 or None, got {initial_design!r}; "
                "None keeps the design going while the past is winning"
            )
        if design_cost not in ("parallel", "always", "never"):
            raise ValueError(
                f"design_cost must be 'parallel', 'always' or 'never', got {design_cost!r}"
            )
        if warm_start is not None and not isinstance(warm_start, WarmStart):
            raise ValueError(
                f"warm_start must be a WarmStart, got {type(warm_start).__name__}; build one "
                "with warmtune.searchers.warmstart.WarmStart"
            )
        history = args["history"]
        if history is not None and not isinstance(history, History):
            raise ValueError(
                f"history must be a warmtune.searchers.base.History, got {type(history).__name__}"
            )

    # The own model --------------------------------------------------------------------
    def model(self) -> DensityRatioModel | None:
        """The density-ratio model on the largest budget with enough results, if any."""
        for budget, results in reversed(self._model_results().items()):
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

    def _model_results(self) -> dict[float, list[tuple[str, float | None]]]:
        """What the model learns from: the rung results and the history, by budget."""
        results = self.results_by_budget()
        if not self._history_results:
            return results
        merged = {b: list(r) for b, r in self._history_results.items()}
        for budget, rs in results.items():
            merged.setdefault(budget, []).extend(rs)
        return dict(sorted(merged.items()))

    def _evidence_results(self) -> dict[float, list[tuple[str, float | None]]]:
        """What the weights are computed from: the model's results plus every report at
        a rung budget that a trial passed on its way higher (once per trial and budget)."""
        merged = self._model_results()
        for budget, reports in self._passed.items():
            have = {tid for tid, _ in merged.get(budget, [])}
            extra = [(tid, v) for tid, v in reports.items() if tid not in have]
            if extra:
                merged.setdefault(budget, []).extend(extra)
        return dict(sorted(merged.items()))

    def trial_config(self, trial_id: str) -> dict[str, Any]:
        """The configuration of a trial handed out, or of a history observation."""
        config = self._history_configs.get(trial_id)
        return config if config is not None else super().trial_config(trial_id)

    def _prior(self) -> tuple[PriorModel | None, float]:
        """The expert prior; a warm search carries the past in its ensemble instead."""
        if self.warm_start is not None:
            return None, 0.0
        return self.prior, self.prior_weight

    # Warm: weights, design, ensemble -------------------------------------------------
    def _refresh(self) -> None:
        """Re-weight the past when the own evidence has grown by a tenth.

        The weights' variance shrinks like ``1 / n``, so smaller steps change them little
        and would cost a similarity pass per suggestion.
        """
        warm = self.warm_start
        assert warm is not None
        own = [
            (tid, value, budget)
            for budget, results in self._evidence_results().items()
            for tid, value in results
            if value is not None
        ]
        if len(own) < self._warm_n + max(1, self._warm_n // 10):
            return
        self._warm_n = len(own)
        if not own:
            return
        values = np.array([v for _, v, _ in own], dtype=float)
        budgets = np.array([b for _, _, b in own], dtype=float)
        # The same rank-stratified subset the warm start would compare, so the own
        # model's cross-validation costs what the comparison costs, whatever n.
        sub = stratified(values, budgets, warm.max_compare)
        tids = [own[i][0] for i in sub]
        warm.update(
            configs=[self.trial_config(t) for t in tids],
            values=values[sub],
            budgets=budgets[sub],
            own_scores=self._cv_scores(tids, values[sub], budgets[sub]),
        )

    def _cv_scores(
        self, tids: list[str], values: np.ndarray, budgets: np.ndarray
    ) -> np.ndarray | None:
        """The own ranking model's out-of-sample scores of each observation, judged the
        same way as the past tasks' (:func:`~warmtune.searchers.kernelreg.
        leave_one_out_scores`)."""
        rows = np.stack([self._row(t) for t in tids]) if tids else np.zeros((0, self._codec.dim))
        return leave_one_out_scores(rows, values, budgets, self._codec)

    def _design_active(self) -> bool:
        """Whether the next new configuration may still come from the portfolio.

        The design keeps going while it keeps winning: it holds ``eta`` credits, a
        portfolio configuration that improves on the best full-budget result before it
        wins its credit back, one that does not (or fails) spends it, and one still
        running holds it. It stops for good when the credits run out or the past loses
        its lead (its share of the weights falls below one half).
        """
        if self.warm_start is None or not self.warm_design or self._design_stopped:
            return False
        if self.initial_design is not None and len(self._design_keys) >= self.initial_design:
            return False
        if self.warm_start.weights.past_share < 0.5:
            self._design_stopped = True
            return False
        losses, running = self._design_record()
        if losses >= self._patience():
            self._design_stopped = True
            return False
        return losses + running < self._patience()

    def _patience(self) -> int:
        return max(int(round(self.eta)), 1)

    def _design_record(self) -> tuple[int, int]:
        """``(losses, running)`` of the portfolio configurations handed out so far."""
        design = set(self._design_keys)
        bracket = self._brackets[-1] if self.mode == "sync" else self._brackets[0]
        top = bracket.rungs[-1].results
        best, losses, finished = math.inf, 0, set()
        for tid, value in top.items():
            is_design = json.dumps(self.trial_config(tid), sort_keys=True) in design
            if is_design:
                finished.add(tid)
                if value is None or not value < best:
                    losses += 1
            if value is not None:
                best = min(best, value)
        running = 0
        for tid in self.trial_ids():
            if tid in finished:
                continue
            if json.dumps(self.trial_config(tid), sort_keys=True) in design:
                if self._trials[tid].failed:
                    losses += 1
                elif self._trials[tid].running or self._trials[tid].rung < len(bracket.rungs) - 1:
                    running += 1
        return losses, running

    def _next_design(self) -> dict[str, Any] | None:
        """The next portfolio configuration, or None when it offers nothing more."""
        assert self.warm_start is not None
        tried = [self.trial_config(tid) for tid in self.trial_ids()]
        tried += list(self._history_configs.values())
        # A generator of its own (completing parameters a past configuration lacks), so
        # the searcher's stream does not depend on the design.
        rng = np.random.default_rng([self.seed or 0, len(tried)])
        # With other trials running from the start (parallel workers), one of the first
        # portfolio configurations is chosen for gain per expected second, so that a
        # full-budget result comes early; the rest for gain alone.
        cheap = self.design_cost == "always" or (
            self.design_cost == "parallel"
            and len(self._design_keys) >= 1
            and not self._cheap_pick_made()
            and any(self._trials[tid].running for tid in self.trial_ids())
        )
        config = self.warm_start.next_design(tried, rng, objective="coverage", cost_aware=cheap)
        if config is not None and cheap:
            self._cheap_key = json.dumps(self.space.validate(config), sort_keys=True)
        if config is None:
            self._design_stopped = True
            return None
        self._design_keys.append(json.dumps(self.space.validate(config), sort_keys=True))
        return config

    def _cheap_pick_made(self) -> bool:
        """Whether the design already chose its one cheap configuration (before any
        full-budget result, the only time cost decides)."""
        if getattr(self, "_cheap_key", None) is not None:
            return True
        return any(v is not None for v in self._brackets[0].rungs[-1].results.values())

    def _full_budget_config(self) -> dict[str, Any] | None:
        if self.warm_start is None:
            return None
        self._refresh()
        return self._next_design() if self._design_active() else None

    def tell(self, observation: Observation) -> None:
        # Every report at a rung's budget is evidence for the weights, also one a trial
        # passes on its way to a higher rung (a portfolio configuration run straight to
        # the full budget passes every rung): the rung results alone would miss it.
        if self.warm_start is not None and not observation.failed:
            for budget in self._ladder:
                if abs(observation.budget - budget) <= 1e-9:
                    self._passed.setdefault(budget, {})[observation.trial_id] = observation.value
        super().tell(observation)

    def _ensemble_config(self) -> dict[str, Any]:
        """The candidate with the highest ensemble probability of being good."""
        warm = self.warm_start
        assert warm is not None
        model = self.model()
        weights = warm.weights
        own = weights.own if model is not None else 0.0
        chance = weights.random + (weights.own if model is None else 0.0)
        past = warm.past_weights()
        total = own + chance + float(past.sum())
        probs = np.concatenate([[own, chance], past]) / total
        counts = self.rng.multinomial(self.num_samples, probs)
        candidates: list[dict[str, Any]] = []
        if counts[0] and model is not None:
            candidates += model.l.sample(
                self.rng, int(counts[0]), bandwidth_factor=self.bandwidth_factor
            )
        candidates += [self.space.sample(self.rng) for _ in range(int(counts[1]))]
        candidates += warm.candidates(counts[2:], self.rng, bandwidth_factor=self.bandwidth_factor)
        candidates = [c for c in candidates if not self._seen(c)]
        if not candidates:
            return self._unseen_sample()
        gamma = self.top_n_percent / 100.0
        score = np.full(len(candidates), chance * gamma / total)
        if own > 0 and model is not None:
            rows = self._codec.encode(candidates)
            good = len(model.l.points) / (len(model.l.points) + len(model.g.points))
            log_odds = model.l.log_pdf(rows) - model.g.log_pdf(rows) + math.log(good / (1 - good))
            score += own / total * _sigmoid(log_odds)
        score += warm.mixture_good(candidates) / total
        return candidates[int(np.argmax(score))]

    def _new_config(self, budget: float) -> dict[str, Any]:
        # Always draw both coins, so the stream of random numbers does not depend on
        # whether a model or a past happens to exist.
        u_random, u_past = self.rng.random(2)
        if self.warm_start is not None:
            self._refresh()
            if u_random < self.random_fraction:
                return self._unseen_sample()
            if self.mode == "sync" and self._design_active():
                config = self._next_design()
                if config is not None:
                    return config
            if self.warm_model:
                return self._ensemble_config()
            return self._cold_config()
        prior, weight = self._prior()
        n_own = sum(v is not None for rs in self._model_results().values() for _, v in rs)
        # The expert prior's weight: all of it before any own result, less as own
        # evidence grows.
        trust = weight / (weight + n_own) if prior is not None and weight > 0 else 0.0
        if u_random < self.random_fraction:
            return self._unseen_sample()
        model = self.model()
        if model is not None:
            return self._cold_config(model)
        if prior is not None and u_past < trust:
            (drawn,) = prior.sample(self.rng, 1)
            return self.space.complete(self.space.project(drawn), self.rng)
        return self._unseen_sample()

    def _cold_config(self, model: DensityRatioModel | None = None) -> dict[str, Any]:
        """BOHB's own proposal: the best ``l / g`` of draws from ``l``, else uniform."""
        model = model if model is not None else self.model()
        if model is None:
            return self._unseen_sample()
        proposal = model.propose(
            self.rng,
            num_samples=self.num_samples,
            bandwidth_factor=self.bandwidth_factor,
            exclude=self._seen,
        )
        return proposal if proposal is not None else self._unseen_sample()

    def _seen(self, config: dict[str, Any]) -> bool:
        """Whether a trial already has this configuration (only possible in discrete spaces)."""
        for tid in self.trial_ids()[len(self._keys) :]:
            self._keys.append(json.dumps(self.trial_config(tid), sort_keys=True))
            self._key_set.add(self._keys[-1])
        key = json.dumps(self.space.validate(config), sort_keys=True)
        return key in self._key_set or key in self.history.known

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
            config = self.trial_config(trial_id)
            row = self._rows[trial_id] = self._codec.encode([config], foreign=True)[0]
        return row


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
