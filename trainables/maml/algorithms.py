"""Optimisation-based meta-learning algorithms as (meta-loss, meta-gradient) functions.

Every algorithm here has the same signature and returns a :class:`MetaGradient` for one
meta-batch, computed with ``torch.func`` on top of :mod:`.functional` (``vmap`` over tasks,
``grad`` through the inner loop, no per-task module copies):

* :func:`maml`: MAML with the full second-order meta-gradient (Finn et al. 2017);
* :func:`first_order_maml`: FOMAML, inner gradients treated as constants;
* :func:`anil`: ANIL, "almost no inner loop" (Raghu et al. 2020): only the head adapts in
  the inner loop; the meta-gradient (second order) still reaches every parameter;
* :func:`meta_sgd`: Meta-SGD (Li et al. 2017): MAML whose inner step sizes are one learned
  tensor per parameter, shaped like it; the meta-gradient also covers those rates;
* :func:`reptile`: Reptile (Nichol et al. 2018): the meta-"gradient" is
  ``params - mean_t(adapted_t)``, so an SGD step with learning rate ``eps`` is exactly
  Reptile's interpolation ``params + eps * (mean adapted - params)``, and any other
  ``torch.optim`` optimizer (Adam) plugs in unchanged.

Every algorithm accepts any :data:`.functional.InnerLR` step size (a float, or one tensor per
parameter); only :func:`meta_sgd` differentiates w.r.t. it. A trainer calls :func:`set_grads`
(which sets ``p.grad = result.grads[name]`` on its module's parameters, and the rates' grads
for Meta-SGD) and then ``optimizer.step()`` on one optimizer over both; :func:`.evaluation.evaluate`
scores an initialisation after adaptation (:mod:`.evaluation`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from . import functional as MF
from .conv import HEAD_PREFIX
from .functional import InnerLR, LossFn, Params


class MetaGradient(NamedTuple):
    """The result of one meta-batch.

    Attributes:
        loss: Mean post-adaptation query loss over the tasks, a detached scalar tensor.
        grads: Meta-gradient (descent direction's negative), keyed like ``params``.
        inner_lr_grads: Meta-gradient w.r.t. the per-parameter inner step sizes, keyed like
            them (i.e. like ``params``); only from algorithms that learn them
            (:func:`meta_sgd`), None otherwise.
    """

    loss: Tensor
    grads: Params
    inner_lr_grads: Params | None = None


class Algorithm(Protocol):
    """The signature shared by :func:`maml`, :func:`first_order_maml`, :func:`anil`,
    :func:`meta_sgd` and :func:`reptile` (``params`` first, data tensors with a leading task
    dimension)."""

    def __call__(
        self,
        model: nn.Module,
        params: Mapping[str, Tensor],
        support_x: Tensor,
        support_y: Tensor,
        query_x: Tensor,
        query_y: Tensor,
        *,
        inner_lr: InnerLR,
        steps: int,
        loss_fn: LossFn = ...,
        task_chunk: int | None = ...,
        compiled: bool = ...,
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


def initial_inner_lrs(params: Mapping[str, Tensor], inner_lr: float) -> Params:
    """Meta-SGD's starting step sizes: ``inner_lr`` everywhere, one tensor per parameter.

    Args:
        params: Parameters by name; each rate gets its parameter's shape, dtype and device.
        inner_lr: The initial step size (the paper draws it at random; a constant makes
            step 0 exactly MAML).

    Returns:
        New tensors (not requiring grad), keyed like ``params``.
    """
    return {n: torch.full_like(p.detach(), inner_lr) for n, p in params.items()}


Data = tuple[Tensor, Tensor, Tensor, Tensor]
Grads = tuple[Params, ...]


def _over_chunks(
    compute: Callable[[Data], tuple[Grads, Tensor]],
    data: Data,
    task_chunk: int | None,
    *,
    compiled: bool = False,
) -> tuple[Grads, Tensor]:
    """``compute`` (a mean over tasks, and its gradients) on consecutive slices of at most
    ``task_chunk`` tasks, combined into the mean over all tasks.

    Why: on a CPU, ``vmap`` over a whole meta-batch of conv nets turns every elementwise op
    into one pass over tens of MB, far beyond the caches; slices of a few tasks keep the
    operands cache-resident (see :mod:`.throughput`). On a GPU one slice is best.

    With ``compiled``, each slice runs through ``torch.compile`` (see :func:`maml`).
    """
    if compiled:
        compute = _compile(compute)
    tasks = data[0].shape[0]
    if task_chunk is None or task_chunk >= tasks:
        return compute(data)
    if task_chunk < 1:
        raise ValueError(f"task_chunk must be >= 1 or None (no chunking), got {task_chunk}")
    totals: list[Params] = []
    total_loss = torch.zeros(())
    for start in range(0, tasks, task_chunk):
        part = tuple(t[start : start + task_chunk] for t in data)
        grads, loss = compute(part)  # type: ignore[arg-type]
        weight = part[0].shape[0] / tasks
        total_loss = total_loss.to(loss) + weight * loss
        if not totals:
            totals = [{} for _ in grads]
        for total, part_grads in zip(totals, grads, strict=True):
            for name, g in part_grads.items():
                total[name] = total[name] + weight * g if name in total else weight * g
    return tuple(totals), total_loss


def _compile(compute: Callable[[Data], tuple[Grads, Tensor]]) -> Callable[[Data], Any]:
    """``compute`` through ``torch.compile``: static shapes, one graph or an error.

    Dynamo keys its cache on the code object and guards on the model's structure and the
    tensors' shapes, not on object identity: a new closure per call, a new model of the same
    architecture or a new step-size tensor reuses the compiled graph. Anything that changes
    the graph compiles again: the last, smaller slice of a meta-batch, another width or
    episode shape, another number of inner steps. After ``torch._dynamo.config
    .recompile_limit`` variants of one algorithm dynamo stops compiling it; the Omniglot
    trainable therefore resets dynamo when a compiled trial starts (inductor's on-disk cache
    makes a graph seen before cost seconds). ``fullgraph=True`` turns a graph break into an
    error instead of a silently slower, partly eager run.
    """
    return torch.compile(compute, dynamic=False, fullgraph=True)


def _traceable(inner_lr: InnerLR, like: Tensor, *, compiled: bool) -> InnerLR:
    """A float step size as a 0-d tensor when compiling, so that a new value (PBT) is a
    new input to the compiled graph instead of a constant baked into it.

    Raises:
        ValueError: If a float step size is negative (checked here, since the functional
            layer does not check tensors).
    """
    if compiled and isinstance(inner_lr, (int, float)):
        if inner_lr < 0:
            raise ValueError(f"inner_lr must be >= 0; pass a positive step size, got {inner_lr}")
        # A 0-d tensor does not change the result dtype; keep low-precision weights' rate
        # exact in float32, as a Python float would be.
        dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
        return torch.tensor(float(inner_lr), dtype=dtype, device=like.device)
    return inner_lr


def maml(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: InnerLR,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    first_order: bool = False,
    task_chunk: int | None = None,
    compiled: bool = False,
) -> MetaGradient:
    """MAML: gradient of the mean post-adaptation query loss w.r.t. the initialisation.

    Args:
        model: Architecture template (see :mod:`.functional`).
        params: Meta-parameters; used detached, their own ``requires_grad`` is irrelevant.
        support_x: ``[T, N*K, *input_shape]``.
        support_y: ``[T, N*K]``.
        query_x: ``[T, N*Q, *input_shape]``.
        query_y: ``[T, N*Q]``.
        inner_lr: Inner-loop step size (see :data:`.functional.InnerLR`); held constant.
        steps: Inner gradient steps (>= 1).
        loss_fn: ``loss_fn(logits, labels) -> scalar``; cross-entropy by default.
        first_order: Drop the second-order terms (see :func:`first_order_maml`).
        task_chunk: Vectorise over at most this many tasks at a time (None: all at once);
            the result is the same up to float rounding. A few tasks is fastest on a CPU.
        compiled: Run each slice through ``torch.compile`` (inductor): it fuses the
            elementwise work of batch norm, ReLU and the inner step, which dominates on a
            CPU (see :mod:`.throughput`). The first call compiles (about a minute for the
            paper's network on a CPU; seconds from inductor's on-disk cache); later calls
            with the same shapes reuse it. Same gradient in float64; in float32 its sums
            run in a different order (see docs/performance.md).

    Returns:
        The meta-loss and the meta-gradient.

    Raises:
        ValueError: If ``steps`` < 1, ``inner_lr`` < 0, the data disagree on the number of
            tasks, or the model holds native batch norm.
    """
    _check_steps(steps)
    check_vmap_safe(model)

    base = MF.detached(params)
    rates = _traceable(MF.constant_rate(inner_lr), next(iter(base.values())), compiled=compiled)

    def compute(data: Data) -> tuple[Grads, Tensor]:
        def objective(p: Params) -> Tensor:
            return MF.meta_loss(
                model,
                p,
                *data,
                loss_fn=loss_fn,
                inner_lr=rates,
                steps=steps,
                first_order=first_order,
            )

        grads, loss = grad_and_value(objective)(base)
        return (grads,), loss

    (grads,), loss = _over_chunks(
        compute, (support_x, support_y, query_x, query_y), task_chunk, compiled=compiled
    )
    return MetaGradient(loss.detach(), grads)


def first_order_maml(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: InnerLR,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    task_chunk: int | None = None,
    compiled: bool = False,
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
        compiled=compiled,
    )


def anil(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: InnerLR,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    head_prefix: str = HEAD_PREFIX,
    first_order: bool = False,
    task_chunk: int | None = None,
    compiled: bool = False,
) -> MetaGradient:
    """ANIL: the inner loop adapts the head only; the meta-gradient covers every parameter.

    The body's parameters reach the inner loop as ``frozen`` tensors of
    :func:`.functional.adapt`, so they are not stepped there but the meta-gradient still
    flows into them, second order unless ``first_order``.

    Args:
        model: Architecture template.
        params: Meta-parameters.
        support_x: ``[T, N*K, *input_shape]``.
        support_y: ``[T, N*K]``.
        query_x: ``[T, N*Q, *input_shape]``.
        query_y: ``[T, N*Q]``.
        inner_lr: Inner-loop step size; per-parameter step sizes need the head's entries only
            (others are ignored).
        steps: Inner gradient steps (>= 1).
        loss_fn: ``loss_fn(logits, labels) -> scalar``.
        head_prefix: Parameters whose name starts with it are adapted (``"head."``).
        first_order: Detach the inner gradients.
        task_chunk: Tasks vectorised at a time, see :func:`maml`.
        compiled: Run each slice of tasks through ``torch.compile``, see :func:`maml`.

    Returns:
        The meta-loss and the meta-gradient (keys and order of ``params``).

    Raises:
        ValueError: As :func:`maml`, or if no parameter name starts with ``head_prefix``.
    """
    _check_steps(steps)
    check_vmap_safe(model)
    head, body = MF.split_adapted(MF.detached(params), head_prefix)
    rates = MF.rates_for(
        _traceable(MF.constant_rate(inner_lr), next(iter(head.values())), compiled=compiled), head
    )

    def compute(data: Data) -> tuple[Grads, Tensor]:
        def objective(body: Params, head: Params) -> Tensor:
            return MF.meta_loss(
                model,
                head,
                *data,
                loss_fn=loss_fn,
                inner_lr=rates,
                steps=steps,
                first_order=first_order,
                frozen=body,
            )

        (body_grads, head_grads), loss = grad_and_value(objective, argnums=(0, 1))(body, head)
        return ({**body_grads, **head_grads},), loss

    (grads,), loss = _over_chunks(
        compute, (support_x, support_y, query_x, query_y), task_chunk, compiled=compiled
    )
    return MetaGradient(loss.detach(), {name: grads[name] for name in params})


def meta_sgd(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: InnerLR,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    first_order: bool = False,
    task_chunk: int | None = None,
    compiled: bool = False,
) -> MetaGradient:
    """Meta-SGD: MAML with learned per-parameter inner step sizes (Li et al. 2017).

    The inner step is ``p <- p - alpha_p * grad_p`` with ``alpha_p`` a tensor shaped like
    ``p``; the meta-gradient of the mean post-adaptation query loss is taken w.r.t. both the
    initialisation and the ``alpha``. Keep the rates beside the model's parameters (from
    :func:`initial_inner_lrs`), give one optimizer both, and pass them to :func:`set_grads`.

    Args:
        model: Architecture template.
        params: Meta-parameters; used detached.
        support_x: ``[T, N*K, *input_shape]``.
        support_y: ``[T, N*K]``.
        query_x: ``[T, N*Q, *input_shape]``.
        query_y: ``[T, N*Q]``.
        inner_lr: The current step sizes, a tensor per parameter keyed like ``params``
            (used detached). A float or scalar tensor stands for that value everywhere.
        steps: Inner gradient steps (>= 1).
        loss_fn: ``loss_fn(logits, labels) -> scalar``.
        first_order: Detach the inner gradients; the rates still get a (first-order)
            meta-gradient, since each step is linear in them.
        task_chunk: Tasks vectorised at a time, see :func:`maml`.
        compiled: Run each slice of tasks through ``torch.compile``, see :func:`maml`.

    Returns:
        The meta-loss, the meta-gradient w.r.t. ``params`` (``grads``) and w.r.t. the step
        sizes (``inner_lr_grads``, keyed and shaped like the rates).

    Raises:
        ValueError: As :func:`maml`, or if the step sizes do not match ``params``.
    """
    _check_steps(steps)
    check_vmap_safe(model)
    base = MF.detached(params)
    if isinstance(inner_lr, Mapping):
        rates = MF.detached(inner_lr)
    else:
        rates = {n: torch.full_like(p, float(inner_lr)) for n, p in base.items()}

    def compute(data: Data) -> tuple[Grads, Tensor]:
        def objective(p: Params, r: Params) -> Tensor:
            return MF.meta_loss(
                model,
                p,
                *data,
                loss_fn=loss_fn,
                inner_lr=r,
                steps=steps,
                first_order=first_order,
            )

        (grads, rate_grads), loss = grad_and_value(objective, argnums=(0, 1))(base, rates)
        return (grads, rate_grads), loss

    (grads, rate_grads), loss = _over_chunks(
        compute, (support_x, support_y, query_x, query_y), task_chunk, compiled=compiled
    )
    return MetaGradient(loss.detach(), grads, rate_grads)


def reptile(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: InnerLR,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    task_chunk: int | None = None,
    compiled: bool = False,
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
        compiled: Run each slice of tasks through ``torch.compile``, see :func:`maml`.

    Returns:
        The mean query loss of the adapted parameters, and ``params - mean(adapted)``.

    Raises:
        ValueError: As :func:`maml`.
    """
    _check_steps(steps)
    check_vmap_safe(model)
    base = MF.detached(params)
    rates = _traceable(MF.constant_rate(inner_lr), next(iter(base.values())), compiled=compiled)

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Params, Tensor]:
        adapted = MF.adapt(
            model, base, sx, sy, loss_fn=loss_fn, inner_lr=rates, steps=steps, first_order=True
        )
        return adapted, MF.task_loss(model, adapted, qx, qy, loss_fn=loss_fn)

    def compute(data: Data) -> tuple[Grads, Tensor]:
        # torch.func.grad inside adapt computes the inner gradients even under no_grad; no
        # outer graph is wanted.
        with torch.no_grad():
            adapted, losses = vmap(one_task)(*data)
            return ({n: base[n] - adapted[n].mean(dim=0) for n in base},), losses.mean()

    (grads,), loss = _over_chunks(
        compute, (support_x, support_y, query_x, query_y), task_chunk, compiled=compiled
    )
    return MetaGradient(loss, grads)


ALGORITHMS: dict[str, Algorithm] = {
    "maml": maml,
    "fomaml": first_order_maml,
    "anil": anil,
    "reptile": reptile,
    "metasgd": meta_sgd,
}
"""Algorithms by the name job files use."""

HEAD_ONLY = frozenset({"anil"})
"""Algorithms whose inner loop (at evaluation too) adapts only the head."""

LEARNED_INNER_LR = frozenset({"metasgd"})
"""Algorithms that meta-learn per-parameter inner step sizes (``inner_lr_grads``)."""


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1 for meta-training, got {steps}")


def set_grads(
    model: nn.Module, result: MetaGradient, *, inner_lr: Mapping[str, Tensor] | None = None
) -> None:
    """Writes ``result``'s meta-gradient into ``.grad`` for an optimizer step.

    Args:
        model: The module whose parameters ``result`` was computed for.
        result: A meta-gradient keyed like ``model.named_parameters()``.
        inner_lr: The learned step sizes (leaf tensors) ``result`` was computed with; needed
            exactly when ``result.inner_lr_grads`` is set (:func:`meta_sgd`).

    Raises:
        ValueError: If the names do not match, or ``inner_lr`` is missing or superfluous.
    """
    named = dict(model.named_parameters())
    if named.keys() != result.grads.keys():
        raise ValueError(
            "meta-gradient keys do not match the model's parameters: "
            f"{sorted(set(named) ^ set(result.grads))}; compute it from "
            "dict(model.named_parameters())"
        )
    rate_grads = result.inner_lr_grads
    if (rate_grads is None) != (inner_lr is None):
        raise ValueError(
            "pass inner_lr (the learned step sizes) exactly when the algorithm learns them: "
            f"inner_lr_grads is {'None' if rate_grads is None else 'set'}, inner_lr is "
            f"{'None' if inner_lr is None else 'set'}"
        )
    if rate_grads is not None and inner_lr is not None:
        if rate_grads.keys() != inner_lr.keys():
            raise ValueError(
                "step-size gradient keys do not match inner_lr: "
                f"{sorted(set(rate_grads) ^ set(inner_lr))}"
            )
        for name, rate in inner_lr.items():
            rate.grad = rate_grads[name].detach()
    for name, param in named.items():
        param.grad = result.grads[name].detach()


__all__ = [
    "ALGORITHMS",
    "HEAD_ONLY",
    "LEARNED_INNER_LR",
    "Algorithm",
    "MetaGradient",
    "anil",
    "check_vmap_safe",
    "first_order_maml",
    "initial_inner_lrs",
    "maml",
    "meta_sgd",
    "reptile",
    "set_grads",
]
