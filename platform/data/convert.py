"""Converters from public formats to what warmtune stores.

Omniglot is published as zips of PNGs, one per drawing, in folders
``images_background/ALPHABET/characterNN/IIII_DD.png``: ``IIII`` is the character's
id (the official character order) and ``DD`` the drawer, 01 to 20. The trainables read
two ``.npz`` files instead (see :mod:`warmtune.trainables.omniglot`):

* ``images``: bool ``[characters, 20, 105, 105]``, ``True`` for the white background and
  ``False`` for ink, exactly as the official Python demo reads a PNG
  (``np.array(plt.imread(fn), dtype=bool)``), rows and columns as in the PNG;
* ``labels``: int64 ``[characters, 20]``, the character's index in the file;

with characters sorted by id and drawings by drawer.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np

__all__ = [
    "OMNIGLOT_DRAWERS",
    "OMNIGLOT_SIZE",
    "omniglot_zip_to_npz",
    "read_omniglot_zip",
    "write_npz",
]

OMNIGLOT_SIZE = 105
"""Side of an Omniglot drawing, in pixels."""

OMNIGLOT_DRAWERS = 20
"""Drawings (drawers) per character."""

_DRAWING = re.compile(
    r"(?:^|/)(?P<alphabet>[^/]+)/(?P<character>character\d+)/(?P<id>\d+)_(?P<drawer>\d+)\.png$"
)


def write_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """``numpy.savez_compressed``, but the same arrays always give the same bytes.

    numpy stamps each member with the current time; a fixed one makes conversions
    reproducible. (Other zip writers may lay the container out differently; the
    registry's per-array checksums do not depend on that.)
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def read_omniglot_zip(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """The drawings of one official Omniglot zip as ``(images, labels)`` (module docstring).

    Raises:
        ValueError: A PNG outside the ``ALPHABET/characterNN/ID_DRAWER.png`` layout, an
            image that is not 105x105, one character id in two folders, or a character
            without exactly drawers 1 to 20; the message names the file or folder.
    """
    from PIL import Image

    folders: dict[int, str] = {}
    drawings: dict[int, dict[int, np.ndarray]] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or not name.lower().endswith(".png") or "__MACOSX" in name:
                continue
            match = _DRAWING.search(name)
            if match is None:
                raise ValueError(
                    f"{path}: {name} is not ALPHABET/characterNN/ID_DRAWER.png; is this an "
                    "official Omniglot images zip?"
                )
            char_id, drawer = int(match["id"]), int(match["drawer"])
            folder = f"{match['alphabet']}/{match['character']}"
            if folders.setdefault(char_id, folder) != folder:
                raise ValueError(
                    f"{path}: character id {char_id} is in two folders, "
                    f"{folders[char_id]} and {folder}"
                )
            with Image.open(io.BytesIO(archive.read(info))) as image:
                if image.size != (OMNIGLOT_SIZE, OMNIGLOT_SIZE):
                    raise ValueError(
                        f"{path}: {name} is {image.size[0]}x{image.size[1]}, expected "
                        f"{OMNIGLOT_SIZE}x{OMNIGLOT_SIZE}"
                    )
                # Any non-black pixel is background, as bool(plt.imread(...)) reads it.
                pixels = np.asarray(image.convert("L")) > 0
            drawings.setdefault(char_id, {})[drawer] = pixels
    if not drawings:
        raise ValueError(f"{path}: no Omniglot PNGs found")
    ids = sorted(drawings)
    want = list(range(1, OMNIGLOT_DRAWERS + 1))
    for char_id in ids:
        if sorted(drawings[char_id]) != want:
            raise ValueError(
                f"{path}: {folders[char_id]} has drawers {sorted(drawings[char_id])}, "
                f"expected 1 to {OMNIGLOT_DRAWERS}"
            )
    images = np.stack([np.stack([drawings[i][d] for d in want]) for i in ids])
    labels = np.repeat(np.arange(len(ids), dtype=np.int64)[:, None], OMNIGLOT_DRAWERS, axis=1)
    return images, labels


def omniglot_zip_to_npz(zip_path: str | os.PathLike[str], npz_path: Path) -> int:
    """Convert one official Omniglot zip to the ``.npz`` the trainables read.

    Returns:
        The number of characters written.
    """
    images, labels = read_omniglot_zip(zip_path)
    write_npz(npz_path, images=images, labels=labels)
    return int(images.shape[0])
