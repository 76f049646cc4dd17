"""Task similarity, learned from the knowledge base: which past task to trust, and how much.

The question a warm start asks of each past task ``i`` is concrete: *does its model
order the new task's results rightly?* The measure is the **concordance** ``c_i`` of
``i``'s model (its TPE classifier, :mod:`~warmtune.searchers.pastmodels`) with the
target's observations: the share of pairs of target observations at the same budget
that the model orders the way they came out (1 = always right, 0.5 = chance, 0 = always
the wrong way round, as a mirrored task would).

How the weights are formed, step by step:

1. *Learned prior, fitted on the past alone.* Every past task's model is scored on every
   other past task's observations: the pairwise concordances ``C[i, j]``. Leaving one
   task ``j`` out at a time, as if it were a new target, the prior of ``c_i`` for a new
   target is fitted to predict ``C[i, j]`` from what is known before searching:

   - ``i``'s *typical* transfer, its mean concordance with the other past tasks (a
     distractor that predicts nothing has a typical concordance near 0.5, a task that
     looks like many others a high one);
   - the meta-features: ``mu_i(t) = typical_i + b * (k(m_i, m_t) - mean_k_i)`` with ``k``
     a kernel on standardised numeric meta-features and label mismatches; bandwidth,
     label factor and slope ``b`` are chosen by that leave-one-task-out (LOTO) error,
     and ``b = 0`` (meta-features say nothing) competes with them.

   The LOTO residuals give each task's prior variance ``v_i``: how far the prior is off
   for that task, measured (less the measurement noise of the residuals themselves).
2. *Evidence from the target's own results.* The concordance ``c_hat_i`` of ``i``'s model
   with the target's observations so far, each observation scored by ``i``'s model at
   the same budget where ``i`` has one (low-rung results against the past's same rung).
   Its sampling variance is Kendall's null variance for the number of pairs compared
   (:func:`~warmtune.searchers.ranks.concordance_variance`).
3. *Bayesian model averaging.* Each past task is a hypothesis, "the target orders
   configurations as this task's model does", with its concordance ``c_i`` drawn from
   the learned prior (a Beta with the prior's mean and variance). The likelihood of the
   observed pair orders is ``c^k (1 - c)^(nu - k)``, with ``nu`` the pairs' worth as
   independent pairs (Kendall's variance) and ``k`` the concordant share of them;
   integrated over the prior it is a ratio of Beta functions. A past task's weight among
   the past is its posterior probability: with no own results every task weighs the same
   (the past's consensus, what zero-shot transfer uses), and the weights concentrate on
   the tasks whose models keep ordering the target's results rightly. A task whose model
   orders them the wrong way round loses its weight within a few observations.
4. *Competition with the target itself (RGPE's principle, Feurer et al. 2018).* Three
   explanations compete on the same pairs: the past (the mixture of its tasks), the
   target's own model (scored out of sample by the searcher's cross-validation, with a
   uniform prior on its concordance) and chance (exactly 0.5). Chance's prior is learned
   too: how often a past task, held out, had no other past task ordering it better than
   chance; the past and the own model share the rest. When the target's own model orders
   its results better than the past does, the evidence hands it the weight and the
   search becomes the cold search; when nothing orders them, chance wins and the past
   has no say.

Cost: construction scores each past task's model on at most ``max_compare`` observations
of every other task (``T^2`` small products; :meth:`TaskSimilarity.pairwise_state` lets a
knowledge base store them and pass them back, so a big knowledge base pays once).
:meth:`TaskSimilarity.weights` then costs a few vector operations over the tasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warmtune.searchers.betabinomial import (
    MIN_VARIANCE,
    beta_parameters,
    effective_pairs,
    helpful_probability,
    log_likelihood,
    logsumexp,
    normalise_log,
)
from warmtune.searchers.metafeatures import MetaTable, meta_kernel
from warmtune.searchers.pastmodels import PastModels
from warmtune.searchers.pasttask import PastTask
from warmtune.searchers.ranks import concordance, concordance_variance, stratified

__all__ = ["UNINFORMED_VARIANCE", "TaskSimilarity", "TaskWeights", "task_concordances"]

#: Variance of a concordance uniform on [0, 1]: the prior when nothing was learned.
UNINFORMED_VARIANCE = 1.0 / 12.0
# The smallest prior variance a task keeps: a prior is never so sure that a few dozen
# observations could not overturn it.
# Meta-feature kernel bandwidths (in standard deviations) and label-mismatch factors
# tried by LOTO; infinity is the "meta-features say nothing" model.
_META_BANDWIDTHS = (*np.geomspace(0.1, 10.0, 9).tolist(), math.inf)
_META_MISMATCH = (0.0, 0.25, 0.5, 0.75, 1.0)
# The fewest past tasks a meta-feature kernel is learned from (leave-one-task-out needs
# more held-out tasks than the kernel's three parameters).
_MIN_META_TASKS = 5


@dataclass(frozen=True)
class TaskWeights:
    """How much a target task should listen to each past task, to itself and to chance.

    The weights of the past tasks, the own model and random search sum to 1: each is
    the posterior probability that this model orders the target's results best.

    Attributes:
        past: task name -> weight.
        own: weight of the target's own model (0 while it has none).
        random: weight of random search (the model that knows nothing).
        n_own: own observations the weights were computed from.
        explanations: task name -> why (see :meth:`TaskSimilarity.weights`).
        own_explanation: the own model's measured concordance and pairs.
    """

    past: dict[str, float]
    own: float
    random: float
    n_own: int
    explanations: dict[str, dict[str, Any]] = field(default_factory=dict)
    own_explanation: dict[str, Any] = field(default_factory=dict)

    @property
    def past_share(self) -> float:
        """The weight of the past as a whole."""
        return float(sum(self.past.values()))

    def ranked(self) -> list[tuple[str, float]]:
        """Past tasks by decreasing weight (ties by name)."""
        return sorted(self.past.items(), key=lambda kv: (-kv[1], kv[0]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the shares and each past task's weight."""
        return {
            "n_own": self.n_own,
            "past_share": self.past_share,
            "own": self.own,
            "random": self.random,
            "past": dict(self.past),
        }


@dataclass(frozen=True)
class Evidence:
    """What the target's own observations say about each model.

    Attributes:
        concordant: per past task, concordant pairs (ties count half).
        pairs: pairs compared (the same pairs for every model).
        own_concordant: the own model's concordant pairs (cross-validated), or ``None``
            while it has no model.
        n_own: the own observations behind it.
    """

    concordant: np.ndarray
    pairs: int
    own_concordant: float | None
    n_own: int

    @classmethod
    def none(cls, n_tasks: int) -> Evidence:
        return cls(concordant=np.zeros(n_tasks), pairs=0, own_concordant=None, n_own=0)


class TaskSimilarity:
    """The learned similarity model over a knowledge base's past tasks.

    Args:
        models: the past tasks' models (in the target's space).
        seed: seed of the generator behind the learned prior's random subsets.
        max_compare: at most this many observations of each past task are used to
            measure the pairwise concordances (a rank-stratified subset).
        prior: ``"learned"`` (the LOTO-fitted prior of the module docstring) or
            ``"flat"`` (every past task's concordance uninformed, ``N(0.5, 1/12)``: the
            evidence alone decides; an ablation).
        pairwise: concordances measured earlier (:meth:`pairwise_state`), keyed by task
            name; missing pairs are measured here.

    Raises:
        ValueError: no past tasks, or an unknown ``prior``.
    """

    def __init__(
        self,
        *,
        models: PastModels,
        seed: int | None = 0,
        max_compare: int = 128,
        prior: str = "learned",
        pairwise: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    ) -> None:
        if len(models) == 0:
            raise ValueError("models holds no past task: give at least one PastTask")
        if prior not in ("learned", "flat"):
            raise ValueError(f"prior must be 'learned' or 'flat', got {prior!r}")
        if max_compare < 2:
            raise ValueError(f"max_compare must be >= 2, got {max_compare}")
        self.models = models
        self.seed = 0 if seed is None else int(seed)
        self.max_compare = int(max_compare)
        self.prior_kind = prior
        names = models.names
        self._meta = MetaTable([t.meta_features for t in models.tasks])
        self._meta_codes = [self._meta.encode(t.meta_features) for t in models.tasks]
        t = len(names)
        self.meta_bandwidth, self.meta_mismatch, self.meta_slope = math.inf, 1.0, 0.0
        self.loto_error = {"typical": math.nan, "meta": math.nan}
        self._typical = np.full(t, 0.5)
        self._variance = np.full(t, UNINFORMED_VARIANCE)
        # Prior probability that no past model orders a new task better than chance.
        self.null_prior = 1.0 / (t + 2)
        self._d2 = np.zeros((t, t))
        self._mism = np.zeros((t, t))
        if prior == "flat":
            self.pairwise = np.full((t, t), np.nan)
            self.pairwise_pairs = np.zeros((t, t), dtype=int)
            return
        self.pairwise, self.pairwise_pairs = self._measure_pairwise(pairwise)
        self._calibrate()

    # Construction ---------------------------------------------------------------------
    def _measure_pairwise(
        self, known: Mapping[str, Mapping[str, Sequence[float]]] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``C[i, j]``: concordance of task i's top model with task j's top-budget
        observations, and the pairs behind it (NaN / 0 where none)."""
        names = self.models.names
        t = len(names)
        conc = np.full((t, t), np.nan)
        pairs = np.zeros((t, t), dtype=int)
        usable = self.models.usable()
        todo: list[int] = []
        for j in range(t):
            row = (known or {}).get(names[j]) or {}
            missing = False
            for i in range(t):
                if i == j:
                    continue
                stored = row.get(names[i])
                if stored is None:
                    missing = True
                else:
                    conc[i, j], pairs[i, j] = float(stored[0]), int(stored[1])
            if missing:
                todo.append(j)  # a column is measured whole: one product for every task
        for j in todo:
            top = self.models.top[j]
            if top is None or not usable.any():
                continue
            sub = stratified(top.values, np.zeros(len(top.values)), self.max_compare)
            scores = self.models.rank_scores(top.rows[sub], budget=top.budget)
            agree, p = concordance(scores, top.values[sub], np.zeros(len(sub)))
            if p:
                conc[:, j] = np.where(usable, agree / p, np.nan)
                pairs[:, j] = np.where(usable, p, 0)
            conc[j, j], pairs[j, j] = np.nan, 0  # in-sample: says nothing about transfer
        return conc, pairs

    def _calibrate(self) -> None:
        """Fit the prior of each task's concordance on a new target, leave one task out."""
        conc, pairs = self.pairwise, self.pairwise_pairs
        t = len(conc)
        for i in range(t):
            for j in range(t):
                self._d2[i, j], self._mism[i, j] = MetaTable.distance(
                    *self._meta_codes[i], *self._meta_codes[j]
                )
        known = np.isfinite(conc)
        if t < 3 or known.sum() < 3:
            return  # too few tasks to learn from: the uninformed prior stands
        noise = np.where(known, np.vectorize(concordance_variance)(np.maximum(pairs, 1)), np.nan)
        # Typical transfer of task i, leaving the target j out: the mean of its other
        # measured concordances (all of them when j is a genuinely new task).
        total = np.nansum(conc, axis=1)
        count = known.sum(axis=1)
        loo_typical = (total[:, None] - np.where(known, conc, 0.0)) / np.maximum(
            count[:, None] - known, 1
        )
        loo_typical = np.where(count[:, None] - known > 0, loo_typical, 0.5)
        self._typical = np.where(count > 0, total / np.maximum(count, 1), 0.5)
        resid = np.where(known, conc - loo_typical, np.nan)
        self.loto_error["typical"] = float(np.nanmean(resid**2))
        # Meta-features: a slope on the kernel, centred per task so that it only moves a
        # task's prior up or down from its typical transfer.
        best = (self.loto_error["typical"], math.inf, 1.0, 0.0)
        # A meta-feature kernel has three parameters fitted on the held-out errors: with
        # fewer than _MIN_META_TASKS tasks they fit noise, and meta-features stay unused.
        if (self._meta.num or self._meta.cat) and t >= _MIN_META_TASKS:
            for bw in _META_BANDWIDTHS[:-1]:
                for lam in _META_MISMATCH if self._meta.cat else (1.0,):
                    k = meta_kernel(self._d2, self._mism, bw, lam)
                    k_known = np.where(known, k, np.nan)
                    loo_k = (np.nansum(k_known, axis=1)[:, None] - np.where(known, k, 0.0)) / (
                        np.maximum(count[:, None] - known, 1)
                    )
                    kc = np.where(known, k - loo_k, np.nan)
                    err = self._loto_slope_error(kc, resid)
                    if err < best[0] - 1e-12:
                        best = (err, bw, lam, 0.0)
            if math.isfinite(best[1]):
                k = meta_kernel(self._d2, self._mism, best[1], best[2])
                kc = np.where(
                    known, k - np.nanmean(np.where(known, k, np.nan), axis=1)[:, None], 0.0
                )
                slope = _slope(kc[known], (conc - self._typical[:, None])[known])
                best = (best[0], best[1], best[2], slope)
        self.loto_error["meta"] = float(best[0])
        _, self.meta_bandwidth, self.meta_mismatch, self.meta_slope = best
        # Per-task prior variance: its LOTO residuals under the chosen prior, shrunk
        # towards the pooled one by one pseudo-residual, less the noise the measured
        # concordances carry themselves.
        if math.isfinite(self.meta_bandwidth):
            k = meta_kernel(self._d2, self._mism, self.meta_bandwidth, self.meta_mismatch)
            k_known = np.where(known, k, np.nan)
            loo_k = (np.nansum(k_known, axis=1)[:, None] - np.where(known, k, 0.0)) / (
                np.maximum(count[:, None] - known, 1)
            )
            resid = np.where(known, resid - self.meta_slope * (k - loo_k), np.nan)
        sq = np.where(known, resid**2 - noise, np.nan)
        pooled = max(float(np.nanmean(sq)), MIN_VARIANCE)
        per_task = (np.nansum(sq, axis=1) + pooled) / (count + 1)
        # Never wider than knowing nothing (a concordance uniform on [0, 1]).
        self._variance = np.clip(per_task, MIN_VARIANCE, UNINFORMED_VARIANCE)

    @staticmethod
    def _loto_slope_error(kc: np.ndarray, resid: np.ndarray) -> float:
        """LOTO error of ``resid ~ b * kc``: for each held-out target j, ``b`` is fitted on
        the columns other than j."""
        ok = np.isfinite(kc) & np.isfinite(resid)
        num = np.where(ok, kc * resid, 0.0)
        den = np.where(ok, kc * kc, 0.0)
        num_total, den_total = num.sum(), den.sum()
        err, n = 0.0, 0
        for j in range(kc.shape[1]):
            rows = ok[:, j]
            if not rows.any():
                continue
            d = den_total - den[:, j].sum()
            b = (num_total - num[:, j].sum()) / d if d > 1e-12 else 0.0
            err += float(np.sum((resid[rows, j] - b * kc[rows, j]) ** 2))
            n += int(rows.sum())
        return err / max(n, 1)

    # Public ---------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return self.models.names

    def pairwise_state(self) -> dict[str, dict[str, list[float]]]:
        """The measured pairwise concordances, keyed ``target -> {past task: [c, pairs]}``
        (JSON-able; pass back as ``pairwise=`` to skip measuring them again)."""
        names = self.models.names
        out: dict[str, dict[str, list[float]]] = {}
        for j, target in enumerate(names):
            out[target] = {
                names[i]: [float(self.pairwise[i, j]), int(self.pairwise_pairs[i, j])]
                for i in range(len(names))
                if i != j and self.pairwise_pairs[i, j] > 0
            }
        return out

    def calibration(self) -> dict[str, Any]:
        """What was learned from the past (JSON-able)."""
        return {
            "prior": self.prior_kind,
            "meta_bandwidth": None if math.isinf(self.meta_bandwidth) else self.meta_bandwidth,
            "meta_mismatch": self.meta_mismatch,
            "meta_slope": self.meta_slope,
            "loto_error": dict(self.loto_error),
            "typical_concordance": {
                n: float(v) for n, v in zip(self.models.names, self._typical, strict=True)
            },
            "prior_sd": {
                n: float(math.sqrt(v))
                for n, v in zip(self.models.names, self._variance, strict=True)
            },
        }

    def prior(
        self, meta_features: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, variance)`` of each past task's concordance on a new target with these
        meta-features, before any of its results."""
        mean = self._typical.copy()
        if self.meta_slope and math.isfinite(self.meta_bandwidth):
            d2, mism = self._meta_distances(meta_features or {})
            k = meta_kernel(d2, mism, self.meta_bandwidth, self.meta_mismatch)
            known = np.isfinite(self.pairwise)
            k_past = meta_kernel(self._d2, self._mism, self.meta_bandwidth, self.meta_mismatch)
            mean_k = np.nanmean(np.where(known, k_past, np.nan), axis=1)
            mean = mean + self.meta_slope * (k - np.nan_to_num(mean_k))
        mean = np.where(self.models.usable(), np.clip(mean, 0.0, 1.0), 0.5)
        return mean, self._variance.copy()

    def weights(
        self,
        *,
        meta_features: Mapping[str, Any] | None = None,
        evidence: Evidence | None = None,
        oracle: Evidence | None = None,
    ) -> TaskWeights:
        """The weights of the past tasks, the own model and random search.

        Args:
            meta_features: the target's meta-features (unknown names are ignored).
            evidence: what the target's own observations say (default: none yet).
            oracle: an ablation only: the same measurement on a large sample of the
                target that the searcher never sees. The past tasks' weights among
                themselves then come from it (an upper bound of what similarity could
                know, never a method); the past, the own model and chance still compete
                on ``evidence``.

        Returns:
            :class:`TaskWeights`; each past task's explanation holds ``meta_distance``,
            ``label_mismatches``, ``prior_mean``, ``prior_sd`` (its learned concordance
            prior), ``measured`` (None before evidence), ``pairs``, ``log_likelihood``
            and ``weight``.
        """
        t = len(self.models)
        evidence = evidence or Evidence.none(t)
        usable = self.models.usable()
        mu, var = self.prior(meta_features)
        a, b = beta_parameters(mu, var)
        # A task's prior weight: the probability that its model orders a new task better
        # than chance at all, under its learned prior.
        with np.errstate(divide="ignore"):
            log_pi = np.where(usable, np.log(helpful_probability(mu, var)), -np.inf)
        log_pi -= logsumexp(log_pi[np.isfinite(log_pi)]) if np.isfinite(log_pi).any() else 0.0
        nu, k = effective_pairs(evidence.concordant, evidence.pairs)
        loglik = log_likelihood(a, b, k, nu)
        if oracle is not None:
            nu_o, k_o = effective_pairs(oracle.concordant, oracle.pairs)
            within = normalise_log(log_pi + log_likelihood(a, b, k_o, nu_o))
        else:
            within = normalise_log(log_pi + loglik)
        # The past as one model: the mixture of its tasks under their current weights.
        with np.errstate(divide="ignore"):
            log_past = logsumexp(np.log(within[usable]) + loglik[usable])
        candidates = [("past", math.log(1.0 - self.null_prior), log_past)]
        own_measured = None
        if evidence.own_concordant is not None and evidence.pairs:
            own_measured = evidence.own_concordant / evidence.pairs
            own_k = own_measured * nu
            # A uniform prior on its concordance (restricted, like the past's, to [1/2, 1]).
            log_own = float(log_likelihood(np.ones(1), np.ones(1), np.array([own_k]), nu)[0])
            # The past and the own model share the prior mass that chance leaves.
            candidates = [
                ("past", math.log((1.0 - self.null_prior) / 2.0), log_past),
                ("own", math.log((1.0 - self.null_prior) / 2.0), log_own),
            ]
        candidates.append(("random", math.log(self.null_prior), -nu * math.log(2.0)))
        share = normalise_log(np.array([p + m for _, p, m in candidates]))
        shares = {name: float(x) for (name, _, _), x in zip(candidates, share, strict=True)}
        w_past = shares["past"] * within
        measured = evidence.concordant / evidence.pairs if evidence.pairs else np.full(t, np.nan)
        d2, mism = self._meta_distances(meta_features or {})
        explanations = {}
        for i, name in enumerate(self.models.names):
            explanations[name] = {
                "meta_distance": float(math.sqrt(d2[i])),
                "label_mismatches": int(mism[i]),
                "prior_mean": float(mu[i]),
                "prior_sd": float(math.sqrt(var[i])),
                "measured": None if not evidence.pairs else float(measured[i]),
                "pairs": int(evidence.pairs),
                "log_likelihood": float(loglik[i]),
                "weight": float(w_past[i]),
            }
        return TaskWeights(
            past={n: float(w) for n, w in zip(self.models.names, w_past, strict=True)},
            own=shares.get("own", 0.0),
            random=shares["random"],
            n_own=int(evidence.n_own),
            explanations=explanations,
            own_explanation={
                "measured": own_measured,
                "pairs": int(evidence.pairs),
                "weight": shares.get("own", 0.0),
            },
        )

    def _meta_distances(self, meta: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        zt, lt = self._meta.encode(meta)
        t = len(self._meta_codes)
        d2, mism = np.zeros(t), np.zeros(t)
        for i, (zi, li) in enumerate(self._meta_codes):
            d2[i], mism[i] = MetaTable.distance(zt, lt, zi, li)
        return d2, mism


def task_concordances(
    task: PastTask, others: Sequence[PastTask], *, max_compare: int = 128
) -> list[tuple[str, str, float, int]]:
    """The pairwise concordances a task brings to a knowledge base: ``(target, source,
    concordance, pairs)`` of every other task's ranking on ``task``'s results and of
    ``task``'s ranking on each other task's results, measured in ``task``'s space.

    Stored as each job joins (:meth:`warmtune.knowledge.KnowledgeBase.add_job`) and
    passed back as ``pairwise=``, they make a warm start over a large knowledge base
    pay for its own task only: O(tasks) rankings per join instead of O(tasks^2) per
    search.
    """
    models = PastModels(space=task.space, past_tasks=[task, *others])
    out: list[tuple[str, str, float, int]] = []
    usable = models.usable()
    for j in range(len(models)):
        top = models.top[j]
        if top is None:
            continue
        sub = stratified(top.values, np.zeros(len(top.values)), max_compare)
        rows = top.rows[sub]
        if j == 0:  # every other task's ranking on the new task's results
            scores = models.rank_scores(rows, budget=top.budget)
            sources = [i for i in range(1, len(models)) if usable[i]]
        elif usable[0]:  # the new task's ranking on this task's results (its alone)
            model = models.model_at(0, top.budget) or models.top[0]
            scores = np.zeros((len(models), len(rows)))
            scores[0] = model.ranker.scores(rows)  # type: ignore[union-attr]
            sources = [0]
        else:
            continue
        agree, p = concordance(scores[sources], top.values[sub], np.zeros(len(sub)))
        if p:
            out += [
                (models.names[j], models.names[i], float(a / p), int(p))
                for i, a in zip(sources, agree, strict=True)
            ]
    return out


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    den = float(x @ x)
    return float(x @ y) / den if den > 1e-12 else 0.0
