"""MAML as pure functions over a parameter dict (Finn et al. 2017), written with ``torch.func``.

Nothing here is specific to sinusoids or MLPs: every function takes the ``nn.Module`` that
defines the architecture, a dict of parameters to run it with, and a loss function. The module
object is only used as a template for :func:`torch.func.functional_call`; its own parameters
are never modified and no per-task copy of it is ever made.

Shapes follow one convention. Per-task functions (:func:`adapt`, :func:`task_query_loss`) take
one task's tensors, e.g. ``support_x`` of shape ``[K, *input_shape]``. :func:`meta_loss` takes
a meta-batch with a leading task dimension, ``[T, K, *input_shape]``, and maps the per-task
function over it with :func:`torch.func.vmap`, so the whole meta-batch runs as batched kernels.

Requirements on the model and the loss so that they work under ``vmap``:

* the forward pass must not mutate state. Batch norm must use batch statistics
  (``track_running_stats=False``, or ``torch.func.replace_all_batch_norm_modules_``), exactly
  as in PyTorch's functorch MAML-Omniglot example;
* the loss must return a scalar and must not call ``.item()`` or branch on tensor values
  (``F.mse_loss`` and ``F.cross_entropy`` both qualify).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Params = dict[str, Tensor]
"""Parameters by name, as returned by ``dict(model.named_parameters())``."""

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(prediction, target) -> scalar tensor``; must be ``vmap``-compatible."""


def _check_steps_and_lr(steps: int, inner_lr: float | Tensor) -> None:
    if steps < 0:
        raise ValueError(f"steps must be >= 0 (0 means no adaptation), got {steps}")
    if not isinstance(inner_lr, Tensor) and inner_lr < 0:
        raise ValueError(f"inner_lr must be >= 0; pass a positive step size, got {inner_lr}")


def forward(
    model: nn.Module,
    params: Mapping[str, Tensor],
    x: Tensor,
    *,
    buffers: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Runs ``model`` on ``x`` with the given parameters instead of its own.

    Args:
        model: Architecture template; its own parameters are ignored for every name in
            ``params``.
        params: Parameters to use, keyed like ``model.named_parameters()``.
        x: Input batch, as ``model`` expects it.
        buffers: Optional buffers (e.g. batch-norm statistics) keyed like
            ``model.named_buffers()``; the module's own buffers are used when omitted.

    Returns:
        The model output.
    """
    tensors = dict(params) if buffers is None else {**buffers, **params}
    return functional_call(model, tensors, (x,))


def task_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn,
    buffers: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Loss of ``model`` with ``params`` on one batch ``(x, y)``.

    Args:
        model: Architecture template.
        params: Parameters to evaluate.
        x: Inputs.
        y: Targets.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        buffers: Optional buffers, see :func:`forward`.

    Returns:
        A scalar tensor, differentiable w.r.t. ``params``.
    """
    return loss_fn(forward(model, params, x, buffers=buffers), y)


def adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: float | Tensor,
    steps: int,
    first_order: bool = False,
    buffers: Mapping[str, Tensor] | None = None,
) -> Params:
    """Inner loop: ``steps`` plain gradient-descent steps on one task's support set.

    Each step is ``params <- params - inner_lr * grad(support loss)(params)``. The returned
    parameters stay differentiable w.r.t. the input ``params`` (for any outer autograd or
    ``torch.func`` transform), which is what makes the MAML meta-gradient flow through
    adaptation.

    Args:
        model: Architecture template.
        params: Initial (meta-learned) parameters.
        support_x: The task's support inputs, ``[K, *input_shape]``.
        support_y: The task's support targets.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        inner_lr: Inner-loop step size (a float, or a tensor, e.g. a learned one).
        steps: Number of gradient steps; 0 returns ``params`` unchanged.
        first_order: If True, the inner gradients are detached, i.e. treated as constants
            w.r.t. ``params`` (first-order MAML): the meta-gradient then skips the Hessian
            terms. If False (default), the full second-order meta-gradient is kept.
        buffers: Optional buffers, see :func:`forward`.

    Returns:
        Adapted parameters, a new dict with the same keys.

    Raises:
        ValueError: If ``steps`` or ``inner_lr`` is negative.
    """
    _check_steps_and_lr(steps, inner_lr)

    def support_loss(p: Params) -> Tensor:
        return task_loss(model, p, support_x, support_y, loss_fn=loss_fn, buffers=buffers)

    grad_fn = grad(support_loss)
    adapted = dict(params)
    for _ in range(steps):
        grads = grad_fn(adapted)
        if first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        adapted = {name: p - inner_lr * grads[name] for name, p in adapted.items()}
    return adapted


def task_query_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: float | Tensor,
    steps: int,
    first_order: bool = False,
    buffers: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """One task's query loss after adapting ``params`` on its support set.

    Args:
        model: Architecture template.
        params: Initial (meta-learned) parameters.
        support_x: Support inputs, ``[K, *input_shape]``.
        support_y: Support targets.
        query_x: Query inputs, ``[Q, *input_shape]``.
        query_y: Query targets.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        inner_lr: Inner-loop step size.
        steps: Number of inner gradient steps (0 gives the pre-adaptation query loss).
        first_order: Detach the inner gradients, see :func:`adapt`.
        buffers: Optional buffers, see :func:`forward`.

    Returns:
        A scalar tensor, differentiable w.r.t. ``params``.
    """
    adapted = adapt(
        model,
        params,
        support_x,
        support_y,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        steps=steps,
        first_order=first_order,
        buffers=buffers,
    )
    return task_loss(model, adapted, query_x, query_y, loss_fn=loss_fn, buffers=buffers)


def batched_query_losses(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: float | Tensor,
    steps: int,
    first_order: bool = False,
    buffers: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Per-task post-adaptation query losses of a meta-batch, vectorised with ``vmap``.

    All data tensors carry a leading task dimension ``T``; ``params`` and ``buffers`` are
    shared by every task (not batched).

    Args:
        model: Architecture template.
        params: Initial (meta-learned) parameters.
        support_x: ``[T, K, *input_shape]``.
        support_y: ``[T, K, *target_shape]``.
        query_x: ``[T, Q, *input_shape]``.
        query_y: ``[T, Q, *target_shape]``.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        inner_lr: Inner-loop step size.
        steps: Number of inner gradient steps.
        first_order: Detach the inner gradients, see :func:`adapt`.
        buffers: Optional buffers, see :func:`forward`.

    Returns:
        A ``[T]`` tensor of query losses, differentiable w.r.t. ``params``.

    Raises:
        ValueError: If the data tensors disagree on the number of tasks, or ``steps`` or
            ``inner_lr`` is negative.
    """
    _check_steps_and_lr(steps, inner_lr)
    data = (support_x, support_y, query_x, query_y)
    num_tasks = {t.shape[0] if t.dim() > 0 else None for t in data}
    if len(num_tasks) != 1 or None in num_tasks:
        raise ValueError(
            "support_x, support_y, query_x and query_y need the same leading task dimension "
            f"[T, ...]; got shapes {[tuple(t.shape) for t in data]}"
        )

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        return task_query_loss(
            model,
            params,
            sx,
            sy,
            qx,
            qy,
            loss_fn=loss_fn,
            inner_lr=inner_lr,
            steps=steps,
            first_order=first_order,
            buffers=buffers,
        )

    return vmap(one_task)(*data)


def meta_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: float | Tensor,
    steps: int,
    first_order: bool = False,
    buffers: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """MAML meta-loss of a meta-batch: the mean over tasks of the post-adaptation query loss.

    Its gradient w.r.t. ``params`` (``meta_loss(...).backward()`` when ``params`` are the
    module's leaf parameters, or ``torch.func.grad`` over this function) is the MAML
    meta-gradient: second order by default, first-order MAML with ``first_order=True``.

    Args:
        model: Architecture template.
        params: Initial (meta-learned) parameters.
        support_x: ``[T, K, *input_shape]``.
        support_y: ``[T, K, *target_shape]``.
        query_x: ``[T, Q, *input_shape]``.
        query_y: ``[T, Q, *target_shape]``.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        inner_lr: Inner-loop step size.
        steps: Number of inner gradient steps.
        first_order: Detach the inner gradients, see :func:`adapt`.
        buffers: Optional buffers, see :func:`forward`.

    Returns:
        A scalar tensor.
    """
    losses = batched_query_losses(
        model,
        params,
        support_x,
        support_y,
        query_x,
        query_y,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        steps=steps,
        first_order=first_order,
        buffers=buffers,
    )
    return losses.mean()


def detached(params: Mapping[str, Tensor]) -> Params:
    """Returns a copy of ``params`` cut from the autograd graph (for evaluation).

    Args:
        params: Parameters by name.

    Returns:
        A new dict of detached tensors sharing storage with ``params``.
    """
    return {name: p.detach() for name, p in params.items()}


__all__ = [
    "LossFn",
    "Params",
    "adapt",
    "batched_query_losses",
    "detached",
    "forward",
    "meta_loss",
    "task_loss",
    "task_query_loss",
]
