"""`layerguard serve`: the endpoints (playbooks/endpoints.py) on an HTTP server, with
worker threads that run the jobs they record and a loop that expires approvals.
"""

from __future__ import annotations

import logging
import os
import threading

from slack_sdk.signature import SignatureVerifier

from integrations.http_server import HttpServer
from playbooks.approvals import expire_due
from playbooks.config import Config
from playbooks.endpoints import Endpoints
from playbooks.layer_exposure import Services
from playbooks.worker import Worker

log = logging.getLogger(__name__)


class LayerGuardService(HttpServer):
    name = "layerguard"

    def __init__(self, config: Config, services: Services, signing_secret: str, webhook_token: str = "",
                 host: str = "127.0.0.1", port: int = 3000, verifier: SignatureVerifier | None = None):
        super().__init__(host, port)
        self.config = config
        self.services = services
        self.worker = Worker(config, services, busy=lambda: self.in_flight > 0)
        self.endpoints = Endpoints(config, services, signing_secret, webhook_token, on_work=self.worker.notify,
                                   verifier=verifier)
        self.max_body_bytes = self.endpoints.max_body_bytes
        self.mount(self.endpoints)
        self._threads: list[threading.Thread] = []

    def start(self) -> "LayerGuardService":
        released = self.services.store.release_running_jobs()
        if released:
            log.warning("resuming %s job(s) left running by a previous process", released)
        for index in range(self.config.service.workers):
            self._spawn(f"worker-{index}", self.worker.run_forever)
        self._spawn("expiry", self._expiry_loop)
        return super().start()

    def stop(self) -> None:
        self.worker.stop()
        super().stop()
        for thread in self._threads:
            thread.join(timeout=10)

    def _spawn(self, name: str, target) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _expiry_loop(self) -> None:
        while not self.worker.stopping.wait(self.config.service.check_interval_seconds):
            try:
                scheduled = expire_due(self.config, self.services.store)
                if scheduled:
                    self.worker.notify(len(scheduled))
            except Exception:
                log.exception("expiry check failed")


def webhook_token_from_environment() -> str:
    return os.environ.get("LAYERGUARD_WEBHOOK_TOKEN", "")
