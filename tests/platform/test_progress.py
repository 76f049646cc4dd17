"""The one-line progress printer: what each count means, and the line after Ctrl+C."""

from __future__ import annotations

import io
from types import SimpleNamespace

from warmtune.progress import ProgressPrinter


def _trial(trial_id: str, status: str, iteration: int) -> SimpleNamespace:
    return SimpleNamespace(
        trial_id=trial_id, status=status, last_result={"training_iteration": iteration}
    )


def _printer() -> tuple[ProgressPrinter, io.StringIO]:
    out = io.StringIO()
    return ProgressPrinter(metric="loss", mode="min", max_iterations=9, stream=out), out


def test_counts_running_waiting_done_early_and_failed():
    printer, _ = _printer()
    trials = [
        _trial("a", "RUNNING", 2),
        _trial("b", "PENDING", 0),
        _trial("c", "PAUSED", 3),
        _trial("d", "TERMINATED", 9),
        _trial("e", "TERMINATED", 3),
        _trial("f", "ERROR", 1),
    ]
    printer.on_step_begin(0, trials)
    printer.on_trial_complete(0, trials, trials[3])
    printer.on_trial_complete(0, trials, trials[4])  # stopped by the scheduler at rung 3
    printer.on_trial_result(0, trials, trials[4], {"loss": 0.5, "training_iteration": 3})
    line = printer.status_line(trials)
    assert "trials: 1 running, 2 waiting, 2 done (1 stopped early), 1 failed" in line
    assert line.endswith("| best loss 0.5 (trial e, iteration 3)")


def test_trials_stopped_by_an_interruption_are_not_stopped_early():
    """Tune's cleanup after Ctrl+C marks running trials TERMINATED without
    on_trial_complete; they are counted as interrupted, not as early stops."""
    printer, out = _printer()
    trials = [_trial("a", "RUNNING", 2), _trial("b", "RUNNING", 4), _trial("c", "TERMINATED", 9)]
    printer.on_step_begin(0, trials)
    printer.on_trial_complete(0, trials, trials[2])
    for t in trials[:2]:
        t.status = "TERMINATED"  # what Tune's cleanup does
    printer.on_experiment_end(trials)
    assert (
        out.getvalue()
        .splitlines()[-1]
        .endswith("trials: 0 running, 1 done (0 stopped early), 2 interrupted, 0 failed")
    )


def test_on_resume_trials_that_had_ended_count_as_done():
    printer, _ = _printer()
    trials = [_trial("old", "TERMINATED", 3), _trial("new", "RUNNING", 1)]
    printer.on_step_begin(0, trials)  # "old" ended (early) in the interrupted run
    assert "1 running, 1 done (1 stopped early), 0 failed" in printer.status_line(trials)
