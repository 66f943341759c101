"""The viewer's web server: a JSON API over run indexes and one static page, on aiohttp.

Routes::

    GET /                                  the page (harness/view/assets/index.html)
    GET /assets/{name}                     its script and style sheet
    GET /api/runs                          the runs: name, manifest fields, counts
    GET /api/runs/{n}/facets               values for the filter menus
    GET /api/runs/{n}/verdicts?q=&tag=&principle=&judge=&generator=&status=&score_min=&score_max=
                                           &sort=&desc=&page=&per_page=     one page of verdicts
    GET /api/runs/{n}/case?id=CASE_ID      one case with every verdict

Each API request first brings its index up to date with the run folder (at most once a second), so
a run still being written shows its new verdicts. Queries run in a worker thread, one at a time per
index. The page may fetch only from this server (Content-Security-Policy), and requests naming
another host are refused, so a web page elsewhere cannot read the runs through the browser.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from harness.view import queries
from harness.view.index import RunIndex

ASSETS = Path(__file__).parent / "assets"
ASSET_TYPES = {"app.js": "text/javascript", "app.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Runs:
    """The indexes served, each refreshed from its folder at most every ``interval`` seconds."""

    def __init__(self, indexes: list[RunIndex], interval: float = 1.0):
        self.indexes = indexes
        self.interval = interval
        self._last = [0.0] * len(indexes)

    def get(self, request: web.Request) -> RunIndex:
        """The index named by the ``{n}`` of a route; 404 when there is none."""
        try:
            n = int(request.match_info["n"])
            return self.indexes[n]
        except (ValueError, IndexError):
            raise web.HTTPNotFound(text="no such run") from None

    def fresh(self, ix: RunIndex) -> None:
        """Read what the run folder gained, unless that was done less than ``interval`` ago."""
        n = self.indexes.index(ix)
        if time.monotonic() - self._last[n] >= self.interval:
            ix.refresh()
            self._last[n] = time.monotonic()


RUNS: web.AppKey[Runs] = web.AppKey("runs", Runs)
HOSTS: web.AppKey[set[str]] = web.AppKey("hosts", set)


def _finite(data: Any) -> Any:
    """``data`` with NaN and infinities as None (JSON has no such numbers)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    return data


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(_finite(data), default=str, allow_nan=False),
        status=status,
        content_type="application/json",
    )


def _manifest(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    keys = ("run_id", "created", "status", "n_items")
    return {k: data.get(k) for k in keys} if isinstance(data, dict) else {}


def _run_info(runs: Runs, n: int) -> dict[str, Any]:
    ix = runs.indexes[n]
    runs.fresh(ix)
    return {
        "n": n,
        "name": ix.root.name,
        "root": str(ix.root),
        "manifest": _manifest(ix.root),
        "summary": queries.summary(ix),
    }


async def list_runs(request: web.Request) -> web.Response:
    """The runs being browsed."""
    runs: Runs = request.app[RUNS]
    infos = [await asyncio.to_thread(_run_info, runs, n) for n in range(len(runs.indexes))]
    return _json(infos)


async def run_facets(request: web.Request) -> web.Response:
    """The values each filter of a run can take."""
    runs: Runs = request.app[RUNS]
    ix = runs.get(request)

    def work() -> dict[str, list[str]]:
        runs.fresh(ix)
        return queries.facets(ix)

    return _json(await asyncio.to_thread(work))


async def run_verdicts(request: web.Request) -> web.Response:
    """One page of a run's verdicts, filtered, searched and sorted."""
    runs: Runs = request.app[RUNS]
    ix = runs.get(request)
    try:
        filters = queries.parse_filters(dict(request.query))
    except queries.QueryError as exc:
        return _json({"error": str(exc)}, status=400)

    def work() -> dict[str, Any]:
        runs.fresh(ix)
        return queries.page(ix, filters)

    return _json(await asyncio.to_thread(work))


async def run_case(request: web.Request) -> web.Response:
    """One case with its candidates and every verdict (side by side for two runs)."""
    runs: Runs = request.app[RUNS]
    ix = runs.get(request)
    case_id = request.query.get("id", "")

    def work() -> dict[str, Any] | None:
        runs.fresh(ix)
        return queries.case_detail(ix, case_id)

    detail = await asyncio.to_thread(work)
    if detail is None:
        return _json({"error": f"no case {case_id!r} in this run"}, status=404)
    return _json(detail)


async def page(request: web.Request) -> web.FileResponse:
    """The app's page."""
    return web.FileResponse(ASSETS / "index.html", headers={"Content-Type": "text/html"})


async def asset(request: web.Request) -> web.FileResponse:
    """A static asset of the page."""
    name = request.match_info["name"]
    if name not in ASSET_TYPES:
        raise web.HTTPNotFound()
    return web.FileResponse(ASSETS / name, headers={"Content-Type": ASSET_TYPES[name]})


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests for another host name (DNS rebinding) and set the page's security headers."""
    allowed: set[str] = request.app[HOSTS]
    host = (request.host or "").rsplit(":", 1)[0] if request.host else ""
    if allowed and host not in allowed:
        return web.Response(status=403, text=f"host {host!r} is not served here")
    response = await handler(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def make_app(
    indexes: list[RunIndex], host: str = "127.0.0.1", interval: float = 1.0
) -> web.Application:
    """The web application serving ``indexes``; ``host`` is the address it is bound to."""
    app = web.Application(middlewares=[guard])
    app[RUNS] = Runs(indexes, interval)
    # Bound to a loopback address, only loopback names are expected; bound elsewhere, any name.
    app[HOSTS] = LOCAL_HOSTS | {host} if host in LOCAL_HOSTS or host == "::1" else set()
    app.router.add_get("/", page)
    app.router.add_get("/assets/{name}", asset)
    app.router.add_get("/favicon.ico", _no_content)
    app.router.add_get("/api/runs", list_runs)
    app.router.add_get("/api/runs/{n}/facets", run_facets)
    app.router.add_get("/api/runs/{n}/verdicts", run_verdicts)
    app.router.add_get("/api/runs/{n}/case", run_case)
    return app


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start serving ``app``; returns the runner (to clean up) and the URL it answers on."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    real_port = sockets[0].getsockname()[1] if sockets else port
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{real_port}/"
