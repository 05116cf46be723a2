"""End to end over HTTP: moto's server, the Jira and Slack emulators, the real clients, a real SQLite file."""

import io
import json

import pytest

from integrations.sandbox.world import PARTNER_ACCOUNT_ID, SANDBOX_SECRETS, SandboxWorld
from playbooks.cli import main

LAYER = "payments-shared-utils"


@pytest.fixture
def world(tmp_path, monkeypatch):
    for key, value in SANDBOX_SECRETS.items():
        monkeypatch.setenv(key, value)
    with SandboxWorld(tmp_path) as world:
        layer = world.publish_layer(LAYER)
        world.layer_version_arn = layer["LayerVersionArn"]
        world.create_function("checkout-api", [layer["LayerVersionArn"]])
        world.grant(LAYER, 1, "public-share", "*")
        world.grant(LAYER, 1, "partner-share", PARTNER_ACCOUNT_ID)
        world.config_path = world.write_config()
        yield world


def use_dynamodb_state(world, config_path, table="layerguard-state"):
    """Point a config at a DynamoDB table on the world's moto server (created once)."""
    from integrations.state_dynamodb import DynamoDBStateStore

    client = world.client("dynamodb")
    if table not in client.list_tables()["TableNames"]:
        DynamoDBStateStore.create_table(client, table)
    text = config_path.read_text().replace(f"  path: {world.state_path}\n",
                                           f"  dynamodb_table: {table}\n  dynamodb_region: us-east-1\n")
    config_path.write_text(text)
    return DynamoDBStateStore(client, table)


def write_detections(path, *records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def respond(world, *args, stdin=None):
    """Run `layerguard respond ... --json` in-process; return (exit code, outcomes)."""
    out = io.StringIO()
    argv = ["respond", *map(str, args), "--config", str(world.config_path), "--json"]
    code = main(argv, stdin=io.BytesIO(stdin) if stdin is not None else None, stdout=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def slack_messages(world):
    return [m for messages in world.slack.messages.values() for m in messages]


def buttons(message):
    return [e for block in message["blocks"] if block["type"] == "actions" for e in block["elements"]]


# ----------------------------------------------------------------------------- serve

import copy  # noqa: E402
import time  # noqa: E402

import requests  # noqa: E402

from integrations.sandbox.clicks import form_body  # noqa: E402
from integrations.sandbox.clicks import signed_headers as sign  # noqa: E402
from integrations.state import SQLiteStateStore  # noqa: E402
from playbooks.cli import build_services  # noqa: E402
from playbooks.config import Secrets, load_config  # noqa: E402
from playbooks.service import LayerGuardService  # noqa: E402
from tests.conftest import load_sample  # noqa: E402

SIGNING_SECRET = SANDBOX_SECRETS["SLACK_SIGNING_SECRET"]
WEBHOOK_TOKEN = "sandbox-webhook-token"
APPROVER = "U0APPROVER"


def start_service(world, **config_overrides):
    """Start `serve` in-process on a free port against the world; returns the service."""
    world.config_path = world.write_config("serve.yaml", **config_overrides)
    return service_for(world)


def service_for(world):
    """`serve` in-process on a free port, on the world's config file as it is."""
    config = load_config(world.config_path)
    services = build_services(config, Secrets.from_environment())
    service = LayerGuardService(config, services, SIGNING_SECRET, WEBHOOK_TOKEN, port=0)
    return service.start()


def block_actions_body(action_id, case_id, user_id=APPROVER, team_id="T0LAYERGRD", channel="C0SECALERT"):
    """A block_actions payload shaped as Slack sends it (from Bolt's own test fixture)."""
    payload = copy.deepcopy(load_sample("slack_bolt_block_actions_payload_with_message_and_state.json"))
    payload["user"] = {"id": user_id, "username": user_id.lower(), "team_id": team_id}
    payload["team"] = {"id": team_id}
    payload["channel"] = {"id": channel}
    payload["container"]["channel_id"] = channel
    payload["actions"][0].update(action_id=action_id, value=case_id)
    return form_body(payload)


def signed_headers(body: str, timestamp: int | None = None, secret: str = SIGNING_SECRET):
    return sign(body, secret, timestamp)


def click(service_url, action_id, case_id, user_id=APPROVER, **kwargs):
    body = block_actions_body(action_id, case_id, user_id)
    started = time.perf_counter()
    response = requests.post(f"{service_url}/slack/actions", data=body, headers=signed_headers(body, **kwargs),
                             timeout=30)
    response.elapsed_seconds = time.perf_counter() - started
    return response


def wait_for(predicate, timeout=20.0, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def case_of(world, case_id):
    return SQLiteStateStore(world.state_path).get_case(case_id)


def idle(world):
    """True once no job is waiting or running."""
    return not SQLiteStateStore(world.state_path).pending_jobs()
