"""Tokens and signing secrets never reach logs, --json output, tickets or Slack messages."""

import io
import json
import logging

import requests

from integrations.sandbox.world import PARTNER_ACCOUNT_ID, SANDBOX_SECRETS, cloudtrail_record
from playbooks.cli import main
from tests.e2e.conftest import (LAYER, WEBHOOK_TOKEN, click, idle, respond, start_service, wait_for,
                                write_detections)


def test_no_secret_in_any_log_output_ticket_or_message(world, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # everything every library logs, at its most talkative
    secrets = [*SANDBOX_SECRETS.values(), WEBHOOK_TOKEN]
    secrets.remove(SANDBOX_SECRETS["JIRA_EMAIL"])  # an account name, not a secret

    code, outcomes = respond(world, write_detections(
        tmp_path / "d.json", cloudtrail_record(LAYER, 1, "*", "public-share"),
        cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share")))
    service = start_service(world)
    try:
        click(service.url, "revoke_grant", outcomes[1]["case_id"])
        requests.post(f"{service.url}/detections", data=json.dumps(cloudtrail_record(LAYER, 1, "*", "x")),
                      headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, timeout=10)
        requests.post(f"{service.url}/detections", data="{}", headers={"Authorization": "Bearer wrong"}, timeout=10)
        wait_for(lambda: idle(world), timeout=30)
    finally:
        service.stop()
    cases = io.StringIO()
    main(["cases", "--config", str(world.config_path), "--json"], stdout=cases)

    haystacks = {
        "logs": "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records),
        "--json output": json.dumps(outcomes) + cases.getvalue(),
        "tickets": json.dumps(world.jira.issues),
        "slack": json.dumps(world.slack.messages) + json.dumps(world.slack.ephemeral),
    }
    assert len(caplog.records) > 50  # the capture really saw the run
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
