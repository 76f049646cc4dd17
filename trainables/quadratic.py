"""A quadratic bowl with a learning curve: a trainable that costs nothing to run.

``loss(t) = sum_i (x_i - 0.5)^2 + 1/t`` over the numeric hyperparameters ``x_i``
of the configuration (other values add nothing), at training iteration ``t``.
The optimum puts every numeric value at 0.5. Useful for smoke tests, CI, and
checking a job file before spending real compute.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import tune


class QuadraticSettings(BaseModel):
    """Fixed parameters of the quadratic trainable (any searched keys are allowed)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sleep_s: float = Field(0.0, ge=0, description="Seconds to wait per iteration.")
    fail_at: int | None = Field(
        None, ge=1, description="Raise an error at this iteration (to exercise retries)."
    )


def objective(config: dict[str, Any], iteration: int) -> float:
    """The loss of ``config`` at ``iteration`` (>= 1)."""
    total = 0.0
    for value in config.values():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        total += (float(value) - 0.5) ** 2
    return total + 1.0 / iteration


def train_quadratic(config: dict, *, max_iterations: int, seed: int, **params: Any) -> None:
    """Ray Tune function trainable; reports ``loss`` each iteration, checkpoints each one."""
    settings = QuadraticSettings(**params)
    start = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            start = json.load(f)["iteration"] + 1
    searched = {k: v for k, v in config.items() if k not in QuadraticSettings.model_fields}
    for it in range(start, max_iterations + 1):
        if settings.sleep_s:
            time.sleep(settings.sleep_s)
        if settings.fail_at is not None and it == settings.fail_at:
            raise RuntimeError(f"quadratic: fail_at={it} reached (as configured)")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"iteration": it}, f)
            tune.report(
                {"loss": objective(searched, it)}, checkpoint=tune.Checkpoint.from_directory(d)
            )
