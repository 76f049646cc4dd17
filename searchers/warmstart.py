"""Warm start: the past as competing models, a portfolio to try first, and proposals.

:class:`WarmStart` is what a warm-started BOHB (or PBT) holds. It owns the past tasks'
models (:class:`~warmtune.searchers.pastmodels.PastModels`, each a TPE classifier in the
target's space) and the learned similarity (:class:`~warmtune.searchers.similarity.
TaskSimilarity`), and gives the searcher three things:

* **Weights** (:meth:`WarmStart.update`, :attr:`WarmStart.weights`): for every past task,
  the target's own model and random search, the posterior probability that it orders
  the target's results best. The searcher passes all its own observations and its own
  model's out-of-sample scores; the past tasks are scored on the same observations.
* **A portfolio** (:meth:`WarmStart.next_design`): the past tasks' best measured
  configurations, chosen one at a time, greedily, to most lower the weighted best
  normalised rank per past task (``sum_t w_t * min_{c chosen} rank_t(c)``), with the
  weights of the moment. The first pick is the configuration with the best weighted
  rank; each next one re-reads the weights, so evidence against a task moves the design
  away from it at once.
* **Transfer inside the model** (:meth:`WarmStart.candidates`, :meth:`WarmStart.log_odds`):
  the searcher's acquisition is the weighted mixture of the models' probabilities of
  being good, ``sum_m w_m p_m(x)``, with candidates drawn from each model's good density
  in proportion to its weight (Feurer et al. 2018's rank-weighted ensemble, with BOHB's
  TPE classifiers as the base models, cf. Watanabe et al. 2023). A past task the
  target's results contradict has no weight, so it neither proposes nor scores.

Weighting schemes (``weighting=``), each isolating one mechanism for the benchmark's
ablations:

* ``"learned"``: the similarity model with its LOTO-learned prior (the method).
* ``"flat"``: the same competition with an uninformed prior for every past task.
* ``"uniform"``: no similarity at all: every past task the same weight, and the past as a
  whole ``past_weight / (past_weight + n_own)`` against the own model (random search
  until it has one), a fixed pseudo-count.
* ``"oracle"``: an upper bound, not a method: the past tasks' weights among themselves
  come from a large sample of the target that the search never sees (``oracle=``); the
  past, the own model and chance still compete on the search's own results.

State: :meth:`WarmStart.state` is JSON-able and holds only the inputs and the current
weights; :meth:`WarmStart.from_state` rebuilds from the same past tasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from warmtune.searchers.pastmodels import PastModels
from warmtune.searchers.pasttask import PastTask
from warmtune.searchers.portfolio import Portfolio
from warmtune.searchers.ranks import concordance, stratified
from warmtune.searchers.similarity import Evidence, TaskSimilarity, TaskWeights
from warmtune.space import SearchSpace

__all__ = ["WEIGHTINGS", "WarmStart", "nearest_tasks"]

WEIGHTINGS = ("learned", "flat", "uniform", "oracle")
# Each past task offers its best few configurations to the portfolio.


class WarmStart:
    """Weights, portfolio and proposals from the past for one target search.

    Args:
        space: the target's search space.
        past_tasks: the knowledge base's past tasks (other tasks, or earlier searches).
        meta_features: the target's meta-features.
        seed: seed of the object's own generator and of the similarity's Monte Carlo.
        good_fraction: share of each past task's observations (best first) that form its
            good set; BOHB's ``top_n_percent`` / 100, so both sides split alike.
        max_points: at most this many good and this many bad points per past model.
        min_bandwidth: the past densities' smallest bandwidth (BOHB's).
        weighting: one of :data:`WEIGHTINGS` (see the module docstring).
        past_weight: the fixed pseudo-count of ``weighting="uniform"``.
        oracle: ``weighting="oracle"`` only: ``(configs, values)``, a sample of the target
            (values to minimise) that the search itself never sees.
        max_compare: at most this many own observations are compared (rank-stratified).
        pairwise: pairwise concordances of the past tasks measured earlier (see
            :meth:`TaskSimilarity.pairwise_state`).
        models: the past tasks' models, built earlier for this space and these tasks with
            these options (shared, read only: e.g. by every seed of a benchmark).
        similarity: the similarity model over ``models``, built earlier likewise.
        max_tasks: at most this many past tasks are weighed (:func:`nearest_tasks`: the
            ones that share the most parameters with the space, then the nearest by
            meta-features, then the richest); a team's knowledge base of a thousand
            tasks costs what 128 do.

    Raises:
        ValueError: no past tasks, or an option out of range.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        past_tasks: Sequence[PastTask],
        meta_features: Mapping[str, Any] | None = None,
        seed: int | None = None,
        good_fraction: float = 0.15,
        max_points: int = 256,
        min_bandwidth: float = 1e-3,
        weighting: str = "learned",
        past_weight: float = 10.0,
        oracle: tuple[Sequence[Mapping[str, Any]], Sequence[float]] | None = None,
        max_compare: int = 128,
        pairwise: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        models: PastModels | None = None,
        similarity: TaskSimilarity | None = None,
        max_tasks: int = 128,
    ) -> None:
        if not isinstance(space, SearchSpace):
            raise ValueError(f"space must be a SearchSpace, got {type(space).__name__}")
        if not past_tasks:
            raise ValueError("past_tasks is empty: give at least one PastTask (or cold-start)")
        if not (isinstance(max_tasks, int) and max_tasks >= 1):
            raise ValueError(f"max_tasks must be an int >= 1, got {max_tasks!r}; e.g. 128")
        names = [t.name for t in past_tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate task name(s) {dup}: give each past task one entry")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
        if weighting == "oracle" and oracle is None:
            raise ValueError(
                "weighting='oracle' needs oracle= (a sample of the target: configs, values)"
            )
        if not past_weight > 0:
            raise ValueError(f"past_weight must be > 0, got {past_weight}; e.g. 10")
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.space = space
        self.seed = seed
        self.meta_features = dict(meta_features or {})
        self.good_fraction = float(good_fraction)
        self.max_points = int(max_points)
        self.min_bandwidth = float(min_bandwidth)
        self.weighting = weighting
        self.past_weight = float(past_weight)
        self.max_compare = int(max_compare)
        self._oracle_sample = oracle
        self.rng = np.random.default_rng(seed)
        self.max_tasks = max_tasks
        if models is None:
            past_tasks = nearest_tasks(past_tasks, space, self.meta_features, max_tasks)
            names = [t.name for t in past_tasks]
        elif models.codec.space.signature() != space.signature() or not set(models.names) <= set(
            names
        ):
            raise ValueError("models were built for other past tasks or another space")
        self.models = models or PastModels(
            space=space,
            past_tasks=past_tasks,
            good_fraction=good_fraction,
            min_bandwidth=min_bandwidth,
            max_points=max_points,
        )
        prior = "flat" if weighting == "flat" else "learned"
        if similarity is not None and (
            similarity.models is not self.models or similarity.prior_kind != prior
        ):
            raise ValueError(f"similarity must be built over models with prior={prior!r}")
        self.similarity: TaskSimilarity | None = None
        if weighting != "uniform":
            self.similarity = similarity or TaskSimilarity(
                models=self.models,
                seed=seed,
                max_compare=max_compare,
                prior=prior,
                pairwise=pairwise,
            )
        self._oracle = None
        if weighting == "oracle":
            assert oracle is not None
            configs, values = oracle
            vals = np.asarray(values, dtype=float)
            self._oracle = self.evidence(list(configs), vals, np.zeros(len(vals)), None)
        self.portfolio = Portfolio(self.models, self.space)
        self._weights = self._weigh(Evidence.none(len(self.models)))

    # Weights --------------------------------------------------------------------------
    @property
    def weights(self) -> TaskWeights:
        """The current weights, with their explanations."""
        return self._weights

    @property
    def task_names(self) -> list[str]:
        return self.models.names

    def update(
        self,
        *,
        configs: Sequence[Mapping[str, Any]],
        values: Sequence[float] | np.ndarray,
        budgets: Sequence[float] | np.ndarray,
        own_scores: Sequence[float] | np.ndarray | None = None,
    ) -> TaskWeights:
        """Re-weight on *all* own observations so far (not just the new ones).

        Args:
            configs: the target's evaluated configurations (its own space).
            values: their values, to minimise; non-finite ones are ignored.
            budgets: their budgets.
            own_scores: the target's own ranking model's out-of-sample scores of each
                observation (higher = better; ``NaN`` where it has no model; see
                :func:`~warmtune.searchers.kernelreg.leave_one_out_scores`), or ``None``
                while it has none.

        Returns:
            The new :class:`TaskWeights` (also :attr:`weights`).
        """
        vals = np.asarray(values, dtype=float).reshape(-1)
        buds = np.asarray(budgets, dtype=float).reshape(-1)
        if not (len(configs) == len(vals) == len(buds)):
            raise ValueError(
                f"{len(configs)} configs, {len(vals)} values and {len(buds)} budgets: "
                "give one value and one budget per config"
            )
        own = None if own_scores is None else np.asarray(own_scores, dtype=float).reshape(-1)
        ok = np.flatnonzero(np.isfinite(vals))
        evidence = self.evidence(
            [configs[i] for i in ok], vals[ok], buds[ok], None if own is None else own[ok]
        )
        self._weights = self._weigh(evidence)
        return self._weights

    def evidence(
        self,
        configs: Sequence[Mapping[str, Any]],
        values: np.ndarray,
        budgets: np.ndarray,
        own_scores: np.ndarray | None,
    ) -> Evidence:
        """How well each past model (and the own one) orders these observations."""
        t = len(self.models)
        n = len(values)
        if n < 2:
            return Evidence(concordant=np.zeros(t), pairs=0, own_concordant=None, n_own=n)
        sub = stratified(values, budgets, self.max_compare)
        rows = self.models.codec.encode([configs[i] for i in sub])
        y, b = values[sub], budgets[sub]
        agree = np.zeros(t)
        own_agree = 0.0
        pairs = 0
        has_own = own_scores is not None and bool(np.isfinite(own_scores).any())
        for level in np.unique(b):
            at = np.flatnonzero(b == level)
            if len(at) < 2:
                continue
            scores = self.models.rank_scores(rows[at], budget=float(level))
            a, p = concordance(scores, y[at], b[at])
            agree += a
            pairs += p
            if has_own and p:
                mine = np.nan_to_num(np.asarray(own_scores)[sub][at], nan=0.0)
                own_a, _ = concordance(mine[None, :], y[at], b[at])
                own_agree += float(own_a[0])
        return Evidence(
            concordant=agree,
            pairs=pairs,
            own_concordant=own_agree if has_own else None,
            n_own=n,
        )

    def _weigh(self, evidence: Evidence) -> TaskWeights:
        if self.weighting == "uniform":
            return self._uniform(evidence)
        assert self.similarity is not None
        return self.similarity.weights(
            meta_features=self.meta_features, evidence=evidence, oracle=self._oracle
        )

    def _uniform(self, evidence: Evidence) -> TaskWeights:
        """Every usable past task alike; the past worth a fixed pseudo-count of observations."""
        usable = self.models.usable()
        share = self.past_weight / (self.past_weight + evidence.n_own)
        each = share / max(int(usable.sum()), 1)
        rest = 1.0 - share if usable.any() else 1.0
        has_own = evidence.own_concordant is not None
        return TaskWeights(
            past={n: (each if u else 0.0) for n, u in zip(self.models.names, usable, strict=True)},
            own=rest if has_own else 0.0,
            random=0.0 if has_own else rest,
            n_own=evidence.n_own,
        )

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        """Restore weights saved with :meth:`TaskWeights.to_dict` (their explanations are
        recomputed at the next :meth:`update`)."""
        past = {n: float(weights["past"].get(n, 0.0)) for n in self.models.names}
        self._weights = TaskWeights(
            past=past,
            own=float(weights["own"]),
            random=float(weights["random"]),
            n_own=int(weights["n_own"]),
        )

    # Scores and proposals -------------------------------------------------------------
    def past_weights(self) -> np.ndarray:
        """The current weight of each past task, in :attr:`task_names` order."""
        return np.array([self._weights.past[n] for n in self.models.names])

    def log_odds(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``(tasks, len(configs))``: each past task's log-odds that a config is good."""
        return self.models.scores(self.models.codec.encode(configs))

    def mixture_good(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``sum_t w_t p_t(x)``: the past's part of the ensemble probability of being good."""
        w = self.past_weights()
        if not (w > 0).any() or not configs:
            return np.zeros(len(configs))
        # Sparse: a task holding less than a thousandth of the past's weight changes no
        # decision, and skipping it keeps a suggestion's cost to the tasks that matter.
        active = np.flatnonzero(w >= 1e-3 * w.sum())
        rows = self.models.codec.encode(configs)
        scores = self.models.scores(rows, tasks=active)[active]
        return w[active] @ _sigmoid(scores)

    def candidates(
        self, counts: np.ndarray, rng: np.random.Generator, *, bandwidth_factor: float
    ) -> list[dict[str, Any]]:
        """Draws from the past tasks' good densities, ``counts[t]`` from task ``t``."""
        return self.models.sample_good_many(counts, rng, bandwidth_factor=bandwidth_factor)

    def sample(
        self, n: int, rng: np.random.Generator | None = None, *, which: str = "good"
    ) -> list[dict[str, Any]]:
        """``n`` configurations from the weighted past's good densities (uniform draws when
        the past has no weight). Only ``which="good"`` is offered."""
        if which != "good":
            raise ValueError(f"which must be 'good', got {which!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = self.rng if rng is None else rng
        w = self.past_weights()
        if not (w > 0).any():
            return [self.space.sample(rng) for _ in range(n)]
        counts = rng.multinomial(n, w / w.sum())
        drawn = self.candidates(counts, rng, bandwidth_factor=1.0)
        return [self.space.validate(c) for c in drawn]

    # The portfolio (searchers/portfolio.py) ------------------------------------------
    def next_design(
        self,
        tried: Sequence[Mapping[str, Any]],
        rng: np.random.Generator,
        *,
        weights: np.ndarray | None = None,
        objective: str = "coverage",
        cost_aware: bool = False,
    ) -> dict[str, Any] | None:
        """The next portfolio configuration not ``tried`` yet, under ``weights`` (default:
        the current ones); see :meth:`~warmtune.searchers.portfolio.Portfolio.next`."""
        w = self.past_weights() if weights is None else np.asarray(weights, dtype=float)
        return self.portfolio.next(
            tried, rng, weights=w, objective=objective, cost_aware=cost_aware
        )

    def design_objective(self, picks: int = 5) -> str:
        """The portfolio objective that held up on the past itself, leave one task out
        (see :meth:`~warmtune.searchers.portfolio.Portfolio.objective`)."""
        return self.portfolio.objective(picks)

    def initial_design(
        self, k: int, rng: np.random.Generator | None = None
    ) -> list[dict[str, Any]]:
        """``k`` portfolio configurations chosen with the current weights, in order (fewer
        when the portfolio has fewer that help; none when the past has no weight).

        Raises:
            ValueError: ``k`` is negative.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        rng = self.rng if rng is None else rng
        out: list[dict[str, Any]] = []
        for _ in range(k):
            config = self.next_design(out, rng)
            if config is None:
                break
            out.append(config)
        return out

    # State ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-able inputs and current weights: rebuild with :meth:`from_state`."""
        return {
            "space": self.space.to_dict(),
            "past_tasks": self.models.names,
            "meta_features": self.meta_features,
            "seed": self.seed,
            "good_fraction": self.good_fraction,
            "max_points": self.max_points,
            "min_bandwidth": self.min_bandwidth,
            "weighting": self.weighting,
            "past_weight": self.past_weight,
            "oracle": None
            if self._oracle_sample is None
            else [
                list(map(dict, self._oracle_sample[0])),
                list(map(float, self._oracle_sample[1])),
            ],
            "max_compare": self.max_compare,
            "max_tasks": self.max_tasks,
            "weights": self._weights.to_dict(),
            "rng": dict(self.rng.bit_generator.state),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, past_tasks: Sequence[PastTask]) -> WarmStart:
        """Rebuild from :meth:`state` and the knowledge base's past tasks.

        Raises:
            ValueError: the past tasks are not the ones the state was made with.
        """
        chosen = set(state["past_tasks"])
        names = [t.name for t in past_tasks if t.name in chosen]
        if names != list(state["past_tasks"]):
            raise ValueError(
                "the knowledge base changed since this state was saved: tasks "
                f"{state['past_tasks'][:5]}... expected, got {names[:5]}...; "
                "rebuild WarmStart from scratch instead"
            )
        warm = cls(
            space=SearchSpace(state["space"]),
            past_tasks=[t for t in past_tasks if t.name in chosen],
            meta_features=state["meta_features"],
            seed=state["seed"],
            good_fraction=state["good_fraction"],
            max_points=state["max_points"],
            min_bandwidth=state.get("min_bandwidth", 1e-3),
            weighting=state.get("weighting", "learned"),
            past_weight=state.get("past_weight", 10.0),
            oracle=state.get("oracle"),
            max_compare=state.get("max_compare", 128),
            max_tasks=state.get("max_tasks", 128),
        )
        warm.set_weights(state["weights"])
        warm.rng.bit_generator.state = state["rng"]
        return warm


def nearest_tasks(
    past_tasks: Sequence[PastTask],
    space: SearchSpace,
    meta_features: Mapping[str, Any],
    k: int,
) -> list[PastTask]:
    """The ``k`` past tasks a warm start weighs, in their original order: those sharing
    the most parameters with ``space``, then the nearest by meta-features (standardised
    numbers, label mismatches), then those with the most observations. All of them when
    there are ``k`` or fewer.
    """
    if len(past_tasks) <= k:
        return list(past_tasks)
    from warmtune.searchers.metafeatures import meta_distances

    shared = [sum(1 for n in space if n in t.space) for t in past_tasks]
    d2, mismatches = meta_distances([t.meta_features for t in past_tasks], meta_features)
    order = sorted(
        range(len(past_tasks)),
        key=lambda i: (-shared[i], mismatches[i], d2[i], -len(past_tasks[i]), past_tasks[i].name),
    )
    keep = set(order[:k])
    return [t for i, t in enumerate(past_tasks) if i in keep]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def log_odds_of(probability: float) -> float:
    """``log(p / (1 - p))``."""
    return math.log(probability / (1.0 - probability))
