"""AWS Lambda entry point: a thin shell over the same playbook, endpoints and jobs as
the CLI and `serve`. One function answers four kinds of invocation:

- an SQS batch from the detection queue (an EventBridge rule on
  ``AddLayerVersionPermission*`` feeds it): each message body is a detection in any
  shape the CLI reads; a message that cannot be read or recorded is reported back as a
  batch item failure, so SQS delivers it again and finally parks it in the dead-letter
  queue. A ``{"layerguard": "run-jobs"}`` message runs the recorded jobs instead;
- a function URL request: Slack's interactivity callback, the detection webhook and the
  health check (playbooks/endpoints.py). Jobs they record are nudged through the queue,
  so Slack's answer never waits on AWS, Jira or Slack's API;
- an EventBridge schedule: approvals that are due expire, and jobs that are due run;
- an EventBridge event delivered straight to the function: one detection.

State is in DynamoDB (``state.dynamodb_table``): a function has no lasting disk.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any, Callable
from urllib.parse import parse_qs

from integrations.aws import send_message
from integrations.http_server import Reply, Request
from playbooks.approvals import expire_due
from playbooks.config import Config, Secrets, load_config
from playbooks.endpoints import Endpoints
from playbooks.layer_exposure import Services
from playbooks.runner import RunReport, detections_in, run
from playbooks.worker import Worker

log = logging.getLogger("layerguard")
RUN_JOBS = {"layerguard": "run-jobs"}
# A job is not started with less time than this left in the invocation: one cut short
# would wait for its lease (5 minutes) to run out before it is tried again.
JOB_TIME_MARGIN_MS = 30_000


class LambdaApp:
    def __init__(self, config: Config, services: Services, signing_secret: str, webhook_token: str = "",
                 nudge: Callable[[], None] = lambda: None):
        self.config = config
        self.services = services
        self.worker = Worker(config, services)
        self.endpoints = Endpoints(config, services, signing_secret, webhook_token, on_work=lambda jobs: nudge())

    def handle(self, event: Any, context: Any = None) -> dict:
        if not isinstance(event, dict):
            raise ValueError(f"unrecognised invocation: a {type(event).__name__}, not an event object")
        records = event.get("Records")
        if isinstance(records, list) and records and records[0].get("eventSource") == "aws:sqs":
            return self.sqs_batch(records, _time_is_up(context))
        if "http" in (event.get("requestContext") or {}):
            return self.http(event)
        if event.get("detail-type") == "Scheduled Event":
            return self.scheduled(_time_is_up(context))
        if "detail-type" in event or "eventName" in event:
            location = f"event {event.get('id') or event.get('eventID') or '(no id)'}"
            if not self._respond(json.dumps(event).encode(), location):
                raise RuntimeError(f"{location} could not be handled; see the log")  # Lambda retries it
            return {"handled": location}
        raise ValueError("unrecognised invocation: expected SQS records, a function URL request, a scheduled "
                         f"event or an EventBridge event; got keys {sorted(event)[:10]}")

    # -- the detection queue

    def sqs_batch(self, records: list[dict], time_is_up: Callable[[], bool] = lambda: False) -> dict:
        failures, run_jobs = [], False
        for record in records:
            body = record.get("body") or ""
            if _is_run_jobs(body):
                run_jobs = True
            elif not self._respond(body.encode(), f"SQS message {record.get('messageId', '?')}"):
                failures.append({"itemIdentifier": record.get("messageId", "")})
        ran = self.worker.drain(time_is_up) if run_jobs else 0
        return {"batchItemFailures": failures, "jobsRun": ran}

    def _respond(self, data: bytes, location: str) -> bool:
        """Run the playbook on one message; False when it must be delivered again.

        A failure after the case was recorded is not one: the case's job is in the
        store's outbox and runs from the schedule. Bad input and a case that could not
        be recorded are: SQS redelivers them, then keeps them in the dead-letter queue."""
        report = run(detections_in(data, location), self.config, self.services)
        _log_report(report)
        unrecorded = [o for o in report.outcomes if o.errors and not o.case_id]
        return not report.intake_errors and not unrecorded

    # -- the function URL

    def http(self, event: dict) -> dict:
        context = event["requestContext"]["http"]
        body = event.get("body") or ""
        raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8")
        request = Request(method=context.get("method", "GET"), path=event.get("rawPath") or context.get("path", "/"),
                          query=parse_qs(event.get("rawQueryString") or ""),
                          headers={k.lower(): v for k, v in (event.get("headers") or {}).items()}, body=raw)
        return _function_url_reply(self.endpoints.dispatch(request))

    # -- the schedule

    def scheduled(self, time_is_up: Callable[[], bool] = lambda: False) -> dict:
        expired = expire_due(self.config, self.services.store)
        return {"expired": expired, "jobsRun": self.worker.drain(time_is_up)}


def _time_is_up(context: Any) -> Callable[[], bool]:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return (lambda: remaining() < JOB_TIME_MARGIN_MS) if remaining else (lambda: False)


def _is_run_jobs(body: str) -> bool:
    try:
        return json.loads(body) == RUN_JOBS
    except ValueError:
        return False


def _log_report(report: RunReport) -> None:
    for error in report.intake_errors:
        log.error("bad input: %s", error)
    for outcome in report.outcomes:
        log.log(logging.ERROR if outcome.errors else logging.INFO, "%s", json.dumps(outcome.as_json(), sort_keys=True))


def _function_url_reply(reply: Reply) -> dict:
    return {"statusCode": reply.status, "isBase64Encoded": True, "body": base64.b64encode(reply.payload()).decode(),
            "headers": {"content-type": "application/json;charset=utf-8", **reply.headers}}


# ----------------------------------------------------------------------------- the function's handler

_app: LambdaApp | None = None


def build_app(environ: dict[str, str] = os.environ) -> LambdaApp:  # type: ignore[assignment]
    """Wire the app once per container, from the packaged config and the environment."""
    from playbooks.cli import SetupError, build_services, home_region

    config = load_config(environ.get("LAYERGUARD_CONFIG", "config.yaml"))
    if not config.state_table:
        raise SetupError(f"{config.source}: state.dynamodb_table is not set; on AWS Lambda the state must be "
                         "in DynamoDB (a function has no lasting disk)")
    secrets = Secrets.from_environment(environ)
    if not secrets.slack_signing_secret:
        raise SetupError("environment variable SLACK_SIGNING_SECRET is not set")
    queue_url = environ.get("LAYERGUARD_QUEUE_URL", "")
    if not queue_url:
        raise SetupError("environment variable LAYERGUARD_QUEUE_URL is not set (the detection queue)")
    services = build_services(config, secrets)
    sqs = services.aws.client("sqs", "", home_region(config))
    return LambdaApp(config, services, secrets.slack_signing_secret, environ.get("LAYERGUARD_WEBHOOK_TOKEN", ""),
                     nudge=lambda: send_message(sqs, queue_url, json.dumps(RUN_JOBS)))


def handler(event: Any, context: Any = None) -> dict:
    global _app
    if _app is None:
        logging.getLogger().setLevel(logging.INFO)
        _app = build_app()
    return _app.handle(event, context)
