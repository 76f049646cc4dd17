"""Getting datasets into the data directory, and checking what is there.

:func:`fetch` downloads a dataset (from a mirror, its files' URLs, or its public sources
through a converter), :func:`import_dataset` copies it from a folder, :func:`verify`
re-checks what is stored. All three check every file against the registry before it
takes its real name, so an interrupted or failed run leaves only hidden temporary files
(``.NAME.XXXX.partial``, ``.fetch-NAME-XXXX/``) and never a file that looks complete.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from .checks import FileCheck, check_file, git_blob_id, read_recorded, record_sha256, sha256_file
from .download import ChecksumMismatchError, DownloadError, download
from .location import data_dir
from .registry import DataFile, Dataset, Source, get_dataset

__all__ = ["DataError", "fetch", "import_dataset", "mirror_url", "verify"]

Report = Callable[[str], None]


class DataError(RuntimeError):
    """Fetching or importing a dataset failed; the message says what to do instead."""


def mirror_url(explicit: str | None = None) -> str | None:
    """The mirror to fetch from: ``explicit``, else ``$WARMTUNE_DATA_MIRROR``, else none.

    A mirror is any HTTP(S) server or ``file://`` folder with a data directory's layout
    (``MIRROR/yahpo/lcbench/model.onnx``), e.g. ``python -m http.server`` run inside one.
    """
    value = explicit or os.environ.get("WARMTUNE_DATA_MIRROR") or None
    return value.rstrip("/") if value else None


def _quiet(_: str) -> None:
    pass


def _sha(file: DataFile) -> str:
    if file.sha256 is not None:
        return f"SHA-256 {file.sha256}"
    if file.npz_sha256 is not None:
        return "arrays with SHA-256 " + ", ".join(f"{k} {v}" for k, v in file.npz_sha256.items())
    return "no published SHA-256"


def _offline_hint(dataset: Dataset) -> str:
    return (
        f"Without network access, copy it from a folder that has it (a shared drive, a "
        f"colleague's data directory): `warmtune data import {dataset.name} --from DIR`, "
        f"with DIR holding {dataset.folder}/ (or being that folder)."
    )


def _failed(dataset: Dataset, error: DownloadError, what: str, root: Path) -> DataError:
    if isinstance(error, ChecksumMismatchError):
        return DataError(
            f"{dataset.name}: downloaded {error.url}, but it is not the expected file: "
            f"{error.reason}. Nothing was kept. Expected {what} in {root}. The file at the "
            f"source has changed or the transfer was altered; try again later or "
            f"elsewhere, or import a copy you trust. {_offline_hint(dataset)}"
        )
    return DataError(
        f"{dataset.name}: could not download {error.url} ({error.reason}; "
        f"{'1 attempt' if error.attempts == 1 else f'{error.attempts} attempts'}). Nothing "
        f"was kept. Expected {what} in {root}. {_offline_hint(dataset)}"
    )


def _file_check(file: DataFile) -> Callable[[Path, str], str | None]:
    def check(tmp: Path, _sha256: str) -> str | None:
        verdict = check_file(file, tmp)
        return None if verdict.good else verdict.detail

    return check


def _source_check(source: Source) -> Callable[[Path, str], str | None]:
    def check(tmp: Path, sha256: str) -> str | None:
        if source.sha256 is not None and sha256 != source.sha256:
            return f"SHA-256 is {sha256}, expected {source.sha256}"
        if source.git_blob is not None:
            blob = git_blob_id(tmp)
            if blob != source.git_blob:
                return f"git blob id is {blob}, expected {source.git_blob}"
        return None

    return check


def _url(base: str, path: str) -> str:
    return f"{base}/{urllib.parse.quote(path)}"


def _entry(dataset: str | Dataset) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else get_dataset(dataset)


def fetch(
    name: str | Dataset,
    *,
    root: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    progress: bool = True,
    attempts: int = 3,
    retry_wait: float = 1.0,
    timeout: float = 60.0,
    report: Report | None = None,
) -> Path:
    """Download dataset ``name`` into the data directory, checked; return its folder.

    Files already there and intact are kept. A corrupted one is replaced. The files come
    from the mirror (``mirror`` or ``$WARMTUNE_DATA_MIRROR``) when there is one, else
    from their public URLs, else from the dataset's public sources through its
    converter.

    Args:
        name: A registered dataset's name, or a :class:`~warmtune.data.Dataset`.
        root: The data directory (default: :func:`~warmtune.data.data_dir`).
        mirror: Base URL of a mirror (see :func:`mirror_url`).
        progress: Progress bars on a terminal.
        attempts, retry_wait, timeout: Per download; see
            :func:`warmtune.data.download.download`.
        report: Called with one line per step (default: silent).

    Raises:
        UnknownDatasetError: ``name`` is not registered.
        DataError: A download failed or did not match its checksum (nothing of it was
            kept), or the dataset has no public download and no mirror was given.
    """
    say = report or _quiet
    dataset = _entry(name)
    name = dataset.name
    base = data_dir(root)
    verdicts = {f.path: check_file(f, base / f.path) for f in dataset.files}
    todo = [f for f in dataset.files if not verdicts[f.path].good]
    for f in todo:
        if verdicts[f.path].status == "corrupted":
            say(f"{name}: replacing {f.path}: {verdicts[f.path].detail}")
    if not todo:
        say(f"{name}: already in {base / dataset.folder}, checked")
        return base / dataset.folder
    base_url = mirror_url(mirror)
    if base_url is None and not all(f.url for f in todo):
        if dataset.sources and dataset.convert is not None:
            _fetch_sources(
                dataset,
                todo,
                base,
                progress=progress,
                say=say,
                attempts=attempts,
                retry_wait=retry_wait,
                timeout=timeout,
            )
            return base / dataset.folder
        raise DataError(
            f"{name}: there is no public download of this dataset to fetch. "
            f"{' '.join(dataset.notes)} Canonical source: {dataset.source}. From a mirror "
            f"that has it: `warmtune data fetch {name} --mirror URL`."
        )
    for f in todo:
        url = _url(base_url, f.path) if base_url is not None else str(f.url)
        dest = base / f.path
        try:
            sha256 = download(
                url,
                dest,
                check=_file_check(f),
                attempts=attempts,
                retry_wait=retry_wait,
                timeout=timeout,
                progress=progress,
                label=f.path,
            )
        except DownloadError as e:
            raise _failed(dataset, e, f"{f.path} ({_sha(f)})", base) from None
        if f.sha256 is None and f.npz_sha256 is None:
            record_sha256(dest, sha256, f"downloaded from {url} on {dt.date.today()}")
            say(
                f"{name}: {f.path} ({_size(dest)}) from {url}, NOT checked: no published "
                f"SHA-256 to check it against; recorded the one it arrived with, {sha256}, "
                "for `warmtune data verify`"
            )
        else:
            say(f"{name}: {f.path} ({_size(dest)}) from {url}, checked")
    return base / dataset.folder


def _fetch_sources(
    dataset: Dataset,
    todo: list[DataFile],
    base: Path,
    *,
    progress: bool,
    say: Report,
    attempts: int,
    retry_wait: float,
    timeout: float,
) -> None:
    assert dataset.convert is not None
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=base, prefix=f".fetch-{dataset.name}-"))
    try:
        downloaded: dict[str, Path] = {}
        for source in dataset.sources:
            pin = f"git blob {source.git_blob}" if source.git_blob else f"SHA-256 {source.sha256}"
            try:
                download(
                    source.url,
                    staging / "sources" / source.filename,
                    check=_source_check(source),
                    attempts=attempts,
                    retry_wait=retry_wait,
                    timeout=timeout,
                    progress=progress,
                    label=source.filename,
                )
            except DownloadError as e:
                raise _failed(dataset, e, f"{source.filename} ({pin})", base) from None
            say(f"{dataset.name}: {source.filename} from {source.url}, checked ({pin})")
            downloaded[source.filename] = staging / "sources" / source.filename
        out = staging / "out"
        out.mkdir()
        say(f"{dataset.name}: converting {', '.join(downloaded)}")
        dataset.convert(downloaded, out)
        placed = []
        for f in todo:
            made = out / f.path[len(dataset.folder) + 1 :]
            verdict = check_file(f, made)
            if not verdict.good:
                raise DataError(
                    f"{dataset.name}: the converted {f.path} is not the expected file "
                    f"({verdict.detail}); nothing was kept. The public source has changed "
                    f"or the converter is wrong; please report it. {_offline_hint(dataset)}"
                )
            placed.append((made, base / f.path))
        for made, dest in placed:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(made, dest)
            say(f"{dataset.name}: {dest.relative_to(base)} ({_size(dest)}) converted, checked")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def verify(name: str | Dataset, *, root: str | os.PathLike[str] | None = None) -> list[FileCheck]:
    """Re-check every file of dataset ``name`` against its checksum.

    Returns:
        One verdict per registered file (``missing`` for absent ones).
    """
    dataset = _entry(name)
    base = data_dir(root)
    return [check_file(f, base / f.path) for f in dataset.files]


def import_dataset(
    name: str | Dataset,
    source: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    report: Report | None = None,
) -> Path:
    """Copy dataset ``name`` from a folder into the data directory, checked.

    Args:
        name: A registered dataset's name, or a :class:`~warmtune.data.Dataset`.
        source: A data directory holding the dataset's folder (``DIR/yahpo/lcbench``),
            or that folder itself.
        root: The data directory (default: :func:`~warmtune.data.data_dir`).
        report: Called with one line per file.

    Raises:
        UnknownDatasetError: ``name`` is not registered.
        DataError: ``source`` lacks a file, or a file does not match its checksum (it is
            not copied; the message names it).
    """
    say = report or _quiet
    dataset = _entry(name)
    name = dataset.name
    base = data_dir(root)
    src = Path(os.path.expanduser(os.fspath(source))).resolve()
    relative = [f.path[len(dataset.folder) + 1 :] for f in dataset.files]
    candidates = [src / dataset.folder, src]
    folder = next((c for c in candidates if all((c / r).is_file() for r in relative)), None)
    if folder is None:
        best = max(candidates, key=lambda c: sum((c / r).is_file() for r in relative))
        missing = [r for r in relative if not (best / r).is_file()]
        raise DataError(
            f"{name}: {src} does not hold the dataset: looked in {candidates[0]} and {src}; "
            f"missing {', '.join(missing)}. Give a data directory (holding "
            f"{dataset.folder}/) or the dataset's own folder."
        )
    for f, rel in zip(dataset.files, relative, strict=True):
        origin, dest = folder / rel, base / f.path
        verdict = check_file(f, origin)
        if not verdict.good:
            raise DataError(f"{name}: {origin} is corrupted: {verdict.detail}; it was not copied")
        if origin.resolve() == dest.resolve():
            say(f"{name}: {f.path} already in place, checked")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
        os.close(fd)
        tmp = Path(tmp_name)
        unpinned = f.sha256 is None and f.npz_sha256 is None
        try:
            shutil.copyfile(origin, tmp)
            if unpinned:
                sha = sha256_file(tmp)
                recorded = read_recorded(origin)
                if recorded is not None and sha != recorded[0]:
                    raise DataError(f"{name}: copying {origin} changed it (SHA-256 {sha})")
            else:
                copied = check_file(f, tmp)
                if not copied.good:
                    raise DataError(f"{name}: copying {origin} changed it ({copied.detail})")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        if unpinned:
            note = recorded[1] if recorded else f"imported from {origin} on {dt.date.today()}"
            record_sha256(dest, sha, note)
        say(f"{name}: {f.path} ({_size(dest)}) from {origin}, {verdict.status}")
    return base / dataset.folder
