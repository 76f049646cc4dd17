"""Ray Tune callback that records every reported result row into a :class:`ResultStore`.

Lifecycle (all hooks run in the Tune driver process, one at a time):

- ``on_trial_result``: the result becomes one row (standard columns, the trainable's
  scalar metrics, the config; Ray's bookkeeping keys are dropped) and is buffered.
- The buffer is flushed as one :meth:`ResultStore.append` when it holds ``max_buffer``
  rows or its oldest row is ``flush_interval_s`` old (checked on every result and every
  Tune loop step), and always on ``on_trial_complete``, ``on_trial_error``,
  ``on_experiment_end`` and when Tune checkpoints the experiment (``get_state``), so
  the store is never behind a checkpoint that ``Tuner.restore`` resumes from.
- A Ctrl+C (SIGINT) makes Tune leave its loop, checkpoint and call
  ``on_experiment_end``, so buffered rows are written then too.
- With an ``ends`` store, ``on_trial_complete`` and ``on_trial_error`` also record how
  the trial ended (``TERMINATED`` or ``ERROR``, its last iteration, the error's last
  line), one row per end in a store of their own. The result rows keep the status
  they were reported with (``RUNNING``), and the result store holds exactly what the
  trials reported. A trial that never ended (the job was stopped) has no end row.

On ``Tuner.restore`` pass a new recorder with the same store and job; Tune hands it the
saved state (store path and job name), and a mismatch only warns. Rows of iterations a
resumed trial re-reports are deduplicated by :meth:`ResultStore.read`.
"""

from __future__ import annotations

import logging
import numbers
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from warmtune.store import STANDARD_COLUMNS, ResultStore

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

__all__ = ["ResultRecorder", "result_to_row"]

logger = logging.getLogger(__name__)

# Copied from Ray's result dict as-is (the store's standard columns but those the
# recorder fills itself); everything else must be a reported metric.
_STANDARD_KEYS = tuple(c for c in STANDARD_COLUMNS if c not in ("job", "status", "config_json"))

# Keys Ray adds to every result. timesteps_total / episodes_total are absent here on
# purpose: Ray fills them with None unless the trainable reports them, and a None
# value is dropped anyway, so a real RL counter survives as a metric.
_RAY_BOOKKEEPING = frozenset(
    {
        "config",
        "date",
        "done",
        "experiment_id",
        "experiment_tag",
        "checkpoint_dir_name",
        "should_checkpoint",
        "iterations_since_restore",
        "time_since_restore",
        "time_this_iter_s",
        "timesteps_since_restore",
        "timesteps_this_iter",
        "episodes_this_iter",
        "trainable_name",
        "warmup_time",
        "perf",
    }
)


def _metrics(result: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar metrics of ``result``, nested dicts flattened with ``/`` like Ray does."""
    metrics: dict[str, Any] = {}
    for key, value in result.items():
        key = str(key)
        if not prefix and (
            key in _RAY_BOOKKEEPING or key in _STANDARD_KEYS or key.startswith("__")
        ):
            continue
        name = f"{prefix}{key}"
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            value = value.item()  # numpy / torch scalars
        if isinstance(value, Mapping):
            metrics.update(_metrics(value, f"{name}/"))
        elif isinstance(value, (str, numbers.Real)):  # numbers.Real includes bool
            metrics[name] = value
    return metrics


def result_to_row(
    result: Mapping[str, Any], *, job: str, status: str | None = None
) -> dict[str, Any]:
    """Turn one Ray Tune result dict into a store row.

    Args:
        result: The dict Tune passes to ``Callback.on_trial_result``.
        job: Job name written to the ``job`` column.
        status: Trial status at the time of the result (``RUNNING``, ...), if known.

    Returns:
        A row for :meth:`ResultStore.append`: standard columns, scalar metrics (numbers,
        bools, strings; nested dicts flattened to ``a/b``) and ``config``.
    """
    row: dict[str, Any] = _metrics(result)
    # Standard columns last so a metric cannot shadow them.
    row["job"] = job
    for key in _STANDARD_KEYS:
        if result.get(key) is not None:
            row[key] = result[key]
    # Ray reports whole seconds as an int; one float type keeps files consistent.
    for key in ("timestamp", "time_total_s"):
        if key in row:
            row[key] = float(row[key])
    if status is not None:
        row["status"] = status
    config = result.get("config")
    if isinstance(config, Mapping):
        row["config"] = dict(config)
    return row


class ResultRecorder(Callback):
    """Buffers Tune results and appends them to a :class:`ResultStore`.

    Args:
        store: Where rows go.
        job: Job name stored in every row's ``job`` column.
        flush_interval_s: Write the buffer once its oldest row is this old (seconds).
        max_buffer: Write the buffer once it holds this many rows.
        ends: Where trial ends go (``JobDir.trial_ends``), or ``None`` to skip them.

    Raises:
        ValueError: On a non-store ``store``, an empty ``job``, a negative interval or
            a ``max_buffer`` below 1.
    """

    def __init__(
        self,
        store: ResultStore,
        *,
        job: str,
        flush_interval_s: float = 2.0,
        max_buffer: int = 200,
        ends: ResultStore | None = None,
    ) -> None:
        if not isinstance(store, ResultStore):
            raise ValueError(
                f"store must be a ResultStore, got {type(store).__name__}; "
                "wrap the path: ResultStore(path)"
            )
        if ends is not None and not isinstance(ends, ResultStore):
            raise ValueError(
                f"ends must be a ResultStore or None, got {type(ends).__name__}; "
                "wrap the path: ResultStore(path)"
            )
        if not isinstance(job, str) or not job:
            raise ValueError(f"job must be a non-empty string naming the search, got {job!r}")
        if not flush_interval_s >= 0:
            raise ValueError(f"flush_interval_s must be >= 0 seconds, got {flush_interval_s}")
        if not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be an int >= 1, got {max_buffer!r}")
        self._store = store
        self._job = job
        self._flush_interval_s = float(flush_interval_s)
        self._max_buffer = max_buffer
        self._ends = ends
        self._buffer: list[dict[str, Any]] = []
        self._oldest: float | None = None  # time.monotonic() of the oldest buffered row

    @property
    def store(self) -> ResultStore:
        """The store rows are appended to."""
        return self._store

    @property
    def job(self) -> str:
        """The job name written into every row."""
        return self._job

    def flush(self) -> str | None:
        """Append the buffered rows to the store now.

        Returns:
            The written file's path, or ``None`` if the buffer was empty.
        """
        if not self._buffer:
            return None
        path = self._store.append(self._buffer)
        self._buffer = []
        self._oldest = None
        return path

    def _maybe_flush(self) -> None:
        if not self._buffer:
            return
        full = len(self._buffer) >= self._max_buffer
        old = self._oldest is not None and (
            time.monotonic() - self._oldest >= self._flush_interval_s
        )
        if not (full or old):
            return
        try:
            self.flush()
        except Exception as exc:
            # A storage hiccup must not kill a long search; rows stay buffered and the
            # next flush retries. The final flush (on_experiment_end) raises instead.
            logger.warning("ResultRecorder: flush to %s failed, will retry: %s", self._store, exc)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        """Buffers the result as a row; flushes if the buffer is full or old."""
        self._buffer.append(result_to_row(result, job=self._job, status=trial.status))
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._maybe_flush()

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        """Flushes an old buffer even while no results arrive."""
        self._maybe_flush()

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Flushes, so a finished trial is fully in the store; records its end."""
        self.flush()
        self._record_end(trial, "TERMINATED")

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Flushes, so a failed trial's rows are kept; records its end."""
        self.flush()
        self._record_end(trial, "ERROR")

    def _record_end(self, trial: Trial, status: str) -> None:
        # Tune calls these hooks before it sets trial.status, so the status is the hook's.
        if self._ends is None:
            return
        last = trial.last_result or {}
        row: dict[str, Any] = {
            "job": self._job,
            "trial_id": str(trial.trial_id),
            "status": status,
            "training_iteration": last.get("training_iteration"),
            "timestamp": time.time(),
        }
        if status == "ERROR":
            row["error"] = _last_error_line(trial)
        try:
            self._ends.append([row])
        except Exception as exc:  # the results are what matters; the end is a label
            logger.warning("ResultRecorder: could not record the end of trial %s: %s", trial, exc)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Flushes the rest (also reached after Ctrl+C / SIGINT)."""
        self.flush()

    def get_state(self) -> dict[str, Any]:
        """Flushes, then returns the plain state Tune checkpoints with the experiment.

        Flushing here keeps the store at least as far as the checkpoint that
        ``Tuner.restore`` will resume from. The buffer itself is never saved.
        """
        self.flush()
        return {"store": self._store.path, "job": self._job}

    def set_state(self, state: dict[str, Any]) -> None:
        """Checks a restored state against this recorder; the constructor wins."""
        saved = (state.get("store"), state.get("job"))
        if saved != (self._store.path, self._job):
            warnings.warn(
                f"ResultRecorder restored with store={self._store.path!r}, job={self._job!r}"
                f" but the experiment was recorded to store={saved[0]!r}, job={saved[1]!r};"
                " rows will be split. Pass the original store path and job to "
                "ResultRecorder when calling Tuner.restore.",
                stacklevel=2,
            )

    # Pickled copies (Tune may serialise callbacks) start with an empty buffer, so the
    # same rows are never written twice by two copies.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_buffer"] = []
        state["_oldest"] = None
        return state


def _last_error_line(trial: Trial) -> str | None:
    """The last non-empty line of the trial's error (the exception, as Tune saved it)."""
    # Tune appends each failure's exception to error.txt in the trial's local
    # directory, and copies it to the storage only later.
    text = None
    try:
        if trial.error_file:
            with open(trial.error_file, encoding="utf-8", errors="replace") as f:
                text = f.read()
    except OSError:
        pass
    lines = [line for line in str(text or "").splitlines() if line.strip()]
    return lines[-1].strip()[:500] if lines else None
