"""`layerguard demo`: the whole story against moto's server and the Jira/Slack emulators.

A layer is shared publicly and with a partner account; both CloudTrail detections go
through the real CLI path (config file, intake, playbook, real clients over HTTP).
"""

from __future__ import annotations

import json
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TextIO

from integrations.sandbox.aws_server import environment
from integrations.sandbox.world import PARTNER_ACCOUNT_ID, SANDBOX_SECRETS, SandboxWorld, cloudtrail_record

LAYER = "payments-shared-utils"


def _policy_lines(statements: list[dict]) -> list[str]:
    if not statements:
        return ["    (no statements: nobody outside the account can use it)"]
    return [f"    {s.get('Sid')}: principal={json.dumps(s.get('Principal'))}"
            + (f" org={s['OrganizationId']}" if s.get("OrganizationId") else "") for s in statements]


def _play_the_click(world: SandboxWorld, config_path: Path, say) -> None:
    """Start `serve`, click Revoke as an approver would, and show what changed."""
    import requests

    from integrations.sandbox.clicks import block_actions_payload, form_body, signed_headers
    from integrations.state import SQLiteStateStore
    from playbooks.cli import build_services
    from playbooks.config import Secrets, load_config
    from playbooks.service import LayerGuardService

    config = load_config(config_path)
    store = SQLiteStateStore(config.state_path)
    case = next(c for c in store.list_cases() if c.status == "awaiting_approval")
    service = LayerGuardService(config, build_services(config, Secrets.from_environment()),
                                SANDBOX_SECRETS["SLACK_SIGNING_SECRET"], port=0).start()
    try:
        say(f"\n7. An approver (U0APPROVER) clicks 'Revoke grant' on case {case.case_id}; "
            f"layerguard serve is listening on {service.url}")
        body = form_body(block_actions_payload("revoke_grant", case.case_id, "U0APPROVER"))
        answer = requests.post(f"{service.url}/slack/actions", data=body,
                               headers=signed_headers(body, SANDBOX_SECRETS["SLACK_SIGNING_SECRET"]), timeout=10)
        say(f"   Slack got its answer: HTTP {answer.status_code} in {answer.elapsed.total_seconds() * 1000:.0f} ms")
        deadline = time.time() + 30
        while time.time() < deadline and (store.get_case(case.case_id).status != "revoked" or store.pending_jobs()):
            time.sleep(0.05)
    finally:
        service.stop()
    case = store.get_case(case.case_id)
    say(f"   case {case.case_id} is now {case.status}; the layer policy:")
    for line in _policy_lines(world.policy_statements(LAYER, 1)):
        say(line)
    message = next(m for m in world.slack.messages[case.slack_channel] if m["ts"] == case.slack_ts)
    outcome = next(b["text"]["text"] for b in message["blocks"] if b.get("block_id") == "outcome")
    buttons = [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    say(f"   the Slack message now says: {outcome}  (buttons left: {len(buttons)})")
    issue = world.jira.issues[case.ticket_key]
    say(f"   ticket {case.ticket_key} is {issue['fields']['status']['name']}; its last comment:")
    say(textwrap.indent(issue["fields"]["comment"]["comments"][-1]["body"], "    | "))


def run_demo(out: TextIO) -> int:
    from playbooks.cli import main as cli_main

    def say(text: str = "") -> None:
        print(text, file=out)

    with tempfile.TemporaryDirectory(prefix="layerguard-demo-") as tmp, SandboxWorld(Path(tmp)) as world, \
            environment(SANDBOX_SECRETS):
        say("LayerGuard demo — local AWS (moto server), Jira and Slack emulators, state in "
            f"{world.state_path}\n")
        layer = world.publish_layer(LAYER, {"python/payments/util.py": "def fee(x):\n    return x * 0.029\n"})
        world.create_function("checkout-api", [layer["LayerVersionArn"]])
        world.create_function("refunds-worker", [layer["LayerVersionArn"]], publish=False)
        world.grant(LAYER, 1, "public-share", "*")
        world.grant(LAYER, 1, "partner-share", PARTNER_ACCOUNT_ID)
        say(f"1. Someone shared {layer['LayerVersionArn']}:")
        for line in _policy_lines(world.policy_statements(LAYER, 1)):
            say(line)

        detections = Path(tmp) / "detections.jsonl"
        detections.write_text("\n".join(json.dumps(r) for r in (
            cloudtrail_record(LAYER, 1, "*", "public-share"),
            cloudtrail_record(LAYER, "1", PARTNER_ACCOUNT_ID, "partner-share",
                              user_agent="Boto3/1.34.0 Python/3.12 <!channel> please approve"),
        )) + "\n")
        config = world.write_config()
        say(f"\n2. CloudTrail recorded both grants; running: layerguard respond {detections.name} --config {config.name}\n")
        code = cli_main(["respond", str(detections), "--config", str(config)], stdout=out)

        say("\n3. The layer version policy now:")
        for line in _policy_lines(world.policy_statements(LAYER, 1)):
            say(line)

        say("\n4. Jira tickets:")
        for key, issue in world.jira.issues.items():
            fields = issue["fields"]
            say(f"  {key} [{fields['priority']['name']}] {fields['summary']}")
            say(f"    labels: {', '.join(fields['labels'])}")
            lines = [line for line in fields["description"].splitlines() if line.strip()]
            say(textwrap.indent("\n".join(lines[:22] + ["…"]), "    | "))

        say("\n5. Slack messages in #security-alerts:")
        for channel, messages in world.slack.messages.items():
            for message in messages:
                say(f"  [{channel} {message['ts']}] {message['text']}")
                buttons = [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
                for button in buttons:
                    say(f"    button '{button['text']['text']}' action_id={button['action_id']} value={button['value']}")

        say("\n6. Replaying the same detections changes nothing:")
        cli_main(["respond", str(detections), "--config", str(config)], stdout=out)
        say(f"\n   tickets: {len(world.jira.issues)}, Slack messages: "
            f"{sum(len(m) for m in world.slack.messages.values())}")

        _play_the_click(world, config, say)
        say("\n8. Cases:")
        cli_main(["cases", "--config", str(config)], stdout=out)
        return code
