"""The emulators' base: the project's HTTP server plus fault switches, so tests and
benchmarks make a service slow, unavailable, or lose an answer without touching clients."""

from __future__ import annotations

import time
from dataclasses import dataclass

from integrations.http_server import HttpServer, Reply, Request


@dataclass
class Fault:
    """Fail the next ``count`` requests with ``status`` (and ``Retry-After``)."""

    count: int
    status: int = 503
    retry_after: str = ""


class HttpEmulator(HttpServer):
    """A server with fault switches (latency, N failures with a status and Retry-After),
    so tests and benchmarks make a service slow or unavailable without touching clients."""

    name = "emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.latency_seconds = 0.0
        self.faults: list[Fault] = []
        self.drop_after_processing: dict[str, int] = {}  # path -> how many answers to lose

    def authorised(self, request: Request) -> bool:
        return True

    def drop_reply(self, request: Request) -> bool:
        with self._lock:
            left = self.drop_after_processing.get(request.path, 0)
            if left:
                self.drop_after_processing[request.path] = left - 1
            return bool(left)

    def before_route(self, request: Request) -> Reply | None:
        with self._lock:
            fault = self.faults[0] if self.faults else None
            if fault:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.pop(0)
        if self.latency_seconds:
            time.sleep(self.latency_seconds)
        if fault:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return Reply(fault.status, self.error_body(fault.status, "injected fault"), headers)
        if not self.authorised(request):
            return Reply(401, self.error_body(401, "not authenticated"))
        return None
