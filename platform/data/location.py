"""Where datasets live: the one data directory, and names resolved through it.

Every loader, the command line and the tests find data through :func:`data_dir`, so a
single setting moves all of it: ``$WARMTUNE_DATA``, else ``~/.cache/warmtune/data``.
A dataset sits in its registry folder below it (``yahpo/lcbench``, ``omniglot``,
``nas-bench-201``), which is also the layout of a mirror.
"""

from __future__ import annotations

import os
from pathlib import Path

from .registry import Dataset, UnknownDatasetError, all_datasets, get_dataset

__all__ = [
    "DEFAULT_DATA_DIR",
    "DatasetMissingError",
    "data_dir",
    "dataset_path",
    "how_to_get",
    "is_dataset_name",
    "is_present",
    "names",
    "require",
    "resolve",
]

DEFAULT_DATA_DIR = "~/.cache/warmtune/data"
"""The data directory when neither an explicit one nor ``$WARMTUNE_DATA`` is given."""


class DatasetMissingError(ValueError):
    """A named dataset is not (completely) in the data directory.

    The message says which files are missing and the exact command that provides them.

    Attributes:
        name: The dataset's name.
        missing: Paths of the missing files, relative to the data directory.
    """

    def __init__(self, name: str, missing: list[str], root: Path) -> None:
        self.name = name
        self.missing = missing
        shown = ", ".join(missing[:3])
        if len(missing) > 3:
            shown += f" and {len(missing) - 3} more"
        super().__init__(
            f"dataset {name!r} is not in the data directory {root} (missing {shown}); "
            f"{how_to_get(name)}"
        )


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory, absolute: ``explicit``, else ``$WARMTUNE_DATA``, else
    ``~/.cache/warmtune/data``.

    The same precedence as ``warmtune bench --data-dir``. The folder need not exist.
    """
    raw = explicit if explicit is not None else os.environ.get("WARMTUNE_DATA") or DEFAULT_DATA_DIR
    return Path(os.path.expandvars(os.fspath(raw))).expanduser().resolve()


def dataset_path(name: str, *, root: str | os.PathLike[str] | None = None) -> Path:
    """Where dataset ``name`` lives (present or not), e.g. ``DATA/yahpo/lcbench``.

    Args:
        name: A registered name (``lcbench``, ``omniglot``, ``nb201``, ...).
        root: The data directory (default: :func:`data_dir`).

    Raises:
        UnknownDatasetError: ``name`` is not registered.
    """
    return data_dir(root) / get_dataset(name).folder


def _missing(dataset: Dataset, root: Path) -> list[str]:
    return [f.path for f in dataset.files if not (root / f.path).is_file()]


def is_present(name: str, *, root: str | os.PathLike[str] | None = None) -> bool:
    """Whether every file of dataset ``name`` is in the data directory (not hashed)."""
    return not _missing(get_dataset(name), data_dir(root))


def how_to_get(name: str) -> str:
    """The command that provides dataset ``name``, as a sentence."""
    dataset = get_dataset(name)
    if dataset.downloadable:
        return (
            f"run `warmtune data fetch {name}` (or, from a folder that has it, "
            f"`warmtune data import {name} --from DIR`)"
        )
    return (
        f"it has no public download: run `warmtune data import {name} --from DIR` with a "
        f"folder that has it, or `warmtune data fetch {name} --mirror URL` "
        "(`warmtune data list` and docs/data.md say where it comes from)"
    )


def require(name: str, *, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of dataset ``name``, which must be complete.

    Raises:
        UnknownDatasetError: ``name`` is not registered.
        DatasetMissingError: A file is missing; the message says how to get it.
    """
    dataset = get_dataset(name)
    base = data_dir(root)
    missing = _missing(dataset, base)
    if missing:
        raise DatasetMissingError(name, missing, base)
    return base / dataset.folder


def is_dataset_name(value: object, *, kind: str | None = None) -> bool:
    """Whether ``value`` is a registered name (of ``kind``, if given), not a path.

    Only plain strings count: a :class:`~pathlib.Path` is always a path.
    """
    if type(value) is not str or "/" in value or os.sep in value:
        return False
    try:
        dataset = get_dataset(value)
    except UnknownDatasetError:
        return False
    return kind is None or dataset.kind == kind


def names(kind: str) -> list[str]:
    """Registered names of ``kind``."""
    return [d.name for d in all_datasets() if d.kind == kind]


def resolve(value: str | os.PathLike[str], *, kind: str) -> Path:
    """A data setting as an absolute path.

    A registered name of ``kind`` (``lcbench`` for ``kind="yahpo"``, ``omniglot``,
    ``nb201``) is the dataset's folder in the data directory and must be complete.
    Anything else is a path: ``~`` and ``$VARS`` expanded, made absolute, not checked
    (the caller knows what the folder must hold). Write ``./lcbench`` for a folder of
    that name in the working directory.

    Raises:
        DatasetMissingError: A name whose dataset is not (completely) there.
    """
    if is_dataset_name(value, kind=kind):
        return require(str(value))
    return Path(os.path.expandvars(os.path.expanduser(os.fspath(value)))).resolve()
