"""A router of plain handler functions (Request -> Reply), and a small threaded HTTP
server that hosts one.

Used by `layerguard serve` and by the Jira and Slack emulators. Handlers see the
raw body (Slack signs it) and never touch sockets, so the same router sits behind
the AWS Lambda adapter unchanged.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def form_or_json(self) -> dict[str, Any]:
        content_type = self.headers.get("content-type", "")
        if "json" in content_type:
            return self.json()
        form = {k: v[0] for k, v in parse_qs(self.body.decode()).items()}
        form.update({k: v[0] for k, v in self.query.items()})
        return form


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # bytes or text as is; anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if isinstance(self.body, (bytes, str)):
            return self.body.encode() if isinstance(self.body, str) else self.body
        return b"" if self.body is None else json.dumps(self.body).encode()


log = logging.getLogger(__name__)

Route = tuple[str, re.Pattern, Callable[[Request], Reply]]


class Router:
    """Routes (method, path pattern) to handlers. Hosts call ``dispatch``."""

    name = "router"
    max_body_bytes = 10 * 1024 * 1024

    def __init__(self):
        self.routes: list[Route] = []

    def route(self, method: str, pattern: str, handler: Callable[[Request], Reply]) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def mount(self, other: "Router") -> None:
        """Serve ``other``'s routes too."""
        self.routes.extend(other.routes)

    def dispatch(self, request: Request) -> Reply:
        if len(request.body) > self.max_body_bytes:
            return Reply(413, self.error_body(413, f"body over {self.max_body_bytes} bytes"))
        for method, pattern, fn in self.routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                try:
                    return fn(request)
                except (ValueError, KeyError, TypeError) as exc:
                    return Reply(400, self.error_body(400, f"bad request: {type(exc).__name__}"))
                except Exception:
                    log.exception("%s: handler for %s %s failed", self.name, request.method, request.path)
                    return Reply(500, self.error_body(500, "internal error"))
        return Reply(404, self.error_body(404, f"no route for {request.method} {request.path}"))

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}


class HttpServer(Router):
    name = "http-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__()
        self._lock = threading.RLock()
        self.request_log: deque[tuple[float, str, str]] = deque(maxlen=100_000)
        self.in_flight = 0  # requests being handled now
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                server._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # Slack may send bursts; the default backlog of 5 resets connections

        self._server = Server((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HttpServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *_):
        self.stop()

    def calls(self, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for at, _, _ in self.request_log if at >= since)

    def before_route(self, request: Request) -> Reply | None:
        """A reply that pre-empts routing (authentication, injected faults), or None."""
        return None

    def drop_reply(self, request: Request) -> bool:
        """True to close the connection without answering a request already processed."""
        return False

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
        try:
            self._handle(handler)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > self.max_body_bytes:
            # Refuse before reading: a huge body never reaches memory.
            handler.close_connection = True
            status, problem = (413, f"body over {self.max_body_bytes} bytes") if length > 0 else (400, "bad Content-Length")
            self._send(handler, Reply(status, self.error_body(status, problem)))
            return
        body = handler.rfile.read(length) if length else b""
        request = Request(handler.command, parts.path, parse_qs(parts.query),
                          {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            self.request_log.append((time.time(), request.method, request.path))
        reply = self.before_route(request) or self.dispatch(request)
        if self.drop_reply(request):
            handler.close_connection = True  # processed, but the client never hears back
            return
        self._send(handler, reply)

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        payload = reply.payload()
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.headers.pop("Content-Type", "application/json;charset=utf-8"))
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)

