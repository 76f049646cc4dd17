"""One-line progress reports while a search runs (a Ray Tune callback).

Ray Tune's own reporter prints wide tables; a search job wants to say how many
trials run and finished and what the best result is so far, every few seconds::

    [  42s] trials: 2 running, 9 done (5 stopped early), 0 failed | best loss 0.0213 (trial 3, it 8)

After Ctrl+C (or ``warmtune stop``) Tune stops the running trials and marks them
terminated like trials that ended; the last line counts them apart::

    [  57s] trials: 0 running, 7 done (5 stopped early), 2 interrupted, 0 failed | ...
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray.tune import Callback


class ProgressPrinter(Callback):
    """Print a status line every ``interval_s`` seconds and when trials end.

    Args:
        metric: the objective.
        mode: ``"min"`` or ``"max"``.
        max_iterations: a trial's full budget (to tell early stops from finishes).
        interval_s: seconds between periodic lines.
        stream: where to print (default stdout).
    """

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        max_iterations: int,
        interval_s: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.metric = metric
        self.mode = mode
        self.max_iterations = max_iterations
        self.interval_s = interval_s
        self.stream = stream
        self._start = time.monotonic()
        self._last_print = -math.inf
        self._best: tuple[float, str, int] | None = None
        self._last_line = ""
        # Trials that ended by themselves (or had ended before this run started, on
        # resume); a terminated trial not among them was stopped by an interruption.
        self._ended: set[str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["stream"] = None  # streams do not pickle; Tune pickles callbacks on restore
        return state

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        self._start = time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any):
        value = result.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        better = self._best is None or (
            value < self._best[0] if self.mode == "min" else value > self._best[0]
        )
        if better:
            self._best = (value, trial.trial_id, int(result.get("training_iteration", 0)))

    def _note_ended_before(self, trials: list) -> set[str]:
        if self._ended is None:
            self._ended = {t.trial_id for t in trials if t.status == "TERMINATED"}
        return self._ended

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._note_ended_before(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._note_ended_before(trials)
        if time.monotonic() - self._last_print >= self.interval_s:
            self._print(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note_ended_before(trials).add(trial.trial_id)
        # Many short trials end in bursts; one line a second is plenty.
        if time.monotonic() - self._last_print >= 1.0:
            self._print(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(trials, force=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._print(trials, force=True)

    def status_line(self, trials: list) -> str:
        """The line for the current state of ``trials``."""
        counts = {"RUNNING": 0, "PENDING": 0, "TERMINATED": 0, "ERROR": 0, "PAUSED": 0}
        early = interrupted = 0
        ended = self._ended if self._ended is not None else set()
        for t in trials:
            status = t.status
            last = (t.last_result or {}).get("training_iteration", 0)
            if status == "TERMINATED" and last < self.max_iterations:
                if t.trial_id in ended:
                    early += 1
                else:
                    status = "INTERRUPTED"
                    interrupted += 1
            counts[status] = counts.get(status, 0) + 1
        parts = [f"{counts['RUNNING']} running"]
        if counts["PENDING"] or counts["PAUSED"]:
            parts.append(f"{counts['PENDING'] + counts['PAUSED']} waiting")
        parts.append(f"{counts['TERMINATED']} done ({early} stopped early)")
        if interrupted:
            parts.append(f"{interrupted} interrupted")
        parts.append(f"{counts['ERROR']} failed")
        line = f"[{time.monotonic() - self._start:5.0f}s] trials: " + ", ".join(parts)
        if self._best is not None:
            value, trial_id, it = self._best
            line += f" | best {self.metric} {value:.4g} (trial {trial_id}, iteration {it})"
        return line

    def _print(self, trials: list, force: bool = False) -> None:
        line = self.status_line(trials)
        self._last_print = time.monotonic()
        if line[8:] == self._last_line[8:] and not force:
            return  # nothing changed but the clock
        self._last_line = line
        print(line, file=self.stream or sys.stdout, flush=True)
