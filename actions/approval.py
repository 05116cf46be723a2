"""Slack: pure Block Kit builders and the post step. Action ids live in one enum.

Every button's value carries only the case id: the click handler looks the case up
in the state store, so nothing in a (forgeable) payload decides what is revoked.
"""

from __future__ import annotations

import re
from enum import Enum

from actions.collect_context import LayerContext
from actions.contain import ContainmentResult
from actions.ticket import CreationInProgress, clean_text
from playbooks.faults import crash_point
from playbooks.classify import Classification
from playbooks.detection import Detection


class ActionId(str, Enum):
    REVOKE = "revoke_grant"
    KEEP = "keep_grant"
    RESTORE = "restore_grant"


def escape_mrkdwn(value: object, limit: int = 300) -> str:
    """Slack's three control characters, so ``<!channel>`` or ``<https://x|y>`` stay text."""
    text = clean_text(value, limit) or "-"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _ticket_link(ticket_key: str, ticket_url: str) -> str:
    if not ticket_key:
        return "ticket pending"
    return f"<{ticket_url}|{escape_mrkdwn(ticket_key)}>"


def _facts(detection: Detection, classification: Classification, context: LayerContext) -> list[dict]:
    """The few facts an approver needs: who, from where, with what, how far it reaches, secrets."""
    pinned = sum(1 for c in context.consumers if c.pins_granted_version)
    accounts = len({c.account_id for c in context.consumers})
    profile = context.actor
    if context.secrets is None:
        secrets = "not scanned"
    elif context.secrets.found:
        secrets = f":warning: {len(context.secrets.findings)} found: rotate them"
    else:
        secrets = f"none found ({context.secrets.files_scanned} files)"
    facts = [
        ("Layer", f"`{escape_mrkdwn(detection.layer_version_arn)}`"),
        ("Granted to", f"`{escape_mrkdwn(detection.principal)}`"
                       + (f" in org `{escape_mrkdwn(detection.organization_id)}`" if detection.organization_id else "")),
        ("Severity", f"{classification.severity.value} ({classification.kind.value})"),
        ("Who", f"`{escape_mrkdwn(detection.actor.arn)}` ({escape_mrkdwn(profile.identity if profile else detection.actor.type)})"),
        ("From", escape_mrkdwn(profile.source if profile else detection.source_ip)),
        ("Tool", escape_mrkdwn(profile.tool if profile else detection.user_agent, 120)),
        ("Consumers", f"{len(context.consumers)} function(s) in {accounts} account(s), {pinned} pin this version"),
        ("Secrets in the layer", secrets),
    ]
    return [{"type": "mrkdwn", "text": f"*{label}*\n{value}"} for label, value in facts]


def approval_text(detection: Detection, classification: Classification) -> str:
    return (f"LayerGuard: approve or revoke a {classification.kind.value} grant on "
            f"{escape_mrkdwn(detection.layer_version_arn)}")


def approval_blocks(case_id: str, detection: Detection, classification: Classification, context: LayerContext,
                    ticket_key: str, ticket_url: str) -> list[dict]:
    return [
        {"type": "header", "text": {"type": "plain_text", "text": clean_text(
            f"Lambda layer shared with {classification.kind.value.replace('-', ' ')}: decision needed", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": escape_mrkdwn(classification.reason, 500)}},
        {"type": "section", "fields": _facts(detection, classification, context)},
        {"type": "context", "elements": [{"type": "mrkdwn", "text":
            f"Case `{escape_mrkdwn(case_id)}` · Ticket {_ticket_link(ticket_key, ticket_url)}"}]},
        {"type": "actions", "block_id": f"decision:{case_id}", "elements": [
            {"type": "button", "action_id": ActionId.REVOKE.value, "style": "danger", "value": case_id,
             "text": {"type": "plain_text", "text": "Revoke grant"},
             "confirm": {"title": {"type": "plain_text", "text": "Revoke this grant?"},
                         "text": {"type": "plain_text", "text": "The statement is removed from the layer policy."},
                         "confirm": {"type": "plain_text", "text": "Revoke"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}},
            {"type": "button", "action_id": ActionId.KEEP.value, "value": case_id,
             "text": {"type": "plain_text", "text": "Keep grant"}},
        ]},
    ]


def notification_text(detection: Detection, classification: Classification, containment: ContainmentResult | None) -> str:
    done = {"contained": "removed", "already_contained": "already gone", "failed": "NOT REMOVED"}.get(
        containment.status if containment else "", "notified")
    return (f"LayerGuard: {classification.kind.value} grant on {escape_mrkdwn(detection.layer_version_arn)} "
            f"— {done}")


def notification_blocks(case_id: str, detection: Detection, classification: Classification, context: LayerContext,
                        containment: ContainmentResult | None, ticket_key: str, ticket_url: str) -> list[dict]:
    if containment and containment.status == "failed":
        headline = (f":rotating_light: *LayerGuard could not remove this grant: act now.* "
                    f"{escape_mrkdwn(containment.error, 1200)}")
    elif containment and containment.status == "contained":
        sids = ", ".join(f"`{escape_mrkdwn(s)}`" for s in containment.removed_sids)
        headline = f"Public grant removed and verified (statements {sids})."
    elif containment:
        headline = "The grant was already gone when LayerGuard checked (verified)."
    else:
        headline = "For your information: no action was taken."
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": clean_text(
            f"Lambda layer shared: {classification.kind.value.replace('-', ' ')}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
        {"type": "section", "fields": _facts(detection, classification, context)},
        {"type": "context", "elements": [{"type": "mrkdwn", "text":
            f"Case `{escape_mrkdwn(case_id)}` · Ticket {_ticket_link(ticket_key, ticket_url)}"}]},
    ]
    if containment and containment.removed:
        # A false positive can be undone: the removed statements are kept verbatim.
        blocks.append({"type": "actions", "block_id": f"restore:{case_id}", "elements": [
            {"type": "button", "action_id": ActionId.RESTORE.value, "value": case_id,
             "text": {"type": "plain_text", "text": "Restore grant (false positive)"},
             "confirm": {"title": {"type": "plain_text", "text": "Restore this grant?"},
                         "text": {"type": "plain_text", "text": "The removed statements are added back exactly."},
                         "confirm": {"type": "plain_text", "text": "Restore"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}}]})
    return blocks


def post_case_message(chat, store, case, channel: str, text: str, blocks: list[dict]):
    """Post the case's Slack message once; the channel and ts are kept for later updates.

    The intent is recorded first; if an earlier attempt may have landed, the channel's
    history since then is searched for the case's message before posting again.
    """
    if case.slack_ts:
        return case
    claimed, earlier = store.claim_create(case.case_id, "slack")
    if not claimed:
        current = store.get_case(case.case_id)
        if current.slack_ts:
            return current
        raise CreationInProgress(f"the Slack message of case {case.case_id} is being posted by another process")
    try:
        found = chat.find_message(channel, f"Case `{case.case_id}`", since=earlier - 1) if earlier else None
        posted = found or chat.post(channel, text, blocks)
    except Exception as exc:
        if not getattr(exc, "uncertain", False):
            store.release_create(case.case_id, "slack")
        raise
    crash_point("slack:after_post")
    return store.update_case(case.case_id, slack_channel=posted.channel, slack_ts=posted.ts, slack_blocks=blocks,
                             note=f"Slack message {posted.ts} {'found' if found else 'posted'} in {posted.channel}")


SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")


def mention(user_id: str) -> str:
    """A Slack mention for a validated user id; anything else is shown as escaped text."""
    return f"<@{user_id}>" if SLACK_USER_ID.match(user_id or "") else escape_mrkdwn(user_id)


def decided_blocks(original: list[dict], outcome_mrkdwn: str) -> list[dict]:
    """The case's message with its buttons replaced by what was decided."""
    kept = [b for b in original if b.get("type") != "actions"]
    return kept + [{"type": "section", "block_id": "outcome", "text": {"type": "mrkdwn", "text": outcome_mrkdwn}}]
