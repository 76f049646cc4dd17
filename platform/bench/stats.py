"""Task-level statistics of a benchmark run: paired comparisons and harm tests.

The input is the summary table of :func:`warmtune.bench.protocol.run_bench`: one
normalised regret per (benchmark, task, method, seed, budget_ffe). The seeds of one
task share the task (its landscape, its reference, its knowledge base), so they are
not independent replications of a method's behaviour across tasks: the unit of
replication is the task. Every test here treats it so.

Comparisons (:func:`pairwise`), per budget and per unordered pair of methods, written
once as ``method`` minus ``other`` (negative: ``method`` has the lower regret):

1. Each method's regret is averaged over its seeds within each task
   (:func:`seed_means`; NaN regrets, from a degenerate reference, are skipped). The
   task's difference ``d_t`` is ``method``'s seed mean minus ``other``'s; tasks
   where either method has no result are left out. ``tasks`` counts the rest.
2. ``mean_difference`` is the mean of ``d_t`` over tasks.
3. ``ci_low, ci_high``: a 95 % percentile bootstrap interval of that mean. Tasks are
   resampled with replacement, :data:`BOOTSTRAP_RESAMPLES` times, from a generator
   seeded afresh with ``seed`` for every (pair, budget), so an interval depends only
   on its own differences, not on which other methods ran. The percentile interval
   is too narrow for few tasks: for normally distributed differences it covers the
   mean about 86 % of the time with 6 tasks, 91 % with 10 and 93 % with 34 (a
   simulation of 2,000 data sets). With fewer than :data:`MIN_TASKS` tasks it is
   not reported (NaN, with a note).
4. ``wins, ties, losses``: tasks where ``method``'s seed mean is lower than, equal to
   (within :data:`TIE_TOLERANCE`) or higher than ``other``'s.
5. ``wilcoxon_p``: the two-sided Wilcoxon signed-rank test of ``d_t`` across tasks
   (:func:`wilcoxon_p`). Ties (``|d_t| <= TIE_TOLERANCE``) are dropped before the
   test, scipy's ``zero_method="wilcox"``: here they are mostly structural (at a
   small budget two methods that have no full-fidelity result yet both count 1 on
   every seed; two ablations that run the same configurations tie exactly), and say
   nothing about direction. ``"pratt"`` would rank them and shift every other rank,
   and scipy's exact null distribution holds only without zeros. So the test runs on
   ``wins + losses`` tasks, with scipy's ``method="auto"``: the exact null
   distribution of ``W+`` when no two ``|d_t|`` tie (up to 50 tasks); with ties, an
   exhaustive sign-flip permutation up to 13 tasks; else the normal approximation.
   With fewer than :data:`MIN_TASKS` untied tasks the p-value is NaN with a
   note: with ``n <= 5`` the smallest two-sided p is ``2 / 2**n >= 0.0625``, so the
   test cannot reject at 5 % whatever the data say.
6. ``pooled_mean_difference, pooled_ci_low, pooled_ci_high, pooled_pairs``: the older
   numbers, which pair runs by (task, seed) and treat the pairs as independent (a
   95 % t-interval). They are not independent, so the pooled interval is too narrow:
   a difference large on a few tasks looks significant across all of them. They are
   kept, labelled pooled, only to compare with earlier records.

Harm (:func:`harm_tests`), per (method, baseline, task, budget): is ``method``'s
regret larger than ``baseline``'s on this task?

1. The one-sided Mann-Whitney U test of ``method``'s seeds against ``baseline``'s
   (``alternative="greater"``: ``method`` has the larger regret). The seeds of two
   methods are independent runs, not pairs, so this is a two-sample test, not a
   signed-rank one. scipy's ``method="auto"``: the exact null distribution when
   either method has at most 8 seeds and no two values tie, else the normal approximation
   corrected for ties and continuity (ties are common at small budgets, where runs
   without a full-fidelity result all count 1).
2. With fewer than :data:`MIN_SEEDS` seeds of either method the test is not run; when
   every run of both methods has the same regret there is nothing to rank. Both
   leave ``mannwhitney_p`` NaN, ``harmed`` empty and say why in ``note``.
3. At each budget the tests over tasks are one family: 34 tasks tested at 5 % would
   flag about 1.7 of them by chance when nothing is harmed. ``holm_p`` is the
   Holm-adjusted p-value across the tasks tested at that budget (:func:`holm`;
   untested tasks are not in the family: a test with a degenerate null distribution
   can never reject, so leaving it out keeps the family-wise error rate at 5 %).
   ``harmed`` is ``holm_p < 0.05``. :func:`harm_summary` also counts the nominal
   ``p < 0.05``, which are what an unadjusted reading would call harm.
4. Holm's bound is strict for few seeds: without ties the smallest one-sided p with
   ``n1`` and ``n2`` seeds is ``1 / C(n1 + n2, n1)`` (1/252 with 5 and 5), and the
   smallest p among ``m`` tasks must be below ``0.05 / m`` to flag anything. With 5
   seeds and 13 or more tasks no task can be flagged; :func:`harm_summary` says so
   in ``can_flag``. 6 seeds suffice for 34 tasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from warmtune.bench.methods import ALL_METHODS

__all__ = [
    "ALPHA",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "MIN_SEEDS",
    "MIN_TASKS",
    "TIE_TOLERANCE",
    "bootstrap_interval",
    "harm_summary",
    "harm_tests",
    "holm",
    "mann_whitney_greater",
    "pairwise",
    "seed_means",
    "smallest_mann_whitney_p",
    "win_tie_loss",
    "wilcoxon_p",
]

#: Two seed-averaged regrets closer than this are a tie (a win for neither method).
TIE_TOLERANCE = 1e-9
#: Fewer tasks than this (untied ones, for the Wilcoxon test) and no task-level
#: interval or p-value is reported: the two-sided signed-rank test needs 6 to reach 5 %.
MIN_TASKS = 6
#: Fewer seeds of either method than this and the per-task harm test is not run.
MIN_SEEDS = 5
#: Significance level of the harm test (after Holm's adjustment).
ALPHA = 0.05
#: Bootstrap resamples of the tasks, and the seed of each interval's generator.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

# Per-run tables of one benchmark have one benchmark; tables joined from several keep
# their tasks apart by it.
_TASK_KEYS = ("benchmark", "task")


def _task_keys(table: pd.DataFrame) -> list[str]:
    return [k for k in _TASK_KEYS if k in table.columns]


def seed_means(table: pd.DataFrame) -> pd.DataFrame:
    """Each method's regret per task and budget, over its seeds.

    Returns:
        A frame indexed by ([benchmark,] task, method, budget_ffe) with columns
        ``mean``, ``std`` (seed to seed, ddof 1; NaN with one seed) and ``seeds``
        (the seeds with a regret; NaN regrets are skipped).
    """
    keys = [*_task_keys(table), "method", "budget_ffe"]
    grouped = table.groupby(keys)["normalized_regret"]
    return grouped.agg(mean="mean", std="std", seeds="count")


def win_tie_loss(differences: Sequence[float] | np.ndarray) -> tuple[int, int, int]:
    """Tasks where the difference is negative (a win: lower regret), zero within
    :data:`TIE_TOLERANCE` (a tie) or positive (a loss)."""
    d = np.asarray(differences, dtype=float)
    wins = int(np.sum(d < -TIE_TOLERANCE))
    losses = int(np.sum(d > TIE_TOLERANCE))
    return wins, len(d) - wins - losses, losses


def bootstrap_interval(
    differences: Sequence[float] | np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The 95 % percentile bootstrap interval of the mean, resampling the differences.

    Args:
        differences: one value per task.
        resamples: bootstrap resamples.
        seed: seed of the generator, made afresh for this interval.

    Returns:
        ``(low, high)``; NaN for fewer than :data:`MIN_TASKS` values (see the module
        docstring).
    """
    d = np.asarray(differences, dtype=float)
    if len(d) < MIN_TASKS:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def wilcoxon_p(differences: Sequence[float] | np.ndarray) -> tuple[float, str]:
    """The two-sided Wilcoxon signed-rank p-value across tasks, ties dropped.

    Returns:
        ``(p, note)``: ``p`` is NaN, and ``note`` says why, when there are fewer than
        :data:`MIN_TASKS` untied differences (every task tied included); else
        ``note`` is empty.
    """
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    untied = d[np.abs(d) > TIE_TOLERANCE]
    if len(d) and not len(untied):
        return math.nan, "every task tied: no Wilcoxon p"
    if len(untied) < MIN_TASKS:
        return math.nan, (
            f"{len(untied)} untied task(s): the Wilcoxon test needs {MIN_TASKS} to "
            "reach p < 0.05, no p reported"
        )
    result = stats.wilcoxon(untied, zero_method="wilcox", alternative="two-sided")
    return float(result.pvalue), ""


def _method_order(methods: Iterable[str], first: str | None) -> list[str]:
    present = set(methods)
    known = [m for m in ALL_METHODS if m in present]
    order = known + sorted(present - set(known))
    if first in present:
        order.remove(first)
        order.insert(0, first)
    return order


def _t_interval(d: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    mean = float(d.mean()) if len(d) else math.nan
    if len(d) < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean - half, mean + half


def pairwise(
    table: pd.DataFrame,
    *,
    first: str | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Task-level comparisons of every pair of methods, per budget (module docstring).

    Args:
        table: the summary table.
        first: this method is ``method`` in every pair it is in; the other pairs
            follow :data:`~warmtune.bench.methods.ALL_METHODS` order.
        resamples: bootstrap resamples of the tasks.
        seed: seed of each bootstrap interval.

    Returns:
        Columns ``method, other, budget_ffe, tasks, mean_difference, ci_low,
        ci_high, wilcoxon_p, wins, ties, losses, note, pooled_mean_difference,
        pooled_ci_low, pooled_ci_high, pooled_pairs``, pairs in method order, then
        budgets ascending. ``note`` says why a number is NaN (empty otherwise).
    """
    keys = _task_keys(table)
    means = seed_means(table)["mean"].unstack("method")
    # dropna=False keeps a method whose every regret is NaN (it then pairs with nothing).
    pooled = table.pivot_table(
        index=[*keys, "seed", "budget_ffe"],
        columns="method",
        values="normalized_regret",
        dropna=False,
    )
    budgets = sorted(table["budget_ffe"].unique())
    order = _method_order(table["method"].unique(), first)
    rows = []
    for i, method in enumerate(order):
        for other in order[i + 1 :]:
            by_task = dict(tuple((means[method] - means[other]).dropna().groupby("budget_ffe")))
            by_run = dict(tuple((pooled[method] - pooled[other]).dropna().groupby("budget_ffe")))
            for budget in budgets:
                d = by_task[budget].to_numpy() if budget in by_task else np.empty(0)
                runs = by_run[budget].to_numpy() if budget in by_run else np.empty(0)
                low, high = bootstrap_interval(d, resamples=resamples, seed=seed)
                p, note = wilcoxon_p(d)
                if len(d) < MIN_TASKS:
                    note = f"{len(d)} task(s), fewer than {MIN_TASKS}: no interval, no p"
                wins, ties, losses = win_tie_loss(d)
                pooled_low, pooled_high = _t_interval(runs)
                rows.append(
                    {
                        "method": method,
                        "other": other,
                        "budget_ffe": float(budget),
                        "tasks": len(d),
                        "mean_difference": float(d.mean()) if len(d) else math.nan,
                        "ci_low": low,
                        "ci_high": high,
                        "wilcoxon_p": p,
                        "wins": wins,
                        "ties": ties,
                        "losses": losses,
                        "note": note,
                        "pooled_mean_difference": float(runs.mean()) if len(runs) else math.nan,
                        "pooled_ci_low": pooled_low,
                        "pooled_ci_high": pooled_high,
                        "pooled_pairs": len(runs),
                    }
                )
    return pd.DataFrame(rows)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN stays NaN and is not in the family.

    The ``k``-th smallest of ``m`` p-values is multiplied by ``m - k + 1``, capped
    at 1, and raised to the largest adjusted value before it, so that an adjusted
    ``p < alpha`` is exactly a rejection by Holm's procedure at ``alpha``.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    running = 0.0
    for rank, i in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out


def smallest_mann_whitney_p(n1: int, n2: int) -> float:
    """The smallest one-sided exact Mann-Whitney p-value with ``n1`` and ``n2``
    untied values: one split of ``C(n1 + n2, n1)`` is the most extreme."""
    return 1.0 / math.comb(n1 + n2, n1)


def mann_whitney_greater(
    method: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray
) -> tuple[float, str]:
    """One-sided Mann-Whitney U p-value for "``method``'s regret is larger".

    Returns:
        ``(p, note)``: ``p`` is NaN, and ``note`` says why, with fewer than
        :data:`MIN_SEEDS` values on either side or when every value is the same.
    """
    from scipy import stats

    x = np.asarray(method, dtype=float)
    y = np.asarray(baseline, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if min(len(x), len(y)) < MIN_SEEDS:
        return math.nan, (
            f"{len(x)} and {len(y)} seed(s): fewer than {MIN_SEEDS} per method, not tested"
        )
    if np.ptp(np.concatenate([x, y])) <= TIE_TOLERANCE:
        return math.nan, "every run of both methods has the same regret: nothing to test"
    return float(stats.mannwhitneyu(x, y, alternative="greater").pvalue), ""


def harm_tests(
    table: pd.DataFrame, *, baseline: str, methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per task and budget: is each method's regret larger than ``baseline``'s?

    Args:
        table: the summary table.
        baseline: the method compared against (cold ``bohb`` for the warm methods).
        methods: the methods to test; every other method in the table by default.

    Returns:
        One row per (method, task, budget) where both methods ran: columns ``method,
        baseline, [benchmark,] task, budget_ffe, method_mean, method_std,
        method_seeds, baseline_mean, baseline_std, baseline_seeds, mannwhitney_p,
        holm_p, harmed, note`` (see the module docstring). ``harmed`` is a nullable
        boolean, empty where the test was not run.
    """
    keys = _task_keys(table)
    summary = seed_means(table)
    values = {
        key: group.to_numpy(dtype=float)
        for key, group in table.groupby([*keys, "method", "budget_ffe"])["normalized_regret"]
    }
    present = set(table["method"])
    if methods is None:
        methods = [m for m in _method_order(present, None) if m != baseline]
    tasks = sorted(
        table[keys].drop_duplicates().itertuples(index=False, name=None),
        key=lambda t: tuple(str(v) for v in t),
    )
    budgets = sorted(table["budget_ffe"].unique())
    frames = []
    for method in [m for m in methods if m in present and m != baseline]:
        for budget in budgets:
            rows = []
            for task in tasks:
                mine = (*task, method, budget)
                theirs = (*task, baseline, budget)
                if mine not in values or theirs not in values:
                    continue
                p, note = mann_whitney_greater(values[mine], values[theirs])
                rows.append(
                    {
                        "method": method,
                        "baseline": baseline,
                        **dict(zip(keys, task, strict=True)),
                        "budget_ffe": float(budget),
                        "method_mean": summary.loc[mine, "mean"],
                        "method_std": summary.loc[mine, "std"],
                        "method_seeds": int(summary.loc[mine, "seeds"]),
                        "baseline_mean": summary.loc[theirs, "mean"],
                        "baseline_std": summary.loc[theirs, "std"],
                        "baseline_seeds": int(summary.loc[theirs, "seeds"]),
                        "mannwhitney_p": p,
                        "note": note,
                    }
                )
            if rows:
                frame = pd.DataFrame(rows)
                frame.insert(len(frame.columns) - 1, "holm_p", holm(frame["mannwhitney_p"]))
                harmed = pd.array(frame["holm_p"] < ALPHA, dtype="boolean")
                harmed[frame["holm_p"].isna().to_numpy()] = pd.NA
                frame.insert(len(frame.columns) - 1, "harmed", harmed)
                frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def harm_summary(harm: pd.DataFrame) -> pd.DataFrame:
    """Counts of :func:`harm_tests` per (method, baseline, budget).

    Returns:
        Columns ``method, baseline, budget_ffe, tasks, tested, harmed`` (Holm-adjusted
        p < 0.05), ``nominal`` (unadjusted p < 0.05), ``expected_by_chance``
        (``0.05 * tested``: nominal flags expected when nothing is harmed) and
        ``can_flag`` (whether, without ties, any tested task's seed counts allow a
        p-value small enough to survive Holm's adjustment; see the module docstring).
    """
    rows = []
    for (method, baseline, budget), group in harm.groupby(
        ["method", "baseline", "budget_ffe"], sort=False
    ):
        tested = group[group["mannwhitney_p"].notna()]
        smallest = min(
            (
                smallest_mann_whitney_p(int(a), int(b))
                for a, b in zip(tested["method_seeds"], tested["baseline_seeds"], strict=True)
            ),
            default=math.nan,
        )
        rows.append(
            {
                "method": method,
                "baseline": baseline,
                "budget_ffe": budget,
                "tasks": len(group),
                "tested": len(tested),
                "harmed": int((tested["holm_p"] < ALPHA).sum()),
                "nominal": int((tested["mannwhitney_p"] < ALPHA).sum()),
                "expected_by_chance": ALPHA * len(tested),
                "can_flag": bool(smallest * len(tested) < ALPHA),
            }
        )
    return pd.DataFrame(rows)
