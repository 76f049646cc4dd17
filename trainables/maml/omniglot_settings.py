"""The settings of the Omniglot few-shot trainable: every hyperparameter, validated once.

:class:`OmniglotSettings` is what a job's fixed params merged with the searched config
must satisfy; :func:`warmtune.trainables.runtime.resolve_device` and
:func:`~warmtune.trainables.runtime.check_cpp_compiler` turn two of them into what the
trainer needs, failing early with the setting to change.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from warmtune.trainables.nas.settings import CellFields
from warmtune.trainables.omniglot import DEFAULT_VAL_CHARACTERS, DRAWERS, check_data_folder
from warmtune.trainables.runtime import Device

from .conv import Downsample
from .metric import METRIC_ALGORITHMS

Algorithm = Literal["maml", "fomaml", "anil", "reptile", "metasgd", "protonet", "matching"]
Backbone = Literal["conv4", "nb201"]


class OmniglotSettings(CellFields):
    """Every hyperparameter of an Omniglot meta-learning trial.

    Defaults follow the MAML paper's 5-way 1-shot setup (Finn et al. 2017): 64 filters,
    4 blocks, inner step 0.4, one inner step in training and three at evaluation, meta-batch
    32. ``n_way``, ``k_shot`` and ``q_query`` are the shape of the validation and test
    episodes, and of the training ones unless ``train_*`` says otherwise. The inner-loop
    settings apply to the optimisation-based algorithms only, ``cosine_scale`` and ``fce``
    to Matching Networks only.

    The platform validates a job's fixed params merged with the searched config against
    this model, so an unknown key or a bad value fails with an error naming the field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field(
        description="omniglot (the dataset in the data directory) or a folder holding "
        "images_background.npz and images_evaluation.npz; made an absolute path at "
        "validation, since Ray workers run elsewhere."
    )
    n_way: int = Field(5, ge=2, description="Classes per task.")
    k_shot: int = Field(1, ge=1, description="Support images per class.")
    q_query: int = Field(15, ge=1, description="Query images per class.")
    train_n_way: int | None = Field(
        None,
        ge=2,
        description="Classes per meta-training task, when it differs from n_way (Snell et "
        "al. train Prototypical Networks 60-way); protonet and matching only, since the "
        "other algorithms' linear head has n_way outputs.",
    )
    train_k_shot: int | None = Field(
        None, ge=1, description="Support images per class in meta-training (default k_shot)."
    )
    train_q_query: int | None = Field(
        None, ge=1, description="Query images per class in meta-training (default q_query)."
    )
    algorithm: Algorithm = Field(
        "maml",
        description="maml, fomaml, anil, reptile or metasgd (Meta-SGD: MAML with learned "
        "per-parameter inner step sizes), or the metric-based protonet (Prototypical "
        "Networks) or matching (Matching Networks).",
    )
    inner_lr: float = Field(
        0.4,
        gt=0,
        description="Inner-loop (adaptation) step size; for metasgd, the initial value of "
        "every learned step size.",
    )
    inner_steps: int = Field(1, ge=1, description="Inner gradient steps during meta-training.")
    eval_inner_steps: int = Field(
        3, ge=0, description="Adaptation steps (at inner_lr) on validation and test tasks."
    )
    meta_lr: float = Field(0.001, gt=0, description="Adam learning rate of the meta-update.")
    meta_lr_halving: int = Field(
        0,
        ge=0,
        description="Halve meta_lr every this many meta-updates (0: constant). Snell et al. "
        "halve it every 2,000 episodes.",
    )
    meta_batch_size: int = Field(32, ge=1, description="Tasks per meta-update.")
    cosine_scale: float = Field(
        1.0,
        gt=0,
        description="matching: cosine similarities are multiplied by it before the softmax "
        "attention (an inverse temperature; 1 is the paper's).",
    )
    fce: bool = Field(
        False,
        description="matching: full-context embeddings (a bidirectional LSTM over the "
        "support set, an attention LSTM for each query; Vinyals et al. 2016, appendix).",
    )
    fce_steps: int = Field(
        5, ge=1, description="matching with fce: attention read steps per query."
    )
    backbone: Backbone = Field(
        "conv4",
        description="conv4 (the MAML paper's conv blocks) or nb201 (a NAS-Bench-201 cell "
        "network: give arch or search the six edges; filters is its first-stage width).",
    )
    filters: int = Field(64, ge=1, description="Channels of every conv block.")
    blocks: int = Field(4, ge=1, le=5, description="Conv blocks (each halves the image).")
    downsample: Downsample = Field(
        "stride",
        description="conv4: how each block halves the image: stride (a stride-2 "
        "convolution, the MAML paper's Omniglot network) or maxpool (a stride-1 convolution "
        "then 2x2 max-pooling, the Prototypical and Matching Networks papers' network; four "
        "times the convolution work, at most 4 blocks).",
    )
    meta_iters_per_report: int = Field(
        100, ge=1, description="Meta-iterations per reported training iteration."
    )
    eval_tasks: int = Field(100, ge=1, description="Fixed meta-validation episodes.")
    test_tasks: int = Field(600, ge=1, description="Meta-test episodes at the last iteration.")
    val_characters: int = Field(
        DEFAULT_VAL_CHARACTERS,
        ge=1,
        lt=1200,
        description="Meta-training characters held out for validation.",
    )
    device: Device = Field(
        "auto", description="auto (cuda when the trial sees a GPU), cpu or cuda."
    )
    checkpoint_every: int = Field(1, ge=1, description="Checkpoint every N reported iterations.")
    compile: bool = Field(
        False,
        description="Run the meta-update through torch.compile (inductor), which fuses its "
        "elementwise work: 1.16-1.60x eager's meta-iterations per second for second-order "
        "MAML on a CPU (docs/performance.md), after a one-off compile per network shape: "
        "about a minute for conv4, minutes for nb201 cells, seconds when inductor's on-disk "
        "cache has it. "
        "For long trials; on a CPU it needs a C++ compiler (g++ or $CXX).",
    )

    @field_validator("data")
    @classmethod
    def _data_folder(cls, value: str) -> str:
        return str(check_data_folder(os.path.expandvars(value)))

    @model_validator(mode="after")
    def _cell_needs_nb201(self) -> OmniglotSettings:
        if self.backbone == "conv4" and self.has_cell():
            raise ValueError(
                "a cell (arch or edge_*) is given but backbone is conv4; set "
                "backbone: nb201 to meta-learn with the cell network"
            )
        if self.backbone == "nb201" and not self.has_cell():
            raise ValueError(
                "backbone nb201 needs a cell: set arch ('|nor_conv_3x3~0|+|...') "
                "or search the six edges edge_1_0 ... edge_3_2"
            )
        return self

    @model_validator(mode="after")
    def _shots_fit(self) -> OmniglotSettings:
        if self.k_shot + self.q_query > DRAWERS:
            raise ValueError(
                f"k_shot + q_query = {self.k_shot + self.q_query} exceeds the {DRAWERS} "
                "drawings per character; lower q_query"
            )
        _, k_shot, q_query = self.train_shape()
        if k_shot + q_query > DRAWERS:
            raise ValueError(
                f"train_k_shot + train_q_query = {k_shot + q_query} (unset ones default to "
                f"k_shot and q_query) exceeds the {DRAWERS} drawings per character; lower "
                "train_q_query"
            )
        return self

    @model_validator(mode="after")
    def _maxpool_depth(self) -> OmniglotSettings:
        if self.downsample == "maxpool" and self.backbone != "conv4":
            raise ValueError(
                "downsample maxpool is a conv4 setting and backbone is nb201, whose cells "
                "downsample in their own reduction blocks; drop downsample"
            )
        if self.downsample == "maxpool" and self.blocks > 4:
            raise ValueError(
                f"downsample maxpool with {self.blocks} blocks pools 28x28 images below 1x1 "
                "(28 -> 14 -> 7 -> 3 -> 1); use at most 4 blocks or downsample: stride"
            )
        return self

    @model_validator(mode="after")
    def _family_settings(self) -> OmniglotSettings:
        metric = self.algorithm in METRIC_ALGORITHMS
        if not metric and self.train_n_way not in (None, self.n_way):
            raise ValueError(
                f"train_n_way={self.train_n_way} differs from n_way={self.n_way}, but "
                f"{self.algorithm}'s linear head has n_way outputs; drop train_n_way or use "
                "protonet or matching, which have no head"
            )
        if self.fce and self.algorithm != "matching":
            raise ValueError(
                f"fce (full-context embeddings) is a Matching Networks option and algorithm "
                f"is {self.algorithm}; set fce: false or algorithm: matching"
            )
        return self

    def train_shape(self) -> tuple[int, int, int]:
        """``(way, shot, query)`` of the meta-training episodes."""
        return (
            self.train_n_way or self.n_way,
            self.train_k_shot or self.k_shot,
            self.train_q_query or self.q_query,
        )


__all__ = [
    "Algorithm",
    "Backbone",
    "Device",
    "OmniglotSettings",
]
