"""A real HTTP server on 127.0.0.1 in a thread, for download and URL-check tests.

It serves the files of a directory plus a few routes that misbehave the way
real download sites do:

    /redirect/NAME   302 to /NAME          /slow/NAME   waits `slow_seconds`, then NAME
    /gone            404                   /nohead/NAME 405 for HEAD, NAME for GET

Builds reach it because `ndgen build` runs with `--network host`.
"""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    server_version = "ndgen-test"
    slow_seconds = 5.0

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _route(self) -> bool:
        """Handle the special routes; False means: serve a file."""
        path = self.path.split("?", 1)[0]
        if path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/" + path[len("/redirect/"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        if path.startswith("/slow/"):
            time.sleep(self.slow_seconds)
            self.path = "/" + path[len("/slow/"):]
            return False
        if path.startswith("/nohead/"):
            if self.command == "HEAD":
                self.send_error(405)
                return True
            self.path = "/" + path[len("/nohead/"):]
            return False
        return False

    def do_GET(self) -> None:
        if not self._route():
            super().do_GET()

    def do_HEAD(self) -> None:
        if not self._route():
            super().do_HEAD()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out on /slow/ is the point of that route


class LocalHTTP:
    """`with LocalHTTP(dir) as srv: srv.url("file")` — a server for the block."""

    def __init__(self, root: Path, slow_seconds: float = 5.0) -> None:
        self.root = Path(root)
        handler = type("H", (_Handler,), {"slow_seconds": slow_seconds})

        def factory(*a, **kw):
            return handler(*a, directory=str(self.root), **kw)

        self.httpd = _Server(("127.0.0.1", 0), factory)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> LocalHTTP:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
