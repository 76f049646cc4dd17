"""Meta-iterations per second of vectorised MAML versus a per-task Python loop.

Run ``python -m warmtune.bench.tools.maml_throughput [--device cpu|cuda] [--seconds N]``.
The setting is the MAML paper's Omniglot one: second-order MAML, meta-batch 32, 5-way
1-shot with 15 queries per class, 64 filters, 4 blocks, one inner step. Images are random
(throughput does not depend on their content), so no data is needed.

Before timing, it checks that every implementation computes the meta-gradient of
:func:`loop_maml` (one task at a time, plain autograd) run in float64, and prints each one's
float32 rounding error next to the float32 loop's own. Then it times the loop, ``vmap`` over
the whole meta-batch, ``vmap`` over slices of ``--chunks`` tasks (``task_chunk``), and the
same slices through ``torch.compile`` (``--compile-chunks``; the compile time is printed
apart and not timed), profiles one meta-iteration of each with ``torch.profiler``, and prints
where the time goes.
``--threads`` sets torch's thread count and ``--channels-last`` stores the conv weights and
images channels-last (NHWC), to compare CPU settings.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from warmtune.trainables.maml import algorithms as AL
from warmtune.trainables.maml.conv import ConvNet
from warmtune.trainables.maml.functional import Params
from warmtune.trainables.runtime import make_generator

Data = tuple[Tensor, Tensor, Tensor, Tensor]


def loop_maml(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    inner_lr: float,
    steps: int,
) -> AL.MetaGradient:
    """Second-order MAML the textbook way: a Python loop over tasks, ``create_graph=True``.

    The reference :func:`.algorithms.maml` is measured against; same arguments and result.
    """
    leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
    losses = []
    for t in range(support_x.shape[0]):
        adapted = dict(leaves)
        for _ in range(steps):
            out = functional_call(model, adapted, (support_x[t],))
            grads = torch.autograd.grad(
                F.cross_entropy(out, support_y[t]), list(adapted.values()), create_graph=True
            )
            adapted = {
                n: w - inner_lr * g for (n, w), g in zip(adapted.items(), grads, strict=True)
            }
        out = functional_call(model, adapted, (query_x[t],))
        losses.append(F.cross_entropy(out, query_y[t]))
    loss = torch.stack(losses).mean()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return AL.MetaGradient(loss.detach(), dict(zip(leaves, grads, strict=True)))


@dataclass(frozen=True)
class Problem:
    """One synthetic meta-batch and the network to meta-train on it."""

    model: ConvNet
    params: Params
    data: Data
    inner_lr: float
    steps: int


def make_problem(
    *,
    device: torch.device,
    meta_batch: int = 32,
    n_way: int = 5,
    k_shot: int = 1,
    q_query: int = 15,
    filters: int = 64,
    blocks: int = 4,
    steps: int = 1,
    seed: int = 0,
    channels_last: bool = False,
) -> Problem:
    """A random meta-batch of 28x28 images with the requested episode shape.

    Args:
        device: Where tensors live.
        meta_batch: Tasks per meta-batch.
        n_way: Classes per task.
        k_shot: Support images per class.
        q_query: Query images per class.
        filters: Conv channels.
        blocks: Conv blocks.
        steps: Inner steps.
        seed: Seed of the weights and images.
        channels_last: Store conv weights and every task's images channels-last (NHWC);
            the values, and so the meta-gradient, are unchanged.
    """
    g = make_generator(seed)
    model = ConvNet(n_way=n_way, filters=filters, blocks=blocks, generator=g).to(device)
    sx = torch.rand(meta_batch, n_way * k_shot, 1, 28, 28, generator=g).to(device)
    qx = torch.rand(meta_batch, n_way * q_query, 1, 28, 28, generator=g).to(device)
    if channels_last:
        with torch.no_grad():
            for weight in model.parameters():
                if weight.dim() == 4:  # what Module.to(memory_format=...) does, typed
                    weight.data = weight.contiguous(memory_format=torch.channels_last)
        sx, qx = _tasks_channels_last(sx), _tasks_channels_last(qx)
    sy = torch.arange(n_way).repeat_interleave(k_shot).expand(meta_batch, -1).to(device)
    qy = torch.arange(n_way).repeat_interleave(q_query).expand(meta_batch, -1).to(device)
    params = {n: p.detach() for n, p in model.named_parameters()}
    return Problem(model, params, (sx, sy, qx, qy), inner_lr=0.4, steps=steps)


def _tasks_channels_last(x: Tensor) -> Tensor:
    """``[T, B, C, H, W]`` with every task's ``[B, C, H, W]`` slice laid out NHWC."""
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


Method = Callable[[Problem], AL.MetaGradient]

CPU_TASK_CHUNK = 4
"""Tasks per ``vmap`` call that the trainable uses on a CPU (see :func:`.algorithms.maml`)."""

WHOLE = "vmap, all tasks"
LOOP = "per-task loop"
COMPILED = "compiled vmap"
CHUNKS = (1, 2, 4, 8)
"""``task_chunk`` values swept by default."""


COMPILE_CHUNKS = (4,)
"""``task_chunk`` values timed through ``torch.compile`` by default (each compiles once)."""


def _chunked(chunk: int | None, *, compiled: bool = False) -> Method:
    return lambda p: AL.maml(
        p.model,
        p.params,
        *p.data,
        inner_lr=p.inner_lr,
        steps=p.steps,
        task_chunk=chunk,
        compiled=compiled,
    )


def make_methods(
    chunks: Sequence[int] = CHUNKS, compile_chunks: Sequence[int] = ()
) -> dict[str, Method]:
    """The timed implementations, all second-order MAML: ``vmap`` over the whole
    meta-batch, ``vmap`` over slices of each of ``chunks`` tasks, those of
    ``compile_chunks`` through ``torch.compile``, and the per-task loop."""
    methods = {WHOLE: _chunked(None)}
    methods.update({f"vmap, {c}/call": _chunked(c) for c in chunks})
    methods.update({f"{COMPILED}, {c}/call": _chunked(c, compiled=True) for c in compile_chunks})
    methods[LOOP] = lambda p: loop_maml(
        p.model, p.params, *p.data, inner_lr=p.inner_lr, steps=p.steps
    )
    return methods


METHODS: dict[str, Method] = make_methods()
"""The default set of timed implementations."""


def max_abs_difference(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Largest absolute elementwise difference between two gradient dicts (in float64)."""
    return max((a[n].double() - b[n].double()).abs().max().item() for n in a)


def float64_reference(problem: Problem) -> AL.MetaGradient:
    """:func:`loop_maml` on ``problem`` with the network, weights and images in float64."""
    model = copy.deepcopy(problem.model).double()
    params = {n: p.double() for n, p in problem.params.items()}
    sx, sy, qx, qy = problem.data
    return loop_maml(
        model,
        params,
        sx.double(),
        sy,
        qx.double(),
        qy,
        inner_lr=problem.inner_lr,
        steps=problem.steps,
    )


ROUNDING_LIMIT = 0.004
"""Largest float32 error accepted from an eager implementation, as a share of the float64
meta-gradient's largest entry.

With batch statistics over 5 support images the meta-gradient is ill-conditioned: the float32
loop itself is off by about 0.2 % of the scale on the default problem. A wrong gradient is off
by far more: first-order MAML, which lacks only the second-order terms, by 82 %."""

COMPILED_ROUNDING_LIMIT = 0.01
"""The same limit for ``torch.compile``: its reductions sum in another order than ATen's
pairwise sums, which costs about 0.5 % of the scale here (in float64 it equals eager)."""


def rounding_limit(name: str) -> float:
    """The float32 error an implementation may show (see :data:`ROUNDING_LIMIT`)."""
    return COMPILED_ROUNDING_LIMIT if name.startswith(COMPILED) else ROUNDING_LIMIT


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def iterations_per_second(method: Method, problem: Problem, *, seconds: float) -> float:
    """Runs ``method`` repeatedly for about ``seconds`` (after one warm-up call).

    Returns:
        Completed calls per second (at least two calls are timed).
    """
    device = problem.data[0].device
    method(problem)
    _sync(device)
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < seconds:
        method(problem)
        count += 1
    _sync(device)
    return count / (time.perf_counter() - start)


def profile_top_ops(method: Method, problem: Problem, *, top: int = 6) -> list[tuple[str, float]]:
    """Self time per operator for one call of ``method``, largest first.

    Returns:
        ``(operator, share of the total self time)`` pairs.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if problem.data[0].device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    method(problem)
    with profile(activities=activities) as prof:
        method(problem)
        _sync(problem.data[0].device)
    events = prof.key_averages()
    cuda = problem.data[0].device.type == "cuda"

    def self_time(event) -> float:
        return float(event.self_device_time_total if cuda else event.self_cpu_time_total)

    total = sum(self_time(e) for e in events) or 1.0
    ranked = sorted(events, key=self_time, reverse=True)[:top]
    return [(e.key, self_time(e) / total) for e in ranked]


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Checks, times and profiles every implementation; prints a table and a summary.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        Meta-iterations per second by implementation.
    """
    parser = argparse.ArgumentParser(
        prog="warmtune bench throughput maml", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per method")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--q-query", type=int, default=15, help="query images per class")
    parser.add_argument(
        "--chunks",
        default=",".join(map(str, CHUNKS)),
        help="comma-separated task_chunk values to time (default: %(default)s)",
    )
    parser.add_argument(
        "--compile-chunks",
        default=",".join(map(str, COMPILE_CHUNKS)),
        help="comma-separated task_chunk values to time through torch.compile, each compiled "
        "once before timing; empty for none (default: %(default)s)",
    )
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights and images")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU")
    chunks = _chunk_list(parser, "--chunks", args.chunks)
    compile_chunks = _chunk_list(parser, "--compile-chunks", args.compile_chunks)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    problem = make_problem(
        device=device,
        meta_batch=args.meta_batch,
        filters=args.filters,
        steps=args.steps,
        q_query=args.q_query,
        channels_last=args.channels_last,
    )
    methods = make_methods(chunks, compile_chunks)
    print(
        f"second-order MAML, meta-batch {args.meta_batch}, 5-way 1-shot {args.q_query} queries, "
        f"{args.filters} filters x 4 blocks, {args.steps} inner step(s), {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'channels-last' if args.channels_last else 'contiguous (NCHW)'}"
    )

    reference = float64_reference(problem)
    scale = max(g.abs().max().item() for g in reference.grads.values())
    compile_seconds: dict[str, float] = {}
    for name, method in methods.items():
        start = time.perf_counter()
        ours = method(problem)  # the first call of a compiled method compiles
        if name.startswith(COMPILED):
            compile_seconds[name] = time.perf_counter() - start
        error = max_abs_difference(ours.grads, reference.grads) / scale
        print(
            f"{name}: float32 meta-gradient vs the float64 loop: max abs error {error:.2%} of "
            f"the largest entry ({scale:.2e})"
        )
        limit = rounding_limit(name)
        if not error <= limit:
            raise SystemExit(
                f"{name} is off by {error:.2%} of the gradient's scale, more than float32 "
                f"rounding ({limit:.1%}); not timing a wrong result"
            )
    for name, seconds in compile_seconds.items():
        print(f"{name}: first call (compiling) took {seconds:.1f} s, not included below")

    rates = {
        name: iterations_per_second(method, problem, seconds=args.seconds)
        for name, method in methods.items()
    }
    width = max(len("implementation"), *map(len, rates))
    print(f"\n{'implementation':<{width}} {'meta-iter/s':>12} {'s/meta-iter':>12} {'vs loop':>8}")
    base = rates[LOOP]
    for name, rate in rates.items():
        print(f"{name:<{width}} {rate:>12.3f} {1 / rate:>12.3f} {rate / base:>7.2f}x")

    if not args.no_profile:
        shares = {}
        for name, method in methods.items():
            ops = profile_top_ops(method, problem, top=50)
            listed = ", ".join(f"{op} {share:.0%}" for op, share in ops[:6])
            print(f"\nwhere {name} spends its time (self time): {listed}")
            shares[name] = sum(share for op, share in ops if op in ELEMENTWISE)
        print("\n" + explain(rates, shares, device=device))
    return rates


def _chunk_list(parser: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    try:
        values = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        parser.error(f"{flag} takes comma-separated integers, got {text!r}")
    if any(c < 1 for c in values):
        parser.error(f"{flag} values must be >= 1, got {text!r}")
    return values


ELEMENTWISE = frozenset(
    {"aten::mul", "aten::add", "aten::add_", "aten::sub", "aten::div", "aten::copy_", "aten::neg"}
)
"""Memory-bound elementwise operators (batch norm, ReLU masks, inner-step updates)."""


def explain(rates: Mapping[str, float], elementwise: Mapping[str, float], *, device) -> str:
    """One paragraph on where the time goes, from the measured rates and profiles.

    Args:
        rates: Meta-iterations per second by implementation.
        elementwise: Share of self time in :data:`ELEMENTWISE` operators by implementation.
        device: The device measured.
    """
    whole, loop = rates[WHOLE], rates[LOOP]
    compiled = {n: r for n, r in rates.items() if n.startswith(COMPILED)}
    eager = {n: r for n, r in rates.items() if n not in (WHOLE, LOOP) and n not in compiled}
    best = max(eager, key=eager.__getitem__, default=WHOLE)
    chunked = rates[best]
    shares = ", ".join(f"{name} {share:.0%}" for name, share in elementwise.items())
    if compiled:
        fastest = max(compiled, key=compiled.__getitem__)
        counterpart = fastest.replace(COMPILED, "vmap")
        if counterpart in eager:
            versus = f"{compiled[fastest] / eager[counterpart]:.2f}x the same slices run eagerly"
        else:
            versus = f"{compiled[fastest] / chunked:.2f}x the fastest eager slice ({best})"
        fused = (
            f" torch.compile fuses that elementwise work (batch norm and its first and second "
            f"derivatives, ReLU masks, the inner step) into a few loops per layer, one pass "
            f"through memory instead of one per op: {fastest} runs {compiled[fastest]:.3f} "
            f"meta-iter/s, {compiled[fastest] / loop:.2f}x the loop and {versus}."
        )
    else:
        fused = ""
    if device.type != "cpu":
        return (
            f"On {device}, vmap over the whole meta-batch runs {whole / loop:.2f}x the loop's "
            f"rate: one batched kernel per op instead of 32 small launches. Elementwise share "
            f"of self time: {shares}.{fused}"
        )
    return (
        f"On this CPU the convolutions cost about the same in every variant (vmap turns the "
        f"per-task weights into one grouped convolution), so the difference is memory "
        f"traffic: vmap over all 32 tasks makes each batch-norm/ReLU/update op one pass over "
        f"tens of MB (32 tasks x 75 queries x 64 channels x 14 x 14 floats is 120 MB in the "
        f"first block), far beyond the caches, while the loop's per-task tensors (4 MB) stay "
        f"in L2/L3; elementwise ops take {shares} of the self time. Vectorising a few tasks "
        f"per call keeps operands cache-resident (the trainable's CPU default is "
        f"task_chunk={CPU_TASK_CHUNK}); the fastest eager slice here, {best}, runs "
        f"{chunked:.3f} vs {whole:.3f} meta-iter/s for whole-batch vmap and "
        f"{loop:.3f} for the loop ({chunked / loop:.2f}x): eagerly, vmap saves only Python "
        f"and dispatch overhead, which is small next to 64-filter convolutions.{fused}"
    )


if __name__ == "__main__":
    main()
