"""Button clicks exactly as Slack sends them: a form-encoded ``payload`` field holding
the block_actions JSON, signed with ``v0=HMAC-SHA256(secret, "v0:{ts}:{body}")``."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse


def block_actions_payload(action_id: str, case_id: str, user_id: str, team_id: str = "T0LAYERGRD",
                          channel: str = "C0SECALERT", app_id: str = "A0LAYERGRD") -> dict:
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "team_id": team_id},
        "api_app_id": app_id,
        "team": {"id": team_id},
        "channel": {"id": channel},
        "container": {"type": "message", "channel_id": channel, "is_ephemeral": False},
        "trigger_id": "0000000000.0000000000.layerguard",
        "actions": [{"action_id": action_id, "block_id": f"decision:{case_id}", "value": case_id,
                     "type": "button", "action_ts": f"{time.time():.6f}",
                     "text": {"type": "plain_text", "text": action_id}}],
    }


def form_body(payload: dict) -> str:
    return "payload=" + urllib.parse.quote(json.dumps(payload))


def signed_headers(body: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"}
