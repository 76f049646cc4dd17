"""A real HTTP server on 127.0.0.1 for the fetch tests, and small fixture files.

Nothing here reaches the internet: every URL points at the server started in the test
process. The tests run with ``--import-mode=importlib``, so helpers reach them through
fixtures.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest


@dataclass
class Route:
    """What the server does for one path.

    Attributes:
        body: The bytes it serves.
        drop: Requests that get only the first half of the body (with the full
            Content-Length) before the connection closes; ``-1``: every request.
        status: HTTP status for an error route (then ``body`` is ignored).
    """

    body: bytes = b""
    drop: int = 0
    status: int = 200


@dataclass
class Server:
    """The running server: its routes, and how often each path was requested."""

    base_url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)

    def serve(self, path: str, body: bytes, *, drop: int = 0) -> str:
        """Serve ``body`` at ``path``; returns its URL."""
        self.routes["/" + path.lstrip("/")] = Route(body, drop)
        return self.url(path)

    def fail(self, path: str, status: int) -> str:
        """Answer ``status`` at ``path``; returns its URL."""
        self.routes["/" + path.lstrip("/")] = Route(status=status)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            server.requests[self.path] += 1
            route = server.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            if route.status != 200:
                self.send_error(route.status)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            if route.drop != 0:
                if route.drop > 0:
                    route.drop -= 1
                self.wfile.write(route.body[: len(route.body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(route.body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def http_server() -> Iterator[Server]:
    """An HTTP server on a free port of 127.0.0.1, serving :class:`Route` s."""
    state = Server(base_url="")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: what a machine without network gets."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def directory_server() -> Iterator[Callable[[Path], str]]:
    """Start ``python -m http.server``'s handler over a folder: a mirror of a data dir."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietDirectoryHandler, directory=str(folder))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


class _QuietDirectoryHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders a download or conversion might leave behind."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.endswith(".partial") or p.name.startswith(".fetch-")
    )


@pytest.fixture
def no_leftovers():
    """``no_leftovers(folder)`` lists temporary files under ``folder`` (expect [])."""
    return leftovers


def omniglot_png_zip(
    top: str, characters: list[tuple[str, str, int, np.ndarray]], *, mode: str = "1"
) -> bytes:
    """A zip in the public Omniglot layout: ``TOP/ALPHABET/characterNN/IIII_DD.png``.

    ``characters`` holds ``(alphabet, character folder, id, images [20, 105, 105] bool)``
    with ``True`` = white. Members are written drawer 20 first, so that the converter must
    sort; ``mode`` is the PNG's (``1``: one bit per pixel, ``L``: grey levels).
    """
    from PIL import Image

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(f"{top}/", b"")
        for alphabet, character, char_id, images in characters:
            for drawer in range(len(images), 0, -1):
                pixels = images[drawer - 1]
                if mode == "1":
                    image = Image.fromarray(pixels)
                else:
                    image = Image.fromarray(np.where(pixels, 255, 0).astype(np.uint8), "L")
                png = io.BytesIO()
                image.save(png, format="PNG")
                name = f"{top}/{alphabet}/{character}/{char_id:04d}_{drawer:02d}.png"
                archive.writestr(name, png.getvalue())
    return out.getvalue()


@pytest.fixture
def make_omniglot_zip():
    """``make_omniglot_zip(top, characters, mode="1") -> bytes`` (see :func:`omniglot_png_zip`)."""
    return omniglot_png_zip


def npy_sha256(array: np.ndarray) -> str:
    """SHA-256 of ``array`` as numpy writes it to a ``.npy`` file."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@pytest.fixture
def npy_digest():
    """``npy_digest(array)``: the SHA-256 of the array's ``.npy`` bytes."""
    return npy_sha256
