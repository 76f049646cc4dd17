"""Tables and plots of a benchmark run: mean regret, comparisons, no-harm.

The statistics behind the comparisons and the no-harm tests are in
:mod:`warmtune.bench.stats`; this module chooses what to compare and draws it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from warmtune.bench.methods import ALL_METHODS, WARM_METHODS
from warmtune.bench.stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    MIN_SEEDS,
    MIN_TASKS,
    TIE_TOLERANCE,
    harm_summary,
    harm_tests,
    pairwise,
)

__all__ = ["compare", "markdown_extras", "markdown_table", "mean_regret", "no_harm", "plot_regret"]


def compare(table: pd.DataFrame, method: str) -> pd.DataFrame | None:
    """Task-level comparisons of every pair of methods, ``method`` first in its pairs.

    See :func:`warmtune.bench.stats.pairwise` for the columns and the statistics
    (seed means per task first; the pooled (task, seed) numbers only in columns
    named ``pooled_*``). ``None`` when the table has fewer than two methods.
    """
    if table["method"].nunique() < 2:
        return None
    return pairwise(table, first=method)


def no_harm(table: pd.DataFrame, baseline: str = "bohb") -> pd.DataFrame | None:
    """Per task and budget: is a warm method's regret larger than ``baseline``'s?

    Every warm method in the table (:data:`~warmtune.bench.methods.WARM_METHODS`) is
    tested against ``baseline`` by :func:`warmtune.bench.stats.harm_tests`: a
    one-sided Mann-Whitney U test over seeds (at least
    :data:`~warmtune.bench.stats.MIN_SEEDS` per method) at every budget, with
    ``harmed`` = Holm-adjusted p < 0.05 across the tasks at that budget. ``None``
    when ``baseline`` or every warm method is missing.
    """
    present = set(table["method"])
    warm = [m for m in WARM_METHODS if m in present]
    if baseline not in present or not warm:
        return None
    return harm_tests(table, baseline=baseline, methods=warm)


def _cell(value: float, fmt: str) -> str:
    return "n/a" if not np.isfinite(value) else format(value, fmt)


def _comparison_markdown(comparison: pd.DataFrame) -> str:
    """Per budget: the first method minus each other, task-level and pooled."""
    focus = str(comparison["method"].iloc[0])
    mine = comparison[comparison["method"] == focus]
    parts = []
    for budget, group in mine.groupby("budget_ffe"):
        lines = [
            f"**{budget:g} FFE**",
            "",
            f"| {focus} minus | tasks | mean difference [95 % CI] | Wilcoxon p | W/T/L "
            "| pooled (task, seed): mean [95 % t-interval], pairs |",
            "|---|---|---|---|---|---|",
        ]
        for r in group.itertuples():
            lines.append(
                f"| {r.other} | {r.tasks} "
                f"| {_cell(r.mean_difference, '+.3f')} "
                f"[{_cell(r.ci_low, '+.3f')}, {_cell(r.ci_high, '+.3f')}] "
                f"| {_cell(r.wilcoxon_p, '.3g')} | {r.wins}/{r.ties}/{r.losses} "
                f"| {_cell(r.pooled_mean_difference, '+.3f')} "
                f"[{_cell(r.pooled_ci_low, '+.3f')}, {_cell(r.pooled_ci_high, '+.3f')}], "
                f"{r.pooled_pairs} |"
            )
        notes = sorted({str(n) for n in group["note"] if isinstance(n, str) and n})
        if notes:
            lines += ["", "n/a: " + "; ".join(notes) + "."]
        parts.append("\n".join(lines))
    parts.append(
        f"{focus}'s normalised regret minus each other method's (negative: {focus} is "
        "better). Task level: each method's regret is averaged over its seeds within "
        "each task first, and the task is the unit: the mean of the per-task "
        "differences, a percentile bootstrap 95 % interval over tasks "
        f"({BOOTSTRAP_RESAMPLES:,} resamples of the tasks, seed {BOOTSTRAP_SEED}), the "
        "two-sided Wilcoxon signed-rank p across tasks (tied tasks dropped), and W/T/L, "
        f"the tasks where {focus} is better / tied (within {TIE_TOLERANCE:g}) / worse. "
        f"With fewer than {MIN_TASKS} tasks no interval is given (a bootstrap over so "
        f"few tasks is far too narrow), and no p with fewer than {MIN_TASKS} untied "
        "tasks (the two-sided test could not reach 5 %).\n\n"
        "The pooled columns pair runs by (task, seed) as if every pair were an "
        "independent observation. But (task, seed) pairs are not independent: the seeds "
        "of one task share its landscape, reference and knowledge base, so the pooled "
        "interval is too narrow "
        "and can call a difference that holds on a few tasks significant. Read the "
        "task-level numbers; the pooled ones are kept to compare with earlier records. "
        "`comparison.csv` holds every pair of methods."
    )
    return "\n\n".join(parts)


def _harm_markdown(harm: pd.DataFrame) -> str:
    """A line per budget for the first warm method against its baseline."""
    counts = harm_summary(harm)
    method, baseline = str(counts["method"].iloc[0]), str(counts["baseline"].iloc[0])
    lines = [
        f"No harm, {method} against {baseline}, per task at every budget: a one-sided "
        f"Mann-Whitney U test over seeds ({method}'s regret larger; at least {MIN_SEEDS} "
        f"seeds per method), Holm-adjusted across the tasks at each budget; harmed: "
        f"adjusted p < {ALPHA:g}. The nominal count is what an unadjusted reading "
        f"would flag; about {ALPHA:g} x tasks are expected by chance when nothing is "
        "harmed.",
        "",
    ]
    for r in counts[counts["method"] == method].itertuples():
        rows = harm[(harm["method"] == method) & (harm["budget_ffe"] == r.budget_ffe)]
        if not r.tested:
            why = "; ".join(sorted({str(n) for n in rows["note"]}))
            lines.append(f"- {r.budget_ffe:g} FFE: no task tested ({why}).")
            continue
        names = ", ".join(str(t) for t in rows[rows["harmed"].fillna(False)]["task"])
        line = (
            f"- {r.budget_ffe:g} FFE: harmed on {r.harmed} of {r.tested} tested tasks"
            + (f" ({names})" if names else "")
            + f"; nominal p < {ALPHA:g} on {r.nominal} (about {r.expected_by_chance:.1f} "
            "expected by chance)."
        )
        if not r.can_flag:
            line += (
                " With these seed counts no task can reach the adjusted threshold: run more seeds."
            )
        lines.append(line)
    others = sorted(set(harm["method"]) - {method})
    if others:
        lines += ["", f"`no_harm.csv` also tests {', '.join(others)} against {baseline}."]
    return "\n".join(lines)


def markdown_extras(
    runs: pd.DataFrame, comparison: pd.DataFrame | None, harm: pd.DataFrame | None
) -> str:
    """Evaluations to target, the task-level comparison and the no-harm tests."""
    parts = []
    to_target = runs.groupby("method")["evals_to_target"]
    lines = [
        "| method | median evaluations to target | runs that reached it |",
        "|---|---|---|",
    ]
    for method in [m for m in ALL_METHODS if m in to_target.groups]:
        values = to_target.get_group(method)
        reached = int(values.notna().sum())
        median = values.fillna(np.inf).median()  # unreached runs count as never
        cell = f"{median:.0f}" if np.isfinite(median) else f"> {int(runs['evaluations'].max())}"
        lines.append(f"| {method} | {cell} | {reached}/{len(values)} |")
    parts.append("\n".join(lines))
    if comparison is not None and len(comparison):
        parts.append(_comparison_markdown(comparison))
    if harm is not None and len(harm):
        parts.append(_harm_markdown(harm))
    return "\n" + "\n\n".join(parts) + "\n"


def mean_regret(table: pd.DataFrame) -> pd.DataFrame:
    """Mean normalised regret, methods as rows and budgets as columns (NaN runs skipped)."""
    pivot = table.pivot_table(
        index="method",
        columns="budget_ffe",
        values="normalized_regret",
        aggfunc="mean",
        dropna=False,
    )
    order = [m for m in ALL_METHODS if m in pivot.index]
    # Keep budgets where no run had a result yet: the table shows them as n/a.
    return pivot.reindex(index=order, columns=sorted(table["budget_ffe"].unique()))


def markdown_table(table: pd.DataFrame) -> str:
    """The mean-regret table as Markdown (``n/a``: no run had a full-fidelity result)."""
    pivot = mean_regret(table)
    head = ["method", *[f"{b:g} FFE" for b in pivot.columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in pivot.iterrows():
        cells = ["n/a" if not np.isfinite(v) else f"{v:.3f}" for v in row]
        lines.append("| " + " | ".join([str(method), *cells]) + " |")
    n_tasks, n_seeds = table["task"].nunique(), table["seed"].nunique()
    covered = table.groupby("budget_ffe")["has_incumbent"].mean()
    note = (
        f"\nMean normalised regret over {n_tasks} task(s) x {n_seeds} seed(s) "
        "(0 = best of the reference sample, 1 = its median; a run without a "
        "full-fidelity result yet counts as 1). Runs with a full-fidelity result: "
        + ", ".join(f"{100 * v:.0f} % at {b:g} FFE" for b, v in covered.items())
        + ".\n"
    )
    return "\n".join(lines) + "\n" + note


def plot_regret(table: pd.DataFrame, path: Path) -> None:
    """Mean normalised regret against FFE, one line per method (see
    :func:`warmtune.report.plots.regret_figure`, shared with ``warmtune report``)."""
    from warmtune.report.plots import regret_figure, save

    save(regret_figure(mean_regret(table)), path, dpi=100)
