"""Few-shot meta-learning on Omniglot classification as a Ray Tune trainable.

Two families share the data protocol, backbone, episodes, checkpoints and metrics:
optimisation-based learners (MAML, first-order MAML, ANIL, Reptile, Meta-SGD; see
:mod:`.algorithms`) and metric-based ones (Prototypical and Matching Networks; see
:mod:`.metric`), so one search can range over ``algorithm`` across both.

Three layers, each usable without the next (as :mod:`.trainable` for sinusoids):

* :class:`OmniglotSettings` (in :mod:`.omniglot_settings`): every hyperparameter, validated
  once;
* :class:`OmniglotMAML`: the training state machine (no Ray), with a plain ``state_dict``;
* :func:`train_omniglot`: the Ray Tune function trainable that drives it and checkpoints.

Trials are scored on meta-validation episodes (characters held out of meta-training, see
:mod:`.omniglot`); the meta-test split is touched once, at the last iteration.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch

from warmtune.trainables import trial_seed
from warmtune.trainables.nas.network import CellNetwork
from warmtune.trainables.omniglot import (
    IMAGE_SIZE,
    Episodes,
    OmniglotSplit,
    load_split,
    sample_episodes,
)
from warmtune.trainables.runtime import (
    check_cpp_compiler,
    make_generator,
    match_threads_to_ray,
    report_until,
    resolve_device,
)

from . import algorithms as AL
from . import evaluation as EV
from .conv import HEAD_PREFIX, ConvNet
from .functional import InnerLR
from .metric import METRIC_ALGORITHMS, MetricLearner
from .omniglot_settings import OmniglotSettings

METRICS = {
    "val_accuracy": "max",
    "val_loss": "min",
    "train_loss": "min",
    "test_accuracy": "max",
    "test_accuracy_ci95": "min",
    "test_loss": "min",
}
"""Reported metric names and their modes. ``val_accuracy`` is the natural objective; the
``test_*`` metrics appear only in the last iteration's result."""

VAL_SEED = 20170310
"""Seed of the meta-validation episodes: the same for every trial with the same task shape."""

TEST_SEED = 20170311
"""Seed of the meta-test episodes."""

EVAL_CHUNK = 100
"""Tasks sampled and moved to the device at a time for evaluation (bounds memory)."""

CPU_TASK_CHUNK = 4
"""Tasks per ``vmap`` call on a CPU: whole meta-batches overflow the caches and run ~2.5x
slower (measured by :mod:`.throughput`); on a GPU every task goes in one call."""

CHECKPOINT_FILE = "maml_omniglot_state.pt"
_STATE_FORMAT = 1
_ARCHITECTURE = (
    "n_way",
    "backbone",
    "filters",
    "blocks",
    "downsample",
    "cells_per_stage",
    "fce",
)


def build_backbone(
    settings: OmniglotSettings, *, generator: torch.Generator
) -> ConvNet | CellNetwork:
    """The network a trial meta-learns: the conv blocks, or a NAS-Bench-201 cell network
    with stateless batch-statistics norm (what MAML needs under ``vmap``). The metric-based
    algorithms get it without its head, as an embedding network."""
    classes = None if settings.algorithm in METRIC_ALGORITHMS else settings.n_way
    if settings.backbone == "nb201":
        return CellNetwork(
            settings.cell(),
            num_classes=classes,
            channels=settings.filters,
            cells_per_stage=settings.cells_per_stage,
            in_channels=1,
            norm="batch",
            generator=generator,
        )
    return ConvNet(
        n_way=classes,
        filters=settings.filters,
        blocks=settings.blocks,
        downsample=settings.downsample,
        generator=generator,
    )


class OmniglotMAML:
    """Meta-trains a few-shot learner on Omniglot; one :meth:`step` is one Tune report.

    The learner is the backbone (:func:`build_backbone`) trained with one of
    :data:`.algorithms.ALGORITHMS`, or, for ``protonet`` and ``matching``, the backbone as
    an embedding network scored by a :class:`.metric.MetricLearner`.

    All randomness comes from generators owned by this object (initial weights and training
    episodes from ``seed``, validation and test episodes from :data:`VAL_SEED` /
    :data:`TEST_SEED`), so a run is a function of ``(settings, seed)``. Episodes are drawn on
    the CPU and moved to the device; on CPU with a fixed thread count, :meth:`state_dict` /
    :meth:`load_state_dict` resume a run bit for bit.

    Args:
        settings: Hyperparameters.
        seed: Trial seed.
    """

    def __init__(self, *, settings: OmniglotSettings, seed: int) -> None:
        self.settings = settings
        self.seed = seed
        self.device = resolve_device(settings.device)
        if settings.compile:
            if self.device.type == "cpu":
                check_cpp_compiler()
            # Dynamo stops compiling a function after a few shape variants, and trials in a
            # reused actor bring new ones: start each compiled trial with an empty cache
            # (inductor's on-disk cache makes graphs seen before cost seconds).
            torch.compiler.reset()
        self._train = load_split(settings.data, "train", val_characters=settings.val_characters)
        weights = make_generator(seed)
        self.model = build_backbone(settings, generator=weights).to(self.device)
        # Prototypical and Matching Networks: the rule that scores episodes, with Matching
        # Networks' full-context embeddings as its own parameters; None for the others.
        self.metric: MetricLearner | None = None
        if settings.algorithm in METRIC_ALGORITHMS:
            self.metric = MetricLearner(
                algorithm=settings.algorithm,  # type: ignore[arg-type]
                embedding_dim=self.model.embedding_dim,
                cosine_scale=settings.cosine_scale,
                fce=settings.fce,
                fce_steps=settings.fce_steps,
                generator=weights,
            ).to(self.device)
        # A separate stream for tasks: changing the architecture must not change the tasks.
        self._task_generator = make_generator(seed + 1)
        # Meta-SGD's learned step sizes live beside the weights, in the same optimizer and
        # the same checkpoint; None for algorithms with a fixed inner_lr.
        self.inner_lrs: dict[str, torch.Tensor] | None = None
        learned: list[torch.Tensor] = []
        if settings.algorithm in AL.LEARNED_INNER_LR:
            self.inner_lrs = {
                name: rate.requires_grad_()
                for name, rate in AL.initial_inner_lrs(
                    dict(self.model.named_parameters()), settings.inner_lr
                ).items()
            }
            learned = list(self.inner_lrs.values())
        if self.metric is not None:
            learned = list(self.metric.parameters())
        self.optimizer = torch.optim.Adam([*self.model.parameters(), *learned], lr=settings.meta_lr)
        self._algorithm = AL.ALGORITHMS.get(settings.algorithm)
        self._adapt_prefix = HEAD_PREFIX if settings.algorithm in AL.HEAD_ONLY else ""
        self._task_chunk = CPU_TASK_CHUNK if self.device.type == "cpu" else None
        val = load_split(settings.data, "val", val_characters=settings.val_characters)
        self._val = self._sample(val, settings.eval_tasks, make_generator(VAL_SEED))
        self._iteration = 0
        self._updates = 0
        self._last_train_loss = float("nan")

    @property
    def iteration(self) -> int:
        """Number of completed :meth:`step` calls (reported iterations)."""
        return self._iteration

    def _inner_lr(self) -> InnerLR:
        return self.settings.inner_lr if self.inner_lrs is None else self.inner_lrs

    def _sample(
        self, split: OmniglotSplit, num_tasks: int, generator: torch.Generator
    ) -> list[Episodes]:
        s = self.settings
        chunks = []
        for start in range(0, num_tasks, EVAL_CHUNK):
            count = min(EVAL_CHUNK, num_tasks - start)
            episodes = sample_episodes(
                split,
                num_tasks=count,
                n_way=s.n_way,
                k_shot=s.k_shot,
                q_query=s.q_query,
                generator=generator,
            )
            chunks.append(episodes.to(self.device))
        return chunks

    def _meta_lr(self) -> float:
        halving = self.settings.meta_lr_halving
        return self.settings.meta_lr * (0.5 ** (self._updates // halving) if halving else 1.0)

    def meta_step(self) -> float:
        """Runs one meta-update of the configured algorithm on a fresh meta-batch.

        Returns:
            The meta-batch's mean query loss before the update (after adaptation, for the
            optimisation-based algorithms).
        """
        s = self.settings
        n_way, k_shot, q_query = s.train_shape()
        batch = sample_episodes(
            self._train,
            num_tasks=s.meta_batch_size,
            n_way=n_way,
            k_shot=k_shot,
            q_query=q_query,
            generator=self._task_generator,
        ).to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self._meta_lr()
        self._updates += 1
        if self.metric is not None:
            loss = self.metric.loss(
                self.model,
                batch.support_x,
                batch.support_y,
                batch.query_x,
                batch.query_y,
                n_way=n_way,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return loss.item()
        assert self._algorithm is not None  # every non-metric algorithm is in ALGORITHMS
        result = self._algorithm(
            self.model,
            dict(self.model.named_parameters()),
            batch.support_x,
            batch.support_y,
            batch.query_x,
            batch.query_y,
            inner_lr=self._inner_lr(),
            steps=s.inner_steps,
            task_chunk=self._task_chunk,
            compiled=s.compile,
        )
        AL.set_grads(self.model, result, inner_lr=self.inner_lrs)
        self.optimizer.step()
        return result.loss.item()

    def _score_chunk(self, e: Episodes) -> EV.Evaluation:
        if self.metric is not None:
            return self.metric.evaluate(
                self.model,
                e.support_x,
                e.support_y,
                e.query_x,
                e.query_y,
                n_way=self.settings.n_way,
            )
        return EV.evaluate(
            self.model,
            dict(self.model.named_parameters()),
            e.support_x,
            e.support_y,
            e.query_x,
            e.query_y,
            inner_lr=self._inner_lr(),
            steps=self.settings.eval_inner_steps,
            adapt_prefix=self._adapt_prefix,
            task_chunk=self._task_chunk,
        )

    def _score(self, chunks: list[Episodes]) -> EV.Evaluation:
        parts = [self._score_chunk(e) for e in chunks]
        return EV.Evaluation(
            torch.cat([p.loss for p in parts]), torch.cat([p.accuracy for p in parts])
        )

    def evaluate(self) -> dict[str, float]:
        """Scores the current initialisation on the fixed meta-validation episodes.

        Returns:
            ``val_accuracy`` (mean query accuracy in [0, 1], after ``eval_inner_steps``
            adaptation steps for the optimisation-based algorithms) and ``val_loss`` (mean
            query cross-entropy).
        """
        scores = self._score(self._val)
        return {
            "val_accuracy": scores.accuracy.mean().item(),
            "val_loss": scores.loss.mean().item(),
        }

    def test(self) -> dict[str, float]:
        """Scores the current initialisation on ``test_tasks`` meta-test episodes.

        Returns:
            ``test_accuracy`` (mean), ``test_accuracy_ci95`` (1.96 standard errors over
            episodes, the half-width papers quote after "+-") and ``test_loss``.
        """
        s = self.settings
        split = load_split(s.data, "test", val_characters=s.val_characters)
        scores = self._score(self._sample(split, s.test_tasks, make_generator(TEST_SEED)))
        accuracy = scores.accuracy.double()
        spread = accuracy.std().item() if accuracy.numel() > 1 else 0.0
        return {
            "test_accuracy": accuracy.mean().item(),
            "test_accuracy_ci95": 1.96 * spread / math.sqrt(accuracy.numel()),
            "test_loss": scores.loss.mean().item(),
        }

    def step(self) -> dict[str, float]:
        """Runs one reported iteration: ``meta_iters_per_report`` meta-updates, then scores.

        Returns:
            ``val_accuracy``, ``val_loss`` and ``train_loss`` (the last meta-batch's loss),
            as Python floats. A diverged run (``inner_lr`` far too large) reports nan
            losses and chance accuracy rather than failing.
        """
        for _ in range(self.settings.meta_iters_per_report):
            self._last_train_loss = self.meta_step()
        self._iteration += 1
        return {**self.evaluate(), "train_loss": self._last_train_loss}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically: weights (and Meta-SGD's step sizes,
        under ``"inner_lr"``; Matching Networks' full-context embeddings, under
        ``"learner"``), Adam, RNG, counters.

        Returns:
            Plain tensors, numbers and dicts (loadable with ``torch.load(weights_only=True)``).
        """
        state: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "iteration": self._iteration,
            "updates": self._updates,
            "last_train_loss": self._last_train_loss,
            "seed": self.seed,
            "settings": self.settings.model_dump(),
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            # A snapshot: the live state dict shares its moment tensors with the optimizer.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "task_generator": self._task_generator.get_state(),
            "arch": getattr(self.model, "arch", ""),
        }
        if self.inner_lrs is not None:
            state["inner_lr"] = {k: v.detach().clone() for k, v in self.inner_lrs.items()}
        if self.metric is not None:
            state["learner"] = {k: v.detach().clone() for k, v in self.metric.state_dict().items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a :meth:`state_dict` into this object.

        With the settings the state was written under, training continues bit for bit (on
        CPU). Other settings are allowed if the architecture matches (population-based
        training restores a donor's checkpoint under a mutated config): weights, Adam
        moments and the task RNG come from ``state``, every hyperparameter from this
        object's settings. Meta-SGD's learned step sizes come from ``state`` too (its
        ``inner_lr`` setting only initialises them), so a Meta-SGD checkpoint restores only
        into a Meta-SGD trial and vice versa. A metric-based learner's checkpoint (an
        embedding network, no head) restores only into a metric-based trial.

        Args:
            state: A dict produced by :meth:`state_dict` (tensors on any device).

        Raises:
            ValueError: If the state has another format, another architecture or another
                family of algorithm, or learned step sizes where this trial has none (or the
                reverse).
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(
                f"unsupported Omniglot MAML state format {state.get('format')!r}; expected "
                f"{_STATE_FORMAT}. Start the trial from scratch or load it with a matching "
                "warmtune version."
            )
        defaults = {k: f.default for k, f in OmniglotSettings.model_fields.items()}
        saved = {**defaults, **state["settings"]}  # states from before the nb201 backbone
        mine = self.settings.model_dump()
        arch = getattr(self.model, "arch", "")
        metric = self.metric is not None
        if (saved["algorithm"] in METRIC_ALGORITHMS) != metric:
            raise ValueError(
                f"checkpoint of algorithm {saved['algorithm']!r} cannot restore into a "
                f"{self.settings.algorithm!r} trial: the metric-based learners (protonet, "
                "matching) keep no classifier head and the others need one; restore it with "
                "an algorithm of its own family"
            )
        # An embedding network has no n_way-wide head: any episode shape can use it.
        keys = [key for key in _ARCHITECTURE if not (metric and key == "n_way")]
        if any(saved[key] != mine[key] for key in keys) or state.get("arch", "") != arch:
            held = ", ".join(f"{key}={saved[key]}" for key in keys)
            cell = f" and cell {state['arch']}" if state.get("arch") else ""
            raise ValueError(
                f"checkpoint holds a network with {held}{cell}; build OmniglotMAML with "
                "those settings to restore it"
            )
        if ("inner_lr" in state) != (self.inner_lrs is not None):
            raise ValueError(
                f"checkpoint of algorithm {saved['algorithm']!r} cannot restore into a "
                f"{self.settings.algorithm!r} trial: only metasgd learns step sizes; restore "
                "it with the algorithm it was written with"
            )
        self.model.load_state_dict(state["model"])
        if self.metric is not None:
            self.metric.load_state_dict(state.get("learner", {}))
        if self.inner_lrs is not None:
            with torch.no_grad():
                # In place: the optimizer holds these very tensors.
                for name, rate in self.inner_lrs.items():
                    rate.copy_(state["inner_lr"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        # Optimizer.load_state_dict also restores the saved lr; the current settings win.
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.meta_lr
        self._task_generator.set_state(state["task_generator"].cpu())
        self._iteration = int(state["iteration"])
        # States written before meta_lr_halving counted reported iterations only.
        self._updates = int(
            state.get("updates", self._iteration * self.settings.meta_iters_per_report)
        )
        self._last_train_loss = float(state["last_train_loss"])
        self.seed = int(state["seed"])


def train_omniglot(config: dict, *, max_iterations: int, seed: int, **params: Any) -> None:
    """Ray Tune function trainable: meta-trains until ``max_iterations`` reported iterations.

    Use with ``ray.tune.with_parameters(train_omniglot, max_iterations=..., seed=...,
    **fixed_params)``. Resumes from ``ray.tune.get_checkpoint()`` when Tune provides one.
    The result of the last iteration adds the meta-test metrics (``test_accuracy``,
    ``test_accuracy_ci95``, ``test_loss``) over ``test_tasks`` episodes.

    Args:
        config: The searched hyperparameters (keys of :class:`OmniglotSettings`).
        max_iterations: Reported iterations to train for in total (including restored ones).
        seed: Base seed; the trial seed is ``warmtune.trainables.trial_seed(seed, config)``.
        **params: Fixed hyperparameters of the job (``data`` at least); ``config`` wins on a
            clash.

    Raises:
        pydantic.ValidationError: If a key or value is not a valid setting.
        ValueError: If ``max_iterations`` is below 1.
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    settings = OmniglotSettings(**{**params, **config})
    match_threads_to_ray()
    maml = OmniglotMAML(settings=settings, seed=trial_seed(seed, config))

    report_until(
        maml,
        max_iterations=max_iterations,
        checkpoint_every=settings.checkpoint_every,
        last_metrics=maml.test,
        checkpoint_file=CHECKPOINT_FILE,
    )


def omniglot_meta_features(params: Mapping[str, Any]) -> dict[str, Any]:
    """Task meta-features for the knowledge base: the dataset, the episode shape and the
    algorithm (when fixed; a searched ``algorithm`` is not a task property)."""
    fields = OmniglotSettings.model_fields

    def value(name: str) -> Any:
        return params.get(name, fields[name].default)

    algorithm = value("algorithm")
    return {
        "family": "omniglot",
        "dataset": "omniglot",
        "n_way": int(value("n_way")),
        "k_shot": int(value("k_shot")),
        "q_query": int(value("q_query")),
        "image_size": IMAGE_SIZE,
        "channels": 1,
        "algorithm": algorithm,
        "second_order": algorithm in ("maml", "anil", "metasgd"),
    }


__all__ = [
    "CHECKPOINT_FILE",
    "METRICS",
    "OmniglotMAML",
    "OmniglotSettings",
    "check_cpp_compiler",
    "omniglot_meta_features",
    "resolve_device",
    "train_omniglot",
]
