"""A job's report as one self-contained HTML file (``warmtune report JOB -o FILE``).

The page holds inline SVG figures drawn by :mod:`warmtune.report.plots` and a little CSS:
no scripts, fonts or images are fetched when it is viewed. It reads whatever the
job's result store holds at the time, so it works on a running job (generate it
again to refresh) and on a job without results yet. Sections, in order (each is a
``<section id=...>``):

- ``summary``: the job, its objective, trials and rows so far;
- ``best-so-far``: the best objective so far against wall time and budget spent;
- ``learning-curves``: every trial's objective per training iteration;
- ``configurations``: parallel coordinates of the trials' configurations, coloured
  by objective;
- ``importance``: hyperparameter importance, Optuna's PED-ANOVA
  (:func:`optuna.importance.get_param_importances`) on an in-memory study built
  from each trial's last result;
- ``warm-start``: which past tasks the job learnt from and their weights over time
  (from the searcher state that the Ray adapter saves in the experiment directory,
  see :class:`~warmtune.searchers.ray_adapter.TuneSearcher`), or why there were none;
- ``top-trials``: the best trials;
- ``best-config``: the export document (what ``warmtune export`` writes).
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from warmtune.jobdir import JobDir
from warmtune.report.model import (
    JobReport,
    load_report,
    param_importances,
)
from warmtune.store import configs

__all__ = ["SECTIONS", "build_report", "render_html", "write_report"]

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("best-so-far", "Best objective so far"),
    ("learning-curves", "Learning curves"),
    ("configurations", "Configurations"),
    ("importance", "Hyperparameter importance"),
    ("warm-start", "Warm start"),
    ("top-trials", "Top trials"),
    ("best-config", "Best configuration"),
)


# ---------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------
_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
  max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.sub { color: #666; margin-top: 0; }
.note { color: #555; font-size: 0.92em; max-width: 60em; }
.empty { background: #fff6e0; border-left: 4px solid #e0a800; padding: 0.6em 1em; }
figure { margin: 0.5em 0; }
figure svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.25em 0.7em; text-align: left; }
th { background: #f5f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f5f5f7; padding: 0.8em 1em; overflow-x: auto; font-size: 0.88em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1.2em; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _p(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{_e(text)}</p>'


def _figure(fig: Any, name: str, caption: str) -> str:
    from warmtune.report.plots import to_svg

    svg = to_svg(fig, name=name)
    return f'<figure>{svg}<figcaption class="note">{_e(caption)}</figcaption></figure>'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(f'<td class="num">{v:.6g}</td>')
            elif isinstance(v, int) and not isinstance(v, bool):
                cells.append(f'<td class="num">{v}</td>')
            else:
                cells.append(f"<td>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _when(ts: float | None) -> str:
    if ts is None:
        return "n/a"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _summary(r: JobReport) -> str:
    spec = r.spec
    rows = r.rows
    # Trials with results, and those that failed before their first report.
    n_trials = len(r.trial_states())
    facts = [
        ("task", spec.task.name),
        ("trainable", spec.trainable.name),
        ("objective", f"{spec.objective.metric} ({spec.objective.mode})"),
        (
            "searcher",
            spec.searcher.name + (f" {spec.searcher.options}" if spec.searcher.options else ""),
        ),
        ("scheduler", spec.scheduler.name),
        (
            "budget",
            ", ".join(
                part
                for part in (
                    f"{spec.budget.trials} trials" if spec.budget.trials else "",
                    f"{spec.budget.time:g} s" if spec.budget.time else "",
                    f"{spec.budget.max_iterations} iterations per trial",
                )
                if part
            ),
        ),
        ("results", r.jobdir.results),
    ]
    parts = ['<dl class="facts">']
    parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts]
    if len(rows):
        ts = pd.to_numeric(rows.get("timestamp"), errors="coerce").dropna()
        reached = pd.to_numeric(rows.groupby("trial_id")["training_iteration"].max())
        full = int((reached >= spec.budget.max_iterations).sum())
        parts.append(
            f"<dt>trials</dt><dd>{n_trials} ({full} reached the full budget of "
            f"{spec.budget.max_iterations} iterations)</dd>"
        )
        counts = r.trial_states().value_counts()
        ended = ", ".join(
            f"{int(counts[state])} {state}"
            for state in ("finished", "stopped early", "failed", "not ended")
            if state in counts
        )
        parts.append(f"<dt>how trials ended</dt><dd>{_e(ended)}</dd>")
        parts.append(f"<dt>result rows</dt><dd>{len(rows)}</dd>")
        parts.append(
            f"<dt>results from</dt><dd>{_e(_when(ts.min() if len(ts) else None))} to "
            f"{_e(_when(ts.max() if len(ts) else None))}</dd>"
        )
        if r.export is not None:
            obj = r.export["objective"]
            parts.append(
                f"<dt>best so far</dt><dd>{_e(obj['metric'])} = {obj['value']:.6g} "
                f"(trial {_e(r.export['trial_id'])}, iteration "
                f"{r.export['budget']['training_iteration']})</dd>"
            )
    parts.append("</dl>")
    if rows.empty:
        parts.append(
            _p(
                f"No results yet: the result store at {r.jobdir.results} is empty. Trials add "
                "rows as they report; generate the report again once they have.",
                "empty",
            )
        )
    else:
        parts.append(
            _p(
                "The report shows what the result store held when it was generated; if the "
                "job is still running, generate it again to see more."
            )
        )
    return "".join(parts)


def _no_results(r: JobReport) -> str:
    return _p("No results with the objective yet.", "empty")


def _best_so_far(r: JobReport) -> str:
    from warmtune.report.plots import best_so_far_figure

    scored = r.scored_rows()
    if scored.empty:
        return _no_results(r)
    fig = best_so_far_figure(
        scored,
        metric=r.metric,
        mode=r.mode,
        start=r.start_time(),
        max_iterations=r.spec.budget.max_iterations,
    )
    return _figure(
        fig,
        "best-so-far",
        f"Black: the best {r.metric} reported so far; grey: every reported result. Left "
        "against wall time, right against training iterations spent by all trials together "
        f"(one full-fidelity equivalent is {r.spec.budget.max_iterations} iterations).",
    )


def _learning_curves(r: JobReport) -> str:
    from warmtune.report.plots import learning_curves_figure

    scored = r.scored_rows()
    if scored.empty:
        return _no_results(r)
    best = r.export["trial_id"] if r.export else None
    fig = learning_curves_figure(scored, metric=r.metric, mode=r.mode, best_trial=best)
    n = scored["trial_id"].nunique()
    return _figure(
        fig,
        "learning-curves",
        f"{n} trial(s), each coloured by its last {r.metric} (bright: better); a curve "
        "that ends early was stopped by the scheduler, paused, or is still running.",
    )


def _configurations(r: JobReport) -> str:
    from warmtune.report.plots import parallel_coordinates_figure

    last = r.last_rows()
    if last.empty:
        return _no_results(r)
    cfgs = [c or {} for c in configs(last)]
    fig = parallel_coordinates_figure(
        cfgs,
        pd.to_numeric(last[r.metric], errors="coerce").to_numpy(dtype=float),
        space=r.spec.search_space,
        metric=r.metric,
        mode=r.mode,
    )
    return _figure(
        fig,
        "configurations",
        "One line per trial through its configuration and, on the last axis, its last "
        f"{r.metric}; colour by that value (bright: better). Log ranges are drawn on a log "
        "scale; a gap is a conditional parameter that was inactive.",
    )


def _importance(r: JobReport) -> str:
    from warmtune.report.plots import importance_figure

    last = r.last_rows()
    if last.empty:
        return _no_results(r)
    importances, note = param_importances(last, spec=r.spec)
    if importances is None:
        return _p(note, "empty")
    rows = [[name, value] for name, value in importances.items()]
    return _figure(importance_figure(importances), "importance", note) + _table(
        ["parameter", "importance"], rows
    )


def _warm_start(r: JobReport) -> str:
    from warmtune.report.plots import warm_start_figure

    warm = r.warm
    if warm.status != "warm":
        return _p(warm.message, "empty")
    log = warm.log
    first, last = log[0], log[-1]
    parts = [_p(warm.message)]
    start = r.start_time() or float(first["time"])
    parts.append(
        _figure(
            warm_start_figure(log, start=start),
            "warm-start",
            "Left: each past task's weight (they sum to 1 over the past tasks, and are all 0 "
            "while no past task agrees with this one). Right: the share of the weighted past "
            "against the job's own observations, alpha / (alpha + n_own), where alpha is "
            "what the past is worth in own observations. BOHB also scales alpha by how well "
            "the past's good region ranks the job's own results, which is not recorded here.",
        )
    )
    tasks = sorted(first["past"], key=lambda t: (-float(last["past"].get(t, 0.0)), t))
    # The latest record that says why (prior and measured concordance), per task.
    why: dict[str, list[Any]] = {}
    for e in log:
        why.update(e.get("why") or {})

    def _why(t: str, i: int) -> Any:
        value = why.get(t, [None, None, 0])[i]
        return "" if value is None else value

    parts.append(
        _table(
            [
                "past task",
                "weight at start",
                "weight now",
                "largest weight",
                "prior concordance",
                "measured",
                "pairs",
            ],
            [
                [
                    t,
                    float(first["past"].get(t, 0.0)),
                    float(last["past"].get(t, 0.0)),
                    max(float(e["past"].get(t, 0.0)) for e in log),
                    _why(t, 0),
                    _why(t, 1),
                    _why(t, 2),
                ]
                for t in tasks
            ],
        )
    )
    parts.append(
        _table(
            ["time since start (s)", "own observations", "the past", "own model", "chance"],
            [
                [
                    float(e["time"]) - start,
                    int(e["n_own"]),
                    float(e["past_share"]),
                    float(e["own"]),
                    float(e["random"]),
                ]
                for e in log
            ],
        )
    )
    if warm.design:
        by_config: dict[str, str] = {}
        if not r.rows.empty:
            first_rows = r.rows.sort_values("timestamp").drop_duplicates("trial_id")
            for trial_id, config in zip(first_rows["trial_id"], configs(first_rows), strict=True):
                if config is not None:
                    by_config.setdefault(json.dumps(config, sort_keys=True), str(trial_id))
        parts.append(
            _p(
                f"Warm design: {len(warm.design)} configuration(s) of the past tasks' best "
                "ones, chosen one at a time with the weights of the moment, run straight at "
                "the full budget while they kept winning:"
            )
        )
        names = list(r.spec.search_space)
        parts.append(
            _table(
                ["#", "trial", *names],
                [
                    [
                        i + 1,
                        by_config.get(json.dumps(c, sort_keys=True), "not started"),
                        *[c.get(n, "") for n in names],
                    ]
                    for i, c in enumerate(warm.design)
                ],
            )
        )
    return "".join(parts)


def _top_trials(r: JobReport, k: int = 15) -> str:
    last = r.last_rows()
    if last.empty:
        return _no_results(r)
    names = list(r.spec.search_space)
    states = r.trial_states()
    rows = []
    for (_, row), config in zip(last.head(k).iterrows(), configs(last.head(k)), strict=True):
        config = config or {}
        rows.append(
            [
                str(row["trial_id"]),
                float(row[r.metric]),
                int(row["training_iteration"]),
                states.get(str(row["trial_id"]), "not ended"),
                *[config.get(n, "") for n in names],
            ]
        )
    note = (
        f"The best {min(k, len(last))} of {len(last)} trials by their last {r.metric}. "
        "Ended: finished the full budget, stopped early by the scheduler, failed, or not "
        "ended (running, or the job was stopped before it ended)."
    )
    return _p(note) + _table(["trial", r.metric, "iteration", "ended", *names], rows)


def _best_config(r: JobReport) -> str:
    if r.export is None:
        return _no_results(r)
    text = yaml.safe_dump(r.export, sort_keys=False)
    return (
        _p(
            "What `warmtune export` writes for this job; save it as best.yaml and rerun it "
            "with `warmtune run JOB.yaml --config best.yaml`."
        )
        + f"<pre>{_e(text)}</pre>"
    )


def render_html(report: JobReport) -> str:
    """The report page."""
    builders = {
        "summary": _summary,
        "best-so-far": _best_so_far,
        "learning-curves": _learning_curves,
        "configurations": _configurations,
        "importance": _importance,
        "warm-start": _warm_start,
        "top-trials": _top_trials,
        "best-config": _best_config,
    }
    body = []
    for key, title in SECTIONS:
        body.append(f'<section id="{key}"><h2>{_e(title)}</h2>{builders[key](report)}</section>')
    title = f"warmtune report: {report.spec.name}"
    generated = report.generated.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="sub">generated {_e(generated)} from {_e(report.jobdir.root)}</p>'
        + "".join(body)
        + "</body></html>\n"
    )


def build_report(jobdir: JobDir) -> str:
    """The report page of ``jobdir`` as HTML text."""
    return render_html(load_report(jobdir))


def write_report(jobdir: JobDir, path: str | Path) -> JobReport:
    """Write the report of ``jobdir`` to ``path`` and return what it shows."""
    report = load_report(jobdir)
    text = render_html(report)
    Path(path).write_text(text, encoding="utf-8")
    return report
