"""The Jira ticket: pure rendering (escaped Jira wiki markup) and the open-or-update step."""

from __future__ import annotations

import json
import re
from typing import Iterable, Sequence

from actions.collect_context import LayerContext
from actions.contain import ContainmentResult
from integrations.jira_client import TicketFields
from playbooks.classify import Classification, Response, grants_from_statement
from playbooks.detection import Detection
from playbooks.faults import crash_point

MITRE = ("T1648", "T1578", "T1578.005")
MAX_VALUE = 600

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")
_JIRA_SPECIAL = re.compile(r"([\[\]{}|*_+^~?!#()])")
# A hyphen between two letters or digits (ARNs, dates, layer names) cannot start
# strike-through, a dash or a rule; every other hyphen is escaped.
_JIRA_HYPHEN = re.compile(r"(?<![A-Za-z0-9])-|-(?![A-Za-z0-9])")
_URL_SCHEME = re.compile(r"(?i)\b(https?|ftp|file|mailto|javascript|data)(:)")

INVESTIGATION_STEPS = (
    "Confirm the layer name, version, action and granted principal (account, organization or * for public).",
    "Identify the actor (ARN, identity type) and review the source IP and user agent: was this an approved change?",
    "Determine whether the layer contains proprietary code or secrets (credentials, tokens, keys).",
    "Review the consuming functions listed above and whether they pin the granted version.",
    "Correlate related activity by the same actor: PublishLayerVersion, other AddLayerVersionPermission calls, "
    "UpdateFunctionConfiguration/CreateFunction attaching this layer.",
)
REMEDIATION_STEPS = (
    "Remove unauthorised access with RemoveLayerVersionPermission (LayerGuard does this for public grants).",
    "Rotate any secret that was in the layer: revoking the grant does not take back copies already downloaded.",
    "Restrict lambda:AddLayerVersionPermission to trusted principals (SCP or IAM).",
    "If the grant is legitimate, add the account, organization or layer to the LayerGuard allowlist after validation.",
)


def clean_text(value: object, limit: int = MAX_VALUE) -> str:
    """One line of printable text, at most ``limit`` characters: no control or bidi characters."""
    text = _CONTROL.sub(" ", "" if value is None else str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape_jira(value: object, limit: int = MAX_VALUE) -> str:
    """Make event-derived text inert in Jira wiki markup: no links, macros, tables or formatting."""
    text = clean_text(value, limit)
    if not text:
        return "-"
    text = _URL_SCHEME.sub(r"\1[:]", text)  # defang, so no autolink
    text = text.replace("\\", "\x00")  # control characters are gone, so \x00 is free as a marker
    text = _JIRA_HYPHEN.sub(r"\\-", _JIRA_SPECIAL.sub(r"\\\1", text))
    return text.replace("\x00", "&#92;")  # an event's backslash, as an entity: "\\" would be a line break


def _table(rows: Iterable[tuple[str, object]]) -> str:
    return "\n".join(f"||{label}|{escape_jira(value)}|" for label, value in rows)


def _grid(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["||" + "||".join(headers) + "||"]
    lines += ["|" + "|".join(escape_jira(cell) for cell in row) + "|" for row in rows]
    return "\n".join(lines)


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def case_label(case_id: str) -> str:
    return f"layerguard-case-{case_id}".lower()


def summary_line(detection: Detection, classification: Classification) -> str:
    return clean_text(
        f"[LayerGuard] {classification.kind.value} grant on Lambda layer {detection.layer_name}:"
        f"{detection.version} in {detection.layer_account_id}/{detection.region}", 250)


def describe_containment(containment: ContainmentResult | None, response: Response | None) -> list[str]:
    if response is None:
        return ["No action: the grant is allowlisted as trusted."]
    if containment is None:
        return {
            Response.APPROVE: ["Approval requested in Slack: revoke or keep this grant."],
            Response.NOTIFY: ["Notified only: this kind of grant is configured as notify."],
        }.get(response, ["No containment was run."])
    if containment.status == "failed":
        return [f"*Containment FAILED: the grant may still be in place.* {escape_jira(containment.error, 1200)}"]
    if containment.status == "already_contained":
        return ["The grant was already gone from the layer policy when LayerGuard checked (verified)."]
    lines = [f"Removed statement {escape_jira(s.get('Sid'))} (principal {escape_jira(_principal_text(s))}) "
             "with RemoveLayerVersionPermission." for s in containment.removed]
    lines.append("Verified: the re-read layer version policy no longer grants this access.")
    return lines


def _principal_text(statement: dict) -> str:
    grants = grants_from_statement(statement)
    return ", ".join(g.grantee for g in grants) or json.dumps(statement.get("Principal"))


def render_ticket(case_id: str, detection: Detection, classification: Classification, response: Response | None,
                  containment: ContainmentResult | None, context: LayerContext,
                  priorities: dict, previous_ticket: str = "") -> TicketFields:
    actor = detection.actor
    layer = context.layer_version or {}
    content = layer.get("Content") or {}
    sections = [
        f"h2. {classification.kind.value.replace('-', ' ').title()} grant on a Lambda layer version",
        f"*Severity:* {classification.severity.value}. *Why:* {escape_jira(classification.reason)}",
        f"*LayerGuard case:* {escape_jira(case_id)}"
        + (f". The same grant was handled before in {escape_jira(previous_ticket)} (linked)." if previous_ticket else ""),
        "h3. Actions taken",
        "\n".join(f"* {line}" for line in describe_containment(containment, response)),
        "h3. Grant",
        _table([
            ("Layer", detection.layer_name), ("Layer version ARN", detection.layer_version_arn),
            ("Account / region", f"{detection.layer_account_id} / {detection.region}"),
            ("Granted principal", detection.principal), ("Organization", detection.organization_id or "-"),
            ("Action", detection.action), ("Statement id", detection.statement_id or "-"),
            ("CloudTrail event", f"{detection.event_name} {detection.event_id}"), ("Event time", detection.event_time),
        ]),
        "h3. Actor",
        _table([
            ("ARN", actor.arn), ("Identity type", actor.type), ("Principal id", actor.principal_id),
            ("Access key id", actor.access_key_id), ("Session issuer", actor.session_issuer_arn or "-"),
            ("MFA", _yes_no(actor.mfa_authenticated)), ("Source IP", detection.source_ip),
            ("User agent", detection.user_agent),
        ] + ([
            ("Identity", context.actor.identity), ("Tool", context.actor.tool), ("Source", context.actor.source),
            ("Earlier layer grants by this actor", context.actor.prior_grants),
        ] if context.actor else [])),
        "h3. Layer version",
        _table([
            ("Description", layer.get("Description") or "-"), ("Created", layer.get("CreatedDate") or "-"),
            ("Runtimes", ", ".join(layer.get("CompatibleRuntimes") or []) or "-"),
            ("Architectures", ", ".join(layer.get("CompatibleArchitectures") or []) or "-"),
            ("Code size (bytes)", content.get("CodeSize", "-")), ("Code SHA-256", content.get("CodeSha256", "-")),
        ]) if context.layer_version else "The layer version could not be read (see collection problems).",
        "h3. Current layer version policy",
        _grid(("Sid", "Grantee", "Action"), (
            (s.get("Sid"), _principal_text(s), s.get("Action")) for s in context.policy.statements))
        if context.policy.statements else "No statements: nobody outside the account is granted this version.",
        f"h3. Consumers in {escape_jira(detection.region)}",
        "Accounts searched: " + escape_jira(", ".join(context.accounts_scanned) or detection.layer_account_id)
        + ". Any account the layer is shared with may also use it.",
        _grid(("Function", "Account", "Version", "Aliases", "Layer version used", "Pins granted version"), (
            (c.function_arn, c.account_id, c.version, ", ".join(c.aliases) or "-", c.layer_version_arn,
             _yes_no(c.pins_granted_version)) for c in context.consumers))
        if context.consumers else "No function in the searched accounts uses this layer.",
        "h3. Other versions of this layer",
        _grid(("Version", "Shared with"), (
            (v.version, ", ".join(_principal_text(s) for s in v.statements) or "nobody") for v in context.other_versions))
        if context.other_versions else "No other version exists (or none could be listed).",
        "h3. Related activity",
        _grid(("Time", "Event", "Actor", "What"), (
            (e.time, e.event_name, e.actor, e.summary) for e in context.timeline))
        if context.timeline else "No related CloudTrail activity found in the window (or the lookup was off).",
        "h3. Secrets in the layer",
        _render_secrets(context),
    ]
    if context.errors:
        sections += ["h3. Collection problems", "\n".join(f"* {escape_jira(e)}" for e in context.errors)]
    sections += [
        "h3. Investigation checklist",
        "\n".join(f"# {step}" for step in INVESTIGATION_STEPS),
        "h3. Remediation",
        "\n".join(f"# {step}" for step in REMEDIATION_STEPS),
        "h3. MITRE ATT&CK",
        "T1648 Serverless Execution; T1578 Modify Cloud Compute Infrastructure; "
        "T1578.005 Modify Cloud Compute Configurations.",
    ]
    return TicketFields(
        summary=summary_line(detection, classification),
        description="\n\n".join(sections),
        labels=("layerguard", classification.kind.value, *MITRE, case_label(case_id)),
        priority=priorities[classification.severity],
    )


def _render_secrets(context: LayerContext) -> str:
    scan = context.secrets
    if scan is None:
        return "The layer content was not scanned."
    lines = []
    if scan.findings:
        lines += ["*Secrets found: rotate them now.* Revoking the grant does not take back copies already "
                  "downloaded, and functions keep using a layer version after its permission is revoked.",
                  _grid(("File", "Line", "Type", "Hint (masked)"),
                        ((f.path, f.line, f.type, f.hint) for f in scan.findings))]
    else:
        lines.append(f"No secrets found in {scan.files_scanned} text file(s) scanned with detect-secrets.")
    lines += [f"* {escape_jira(problem)}" for problem in scan.problems]
    return "\n".join(lines)


def render_repeat_comment(detection: Detection, containment: ContainmentResult | None) -> str:
    lines = [
        "*Repeat detection of this grant.*",
        _table([("CloudTrail event", detection.event_id), ("Event time", detection.event_time),
                ("Actor", detection.actor.arn), ("Source IP", detection.source_ip),
                ("User agent", detection.user_agent)]),
    ]
    if containment is not None:
        lines.append("\n".join(f"* {line}" for line in describe_containment(containment, Response.REVOKE)))
    return "\n\n".join(lines)


class CreationInProgress(RuntimeError):
    """Another process is creating this case's ticket or message; retry later."""


def open_or_update_ticket(tickets, store, case, fields: TicketFields, repeat_comment: str):
    """One ticket per case: create it the first time, comment on it after that.

    The intent is recorded before creating; if an earlier attempt may have landed (a crash,
    a dropped answer), the ticket is looked up by the case's label before creating again.
    """
    if case.ticket_key:
        tickets.comment(case.ticket_key, repeat_comment)
        return store.update_case(case.case_id, note=f"repeat detection commented on {case.ticket_key}")
    claimed, earlier = store.claim_create(case.case_id, "ticket")
    if not claimed:
        current = store.get_case(case.case_id)
        if current.ticket_key:
            return open_or_update_ticket(tickets, store, current, fields, repeat_comment)
        raise CreationInProgress(f"the ticket of case {case.case_id} is being created by another process")
    try:
        key = tickets.find_by_label(case_label(case.case_id)) if earlier else None
        if key:
            return store.update_case(case.case_id, ticket_key=key, note=f"ticket {key} found: an earlier attempt landed")
        key = tickets.create(fields)
    except Exception as exc:
        if not getattr(exc, "uncertain", False):
            store.release_create(case.case_id, "ticket")
        raise
    crash_point("ticket:after_create")
    return store.update_case(case.case_id, ticket_key=key, note=f"ticket {key} opened")


def render_case_comment(title: str, rows: Sequence[tuple[str, object]]) -> str:
    """A follow-up comment: a bold title and a two-column table, everything escaped."""
    return f"*{escape_jira(title)}*\n\n{_table(rows)}"
