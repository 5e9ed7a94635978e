"""Serving the dashboard: ``sheaf ui`` in the foreground, or :class:`Dashboard` in a thread.

uvicorn serves the Starlette application of :mod:`sheaf.ui.app`. :class:`Dashboard` runs
it on a background thread — for a notebook, or a test driving a browser against it — and
stops it cleanly; port 0 takes any free port, and :attr:`Dashboard.url` says which.

Example:
    >>> import tempfile, urllib.request, json
    >>> with Dashboard(tempfile.mkdtemp(), port=0) as board:
    ...     json.load(urllib.request.urlopen(board.url + "api/runs"))
    []
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from sheaf.core.errors import SheafError
from sheaf.ui.access import check_bind
from sheaf.ui.app import create_app

__all__ = ["Dashboard", "dashboard_url", "free_port", "serve"]


def _config(folder: str | Path, host: str, port: int, token: str, refresh: float) -> uvicorn.Config:
    check_bind(host, token)
    if not Path(folder).is_dir():
        raise SheafError(f"runs folder {str(folder)!r} not found; pass the folder your runs are in (default runs/)")
    if refresh <= 0:
        raise SheafError(f"--refresh must be > 0 seconds, got {refresh:g}")
    app = create_app(folder, token=token, refresh=refresh)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")


def dashboard_url(host: str, port: int, token: str = "") -> str:
    """The address to open: ``http://HOST:PORT/``, with ``?token=`` when there is one."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(
    folder: str | Path, *, host: str = "127.0.0.1", port: int = 8050, token: str = "", refresh: float = 1.0
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C).

    Raises:
        ConfigError: on a non-loopback ``host`` without a ``token`` (:func:`~sheaf.ui.access.check_bind`).
        SheafError: if ``folder`` is not a folder, or the server cannot start.
    """
    board = Dashboard(folder, host=host, port=port, token=token, refresh=refresh).start(timeout=30)
    try:
        board.wait()
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()


class Dashboard:
    """The dashboard served on a background thread (a context manager).

    Args:
        folder: the runs folder.
        host: the address to bind (loopback by default; any other needs ``token``).
        port: the port (0: any free one).
        token: the access token (see :mod:`sheaf.ui.access`).
        refresh: seconds between the page's requests for news.
    """

    def __init__(
        self, folder: str | Path, *, host: str = "127.0.0.1", port: int = 0, token: str = "", refresh: float = 1.0
    ) -> None:
        self.host = host
        self.token = token
        self._server = uvicorn.Server(_config(folder, host, port, token, refresh))
        self._thread = threading.Thread(target=self._server.run, name="sheaf-dashboard", daemon=True)
        self.port = port

    @property
    def url(self) -> str:
        """The page's address (without the token)."""
        return dashboard_url(self.host, self.port)

    def start(self, timeout: float = 10.0) -> Dashboard:
        """Start serving; return once the port accepts connections.

        Raises:
            SheafError: if the server did not start within ``timeout`` seconds.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SheafError(f"the dashboard did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C raises KeyboardInterrupt here)."""
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def free_port() -> int:
    """A port no one listens on now (for tests that need to know it beforehand)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
