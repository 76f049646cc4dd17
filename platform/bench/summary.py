"""Tables and plots of a benchmark run: mean regret, comparisons, no-harm."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from warmtune.bench.methods import ALL_METHODS

__all__ = ["compare", "markdown_extras", "markdown_table", "mean_regret", "no_harm", "plot_regret"]


def compare(table: pd.DataFrame, method: str) -> pd.DataFrame | None:
    """``method``'s regret minus every other method's, paired over (task, seed), per budget.

    Columns: ``method, other, budget_ffe, mean_difference, ci_low, ci_high, pairs``
    (a 95 % t-interval; negative means ``method`` is better).
    """
    from scipy import stats

    wide = table.pivot_table(
        index=["task", "seed", "budget_ffe"], columns="method", values="normalized_regret"
    )
    if method not in wide.columns:
        return None
    rows = []
    for other in [m for m in ALL_METHODS if m in wide.columns and m != method]:
        diff = (wide[method] - wide[other]).dropna()
        for budget, d in diff.groupby(level="budget_ffe"):
            n = len(d)
            mean = float(d.mean())
            half = (
                float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
                if n > 1
                else math.nan
            )
            rows.append(
                {
                    "method": method,
                    "other": other,
                    "budget_ffe": float(budget),
                    "mean_difference": mean,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                    "pairs": n,
                }
            )
    return pd.DataFrame(rows)


def no_harm(table: pd.DataFrame) -> pd.DataFrame:
    """Per task: bohb-warm's and cold bohb's final regret (mean, seed-to-seed std).

    ``harmed`` is true where bohb-warm's mean is worse than bohb's by more than the
    larger of the two standard deviations (or, with one seed, by any margin).
    """
    final = table[table["budget_ffe"] == table["budget_ffe"].max()]
    final = final[final["method"].isin(["bohb-warm", "bohb"])]
    stats_ = final.groupby(["task", "method"])["normalized_regret"].agg(["mean", "std"]).unstack()
    out = pd.DataFrame(
        {
            "task": stats_.index,
            "warm_mean": stats_[("mean", "bohb-warm")].to_numpy(),
            "warm_std": stats_[("std", "bohb-warm")].to_numpy(),
            "cold_mean": stats_[("mean", "bohb")].to_numpy(),
            "cold_std": stats_[("std", "bohb")].to_numpy(),
        }
    )
    spread = np.fmax(out["warm_std"].fillna(0.0), out["cold_std"].fillna(0.0))
    out["harmed"] = (out["warm_mean"] - out["cold_mean"]) > spread
    return out


def markdown_extras(
    runs: pd.DataFrame, comparison: pd.DataFrame | None, harm: pd.DataFrame | None
) -> str:
    """Incumbent coverage, evaluations to target, the paired comparison and no-harm."""
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
        lines = [
            "| bohb-warm minus | "
            + " | ".join(f"{b:g} FFE" for b in sorted(comparison["budget_ffe"].unique()))
            + " |",
        ]
        lines.append("|---|" + "---|" * comparison["budget_ffe"].nunique())
        for other, group in comparison.groupby("other", sort=False):
            cells = [
                f"{r.mean_difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                for r in group.sort_values("budget_ffe").itertuples()
            ]
            lines.append(f"| {other} | " + " | ".join(cells) + " |")
        parts.append(
            "\n".join(lines)
            + "\n\nPaired differences of normalised regret over (task, seed) with 95 % "
            "t-intervals; negative: bohb-warm is better."
        )
    if harm is not None:
        harmed = harm[harm["harmed"]]
        names = ", ".join(str(t) for t in harmed["task"]) or "none"
        parts.append(
            f"No harm: tasks where bohb-warm's final regret is worse than cold bohb's by "
            f"more than the seed-to-seed spread: {len(harmed)}/{len(harm)} ({names})."
        )
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
    :func:`warmtune.plots.regret_figure`, shared with ``warmtune report``)."""
    from warmtune.plots import regret_figure, save

    save(regret_figure(mean_regret(table)), path, dpi=100)
