"""Rank statistics shared by the transfer models: normalised ranks, subsets, concordance.

Everything here compares observations *at the same budget* only: a low-fidelity value
is never ranked against a full-fidelity one.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "concordance",
    "concordance_variance",
    "rank01",
    "same_budget_pairs",
    "stratified",
]


def rank01(y: np.ndarray) -> np.ndarray:
    """Normalised ranks in [0, 1] (0 = best, the smallest), ties sharing their mean rank."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n < 2:
        return np.zeros(n)
    _, inv = np.unique(y, return_inverse=True)
    counts = np.bincount(inv)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts + 1) / 2.0
    return mean_rank[inv] / (n - 1)


def stratified(values: np.ndarray, budgets: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` indices spread evenly over the (budget, value) order: every budget
    keeps its share and every rank band is represented."""
    n = len(values)
    if n <= cap:
        return np.arange(n)
    order = np.lexsort((values, budgets))
    return np.sort(order[np.unique(np.round(np.linspace(0, n - 1, cap)).astype(int))])


def same_budget_pairs(y: np.ndarray, budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, of observations at the same budget with different
    values (ties say nothing about order)."""
    iu, ju = np.triu_indices(len(y), 1)
    keep = (budgets[iu] == budgets[ju]) & (y[iu] != y[ju])
    return iu[keep], ju[keep]


def concordance(scores: np.ndarray, y: np.ndarray, budgets: np.ndarray) -> tuple[np.ndarray, int]:
    """How often each row of ``scores`` orders the observations ``y`` rightly.

    A pair is *concordant* for a model when the observation it scores higher has the
    smaller (better) value. Only pairs at the same budget with different values count;
    a tied score counts half.

    Args:
        scores: ``(models, n)``, higher = predicted better.
        y: ``(n,)`` observed values, to minimise.
        budgets: ``(n,)`` their budgets.

    Returns:
        ``(concordant, pairs)``: concordant pair counts per model (ties as 0.5) and the
        number of pairs compared.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    y = np.asarray(y, dtype=float)
    iu, ju = same_budget_pairs(y, np.asarray(budgets, dtype=float))
    if len(iu) == 0:
        return np.zeros(len(scores)), 0
    truth = np.sign(y[ju] - y[iu])  # +1 when i is better
    guess = np.sign(scores[:, iu] - scores[:, ju])  # +1 when the model prefers i
    agree = (guess * truth[None, :] + 1.0) / 2.0  # 1, 0.5 (tie) or 0
    return agree.sum(axis=1), len(iu)


def concordance_variance(pairs: int) -> float:
    """Sampling variance of a concordance measured on ``pairs`` pairs.

    Kendall's null variance ``2 (2n + 5) / (9 n (n - 1))`` of tau, over four (tau is
    ``2 c - 1``), for the ``n`` whose ``n (n - 1) / 2`` equals ``pairs``: the pairs of
    ``n`` points are not independent, so this, not ``c (1 - c) / pairs``, is how much
    they say (an upper bound when there is correlation, so it errs on the side of the
    prior).
    """
    if pairs <= 0:
        return math.inf
    n = (1.0 + math.sqrt(1.0 + 8.0 * pairs)) / 2.0
    return 2.0 * (2.0 * n + 5.0) / (9.0 * n * (n - 1.0)) / 4.0
