"""Contain: remove the statements that grant the case's grantee, then verify.

Only AWS is called here, so nothing (Jira, Slack, context) can delay the removal.
The policy is re-read after every removal: that read verifies the removal and gives
the fresh revision id that guards the next one. A changed policy (stale revision)
is re-read and re-decided; a statement already gone counts as contained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from integrations.aws import (PolicyChanged, StatementAlreadyGone, StatementExists, add_statement, get_layer_policy,
                              remove_statement)
from playbooks.classify import Grant, grants_from_statement, grants_matching

Statements = Sequence[Mapping]
Selector = Callable[[Statements], list[Mapping]]
MAX_ROUNDS = 8


class ContainmentFailed(RuntimeError):
    """The grant could not be removed or verified as removed."""


@dataclass(frozen=True)
class ContainmentResult:
    status: str  # contained | already_contained | would_contain | failed
    removed: tuple[dict, ...]  # verbatim, so they can be restored
    policy_after: tuple[dict, ...]
    aws_calls: int
    error: str = ""  # when failed: what went wrong and what to run by hand

    @property
    def removed_sids(self) -> list[str]:
        return [str(s.get("Sid", "")) for s in self.removed]


def is_public(grant: Grant) -> bool:
    return grant.principal == "*" and not grant.organization_id


def public_statements(statements: Statements) -> list[Mapping]:
    """Every statement that lets anyone use the layer version (not only the event's)."""
    return grants_matching(statements, is_public)


def grantee_statements(grantee: str) -> Selector:
    return lambda statements: grants_matching(statements, lambda grant: grant.grantee == grantee)


def case_statements(statement_id: str, grantee: str) -> Selector:
    """The case's own statement by Sid; if its Sid changed, whatever grants the same grantee."""
    by_grantee = grantee_statements(grantee)

    def select(statements: Statements) -> list[Mapping]:
        matching = by_grantee(statements)
        by_sid = [s for s in matching if statement_id and s.get("Sid") == statement_id]
        return by_sid or matching
    return select


def contain_grant(lambda_client, layer_arn: str, version: int, select: Selector,
                  dry_run: bool = False) -> ContainmentResult:
    removed: list[dict] = []
    calls = 0
    for _ in range(MAX_ROUNDS):
        policy = get_layer_policy(lambda_client, layer_arn, version)
        calls += 1
        pending = select(policy.statements)
        if not pending:
            status = "contained" if removed else "already_contained"
            return ContainmentResult(status, tuple(removed), policy.statements, calls)
        if dry_run:
            return ContainmentResult("would_contain", tuple(dict(s) for s in pending), policy.statements, calls)
        statement = pending[0]
        sid = statement.get("Sid")
        if not sid:
            raise ContainmentFailed(f"a statement granting access on {layer_arn}:{version} has no Sid and cannot be removed")
        try:
            calls += 1
            remove_statement(lambda_client, layer_arn, version, str(sid), policy.revision_id)
            removed.append(dict(statement))
        except StatementAlreadyGone:
            pass  # someone else removed it: the next read decides
        except PolicyChanged:
            pass  # the policy moved under us: re-read and re-decide
    raise ContainmentFailed(f"{layer_arn}:{version} still grants access after {MAX_ROUNDS} attempts")


def restore_statements(lambda_client, layer_arn: str, version: int, statements: Sequence[Mapping]) -> list[str]:
    """Re-add removed statements exactly (same Sid, principal, organization); returns the Sids restored."""
    present: dict[int, set[str]] = {}
    restored = []
    for statement in statements:
        # Statements removed from other versions (policy.contain_all_versions) carry theirs.
        target = int(statement.get("_LayerVersion", version))
        if target not in present:
            present[target] = {str(s.get("Sid")) for s in get_layer_policy(lambda_client, layer_arn, target).statements}
        if str(statement.get("Sid")) in present[target]:
            restored.append(str(statement["Sid"]))  # restored by an earlier attempt
            continue
        grants = grants_from_statement(statement)
        if len(grants) != 1:
            raise ContainmentFailed(f"statement {statement.get('Sid')!r} cannot be restored: {len(grants)} principals")
        grant = grants[0]
        try:
            add_statement(lambda_client, layer_arn, target, str(statement["Sid"]), grant.principal,
                          grant.organization_id, str(statement.get("Action") or "lambda:GetLayerVersion"))
        except StatementExists:
            pass  # restored by an earlier attempt
        restored.append(str(statement["Sid"]))
    return restored
