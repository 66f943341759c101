"""A small headless-Chromium driver for tests, over the DevTools protocol (no Playwright, no
Selenium).

Usage::

    with Chromium() as browser:              # skips the test if no Chromium is installed
        page = browser.open(path.as_uri())   # waits for the load event
        assert page.evaluate("document.title") == "..."
        assert page.errors == []             # console errors and uncaught exceptions
        page.screenshot(Path("/tmp/page.png"))

Chromium runs with a throw-away profile and no network chatter of its own; it is killed (and its
profile removed) on exit, whatever happened in between.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
    # let Chromium pick a free port; it writes it to DevToolsActivePort
    "--remote-debugging-port=0",
]
START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0


def chromium_path() -> str | None:
    """The Chromium executable, from $CHROMIUM or the PATH; None if there is none."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def require_chromium() -> str:
    """The Chromium executable, or skip the calling test with the reason."""
    path = chromium_path()
    if path is None:
        pytest.skip("headless Chromium not found (apt-get install -y chromium, or set $CHROMIUM)")
    return path


class Page:
    """One browser tab, driven over its DevTools websocket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ws: aiohttp.ClientWebSocketResponse):
        self._loop = loop
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.requests: list[str] = []
        self._reader = loop.create_task(self._read())

    # ------------------------------------------------------------------ protocol

    async def _read(self) -> None:
        """Dispatch replies to their callers and record the events tests care about."""
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self._on_event(data["method"], data.get("params", {}))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("DevTools connection closed"))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        error = _error_text(method, params)
        if error is not None:
            self.errors.append(error)
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        waiter = self._waiters.pop(method, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(params)

    async def _send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[msg_id] = fut
        await self._ws.send_str(
            json.dumps({"id": msg_id, "method": method, "params": params or {}})
        )
        reply = await asyncio.wait_for(fut, CALL_TIMEOUT)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one DevTools command and return its result."""
        return self._loop.run_until_complete(self._send(method, params))

    # ------------------------------------------------------------------ conveniences

    def enable(self) -> None:
        """Turn on the domains whose events collect errors and requests."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def navigate(self, url: str, settle: float = 0.3) -> None:
        """Load `url`, wait for its load event, then give late scripts a moment to run."""

        async def go() -> None:
            loaded: asyncio.Future[dict[str, Any]] = self._loop.create_future()
            self._waiters["Page.loadEventFired"] = loaded
            reply = await self._send("Page.navigate", {"url": url})
            if reply.get("errorText"):
                raise RuntimeError(f"navigating to {url}: {reply['errorText']}")
            await asyncio.wait_for(loaded, CALL_TIMEOUT)
            await asyncio.sleep(settle)

        self._loop.run_until_complete(go())

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-serialisable values; None for undefined)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """Save a PNG of the viewport (or of the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params |= {"captureBeyondViewport": True, "clip": {**_clip(size), "scale": 1}}
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", params)["data"]))
        return path

    def close(self) -> None:
        async def shut() -> None:
            await self._ws.close()
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

        self._loop.run_until_complete(shut())


def _clip(size: dict[str, float]) -> dict[str, float]:
    return {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000)}


def _error_text(method: str, params: dict[str, Any]) -> str | None:
    """The message of an error event, or None for anything else."""
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return "exception: " + str(
            details.get("exception", {}).get("description") or details.get("text")
        )
    if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
        return "console.error: " + " ".join(
            str(a.get("value", a.get("description", ""))) for a in params["args"]
        )
    if method == "Log.entryAdded" and params["entry"].get("level") == "error":
        entry = params["entry"]
        return f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip()
    return None


class Chromium:
    """A headless Chromium process with its own throw-away profile; use as a context manager."""

    def __init__(self, executable: str | None = None, window: tuple[int, int] = (1280, 900)):
        self.executable = executable or require_chromium()
        self.window = window
        self._profile = Path(tempfile.mkdtemp(prefix="harness-chromium-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._pages: list[Page] = []
        self.port = 0

    def __enter__(self) -> Chromium:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Launch Chromium and wait until its DevTools endpoint answers."""
        args = [
            self.executable,
            *FLAGS,
            f"--user-data-dir={self._profile}",
            f"--window-size={self.window[0]},{self.window[1]}",
        ]
        self._proc = subprocess.Popen(
            [*args, "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.port = self._wait_for_port()
        self._session = self._loop.run_until_complete(_new_session())

    def _wait_for_port(self) -> int:
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.executable} exited at start with code {self._proc.returncode}"
                )
            lines = marker.read_text().split() if marker.exists() else []
            if lines and lines[0].isdigit():
                return int(lines[0])
            time.sleep(0.1)
        raise TimeoutError(
            f"{self.executable} did not open its DevTools port within {START_TIMEOUT:.0f}s"
        )

    def open(self, url: str, *, javascript: bool = True) -> Page:
        """A new tab with error collection on, navigated to `url`; `javascript=False` runs none of
        the
        page's scripts (DevTools evaluation still works)."""
        page = self._loop.run_until_complete(self._new_page())
        self._pages.append(page)
        page.enable()
        page.call(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": self.window[0],
                "height": self.window[1],
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )
        if not javascript:
            page.call("Emulation.setScriptExecutionDisabled", {"value": True})
        page.navigate(url)
        return page

    async def _new_page(self) -> Page:
        assert self._session is not None
        base = f"http://127.0.0.1:{self.port}"
        async with self._session.put(f"{base}/json/new?about:blank") as resp:
            target = await resp.json()
        ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        return Page(self._loop, ws)

    def close(self) -> None:
        """Close tabs, kill the browser and delete its profile; safe to call twice."""
        for page in self._pages:
            _quietly(page.close)
        self._pages.clear()
        if self._session is not None:
            session, self._session = self._session, None
            _quietly(lambda: self._loop.run_until_complete(session.close()))
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        if not self._loop.is_closed():
            self._loop.close()
        shutil.rmtree(self._profile, ignore_errors=True)


async def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()  # aiohttp binds a session to the loop running when it is made


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the browser's process group (it forks helpers), then kill whatever lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # our own group: start_new_session made the browser its leader
        except ProcessLookupError:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _quietly(fn: Any) -> None:
    with contextlib.suppress(Exception):  # teardown must go on whatever broke
        fn()
