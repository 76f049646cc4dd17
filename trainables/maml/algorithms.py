"""Optimisation-based meta-learning algorithms as (meta-loss, meta-gradient) functions.

Every algorithm here has the same signature and returns a :class:`MetaGradient` for one
meta-batch, computed with ``torch.func`` on top of :mod:`.functional` (``vmap`` over tasks,
``grad`` through the inner loop, no per-task module copies):

* :func:`maml`: MAML with the full second-order meta-gradient (Finn et al. 2017);
* :func:`first_order_maml`: FOMAML, inner gradients treated as constants;
* :func:`anil`: ANIL, "almost no inner loop" (Raghu et al. 2020): only the head adapts in
  the inner loop; the meta-gradient (second order) still reaches every parameter;
* :func:`reptile`: Reptile (Nichol et al. 2018): the meta-"gradient" is
  ``params - mean_t(adapted_t)``, so an SGD step with learning rate ``eps`` is exactly
  Reptile's interpolation ``params + eps * (mean adapted - params)``, and any other
  ``torch.optim`` optimizer (Adam) plugs in unchanged.

A trainer sets ``p.grad = result.grads[name]`` on its module's parameters and calls
``optimizer.step()``; :func:`evaluate` scores an initialisation after adaptation.

Meta-SGD (learned per-parameter inner learning rates) is not here: it needs
:func:`.functional.adapt` to accept one step size per parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from . import functional as MF
from .conv import HEAD_PREFIX
from .functional import LossFn, Params


class MetaGradient(NamedTuple):
    """The result of one meta-batch.

    Attributes:
        loss: Mean post-adaptation query loss over the tasks, a detached scalar tensor.
        grads: Meta-gradient (descent direction's negative), keyed like ``params``.
    """

    loss: Tensor
    grads: Params


class Algorithm(Protocol):
    """The signature shared by :func:`maml`, :func:`first_order_maml`, :func:`anil` and
    :func:`reptile` (``params`` first, data tensors with a leading task dimension)."""

    def __call__(
        self,
        model: nn.Module,
        params: Mapping[str, Tensor],
        support_x: Tensor,
        support_y: Tensor,
        query_x: Tensor,
        query_y: Tensor,
        *,
        inner_lr: float,
        steps: int,
        loss_fn: LossFn = ...,
        task_chunk: int | None = ...,
    ) -> MetaGradient: ...


def check_vmap_safe(model: nn.Module) -> None:
    """Rejects models whose meta-gradient under ``vmap`` is known to be wrong.

    Native batch-norm modules (``nn.BatchNorm*``) qualify: with torch 2.13 the second-order
    meta-gradient of ``vmap`` over ``F.batch_norm`` disagrees with the per-task computation.

    Args:
        model: Architecture template.

    Raises:
        ValueError: If ``model`` contains an ``nn.BatchNorm`` module.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"module {name!r} is a native {type(module).__name__}, whose second-order "
                "meta-gradient under vmap is wrong (torch 2.13); use the explicit batch "
                "norm of warmtune.trainables.maml.conv.ConvBlock instead"
            )


def _split(params: Mapping[str, Tensor], prefix: str) -> tuple[Params, Params]:
    adapted = {n: p for n, p in params.items() if n.startswith(prefix)}
    if not adapted:
        raise ValueError(
            f"no parameter name starts with {prefix!r} (got {', '.join(params)}); pass the "
            "prefix of the layers the inner loop adapts"
        )
    return adapted, {n: p for n, p in params.items() if not n.startswith(prefix)}


Data = tuple[Tensor, Tensor, Tensor, Tensor]


def _over_chunks(
    compute: Callable[[Data], tuple[Params, Tensor]], data: Data, task_chunk: int | None
) -> tuple[Params, Tensor]:
    """``compute`` (a mean over tasks, and its gradient) on consecutive slices of at most
    ``task_chunk`` tasks, combined into the mean over all tasks.

    Why: on a CPU, ``vmap`` over a whole meta-batch of conv nets turns every elementwise op
    into one pass over tens of MB, far beyond the caches; slices of a few tasks keep the
    operands cache-resident (see :mod:`.throughput`). On a GPU one slice is best.
    """
    tasks = data[0].shape[0]
    if task_chunk is None or task_chunk >= tasks:
        return compute(data)
    if task_chunk < 1:
        raise ValueError(f"task_chunk must be >= 1 or None (no chunking), got {task_chunk}")
    total: Params = {}
    total_loss = torch.zeros(())
    for start in range(0, tasks, task_chunk):
        part = tuple(t[start : start + task_chunk] for t in data)
        grads, loss = compute(part)  # type: ignore[arg-type]
        weight = part[0].shape[0] / tasks
        total_loss = total_loss.to(loss) + weight * loss
        for name, g in grads.items():
            total[name] = total[name] + weight * g if name in total else weight * g
    return total, total_loss


def maml(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: float,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    first_order: bool = False,
    task_chunk: int | None = None,
) -> MetaGradient:
    """MAML: gradient of the mean post-adaptation query loss w.r.t. the initialisation.

    Args:
        model: Architecture template (see :mod:`.functional`).
        params: Meta-parameters; used detached, their own ``requires_grad`` is irrelevant.
        support_x: ``[T, N*K, *input_shape]``.
        support_y: ``[T, N*K]``.
        query_x: ``[T, N*Q, *input_shape]``.
        query_y: ``[T, N*Q]``.
        inner_lr: Inner-loop step size.
        steps: Inner gradient steps (>= 1).
        loss_fn: ``loss_fn(logits, labels) -> scalar``; cross-entropy by default.
        first_order: Drop the second-order terms (see :func:`first_order_maml`).
        task_chunk: Vectorise over at most this many tasks at a time (None: all at once);
            the result is the same up to float rounding. A few tasks is fastest on a CPU.

    Returns:
        The meta-loss and the meta-gradient.

    Raises:
        ValueError: If ``steps`` < 1, ``inner_lr`` < 0, the data disagree on the number of
            tasks, or the model holds native batch norm.
    """
    _check_steps(steps)
    check_vmap_safe(model)

    base = MF.detached(params)

    def compute(data: Data) -> tuple[Params, Tensor]:
        def objective(p: Params) -> Tensor:
            return MF.meta_loss(
                model,
                p,
                *data,
                loss_fn=loss_fn,
                inner_lr=inner_lr,
                steps=steps,
                first_order=first_order,
            )

        return grad_and_value(objective)(base)

    grads, loss = _over_chunks(compute, (support_x, support_y, query_x, query_y), task_chunk)
    return MetaGradient(loss.detach(), grads)


def first_order_maml(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: float,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    task_chunk: int | None = None,
) -> MetaGradient:
    """First-order MAML: the query-loss gradient at the adapted parameters, averaged.

    Same arguments and result as :func:`maml`; the inner gradients are treated as constants,
    so no Hessian-vector products are formed.
    """
    return maml(
        model,
        params,
        support_x,
        support_y,
        query_x,
        query_y,
        inner_lr=inner_lr,
        steps=steps,
        loss_fn=loss_fn,
        first_order=True,
        task_chunk=task_chunk,
    )


def anil(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: float,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    head_prefix: str = HEAD_PREFIX,
    first_order: bool = False,
    task_chunk: int | None = None,
) -> MetaGradient:
    """ANIL: the inner loop adapts the head only; the meta-gradient covers every parameter.

    The body's parameters reach the inner loop as fixed tensors (through ``buffers`` of
    :func:`.functional.adapt`, which merges them into the ``functional_call``), so they are
    not stepped there but the meta-gradient still flows into them, second order unless
    ``first_order``.

    Args:
        model: Architecture template.
        params: Meta-parameters.
        support_x: ``[T, N*K, *input_shape]``.
        support_y: ``[T, N*K]``.
        query_x: ``[T, N*Q, *input_shape]``.
        query_y: ``[T, N*Q]``.
        inner_lr: Inner-loop step size.
        steps: Inner gradient steps (>= 1).
        loss_fn: ``loss_fn(logits, labels) -> scalar``.
        head_prefix: Parameters whose name starts with it are adapted (``"head."``).
        first_order: Detach the inner gradients.
        task_chunk: Tasks vectorised at a time, see :func:`maml`.

    Returns:
        The meta-loss and the meta-gradient (keys and order of ``params``).

    Raises:
        ValueError: As :func:`maml`, or if no parameter name starts with ``head_prefix``.
    """
    _check_steps(steps)
    check_vmap_safe(model)
    head, body = _split(MF.detached(params), head_prefix)

    def compute(data: Data) -> tuple[Params, Tensor]:
        def objective(body: Params, head: Params) -> Tensor:
            return MF.meta_loss(
                model,
                head,
                *data,
                loss_fn=loss_fn,
                inner_lr=inner_lr,
                steps=steps,
                first_order=first_order,
                buffers=body,
            )

        (body_grads, head_grads), loss = grad_and_value(objective, argnums=(0, 1))(body, head)
        return {**body_grads, **head_grads}, loss

    grads, loss = _over_chunks(compute, (support_x, support_y, query_x, query_y), task_chunk)
    return MetaGradient(loss.detach(), {name: grads[name] for name in params})


def reptile(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: float,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    task_chunk: int | None = None,
) -> MetaGradient:
    """Reptile: meta-"gradient" ``params - mean_t(adapted_t)``, no backpropagation through
    the inner loop.

    Each task adapts with ``steps`` plain gradient steps on its support set (as every
    algorithm here, so ``k_shot`` means the same for all of them). With one step the
    direction is just the mean support-loss gradient times ``inner_lr`` (joint training);
    Reptile needs ``steps >= 2`` to meta-learn.

    Args:
        model: Architecture template.
        params: Meta-parameters.
        support_x: ``[T, N*K, *input_shape]``.
        support_y: ``[T, N*K]``.
        query_x: ``[T, N*Q, *input_shape]``; only scored, for the reported loss.
        query_y: ``[T, N*Q]``.
        inner_lr: Inner-loop step size.
        steps: Inner gradient steps (>= 1).
        loss_fn: ``loss_fn(logits, labels) -> scalar``.
        task_chunk: Tasks vectorised at a time, see :func:`maml`.

    Returns:
        The mean query loss of the adapted parameters, and ``params - mean(adapted)``.

    Raises:
        ValueError: As :func:`maml`.
    """
    _check_steps(steps)
    check_vmap_safe(model)
    base = MF.detached(params)

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Params, Tensor]:
        adapted = MF.adapt(
            model, base, sx, sy, loss_fn=loss_fn, inner_lr=inner_lr, steps=steps, first_order=True
        )
        return adapted, MF.task_loss(model, adapted, qx, qy, loss_fn=loss_fn)

    def compute(data: Data) -> tuple[Params, Tensor]:
        # torch.func.grad inside adapt computes the inner gradients even under no_grad; no
        # outer graph is wanted.
        with torch.no_grad():
            adapted, losses = vmap(one_task)(*data)
            return {n: base[n] - adapted[n].mean(dim=0) for n in base}, losses.mean()

    grads, loss = _over_chunks(compute, (support_x, support_y, query_x, query_y), task_chunk)
    return MetaGradient(loss, grads)


ALGORITHMS: dict[str, Algorithm] = {
    "maml": maml,
    "fomaml": first_order_maml,
    "anil": anil,
    "reptile": reptile,
}
"""Algorithms by the name job files use."""

HEAD_ONLY = frozenset({"anil"})
"""Algorithms whose inner loop (at evaluation too) adapts only the head."""


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
    inner_lr: float,
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
        inner_lr: Inner-loop step size.
        steps: Adaptation steps (0 scores the initialisation itself).
        loss_fn: Inner-loop loss.
        adapt_prefix: Only parameters whose name starts with it adapt (``""``: all;
            ``"head."`` for ANIL).
        task_chunk: Tasks vectorised at a time, see :func:`maml`.

    Returns:
        ``[T, M, n_way]`` logits, detached.
    """
    check_vmap_safe(model)
    adapting, fixed = _split(MF.detached(params), adapt_prefix)

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
        adapted = MF.adapt(
            model,
            adapting,
            sx,
            sy,
            loss_fn=loss_fn,
            inner_lr=inner_lr,
            steps=steps,
            first_order=True,
            buffers=fixed,
        )
        return MF.forward(model, adapted, qx, buffers=fixed)

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
    inner_lr: float,
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
        inner_lr: Inner-loop step size.
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


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1 for meta-training, got {steps}")


def set_grads(model: nn.Module, result: MetaGradient) -> None:
    """Writes ``result.grads`` into ``model``'s parameters' ``.grad`` for an optimizer step.

    Args:
        model: The module whose parameters ``result`` was computed for.
        result: A meta-gradient keyed like ``model.named_parameters()``.

    Raises:
        ValueError: If the names do not match.
    """
    named = dict(model.named_parameters())
    if named.keys() != result.grads.keys():
        raise ValueError(
            "meta-gradient keys do not match the model's parameters: "
            f"{sorted(set(named) ^ set(result.grads))}; compute it from "
            "dict(model.named_parameters())"
        )
    for name, param in named.items():
        param.grad = result.grads[name].detach()


__all__ = [
    "ALGORITHMS",
    "HEAD_ONLY",
    "Algorithm",
    "Evaluation",
    "MetaGradient",
    "adapted_logits",
    "anil",
    "check_vmap_safe",
    "evaluate",
    "first_order_maml",
    "maml",
    "reptile",
    "set_grads",
]
