"""The noisy quadratic model (NQM): SGD on a quadratic with gradient noise, in closed form.

Zhang et al. (2019), "Which algorithmic choices matter at which batch sizes? Insights
from a noisy quadratic model" (NeurIPS), show that this model reproduces how real
networks respond to the learning rate, the batch size and their schedules. It is the
small real trainable of population-based training here: a trial has weights, and a
schedule (which PBT's exploit and explore build) beats every constant configuration.

The task: ``dims`` parameters ``theta_i`` with curvatures ``h_i = i ** -exponent``
(``i = 1..dims``), each starting at 1; a gradient from one example carries noise of
variance ``noise * h_i``. One SGD step with learning rate ``lr`` on a batch of
``batch_size`` examples is ``theta_i <- theta_i - lr (h_i theta_i + eps_i)`` with
``Var eps_i = noise h_i / batch_size``. The *weights* are the expected second
moments ``m_i = E[theta_i ** 2]``, which evolve exactly:

    m_i <- a_i m_i + s_i,   a_i = (1 - lr h_i) ** 2,   s_i = lr ** 2 noise h_i / batch_size

and the expected loss is ``1/2 sum_i h_i m_i``. A training iteration processes
``examples`` examples, that is ``K = examples // batch_size`` steps with one
configuration, summed in closed form (``a^K m + s (1 - a^K) / (1 - a)``). No
randomness: the same configurations give the same losses, so a benchmark replays
exactly. A learning rate above ``2 / h_1`` diverges: the loss becomes infinite, a
failed trial.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["NQMSettings", "NoisyQuadratic", "meta_features", "train_nqm"]


@dataclass(frozen=True)
class NoisyQuadratic:
    """One NQM task (see the module docstring)."""

    dims: int = 1000
    exponent: float = 1.0
    noise: float = 1.0
    examples: int = 4096

    def __post_init__(self) -> None:
        if self.dims < 1 or self.examples < 1 or self.noise < 0 or self.exponent < 0:
            raise ValueError(
                f"NQM needs dims >= 1, examples >= 1, noise >= 0 and exponent >= 0, got {self}"
            )

    @property
    def curvatures(self) -> np.ndarray:
        return np.arange(1, self.dims + 1, dtype=float) ** -self.exponent

    def initial(self) -> np.ndarray:
        """The weights before training: every ``m_i = 1``."""
        return np.ones(self.dims)

    def train(self, weights: np.ndarray, configs: Any, iterations: int = 1) -> np.ndarray:
        """The weights after ``iterations`` training iterations with each configuration.

        ``weights`` is ``(dims,)`` or ``(n, dims)`` for ``n`` configurations (a mapping
        or a sequence of ``n`` mappings with ``lr`` and ``batch_size``).
        """
        lr, batch = _columns(configs)
        h = self.curvatures
        steps = (self.examples // batch)[:, None] * iterations
        a = (1.0 - lr[:, None] * h) ** 2
        s = lr[:, None] ** 2 * self.noise * h / batch[:, None]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            a_k = a**steps
            one = np.isclose(a, 1.0)
            geometric = np.where(one, steps, (1.0 - a_k) / np.where(one, 1.0, 1.0 - a))
            out = a_k * np.atleast_2d(weights) + s * geometric
        return out[0] if np.ndim(weights) == 1 and len(lr) == 1 else out

    def loss(self, weights: np.ndarray) -> Any:
        """The expected loss of ``weights`` (``inf`` once training diverged)."""
        with np.errstate(over="ignore", invalid="ignore"):
            value = 0.5 * np.atleast_2d(weights) @ self.curvatures
        value = np.where(np.isfinite(value), value, np.inf)
        return float(value[0]) if np.ndim(weights) == 1 else value

    def losses(self, configs: Sequence[Mapping[str, Any]], iterations: int) -> np.ndarray:
        """The loss of each configuration trained from scratch for ``iterations``."""
        start = np.tile(self.initial(), (len(configs), 1))
        return np.asarray(self.loss(self.train(start, configs, iterations)), dtype=float)


def _columns(configs: Any) -> tuple[np.ndarray, np.ndarray]:
    rows = [configs] if isinstance(configs, Mapping) else list(configs)
    lr = np.array([float(c["lr"]) for c in rows])
    batch = np.array([int(c["batch_size"]) for c in rows])
    if (lr <= 0).any() or (batch < 1).any():
        raise ValueError("NQM needs lr > 0 and batch_size >= 1")
    return lr, batch


class NQMSettings(BaseModel):
    """Fixed parameters of the ``nqm`` trainable: the task, and a pause per iteration."""

    model_config = ConfigDict(extra="allow", frozen=True)

    dims: int = Field(1000, ge=1, description="Parameters of the quadratic.")
    exponent: float = Field(1.0, ge=0, description="Curvatures h_i = i ** -exponent.")
    noise: float = Field(1.0, ge=0, description="Gradient noise of one example, times h_i.")
    examples: int = Field(4096, ge=1, description="Examples per training iteration.")
    sleep_s: float = Field(0.0, ge=0, description="Seconds to wait per iteration.")


def meta_features(params: Mapping[str, Any]) -> dict[str, Any]:
    """What a user knows of an NQM task before searching it: its fixed parameters."""
    s = NQMSettings(**params)
    return {"dims": s.dims, "exponent": s.exponent, "noise": s.noise}


def train_nqm(config: dict, *, max_iterations: int, seed: int, **params: Any) -> None:
    """Ray Tune function trainable; reports ``loss`` each iteration, checkpoints each one
    (the weights and the iteration), so PBT can copy a member into another."""
    from ray import tune

    settings = NQMSettings(**params)
    model = NoisyQuadratic(settings.dims, settings.exponent, settings.noise, settings.examples)
    weights, start = model.initial(), 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            saved = np.load(os.path.join(d, "nqm.npz"))
            weights, start = saved["weights"], int(saved["iteration"]) + 1
    searched = {"lr": config["lr"], "batch_size": config["batch_size"]}
    for it in range(start, max_iterations + 1):
        if settings.sleep_s:
            time.sleep(settings.sleep_s)
        weights = model.train(weights, searched)
        loss = model.loss(weights)
        with tempfile.TemporaryDirectory() as d:
            np.savez(os.path.join(d, "nqm.npz"), weights=weights, iteration=it)
            tune.report(
                {"loss": loss if np.isfinite(loss) else float("nan")},
                checkpoint=tune.Checkpoint.from_directory(d),
            )
