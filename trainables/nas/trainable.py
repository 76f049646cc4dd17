"""NAS child training on Omniglot classification as a Ray Tune trainable.

Three layers, as for the MAML trainables:

* :class:`NASSettings`: the cell, the macro skeleton and the training recipe, validated once;
* :class:`ChildTraining`: the training state machine (no Ray), with a plain ``state_dict``;
* :func:`train_nas`: the Ray Tune function trainable that drives it and checkpoints.

One reported iteration is ``epochs_per_report`` epochs, so Hyperband/ASHA/BOHB stop weak
children early on epochs. The learning rate follows one cosine schedule over the job's
whole budget (``max_iterations``), as NAS-Bench-201 does over its 200 epochs, so a child
stopped at a low rung has trained exactly like the first epochs of a full-budget child.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, field_validator, model_validator

from warmtune.trainables import trial_seed
from warmtune.trainables.omniglot import IMAGE_SIZE, check_data_folder
from warmtune.trainables.runtime import (
    Device,
    make_generator,
    match_threads_to_ray,
    report_until,
    resolve_device,
)

from .data import TRAIN_DRAWERS, Dataset, load_classification, random_shift
from .network import CellNetwork, count_parameters
from .settings import CellFields

METRICS = {
    "val_accuracy": "max",
    "val_loss": "min",
    "train_loss": "min",
    "train_accuracy": "max",
    "test_accuracy": "max",
    "test_loss": "min",
    "params": "min",
    "latency_ms": "min",
    "images_per_second": "max",
}
"""Reported metrics and their modes. ``test_*`` appear only in the last iteration's result."""

CHECKPOINT_FILE = "nas_child_state.pt"
EVAL_BATCH = 500
LATENCY_RUNS = 20
_STATE_FORMAT = 1
_ARCHITECTURE = ("classes", "channels", "cells_per_stage")

Amp = Literal["auto", "off", "bf16"]

__all__ = [
    "CHECKPOINT_FILE",
    "METRICS",
    "ChildTraining",
    "NASSettings",
    "nas_meta_features",
    "train_nas",
]


class NASSettings(CellFields):
    """A child network and its training recipe.

    Defaults follow NAS-Bench-201's training (SGD with Nesterov momentum 0.9, learning rate
    0.1 on a cosine schedule, weight decay 5e-4) and its skeleton (16 channels, 5 cells per
    stage); the batch is smaller (64, not 256) because an Omniglot class has 14 training
    images.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field(
        description="omniglot (the dataset in the data directory) or a folder holding "
        "images_background.npz and images_evaluation.npz; made an absolute path at "
        "validation, since Ray workers run elsewhere."
    )
    classes: int = Field(
        100, ge=2, le=1623, description="Characters to classify (the first ones, official order)."
    )
    channels: int = Field(16, ge=1, description="Channels of the first stage (C).")
    epochs_per_report: int = Field(1, ge=1, description="Epochs per reported iteration.")
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    lr: float = Field(0.1, gt=0, description="Peak SGD learning rate (cosine to 0).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD (Nesterov) momentum.")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay.")
    shift: int = Field(
        2, ge=0, le=8, description="Random translation of training images, in pixels (0: off)."
    )
    device: Device = Field(
        "auto", description="auto (cuda when the trial sees a GPU), cpu or cuda."
    )
    amp: Amp = Field(
        "auto",
        description="Mixed precision: auto (bfloat16 autocast on a GPU, off on a CPU), off "
        "or bf16.",
    )
    latency_batch: int = Field(1, ge=1, description="Batch size of the latency measurement.")
    checkpoint_every: int = Field(1, ge=1, description="Checkpoint every N reported iterations.")

    @field_validator("data")
    @classmethod
    def _data_folder(cls, value: str) -> str:
        return str(check_data_folder(os.path.expandvars(value)))

    @model_validator(mode="after")
    def _needs_cell(self) -> NASSettings:
        if not self.has_cell():
            raise ValueError(
                "no cell given: set arch ('|nor_conv_3x3~0|+|...') or search the six edges "
                "edge_1_0 ... edge_3_2"
            )
        return self


class ChildTraining:
    """Trains one child network; one :meth:`step` is one Tune report.

    Randomness comes from generators owned by this object (weights from ``seed``, batch
    order and augmentation from ``seed + 1``), so a run is a function of ``(settings,
    seed, max_iterations)``; on CPU with a fixed thread count, :meth:`state_dict` /
    :meth:`load_state_dict` resume it bit for bit.

    Args:
        settings: The cell and the recipe.
        seed: Trial seed.
        max_iterations: The budget the cosine schedule spans (the job's maximum).

    Raises:
        ValueError: If ``max_iterations`` is below 1.
    """

    def __init__(self, *, settings: NASSettings, seed: int, max_iterations: int) -> None:
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        self.settings = settings
        self.seed = seed
        self.device = resolve_device(settings.device)
        self.autocast = settings.amp == "bf16" or (
            settings.amp == "auto" and self.device.type == "cuda"
        )
        self._train = _to(
            load_classification(settings.data, "train", classes=settings.classes), self.device
        )
        self._val = _to(
            load_classification(settings.data, "val", classes=settings.classes), self.device
        )
        self.model = CellNetwork(
            settings.cell(),
            num_classes=settings.classes,
            channels=settings.channels,
            cells_per_stage=settings.cells_per_stage,
            in_channels=1,
            generator=make_generator(seed),
        ).to(self.device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            nesterov=settings.momentum > 0,
            weight_decay=settings.weight_decay,
        )
        self._generator = make_generator(seed + 1)
        self.steps_per_epoch = math.ceil(len(self._train.y) / settings.batch_size)
        self.total_steps = max_iterations * settings.epochs_per_report * self.steps_per_epoch
        self._iteration = 0
        self._step = 0
        self._latency_ms: float | None = None

    @property
    def iteration(self) -> int:
        """Number of completed :meth:`step` calls (reported iterations)."""
        return self._iteration

    def _amp(self) -> AbstractContextManager[Any]:
        if not self.autocast:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def learning_rate(self, step: int) -> float:
        """The cosine-scheduled learning rate of optimizer step ``step``."""
        progress = min(step / self.total_steps, 1.0)
        return self.settings.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def train_epoch(self) -> tuple[float, float]:
        """One pass over the training images in a fresh random order.

        Returns:
            Mean training loss and accuracy over the epoch (of the batches as trained).
        """
        s = self.settings
        self.model.train()
        order = torch.randperm(len(self._train.y), generator=self._generator).to(self.device)
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for batch in order.split(s.batch_size):
            x = random_shift(self._train.x[batch], pixels=s.shift, generator=self._generator)
            y = self._train.y[batch]
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(self._step)
            with self._amp():
                logits = self.model(x)
                loss = F.cross_entropy(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self._step += 1
            total_loss += loss.detach() * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
        count = len(self._train.y)
        return total_loss.item() / count, correct.item() / count

    @torch.no_grad()
    def score(self, data: Dataset) -> tuple[float, float]:
        """Accuracy and mean cross-entropy on ``data``, in evaluation mode (running BN)."""
        self.model.eval()
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for start in range(0, len(data.y), EVAL_BATCH):
            x, y = data.x[start : start + EVAL_BATCH], data.y[start : start + EVAL_BATCH]
            with self._amp():
                logits = self.model(x).float()
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(dim=1) == y).sum()
        return correct.item() / len(data.y), loss.item() / len(data.y)

    @torch.no_grad()
    def latency_ms(self) -> float:
        """Median wall time of one evaluation-mode forward pass of ``latency_batch``
        images on this device, in milliseconds (measured once, then cached)."""
        if self._latency_ms is None:
            self.model.eval()
            x = self._val.x[: self.settings.latency_batch]
            if len(x) < self.settings.latency_batch:
                x = x.repeat(math.ceil(self.settings.latency_batch / len(x)), 1, 1, 1)
                x = x[: self.settings.latency_batch]
            times = []
            for run in range(LATENCY_RUNS + 3):
                _synchronize(self.device)
                start = time.perf_counter()
                with self._amp():
                    self.model(x)
                _synchronize(self.device)
                if run >= 3:  # warm-up runs pay for allocation and kernel selection
                    times.append(time.perf_counter() - start)
            self._latency_ms = 1000.0 * sorted(times)[len(times) // 2]
        return self._latency_ms

    def step(self) -> dict[str, float]:
        """Trains ``epochs_per_report`` epochs, then scores on the validation drawers.

        Returns:
            ``val_accuracy``, ``val_loss``, ``train_loss``, ``train_accuracy`` (of the
            last epoch), ``epoch``, ``params``, ``latency_ms`` and ``images_per_second``
            (training throughput of this iteration).
        """
        start = time.perf_counter()
        for _ in range(self.settings.epochs_per_report):
            train_loss, train_accuracy = self.train_epoch()
        _synchronize(self.device)
        seconds = time.perf_counter() - start
        self._iteration += 1
        val_accuracy, val_loss = self.score(self._val)
        return {
            "val_accuracy": val_accuracy,
            "val_loss": val_loss,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "epoch": float(self._iteration * self.settings.epochs_per_report),
            "params": float(count_parameters(self.model)),
            "latency_ms": self.latency_ms(),
            "images_per_second": self.settings.epochs_per_report * len(self._train.y) / seconds,
        }

    def test(self) -> dict[str, float]:
        """Scores the current network on the test drawers: ``test_accuracy``, ``test_loss``."""
        s = self.settings
        test = _to(load_classification(s.data, "test", classes=s.classes), self.device)
        accuracy, loss = self.score(test)
        return {"test_accuracy": accuracy, "test_loss": loss}

    def state_dict(self) -> dict[str, Any]:
        """Weights, batch-norm statistics, SGD momentum, RNG and counters (plain tensors)."""
        return {
            "format": _STATE_FORMAT,
            "iteration": self._iteration,
            "step": self._step,
            "seed": self.seed,
            "arch": self.model.arch,
            "settings": self.settings.model_dump(),
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            # A snapshot: the live state dict shares its moment tensors with the optimizer.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a :meth:`state_dict`.

        Under the settings it was written with, training continues bit for bit (on CPU).
        Population-based training restores a donor's state under a mutated recipe: that is
        allowed when the network is the same (cell, classes, channels, cells per stage);
        the recipe comes from this object's settings.

        Raises:
            ValueError: Another state format, or another network.
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(
                f"unsupported NAS child state format {state.get('format')!r}; expected "
                f"{_STATE_FORMAT}. Start the trial from scratch or use a matching warmtune."
            )
        saved = state["settings"]
        mine = self.settings.model_dump()
        if state["arch"] != self.model.arch or any(saved[k] != mine[k] for k in _ARCHITECTURE):
            held = ", ".join(f"{k}={saved[k]}" for k in _ARCHITECTURE)
            raise ValueError(
                f"checkpoint holds cell {state['arch']} with {held}; build ChildTraining with "
                "that network to restore it (PBT must not mutate architecture parameters)"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._generator.set_state(state["generator"].cpu())
        self._iteration = int(state["iteration"])
        self._step = int(state["step"])
        self.seed = int(state["seed"])


def _to(data: Dataset, device: torch.device) -> Dataset:
    return Dataset(data.x.to(device), data.y.to(device))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_nas(config: dict, *, max_iterations: int, seed: int, **params: Any) -> None:
    """Ray Tune function trainable: trains one child until ``max_iterations`` iterations.

    Use with ``ray.tune.with_parameters(train_nas, max_iterations=..., seed=...,
    **fixed_params)``. Resumes from ``ray.tune.get_checkpoint()`` when Tune provides one.
    The last iteration's result adds ``test_accuracy`` and ``test_loss``.

    Args:
        config: The searched settings (the six edges, and any recipe keys).
        max_iterations: Reported iterations in total (the cosine schedule spans them).
        seed: Base seed; the trial seed is ``warmtune.trainables.trial_seed(seed, config)``.
        **params: Fixed settings of the job (``data`` at least); ``config`` wins on a clash.

    Raises:
        pydantic.ValidationError: If a key or value is not a valid setting.
        ValueError: If ``max_iterations`` is below 1.
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    settings = NASSettings(**{**params, **config})
    match_threads_to_ray()
    child = ChildTraining(
        settings=settings, seed=trial_seed(seed, config), max_iterations=max_iterations
    )
    report_until(
        child,
        max_iterations=max_iterations,
        checkpoint_every=settings.checkpoint_every,
        last_metrics=child.test,
        checkpoint_file=CHECKPOINT_FILE,
    )


def nas_meta_features(params: Mapping[str, Any]) -> dict[str, Any]:
    """Task meta-features for the knowledge base: the dataset and its size (the cell and
    the recipe are what is searched, not properties of the task)."""
    classes = int(params.get("classes", NASSettings.model_fields["classes"].default))
    return {
        "family": "image-classification",
        "dataset": "omniglot",
        "classes": classes,
        "train_examples": classes * len(TRAIN_DRAWERS),
        "image_size": IMAGE_SIZE,
        "channels": 1,
    }
