"""The convolutional backbone of MAML's Omniglot experiments (Finn et al. 2017, sec. 5.2).

``blocks`` x [3x3 conv with ``filters`` channels, stride 2 (no max-pool, as in the MAML
Omniglot code) -> batch norm -> ReLU], then a spatial mean and a linear head to ``n_way``
logits. 28x28 inputs shrink 28 -> 14 -> 7 -> 4 -> 2 over the default four blocks.
With ``downsample="maxpool"`` each block is instead a stride-1 conv -> batch norm -> ReLU ->
2x2 max-pool, the network of the Prototypical and Matching Networks papers (Snell et al.
2017, Vinyals et al. 2016): 28 -> 14 -> 7 -> 3 -> 1, four times the convolution work.

Batch norm always normalises with the statistics of the batch it is given (a task's support
or query set), never with running averages: there is no state to mutate, which is what
``torch.func`` transforms require and what MAML does (the statistics are those of the task).
It is written out as ``(x - mean) * rsqrt(var + eps) * scale + shift`` instead of calling the
native ``F.batch_norm``. Under ``vmap`` over tasks, the native kernel gave a wrong
second-order MAML meta-gradient with torch 2.13 (errors of 0.3-12% of the gradient's scale on
tiny nets, first-order exact, the same computation task by task right);
``tests/trainables/test_maml_omniglot.py`` checks both facts. The explicit form is only
elementwise ops and means, whose batching and double-backward rules are exact.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from warmtune.trainables.layers import BN_EPS, batch_norm

Downsample = Literal["stride", "maxpool"]


class ConvBlock(nn.Module):
    """3x3 stride-2 convolution, batch-statistics batch norm, ReLU (or, with
    ``downsample="maxpool"``, a stride-1 convolution and a 2x2 max-pool after the ReLU).

    The convolution has no bias: batch norm subtracts the per-channel mean right after it,
    which cancels any bias exactly (its gradient would be zero).

    Args:
        in_channels: Input channels.
        out_channels: Output channels (filters).
        dtype: Parameter dtype.
        downsample: ``"stride"`` or ``"maxpool"``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        dtype: torch.dtype,
        downsample: Downsample = "stride",
    ) -> None:
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample must be 'stride' or 'maxpool', got {downsample!r}")
        super().__init__()
        self.downsample = downsample
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3, dtype=dtype))
        self.scale = nn.Parameter(torch.ones(out_channels, dtype=dtype))
        self.shift = nn.Parameter(torch.zeros(out_channels, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in, H, W] -> [B, out, ceil(H/2), ceil(W/2)]`` (``floor`` with max-pool)."""
        if self.downsample == "maxpool":
            x = F.conv2d(x, self.weight, padding=1)
            return F.max_pool2d(F.relu(self.batch_norm(x)), 2)
        x = F.conv2d(x, self.weight, stride=2, padding=1)
        return F.relu(self.batch_norm(x))

    def batch_norm(self, x: Tensor) -> Tensor:
        """Normalises each channel with the batch's mean and (biased) variance, then scales.

        Args:
            x: ``[B, C, H, W]``.

        Returns:
            ``scale * (x - mean) / sqrt(var + eps) + shift``, statistics over ``B, H, W``.
        """
        return batch_norm(x, self.scale, self.shift)


class ConvNet(nn.Module):
    """The MAML Omniglot classifier: conv blocks, spatial mean, linear head.

    Parameter names are ``blocks.{i}.weight``, ``blocks.{i}.scale``, ``blocks.{i}.shift``,
    ``head.weight`` and ``head.bias`` (ANIL adapts the ``head.`` ones only). Without a head
    (``n_way=None``) it is an embedding network: images to ``filters``-wide embeddings, what
    the metric-based learners of :mod:`.metric` compare.

    Args:
        n_way: Output classes; None for no head.
        filters: Channels of every block (64 in the paper).
        blocks: Number of conv blocks (4 in the paper).
        in_channels: Input channels (1 for Omniglot).
        generator: RNG for the initial weights; keeps initialisation off the global RNG.
        dtype: Parameter dtype.
        downsample: ``"stride"`` (the MAML paper's blocks) or ``"maxpool"`` (the metric
            learners' papers'), see the module docstring.

    Raises:
        ValueError: If a size is not positive.
    """

    def __init__(
        self,
        *,
        n_way: int | None,
        filters: int = 64,
        blocks: int = 4,
        in_channels: int = 1,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        downsample: Downsample = "stride",
    ) -> None:
        for name, value in (
            ("n_way", 1 if n_way is None else n_way),
            ("filters", filters),
            ("blocks", blocks),
            ("in_channels", in_channels),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                ConvBlock(
                    in_channels=in_channels if i == 0 else filters,
                    out_channels=filters,
                    dtype=dtype,
                    downsample=downsample,
                )
                for i in range(blocks)
            )
        )
        self.head = nn.Linear(filters, n_way, dtype=dtype) if n_way is not None else None
        self.embedding_dim = filters
        self.reset_parameters(generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_channels, H, W]`` images -> ``[B, n_way]`` logits (``[B, filters]``
        embeddings without a head)."""
        features = self.blocks(x).mean(dim=(2, 3))
        return features if self.head is None else self.head(features)

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Re-draws every weight from ``generator`` (global torch RNG when None).

        Conv and head weights follow ``nn.Conv2d`` / ``nn.Linear``'s default scheme; batch
        norm starts as the identity (scale 1, shift 0).

        Args:
            generator: RNG to draw from.
        """
        for block in self.modules():
            if not isinstance(block, ConvBlock):
                continue
            nn.init.kaiming_uniform_(block.weight, a=math.sqrt(5), generator=generator)
            block.scale.fill_(1.0)
            block.shift.fill_(0.0)
        if self.head is None:
            return
        nn.init.kaiming_uniform_(self.head.weight, a=math.sqrt(5), generator=generator)
        bound = 1.0 / math.sqrt(self.head.weight.shape[1])
        nn.init.uniform_(self.head.bias, -bound, bound, generator=generator)


HEAD_PREFIX = "head."
"""Names of the parameters ANIL adapts in the inner loop start with this."""


__all__ = ["BN_EPS", "HEAD_PREFIX", "ConvBlock", "ConvNet", "Downsample", "batch_norm"]
