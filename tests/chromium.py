"""Headless Chromium driven over the DevTools protocol on a pipe, with the standard
library only: the report test and the dashboard test render pages in a real browser.

Chromium reads DevTools commands on file descriptor 3 and answers on 4
(``--remote-debugging-pipe``), each message JSON ending in a NUL byte. Console
messages, uncaught exceptions and failed loads are collected as they happen.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)


def requires_chromium(purpose: str) -> pytest.MarkDecorator:
    """Skip unless a Chromium is on PATH; ``purpose`` completes "install it to ..."."""
    return pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium on PATH: install it (Debian: `apt-get install -y chromium`) to "
        + purpose,
    )


class Chromium:
    """One headless Chromium with one page, driven over the DevTools pipe.

    Args:
        user_data: a fresh profile folder (cookies and cache live there).
    """

    def __init__(self, user_data: Path) -> None:
        if CHROMIUM is None:
            raise RuntimeError("no chromium on PATH")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # Chromium reads commands on fd 3 and answers on fd 4
            # Move both ends clear of 3 and 4 first: a pipe end may already be fd 3 or
            # 4, and dup2 onto itself would keep its close-on-exec flag.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={user_data}",
                "about:blank",
            ],
            preexec_fn=fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = False
    ) -> dict[str, Any]:
        """Send one DevTools command (to the page with ``session``) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60, *, since: int = 0) -> None:
        """Wait for an event ``method`` among the events from index ``since`` on."""
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events[since:]):
            try:
                self.events.append(self._read(deadline))
            except TimeoutError:
                raise TimeoutError(f"no {method} event within {timeout:.0f}s") from None

    def navigate(self, url: str, *, width: int = 1200, height: int = 900) -> None:
        """Load ``url`` in a ``width`` x ``height`` viewport; return at its load event.

        A change of the URL's fragment only (``#/jobs`` to ``#/jobs/ID`` in a
        single-page app) loads no new document and fires no load event: then this
        returns at once, and the caller waits for what the page draws.
        """
        self.viewport(width, height)
        since = len(self.events)
        if "loaderId" in self.call("Page.navigate", {"url": url}, session=True):
            self.wait_for("Page.loadEventFired", since=since)

    def viewport(self, width: int, height: int) -> None:
        """Lay the page out in a ``width`` x ``height`` window."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", metrics, session=True)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        reply = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=True,
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 60, interval: float = 0.25) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value.

        Raises:
            TimeoutError: still falsy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still falsy after {timeout:.0f}s")
            time.sleep(interval)

    def screenshot(self, png: Path, *, width: int = 1200, height: int | None = None) -> int:
        """Save the page as ``png``, ``width`` pixels wide and as tall as the document
        (or ``height``); return the height."""
        if height is None:
            height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.viewport(width, height)
        shot = self.call("Page.captureScreenshot", {"format": "png"}, session=True)
        png.write_bytes(base64.b64decode(shot["data"]))
        return height

    def problems(self, since: int = 0) -> list[str]:
        """Console errors and warnings, uncaught exceptions, failed loads, from event
        index ``since`` on."""
        out = []
        for e in self.events[since:]:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p['args']]}")
            elif e.get("method") == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] in (
                "error",
                "warning",
            ):
                out.append(f"log {p['entry']['level']}: {p['entry']['text']}")
        return out

    def http_errors(self, since: int = 0) -> list[tuple[int, str]]:
        """``(status, url)`` of the responses with status 400 or more, from event
        index ``since`` on."""
        return [
            (r["status"], r["url"])
            for e in self.events[since:]
            if e.get("method") == "Network.responseReceived"
            and (r := e["params"]["response"])["status"] >= 400
        ]

    def render(self, url: str, png: Path, checks: str, width: int = 1200) -> dict[str, Any]:
        """Load ``url``, screenshot the whole page to ``png``, and return the value of
        ``checks``, a JavaScript expression that returns a JSON string with the
        document's ``height`` among its keys."""
        self.navigate(url, width=width)
        result = json.loads(self.evaluate(checks))
        self.screenshot(png, width=width, height=int(result["height"]))
        # Late events (a failed image load) arrive after the load event at the latest.
        self.evaluate("1")
        return result

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
