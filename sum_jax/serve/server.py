"""Running the app with uvicorn: on a socket bound first (so the address printed is the real
one, port 0 included), in the foreground for the command, or in a background thread for
notebooks, tests and benchmarks.

    with BackgroundServer(create_app(sessions, catalogue)) as url:
        ...  # http://127.0.0.1:PORT/
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette

from sum_jax.cli import InputError


def listen(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound, listening TCP socket (port 0: any free one); InputError if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port} ({e.strerror}); pass another --port (or --port=0)"
        ) from e
    sock.listen(128)
    return sock


def address(sock: socket.socket) -> str:
    """`http://HOST:PORT/` of a listening socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _server(app: Starlette) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning"))


def serve_forever(app: Starlette, sock: socket.socket) -> None:
    """Serves `app` on `sock` until Ctrl-C."""
    _server(app).run(sockets=[sock])


class BackgroundServer:
    """`app` served from a daemon thread on loopback; the context value is its address."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0):
        self._sock = listen(host, port)
        self._server = _server(app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self.url = address(self._sock)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
