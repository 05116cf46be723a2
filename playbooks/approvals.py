"""Approvals: who may decide, recording the one decision, and carrying it out.

A click is handled in two halves. Before Slack's 3-second ack: verify, check the
approver, and record the decision with the job that applies it in one SQLite
transaction (the first decision wins). After the ack, a worker runs the job:
revoke, keep or restore; update the Slack message; comment on and close the ticket.
Each job step is recorded, so a crash resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from actions.approval import ActionId, decided_blocks, escape_mrkdwn, mention
from actions.contain import case_statements, contain_grant, restore_statements
from actions.ticket import render_case_comment
from integrations.state import Case, GrantException, Job, StateStore
from playbooks.config import Config, OnTimeout, SlackConfig
from playbooks.detection import detection_from_dict
from playbooks.faults import crash_point
from playbooks.layer_exposure import Services

log = logging.getLogger(__name__)

TIMEOUT_ACTOR = "timeout"


@dataclass(frozen=True)
class DecisionRule:
    decision: str
    waiting_status: str  # the status in which the case waits for this decision
    final_status: str
    verb: str


RULES = {
    ActionId.REVOKE.value: DecisionRule("revoke", "awaiting_approval", "revoked", "Revoked"),
    ActionId.KEEP.value: DecisionRule("keep", "awaiting_approval", "accepted", "Kept"),
    ActionId.RESTORE.value: DecisionRule("restore", "contained", "restored", "Restored"),
}
RULE_BY_DECISION = {rule.decision: rule for rule in RULES.values()}


# ----------------------------------------------------------------------------- clicks (pure)


class BadClick(ValueError):
    """The interaction payload is not a LayerGuard button click."""


@dataclass(frozen=True)
class Click:
    action_id: str
    case_id: str
    user_id: str
    user_name: str
    team_id: str
    app_id: str
    channel_id: str


def parse_click(payload: Any) -> Click:
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise BadClick("not a block_actions payload")
    actions = payload.get("actions")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise BadClick("expected exactly one action")
    action = actions[0]
    if action.get("action_id") not in RULES:
        raise BadClick(f"unknown action_id {str(action.get('action_id'))[:40]!r}")
    user = payload.get("user") or {}
    channel = (payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get("channel_id") or ""
    return Click(
        action_id=action["action_id"], case_id=str(action.get("value") or "")[:40],
        user_id=str(user.get("id") or ""), user_name=str(user.get("username") or user.get("name") or ""),
        team_id=str((payload.get("team") or {}).get("id") or ""), app_id=str(payload.get("api_app_id") or ""),
        channel_id=str(channel))


# ----------------------------------------------------------------------------- who may decide


class Approvers:
    """Users in ``slack.approvers``, or members of ``slack.approver_groups``.

    Group membership is looked up with usergroups.users.list and cached briefly;
    when the lookup fails the answer is no (fail closed).
    """

    def __init__(self, slack: SlackConfig, chat, ttl_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.slack = slack
        self.chat = chat
        self.ttl = ttl_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def check(self, user_id: str) -> tuple[bool, str]:
        if user_id in self.slack.approvers:
            return True, "listed in slack.approvers"
        for group in self.slack.approver_groups:
            try:
                members = self._members(group)
            except Exception as exc:
                return False, f"could not verify membership of user group {group} ({type(exc).__name__}); refused"
            if user_id in members:
                return True, f"member of user group {group}"
        return False, "not in slack.approvers or slack.approver_groups"

    def _members(self, group: str) -> frozenset[str]:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(group)
            if cached and now - cached[0] < self.ttl:
                return cached[1]
        members = self.chat.usergroup_members(group)
        with self._lock:
            self._cache[group] = (now, members)
        return members


@dataclass(frozen=True)
class ClickResult:
    status: str  # accepted | refused | already_decided | ignored
    message: str


def handle_click(click: Click, config: Config, store: StateStore, approvers: Approvers) -> ClickResult:
    """The part before the ack: fast, local, durable."""
    if config.slack.team_id and click.team_id != config.slack.team_id:
        return ClickResult("ignored", f"team {click.team_id!r} is not the configured workspace")
    if config.slack.app_id and click.app_id != config.slack.app_id:
        return ClickResult("ignored", f"app {click.app_id!r} is not the configured app")
    case = store.get_case(click.case_id)
    if case is None:
        return ClickResult("ignored", f"no case {click.case_id!r}")
    allowed, why = approvers.check(click.user_id)
    notice = {"user_id": click.user_id, "user_name": click.user_name, "channel": click.channel_id or case.slack_channel}
    if not allowed:
        store.update_case(case.case_id, note=f"refused {click.action_id} by {click.user_id}: {why}")
        store.enqueue("notify_refusal", case.case_id, {**notice, "action": click.action_id, "reason": why})
        return ClickResult("refused", why)
    rule = RULES[click.action_id]
    if not store.record_decision(case.case_id, rule.decision, click.user_id, rule.waiting_status,
                                 "apply_decision", {"user_name": click.user_name}):
        case = store.get_case(case.case_id)
        already = (f"already decided by {case.decision_by}" if case.decision
                   else f"the case is {case.status}, not waiting for this decision")
        store.enqueue("notify_already_decided", case.case_id, {**notice, "reason": already})
        return ClickResult("already_decided", already)
    return ClickResult("accepted", f"{rule.decision} recorded")


# ----------------------------------------------------------------------------- jobs (after the ack)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _who(case: Case) -> str:
    return "the approval timeout" if case.decision_by == TIMEOUT_ACTOR else mention(case.decision_by)


def apply_decision(job: Job, config: Config, services: Services) -> None:
    store = services.store
    case = store.get_case(job.case_id)
    rule = RULE_BY_DECISION[case.decision]
    detection = detection_from_dict(case.detection)
    crash_point("apply_decision:start")

    note = job.steps.get("aws", "")
    if "aws" not in job.steps:
        lambda_client = services.aws.lambda_client(detection.layer_account_id, detection.region)
        if rule.decision == "revoke":
            result = contain_grant(lambda_client, detection.layer_arn, detection.version,
                                   case_statements(detection.statement_id, case.grantee))
            note = f"removed {', '.join(result.removed_sids) or 'nothing (already gone)'}; verified"
            case = store.update_case(case.case_id, removed_statements=case.removed_statements + result.removed,
                                     status=rule.final_status, note=f"revoked by {case.decision_by}: {note}")
        elif rule.decision == "restore":
            sids = restore_statements(lambda_client, detection.layer_arn, detection.version, case.removed_statements)
            note = f"re-added {', '.join(sids)}"
            case = store.update_case(case.case_id, status=rule.final_status, note=f"restored by {case.decision_by}: {note}")
        else:
            note = "grant kept"
            if config.approval.keep_exception_seconds:
                expires = store.clock() + config.approval.keep_exception_seconds
                store.add_exception(GrantException(detection.layer_arn, case.grantee, expires, case.decision_by,
                                                   case.case_id))
                note += f"; exception for {case.grantee} on {detection.layer_arn} until {_when(expires)}"
            case = store.update_case(case.case_id, status=rule.final_status, note=f"kept by {case.decision_by}: {note}")
        store.mark_job_step(job.job_id, "aws", note)
        crash_point("apply_decision:after_aws")
    outcome = f"*{rule.verb} by {_who(case)}* at {_when(case.decision_at)}: {escape_mrkdwn(note, 500)}"

    if "slack" not in job.steps and services.chat and case.slack_ts:
        services.chat.update(case.slack_channel, case.slack_ts, f"LayerGuard: {rule.verb.lower()}",
                             decided_blocks(list(case.slack_blocks), outcome))
        store.mark_job_step(job.job_id, "slack")
    if "jira" not in job.steps and services.tickets and case.ticket_key:
        details = [("Decision", rule.decision), ("Decided by", _decider_text(case, job)),
                   ("At", _when(case.decision_at)), ("Outcome", note), ("Case status", case.status)]
        services.tickets.comment(case.ticket_key, render_case_comment(f"{rule.verb}: {case.grantee}", details))
        store.mark_job_step(job.job_id, "jira")  # a failed transition must not repeat the comment
    if "jira_transition" not in job.steps and services.tickets and case.ticket_key:
        if not services.tickets.transition(case.ticket_key, config.jira.done_transition):
            log.warning("ticket %s has no transition named %r", case.ticket_key, config.jira.done_transition)
        store.mark_job_step(job.job_id, "jira_transition")


def _decider_text(case: Case, job: Job) -> str:
    if case.decision_by == TIMEOUT_ACTOR:
        return "the approval timeout (no decision in time)"
    name = job.payload.get("user_name")
    return f"Slack user {case.decision_by}" + (f" ({name})" if name else "")


def notify_user(job: Job, config: Config, services: Services) -> None:
    """Tell the clicker, privately, why nothing happened; note refusals on the ticket."""
    payload = job.payload
    case = services.store.get_case(job.case_id)
    if "slack" not in job.steps and services.chat and payload.get("channel") and payload.get("user_id"):
        prefix = "You are not authorised to decide this" if job.kind == "notify_refusal" else "Nothing changed"
        services.chat.ephemeral(payload["channel"], payload["user_id"],
                                f"{prefix}: {escape_mrkdwn(payload.get('reason', ''), 300)}")
        services.store.mark_job_step(job.job_id, "slack")
    if job.kind == "notify_refusal" and "jira" not in job.steps and services.tickets and case and case.ticket_key:
        services.tickets.comment(case.ticket_key, render_case_comment("Refused approval attempt", [
            ("Slack user", f"{payload.get('user_id')} ({payload.get('user_name') or '-'})"),
            ("Action", payload.get("action")), ("Reason", payload.get("reason"))]))
        services.store.mark_job_step(job.job_id, "jira")


def remind_or_escalate(job: Job, config: Config, services: Services) -> None:
    case = services.store.get_case(job.case_id)
    approvers = " ".join(mention(u) for u in config.slack.approvers) or "approvers"
    if job.kind == "remind":
        text = f"Reminder: this grant is still waiting for a decision. {approvers}"
        title = "Reminder sent: decision still pending"
    else:
        text = (f"Escalation: no decision within {int(config.approval.timeout_seconds)}s. "
                f"{approvers} please decide now.")
        title = "Escalated: approval timed out without a decision"
    if "slack" not in job.steps and services.chat and case.slack_ts:
        services.chat.post(case.slack_channel, text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
                           thread_ts=case.slack_ts)
        services.store.mark_job_step(job.job_id, "slack")
    if "jira" not in job.steps and services.tickets and case.ticket_key:
        services.tickets.comment(case.ticket_key, render_case_comment(title, [("Case status", case.status),
                                                                             ("At", _when(services.store.clock()))]))
        services.store.mark_job_step(job.job_id, "jira")


def expire_due(config: Config, store: StateStore) -> list[str]:
    """Reminders and timeouts for approvals nobody answered; returns what was scheduled."""
    now = store.clock()
    scheduled = []
    for case in store.list_cases():
        if case.status != "awaiting_approval" or case.decision:
            continue
        age = now - case.created_at
        if age >= config.approval.timeout_seconds:
            on_timeout = config.approval.on_timeout
            if on_timeout is OnTimeout.ESCALATE:
                if not case.escalated_at:
                    store.update_case(case.case_id, escalated_at=now, note="approval timed out: escalated")
                    store.enqueue("escalate", case.case_id)
                    scheduled.append(f"{case.case_id}: escalate")
                continue
            rule = RULES[ActionId.REVOKE.value if on_timeout is OnTimeout.REVOKE else ActionId.KEEP.value]
            if store.record_decision(case.case_id, rule.decision, TIMEOUT_ACTOR, rule.waiting_status,
                                     "apply_decision"):
                scheduled.append(f"{case.case_id}: {rule.decision} (timeout)")
        elif config.approval.remind_after_seconds and age >= config.approval.remind_after_seconds and not case.reminded_at:
            store.update_case(case.case_id, reminded_at=now, note="reminder sent")
            store.enqueue("remind", case.case_id)
            scheduled.append(f"{case.case_id}: remind")
    return scheduled
