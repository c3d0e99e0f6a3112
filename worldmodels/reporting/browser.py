"""Open ``report.html`` in headless Chromium and list what a reader would see broken.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: it reads
commands, JSON followed by a NUL byte, on its fd 3 and writes replies and events on its fd 4), so
no driver package or network port is needed. The check loads the page, then reports every console
error, uncaught exception and failed load the page caused, and every image that did not decode
(``naturalWidth`` 0); it saves a full-page screenshot.

Chromium comes from the system (Debian: ``apt-get install chromium``; ``make test`` installs it).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LOAD_TIMEOUT_S = 60.0
BROKEN_IMAGES = """Array.from(document.images)
  .filter(image => !image.complete || image.naturalWidth === 0)
  .map(image => image.alt || image.src.slice(0, 80))"""


def find_browser() -> str | None:
    """The path of a Chromium on this machine, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class DevToolsPipe:
    """A headless Chromium and its DevTools connection on two pipes; one page session."""

    def __init__(self, browser: str, profile: Path) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def give_the_pipes_fds_3_and_4() -> None:  # runs in the child between fork and exec
            low_read, low_write = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(low_read, 3)
            os.dup2(low_write, 4)

        self.process = subprocess.Popen(
            [browser, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", f"--user-data-dir={profile}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # The child keeps only inheritable fds (Python makes its own non-inheritable), which dup2's copies are.
            preexec_fn=give_the_pipes_fds_3_and_4, close_fds=False)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = LOAD_TIMEOUT_S) -> dict:
        """Send a command (to the page session once attached) and return its result; events that arrive
        meanwhile are kept in :attr:`events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"Chromium refused {method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = LOAD_TIMEOUT_S) -> dict:
        """Wait for the event ``method`` (or return one that came already)."""
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise TimeoutError("Chromium did not answer over its DevTools pipe")
            ready, _, _ = select.select([self._from_browser], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise TimeoutError("Chromium closed its DevTools pipe")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass


def check_in_browser(page: Path, screenshot: Path, browser: str | None = None, width: int = 1280) -> list[str]:
    """Load ``page`` in headless Chromium; save a full-page PNG to ``screenshot``; return the problems a
    reader would meet, one line each (empty: none). Raises FileNotFoundError when no Chromium is found."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError(f"no Chromium found (tried {', '.join(BROWSERS)}); Debian: apt-get install chromium")
    page = Path(page).resolve()
    with tempfile.TemporaryDirectory(prefix="wm-chromium-") as profile:
        chrome = DevToolsPipe(browser, Path(profile))
        try:
            targets = chrome.send("Target.getTargets")["targetInfos"]
            target = next(t["targetId"] for t in targets if t["type"] == "page")
            chrome.session = chrome.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                chrome.send(f"{domain}.enable")
            chrome.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            chrome.events.clear()
            chrome.send("Page.navigate", {"url": page.as_uri()})
            chrome.wait_for("Page.loadEventFired")
            broken = chrome.send("Runtime.evaluate", {"expression": BROKEN_IMAGES, "returnByValue": True})
            shot = chrome.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            problems = _problems(chrome.events)
            problems += [f"image does not decode: {name}" for name in broken["result"].get("value", [])]
            return problems
        finally:
            chrome.close()


def _problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions, error log entries and failed loads among DevTools ``events``."""
    problems = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            problems.append(f"console error: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            problems.append(f"uncaught exception: {description}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            where = entry.get("url", "")
            problems.append(f"{entry.get('source', 'browser')} error: {entry.get('text')} {where}".strip())
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"failed to load: {params.get('errorText')} ({params.get('type', '')})")
    return problems
