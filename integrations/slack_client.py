"""Slack through `slack_sdk`: the only module that imports it.

slack_sdk's own retry handlers are switched off; integrations/retry.py owns retries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from integrations.retry import never_sent, slack_retry


class ChatError(RuntimeError):
    """Slack refused or could not be reached; the message names the method and error.

    ``uncertain`` when Slack may have acted anyway (the answer was lost after sending).
    """

    def __init__(self, message: str, uncertain: bool = False):
        super().__init__(message)
        self.uncertain = uncertain


ACK_CALL_TIMEOUT_SECONDS = 2


@dataclass(frozen=True)
class PostedMessage:
    channel: str
    ts: str


class SlackChat:
    def __init__(self, token: str, api_url: str = "https://slack.com/api/", timeout: float = 10.0):
        from slack_sdk import WebClient

        self._client = WebClient(token=token, base_url=api_url, timeout=int(max(1, timeout)), retry_handlers=[])
        # For calls made inside Slack's 3-second ack: one short attempt, no back-off.
        self._within_ack = WebClient(token=token, base_url=api_url, timeout=ACK_CALL_TIMEOUT_SECONDS,
                                     retry_handlers=[])
        self.calls = 0

    def _call(self, method: str, within_ack: bool = False, **kwargs):
        from slack_sdk.errors import SlackApiError, SlackRequestError

        self.calls += 1
        try:
            if within_ack:
                return self._within_ack.api_call(method, json=kwargs)
            return slack_retry(lambda: self._client.api_call(method, json=kwargs))()
        except SlackApiError as exc:
            raise ChatError(f"Slack {method} failed: {exc.response.get('error', exc.response.status_code)}") from exc
        except (SlackRequestError, OSError) as exc:
            raise ChatError(f"Slack {method} failed: {type(exc).__name__}", uncertain=not never_sent(exc)) from exc

    def post(self, channel: str, text: str, blocks: list[dict], thread_ts: str = "") -> PostedMessage:
        kwargs = {"channel": channel, "text": text, "blocks": blocks, "unfurl_links": False}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        response = self._call("chat.postMessage", **kwargs)
        return PostedMessage(response["channel"], response["ts"])

    def update(self, channel: str, ts: str, text: str, blocks: list[dict]) -> None:
        self._call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks)

    def find_message(self, channel: str, marker: str, since: float) -> PostedMessage | None:
        """A message posted since ``since`` whose blocks mention ``marker`` (needs channels:history)."""
        response = self._call("conversations.history", channel=channel, oldest=f"{since:.6f}", limit=200)
        for message in response.get("messages", []):
            if marker in json.dumps(message.get("blocks", [])):
                return PostedMessage(response.get("channel") or channel, message["ts"])
        return None

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        self._call("chat.postEphemeral", channel=channel, user=user, text=text)

    def usergroup_members(self, usergroup: str) -> frozenset[str]:
        """Asked while a click waits for its ack: a single short attempt (callers fail closed)."""
        return frozenset(self._call("usergroups.users.list", within_ack=True, usergroup=usergroup).get("users", []))

    def ping(self) -> None:
        self._call("auth.test")
