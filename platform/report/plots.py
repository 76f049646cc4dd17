"""Figures for job reports and benchmark outputs, drawn with matplotlib.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so
nothing here touches global backend state or leaks open figures; :func:`to_svg` turns
a figure into inline SVG for an HTML page (self-contained: text is drawn as paths,
no fonts or scripts are referenced) and :func:`save` writes a PNG or SVG file.

``warmtune report`` (:mod:`warmtune.report`) and ``warmtune bench``'s ``regret.png``
(:func:`warmtune.bench.plot_regret`) both draw through this module, so a job's
best-so-far curve and a benchmark's regret curves share their line styles.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

__all__ = [
    "best_so_far_figure",
    "importance_figure",
    "learning_curves_figure",
    "line_styles",
    "parallel_coordinates_figure",
    "plot_lines",
    "regret_figure",
    "save",
    "to_svg",
    "warm_start_figure",
]

# Lower objective values look better with the reversed map: good trials are yellow.
_CMAP = "viridis"
_TEXT = 9
WALL_LABEL = "wall time since the job started (s)"


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches with constrained layout."""
    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Figure, *, name: str) -> str:
    """The figure as an ``<svg>`` element for inline use in HTML.

    Args:
        fig: the figure.
        name: unique within the page; seeds the SVG's internal ids (clip paths), so
            several figures on one page never share an id and the output is
            reproducible.
    """
    buf = io.StringIO()
    with rc_context({"svg.hashsalt": name, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    # Drop the XML prolog, the DTD reference (a URL) and the RDF metadata block: none
    # of it belongs inside HTML, and the page must not name anything to fetch.
    start = text.index("<svg")
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[start:], flags=re.DOTALL)
    return text


def save(fig: Figure, path: str | Path, *, dpi: int = 100) -> None:
    """Write the figure to ``path``; the format follows the extension (png, svg, pdf)."""
    fig.savefig(path, dpi=dpi, metadata=_metadata(Path(path).suffix))


def _metadata(suffix: str) -> dict[str, Any] | None:
    # Dated metadata makes every rerun a different file; leave the date out.
    if suffix.lower() == ".svg":
        return {"Date": None}
    return None


# ---------------------------------------------------------------------------------------
# Lines: benchmark regret and a job's best-so-far curve
# ---------------------------------------------------------------------------------------
def line_styles(names: Sequence[str], *, highlight: str | None = None) -> dict[str, dict]:
    """Distinct line styles, one per name, in order.

    Twenty colours (tab20's dark shades, then its light ones). ``highlight`` is drawn
    thick and black, and names that start with ``highlight + "-"`` (its ablations)
    dashed, so one method's family stands out in a crowded plot.
    """
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    shades = [*range(0, 20, 2), *range(1, 20, 2)]
    styles: dict[str, dict] = {}
    for i, name in enumerate(names):
        style: dict[str, Any] = {"color": cmap(shades[i % 20]), "marker": "o", "linewidth": 1.5}
        if highlight is not None and name == highlight:
            style.update(color="black", linewidth=2.5)
        elif highlight is not None and name.startswith(f"{highlight}-"):
            style.update(linestyle="--", marker="x")
        styles[name] = style
    return styles


def plot_lines(
    ax: Any,
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    drawstyle: str = "default",
) -> None:
    """One line per named ``(x, y)`` series on ``ax``, labelled for a legend."""
    styles = styles or line_styles(list(series))
    for name, (x, y) in series.items():
        style = dict(styles.get(name, {}))
        ax.plot(
            np.asarray(x, dtype=float),
            np.asarray(y, dtype=float),
            label=name,
            drawstyle=drawstyle,
            **style,
        )


def regret_figure(pivot: pd.DataFrame) -> Figure:
    """Mean normalised regret against FFE, one line per method (the rows of ``pivot``,
    budgets as its columns), ``bohb-warm`` highlighted."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    names = [str(m) for m in pivot.index]
    x = pivot.columns.to_numpy(dtype=float)
    series = {
        name: (x, row.to_numpy(dtype=float))
        for name, (_, row) in zip(names, pivot.iterrows(), strict=True)
    }
    plot_lines(ax, series, styles=line_styles(names, highlight="bohb-warm"))
    ax.set_xlabel("full-fidelity equivalents (FFE)")
    ax.set_ylabel("mean normalised regret")
    ax.set_xscale("log")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _running_best(values: np.ndarray, mode: str) -> np.ndarray:
    """Best value so far at each position, NaN until the first finite value."""
    v = np.where(np.isfinite(values), values, np.inf if mode == "min" else -np.inf)
    best = np.minimum.accumulate(v) if mode == "min" else np.maximum.accumulate(v)
    return np.where(np.isfinite(best), best, np.nan)


def best_so_far_figure(
    rows: pd.DataFrame,
    *,
    metric: str,
    mode: str,
    start: float | None = None,
    max_iterations: int | None = None,
) -> Figure:
    """The best objective so far against wall time and against budget spent.

    Args:
        rows: result rows (``timestamp``, ``training_iteration``, ``trial_id`` and the
            metric); each row is one training iteration of one trial.
        metric: the objective column.
        mode: ``"min"`` or ``"max"``.
        start: unix time the wall-time axis counts from (default: the first result).
        max_iterations: the full budget of one trial; when given, the budget axis
            also shows full-fidelity equivalents (iterations / max_iterations).
    """
    order = rows.sort_values(["timestamp", "trial_id", "training_iteration"], kind="stable")
    values = pd.to_numeric(order[metric], errors="coerce").to_numpy(dtype=float)
    best = _running_best(values, mode)
    wall = order["timestamp"].to_numpy(dtype=float)
    wall = wall - (np.nanmin(wall) if start is None else start)
    spent = np.arange(1, len(order) + 1, dtype=float)  # one row is one training iteration
    fig = new_figure(10, 3.6)
    left, right = fig.subplots(1, 2, sharey=True)
    style = {"job": {"color": "black", "linewidth": 2}}
    plot_lines(left, {"job": (wall, best)}, styles=style, drawstyle="steps-post")
    plot_lines(right, {"job": (spent, best)}, styles=style, drawstyle="steps-post")
    for ax in (left, right):
        ax.scatter(
            wall if ax is left else spent, values, s=6, color="0.6", zorder=1, label="results"
        )
        ax.grid(True, alpha=0.3)
    left.set_xlabel(WALL_LABEL)
    left.set_ylabel(f"best {metric} so far ({mode})")
    right.set_xlabel("training iterations spent, all trials")
    if max_iterations:
        top = right.secondary_xaxis(
            "top", functions=(lambda x: x / max_iterations, lambda f: f * max_iterations)
        )
        top.set_xlabel("full-fidelity equivalents")
    _fit_y(left, values, keep=best)
    if (values > left.get_ylim()[1]).any():
        left.text(
            0.99,
            0.98,
            "results above the range are off the chart",
            transform=left.transAxes,
            ha="right",
            va="top",
            fontsize=_TEXT - 1,
            color="0.4",
        )
    return fig


def _fit_y(ax: Any, values: np.ndarray, *, keep: np.ndarray | None = None) -> None:
    """Y range for ``values`` that a diverged trial (a loss of 1e14) cannot flatten: up
    to their 95th percentile, or further if ``keep`` (what must show) reaches higher.
    Log scale when positive values span more than two decades in that range."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return
    must = keep[np.isfinite(keep)] if keep is not None else finite[:0]
    low = float(min(finite.min(), must.min() if len(must) else np.inf))
    high = float(max(np.quantile(finite, 0.95), must.max() if len(must) else -np.inf))
    if low > 0 and high / low > 100:
        ax.set_yscale("log")
        ax.set_ylim(low / 1.3, high * 1.3)
        return
    pad = 0.05 * (high - low) if high > low else max(abs(high), 1.0) * 0.05
    ax.set_ylim(low - pad, high + pad)


# ---------------------------------------------------------------------------------------
# Trials: learning curves and configurations
# ---------------------------------------------------------------------------------------
def _value_norm(values: np.ndarray, mode: str) -> tuple[Normalize, str]:
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    # Good trials bright (yellow) in both modes.
    return Normalize(low, high), (f"{_CMAP}_r" if mode == "min" else _CMAP)


def learning_curves_figure(
    rows: pd.DataFrame, *, metric: str, mode: str, best_trial: str | None = None
) -> Figure:
    """Each trial's metric against its training iteration, coloured by the trial's last
    value; the best trial in black."""
    from matplotlib import colormaps

    fig = new_figure(10, 4)
    ax = fig.add_subplot()
    curves, finals, ids = [], [], []
    for trial_id, trial in rows.groupby("trial_id", sort=True):
        trial = trial.sort_values("training_iteration", kind="stable")
        x = trial["training_iteration"].to_numpy(dtype=float)
        y = pd.to_numeric(trial[metric], errors="coerce").to_numpy(dtype=float)
        curves.append(np.column_stack([x, y]))
        finals.append(y[-1] if len(y) else np.nan)
        ids.append(str(trial_id))
    final = np.asarray(finals, dtype=float)
    norm, cmap_name = _value_norm(final, mode)
    cmap = colormaps[cmap_name]
    # Worst first, so the good curves are drawn on top.
    order = np.argsort(np.where(np.isfinite(final), final, np.inf if mode == "min" else -np.inf))
    if mode == "min":
        order = order[::-1]
    colours = [cmap(norm(final[i])) if np.isfinite(final[i]) else "0.7" for i in order]
    ax.add_collection(
        LineCollection([curves[i] for i in order], colors=colours, linewidths=1.2, alpha=0.85)
    )
    for i, colour in zip(order, colours, strict=True):
        if len(curves[i]) == 1:  # a single point draws no line segment
            ax.scatter(curves[i][:, 0], curves[i][:, 1], s=10, color=colour)
    if best_trial is not None and best_trial in ids:
        c = curves[ids.index(best_trial)]
        ax.plot(c[:, 0], c[:, 1], color="black", linewidth=2.2, marker="o", markersize=3)
        ax.plot([], [], color="black", linewidth=2.2, label=f"best trial {best_trial}")
        ax.legend(loc="best", frameon=False)
    ax.autoscale_view()
    _fit_y(
        ax,
        np.concatenate([c[:, 1] for c in curves]) if curves else np.array([]),
        keep=curves[ids.index(best_trial)][:, 1] if best_trial in ids else None,
    )
    ax.set_xlabel("training iteration")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    fig.colorbar(_mappable(norm, cmap_name), ax=ax, label=f"last {metric} of the trial")
    return fig


def _mappable(norm: Normalize, cmap_name: str) -> Any:
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap_name)


def parallel_coordinates_figure(
    configs: Sequence[Mapping[str, Any]],
    values: Sequence[float],
    *,
    space: Any,
    metric: str,
    mode: str,
) -> Figure:
    """One line per configuration across one vertical axis per searched parameter and a
    last axis for the objective, coloured by the objective.

    Axes follow the parameter's scale: a log range is drawn in log space, choices are
    spread evenly in the order the space lists them. An inactive conditional parameter
    breaks the line there.

    Args:
        configs: one configuration per trial.
        values: the objective of each configuration (NaN: not reported).
        space: the job's :class:`~warmtune.space.SearchSpace`.
        metric: the objective's name.
        mode: ``"min"`` or ``"max"``.
    """
    from matplotlib import colormaps

    names = list(space)
    y = np.asarray(values, dtype=float)
    columns = [[_unit(space[n], c.get(n)) for c in configs] for n in names]
    finite = y[np.isfinite(y)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    columns.append(list((y - lo) / span) if hi > lo else [0.5] * len(y))
    data = np.asarray(columns, dtype=float).T.reshape(len(configs), len(names) + 1)
    norm, cmap_name = _value_norm(y, mode)
    cmap = colormaps[cmap_name]
    fig = new_figure(max(6.0, 1.35 * (len(names) + 1) + 2), 4.2)
    ax = fig.add_subplot()
    xs = np.arange(len(names) + 1, dtype=float)
    order = np.argsort(np.where(np.isfinite(y), y, np.inf if mode == "min" else -np.inf))
    if mode == "min":
        order = order[::-1]
    lines = [np.column_stack([xs, data[i]]) for i in order]
    colours = [cmap(norm(y[i])) if np.isfinite(y[i]) else "0.7" for i in order]
    ax.add_collection(LineCollection(lines, colors=colours, linewidths=1.3, alpha=0.8))
    for x in xs:
        ax.axvline(x, color="0.3", linewidth=0.8, zorder=0)
    for x, name in zip(xs[:-1], names, strict=True):
        for pos, label in _axis_labels(space[name]):
            ax.text(x + 0.04, pos, label, fontsize=_TEXT - 1, va="center", ha="left")
    ax.text(xs[-1] + 0.04, 0.0, f"{lo:.4g}", fontsize=_TEXT - 1, va="center")
    ax.text(xs[-1] + 0.04, 1.0, f"{hi:.4g}", fontsize=_TEXT - 1, va="center")
    ax.set_xticks(xs, [*names, metric], fontsize=_TEXT, rotation=20)
    ax.set_yticks([])
    ax.set_xlim(-0.2, xs[-1] + 0.6)
    ax.set_ylim(-0.06, 1.06)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(_mappable(norm, cmap_name), ax=ax, label=metric, pad=0.01)
    return fig


def _unit(param: Any, value: Any) -> float:
    """A parameter value on its axis, in [0, 1]; NaN when absent or not in the space."""
    if value is None or not param.contains(value):
        return math.nan
    if param.type == "categorical":
        k = len(param.choices)
        return 0.5 if k == 1 else param.index(value) / (k - 1)
    low, high, v = float(param.low), float(param.high), float(value)
    if high <= low:
        return 0.5
    if param.log:
        return (math.log(v) - math.log(low)) / (math.log(high) - math.log(low))
    return (v - low) / (high - low)


def _axis_labels(param: Any) -> list[tuple[float, str]]:
    if param.type == "categorical":
        k = len(param.choices)
        return [(0.5 if k == 1 else i / (k - 1), str(c)) for i, c in enumerate(param.choices)]
    return [(0.0, f"{param.low:.4g}"), (1.0, f"{param.high:.4g}" + (" (log)" if param.log else ""))]


# ---------------------------------------------------------------------------------------
# Importance and warm start
# ---------------------------------------------------------------------------------------
def importance_figure(importances: Mapping[str, float]) -> Figure:
    """Horizontal bars, most important parameter on top."""
    names = list(importances)
    fig = new_figure(7, 0.45 * len(names) + 1.2)
    ax = fig.add_subplot()
    pos = np.arange(len(names))[::-1]
    ax.barh(pos, [importances[n] for n in names], color="#3b6ea8")
    ax.set_yticks(pos, names)
    ax.set_xlabel("importance (normalised to sum 1)")
    ax.set_xlim(0, max(1e-9, max(importances.values(), default=0.0)) * 1.15)
    for p, n in zip(pos, names, strict=True):
        ax.text(importances[n], p, f" {importances[n]:.2f}", va="center", fontsize=_TEXT)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def warm_start_figure(
    log: Sequence[Mapping[str, Any]], *, start: float, max_tasks: int = 8
) -> Figure:
    """The past tasks' weights and the past's share against wall time.

    Args:
        log: the warm start's weight records in time order, each with ``time`` (unix
            s), ``n_own``, ``past_share`` and ``past`` (task name -> weight).
        start: unix time the wall-time axis counts from.
        max_tasks: show this many tasks (by largest weight); the rest are summed as
            "other tasks".
    """
    times = np.array([float(e["time"]) - start for e in log])
    tasks: dict[str, float] = {}
    for e in log:
        for name, w in e["past"].items():
            tasks[name] = max(tasks.get(name, 0.0), float(w))
    ranked = sorted(tasks, key=lambda n: (-tasks[n], n))
    shown, rest = ranked[:max_tasks], ranked[max_tasks:]
    series = {n: (times, np.array([float(e["past"].get(n, 0.0)) for e in log])) for n in shown}
    if rest:
        series[f"{len(rest)} other tasks"] = (
            times,
            np.array([sum(float(e["past"].get(n, 0.0)) for n in rest) for e in log]),
        )
    fig = new_figure(10, 3.6)
    left, right = fig.subplots(1, 2)
    plot_lines(left, series, drawstyle="steps-post")
    left.set_xlabel(WALL_LABEL)
    left.set_ylabel("task weight")
    left.set_ylim(-0.03, 1.03)
    left.legend(fontsize=_TEXT - 1, frameon=False, loc="best")
    share = np.array([float(e["past_share"]) for e in log])
    n_own = np.array([int(e["n_own"]) for e in log])
    plot_lines(
        right,
        {"weight of the past": (times, share)},
        styles={"weight of the past": {"color": "#b04a2e", "marker": "o", "linewidth": 1.8}},
        drawstyle="steps-post",
    )
    for t, s, n in zip(times, share, n_own, strict=True):
        right.annotate(f"{n}", (t, s), textcoords="offset points", xytext=(3, 4), fontsize=7)
    right.set_xlabel(WALL_LABEL)
    right.set_ylabel("share of the past (vs own model, chance)")
    right.set_ylim(-0.03, 1.03)
    right.set_title("labels: own observations behind the weights", fontsize=_TEXT)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    return fig
