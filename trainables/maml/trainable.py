"""MAML on sinusoid regression as a Ray Tune function trainable.

Three layers, each usable without the next:

* :class:`SinusoidSettings`: every hyperparameter, validated once;
* :class:`SinusoidMAML`: the training state machine (no Ray), with a plain ``state_dict``;
* :func:`train_sinusoid`: the Ray Tune function trainable that drives it and checkpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from warmtune.trainables import trial_seed
from warmtune.trainables.runtime import make_generator, match_threads_to_ray, report_until

from . import functional as MF
from .models import MLP
from .sinusoid import TaskBatch, sample_tasks

METRICS = {"loss": "min", "pre_loss": "min", "train_loss": "min"}
"""Reported metric names and their optimisation modes; ``loss`` is the objective."""

EVAL_SEED = 20170309
"""Seed of the validation tasks. Fixed and independent of the trial seed, so that every
trial (with the same ``k_shot`` and ``eval_tasks``) is scored on the very same tasks."""

CHECKPOINT_FILE = "maml_state.pt"
_STATE_FORMAT = 1


class SinusoidSettings(BaseModel):
    """Every hyperparameter of a sinusoid MAML trial; defaults follow Finn et al. 2017.

    The platform validates a job's fixed params merged with the searched config against this
    model, so an unknown key or a bad value fails with a pydantic error naming the field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    inner_lr: float = Field(0.01, gt=0, description="Inner-loop (adaptation) step size.")
    meta_lr: float = Field(0.001, gt=0, description="Adam learning rate of the meta-update.")
    inner_steps: int = Field(1, ge=1, description="Inner gradient steps during meta-training.")
    meta_batch_size: int = Field(25, ge=1, description="Tasks per meta-update.")
    first_order: bool = Field(False, description="First-order MAML (drop Hessian terms).")
    hidden: int = Field(40, ge=1, description="Width of each hidden layer.")
    layers: int = Field(2, ge=1, description="Number of hidden layers.")
    k_shot: int = Field(10, ge=1, description="Support (and query) points per task.")
    meta_iters_per_report: int = Field(
        50, ge=1, description="Meta-iterations per reported training iteration."
    )
    eval_tasks: int = Field(100, ge=1, description="Number of fixed validation tasks.")
    eval_steps: int = Field(
        10, ge=0, description="Adaptation steps (at inner_lr) when scoring validation tasks."
    )
    checkpoint_every: int = Field(1, ge=1, description="Checkpoint every N reported iterations.")


class SinusoidMAML:
    """Meta-trains an MLP on sinusoid tasks with MAML; one :meth:`step` is one Tune report.

    All randomness comes from generators owned by this object (model init and task sampling
    from ``seed``, validation tasks from :data:`EVAL_SEED`), so a run is a function of
    ``(settings, seed)`` and, on CPU with a fixed thread count, :meth:`state_dict` /
    :meth:`load_state_dict` resume it bit for bit.

    Args:
        settings: Hyperparameters.
        seed: Trial seed; drives the initial weights and the training tasks.
    """

    def __init__(self, *, settings: SinusoidSettings, seed: int) -> None:
        self.settings = settings
        self.seed = seed
        init_generator = make_generator(seed)
        self.model = MLP(hidden=settings.hidden, layers=settings.layers, generator=init_generator)
        # A separate stream for tasks: changing the architecture must not change the tasks.
        self._task_generator = make_generator(seed + 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.meta_lr)
        self._eval_batch: TaskBatch = sample_tasks(
            settings.eval_tasks, k_shot=settings.k_shot, generator=make_generator(EVAL_SEED)
        )
        self._iteration = 0
        self._last_train_loss = float("nan")

    @property
    def iteration(self) -> int:
        """Number of completed :meth:`step` calls (reported iterations)."""
        return self._iteration

    def _inner_kwargs(self) -> dict[str, Any]:
        return {"loss_fn": F.mse_loss, "inner_lr": self.settings.inner_lr}

    def meta_step(self) -> float:
        """Runs one MAML meta-update on a fresh meta-batch.

        Returns:
            The meta-batch's meta-loss before the update.
        """
        s = self.settings
        batch = sample_tasks(s.meta_batch_size, k_shot=s.k_shot, generator=self._task_generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss = MF.meta_loss(
            self.model,
            dict(self.model.named_parameters()),
            batch.support_x,
            batch.support_y,
            batch.query_x,
            batch.query_y,
            steps=s.inner_steps,
            first_order=s.first_order,
            **self._inner_kwargs(),
        )
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def evaluate(self) -> dict[str, float]:
        """Scores the current initialisation on the fixed validation tasks.

        Returns:
            ``loss``: mean query MSE after ``eval_steps`` adaptation steps at ``inner_lr``;
            ``pre_loss``: mean query MSE before adaptation.
        """
        b = self._eval_batch
        params = MF.detached(dict(self.model.named_parameters()))
        data = (b.support_x, b.support_y, b.query_x, b.query_y)
        # No meta-gradient is needed here; torch.func.grad still computes the inner gradients.
        with torch.no_grad():
            pre = MF.batched_query_losses(
                self.model, params, *data, steps=0, **self._inner_kwargs()
            )
            post = MF.batched_query_losses(
                self.model,
                params,
                *data,
                steps=self.settings.eval_steps,
                first_order=True,
                **self._inner_kwargs(),
            )
        return {"loss": post.mean().item(), "pre_loss": pre.mean().item()}

    def step(self) -> dict[str, float]:
        """Runs one reported iteration: ``meta_iters_per_report`` meta-updates, then scores.

        Returns:
            ``loss`` (objective, lower is better), ``pre_loss`` and ``train_loss`` (the last
            meta-batch's meta-loss), as Python floats. ``loss`` is inf or nan when the
            ``eval_steps`` adaptation diverges (``inner_lr`` too large for that many steps;
            seen from ``inner_lr`` ~0.03 with the default 10 steps): a genuinely bad config,
            reported as such rather than hidden.
        """
        for _ in range(self.settings.meta_iters_per_report):
            self._last_train_loss = self.meta_step()
        self._iteration += 1
        return {**self.evaluate(), "train_loss": self._last_train_loss}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically: weights, Adam, RNG, counters.

        Returns:
            Plain tensors, numbers and dicts (loadable with ``torch.load(weights_only=True)``).
        """
        return {
            "format": _STATE_FORMAT,
            "iteration": self._iteration,
            "last_train_loss": self._last_train_loss,
            "seed": self.seed,
            "settings": self.settings.model_dump(),
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            # A snapshot: the live state dict shares its moment tensors with the optimizer.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "task_generator": self._task_generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a :meth:`state_dict` into this object.

        With the settings the state was written under, training then continues bit for bit.
        Other settings are allowed as long as the architecture matches (population-based
        training restores a donor's checkpoint under a mutated config): weights, Adam moments
        and the task RNG come from ``state``, every hyperparameter (including ``meta_lr``)
        from this object's settings.

        Args:
            state: A dict produced by :meth:`state_dict`.

        Raises:
            ValueError: If the state has another format or another architecture.
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(
                f"unsupported MAML state format {state.get('format')!r}; expected "
                f"{_STATE_FORMAT}. Start the trial from scratch or load it with a matching "
                "warmtune version."
            )
        saved = state["settings"]
        mine = self.settings.model_dump()
        if any(saved[key] != mine[key] for key in ("hidden", "layers")):
            raise ValueError(
                f"checkpoint holds a network with hidden={saved['hidden']}, "
                f"layers={saved['layers']}; build SinusoidMAML with those settings to restore it"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # Optimizer.load_state_dict also restores the saved lr; the current settings win.
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.meta_lr
        self._task_generator.set_state(state["task_generator"])
        self._iteration = int(state["iteration"])
        self._last_train_loss = float(state["last_train_loss"])
        self.seed = int(state["seed"])


def train_sinusoid(config: dict, *, max_iterations: int, seed: int, **params: Any) -> None:
    """Ray Tune function trainable: meta-trains until ``max_iterations`` reported iterations.

    Use with ``ray.tune.with_parameters(train_sinusoid, max_iterations=..., seed=...,
    **fixed_params)``. Resumes from ``ray.tune.get_checkpoint()`` when Tune provides one.

    Args:
        config: The searched hyperparameters (keys of :class:`SinusoidSettings`).
        max_iterations: Reported iterations to train for in total (including restored ones).
        seed: Base seed; the trial seed is ``warmtune.trainables.trial_seed(seed, config)``.
        **params: Fixed hyperparameters of the job; ``config`` wins on a clash.

    Raises:
        pydantic.ValidationError: If a key or value is not a valid setting.
        ValueError: If ``max_iterations`` is below 1.
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    settings = SinusoidSettings(**{**params, **config})
    match_threads_to_ray()
    maml = SinusoidMAML(settings=settings, seed=trial_seed(seed, config))

    report_until(
        maml,
        max_iterations=max_iterations,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_file=CHECKPOINT_FILE,
    )


def sinusoid_meta_features(params: Mapping[str, Any]) -> dict[str, Any]:
    """Task meta-features for the knowledge base: the task family and its shape."""
    from .sinusoid import AMPLITUDE_RANGE, PHASE_RANGE

    k_shot = params.get("k_shot", SinusoidSettings.model_fields["k_shot"].default)
    return {
        "family": "sinusoid",
        "k_shot": int(k_shot),
        "amplitude_max": AMPLITUDE_RANGE[1],
        "phase_max": PHASE_RANGE[1],
    }
