"""A job's report: what it shows, read from the job directory (``model``), the
self-contained HTML page (``page``), and the figures, shared with ``warmtune bench``
(``plots``). See docs/reports.md."""

from warmtune.report.model import (
    JobReport,
    WarmStory,
    best_trial_or_none,
    load_report,
    param_importances,
    searcher_state,
    warm_story,
)
from warmtune.report.page import SECTIONS, build_report, render_html, write_report

__all__ = [
    "SECTIONS",
    "JobReport",
    "WarmStory",
    "best_trial_or_none",
    "build_report",
    "load_report",
    "param_importances",
    "render_html",
    "searcher_state",
    "warm_story",
    "write_report",
]
