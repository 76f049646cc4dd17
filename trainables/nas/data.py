"""Omniglot as an ordinary image-classification task, for training NAS child networks.

Few-shot learning splits Omniglot by character; classification splits it by drawer. The
first ``classes`` characters in official order (the "background" alphabets first) are the
classes, and each character's 20 drawings (one per drawer) are split by drawer:

* drawers 0-13 (14 images per class): training;
* drawers 14-16 (3 per class): validation, the split a search scores trials on;
* drawers 17-19 (3 per class): test, touched once at the end of a trial.

Every drawer draws every character, so the three splits hold the same classes drawn by
different people. Images are the few-shot loader's (:func:`warmtune.trainables.omniglot
.load_images`): 28x28, area-downsampled, ink 1.0, cached per process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from warmtune.trainables.omniglot import NUM_CHARACTERS, load_images

TRAIN_DRAWERS = range(0, 14)
VAL_DRAWERS = range(14, 17)
TEST_DRAWERS = range(17, 20)

Split = Literal["train", "val", "test"]
_DRAWERS: dict[str, range] = {"train": TRAIN_DRAWERS, "val": VAL_DRAWERS, "test": TEST_DRAWERS}

__all__ = [
    "TEST_DRAWERS",
    "TRAIN_DRAWERS",
    "VAL_DRAWERS",
    "Dataset",
    "load_classification",
    "random_shift",
]


class Dataset(NamedTuple):
    """Images and labels of one split, in memory.

    Attributes:
        x: ``[n, 1, 28, 28]`` float32, ink 1.0.
        y: ``[n]`` int64 class ids in ``0..classes-1``.
    """

    x: Tensor
    y: Tensor


def load_classification(path: str | Path, split: Split, *, classes: int) -> Dataset:
    """One split of Omniglot classification over the first ``classes`` characters.

    Args:
        path: Folder holding ``images_background.npz`` and ``images_evaluation.npz``.
        split: ``"train"``, ``"val"`` or ``"test"`` (see the module docstring).
        classes: Number of characters (classes), 2 to 1,623.

    Returns:
        The split, class-major (all drawings of class 0 first); shuffle when training.

    Raises:
        ValueError: If ``split`` or ``classes`` is out of range, or the data is missing.
    """
    if split not in _DRAWERS:
        raise ValueError(f"split must be one of {', '.join(_DRAWERS)}, got {split!r}")
    if not 2 <= classes <= NUM_CHARACTERS:
        raise ValueError(f"classes must be in [2, {NUM_CHARACTERS}], got {classes}")
    drawers = _DRAWERS[split]
    images = load_images(path)[:classes, drawers.start : drawers.stop]  # [C, D, 28, 28]
    x = images.reshape(-1, 1, *images.shape[-2:]).clone()
    y = torch.arange(classes).repeat_interleave(len(drawers))
    return Dataset(x, y)


def random_shift(x: Tensor, *, pixels: int, generator: torch.Generator) -> Tensor:
    """Translates each image by its own random whole-pixel offset in ``[-pixels, pixels]``.

    Pixels shifted in from outside are background (0). ``pixels = 0`` returns ``x``.

    Args:
        x: ``[B, C, H, W]`` images on any device.
        pixels: Largest shift along each axis.
        generator: CPU RNG for the offsets; its state advances.
    """
    if pixels == 0:
        return x
    batch, _, height, width = x.shape
    offsets = torch.randint(-pixels, pixels + 1, (batch, 2), generator=generator).to(x.device)
    padded = torch.nn.functional.pad(x, (pixels, pixels, pixels, pixels))
    rows = torch.arange(height, device=x.device)[None, :] + pixels - offsets[:, :1]  # [B, H]
    cols = torch.arange(width, device=x.device)[None, :] + pixels - offsets[:, 1:]  # [B, W]
    index = torch.arange(batch, device=x.device)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]
    return shifted.permute(0, 3, 1, 2).contiguous()
