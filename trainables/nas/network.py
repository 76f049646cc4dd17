"""NAS-Bench-201 child networks (Dong & Yang, ICLR 2020), built from the table's cell string.

A cell is a DAG over 4 nodes: node ``j`` sums one operation applied to each earlier node
``i`` (edge ``edge_{j}_{i}``), node 3 is the output. The five operations are those of the
benchmark (:data:`warmtune.trainables.benchmarks.nb201.OPS`):

* ``none``: the edge is absent (NAS-Bench-201's zero op contributes nothing to the sum);
* ``skip_connect``: identity;
* ``nor_conv_1x1`` / ``nor_conv_3x3``: ReLU -> convolution (no bias) -> batch norm;
* ``avg_pool_3x3``: 3x3 average pooling, stride 1, padding not counted.

The macro skeleton is the benchmark's: a 3x3 stem convolution with batch norm, three stages
of ``cells_per_stage`` cells at ``C``, ``2C`` and ``4C`` channels, a residual reduction
block between stages (ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus a 2x2 average pool and 1x1
convolution shortcut), then batch norm, ReLU, global average pooling and a linear ``head``.
The benchmark itself uses ``C = 16`` and 5 cells per stage on 32x32 colour images.

The same string that names a cell in the table builds it here, so a cell found with the
table backend trains for real unchanged.

Batch norm comes in two kinds (``norm``):

* ``"running"``: ``nn.BatchNorm2d`` with running statistics, for ordinary training;
* ``"batch"``: batch statistics always, written out as elementwise ops
  (:func:`warmtune.trainables.layers.batch_norm`), stateless, the kind MAML needs
  under ``torch.func`` (``vmap`` over the native kernel gives a wrong second-order
  meta-gradient with torch 2.13).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from warmtune.trainables.benchmarks.nb201 import EDGES, OPS, arch_to_string, string_to_arch
from warmtune.trainables.layers import batch_norm

Norm = Literal["running", "batch"]

__all__ = ["EDGES", "OPS", "CellNetwork", "Norm", "cell_string", "count_parameters"]


def cell_string(config: Mapping[str, Any]) -> str:
    """The cell string of a config holding either ``arch`` (a cell string) or all six edges.

    Raises:
        ValueError: Neither or both forms are given, or an edge or the string is invalid.
    """
    edges = [e for e in EDGES if config.get(e) is not None]
    arch = config.get("arch")
    if arch is not None and edges:
        raise ValueError(
            f"give the cell either as arch or as the six edges, not both (got arch and {edges})"
        )
    if arch is not None:
        return arch_to_string(string_to_arch(str(arch)))
    if len(edges) != len(EDGES):
        missing = [e for e in EDGES if e not in edges]
        raise ValueError(
            f"the cell lacks {missing}; give all of {list(EDGES)} (each one of {list(OPS)}) "
            "or arch: '|nor_conv_3x3~0|+|...'"
        )
    return arch_to_string(config)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class BatchStatNorm(nn.Module):
    """Batch norm that always uses the statistics of the batch; no state besides its affine."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return batch_norm(x, self.scale, self.shift)


def _norm(kind: Norm, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "running" else BatchStatNorm(channels)


class ReLUConvBN(nn.Module):
    """ReLU -> convolution without bias -> batch norm (NAS-Bench-201's ``ReLUConvBN``)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, stride: int = 1, norm: Norm = "running"
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.norm = _norm(norm, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(F.relu(x)))


class AvgPool3x3(nn.Module):
    """3x3 average pooling, stride 1, averaging only over pixels inside the image."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _op(name: str, channels: int, norm: Norm) -> nn.Module | None:
    if name == "none":
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, norm=norm)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, norm=norm)
    if name == "avg_pool_3x3":
        return AvgPool3x3()
    raise ValueError(f"unknown operation {name!r}; use one of {list(OPS)}")


class Cell(nn.Module):
    """One NAS-Bench-201 cell; ``none`` edges hold no module and add nothing.

    As in the benchmark's code, every other edge runs even when its source node is zero
    (all of that node's inputs are ``none``): a convolution edge then adds its batch
    norm's learned shift. A cell whose output node has only ``none`` inputs outputs zeros
    (such cells exist in the benchmark and train to chance accuracy).
    """

    def __init__(self, arch: str, channels: int, *, norm: Norm) -> None:
        super().__init__()
        config = string_to_arch(arch)
        self.edges = nn.ModuleDict()
        for edge in EDGES:
            op = _op(config[edge], channels, norm)
            if op is not None:
                self.edges[edge] = op

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for j in (1, 2, 3):
            inputs = [
                self.edges[f"edge_{j}_{i}"](nodes[i])
                for i in range(j)
                if f"edge_{j}_{i}" in self.edges
            ]
            nodes.append(functools.reduce(operator.add, inputs) if inputs else torch.zeros_like(x))
        return nodes[3]


class ResidualReduction(nn.Module):
    """The reduction block between stages: halves the resolution, doubles the channels."""

    def __init__(self, c_in: int, c_out: int, *, norm: Norm) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2, norm=norm)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, norm=norm)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(F.avg_pool2d(x, 2, stride=2))


class CellNetwork(nn.Module):
    """The NAS-Bench-201 macro skeleton around one cell, repeated.

    Parameter names end in ``head.weight`` / ``head.bias`` for the classifier, so MAML's
    ANIL (which adapts ``head.*`` only) works with this network as its backbone.

    Args:
        arch: The cell string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+...``.
        num_classes: Outputs of the linear head; None for no head (the network then maps
            images to ``4 * channels``-wide embeddings).
        channels: ``C``, the channels of the first stage (16 in the benchmark).
        cells_per_stage: ``N``, cells in each of the three stages (5 in the benchmark).
        in_channels: Image channels (1 for Omniglot, 3 for CIFAR).
        norm: ``"running"`` (``nn.BatchNorm2d``) or ``"batch"`` (stateless batch statistics).
        generator: RNG for the initial weights (the global torch RNG when ``None``).

    Raises:
        ValueError: A size is not positive or the cell string is invalid.
    """

    def __init__(
        self,
        arch: str,
        *,
        num_classes: int | None,
        channels: int = 16,
        cells_per_stage: int = 5,
        in_channels: int = 3,
        norm: Norm = "running",
        generator: torch.Generator | None = None,
    ) -> None:
        for name, value in (
            ("num_classes", 1 if num_classes is None else num_classes),
            ("channels", channels),
            ("cells_per_stage", cells_per_stage),
            ("in_channels", in_channels),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if norm not in ("running", "batch"):
            raise ValueError(f"norm must be 'running' or 'batch', got {norm!r}")
        super().__init__()
        self.arch = arch_to_string(string_to_arch(arch))
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.stem_norm = _norm(norm, channels)
        layers: list[nn.Module] = []
        width = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(width, 2 * width, norm=norm))
                width *= 2
            layers.extend(Cell(self.arch, width, norm=norm) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.last_norm = _norm(norm, width)
        self.head = nn.Linear(width, num_classes) if num_classes is not None else None
        self.embedding_dim = width
        self.reset_parameters(generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_channels, H, W]`` images -> ``[B, num_classes]`` logits (``[B, width]``
        embeddings without a head)."""
        x = self.cells(self.stem_norm(self.stem(x)))
        features = F.relu(self.last_norm(x)).mean(dim=(2, 3))
        return features if self.head is None else self.head(features)

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Re-draws every weight from ``generator``: PyTorch's default scheme for
        convolutions and the head, identity batch norms."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    bound = 1.0 / math.sqrt(module.weight[0].numel())
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
            elif isinstance(module, BatchStatNorm):
                module.scale.fill_(1.0)
                module.shift.fill_(0.0)
