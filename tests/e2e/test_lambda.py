"""The AWS Lambda entry point end to end: state in DynamoDB and the detection queue in SQS
on moto's server, Jira and Slack emulators, the real clients. The events are shaped as
Lambda delivers them (SQS batch, function URL payload 2.0, EventBridge schedule);
moto cannot run a function, so the test hands them to the handler as Lambda would."""

import base64
import json
import os
import time
import uuid

import pytest

from integrations.sandbox.world import PARTNER_ACCOUNT_ID, cloudtrail_record
from playbooks.aws_lambda import RUN_JOBS, build_app
from playbooks.cli import SetupError
from tests.e2e.conftest import (LAYER, block_actions_body, buttons, signed_headers, slack_messages,
                                use_dynamodb_state)


@pytest.fixture
def aws_app(world):
    """The function as one container would build it, and its queue and state table."""
    sqs = world.client("sqs")
    queue_url = sqs.create_queue(QueueName="layerguard-detections")["QueueUrl"]
    config_path = world.write_config("lambda.yaml")
    store = use_dynamodb_state(world, config_path)

    def build(**config_overrides):
        if config_overrides:
            world.write_config("lambda.yaml", **config_overrides)
            use_dynamodb_state(world, config_path)
        return build_app({**os.environ, "LAYERGUARD_CONFIG": str(config_path), "LAYERGUARD_QUEUE_URL": queue_url})

    build.sqs, build.queue_url, build.store = sqs, queue_url, store
    return build


def eventbridge(record):
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.lambda", "account": record["recipientAccountId"], "region": record["awsRegion"],
            "time": record["eventTime"], "resources": [], "detail": record}


def sqs_event(*bodies):
    return {"Records": [{"messageId": message_id, "receiptHandle": "r", "body": body, "attributes": {},
                         "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:layerguard-detections"}
                        for message_id, body in bodies]}


def function_url_event(method, path, body, headers):
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {k.lower(): v for k, v in headers.items()},
            "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "203.0.113.9", "userAgent": "Slackbot 1.0"}},
            "body": base64.b64encode(body.encode()).decode(), "isBase64Encoded": True}


def queued_messages(aws_app):
    answer = aws_app.sqs.receive_message(QueueUrl=aws_app.queue_url, MaxNumberOfMessages=10)
    return [(m["MessageId"], m["Body"]) for m in answer.get("Messages", [])]


def sids(world):
    return {s["Sid"] for s in world.policy_statements(LAYER, 1)}


def test_detections_from_the_queue_are_contained_and_bad_messages_go_back(world, aws_app):
    app = aws_app()
    public = json.dumps(eventbridge(cloudtrail_record(LAYER, 1, "*", "public-share")))
    partner = json.dumps(eventbridge(cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share")))

    result = app.handle(sqs_event(("m-public", public), ("m-partner", partner), ("m-bad", '{"detail": [')))

    # Only the unreadable message goes back to SQS (and, after its retries, to the dead-letter queue).
    assert result["batchItemFailures"] == [{"itemIdentifier": "m-bad"}]
    assert sids(world) == {"partner-share"}
    assert len(world.jira.issues) == 2
    assert sorted(sorted(b["action_id"] for b in buttons(m)) for m in slack_messages(world)) == [
        ["keep_grant", "revoke_grant"], ["restore_grant"]]
    assert sorted(c.status for c in aws_app.store.list_cases()) == ["awaiting_approval", "contained"]

    # SQS delivers at least once: the same message again changes nothing.
    again = app.handle(sqs_event(("m-public", public)))
    assert again["batchItemFailures"] == [] and len(world.jira.issues) == 2 and len(slack_messages(world)) == 2


def test_an_approvers_click_on_the_function_url_is_acked_then_applied_from_the_queue(world, aws_app):
    app = aws_app()
    partner = json.dumps(eventbridge(cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share")))
    app.handle(sqs_event(("m1", partner)))
    [message] = slack_messages(world)
    case_id = buttons(message)[0]["value"]

    body = block_actions_body("revoke_grant", case_id)
    started = time.perf_counter()
    reply = app.handle(function_url_event("POST", "/slack/actions", body, signed_headers(body)))
    acked_in = time.perf_counter() - started
    assert reply["statusCode"] == 200
    assert sids(world) == {"public-share", "partner-share"}  # nothing slow happened inside the ack
    print(f"ack in {acked_in * 1000:.0f} ms")

    nudges = queued_messages(aws_app)
    assert [json.loads(body) for _, body in nudges] == [RUN_JOBS]
    result = app.handle(sqs_event(*nudges))
    assert result["jobsRun"] == 1
    assert sids(world) == {"public-share"}
    case = aws_app.store.get_case(case_id)
    assert (case.status, case.decision, case.decision_by) == ("revoked", "revoke", "U0APPROVER")
    updated = world.slack.messages[case.slack_channel][0]
    assert "Revoked by <@U0APPROVER>" in json.dumps(updated["blocks"]) and not buttons(updated)
    assert world.jira.issues[case.ticket_key]["fields"]["status"]["name"] == "Done"


class LambdaContext:
    """The context object Lambda passes: only the remaining time matters here."""

    def __init__(self, remaining_ms):
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self):
        return self.remaining_ms


def test_jobs_are_not_started_when_the_invocation_is_almost_out_of_time(world, aws_app):
    app = aws_app()
    app.handle(sqs_event(("m1", json.dumps(eventbridge(cloudtrail_record(
        LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share"))))))
    case_id = buttons(slack_messages(world)[0])[0]["value"]
    body = block_actions_body("revoke_grant", case_id)
    app.handle(function_url_event("POST", "/slack/actions", body, signed_headers(body)))
    nudges = queued_messages(aws_app)

    assert app.handle(sqs_event(*nudges), LambdaContext(remaining_ms=10_000))["jobsRun"] == 0
    assert len(aws_app.store.pending_jobs()) == 1 and sids(world) == {"public-share", "partner-share"}
    assert app.handle(sqs_event(*nudges), LambdaContext(remaining_ms=100_000))["jobsRun"] == 1
    assert sids(world) == {"public-share"}


def test_forged_clicks_and_unknown_paths_are_refused(world, aws_app):
    app = aws_app()
    body = block_actions_body("revoke_grant", "LG-ANY")
    forged = app.handle(function_url_event("POST", "/slack/actions", body, signed_headers(body, secret="guess")))
    assert forged["statusCode"] == 401
    assert app.handle(function_url_event("GET", "/admin", "", {}))["statusCode"] == 404
    health = app.handle(function_url_event("GET", "/healthz", "", {}))
    assert (health["statusCode"], json.loads(base64.b64decode(health["body"]))["checks"]) == (200, {"state": "ok"})
    assert queued_messages(aws_app) == []


def test_the_schedule_expires_approvals_and_runs_their_jobs(world, aws_app):
    app = aws_app(approval={"timeout": "1s", "on_timeout": "revoke"})
    app.handle(eventbridge(cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share")))
    time.sleep(1.1)

    result = app.handle({"version": "0", "id": "tick", "detail-type": "Scheduled Event", "source": "aws.events",
                         "detail": {}})

    assert len(result["expired"]) == 1 and result["jobsRun"] == 1
    assert sids(world) == {"public-share"}
    [case] = aws_app.store.list_cases()
    assert (case.status, case.decision_by) == ("revoked", "timeout")


def test_unknown_invocations_and_missing_setup_are_named(world, aws_app, tmp_path):
    app = aws_app()
    with pytest.raises(ValueError, match="unrecognised invocation.*got keys \\['colour'\\]"):
        app.handle({"colour": "red"})

    sqlite_config = world.write_config("sqlite.yaml")
    with pytest.raises(SetupError, match="state.dynamodb_table is not set"):
        build_app({**os.environ, "LAYERGUARD_CONFIG": str(sqlite_config), "LAYERGUARD_QUEUE_URL": aws_app.queue_url})
    with pytest.raises(SetupError, match="LAYERGUARD_QUEUE_URL"):
        build_app({k: v for k, v in {**os.environ, "LAYERGUARD_CONFIG": str(world.workdir / "lambda.yaml")}.items()
                   if k != "LAYERGUARD_QUEUE_URL"})
