"""A concordance as evidence: the Beta-binomial arithmetic of the task weights.

A past task's model orders ``pairs`` pairs of the new task's results, ``concordant`` of
them the right way round. :func:`effective_pairs` turns that into independent coin
flips (Kendall's variance); :func:`log_likelihood` is their probability under a Beta
prior of the task's concordance restricted to ``[1/2, 1]`` (a model is never turned
round); :func:`helpful_probability` the prior probability that a task helps at all.
:class:`~warmtune.searchers.similarity.TaskSimilarity` averages the tasks with these.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import betaincc, betaln

from warmtune.searchers.ranks import concordance_variance

__all__ = [
    "MIN_VARIANCE",
    "beta_parameters",
    "effective_pairs",
    "helpful_probability",
    "log_likelihood",
    "logsumexp",
    "normalise_log",
]

#: The smallest variance a concordance prior may have.
MIN_VARIANCE = 1e-4


def effective_pairs(concordant: np.ndarray, pairs: int) -> tuple[float, np.ndarray]:
    """``(nu, k)``: the pairs' worth as independent pairs (Kendall's variance of a
    concordance is that of ``nu`` coin flips) and the concordant share of them."""
    if pairs <= 0:
        return 0.0, np.zeros_like(np.asarray(concordant, dtype=float))
    nu = 0.25 / concordance_variance(pairs)
    return nu, np.asarray(concordant, dtype=float) / pairs * nu


def log_likelihood(a: np.ndarray, b: np.ndarray, k: np.ndarray, nu: float) -> np.ndarray:
    """Log probability of the observed pair orders under each model: ``c^k (1 - c)^(nu - k)``
    integrated over the model's concordance ``c``, Beta(a, b) restricted to ``[1/2, 1]``.

    A model is used as it is, never turned round: a task whose model orders the target's
    results the wrong way round does not explain them, however consistently. Hence the
    restriction: at best it is as good as chance.
    """
    if nu <= 0:
        return np.zeros(len(a))
    a2, b2 = a + k, b + nu - k
    with np.errstate(divide="ignore"):
        upper = np.log(betaincc(a2, b2, 0.5)) - np.log(betaincc(a, b, 0.5))
    return betaln(a2, b2) - betaln(a, b) + upper


def helpful_probability(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Prior probability that each task's model orders a new task better than chance
    (its concordance above one half), under the learned Beta prior."""
    a, b = beta_parameters(np.asarray(mean, dtype=float), np.asarray(var, dtype=float))
    return betaincc(a, b, 0.5)


def beta_parameters(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Beta with this mean and variance (its concentration at least 2: no prior is
    surer of a concordance than a handful of pairs could be)."""
    mean = np.clip(mean, 0.01, 0.99)
    kappa = np.maximum(mean * (1.0 - mean) / np.maximum(var, MIN_VARIANCE) - 1.0, 2.0)
    return mean * kappa, (1.0 - mean) * kappa


def logsumexp(x: np.ndarray) -> float:
    if len(x) == 0 or not np.isfinite(x).any():
        return -math.inf
    top = float(np.max(x))
    return top + math.log(float(np.sum(np.exp(x - top))))


def normalise_log(log_weights: np.ndarray) -> np.ndarray:
    """Softmax of log weights (``-inf`` entries get 0)."""
    log_weights = np.asarray(log_weights, dtype=float)
    if not np.isfinite(log_weights).any():
        return np.zeros(len(log_weights))
    top = np.max(log_weights[np.isfinite(log_weights)])
    w = np.where(np.isfinite(log_weights), np.exp(log_weights - top), 0.0)
    return w / w.sum()
