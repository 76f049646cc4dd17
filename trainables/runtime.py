"""What every torch trainable needs on Ray, shared by the few-shot learners (maml/) and
the NAS child networks (nas/): the device, torch's thread count, seeded generators,
and the report-and-checkpoint loop."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import torch

__all__ = [
    "Device",
    "Learner",
    "check_cpp_compiler",
    "make_generator",
    "match_threads_to_ray",
    "report_until",
    "resolve_device",
]

Device = Literal["auto", "cpu", "cuda"]


def make_generator(seed: int) -> torch.Generator:
    """Returns a fresh CPU ``torch.Generator`` seeded with ``seed``.

    Args:
        seed: Any integer; it is reduced to the 64-bit range torch accepts.
    """
    generator = torch.Generator()
    generator.manual_seed(seed % 2**64)
    return generator


def resolve_device(device: Device) -> torch.device:
    """The torch device for a ``device`` setting.

    ``"auto"`` picks CUDA when torch sees a GPU. Under Ray that means the trial requested
    one: Ray sets ``CUDA_VISIBLE_DEVICES`` to the trial's GPUs, empty when it has none.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Raises:
        ValueError: If ``"cuda"`` is asked for and no GPU is visible.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but torch sees no GPU; request a GPU for the trial "
            "(resources: {gpu: 1}) or use device 'auto' or 'cpu'"
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_cpp_compiler() -> None:
    """``torch.compile`` on a CPU builds C++ kernels: fail early, naming the setting.

    Inductor uses ``$CXX``, else ``g++`` (it tries no other name).

    Raises:
        ValueError: If that compiler is not on the PATH.
    """
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise ValueError(
            f"compile: true on a CPU needs a C++ compiler (torch.compile builds C++ kernels "
            f"with $CXX, else g++), and {compiler!r} is not on the PATH; install g++ "
            "(Debian: apt install g++), point CXX at another compiler (CXX=clang++), or set "
            "compile: false"
        )


def match_threads_to_ray() -> None:
    """Sets torch's intra-op thread count to the CPUs Ray assigned to the current trial.

    Call it at the start of a function trainable, inside the Ray worker. Nothing changes
    when Ray assigned no CPU count or torch already uses that many threads.
    """
    # Ray exports OMP_NUM_THREADS from the trial's CPU request; only correct torch when it
    # disagrees with that assignment (e.g. a reused actor), never guess a count of our own.
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus is not None and cpus >= 1 and torch.get_num_threads() != int(cpus):
        torch.set_num_threads(int(cpus))


class Learner(Protocol):
    """What :func:`report_until` drives: one reported iteration per :meth:`step`."""

    @property
    def iteration(self) -> int: ...

    def step(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def report_until(
    learner: Learner,
    *,
    max_iterations: int,
    checkpoint_every: int,
    last_metrics: Callable[[], Mapping[str, float]] | None = None,
    checkpoint_file: str,
) -> None:
    """The Ray Tune loop of a meta-learning trainable.

    Restores ``learner`` from ``ray.tune.get_checkpoint()`` when Tune provides one, then
    reports one result per :meth:`Learner.step` until ``max_iterations``, with a
    checkpoint every ``checkpoint_every`` iterations and at the last one (the learner's
    ``state_dict()`` saved as ``checkpoint_file``). The last result also holds
    ``last_metrics()`` (e.g. a final meta-test evaluation).
    """
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(
                os.path.join(directory, checkpoint_file), map_location="cpu", weights_only=True
            )
        learner.load_state_dict(state)

    while learner.iteration < max_iterations:
        metrics = learner.step()
        done = learner.iteration >= max_iterations
        if done and last_metrics is not None:
            metrics.update(last_metrics())
        if done or learner.iteration % checkpoint_every == 0:
            with tempfile.TemporaryDirectory() as directory:
                torch.save(learner.state_dict(), os.path.join(directory, checkpoint_file))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(metrics)
