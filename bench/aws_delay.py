"""A boto3 session factory that adds a fixed delay to every AWS call and logs each call."""

from __future__ import annotations

import threading
import time

import boto3


class DelayedAws:
    def __init__(self, delay: float):
        self.delay = delay
        self.calls: list[tuple[float, str]] = []  # (time the answer arrived, operation)
        self._lock = threading.Lock()

    def session(self) -> boto3.session.Session:
        session = boto3.session.Session()
        session.events.register("before-send", lambda **_: time.sleep(self.delay))
        session.events.register("after-call", self._after_call)
        return session

    def _after_call(self, model, **_):
        with self._lock:
            self.calls.append((time.perf_counter(), model.name))

    def count(self, operation: str) -> int:
        with self._lock:
            return sum(1 for _, name in self.calls if name == operation)
