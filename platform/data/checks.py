"""Checksums: SHA-256 of files and of ``.npz`` members, git blob ids, recorded hashes.

A stored file passes when its SHA-256 is the registry's. A converted ``.npz`` also passes
when each array member hashes to the registry's: the zip container around the arrays
depends on the zip writer, the arrays do not. A file whose hash nobody published is
checked against the hash recorded when it was first downloaded or imported (kept in a
hidden ``.NAME.sha256`` file beside it), and reported as such.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .registry import DataFile

__all__ = [
    "FileCheck",
    "check_file",
    "git_blob_id",
    "npz_member_sha256",
    "read_recorded",
    "record_sha256",
    "sha256_file",
]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_id(path: str | os.PathLike[str]) -> str:
    """What ``git hash-object PATH`` prints: SHA-1 of ``blob <size>\\0`` plus the content."""
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def npz_member_sha256(path: str | os.PathLike[str]) -> dict[str, str]:
    """SHA-256 of each member of an ``.npz`` (a zip of ``.npy`` files), uncompressed.

    Raises:
        zipfile.BadZipFile: The file is not a zip.
    """
    out = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            digest = hashlib.sha256()
            with archive.open(member) as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
            out[member] = digest.hexdigest()
    return out


def _record_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def record_sha256(path: Path, sha256: str, origin: str) -> None:
    """Remember ``sha256`` for a file that has no published hash (``origin``: where from)."""
    target = _record_path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(f"{sha256}  {origin}\n")
    os.replace(tmp, target)


def read_recorded(path: Path) -> tuple[str, str] | None:
    """``(sha256, origin)`` recorded for ``path``, or ``None``."""
    try:
        sha, _, origin = _record_path(path).read_text().strip().partition("  ")
    except FileNotFoundError:
        return None
    return sha, origin


Status = Literal["ok", "recorded", "unpinned", "missing", "corrupted"]


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one stored file.

    Attributes:
        file: The registry's file.
        status: ``ok`` (matches the registry), ``recorded`` (no published hash; matches
            the hash recorded when it arrived), ``unpinned`` (no hash to compare with),
            ``missing`` or ``corrupted``.
        detail: Why, for anything but ``ok``.
    """

    file: DataFile
    status: Status
    detail: str = ""

    @property
    def good(self) -> bool:
        """Present and not known to be corrupted."""
        return self.status in ("ok", "recorded", "unpinned")


def check_file(file: DataFile, path: Path) -> FileCheck:
    """Compare the file at ``path`` with what the registry says ``file`` must be."""
    if not path.is_file():
        return FileCheck(file, "missing", f"{path} does not exist")
    if file.sha256 is not None:
        actual = sha256_file(path)
        if actual == file.sha256:
            return FileCheck(file, "ok")
        if file.npz_sha256 is None:
            return FileCheck(file, "corrupted", f"SHA-256 is {actual}, expected {file.sha256}")
    if file.npz_sha256 is not None:
        try:
            members = npz_member_sha256(path)
        except zipfile.BadZipFile:
            return FileCheck(file, "corrupted", "not a readable .npz (zip) file")
        if members == dict(file.npz_sha256):
            return FileCheck(file, "ok")
        bad = sorted(
            m
            for m in set(members) | set(file.npz_sha256)
            if members.get(m) != file.npz_sha256.get(m)
        )
        return FileCheck(
            file, "corrupted", f"its arrays {', '.join(bad)} differ from the reference's"
        )
    recorded = read_recorded(path)
    if recorded is None:
        return FileCheck(file, "unpinned", "no published SHA-256 and none recorded")
    sha, origin = recorded
    actual = sha256_file(path)
    if actual != sha:
        return FileCheck(
            file,
            "corrupted",
            f"SHA-256 is {actual}, but {sha} was recorded when it arrived ({origin})",
        )
    return FileCheck(file, "recorded", f"no published SHA-256; matches the one recorded ({origin})")
