"""The playbook: a Lambda layer version was shared outside its account.

Read top to bottom, it follows the seed rule's guide:
  1. classify the grant (public, organization, cross-account, same-account, trusted);
  2. record the case locally, so a crash loses nothing;
  3. contain public grants at once: only AWS is called before the grant is gone;
  4. collect context: the layer version, its whole policy, the functions that use it;
  5. open (or update) the case's one Jira ticket;
  6. post to Slack: an approval request with Revoke/Keep buttons, or a notification.

Each step is recorded against the CloudTrail event, so running the same event
again resumes where it stopped and never repeats a ticket or a message.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from actions.approval import (approval_blocks, approval_text, notification_blocks, notification_text,
                              post_case_message)
from actions.collect_context import Investigator, LayerContext
from actions.contain import ContainmentResult, contain_grant, grantee_statements, public_statements
from actions.ticket import open_or_update_ticket, render_repeat_comment, render_ticket
from integrations.aws import AwsClients, list_layer_versions
from integrations.state import Case, StateStore, case_key, new_case_id
from playbooks.classify import (Classification, Grant, GrantKind, LayerRef, Response, Severity, classify_grant,
                                grant_from_request, response_for)
from playbooks.config import Config
from playbooks.detection import Detection
from playbooks.faults import crash_point


@dataclass
class Services:
    """Everything with a side effect, built by the entry point and passed in."""

    aws: AwsClients
    store: StateStore | None = None
    tickets: Any = None  # integrations.jira_client.JiraTickets
    chat: Any = None  # integrations.slack_client.SlackChat
    investigator: Investigator | None = None

    def __post_init__(self):
        if self.investigator is None:
            self.investigator = Investigator(self.aws)


@dataclass(frozen=True)
class Outcome:
    event_id: str
    case_id: str
    grant: str
    severity: str
    decision: str  # contained | already_contained | awaiting_approval | notified | trusted | duplicate | skipped
    reason: str
    layer_version_arn: str = ""
    principal: str = ""
    removed_statements: list[str] = field(default_factory=list)
    ticket: str = ""
    consumers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    location: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Assessment:
    grant: Grant
    classification: Classification
    response: Response | None


DECISION_BY_RESPONSE = {Response.APPROVE: "awaiting_approval", Response.NOTIFY: "notified"}


def assess(detection: Detection, config: Config, store: StateStore | None = None) -> Assessment:
    """Classify the detection's grant, honouring grants an approver chose to keep."""
    layer = LayerRef(detection.layer_arn, detection.layer_name, detection.version, detection.layer_account_id)
    grant = grant_from_request(detection.principal, detection.organization_id)
    allow = config.allowlists
    kept = store.active_exception(detection.layer_arn, grant.grantee) if store else None
    if kept:
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(kept.expires_at))
        allow = replace(allow, kept_grants={(kept.layer_arn, kept.grantee):
                                            f"kept by {kept.created_by} in case {kept.case_id} until {until}"})
    classification = classify_grant(grant, layer, allow)
    return Assessment(grant, classification, response_for(classification.kind, config.responses))


def open_case(store: StateStore, detection: Detection, assessment: Assessment) -> tuple[Case, str]:
    """The case this event belongs to, and whether the event is new, in progress or done."""
    seen = store.event_status(detection.event_id)
    if seen:
        case = store.get_case(seen[0])
        if case is not None:
            return case, seen[1]
    key = case_key(detection.layer_version_arn, assessment.grant.grantee)
    earlier = store.latest_closed_case(key)
    candidate = Case(
        case_id=new_case_id(), case_key=key, layer_version_arn=detection.layer_version_arn,
        grantee=assessment.grant.grantee, grant_kind=assessment.classification.kind.value,
        severity=assessment.classification.severity.value, detection=asdict(detection),
        previous_ticket=earlier.ticket_key if earlier else "")
    case, _created = store.open_case(candidate)
    owner = store.claim_event(detection.event_id, case.case_id)
    if owner != case.case_id:  # another process claimed this event first
        case = store.get_case(owner) or case
        return case, (store.event_status(detection.event_id) or (owner, "in_progress"))[1]
    return case, "new"


def respond(detection: Detection, config: Config, services: Services, dry_run: bool = False) -> Outcome:
    # 1. Classify (pure, plus the kept-grant exceptions from the store).
    store = services.store
    assessment = assess(detection, config, None if dry_run else store)
    classification, response = assessment.classification, assessment.response
    outcome = Outcome(
        event_id=detection.event_id, case_id="", grant=classification.kind.value,
        severity=classification.severity.value, decision="", reason=classification.reason,
        layer_version_arn=detection.layer_version_arn, principal=detection.principal,
        dry_run=dry_run, location=detection.location)
    if config.aws.regions and detection.region not in config.aws.regions:
        return replace(outcome, decision="skipped",
                       reason=f"region {detection.region} is not in aws.regions ({', '.join(config.aws.regions)})")
    select = public_statements if classification.kind is GrantKind.PUBLIC else grantee_statements(
        assessment.grant.grantee)
    if dry_run:
        return _preview(detection, services, response, select, outcome)

    # 2. Record the case before acting (local state only).
    case, event_state = open_case(store, detection, assessment)
    crash_point("respond:after_case")
    outcome = replace(outcome, case_id=case.case_id, ticket=case.ticket_key)
    if event_state == "done":
        return replace(outcome, decision="duplicate",
                       reason=f"event {detection.event_id} was already handled in case {case.case_id}")
    if response is None:
        store.update_case(case.case_id, status="trusted", note=classification.reason)
        store.finish_event(detection.event_id)
        return replace(outcome, decision="trusted")

    # 3. Contain at once: nothing but AWS happens before the grant is gone.
    containment: ContainmentResult | None = None
    if response is Response.REVOKE:
        case, containment = _contain(services, case, detection, select)
        failed = containment.status == "failed"
        outcome = replace(outcome, decision=containment.status, removed_statements=containment.removed_sids,
                          errors=[f"containment failed: {containment.error}"] if failed else [])
    else:
        outcome = replace(outcome, decision=DECISION_BY_RESPONSE[response])
        if case.status != outcome.decision and case.is_open:
            case = store.update_case(case.case_id, status=outcome.decision, note=classification.reason)

    crash_point("respond:after_containment")
    if containment and containment.status != "failed" and config.contain_all_versions \
            and classification.kind is GrantKind.PUBLIC:
        case = _contain_other_versions(store, case, services.aws.lambda_client(
            detection.layer_account_id, detection.region), detection)

    # 4. Collect context (read-only, best effort). Secrets in the layer raise the severity:
    # revoking the grant does not take back copies already downloaded.
    context = services.investigator.collect(detection)
    outcome = replace(outcome, consumers=context.consumer_arns)
    if context.secrets and context.secrets.found and classification.severity is not Severity.CRITICAL:
        classification = replace(classification, severity=Severity.CRITICAL,
                                 reason=f"{classification.reason}; the layer content holds secrets")
        case = store.update_case(case.case_id, severity=classification.severity.value,
                                 note=f"{len(context.secrets.findings)} secret(s) found in the layer: severity raised")
        outcome = replace(outcome, severity=classification.severity.value, reason=classification.reason)

    # 5. + 6. The ticket, then Slack; either failing leaves the event open for a retry.
    done_steps = store.event_steps(detection.event_id)
    errors: list[str] = list(outcome.errors)
    if containment and containment.status != "failed" and "ticket" in done_steps:
        # An earlier attempt ticketed this event before containment succeeded, or crashed after.
        errors += _tell_the_ticket(services, case, detection, containment)
    for step, run in (("ticket", _ticket_step), ("slack", _slack_step)):
        if step in done_steps:
            continue
        try:
            case = run(services, config, case, detection, classification, response, containment, context)
            store.mark_event_step(detection.event_id, step)
        except Exception as exc:
            errors.append(str(exc))
            store.update_case(case.case_id, note=f"{step} step failed: {exc}")
    outcome = replace(outcome, ticket=case.ticket_key)
    if errors:
        return replace(outcome, errors=errors)
    crash_point("respond:before_finish")
    store.finish_event(detection.event_id)
    return outcome


# ----------------------------------------------------------------------------- steps


def _contain(services: Services, case: Case, detection: Detection, select) -> tuple[Case, ContainmentResult]:
    store = services.store
    try:
        containment = contain_grant(services.aws.lambda_client(detection.layer_account_id, detection.region),
                                    detection.layer_arn, detection.version, select)
    except Exception as exc:
        # The most urgent case of all: it is still ticketed and announced, with what to run by hand.
        case = store.update_case(case.case_id, status="failed", note=f"containment failed: {exc}")
        return case, ContainmentResult("failed", (), (), 0, error=_containment_failure(exc, detection))
    newly_removed = containment.removed
    case = store.get_case(case.case_id) or case  # another process may have contained it meanwhile
    if containment.status == "already_contained" and case.status == "contained" and case.removed_statements:
        # Resumed or repeated: this case removed the grant before; report that removal.
        containment = replace(containment, status="contained", removed=case.removed_statements)
    case = store.update_case(
        case.case_id, status=containment.status, removed_statements=case.removed_statements + newly_removed,
        note=f"{containment.status}: removed {', '.join(str(s.get('Sid')) for s in newly_removed) or 'nothing new'}")
    return case, containment


def _tell_the_ticket(services: Services, case: Case, detection: Detection, containment: ContainmentResult) -> list[str]:
    if not (services.tickets and case.ticket_key):
        return []
    try:
        services.tickets.comment(case.ticket_key, render_repeat_comment(detection, containment))
    except Exception as exc:
        return [str(exc)]
    return []


def _containment_failure(exc: Exception, detection: Detection) -> str:
    return (f"{type(exc).__name__}: {str(exc)[:300]}. Remove it by hand with credentials for "
            f"{detection.layer_account_id}: aws lambda get-layer-version-policy --layer-name {detection.layer_arn} "
            f"--version-number {detection.version} --region {detection.region}, then aws lambda "
            f"remove-layer-version-permission --layer-name {detection.layer_arn} --version-number "
            f"{detection.version} --statement-id <Sid> --region {detection.region} for each public statement.")


def _contain_other_versions(store: StateStore, case: Case, lambda_client, detection: Detection) -> Case:
    """policy.contain_all_versions: public statements on every other version go too.

    Removed statements carry their version (``_LayerVersion``) so a restore puts them back.
    """
    removed: list[dict] = []
    for version in list_layer_versions(lambda_client, detection.layer_arn):
        if version == detection.version:
            continue
        result = contain_grant(lambda_client, detection.layer_arn, version, public_statements)
        removed += [dict(statement, _LayerVersion=version) for statement in result.removed]
    if not removed:
        return case
    versions = sorted({s["_LayerVersion"] for s in removed})
    return store.update_case(case.case_id, removed_statements=case.removed_statements + tuple(removed),
                             note=f"contain_all_versions: public statements removed from versions {versions}")


def _ticket_step(services, config, case, detection, classification, response, containment, context):
    if services.tickets is None:
        return case
    fields = render_ticket(case.case_id, detection, classification, response, containment, context,
                           config.jira.priorities, previous_ticket=case.previous_ticket)
    created = not case.ticket_key
    case = open_or_update_ticket(services.tickets, services.store, case, fields,
                                 render_repeat_comment(detection, containment))
    if created and case.previous_ticket:
        services.tickets.link(case.ticket_key, case.previous_ticket)
    return case


def _slack_step(services, config, case, detection, classification, response, containment, context):
    if services.chat is None or case.slack_ts:
        return case
    ticket_url = services.tickets.browse_url(case.ticket_key) if services.tickets and case.ticket_key else ""
    if response is Response.APPROVE:
        text = approval_text(detection, classification)
        blocks = approval_blocks(case.case_id, detection, classification, context, case.ticket_key, ticket_url)
    else:
        text = notification_text(detection, classification, containment)
        blocks = notification_blocks(case.case_id, detection, classification, context, containment,
                                     case.ticket_key, ticket_url)
    return post_case_message(services.chat, services.store, case, config.slack.channel, text, blocks)


def _preview(detection: Detection, services: Services, response: Response | None, select,
             outcome: Outcome) -> Outcome:
    """--dry-run: read-only AWS calls, nothing written anywhere."""
    if response is None:
        return replace(outcome, decision="trusted")
    lambda_client = services.aws.lambda_client(detection.layer_account_id, detection.region)
    context: LayerContext = services.investigator.collect(detection)
    if response is Response.REVOKE:
        preview = contain_grant(lambda_client, detection.layer_arn, detection.version, select, dry_run=True)
        decision = "contained" if preview.status == "would_contain" else preview.status
        return replace(outcome, decision=decision, removed_statements=preview.removed_sids,
                       consumers=context.consumer_arns,
                       reason=f"{outcome.reason} (dry run: would remove {', '.join(preview.removed_sids) or 'nothing'})")
    return replace(outcome, decision=DECISION_BY_RESPONSE[response], consumers=context.consumer_arns)
