"""The sinusoid regression task distribution of the MAML paper (Finn et al. 2017, sec. 5.1).

A task is ``y = amplitude * sin(x - phase)`` with amplitude ~ U[0.1, 5.0] and
phase ~ U[0, pi]; inputs are drawn from U[-5, 5]. Sampling always takes an explicit
``torch.Generator`` so that trials own their randomness.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)


class TaskBatch(NamedTuple):
    """A meta-batch of regression tasks; data tensors are ``[tasks, points, 1]``.

    Attributes:
        support_x: Support inputs, used to adapt.
        support_y: Support targets.
        query_x: Query inputs, used to score the adapted model.
        query_y: Query targets.
        amplitude: Per-task amplitude, ``[tasks]``.
        phase: Per-task phase, ``[tasks]``.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    amplitude: Tensor
    phase: Tensor


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float], **kwargs) -> Tensor:
    low, high = bounds
    return torch.rand(shape, **kwargs) * (high - low) + low


def sample_tasks(
    num_tasks: int,
    *,
    k_shot: int,
    k_query: int | None = None,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> TaskBatch:
    """Draws ``num_tasks`` sinusoid tasks with ``k_shot`` support and ``k_query`` query points.

    Args:
        num_tasks: Number of tasks (meta-batch size).
        k_shot: Support points per task.
        k_query: Query points per task; defaults to ``k_shot``.
        generator: RNG to draw from; its state advances.
        dtype: Floating dtype of the returned tensors.

    Returns:
        The sampled tasks.

    Raises:
        ValueError: If a count is not positive.
    """
    k_query = k_shot if k_query is None else k_query
    for name, value in (("num_tasks", num_tasks), ("k_shot", k_shot), ("k_query", k_query)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    kw = {"generator": generator, "dtype": dtype}
    amplitude = _uniform((num_tasks,), AMPLITUDE_RANGE, **kw)
    phase = _uniform((num_tasks,), PHASE_RANGE, **kw)
    x = _uniform((num_tasks, k_shot + k_query, 1), INPUT_RANGE, **kw)
    y = amplitude[:, None, None] * torch.sin(x - phase[:, None, None])
    return TaskBatch(
        support_x=x[:, :k_shot],
        support_y=y[:, :k_shot],
        query_x=x[:, k_shot:],
        query_y=y[:, k_shot:],
        amplitude=amplitude,
        phase=phase,
    )
