"""Containment and context collection against moto (mock_aws) and botocore's Stubber."""

import io
import json
import zipfile

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from actions.collect_context import InvestigationSettings, Investigator, consumers_of_layer
from integrations.aws import AwsClients
from integrations.sandbox.world import cloudtrail_record
from playbooks.detection import detection_from_record
from actions.contain import ContainmentFailed, case_statements, contain_grant, grantee_statements, public_statements
from integrations.retry import BOTOCORE_CONFIG
from integrations.sandbox.aws_server import FAKE_CREDENTIALS, apply_moto_fixes

REGION = "us-east-1"
LAYER_ARN = "arn:aws:lambda:us-east-1:123456789012:layer:utils"


@pytest.fixture
def lam(monkeypatch):
    apply_moto_fixes()
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("lambda", region_name=REGION, config=BOTOCORE_CONFIG)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("python/u.py", "X = 1\n")
        client.publish_layer_version(LayerName="utils", Content={"ZipFile": archive.getvalue()},
                                     CompatibleRuntimes=["python3.11"], Description="utils")
        yield client


def grant(client, sid, principal, org=""):
    kwargs = dict(LayerName="utils", VersionNumber=1, StatementId=sid, Action="lambda:GetLayerVersion",
                  Principal=principal)
    if org:
        kwargs["OrganizationId"] = org
    client.add_layer_version_permission(**kwargs)


def sids(client):
    try:
        policy = json.loads(client.get_layer_version_policy(LayerName="utils", VersionNumber=1)["Policy"])
    except client.exceptions.ResourceNotFoundException:
        return []
    return [s["Sid"] for s in policy["Statement"]]


def test_removes_every_public_statement_and_only_those(lam):
    grant(lam, "pub-1", "*")
    grant(lam, "partner", "210987654321")
    grant(lam, "org", "*", "o-abc123def4")
    grant(lam, "pub-2", "*")
    result = contain_grant(lam, LAYER_ARN, 1, public_statements)
    assert result.status == "contained"
    assert result.removed_sids == ["pub-1", "pub-2"]
    assert sids(lam) == ["partner", "org"]
    assert result.removed[0]["Principal"] == "*"  # verbatim, restorable
    assert [s["Sid"] for s in result.policy_after] == ["partner", "org"]


def test_one_public_statement_takes_three_calls(lam):
    grant(lam, "pub", "*")
    result = contain_grant(lam, LAYER_ARN, 1, public_statements)
    assert (result.status, result.aws_calls) == ("contained", 3)
    assert sids(lam) == []


def test_grant_already_gone_counts_as_contained(lam):
    grant(lam, "partner", "210987654321")
    result = contain_grant(lam, LAYER_ARN, 1, public_statements)
    assert (result.status, result.removed) == ("already_contained", ())


def test_dry_run_changes_nothing(lam):
    grant(lam, "pub", "*")
    result = contain_grant(lam, LAYER_ARN, 1, public_statements, dry_run=True)
    assert result.status == "would_contain" and result.removed_sids == ["pub"]
    assert sids(lam) == ["pub"]


def test_grantee_target_removes_both_principal_spellings(lam):
    grant(lam, "a", "210987654321")
    grant(lam, "b", "arn:aws:iam::210987654321:root")
    grant(lam, "c", "111122223333")
    result = contain_grant(lam, LAYER_ARN, 1, grantee_statements("account:210987654321"))
    assert result.removed_sids == ["a", "b"]
    assert sids(lam) == ["c"]


def test_policy_changed_between_read_and_remove_is_re_read_and_re_decided(lam):
    grant(lam, "pub", "*")
    raced = []

    def someone_adds_another_public_grant(**_):
        if not raced:
            raced.append(True)
            grant(lam, "pub-late", "*")  # moves the revision id: our guarded remove must fail

    lam.meta.events.register("before-call.lambda.RemoveLayerVersionPermission", someone_adds_another_public_grant)
    result = contain_grant(lam, LAYER_ARN, 1, public_statements)
    assert raced and result.status == "contained"
    assert sorted(result.removed_sids) == ["pub", "pub-late"]
    assert sids(lam) == []


def test_statement_removed_by_someone_else_meanwhile(lam):
    grant(lam, "pub", "*")
    other = boto3.client("lambda", region_name=REGION)

    def someone_removes_it_first(**_):
        if sids(other):
            other.remove_layer_version_permission(LayerName="utils", VersionNumber=1, StatementId="pub")

    lam.meta.events.register("before-call.lambda.RemoveLayerVersionPermission", someone_removes_it_first)
    result = contain_grant(lam, LAYER_ARN, 1, public_statements)
    assert result.status == "already_contained"
    assert sids(lam) == []


def test_real_aws_policy_shapes_with_stubber():
    """AWS writes principals as {"AWS": "arn:...:root"} and orgs as a Condition; the removal carries RevisionId."""
    client = boto3.client("lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    policy = {"Version": "2012-10-17", "Id": "default", "Statement": [
        {"Sid": "xaccount", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::223456789012:root"},
         "Action": "lambda:GetLayerVersion", "Resource": f"{LAYER_ARN}:1"},
        {"Sid": "org", "Effect": "Allow", "Principal": "*", "Action": "lambda:GetLayerVersion",
         "Resource": f"{LAYER_ARN}:1", "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123def4"}}},
        {"Sid": "world", "Effect": "Allow", "Principal": "*", "Action": "lambda:GetLayerVersion",
         "Resource": f"{LAYER_ARN}:1"},
    ]}
    after = dict(policy, Statement=policy["Statement"][:2])
    with Stubber(client) as stub:
        stub.add_response("get_layer_version_policy", {"Policy": json.dumps(policy), "RevisionId": "rev-1"},
                          {"LayerName": LAYER_ARN, "VersionNumber": 1})
        stub.add_response("remove_layer_version_permission", {},
                          {"LayerName": LAYER_ARN, "VersionNumber": 1, "StatementId": "world", "RevisionId": "rev-1"})
        stub.add_response("get_layer_version_policy", {"Policy": json.dumps(after), "RevisionId": "rev-2"},
                          {"LayerName": LAYER_ARN, "VersionNumber": 1})
        result = contain_grant(client, LAYER_ARN, 1, public_statements)
        stub.assert_no_pending_responses()
    assert result.removed_sids == ["world"]


def test_stale_revision_from_aws_is_retried_with_stubber():
    client = boto3.client("lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    public = {"Sid": "world", "Effect": "Allow", "Principal": "*", "Action": "lambda:GetLayerVersion"}
    with Stubber(client) as stub:
        policy = json.dumps({"Statement": [public]})
        stub.add_response("get_layer_version_policy", {"Policy": policy, "RevisionId": "rev-1"})
        stub.add_client_error("remove_layer_version_permission", "PreconditionFailedException", http_status_code=412,
                              expected_params={"LayerName": LAYER_ARN, "VersionNumber": 1, "StatementId": "world",
                                               "RevisionId": "rev-1"})
        stub.add_response("get_layer_version_policy", {"Policy": policy, "RevisionId": "rev-2"})
        stub.add_response("remove_layer_version_permission", {},
                          {"LayerName": LAYER_ARN, "VersionNumber": 1, "StatementId": "world", "RevisionId": "rev-2"})
        stub.add_client_error("get_layer_version_policy", "ResourceNotFoundException", http_status_code=404,
                              service_message="No policy is associated with the given resource.")
        result = contain_grant(client, LAYER_ARN, 1, public_statements)
    assert result.status == "contained" and result.aws_calls == 5


def test_a_policy_that_never_settles_fails_loudly():
    client = boto3.client("lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    public = {"Sid": "world", "Effect": "Allow", "Principal": "*"}
    with Stubber(client) as stub:
        for _ in range(8):
            stub.add_response("get_layer_version_policy", {"Policy": json.dumps({"Statement": [public]}),
                                                           "RevisionId": "r"})
            stub.add_client_error("remove_layer_version_permission", "PreconditionFailedException",
                                  http_status_code=412)
        with pytest.raises(ContainmentFailed, match="still grants access"):
            contain_grant(client, LAYER_ARN, 1, public_statements)


# ----------------------------------------------------------------------------- context


def test_consumers_mark_pinned_versions():
    functions = [
        {"FunctionArn": "arn:f:a:$LATEST", "FunctionName": "a", "Version": "$LATEST",
         "Layers": [{"Arn": f"{LAYER_ARN}:1"}]},
        {"FunctionArn": "arn:f:b:3", "FunctionName": "b", "Version": "3", "Layers": [{"Arn": f"{LAYER_ARN}:2"}]},
        {"FunctionArn": "arn:f:c", "FunctionName": "c", "Version": "$LATEST",
         "Layers": [{"Arn": f"{LAYER_ARN}-other:1"}]},
        {"FunctionArn": "arn:f:d", "FunctionName": "d"},
    ]
    consumers = consumers_of_layer(functions, LAYER_ARN, 1)
    assert [(c.function_name, c.pins_granted_version) for c in consumers] == [("a", True), ("b", False)]


def test_collect_context_lists_functions_and_their_published_versions(lam):
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("h.py", "def h(e, c): pass\n")
    lam.create_function(FunctionName="checkout", Runtime="python3.11", Role=role, Handler="h.h",
                        Code={"ZipFile": archive.getvalue()}, Layers=[f"{LAYER_ARN}:1"], Publish=True)
    lam.create_alias(FunctionName="checkout", Name="prod", FunctionVersion="1")
    lam.create_alias(FunctionName="checkout", Name="canary", FunctionVersion="$LATEST")
    lam.create_function(FunctionName="unrelated", Runtime="python3.11", Role=role, Handler="h.h",
                        Code={"ZipFile": archive.getvalue()})
    grant(lam, "partner", "210987654321")
    context = quiet_investigator().collect(detection_of("utils"))
    assert context.errors == ()
    assert context.layer_version["Description"] == "utils"
    assert [s["Sid"] for s in context.policy.statements] == ["partner"]
    assert sorted((c.version, c.aliases) for c in context.consumers) == [("$LATEST", ("canary",)), ("1", ("prod",))]
    assert all(c.pins_granted_version for c in context.consumers)


def test_sandbox_pages_list_functions_by_50_like_aws_with_versions_across_pages(lam):
    """The consumer scan's page count (and the benchmark) rests on the sandbox paging as AWS does."""
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("h.py", "def h(e, c): pass\n")
    expected = set()
    for index in range(60):
        name = f"fn-{index:02d}"
        published = index in (48, 49, 50)  # their versions straddle the first page's end
        lam.create_function(FunctionName=name, Runtime="python3.11", Role=role, Handler="h.h",
                            Code={"ZipFile": archive.getvalue()}, Publish=published)
        expected |= {(name, "$LATEST")} | ({(name, "1")} if published else set())
    pages = []
    marker = {}
    while True:
        page = lam.list_functions(FunctionVersion="ALL", MaxItems=50, **marker)
        pages.append([(f["FunctionName"], f["Version"]) for f in page["Functions"]])
        if "NextMarker" not in page:
            break
        marker = {"Marker": page["NextMarker"]}
    assert [len(page) for page in pages] == [50, 13]
    assert sum(pages, []) == sorted(expected, key=lambda e: (e[0], e[1] != "$LATEST"))
    assert len(lam.list_functions(MaxItems=50)["Functions"]) == 50


def test_collect_context_reports_what_failed(lam):
    context = quiet_investigator().collect(detection_of("missing"))
    assert context.layer_version is None
    assert context.policy.statements == ()


def quiet_investigator():
    """moto implements neither LookupEvents nor real content locations: those are tested apart."""
    return Investigator(AwsClients(), InvestigationSettings(lookup_activity=False, scan_secrets=False))


def detection_of(layer):
    return detection_from_record(cloudtrail_record(layer, 1, "210987654321", "partner"), "test")


def test_case_statements_prefer_the_sid_and_fall_back_to_the_grantee():
    statements = [
        {"Sid": "partner", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"}},
        {"Sid": "partner-copy", "Effect": "Allow", "Principal": "210987654321"},
        {"Sid": "other", "Effect": "Allow", "Principal": "111122223333"},
    ]
    assert [s["Sid"] for s in case_statements("partner", "account:210987654321")(statements)] == ["partner"]
    # The Sid changed: every statement for the same grantee, never someone else's.
    assert [s["Sid"] for s in case_statements("renamed", "account:210987654321")(statements)] == [
        "partner", "partner-copy"]
    # A Sid reused for another grantee is not the case's statement.
    assert case_statements("other", "account:210987654321")(statements[2:]) == []


def test_contain_all_versions_removes_public_grants_everywhere_and_restore_puts_them_back(lam):
    from actions.contain import restore_statements
    from integrations.state import Case, SQLiteStateStore
    from playbooks.layer_exposure import _contain_other_versions

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("python/u.py", "X = 2\n")
    lam.publish_layer_version(LayerName="utils", Content={"ZipFile": archive.getvalue()})
    lam.add_layer_version_permission(LayerName="utils", VersionNumber=2, StatementId="pub-v2",
                                     Action="lambda:GetLayerVersion", Principal="*")
    grant(lam, "pub-v1", "*")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStateStore(f"{tmp}/s.sqlite")
        case, _ = store.open_case(Case("LG-1", "k", f"{LAYER_ARN}:1", "public", "public", "critical"))
        first = contain_grant(lam, LAYER_ARN, 1, public_statements)
        case = store.update_case("LG-1", removed_statements=first.removed)
        case = _contain_other_versions(store, case, lam, detection_of("utils"))
    assert sids(lam) == []
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_policy(LayerName="utils", VersionNumber=2)
    assert [(s["Sid"], s.get("_LayerVersion")) for s in case.removed_statements] == [("pub-v1", None), ("pub-v2", 2)]

    assert restore_statements(lam, LAYER_ARN, 1, case.removed_statements) == ["pub-v1", "pub-v2"]
    assert sids(lam) == ["pub-v1"]
    v2 = json.loads(lam.get_layer_version_policy(LayerName="utils", VersionNumber=2)["Policy"])["Statement"]
    assert [(s["Sid"], s["Principal"]) for s in v2] == [("pub-v2", "*")]
