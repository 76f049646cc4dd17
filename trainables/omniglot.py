"""Omniglot few-shot episodes (Lake et al. 2015) with the standard MAML protocol.

The reference data is two ``.npz`` files (see docs/data.md): ``images_background.npz``
(964 characters) and ``images_evaluation.npz`` (659 characters), each ``images`` bool
``[characters, 20 drawers, 105, 105]`` with ``True`` for the white background. Together, in
that order, they are the 1,623 characters in official order.

Protocol (Finn et al. 2017, after Vinyals et al. 2016 and Santoro et al. 2016):

* every image is downsampled to 28x28 with area averaging and inverted, so ink is 1.0 and
  background 0.0;
* the first 1,200 characters are meta-training, the remaining 423 meta-test. warmtune holds
  the last :data:`DEFAULT_VAL_CHARACTERS` of the 1,200 out as meta-validation, the split a
  hyperparameter search scores trials on, so the meta-test split stays untouched until the
  final evaluation;
* meta-training characters rotated by 90, 180 and 270 degrees are new classes (4x1,100 =
  4,400 classes). Meta-validation and meta-test use the unrotated characters only (100 and
  423 classes), as the MAML code does: augmentation is a training device, and scoring on
  rotated copies would count one character up to four times.

Files are read once per process and kept in memory (about 100 MB as float32); nothing is ever
written next to the data. Episode sampling takes an explicit ``torch.Generator``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

IMAGE_SIZE = 28
"""Side of the downsampled images."""

SOURCE_SIZE = 105
"""Side of the original images."""

DRAWERS = 20
"""Examples (drawers) per character."""

FILES = ("images_background.npz", "images_evaluation.npz")
"""The two reference files, in official character order."""

NUM_CHARACTERS = 1623
NUM_META_TRAIN_CHARACTERS = 1200
DEFAULT_VAL_CHARACTERS = 100
"""Characters at the end of the 1,200 meta-training ones held out as meta-validation."""

ROTATIONS = 4
"""Rotations by 0, 90, 180 and 270 degrees: each meta-training character gives 4 classes."""

Split = Literal["train", "val", "test"]


class Episodes(NamedTuple):
    """A meta-batch of ``T`` N-way classification tasks.

    Attributes:
        support_x: ``[T, N*K, 1, 28, 28]`` float images, ink 1.0.
        support_y: ``[T, N*K]`` int64 labels in ``0..N-1``.
        query_x: ``[T, N*Q, 1, 28, 28]``.
        query_y: ``[T, N*Q]``.
        classes: ``[T, N]`` split-level class ids; ``classes[t, label]`` is the class
            behind ``label`` in task ``t``.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: Tensor

    def to(self, device: torch.device | str) -> Episodes:
        """Returns the episodes with every tensor on ``device``."""
        return Episodes(*(t.to(device) for t in self))


@dataclass(frozen=True)
class OmniglotSplit:
    """The images of one split, and whether rotated copies count as extra classes.

    Class ``c`` is character ``c % characters`` rotated by ``90 * (c // characters)``
    degrees, so without rotations class ids are character ids within the split.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        images: ``[characters, 20, 28, 28]`` float32, ink 1.0; shared, do not modify.
        rotations: Whether the 90/180/270-degree rotations are classes too.
    """

    name: str
    images: Tensor
    rotations: bool

    @property
    def num_characters(self) -> int:
        """Distinct characters in the split."""
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Classes episodes draw from: characters, times 4 with rotations."""
        return self.num_characters * (ROTATIONS if self.rotations else 1)


def _area_matrix(n_in: int, n_out: int) -> Tensor:
    # Row i averages inputs [floor(i*n_in/n_out), ceil((i+1)*n_in/n_out)): exactly what
    # F.interpolate(mode="area") (adaptive average pooling) does, written as a matrix so
    # that the separable 2-d resize of 32k images is two batched matmuls (~2 s, vs ~6 s).
    matrix = torch.zeros(n_out, n_in)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _resize(background: np.ndarray) -> Tensor:
    """``[C, 20, 105, 105]`` bool, True = background -> ``[C, 20, 28, 28]`` float, ink 1."""
    area = _area_matrix(SOURCE_SIZE, IMAGE_SIZE)
    flat = torch.from_numpy(background).reshape(-1, SOURCE_SIZE, SOURCE_SIZE)
    chunks = [area @ (~chunk).float() @ area.T for chunk in torch.split(flat, 4096)]
    return torch.cat(chunks).reshape(-1, DRAWERS, IMAGE_SIZE, IMAGE_SIZE)


def check_data_folder(path: str | Path) -> Path:
    """``path`` resolved to an absolute folder that holds both Omniglot files.

    Args:
        path: ``"omniglot"``, the dataset in the data directory (``warmtune data fetch
            omniglot`` puts it there), or a folder holding ``images_background.npz`` and
            ``images_evaluation.npz``.

    Returns:
        The absolute path.

    Raises:
        ValueError: If a file is missing, naming the folder that was checked and the
            command that provides the data.
    """
    from warmtune.data import resolve

    folder = resolve(path, kind="omniglot")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"no Omniglot data at {folder}: missing {', '.join(missing)}; give the "
            "dataset name omniglot (`warmtune data fetch omniglot` puts it in the data "
            "directory) or a folder holding images_background.npz and images_evaluation.npz"
        )
    return folder


@functools.lru_cache(maxsize=2)
def _load_resized(folder: Path) -> Tensor:
    parts = []
    for name in FILES:
        with np.load(folder / name) as archive:
            images = archive["images"]
        if images.dtype != np.bool_ or images.shape[1:] != (DRAWERS, SOURCE_SIZE, SOURCE_SIZE):
            raise ValueError(
                f"{folder / name}: expected bool images [characters, {DRAWERS}, {SOURCE_SIZE}, "
                f"{SOURCE_SIZE}], got {images.dtype} {images.shape}; use the reference files"
            )
        parts.append(_resize(images))
    resized = torch.cat(parts)
    if resized.shape[0] != NUM_CHARACTERS:
        raise ValueError(
            f"{folder}: expected {NUM_CHARACTERS} characters in total, got {resized.shape[0]}; "
            "use the reference files"
        )
    return resized


def load_images(path: str | Path) -> Tensor:
    """All 1,623 characters, resized to 28x28 with ink 1.0, in official order.

    The result is cached per process (keyed by the resolved folder), so every trial a Ray
    worker runs shares one copy; treat it as read-only.

    Args:
        path: Folder holding ``images_background.npz`` and ``images_evaluation.npz``.

    Returns:
        ``[1623, 20, 28, 28]`` float32.

    Raises:
        ValueError: If a file is missing or does not have the reference layout.
    """
    return _load_resized(check_data_folder(path))


def load_split(
    path: str | Path, split: Split, *, val_characters: int = DEFAULT_VAL_CHARACTERS
) -> OmniglotSplit:
    """One split of the standard protocol.

    ``train`` is characters ``[0, 1200 - val_characters)`` with rotations as extra classes,
    ``val`` the last ``val_characters`` of the first 1,200, ``test`` characters
    ``[1200, 1623)``; ``val`` and ``test`` are not rotated.

    Args:
        path: Folder holding the two ``.npz`` files.
        split: ``"train"``, ``"val"`` or ``"test"``.
        val_characters: Size of the meta-validation hold-out.

    Returns:
        The split (its images are views of the cached array).

    Raises:
        ValueError: If ``split`` is unknown, ``val_characters`` is out of range, or the data
            is missing.
    """
    if not 1 <= val_characters < NUM_META_TRAIN_CHARACTERS:
        raise ValueError(
            f"val_characters must be in [1, {NUM_META_TRAIN_CHARACTERS - 1}], got {val_characters}"
        )
    bounds = {
        "train": (0, NUM_META_TRAIN_CHARACTERS - val_characters),
        "val": (NUM_META_TRAIN_CHARACTERS - val_characters, NUM_META_TRAIN_CHARACTERS),
        "test": (NUM_META_TRAIN_CHARACTERS, NUM_CHARACTERS),
    }
    if split not in bounds:
        raise ValueError(f"split must be one of {', '.join(bounds)}, got {split!r}")
    start, end = bounds[split]
    images = load_images(path)[start:end]
    return OmniglotSplit(name=split, images=images, rotations=split == "train")


def sample_episodes(
    split: OmniglotSplit,
    *,
    num_tasks: int,
    n_way: int,
    k_shot: int,
    q_query: int,
    generator: torch.Generator,
) -> Episodes:
    """Draws ``num_tasks`` N-way K-shot tasks with ``q_query`` query images per class.

    Each task takes ``n_way`` distinct classes and ``k_shot + q_query`` distinct drawers of
    each; the class at position ``j`` of ``classes[t]`` gets label ``j``, so labels are a
    fresh random assignment per task, and the examples within the support and the query set
    are shuffled. Everything is drawn from ``generator`` on the CPU: the same generator
    state gives the same episodes, whatever the global RNG.

    Args:
        split: Split to draw from.
        num_tasks: Tasks ``T`` in the meta-batch.
        n_way: Classes per task ``N``.
        k_shot: Support images per class ``K``.
        q_query: Query images per class ``Q``.
        generator: CPU RNG; its state advances.

    Returns:
        The episodes, on the CPU (move them with :meth:`Episodes.to`).

    Raises:
        ValueError: If a count is not positive, the split has fewer than ``n_way`` classes,
            or ``k_shot + q_query`` exceeds the 20 drawers.
    """
    for name, value in (
        ("num_tasks", num_tasks),
        ("n_way", n_way),
        ("k_shot", k_shot),
        ("q_query", q_query),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if n_way > split.num_classes:
        raise ValueError(
            f"n_way={n_way} exceeds the {split.num_classes} classes of the {split.name!r} "
            "split; lower n_way"
        )
    if k_shot + q_query > DRAWERS:
        raise ValueError(
            f"k_shot + q_query = {k_shot + q_query} exceeds the {DRAWERS} examples per "
            "character; lower q_query"
        )
    per_class = k_shot + q_query
    # argsort of uniform noise = independent random permutations, one per row, in one call.
    classes = torch.rand(num_tasks, split.num_classes, generator=generator).argsort(dim=1)
    classes = classes[:, :n_way]
    drawers = torch.rand(num_tasks, n_way, DRAWERS, generator=generator).argsort(dim=2)
    drawers = drawers[:, :, :per_class]
    characters = classes % split.num_characters
    images = split.images[characters[:, :, None], drawers]  # [T, N, K+Q, 28, 28]
    if split.rotations:
        turns = classes // split.num_characters  # [T, N], 0..3 quarter turns
        rotated = torch.stack([torch.rot90(images, r, dims=(-2, -1)) for r in range(ROTATIONS)])
        images = rotated[turns, torch.arange(num_tasks)[:, None], torch.arange(n_way)]
    labels = torch.arange(n_way).view(1, n_way, 1).expand(num_tasks, n_way, per_class)

    def take(part: slice, shots: int) -> tuple[Tensor, Tensor]:
        x = images[:, :, part].reshape(num_tasks, n_way * shots, 1, IMAGE_SIZE, IMAGE_SIZE)
        y = labels[:, :, part].reshape(num_tasks, n_way * shots)
        order = torch.rand(num_tasks, n_way * shots, generator=generator).argsort(dim=1)
        return x[torch.arange(num_tasks)[:, None], order], y.gather(1, order)

    support_x, support_y = take(slice(0, k_shot), k_shot)
    query_x, query_y = take(slice(k_shot, per_class), q_query)
    return Episodes(support_x, support_y, query_x, query_y, classes)


__all__ = [
    "DEFAULT_VAL_CHARACTERS",
    "IMAGE_SIZE",
    "Episodes",
    "OmniglotSplit",
    "Split",
    "check_data_folder",
    "load_images",
    "load_split",
    "sample_episodes",
]
