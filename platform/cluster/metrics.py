"""warmtune's own Ray metrics: trials by state, best objective, suggest latency, warm start.

The metrics are Ray application metrics (``ray.util.metrics``), recorded in the
Tune driver. Ray exports them on the metrics export port of the node the driver
runs on, named with a ``ray_`` prefix and with Ray's own labels added
(``Component``, ``NodeAddress``, ``SessionName``, ``Version``, ``WorkerId``)::

    ray_warmtune_trials{job="quickstart",state="running",...} 2.0
    ray_warmtune_best_objective{job="quickstart",metric="loss",...} 0.107
    ray_warmtune_suggest_latency_seconds_bucket{job="quickstart",searcher="bohb",le="0.01",...} 7.0
    ray_warmtune_kb_top_weight{job="quickstart",task="sinusoid-5shot",...} 0.61

Prometheus attaches its scrape-job name as the label ``job`` too; unless the scrape
config sets ``honor_labels: true`` (Ray's generated ``prometheus.yml`` does not),
the warmtune job name is stored as ``exported_job``.

Recording is cheap (a dict update in the driver; Ray ships the values every few
seconds) and never raises: without a Ray connection the values go nowhere, and if
Ray's metrics cannot be created or recorded, warmtune logs once and carries on.

Ray drops a gauge series that is not set again within two metric report intervals
(``RAY_metrics_report_interval_ms``, 10 s by default), so that the gauges of a
finished job disappear. :func:`refresh_gauges` sets a job's gauges again to their
last values; :class:`MetricsCallback` calls it while the job runs.

Lifecycle of :class:`MetricsCallback` (Ray Tune calls it in the driver, like
:class:`~warmtune.recorder.ResultRecorder`):

- ``on_trial_result``: the best objective so far, when it improves.
- ``on_step_end``: trial counts by state, and the job's other gauges again
  (:func:`refresh_gauges`), at most every ``interval_s`` seconds.
- ``on_trial_complete`` / ``on_trial_error`` / ``on_experiment_end``: counts at once.
- ``get_state`` / ``set_state``: the best value survives ``Tuner.restore``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback

__all__ = [
    "JobMetrics",
    "BEST_OBJECTIVE",
    "KB_TOP_WEIGHT",
    "SUGGEST_LATENCY",
    "SUGGEST_LATENCY_BOUNDARIES",
    "TRIAL_STATES",
    "TRIALS",
    "MetricsCallback",
    "count_states",
    "record_best_objective",
    "record_kb_top_weight",
    "record_suggest_latency",
    "record_trial_states",
    "refresh_gauges",
]

logger = logging.getLogger(__name__)

#: Metric names as registered with Ray; Prometheus sees them with a ``ray_`` prefix.
TRIALS = "warmtune_trials"
BEST_OBJECTIVE = "warmtune_best_objective"
SUGGEST_LATENCY = "warmtune_suggest_latency_seconds"
KB_TOP_WEIGHT = "warmtune_kb_top_weight"

#: Seconds: 1 ms to 10 s in 1-2.5-5 steps. A random draw takes well under 1 ms,
#: a BOHB model fit on thousands of results a few seconds.
SUGGEST_LATENCY_BOUNDARIES = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
]

#: Tune's trial states, as the ``state`` label spells them. Every state is set on
#: every update (0 included), so a gauge never keeps a count that is gone.
TRIAL_STATES = ("pending", "running", "paused", "terminated", "error")


class _Metrics:
    """The four Ray metric objects of this process (made on first use)."""

    def __init__(self) -> None:
        from ray.util.metrics import Gauge, Histogram

        self.trials = Gauge(
            TRIALS,
            description="warmtune trials of a job, by Ray Tune state.",
            tag_keys=("job", "state"),
        )
        self.best_objective = Gauge(
            BEST_OBJECTIVE,
            description="Best value of the job's objective metric so far (in its own sign).",
            tag_keys=("job", "metric"),
        )
        self.suggest_latency = Histogram(
            SUGGEST_LATENCY,
            description="Seconds a warmtune searcher takes to suggest a trial (ask).",
            boundaries=SUGGEST_LATENCY_BOUNDARIES,
            tag_keys=("job", "searcher"),
        )
        self.kb_top_weight = Gauge(
            KB_TOP_WEIGHT,
            description="Knowledge-base weight of the past task most similar to the job's "
            "task (the weight `warmtune kb similar` shows); 0 once another task leads.",
            tag_keys=("job", "task"),
        )


_state: dict[str, Any] = {"metrics": None, "broken": False}
# job -> (gauge attribute, tags as a sorted tuple) -> last value, for refresh_gauges.
_last: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}


def _metrics() -> _Metrics | None:
    if _state["broken"]:
        return None
    if _state["metrics"] is None:
        try:
            _state["metrics"] = _Metrics()
        except Exception as exc:  # no usable ray.util.metrics: record nothing
            _broken(exc)
            return None
    return _state["metrics"]


def _broken(exc: BaseException) -> None:
    # A run must never fail because of its metrics: say so once, then stay quiet.
    if not _state["broken"]:
        logger.warning("warmtune metrics are off in this process: %s", exc)
    _state["broken"] = True


def _set(gauge: str, value: float, tags: dict[str, str]) -> None:
    """Set one of the gauges and remember the value for :func:`refresh_gauges`."""
    metrics = _metrics()
    if metrics is None:
        return
    _last.setdefault(tags["job"], {})[(gauge, tuple(sorted(tags.items())))] = value
    try:
        getattr(metrics, gauge).set(value, tags=tags)
    except Exception as exc:
        _broken(exc)


def refresh_gauges(job: str) -> None:
    """Set ``job``'s gauges again to their last values, so that Ray keeps exporting them."""
    for (gauge, tags), value in list(_last.get(job, {}).items()):
        _set(gauge, value, dict(tags))


def record_trial_states(job: str, counts: Mapping[str, int]) -> None:
    """Set ``warmtune_trials`` for every state of ``job`` (states absent from ``counts``: 0)."""
    for state in TRIAL_STATES:
        _set("trials", float(counts.get(state, 0)), {"job": job, "state": state})


def record_best_objective(job: str, metric: str, value: float) -> None:
    """Set ``warmtune_best_objective`` of ``job`` and its objective ``metric``."""
    if math.isfinite(value):
        _set("best_objective", float(value), {"job": job, "metric": metric})


@dataclass(frozen=True)
class JobMetrics:
    """The metrics hook of one job's searcher adapter
    (:class:`warmtune.searchers.ray_adapter.TuneSearcher`'s ``metrics``): what it
    measures, recorded under the job's name."""

    job: str

    def suggest_latency(self, searcher: str, seconds: float) -> None:
        record_suggest_latency(self.job, searcher, seconds)

    def kb_top_weight(self, task: str, weight: float, previous: str | None) -> None:
        record_kb_top_weight(self.job, task, weight, previous=previous)


def record_suggest_latency(job: str, searcher: str, seconds: float) -> None:
    """Add one ``ask`` duration to ``warmtune_suggest_latency_seconds``."""
    metrics = _metrics()
    if metrics is None:
        return
    try:
        metrics.suggest_latency.observe(
            max(float(seconds), 0.0), tags={"job": job, "searcher": searcher or "unknown"}
        )
    except Exception as exc:
        _broken(exc)


def record_kb_top_weight(
    job: str, task: str, weight: float, *, previous: str | None = None
) -> None:
    """Set ``warmtune_kb_top_weight`` of ``job``'s most similar past ``task``.

    Args:
        job: the job name.
        task: the past task with the largest weight now.
        weight: its weight, in ``[0, 1]``.
        previous: the task that led before, if another one: its series drops to 0,
            so that one series per job is non-zero.
    """
    if previous is not None and previous != task:
        _set("kb_top_weight", 0.0, {"job": job, "task": previous})
    _set("kb_top_weight", float(weight), {"job": job, "task": task})


def count_states(statuses: Iterable[str]) -> dict[str, int]:
    """Trials per state label from Tune statuses (``"RUNNING"``, ...); all states present."""
    counts = dict.fromkeys(TRIAL_STATES, 0)
    for status in statuses:
        key = str(status).lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


class MetricsCallback(Callback):
    """Ray Tune callback that records a job's trial states and best objective.

    Args:
        job: the job name (the ``job`` label).
        metric: the objective metric (the ``metric`` label).
        mode: ``"min"`` or ``"max"``.
        interval_s: at most one trial-state update per this many seconds while
            the search runs (Tune's loop steps far more often).

    Raises:
        ValueError: an empty job or metric, a mode other than min/max, or a
            negative interval.
    """

    def __init__(self, *, job: str, metric: str, mode: str, interval_s: float = 1.0) -> None:
        if not isinstance(job, str) or not job:
            raise ValueError(f"job must be a non-empty string naming the search, got {job!r}")
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must name the objective metric, got {metric!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not interval_s >= 0:
            raise ValueError(f"interval_s must be >= 0 seconds, got {interval_s}; e.g. 1.0")
        self.job = job
        self.metric = metric
        self.mode = mode
        self.interval_s = float(interval_s)
        self.best: float | None = None
        self._last_states = -math.inf

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """Records the objective when it beats the best so far."""
        value = result.get(self.metric)
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        if not math.isfinite(value):
            return
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
            record_best_objective(self.job, self.metric, value)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Records trial counts by state and refreshes the job's other gauges, at most
        every ``interval_s``."""
        if time.monotonic() - self._last_states >= self.interval_s:
            self._record_states(trials)
            refresh_gauges(self.job)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Records trial counts by state."""
        self._record_states(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Records trial counts by state."""
        self._record_states(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Records the final trial counts by state."""
        self._record_states(trials)

    def get_state(self) -> dict[str, Any]:
        """The best value so far (Tune checkpoints it with the experiment)."""
        return {"job": self.job, "metric": self.metric, "best": self.best}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues the best value of a restored experiment of the same job and metric."""
        if (state.get("job"), state.get("metric")) == (self.job, self.metric):
            self.best = state.get("best")
            if self.best is not None:
                record_best_objective(self.job, self.metric, self.best)

    def _record_states(self, trials: Iterable[Any]) -> None:
        self._last_states = time.monotonic()
        record_trial_states(self.job, count_states(t.status for t in trials))
