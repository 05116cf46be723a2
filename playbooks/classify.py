"""Classify a layer grant: who can now use this layer version, and how bad is that (pure)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Mapping

ACCOUNT_ID = re.compile(r"^\d{12}$")
ROOT_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::(\d{12}):root$")
ANY_IAM_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:(?:iam|sts)::(\d{12}):")


class GrantKind(str, Enum):
    PUBLIC = "public"
    OWN_ORGANIZATION = "own-organization"
    FOREIGN_ORGANIZATION = "foreign-organization"
    CROSS_ACCOUNT = "cross-account"
    SAME_ACCOUNT = "same-account"
    TRUSTED = "trusted"


class Severity(str, Enum):
    CRITICAL = "critical"
    HIGH = "high"
    LOW = "low"
    INFO = "info"


class Response(str, Enum):
    REVOKE = "revoke"
    APPROVE = "approve"
    NOTIFY = "notify"


SEVERITY = {
    GrantKind.PUBLIC: Severity.CRITICAL,
    GrantKind.FOREIGN_ORGANIZATION: Severity.HIGH,
    GrantKind.CROSS_ACCOUNT: Severity.HIGH,
    GrantKind.OWN_ORGANIZATION: Severity.LOW,
    GrantKind.SAME_ACCOUNT: Severity.INFO,
    GrantKind.TRUSTED: Severity.INFO,
}

DEFAULT_RESPONSES: Mapping[GrantKind, Response] = {
    GrantKind.PUBLIC: Response.REVOKE,
    GrantKind.FOREIGN_ORGANIZATION: Response.APPROVE,
    GrantKind.CROSS_ACCOUNT: Response.APPROVE,
    GrantKind.OWN_ORGANIZATION: Response.NOTIFY,
    GrantKind.SAME_ACCOUNT: Response.NOTIFY,
}


@dataclass(frozen=True)
class Grant:
    """Who a statement lets use the layer: ``*`` (anyone) or one account, maybe within an org."""

    principal: str
    organization_id: str = ""

    @property
    def grantee(self) -> str:
        """Stable key of the grantee; a case is one layer version + one grantee."""
        if self.principal == "*":
            return f"org:{self.organization_id}" if self.organization_id else "public"
        if self.organization_id:
            return f"account:{self.principal}+org:{self.organization_id}"
        return f"account:{self.principal}" if ACCOUNT_ID.match(self.principal) else f"principal:{self.principal}"


@dataclass(frozen=True)
class Allowlists:
    own_organization_id: str = ""
    trusted_accounts: frozenset[str] = frozenset()
    trusted_organizations: frozenset[str] = frozenset()
    trusted_layers: tuple[str, ...] = ()
    # (layer ARN, grantee) -> why: grants an approver chose to keep, until they expire.
    kept_grants: Mapping[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class Classification:
    kind: GrantKind
    severity: Severity
    reason: str


@dataclass(frozen=True)
class LayerRef:
    arn: str  # unversioned
    name: str
    version: int
    owner_account: str = field(default="")

    @property
    def version_arn(self) -> str:
        return f"{self.arn}:{self.version}"


def normalise_principal(principal: str) -> str:
    """``arn:aws:iam::ID:root`` and ``ID`` are the same grantee; ``*`` stays ``*``."""
    principal = principal.strip()
    root = ROOT_ARN.match(principal)
    return root.group(1) if root else principal


def grant_from_request(principal: str, organization_id: str = "") -> Grant:
    return Grant(normalise_principal(principal), organization_id.strip())


def grants_from_statement(statement: Mapping[str, Any]) -> list[Grant]:
    """The grants of one policy statement, in the shape AWS returns or the one moto returns.

    AWS: ``"Principal": "*"`` or ``{"AWS": "arn:aws:iam::ID:root"}``, organization in
    ``Condition.StringEquals["aws:PrincipalOrgID"]``. moto: bare account id and an
    ``OrganizationId`` key on the statement.
    """
    if statement.get("Effect", "Allow") != "Allow":
        return []
    principals = statement.get("Principal")
    if isinstance(principals, Mapping):
        principals = principals.get("AWS", [])
    if isinstance(principals, str):
        principals = [principals]
    if not isinstance(principals, list):
        return []
    orgs = _organization_ids(statement)
    return [Grant(normalise_principal(str(p)), org) for p in principals for org in (orgs or [""])]


def _organization_ids(statement: Mapping[str, Any]) -> list[str]:
    if statement.get("OrganizationId"):
        return [str(statement["OrganizationId"])]
    conditions = statement.get("Condition") or {}
    for operator in ("StringEquals", "ForAnyValue:StringEquals", "StringLike"):
        block = conditions.get(operator) if isinstance(conditions, Mapping) else None
        if not isinstance(block, Mapping):
            continue
        for key, value in block.items():
            if key.lower() == "aws:principalorgid":
                return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return []


def classify_grant(grant: Grant, layer: LayerRef, allow: Allowlists) -> Classification:
    kind, reason = _kind_and_reason(grant, layer, allow)
    return Classification(kind, SEVERITY[kind], reason)


def _kind_and_reason(grant: Grant, layer: LayerRef, allow: Allowlists) -> tuple[GrantKind, str]:
    kept = allow.kept_grants.get((layer.arn, grant.grantee))
    if kept:
        return GrantKind.TRUSTED, kept
    for pattern in allow.trusted_layers:
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in (layer.name, layer.arn, layer.version_arn)):
            return GrantKind.TRUSTED, f"layer matches trusted_layers pattern {pattern!r}"

    org = grant.organization_id
    if grant.principal == "*":
        if not org:
            return GrantKind.PUBLIC, "principal '*' without an organization: any AWS account can use this layer version"
        if org in allow.trusted_organizations:
            return GrantKind.TRUSTED, f"organization {org} is in trusted_organizations"
        if allow.own_organization_id and org == allow.own_organization_id:
            return GrantKind.OWN_ORGANIZATION, f"every account of our own organization {org} can use this layer version"
        if not allow.own_organization_id:
            return GrantKind.FOREIGN_ORGANIZATION, (
                f"every account of organization {org} can use this layer version "
                "(no own_organization_id is configured, so it is treated as foreign)")
        return GrantKind.FOREIGN_ORGANIZATION, f"every account of organization {org}, which is not ours, can use this layer version"

    account = grant.principal if ACCOUNT_ID.match(grant.principal) else _account_of_arn(grant.principal)
    if account is None:
        return GrantKind.CROSS_ACCOUNT, f"unrecognised principal {grant.principal!r}: treated as another account"
    if account in allow.trusted_accounts:
        return GrantKind.TRUSTED, f"account {account} is in trusted_accounts"
    if org and org in allow.trusted_organizations:
        return GrantKind.TRUSTED, f"organization {org} is in trusted_organizations"
    if account == layer.owner_account:
        return GrantKind.SAME_ACCOUNT, f"account {account} owns the layer"
    return GrantKind.CROSS_ACCOUNT, f"account {account} does not own the layer and is not trusted"


def _account_of_arn(principal: str) -> str | None:
    match = ANY_IAM_ARN.match(principal)
    return match.group(1) if match else None


def response_for(kind: GrantKind, responses: Mapping[GrantKind, Response]) -> Response | None:
    """What the playbook does for this kind of grant; trusted grants need nothing."""
    if kind is GrantKind.TRUSTED:
        return None
    return responses.get(kind, DEFAULT_RESPONSES[kind])


def grants_matching(statements: Iterable[Mapping[str, Any]], predicate) -> list[Mapping[str, Any]]:
    """Statements with at least one grant for which ``predicate(grant)`` holds."""
    return [s for s in statements if any(predicate(g) for g in grants_from_statement(s))]
