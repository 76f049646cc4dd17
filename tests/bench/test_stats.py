"""Task-level benchmark statistics against numbers worked out by hand.

Every expected value is derived here from first principles (seed means by hand, the
exact null distributions by enumeration, Holm's procedure by its definition), never by
calling the code under test a second way.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from warmtune.bench.stats import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_interval,
    harm_summary,
    harm_tests,
    holm,
    pairwise,
    seed_means,
    smallest_mann_whitney_p,
    wilcoxon_p,
)
from warmtune.bench.summary import compare, markdown_extras, no_harm

TASKS = [f"t{i}" for i in range(6)]
SEEDS = range(5)
# Zero-mean offsets, so each seed mean is the base value: two different spreads.
COLD_OFFSETS = [-0.02, -0.01, 0.0, 0.01, 0.02]
WARM_OFFSETS = [0.03, -0.03, 0.01, -0.01, 0.0]
# At 2 FFE: cold bohb's seed mean per task, and warm minus cold per task.
COLD_BASE = [0.50, 0.40, 0.30, 0.20, 0.45, 0.35]
DIFFERENCES = [-0.30, -0.20, -0.10, +0.05, -0.25, -0.15]


def _rows(method, task, budget, values):
    return [
        {
            "benchmark": "toy",
            "task": task,
            "method": method,
            "seed": seed,
            "budget_ffe": budget,
            "normalized_regret": value,
        }
        for seed, value in zip(SEEDS, values, strict=True)
    ]


def _comparison_table(warm_offsets=WARM_OFFSETS):
    """6 tasks x 5 seeds x 2 methods x 2 budgets.

    At 1 FFE every run counts 1 (no incumbent yet), except bohb-warm on t0 (one seed
    2.5e-9 lower: a seed mean 5e-10 lower, a tie) and on t1 (one seed at 0.9: a seed
    mean of 0.98, a win by 0.02). At 2 FFE the seed means are COLD_BASE and
    COLD_BASE + DIFFERENCES.
    """
    rows = []
    for i, task in enumerate(TASKS):
        warm_1 = [1.0] * 5
        if task == "t0":
            warm_1[0] = 1.0 - 2.5e-9
        if task == "t1":
            warm_1[0] = 0.9
        rows += _rows("bohb", task, 1.0, [1.0] * 5)
        rows += _rows("bohb-warm", task, 1.0, warm_1)
        cold = COLD_BASE[i]
        warm = COLD_BASE[i] + DIFFERENCES[i]
        rows += _rows("bohb", task, 2.0, [cold + o for o in COLD_OFFSETS])
        rows += _rows("bohb-warm", task, 2.0, [warm + o for o in warm_offsets])
    return pd.DataFrame(rows)


def _exact_wilcoxon_two_sided(d):
    """2 min(P(W+ <= w), P(W+ >= w)) over all 2^n sign patterns (no ties, no zeros)."""
    d = np.asarray(d, dtype=float)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1  # distinct |d|: ranks 1..n
    observed = ranks[d > 0].sum()
    null = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product([False, True], repeat=len(d))
    ]
    null = np.array(null)
    low, high = np.mean(null <= observed), np.mean(null >= observed)
    return min(1.0, 2 * min(low, high))


def _exact_mann_whitney_greater(x, y):
    """P(U >= U_obs) over every split of the pooled values into len(x) and len(y)."""
    pooled = np.concatenate([x, y])
    observed = sum(a > b for a in x for b in y)
    splits = list(itertools.combinations(range(len(pooled)), len(x)))
    count = 0
    for idx in splits:
        first = pooled[list(idx)]
        rest = np.delete(pooled, list(idx))
        count += sum(a > b for a in first for b in rest) >= observed
    return count / len(splits)


def _holm_by_definition(p):
    """Adjusted p_i: the smallest alpha at which Holm's step-down procedure rejects i."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p)
    out = np.empty(m)
    for i in range(m):
        # i is rejected at alpha iff every p at or before i's position in the sorted
        # order satisfies p_(k) <= alpha / (m - k + 1), k = 1..position.
        position = int(np.flatnonzero(order == i)[0])
        out[i] = min(1.0, max((m - k) * p[order[k]] for k in range(position + 1)))
    return out


def test_seed_means_are_per_task_averages():
    table = _comparison_table()
    means = seed_means(table)
    for i, task in enumerate(TASKS):
        cold = means.loc[("toy", task, "bohb", 2.0)]
        warm = means.loc[("toy", task, "bohb-warm", 2.0)]
        assert cold["mean"] == pytest.approx(COLD_BASE[i], abs=1e-12)
        assert warm["mean"] == pytest.approx(COLD_BASE[i] + DIFFERENCES[i], abs=1e-12)
        # ddof 1: sum of squared offsets / 4.
        assert cold["std"] == pytest.approx(math.sqrt(0.001 / 4), rel=1e-9)
        assert warm["std"] == pytest.approx(math.sqrt(0.0020 / 4), rel=1e-9)
        assert cold["seeds"] == warm["seeds"] == 5


def test_comparison_at_two_ffe_matches_the_hand_numbers():
    row = pairwise(_comparison_table(), first="bohb-warm").set_index("budget_ffe").loc[2.0]
    assert (row["method"], row["other"]) == ("bohb-warm", "bohb")
    assert row["tasks"] == 6
    assert row["mean_difference"] == pytest.approx(-0.95 / 6, abs=1e-12)
    # Five tasks where bohb-warm's seed mean is lower, one (t3, +0.05) where it is higher.
    assert (row["wins"], row["ties"], row["losses"]) == (5, 0, 1)
    # |d| ranks: 0.05 -> 1, 0.10 -> 2, ..., 0.30 -> 6; W+ = 1 (t3 alone). Of the 64
    # sign patterns, two have W+ <= 1 (none positive, rank 1 positive): p = 2 * 2/64.
    assert _exact_wilcoxon_two_sided(DIFFERENCES) == pytest.approx(4 / 64)
    assert row["wilcoxon_p"] == pytest.approx(4 / 64, rel=1e-12)
    assert not isinstance(row["note"], str) or row["note"] == ""
    # Pooled: the 30 (task, seed) differences, t-interval with 29 degrees of freedom.
    runs = np.array(
        [d + w - c for d in DIFFERENCES for w, c in zip(WARM_OFFSETS, COLD_OFFSETS, strict=True)]
    )
    half = sp.t.ppf(0.975, 29) * runs.std(ddof=1) / math.sqrt(30)
    assert row["pooled_pairs"] == 30
    assert row["pooled_mean_difference"] == pytest.approx(-0.95 / 6, abs=1e-12)
    assert row["pooled_ci_low"] == pytest.approx(runs.mean() - half, rel=1e-9)
    assert row["pooled_ci_high"] == pytest.approx(runs.mean() + half, rel=1e-9)


def test_ties_within_tolerance_and_too_few_untied_tasks_give_no_p():
    row = pairwise(_comparison_table(), first="bohb-warm").set_index("budget_ffe").loc[1.0]
    # t0 differs by 5e-10 (a tie), t1 by -0.02 (a win), the rest are equal.
    assert (row["wins"], row["ties"], row["losses"]) == (1, 5, 0)
    assert row["mean_difference"] == pytest.approx(-0.02 / 6, abs=1e-9)
    assert math.isnan(row["wilcoxon_p"])
    assert "1 untied task" in row["note"]
    # Every task tied: no p, and the note says so.
    p, note = wilcoxon_p([0.0, 1e-10, -1e-10, 0.0, 0.0, 0.0])
    assert math.isnan(p) and "every task tied" in note
    # Exactly 6 untied tasks, all negative: the smallest exact two-sided p, 2/64.
    p, note = wilcoxon_p([-0.1, -0.2, -0.3, -0.4, -0.5, -0.6, 0.0])
    assert p == pytest.approx(2 / 64) and note == ""
    # 5 untied tasks: 2/32 would be the best possible, above 5 %: not reported.
    p, note = wilcoxon_p([-0.1, -0.2, -0.3, -0.4, -0.5, 0.0])
    assert math.isnan(p) and "5 untied" in note


def test_fewer_than_six_tasks_report_neither_interval_nor_p():
    table = _comparison_table()
    table = table[table["task"] != "t5"]
    row = pairwise(table, first="bohb-warm").set_index("budget_ffe").loc[2.0]
    assert row["tasks"] == 5
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert math.isnan(row["wilcoxon_p"]) and "fewer than 6" in row["note"]
    # The pooled numbers and the counts are still there, labelled as such.
    assert row["pooled_pairs"] == 25
    assert (row["wins"], row["ties"], row["losses"]) == (4, 0, 1)


def test_bootstrap_matches_the_exact_bootstrap_distribution():
    d = np.array(DIFFERENCES)
    low, high = bootstrap_interval(d, seed=0)
    assert low <= d.mean() <= high
    assert bootstrap_interval(d, seed=0) == (low, high)  # deterministic with its seed
    # Off the 0.05 grid, where the resample means are nearly continuous: the seed
    # matters, and the interval estimates the exact bootstrap distribution, the
    # means of all 6^6 equally likely resamples of the tasks. With 10,000 draws its
    # quantiles are off by sampling error only (here < 0.005); the 5 % and 95 %
    # quantiles would be 0.011 off.
    rough = d + np.array([0.0013, -0.0071, 0.0029, 0.0101, -0.0043, 0.0057])
    low, high = bootstrap_interval(rough, seed=0)
    assert bootstrap_interval(rough, seed=1) != (low, high)
    every = np.array(list(itertools.product(rough, repeat=6))).mean(axis=1)
    exact_low, exact_high = np.quantile(every, [0.025, 0.975])
    assert low == pytest.approx(exact_low, abs=0.006)
    assert high == pytest.approx(exact_high, abs=0.006)
    assert low <= rough.mean() <= high
    assert BOOTSTRAP_RESAMPLES == 10_000


def test_task_level_numbers_depend_only_on_seed_means():
    # Wider seed-to-seed spread with the same seed means: the task-level columns
    # stay, the pooled interval widens.
    wide = [5 * o for o in WARM_OFFSETS]
    narrow = pairwise(_comparison_table(), first="bohb-warm").set_index("budget_ffe").loc[2.0]
    spread = pairwise(_comparison_table(wide), first="bohb-warm").set_index("budget_ffe").loc[2.0]
    for column in ("mean_difference", "ci_low", "ci_high", "wilcoxon_p"):
        assert spread[column] == pytest.approx(narrow[column], abs=1e-12)

    def pooled_width(offsets):
        runs = np.array(
            [d + w - c for d in DIFFERENCES for w, c in zip(offsets, COLD_OFFSETS, strict=True)]
        )
        return 2 * sp.t.ppf(0.975, 29) * runs.std(ddof=1) / math.sqrt(30)

    width = spread["pooled_ci_high"] - spread["pooled_ci_low"]
    assert width == pytest.approx(pooled_width(wide), rel=1e-9)
    assert width > narrow["pooled_ci_high"] - narrow["pooled_ci_low"]


def test_every_pair_once_first_method_first_and_antisymmetric():
    table = _comparison_table()
    random = table[table["method"] == "bohb"].assign(
        method="random", normalized_regret=lambda t: t["normalized_regret"] + 0.1
    )
    table = pd.concat([table, random], ignore_index=True)
    out = pairwise(table, first="bohb-warm")
    pairs = list(dict.fromkeys(zip(out["method"], out["other"], strict=True)))
    # bohb-warm first in its pairs, then the others in report order.
    assert pairs == [("bohb-warm", "random"), ("bohb-warm", "bohb"), ("random", "bohb")]
    assert len(out) == 3 * 2
    a = pairwise(table, first="bohb").set_index(["method", "other", "budget_ffe"])
    b = pairwise(table, first="bohb-warm").set_index(["method", "other", "budget_ffe"])
    ab, ba = b.loc[("bohb-warm", "bohb", 2.0)], a.loc[("bohb", "bohb-warm", 2.0)]
    assert ba["mean_difference"] == pytest.approx(-ab["mean_difference"])
    assert ba["ci_low"] == pytest.approx(-ab["ci_high"])
    assert ba["wilcoxon_p"] == pytest.approx(ab["wilcoxon_p"])
    assert (ba["wins"], ba["losses"]) == (ab["losses"], ab["wins"])


def _harm_table(seeds=5, tasks=6, worse=("t3",)):
    """bohb and bohb-warm seeds per task; at 1 FFE every run counts 1.

    At 2 FFE cold bohb's seeds are 0.04 apart. On the ``worse`` tasks every
    bohb-warm seed is above every bohb seed; on the others bohb-warm's seeds
    interleave with bohb's, 0.02 above them (even tasks) or below (odd tasks).
    """
    rows = []
    for i in range(tasks):
        task = f"t{i}"
        cold = 0.2 + 0.01 * i + 0.04 * np.arange(seeds)
        warm = cold + 0.3 if task in worse else cold + 0.02 * (-1) ** i
        for method, values in (("bohb", cold), ("bohb-warm", warm)):
            for seed in range(seeds):
                for budget, value in ((1.0, 1.0), (2.0, float(values[seed]))):
                    rows.append(
                        {
                            "benchmark": "toy",
                            "task": task,
                            "method": method,
                            "seed": seed,
                            "budget_ffe": budget,
                            "normalized_regret": value,
                        }
                    )
    return pd.DataFrame(rows)


def test_mann_whitney_flags_the_one_worse_task_after_holm():
    table = _harm_table()
    harm = harm_tests(table, baseline="bohb", methods=["bohb-warm"])
    at2 = harm[harm["budget_ffe"] == 2.0].set_index("task")
    assert list(at2.index) == TASKS
    expected = {}
    for task in TASKS:
        x = table.query("task == @task and method == 'bohb-warm' and budget_ffe == 2.0")
        y = table.query("task == @task and method == 'bohb' and budget_ffe == 2.0")
        x, y = x["normalized_regret"].to_numpy(), y["normalized_regret"].to_numpy()
        expected[task] = _exact_mann_whitney_greater(x, y)
        assert at2.loc[task, "method_mean"] == pytest.approx(x.mean())
        assert at2.loc[task, "baseline_std"] == pytest.approx(y.std(ddof=1))
        assert at2.loc[task, "method_seeds"] == at2.loc[task, "baseline_seeds"] == 5
    # The worse task: only one of the C(10, 5) = 252 splits is as extreme.
    assert expected["t3"] == pytest.approx(1 / 252)
    for task in TASKS:
        assert at2.loc[task, "mannwhitney_p"] == pytest.approx(expected[task], rel=1e-9)
    p = np.array([expected[t] for t in TASKS])
    assert at2["holm_p"].to_numpy() == pytest.approx(_holm_by_definition(p))
    # The smallest of 6 p-values times 6: 6/252 < 0.05, so t3 is harmed, alone.
    assert at2.loc["t3", "holm_p"] == pytest.approx(6 / 252)
    assert list(at2.index[at2["harmed"].to_numpy(dtype=bool)]) == ["t3"]
    counts = harm_summary(harm).set_index("budget_ffe")
    assert counts.loc[2.0, "tested"] == 6 and counts.loc[2.0, "harmed"] == 1
    assert counts.loc[2.0, "nominal"] == int((p < 0.05).sum())
    assert counts.loc[2.0, "can_flag"]
    # At 1 FFE every run counts 1: nothing to rank, so nothing tested or flagged.
    at1 = harm[harm["budget_ffe"] == 1.0]
    assert at1["mannwhitney_p"].isna().all() and at1["harmed"].isna().all()
    assert at1["note"].str.contains("same regret").all()
    assert counts.loc[1.0, "tested"] == 0 and counts.loc[1.0, "harmed"] == 0


def test_fewer_than_five_seeds_are_not_tested():
    table = _harm_table()
    table = table[~((table["method"] == "bohb-warm") & (table["seed"] == 4))]
    harm = harm_tests(table, baseline="bohb", methods=["bohb-warm"])
    assert harm["mannwhitney_p"].isna().all() and harm["harmed"].isna().all()
    at2 = harm[harm["budget_ffe"] == 2.0]
    assert at2["note"].str.contains("4 and 5 seed").all()
    assert (at2["method_seeds"] == 4).all()


def test_holm_by_hand():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06
    # (an adjusted p never falls below one before it).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN is not in the family: the other two are a family of 2.
    out = holm([0.02, math.nan, 0.6])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    # 2 x 0.5 = 1.0 comes first; 0.9 x 1 cannot fall below it.
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    # Capped at 1.
    assert holm([0.6, 0.7, 0.8]) == pytest.approx([1.0, 1.0, 1.0])


def test_five_seeds_cannot_flag_thirteen_tasks():
    assert smallest_mann_whitney_p(5, 5) == pytest.approx(1 / 252)
    # Every task as clearly worse as it can be: nominal p = 1/252 on all of them.
    # Holm: 12 x 1/252 = 0.048 < 0.05 flags all 12; 13 x 1/252 = 0.052 flags none.
    every = [f"t{i}" for i in range(13)]
    for tasks, harmed, can_flag in ((12, 12, True), (13, 0, False)):
        harm = harm_tests(
            _harm_table(tasks=tasks, worse=every[:tasks]), baseline="bohb", methods=["bohb-warm"]
        )
        counts = harm_summary(harm).set_index("budget_ffe").loc[2.0]
        assert (counts["nominal"], counts["harmed"], counts["can_flag"]) == (
            tasks,
            harmed,
            can_flag,
        )


def test_summary_markdown_says_task_level_and_pooled():
    table = _harm_table()
    harm = no_harm(table)
    comparison = compare(table, "bohb-warm")
    runs = pd.DataFrame(
        {"method": ["bohb", "bohb-warm"], "evals_to_target": [3.0, math.nan], "evaluations": 9}
    )
    text = markdown_extras(runs, comparison, harm)
    assert "| bohb-warm minus | tasks | mean difference [95 % CI] | Wilcoxon p | W/T/L |" in text
    assert "(task, seed) pairs are not independent" in text
    assert "pooled" in text and "Holm" in text
    assert "- 2 FFE: harmed on 1 of 6 tested tasks (t3)" in text
    assert "- 1 FFE: no task tested" in text
