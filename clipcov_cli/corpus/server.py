"""A tiny static HTTP server on 127.0.0.1 (ephemeral port, standard library, daemon threads).

Paths under ``stall_prefix`` answer only after ``stall_seconds`` (to exercise download timeouts).
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path

MAX_STALL_S = 30.0


class _Handler(http.server.SimpleHTTPRequestHandler):
    stall_prefix = "/stall/"
    stall_seconds = 5.0

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if self.path.startswith(self.stall_prefix):
            time.sleep(min(self.stall_seconds, MAX_STALL_S))
            self.path = "/" + self.path[len(self.stall_prefix):]
        super().do_GET()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout): nothing to do


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address) -> None:  # quiet on client disconnects
        pass


class CorpusServer:
    """Serve ``root`` over HTTP on 127.0.0.1 while the context is open; ``base_url`` has the port."""

    def __init__(self, root: str | Path, stall_prefix: str = "/stall/", stall_seconds: float = 5.0) -> None:
        self.root = Path(root)
        handler = type("Handler", (_Handler,), {"stall_prefix": stall_prefix, "stall_seconds": stall_seconds})
        self._httpd = _Server(("127.0.0.1", 0), functools.partial(handler, directory=str(self.root)))
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> "CorpusServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
