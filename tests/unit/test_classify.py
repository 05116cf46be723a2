"""The classifier table: request principals and both policy statement shapes."""

import pytest

from playbooks.classify import (Allowlists, Grant, GrantKind, LayerRef, Response, Severity, classify_grant,
                                grant_from_request, grants_from_statement, response_for)

OWNER = "123456789012"
LAYER = LayerRef(f"arn:aws:lambda:us-east-1:{OWNER}:layer:payments-utils", "payments-utils", 3, OWNER)
ALLOW = Allowlists(
    own_organization_id="o-ourorg1234",
    trusted_accounts=frozenset({"555555555555"}),
    trusted_organizations=frozenset({"o-partner1234"}),
)


@pytest.mark.parametrize("principal, org, allow, kind, severity, reason_part", [
    ("*", "", ALLOW, GrantKind.PUBLIC, Severity.CRITICAL, "any AWS account"),
    ("*", "o-ourorg1234", ALLOW, GrantKind.OWN_ORGANIZATION, Severity.LOW, "our own organization"),
    ("*", "o-someone999", ALLOW, GrantKind.FOREIGN_ORGANIZATION, Severity.HIGH, "not ours"),
    ("*", "o-someone999", Allowlists(), GrantKind.FOREIGN_ORGANIZATION, Severity.HIGH, "no own_organization_id"),
    ("*", "o-partner1234", ALLOW, GrantKind.TRUSTED, Severity.INFO, "trusted_organizations"),
    ("210987654321", "", ALLOW, GrantKind.CROSS_ACCOUNT, Severity.HIGH, "does not own the layer"),
    ("arn:aws:iam::210987654321:root", "", ALLOW, GrantKind.CROSS_ACCOUNT, Severity.HIGH, "210987654321"),
    ("arn:aws:iam::210987654321:role/SomeRole", "", ALLOW, GrantKind.CROSS_ACCOUNT, Severity.HIGH, "210987654321"),
    ("not-a-principal", "", ALLOW, GrantKind.CROSS_ACCOUNT, Severity.HIGH, "unrecognised principal"),
    (OWNER, "", ALLOW, GrantKind.SAME_ACCOUNT, Severity.INFO, "owns the layer"),
    (f"arn:aws:iam::{OWNER}:root", "", ALLOW, GrantKind.SAME_ACCOUNT, Severity.INFO, "owns the layer"),
    ("555555555555", "", ALLOW, GrantKind.TRUSTED, Severity.INFO, "trusted_accounts"),
    ("arn:aws:iam::555555555555:root", "", ALLOW, GrantKind.TRUSTED, Severity.INFO, "trusted_accounts"),
])
def test_request_principals(principal, org, allow, kind, severity, reason_part):
    result = classify_grant(grant_from_request(principal, org), LAYER, allow)
    assert (result.kind, result.severity) == (kind, severity)
    assert reason_part in result.reason


@pytest.mark.parametrize("pattern", ["payments-*", "arn:aws:lambda:us-east-1:123456789012:layer:payments-utils",
                                     "*:layer:payments-utils:3"])
def test_trusted_layers_glob_matches_name_arn_or_version_arn(pattern):
    allow = Allowlists(trusted_layers=(pattern,))
    result = classify_grant(Grant("*"), LAYER, allow)
    assert result.kind is GrantKind.TRUSTED and pattern in result.reason


def test_trusted_layer_pattern_that_does_not_match_leaves_public():
    allow = Allowlists(trusted_layers=("billing-*",))
    assert classify_grant(Grant("*"), LAYER, allow).kind is GrantKind.PUBLIC


@pytest.mark.parametrize("statement, expected", [
    # The shapes real AWS returns.
    ({"Sid": "a", "Effect": "Allow", "Principal": "*", "Action": "lambda:GetLayerVersion"}, [Grant("*")]),
    ({"Sid": "a", "Effect": "Allow", "Principal": {"AWS": "*"}}, [Grant("*")]),
    ({"Sid": "a", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"}},
     [Grant("210987654321")]),
    ({"Sid": "a", "Effect": "Allow", "Principal": "*",
      "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123def4"}}}, [Grant("*", "o-abc123def4")]),
    ({"Sid": "a", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::210987654321:root", "111122223333"]}},
     [Grant("210987654321"), Grant("111122223333")]),
    # The shapes moto returns.
    ({"Sid": "a", "Effect": "Allow", "Principal": "210987654321"}, [Grant("210987654321")]),
    ({"Sid": "a", "Effect": "Allow", "Principal": "*", "OrganizationId": "o-abc123def4"},
     [Grant("*", "o-abc123def4")]),
    # Deny statements grant nothing.
    ({"Sid": "a", "Effect": "Deny", "Principal": "*"}, []),
])
def test_policy_statement_shapes(statement, expected):
    assert grants_from_statement(statement) == expected


def test_statement_shapes_classify_like_requests():
    aws_org = {"Principal": "*", "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-someone999"}}}
    moto_org = {"Principal": "*", "OrganizationId": "o-someone999"}
    kinds = {classify_grant(g, LAYER, ALLOW).kind for s in (aws_org, moto_org) for g in grants_from_statement(s)}
    assert kinds == {GrantKind.FOREIGN_ORGANIZATION}


def test_grantee_key_is_the_same_for_account_id_and_root_arn():
    assert grant_from_request("arn:aws:iam::210987654321:root").grantee == grant_from_request("210987654321").grantee
    assert Grant("*").grantee == "public"
    assert Grant("*", "o-abc123def4").grantee == "org:o-abc123def4"


@pytest.mark.parametrize("kind, response", [
    (GrantKind.PUBLIC, Response.REVOKE),
    (GrantKind.CROSS_ACCOUNT, Response.APPROVE),
    (GrantKind.FOREIGN_ORGANIZATION, Response.APPROVE),
    (GrantKind.OWN_ORGANIZATION, Response.NOTIFY),
    (GrantKind.SAME_ACCOUNT, Response.NOTIFY),
    (GrantKind.TRUSTED, None),
])
def test_default_responses(kind, response):
    assert response_for(kind, {}) == response


def test_configured_response_wins():
    assert response_for(GrantKind.CROSS_ACCOUNT, {GrantKind.CROSS_ACCOUNT: Response.REVOKE}) is Response.REVOKE
