"""Layers written as plain tensor functions, shared by the few-shot backbones (maml/)
and the NAS child networks (nas/): safe under ``vmap`` and double backward, stateless."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BN_EPS", "batch_norm"]

BN_EPS = 1e-5
"""Added to the batch variance before the inverse square root (PyTorch's default)."""


def batch_norm(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Batch-statistics batch norm written out as elementwise ops and means.

    Safe under ``vmap`` and double backward (see the module docstring), stateless.

    Args:
        x: ``[B, C, H, W]``.
        scale: ``[C]`` multiplier.
        shift: ``[C]`` offset.

    Returns:
        ``scale * (x - mean) / sqrt(var + eps) + shift``, statistics over ``B, H, W``.
    """
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=(0, 2, 3), keepdim=True)
    normalised = centred * torch.rsqrt(var + BN_EPS)
    return normalised * scale[:, None, None] + shift[:, None, None]
