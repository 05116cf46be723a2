"""`layerguard serve`: Slack's interactivity endpoint, a detection webhook and a health check.

Handlers are thin: verify, record durably, answer. Everything slow (AWS, Jira, Slack's
API) runs in the worker after the answer. The handlers take a Request and return a
Reply, so another adapter (AWS Lambda behind API Gateway) can host them unchanged.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from dataclasses import asdict
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier

from integrations.http_server import HttpServer, Reply, Request
from playbooks.approvals import Approvers, BadClick, expire_due, handle_click, parse_click
from playbooks.config import Config
from playbooks.detection import Detection, IntakeError, Skipped, detections_from_document, read_documents
from playbooks.layer_exposure import Services, assess, open_case
from playbooks.worker import Worker

log = logging.getLogger(__name__)


class LayerGuardService(HttpServer):
    name = "layerguard"

    def __init__(self, config: Config, services: Services, signing_secret: str, webhook_token: str = "",
                 host: str = "127.0.0.1", port: int = 3000, verifier: SignatureVerifier | None = None):
        super().__init__(host, port)
        self.max_body_bytes = config.service.max_body_bytes
        self.config = config
        self.services = services
        self.verifier = verifier or SignatureVerifier(signing_secret)
        self.webhook_token = webhook_token
        self.approvers = Approvers(config.slack, services.chat)
        self.worker = Worker(config, services, busy=lambda: self.in_flight > 0)
        self._threads: list[threading.Thread] = []
        self.route("POST", "/slack/actions", self.slack_actions)
        self.route("POST", "/detections", self.detections)
        self.route("GET", "/healthz", self.healthz)

    def error_body(self, status: int, message: str):
        return {"error": message}

    # -- lifecycle

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

    # -- POST /slack/actions

    def slack_actions(self, request: Request) -> Reply:
        started = time.perf_counter()
        if not self.verifier.is_valid_request(request.body, request.headers):
            return Reply(401, {"error": "invalid signature or stale timestamp"})
        try:
            form = parse_qs(request.body.decode("utf-8"), strict_parsing=True)
            click = parse_click(json.loads(form["payload"][0]))
        except (UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
            reason = str(exc) if isinstance(exc, BadClick) else "no JSON payload field"
            return Reply(200, {"ignored": reason})  # signed by Slack, but not ours to act on
        result = handle_click(click, self.config, self.services.store, self.approvers)
        if result.status != "ignored":
            self.worker.notify()
        log.info("click %s on %s by %s: %s (%s) in %.1f ms", click.action_id, click.case_id, click.user_id,
                 result.status, result.message, (time.perf_counter() - started) * 1000)
        return Reply(200, b"")

    # -- POST /detections

    def detections(self, request: Request) -> Reply:
        if not self.webhook_token:
            return Reply(401, {"error": "webhook disabled: LAYERGUARD_WEBHOOK_TOKEN is not set"})
        supplied = request.headers.get("authorization", "")
        if not hmac.compare_digest(supplied.encode(), f"Bearer {self.webhook_token}".encode()):
            return Reply(401, {"error": "missing or invalid bearer token"})
        try:
            items = [item for document in read_documents(request.body, "request body")
                     for item in detections_from_document(document)]
        except IntakeError as exc:
            return Reply(400, {"error": str(exc)})
        accepted = []
        for item in items:
            if isinstance(item, Skipped):
                accepted.append({"event_id": item.event_id, "case_id": "", "status": "skipped", "reason": item.reason})
                continue
            accepted.append(self._accept_detection(item))
        self.worker.notify(len(accepted))
        return Reply(202, {"accepted": accepted, "case_ids": [a["case_id"] for a in accepted if a["case_id"]]})

    def _accept_detection(self, detection: Detection) -> dict:
        store = self.services.store
        assessment = assess(detection, self.config, store)
        case, event_state = open_case(store, detection, assessment)
        if event_state == "done":
            status = "duplicate"
        else:
            status = "queued"
            if event_state == "new":
                store.enqueue("respond", case.case_id, {"detection": asdict(detection)})
        return {"event_id": detection.event_id, "case_id": case.case_id, "grant": assessment.classification.kind.value,
                "status": status}

    # -- GET /healthz

    def healthz(self, request: Request) -> Reply:
        checks: dict[str, str] = {}
        try:
            self.services.store.ping()
            checks["state"] = "ok"
        except Exception as exc:
            checks["state"] = f"error: {type(exc).__name__}"
        if request.query.get("deep", ["0"])[0] in ("1", "true"):
            for name, client in (("jira", self.services.tickets), ("slack", self.services.chat)):
                try:
                    client.ping()
                    checks[name] = "ok"
                except Exception as exc:
                    checks[name] = f"error: {type(exc).__name__}"
        healthy = all(v == "ok" for v in checks.values())
        return Reply(200 if healthy else 503, {"status": "ok" if healthy else "degraded", "checks": checks})


def webhook_token_from_environment() -> str:
    return os.environ.get("LAYERGUARD_WEBHOOK_TOKEN", "")
