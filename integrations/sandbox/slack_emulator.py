"""An emulator of the Slack Web API subset LayerGuard uses.

Methods: auth.test, chat.postMessage, chat.update, chat.postEphemeral,
conversations.history, conversations.replies, usergroups.users.list. Answers
follow Slack's shape: HTTP 200 with ``{"ok": false, "error": "..."}`` for API
errors, 429 with ``Retry-After`` for rate limits. Block Kit is checked for the
rules Slack enforces on what LayerGuard sends (block types, button fields, lengths).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time

from integrations.http_server import Reply, Request
from integrations.sandbox.http_emulator import HttpEmulator

BLOCK_TYPES = {"section", "actions", "context", "divider", "header"}


class SlackEmulator(HttpEmulator):
    name = "slack-emulator"

    def __init__(self, token: str = "", team_id: str = "T0LAYERGRD", usergroups: dict[str, list[str]] | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self._token = token
        self.team_id = team_id
        self.usergroups = dict(usergroups or {})
        self.messages: dict[str, list[dict]] = {}  # channel id -> messages, oldest first
        self.ephemeral: list[dict] = []
        self._channel_ids: dict[str, str] = {}
        self._ts = itertools.count(1)
        self._messages_lock = threading.Lock()
        for method in ("auth.test", "chat.postMessage", "chat.update", "chat.postEphemeral",
                       "conversations.history", "conversations.replies", "usergroups.users.list"):
            self.route("POST", f"/api/{method}", getattr(self, "_" + method.replace(".", "_")))
            self.route("GET", f"/api/{method}", getattr(self, "_" + method.replace(".", "_")))

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def authorised(self, request: Request) -> bool:
        return True  # Slack answers 200 {"ok": false, "error": "invalid_auth"}; see _check_token

    def error_body(self, status: int, message: str):
        return {"ok": False, "error": "ratelimited" if status == 429 else message.replace(" ", "_")}

    # -- helpers

    def _check_token(self, request: Request) -> Reply | None:
        if not self._token:
            return None
        header = request.headers.get("authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {self._token}".encode()):
            return Reply(200, {"ok": False, "error": "invalid_auth" if header else "not_authed"})
        return None

    def channel_id(self, channel: str) -> str:
        """Channel names (``#security``) map to stable ids, as Slack does."""
        if channel.startswith(("C", "G", "D")) and channel.isalnum() and channel.isupper():
            return channel
        name = channel.lstrip("#")
        return self._channel_ids.setdefault(name, "C" + hashlib.sha1(name.encode()).hexdigest()[:9].upper())

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _find(self, channel: str, ts: str) -> dict | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    @staticmethod
    def _blocks_error(blocks) -> str | None:
        if blocks is None:
            return None
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except json.JSONDecodeError:
                return "invalid_blocks_format"
        if not isinstance(blocks, list) or len(blocks) > 50:
            return "invalid_blocks_format"
        action_ids: set[str] = set()
        for block in blocks:
            if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
                return "invalid_blocks"
            text = block.get("text")
            if isinstance(text, dict) and len(text.get("text", "")) > 3000:
                return "invalid_blocks"
            for item in block.get("fields", []) or []:
                if len(item.get("text", "")) > 2000:
                    return "invalid_blocks"
            for element in block.get("elements", []) if block["type"] == "actions" else []:
                if element.get("type") == "button":
                    action_id = element.get("action_id", "")
                    if not action_id or action_id in action_ids or len(element.get("value", "")) > 2000:
                        return "invalid_blocks"
                    if (element.get("text") or {}).get("type") != "plain_text":
                        return "invalid_blocks"
                    action_ids.add(action_id)
        return None

    @staticmethod
    def _decode_blocks(blocks):
        return json.loads(blocks) if isinstance(blocks, str) else blocks

    # -- methods

    def _auth_test(self, request: Request) -> Reply:
        return self._check_token(request) or Reply(200, {"ok": True, "team_id": self.team_id, "user_id": "ULAYERGRD",
                                                         "bot_id": "BLAYERGRD", "url": "https://layerguard.slack.invalid/"})

    def _chat_postMessage(self, request: Request) -> Reply:
        denied = self._check_token(request)
        if denied:
            return denied
        args = request.form_or_json()
        if not args.get("channel"):
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        if not args.get("text") and not args.get("blocks"):
            return Reply(200, {"ok": False, "error": "no_text"})
        error = self._blocks_error(args.get("blocks"))
        if error:
            return Reply(200, {"ok": False, "error": error})
        channel = self.channel_id(args["channel"])
        message = {"type": "message", "ts": self._next_ts(), "text": args.get("text", ""),
                   "blocks": self._decode_blocks(args.get("blocks")) or [], "bot_id": "BLAYERGRD"}
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        with self._messages_lock:
            self.messages.setdefault(channel, []).append(message)
        return Reply(200, {"ok": True, "channel": channel, "ts": message["ts"], "message": message})

    def _chat_update(self, request: Request) -> Reply:
        denied = self._check_token(request)
        if denied:
            return denied
        args = request.form_or_json()
        error = self._blocks_error(args.get("blocks"))
        if error:
            return Reply(200, {"ok": False, "error": error})
        channel = self.channel_id(args.get("channel", ""))
        with self._messages_lock:
            message = self._find(channel, args.get("ts", ""))
            if message is None:
                return Reply(200, {"ok": False, "error": "message_not_found"})
            message["text"] = args.get("text", message["text"])
            if "blocks" in args:
                message["blocks"] = self._decode_blocks(args["blocks"])
            message["edited"] = {"ts": self._next_ts()}
        return Reply(200, {"ok": True, "channel": channel, "ts": message["ts"], "text": message["text"]})

    def _chat_postEphemeral(self, request: Request) -> Reply:
        denied = self._check_token(request)
        if denied:
            return denied
        args = request.form_or_json()
        if not args.get("user") or not args.get("channel"):
            return Reply(200, {"ok": False, "error": "user_not_in_channel"})
        with self._messages_lock:
            self.ephemeral.append({"channel": self.channel_id(args["channel"]), "user": args["user"],
                                   "text": args.get("text", "")})
        return Reply(200, {"ok": True, "message_ts": self._next_ts()})

    def _conversations_history(self, request: Request) -> Reply:
        denied = self._check_token(request)
        if denied:
            return denied
        args = request.form_or_json()
        channel = self.channel_id(args.get("channel", ""))
        top = [m for m in self.messages.get(channel, []) if "thread_ts" not in m]
        return Reply(200, {"ok": True, "messages": list(reversed(top)), "has_more": False})

    def _conversations_replies(self, request: Request) -> Reply:
        denied = self._check_token(request)
        if denied:
            return denied
        args = request.form_or_json()
        channel, ts = self.channel_id(args.get("channel", "")), args.get("ts", "")
        thread = [m for m in self.messages.get(channel, []) if m["ts"] == ts or m.get("thread_ts") == ts]
        if not thread:
            return Reply(200, {"ok": False, "error": "thread_not_found"})
        return Reply(200, {"ok": True, "messages": thread, "has_more": False})

    def _usergroups_users_list(self, request: Request) -> Reply:
        denied = self._check_token(request)
        if denied:
            return denied
        group = request.form_or_json().get("usergroup", "")
        if group not in self.usergroups:
            return Reply(200, {"ok": False, "error": "no_such_subteam"})
        return Reply(200, {"ok": True, "users": list(self.usergroups[group])})
