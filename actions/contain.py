"""Contain: remove the statements that grant the case's grantee, then verify.

Only AWS is called here, so nothing (Jira, Slack, context) can delay the removal.
The policy is re-read after every removal: that read verifies the removal and gives
the fresh revision id that guards the next one. A changed policy (stale revision)
is re-read and re-decided; a statement already gone counts as contained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from integrations.aws import PolicyChanged, StatementAlreadyGone, get_layer_policy, remove_statement
from playbooks.classify import Grant, grants_matching

GrantPredicate = Callable[[Grant], bool]
MAX_ROUNDS = 8


class ContainmentFailed(RuntimeError):
    """The grant could not be removed or verified as removed."""


@dataclass(frozen=True)
class ContainmentResult:
    status: str  # contained | already_contained | would_contain
    removed: tuple[dict, ...]  # verbatim, so they can be restored
    policy_after: tuple[dict, ...]
    aws_calls: int

    @property
    def removed_sids(self) -> list[str]:
        return [str(s.get("Sid", "")) for s in self.removed]


def is_public(grant: Grant) -> bool:
    return grant.principal == "*" and not grant.organization_id


def is_grantee(grantee: str) -> GrantPredicate:
    return lambda grant: grant.grantee == grantee


def statements_to_remove(statements: Sequence[Mapping], target: GrantPredicate) -> list[Mapping]:
    return grants_matching(statements, target)


def contain_grant(lambda_client, layer_arn: str, version: int, target: GrantPredicate,
                  dry_run: bool = False) -> ContainmentResult:
    removed: list[dict] = []
    calls = 0
    for _ in range(MAX_ROUNDS):
        policy = get_layer_policy(lambda_client, layer_arn, version)
        calls += 1
        pending = statements_to_remove(policy.statements, target)
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
