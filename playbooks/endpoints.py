"""LayerGuard's HTTP endpoints: Slack's interactivity callback, a detection webhook and a
health check, as a router of plain handlers (Request -> Reply).

Handlers are thin: verify, record durably, answer, and say that work is waiting
(``on_work``). Everything slow (AWS, Jira, Slack's API) runs as jobs after the answer.
Two hosts serve this router unchanged: `layerguard serve` (an HTTP server with worker
threads) and the AWS Lambda adapter (a function URL; jobs run from SQS).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import asdict
from typing import Callable
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier

from integrations.http_server import Reply, Request, Router
from playbooks.approvals import Approvers, BadClick, handle_click, parse_click
from playbooks.config import Config
from playbooks.detection import Detection, IntakeError, Skipped, detections_from_document, read_documents
from playbooks.layer_exposure import Services, assess, open_case

log = logging.getLogger(__name__)


class Endpoints(Router):
    name = "layerguard"

    def __init__(self, config: Config, services: Services, signing_secret: str, webhook_token: str = "",
                 on_work: Callable[[int], None] = lambda jobs: None, verifier: SignatureVerifier | None = None):
        super().__init__()
        self.max_body_bytes = config.service.max_body_bytes
        self.config = config
        self.services = services
        self.verifier = verifier or SignatureVerifier(signing_secret)
        self.webhook_token = webhook_token
        self.approvers = Approvers(config.slack, services.chat)
        self.on_work = on_work
        self.route("POST", "/slack/actions", self.slack_actions)
        self.route("POST", "/detections", self.detections)
        self.route("GET", "/healthz", self.healthz)

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
            self.on_work(1)
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
        self.on_work(len(accepted))
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
