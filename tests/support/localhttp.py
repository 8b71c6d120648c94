"""A real HTTP server on 127.0.0.1 in a thread, for download and URL-check tests.

It serves the files of a directory plus a few routes that misbehave the way
real download sites do, or the way a hostile one does:

    /redirect/NAME   302 to /NAME          /slow/NAME   waits `slow_seconds`, then NAME
    /gone            404                   /nohead/NAME 405 for HEAD, NAME for GET
    /goto/LOCATION   302 to LOCATION, verbatim (file:///etc/hostname, http://127.0.0.1:PORT/…)
    /endless         200, no Content-Length, zeros until the client hangs up (at most `endless_bytes`)
    /drip/N          200, Content-Length N, one byte every `drip_seconds`

Loopback is not a download site: ndgen refuses URLs on 127.0.0.1 unless their
port is listed in NDGEN_ALLOW_LOOPBACK_PORTS (neurodocker_nd/core/fetch.py).  A
`trusted` server (the default) stands in for a download site, so it lists its
own port there for its lifetime: in this process and in every `ndgen`
subprocess started meanwhile.  `trusted=False` makes a loopback service a
hostile download server must not be able to reach.

Builds reach it because the tests that build against it pass `--network host`
(the default network has no route to the host's loopback).
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

ALLOW_ENV = "NDGEN_ALLOW_LOOPBACK_PORTS"
_env_lock = threading.Lock()


class _Handler(http.server.SimpleHTTPRequestHandler):
    server_version = "ndgen-test"
    slow_seconds = 5.0
    drip_seconds = 0.5
    endless_bytes = 64 << 20  # the test server's own bound: it never streams forever

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _endless(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()  # HTTP/1.0 without a length: the body ends when the connection does
        if self.command == "HEAD":
            return
        block, sent = bytes(1 << 16), 0
        while sent < self.endless_bytes:
            self.wfile.write(block)
            sent += len(block)

    def _drip(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        for _ in range(size):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(self.drip_seconds)

    def _route(self) -> bool:
        """Handle the special routes; False means: serve a file."""
        path = self.path.split("?", 1)[0]
        if path.startswith("/redirect/"):
            self._redirect("/" + path[len("/redirect/") :])
            return True
        if path.startswith("/goto/"):
            self._redirect(path[len("/goto/") :])
            return True
        if path == "/endless":
            self._endless()
            return True
        if path.startswith("/drip/"):
            self._drip(int(path[len("/drip/") :]))
            return True
        if path.startswith("/slow/"):
            time.sleep(self.slow_seconds)
            self.path = "/" + path[len("/slow/") :]
            return False
        if path.startswith("/nohead/"):
            if self.command == "HEAD":
                self.send_error(405)
                return True
            self.path = "/" + path[len("/nohead/") :]
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
        pass  # a client that timed out on /slow/ or hung up on /endless is the point of that route


def _set_allowed(port: int, allowed: bool) -> None:
    """Add or remove `port` in NDGEN_ALLOW_LOOPBACK_PORTS (a comma-separated list)."""
    with _env_lock:
        ports = [p for p in os.environ.get(ALLOW_ENV, "").split(",") if p.strip() and p.strip() != str(port)]
        if allowed:
            ports.append(str(port))
        if ports:
            os.environ[ALLOW_ENV] = ",".join(ports)
        else:
            os.environ.pop(ALLOW_ENV, None)


class LocalHTTP:
    """`with LocalHTTP(dir) as srv: srv.url("file")` — a server for the block."""

    def __init__(self, root: Path, slow_seconds: float = 5.0, drip_seconds: float = 0.5, trusted: bool = True) -> None:
        self.root = Path(root)
        self.trusted = trusted
        handler = type("H", (_Handler,), {"slow_seconds": slow_seconds, "drip_seconds": drip_seconds})

        def factory(*a, **kw):
            return handler(*a, directory=str(self.root), **kw)

        self.httpd = _Server(("127.0.0.1", 0), factory)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> LocalHTTP:
        self.thread.start()
        if self.trusted:
            _set_allowed(self.port, True)
        return self

    def __exit__(self, *exc) -> None:
        if self.trusted:
            _set_allowed(self.port, False)
        self.httpd.shutdown()
        self.httpd.server_close()
