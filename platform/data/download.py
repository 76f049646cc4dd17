"""Atomic, verified downloads with a progress bar and bounded retries.

A download streams into a hidden temporary file beside its destination
(``.NAME.XXXX.partial``), is checked, and only then renamed into place with
``os.replace``, which is atomic on one file system. Whatever fails (the network, a
short transfer, a checksum) removes the temporary file, so a file under its real name
is always a complete, checked one.

Written on the standard library's urllib rather than pooch or requests because the
rules here differ from theirs: pooch retries every failure alike, including a 404 and a
checksum mismatch, and knows no git blob ids (Omniglot is pinned by them); neither
notices on its own a body shorter than its Content-Length when reading in chunks
(urllib's ``read(n)`` does not either, hence the count below); and the errors must name
the expected file and checksum and the offline way out. urllib also reads ``file://``
URLs, so a mirror can be a folder on a shared drive.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.metadata
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

__all__ = ["ChecksumMismatchError", "DownloadError", "download"]

_CHUNK = 1 << 16

Check = Callable[[Path, str], "str | None"]
"""``check(temp_path, sha256_hex)``: ``None`` when the download is good, else the problem."""


class DownloadError(RuntimeError):
    """A download failed; nothing was kept.

    Attributes:
        url: What was requested.
        reason: Why it failed, in words.
        attempts: How many attempts were made.
        permanent: Whether retrying cannot help (an HTTP 4xx, a checksum mismatch).
    """

    def __init__(self, url: str, reason: str, *, attempts: int, permanent: bool) -> None:
        self.url = url
        self.reason = reason
        self.attempts = attempts
        self.permanent = permanent
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        super().__init__(f"could not download {url} ({reason}; {tries})")


class ChecksumMismatchError(DownloadError):
    """The download arrived complete but is not the expected file; it was deleted."""


class _ShortBody(OSError):
    """Fewer bytes than the server announced: the connection dropped."""


def _user_agent() -> str:
    try:
        return f"warmtune/{importlib.metadata.version('warmtune')}"
    except importlib.metadata.PackageNotFoundError:
        return "warmtune"


def _stream(url: str, out: os.PathLike[str], *, timeout: float, progress: bool, label: str) -> str:
    """Write ``url``'s body to ``out``; return its SHA-256."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response, open(out, "wb") as f:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        # disable=None: a bar on a terminal, nothing in a log file.
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=None if progress else True,
            leave=False,
        ) as bar:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise _ShortBody(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def _reason(error: BaseException) -> str:
    """A failure in words: ``ConnectionRefusedError: [Errno 111] Connection refused``."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        inner = error.reason
        return _reason(inner) if isinstance(inner, BaseException) else str(inner)
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name: {error}"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def download(
    url: str,
    dest: Path,
    *,
    check: Check | None = None,
    attempts: int = 3,
    retry_wait: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
    label: str | None = None,
) -> str:
    """Download ``url`` to ``dest`` atomically; return the SHA-256 of what was kept.

    Args:
        url: ``http://``, ``https://`` or ``file://``.
        dest: The final path; its folder is created.
        check: Called on the complete temporary file; a returned problem deletes it
            and raises :class:`ChecksumMismatchError` (not retried: the same bytes
            would come again).
        attempts: Tries in all, for failures that may pass (no connection, a dropped
            connection, a timeout, HTTP 5xx/408/429). An HTTP 4xx is not retried.
        retry_wait: Seconds before the second try; doubled before each later one.
        timeout: Seconds a connect or a read may stall.
        progress: Show a progress bar on a terminal.
        label: The bar's label (default: the file name).

    Raises:
        DownloadError: Every attempt failed, or a permanent failure; nothing was kept.
        ChecksumMismatchError: The download is not the expected file; nothing was kept.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
        os.close(fd)
        tmp = Path(name)
        try:
            sha256 = _stream(url, tmp, timeout=timeout, progress=progress, label=label or dest.name)
            problem = check(tmp, sha256) if check is not None else None
            if problem is not None:
                raise ChecksumMismatchError(url, problem, attempts=attempt, permanent=True)
            os.replace(tmp, dest)
            return sha256
        except urllib.error.HTTPError as e:
            permanent = e.code < 500 and e.code not in (408, 429)
            failure = DownloadError(
                url, f"HTTP {e.code} {e.reason}", attempts=attempt, permanent=permanent
            )
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
            _ShortBody,
        ) as e:
            failure = DownloadError(url, _reason(e), attempts=attempt, permanent=False)
        finally:
            tmp.unlink(missing_ok=True)
        if failure.permanent or attempt == attempts:
            raise failure
        time.sleep(retry_wait * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover
