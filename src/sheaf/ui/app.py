"""The dashboard's web application (Starlette): one page, its static files, and a JSON API.

Routes:

- ``/`` — the page (``static/index.html``); it shows the runs table, or one run
  (``/#/run/NAME``), and asks the API for news every ``refresh`` seconds;
- ``/api/runs`` — every run of the folder (:meth:`~sheaf.ui.views.RunsView.runs`);
- ``/api/run?name=NAME&since=K&clients_round=R`` — one run's figures after round K
  (:meth:`~sheaf.ui.views.RunsView.run`);
- ``/api/settings`` — how often the page refreshes;
- ``/static/...`` — the page's script and styles, and uPlot (vendored: no CDN, works offline).

Every response forbids framing, sniffing and referrers, and the page runs under a
Content-Security-Policy that allows only its own scripts and styles: even a string that got
into the document as markup could not run.

Example:
    >>> import tempfile
    >>> [route.path for route in create_app(tempfile.mkdtemp()).routes]
    ['/', '/favicon.ico', '/api/runs', '/api/run', '/api/settings', '/static']
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sheaf.core.errors import SheafError
from sheaf.ui.access import AccessMiddleware
from sheaf.ui.views import RunsView, UnknownRun

__all__ = ["STATIC", "create_app"]

#: The page's files, shipped in the package.
STATIC = Path(str(resources.files("sheaf.ui") / "static"))

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_ENCODED = [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_ENCODED]
            await send(message)

        await self.app(scope, receive, with_headers)


def _int(request: Request, key: str, default: int) -> int:
    try:
        return int(request.query_params.get(key, default))
    except ValueError:
        return default


def create_app(folder: str | Path, *, token: str = "", refresh: float = 1.0) -> Starlette:
    """The dashboard of the runs in ``folder``.

    Args:
        folder: the runs folder (simulations and ``sheaf server`` runs alike).
        token: the access token every request must carry (see :mod:`sheaf.ui.access`); empty:
            none, and only requests addressed to loopback are answered.
        refresh: seconds between the page's requests for news.
    """
    view = RunsView(folder)

    def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    def runs(request: Request) -> Response:
        try:
            return JSONResponse(view.runs())
        except SheafError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)

    def run(request: Request) -> Response:
        name = request.query_params.get("name", "")
        try:
            payload = view.run(name, since=_int(request, "since", 0), clients_round=_int(request, "clients_round", -1))
        except UnknownRun as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except SheafError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(payload)

    def settings(request: Request) -> Response:
        return JSONResponse({"refresh": refresh, "folder": str(folder)})

    def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", index),
        Route("/favicon.ico", no_icon),
        Route("/api/runs", runs),
        Route("/api/run", run),
        Route("/api/settings", settings),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(_SecurityHeaders), Middleware(AccessMiddleware, token=token)]
    return Starlette(routes=routes, middleware=middleware)
