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
