"""Scoring an initialisation: each task's query loss and accuracy after adapting on its
support set, for the optimisation-based learners of :mod:`.algorithms` (the metric
learners of :mod:`.metric` return the same :class:`Evaluation`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from . import functional as MF
from .algorithms import check_vmap_safe
from .functional import InnerLR, LossFn

__all__ = ["Evaluation", "adapted_logits", "evaluate"]


class Evaluation(NamedTuple):
    """Per-task scores after adaptation.

    Attributes:
        loss: ``[T]`` query loss.
        accuracy: ``[T]`` query accuracy in ``[0, 1]``.
    """

    loss: Tensor
    accuracy: Tensor


def adapted_logits(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    *,
    inner_lr: InnerLR,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    adapt_prefix: str = "",
    task_chunk: int | None = None,
) -> Tensor:
    """Query logits of every task after adapting on its support set (no meta-gradient).

    Args:
        model: Architecture template.
        params: Initialisation.
        support_x: ``[T, N*K, *input_shape]``.
        support_y: ``[T, N*K]``.
        query_x: ``[T, M, *input_shape]``.
        inner_lr: Inner-loop step size (per-parameter step sizes: only the adapted
            parameters' entries are used).
        steps: Adaptation steps (0 scores the initialisation itself).
        loss_fn: Inner-loop loss.
        adapt_prefix: Only parameters whose name starts with it adapt (``""``: all;
            ``"head."`` for ANIL).
        task_chunk: Tasks vectorised at a time, see :func:`maml`.

    Returns:
        ``[T, M, n_way]`` logits, detached.
    """
    check_vmap_safe(model)
    adapting, fixed = MF.split_adapted(MF.detached(params), adapt_prefix)
    rates = MF.rates_for(MF.constant_rate(inner_lr), adapting)

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
        adapted = MF.adapt(
            model,
            adapting,
            sx,
            sy,
            loss_fn=loss_fn,
            inner_lr=rates,
            steps=steps,
            first_order=True,
            frozen=fixed,
        )
        return MF.forward(model, {**fixed, **adapted}, qx)

    tasks = support_x.shape[0]
    chunk = tasks if task_chunk is None else task_chunk
    if chunk < 1:
        raise ValueError(f"task_chunk must be >= 1 or None (no chunking), got {task_chunk}")
    with torch.no_grad():
        return torch.cat(
            [
                vmap(one_task)(*(t[i : i + chunk] for t in (support_x, support_y, query_x)))
                for i in range(0, tasks, chunk)
            ]
        )


def evaluate(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: InnerLR,
    steps: int,
    adapt_prefix: str = "",
    task_chunk: int | None = None,
) -> Evaluation:
    """Cross-entropy and accuracy of every task's query set after adaptation.

    Args:
        model: Architecture template.
        params: Initialisation.
        support_x: ``[T, N*K, *input_shape]``.
        support_y: ``[T, N*K]``.
        query_x: ``[T, M, *input_shape]``.
        query_y: ``[T, M]``.
        inner_lr: Inner-loop step size, see :func:`adapted_logits`.
        steps: Adaptation steps.
        adapt_prefix: See :func:`adapted_logits`.
        task_chunk: Tasks vectorised at a time, see :func:`maml`.

    Returns:
        Per-task loss and accuracy.
    """
    logits = adapted_logits(
        model,
        params,
        support_x,
        support_y,
        query_x,
        inner_lr=inner_lr,
        steps=steps,
        adapt_prefix=adapt_prefix,
        task_chunk=task_chunk,
    )
    loss = F.cross_entropy(logits.flatten(0, 1), query_y.flatten(), reduction="none")
    accuracy = (logits.argmax(dim=-1) == query_y).to(logits.dtype).mean(dim=1)
    return Evaluation(loss.view_as(query_y).mean(dim=1), accuracy)
