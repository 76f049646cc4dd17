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

The inner step size (:data:`InnerLR`) is one number for every parameter (MAML) or one tensor
per parameter, shaped like it (Meta-SGD, Li et al. 2017, which meta-learns those tensors).
Parameters that the inner loop must hold fixed while the outer loop still differentiates
through them (ANIL's body) go in ``frozen``, not in ``params``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Params = dict[str, Tensor]
"""Parameters by name, as returned by ``dict(model.named_parameters())``."""

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(prediction, target) -> scalar tensor``; must be ``vmap``-compatible."""

InnerLR = float | Tensor | Mapping[str, Tensor]
"""Inner-loop step size: a float, a scalar tensor (e.g. a learned one), or per-parameter
step sizes (Meta-SGD): a tensor for every adapted parameter, keyed like ``params``, each
shaped like its parameter (elementwise rates) or a scalar (one rate for the tensor)."""


def _check_steps_and_lr(steps: int, inner_lr: InnerLR) -> None:
    if steps < 0:
        raise ValueError(f"steps must be >= 0 (0 means no adaptation), got {steps}")
    # Tensors are not checked: they may be traced, and learned rates may change sign.
    if not isinstance(inner_lr, (Tensor, Mapping)) and inner_lr < 0:
        raise ValueError(f"inner_lr must be >= 0; pass a positive step size, got {inner_lr}")


def _check_rates_match(inner_lr: InnerLR, params: Mapping[str, Tensor]) -> None:
    """Per-parameter step sizes must name exactly the adapted parameters, in their shapes."""
    if not isinstance(inner_lr, Mapping):
        return
    if inner_lr.keys() != params.keys():
        missing = sorted(set(params) - set(inner_lr))
        extra = sorted(set(inner_lr) - set(params))
        raise ValueError(
            f"per-parameter inner_lr must have one entry per adapted parameter; missing "
            f"{missing}, unexpected {extra}. Key the step sizes like params (frozen "
            "parameters take none)"
        )
    for name, rate in inner_lr.items():
        if rate.dim() != 0 and rate.shape != params[name].shape:
            raise ValueError(
                f"inner_lr[{name!r}] has shape {tuple(rate.shape)} but the parameter has "
                f"{tuple(params[name].shape)}; use the parameter's shape or a scalar"
            )


def _fixed_tensors(
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    frozen: Mapping[str, Tensor] | None,
) -> Mapping[str, Tensor] | None:
    """Buffers and frozen parameters, the tensors ``functional_call`` takes but the inner
    loop does not step."""
    if not frozen:
        return buffers
    clash = sorted(set(frozen) & set(params))
    if clash:
        raise ValueError(
            f"{clash} are in both params and frozen; a parameter is either adapted by the "
            "inner loop (params) or held fixed there (frozen)"
        )
    return dict(frozen) if buffers is None else {**buffers, **frozen}


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
    inner_lr: InnerLR,
    steps: int,
    first_order: bool = False,
    buffers: Mapping[str, Tensor] | None = None,
    frozen: Mapping[str, Tensor] | None = None,
) -> Params:
    """Inner loop: ``steps`` plain gradient-descent steps on one task's support set.

    Each step is ``params <- params - inner_lr * grad(support loss)(params)``, elementwise
    per parameter when ``inner_lr`` is a dict (Meta-SGD). The returned parameters stay
    differentiable w.r.t. the input ``params``, ``inner_lr`` and ``frozen`` (for any outer
    autograd or ``torch.func`` transform), which is what makes the meta-gradient flow through
    adaptation.

    Args:
        model: Architecture template.
        params: Initial (meta-learned) parameters.
        support_x: The task's support inputs, ``[K, *input_shape]``.
        support_y: The task's support targets.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        inner_lr: Inner-loop step size, see :data:`InnerLR`.
        steps: Number of gradient steps; 0 returns ``params`` unchanged.
        first_order: If True, the inner gradients are detached, i.e. treated as constants
            w.r.t. ``params`` (first-order MAML): the meta-gradient then skips the Hessian
            terms. If False (default), the full second-order meta-gradient is kept.
        buffers: Optional buffers, see :func:`forward`.
        frozen: Parameters the inner loop holds fixed (not stepped, no inner gradient),
            keyed like ``model.named_parameters()`` and disjoint from ``params``; an outer
            transform still differentiates through them (ANIL's body).

    Returns:
        Adapted parameters, a new dict with the keys of ``params`` (``frozen`` not included).

    Raises:
        ValueError: If ``steps`` or a float ``inner_lr`` is negative, per-parameter step
            sizes do not match ``params``, or ``frozen`` overlaps ``params``.
    """
    _check_steps_and_lr(steps, inner_lr)
    _check_rates_match(inner_lr, params)
    fixed = _fixed_tensors(params, buffers, frozen)

    def support_loss(p: Params) -> Tensor:
        return task_loss(model, p, support_x, support_y, loss_fn=loss_fn, buffers=fixed)

    def rate(name: str) -> float | Tensor:
        return inner_lr[name] if isinstance(inner_lr, Mapping) else inner_lr

    grad_fn = grad(support_loss)
    adapted = dict(params)
    for _ in range(steps):
        grads = grad_fn(adapted)
        if first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        adapted = {name: p - rate(name) * grads[name] for name, p in adapted.items()}
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
    inner_lr: InnerLR,
    steps: int,
    first_order: bool = False,
    buffers: Mapping[str, Tensor] | None = None,
    frozen: Mapping[str, Tensor] | None = None,
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
        inner_lr: Inner-loop step size, see :data:`InnerLR`.
        steps: Number of inner gradient steps (0 gives the pre-adaptation query loss).
        first_order: Detach the inner gradients, see :func:`adapt`.
        buffers: Optional buffers, see :func:`forward`.
        frozen: Parameters held fixed in the inner loop, see :func:`adapt`.

    Returns:
        A scalar tensor, differentiable w.r.t. ``params``, ``inner_lr`` and ``frozen``.
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
        frozen=frozen,
    )
    fixed = _fixed_tensors(params, buffers, frozen)
    return task_loss(model, adapted, query_x, query_y, loss_fn=loss_fn, buffers=fixed)


def batched_query_losses(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR,
    steps: int,
    first_order: bool = False,
    buffers: Mapping[str, Tensor] | None = None,
    frozen: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Per-task post-adaptation query losses of a meta-batch, vectorised with ``vmap``.

    All data tensors carry a leading task dimension ``T``; ``params``, ``inner_lr``,
    ``buffers`` and ``frozen`` are shared by every task (not batched).

    Args:
        model: Architecture template.
        params: Initial (meta-learned) parameters.
        support_x: ``[T, K, *input_shape]``.
        support_y: ``[T, K, *target_shape]``.
        query_x: ``[T, Q, *input_shape]``.
        query_y: ``[T, Q, *target_shape]``.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        inner_lr: Inner-loop step size, see :data:`InnerLR`.
        steps: Number of inner gradient steps.
        first_order: Detach the inner gradients, see :func:`adapt`.
        buffers: Optional buffers, see :func:`forward`.
        frozen: Parameters held fixed in the inner loop, see :func:`adapt`.

    Returns:
        A ``[T]`` tensor of query losses, differentiable w.r.t. ``params``, ``inner_lr``
        and ``frozen``.

    Raises:
        ValueError: If the data tensors disagree on the number of tasks, or an argument is
            rejected by :func:`adapt`.
    """
    _check_steps_and_lr(steps, inner_lr)
    _check_rates_match(inner_lr, params)
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
            frozen=frozen,
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
    inner_lr: InnerLR,
    steps: int,
    first_order: bool = False,
    buffers: Mapping[str, Tensor] | None = None,
    frozen: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """MAML meta-loss of a meta-batch: the mean over tasks of the post-adaptation query loss.

    Its gradient w.r.t. ``params`` (``meta_loss(...).backward()`` when ``params`` are the
    module's leaf parameters, or ``torch.func.grad`` over this function) is the MAML
    meta-gradient: second order by default, first-order MAML with ``first_order=True``. Its
    gradient w.r.t. per-parameter ``inner_lr`` tensors is Meta-SGD's, w.r.t. ``frozen``
    ANIL's for the body.

    Args:
        model: Architecture template.
        params: Initial (meta-learned) parameters.
        support_x: ``[T, K, *input_shape]``.
        support_y: ``[T, K, *target_shape]``.
        query_x: ``[T, Q, *input_shape]``.
        query_y: ``[T, Q, *target_shape]``.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        inner_lr: Inner-loop step size, see :data:`InnerLR`.
        steps: Number of inner gradient steps.
        first_order: Detach the inner gradients, see :func:`adapt`.
        buffers: Optional buffers, see :func:`forward`.
        frozen: Parameters held fixed in the inner loop, see :func:`adapt`.

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
        frozen=frozen,
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


def split_adapted(params: Mapping[str, Tensor], prefix: str) -> tuple[Params, Params]:
    """The parameters the inner loop adapts (names starting with ``prefix``), and the rest."""
    adapted = {n: p for n, p in params.items() if n.startswith(prefix)}
    if not adapted:
        raise ValueError(
            f"no parameter name starts with {prefix!r} (got {', '.join(params)}); pass the "
            "prefix of the layers the inner loop adapts"
        )
    return adapted, {n: p for n, p in params.items() if not n.startswith(prefix)}


def constant_rate(inner_lr: InnerLR) -> InnerLR:
    """The step size cut from any outer graph: algorithms return detached meta-gradients."""
    if isinstance(inner_lr, Mapping):
        return detached(inner_lr)
    return inner_lr.detach() if isinstance(inner_lr, Tensor) else inner_lr


def rates_for(inner_lr: InnerLR, names: Iterable[str]) -> InnerLR:
    """Per-parameter step sizes of the adapted parameters only (ANIL adapts a subset)."""
    if isinstance(inner_lr, Mapping):
        return {n: inner_lr[n] for n in names if n in inner_lr}
    return inner_lr


__all__ = [
    "InnerLR",
    "LossFn",
    "Params",
    "adapt",
    "batched_query_losses",
    "constant_rate",
    "detached",
    "forward",
    "meta_loss",
    "rates_for",
    "split_adapted",
    "task_loss",
    "task_query_loss",
]
