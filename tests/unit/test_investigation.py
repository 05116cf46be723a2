"""Investigation: consumers across accounts (Stubber), related activity (Stubber for
LookupEvents), secrets in layer content, actor profiles, and what could not be collected."""

import io
import json
import threading
import zipfile
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from actions.actor_profile import profile_actor, source_kind, tool_from_user_agent
from actions.collect_context import InvestigationSettings, Investigator
from actions.consumers import FunctionInventory, consumers_of_layer, find_consumers
from actions.related_activity import RELATED_EVENT_NAMES, related_activity, relate
from actions.scan_layer import Limits, mask, scan_layer_zip
from actions.ticket import render_ticket
from integrations.aws import AwsClients, RateLimiter, lookup_events
from integrations.http_server import HttpServer, Reply
from integrations.sandbox.world import cloudtrail_record
from playbooks.config import DEFAULT_PRIORITIES
from playbooks.detection import detection_from_record
from playbooks.layer_exposure import assess
from tests.conftest import load_sample
from tests.unit.test_config import minimal_config

REGION = "us-east-1"
OWNER, PARTNER, LOCKED = "123456789012", "210987654321", "333333333333"
LAYER_ARN = f"arn:aws:lambda:{REGION}:{OWNER}:layer:utils"


def lambda_client():
    return boto3.client("lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")


def function(account, name, version="$LATEST", layers=()):
    suffix = f":{version}" if version != "$LATEST" else ""
    return {"FunctionName": name, "FunctionArn": f"arn:aws:lambda:{REGION}:{account}:function:{name}{suffix}",
            "Version": version, "Layers": [{"Arn": arn, "CodeSize": 10} for arn in layers]}


class StubbedAccounts:
    """One Stubber-checked Lambda client per account, standing in for assumed-role sessions."""

    def __init__(self):
        self.clients: dict[str, object] = {}
        self.stubs: dict[str, Stubber] = {}

    def add(self, account):
        client = lambda_client()
        self.clients[account] = client
        self.stubs[account] = Stubber(client)
        self.stubs[account].activate()
        return self.stubs[account]

    def lambda_client(self, account_id, region):
        if account_id not in self.clients:
            raise PermissionError(f"cannot assume LayerGuardResponder in {account_id}")
        return self.clients[account_id]


def test_consumers_across_accounts_pages_aliases_and_failures():
    accounts = StubbedAccounts()
    own = accounts.add(OWNER)
    own.add_response("list_functions", {"Functions": [function(OWNER, "api", layers=[f"{LAYER_ARN}:1"])],
                                        "NextMarker": "page-2"}, {"FunctionVersion": "ALL", "MaxItems": 50})
    own.add_response("list_functions", {"Functions": [function(OWNER, "api", "3", [f"{LAYER_ARN}:2"]),
                                                      function(OWNER, "other")]},
                     {"FunctionVersion": "ALL", "MaxItems": 50, "Marker": "page-2"})
    own.add_response("list_aliases", {"Aliases": [{"Name": "prod", "FunctionVersion": "3", "AliasArn": "a"}]},
                     {"FunctionName": "api"})
    partner = accounts.add(PARTNER)  # the layer is shared there: its functions can use it
    partner.add_response("list_functions", {"Functions": [function(PARTNER, "billing", layers=[f"{LAYER_ARN}:1"])]},
                         {"FunctionVersion": "ALL", "MaxItems": 50})

    inventory = FunctionInventory(accounts)
    consumers, errors = find_consumers(inventory, [OWNER, PARTNER, LOCKED], REGION, LAYER_ARN, 1)

    assert sorted((c.account_id, c.function_name, c.version, c.pins_granted_version, c.aliases) for c in consumers) == [
        (OWNER, "api", "$LATEST", True, ()),
        (OWNER, "api", "3", False, ("prod",)),
        (PARTNER, "billing", "$LATEST", True, ()),
    ]
    [error] = errors
    assert error.startswith(f"account {LOCKED}: functions could not be listed")
    assert "aws lambda list-functions --function-version ALL --region us-east-1" in error
    for stub in accounts.stubs.values():
        stub.assert_no_pending_responses()


def test_inventory_is_reused_within_its_ttl_and_scanned_once_under_a_burst():
    now = [0.0]
    calls = []

    class Counting:
        def lambda_client(self, account_id, region):
            client = lambda_client()
            client.meta.events.register("provide-client-params.lambda.ListFunctions", lambda **_: calls.append(1))
            stub = Stubber(client)
            stub.add_response("list_functions", {"Functions": [function(OWNER, "f", layers=[f"{LAYER_ARN}:1"])]})
            stub.activate()
            return client

    inventory = FunctionInventory(Counting(), ttl_seconds=60, clock=lambda: now[0])
    threads = [threading.Thread(target=inventory.functions, args=(OWNER, REGION)) for _ in range(20)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert inventory.scans == 1 and len(calls) == 1
    now[0] = 61
    inventory.functions(OWNER, REGION)
    assert inventory.scans == 2


def test_organization_accounts_are_listed_once_for_a_burst_of_detections(monkeypatch):
    """aws.accounts: organization. moto's Organizations holds the accounts; a burst of
    detections lists them once, as it scans each account's functions once."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        organizations = boto3.client("organizations", region_name="us-east-1")
        organizations.create_organization(FeatureSet="ALL")
        member = organizations.create_account(AccountName="payments", Email="payments@example.com")
        member_id = organizations.describe_create_account_status(
            CreateAccountRequestId=member["CreateAccountStatus"]["Id"])["CreateAccountStatus"]["AccountId"]
        listings = []
        aws = AwsClients()
        aws.client("organizations", "", "us-east-1").meta.events.register(
            "provide-client-params.organizations.ListAccounts", lambda **_: listings.append(1))
        investigator = Investigator(aws, InvestigationSettings(organization_accounts=True))
        detection = detection_from_record(cloudtrail_record("utils", 1, "*", "pub"), "t")
        for _ in range(5):
            errors = []
            accounts = investigator.accounts_for(detection, errors)
            assert errors == [] and accounts[0] == detection.layer_account_id and member_id in accounts
    assert len(listings) == 1


def test_ten_thousand_functions_are_matched_in_one_pass():
    functions = [function(OWNER, f"fn-{i}", layers=[f"{LAYER_ARN}:{1 + i % 3}"] if i % 10 == 0 else [])
                 for i in range(10_000)]
    consumers = consumers_of_layer(functions, LAYER_ARN, 1)
    assert len(consumers) == 1000
    assert sum(c.pins_granted_version for c in consumers) == 334


# ----------------------------------------------------------------------------- related activity


def trail_event(name, params, actor="arn:aws:iam::123456789012:user/dev-alice", event_id="e", at="2026-12-04T08:00:00Z"):
    record = {"eventName": name, "eventTime": at, "eventID": event_id, "requestParameters": params,
              "userIdentity": {"arn": actor}}
    return {"EventId": event_id, "EventName": name, "CloudTrailEvent": json.dumps(record)}


def test_related_activity_timeline_with_stubber():
    detection = detection_from_record(cloudtrail_record("utils", 1, "*", "pub", event_id="the-grant"), "t")
    client = boto3.client("cloudtrail", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    moment = datetime(2026, 12, 4, 9, 15, tzinfo=timezone.utc)
    responses = {
        "PublishLayerVersion20181031": [trail_event("PublishLayerVersion20181031",
                                                    {"layerName": "utils", "versionNumber": 1}, event_id="pub",
                                                    at="2026-12-04T08:59:00Z")],
        "AddLayerVersionPermission20181031": [
            trail_event("AddLayerVersionPermission20181031", {"layerName": "utils", "principal": "*"},
                        event_id="the-grant"),  # the detection itself is not "related"
            trail_event("AddLayerVersionPermission20181031", {"layerName": "other", "principal": "999999999999"},
                        event_id="grant-2", at="2026-12-04T09:05:00Z"),
            trail_event("AddLayerVersionPermission20181031", {"layerName": "other", "principal": "*"},
                        actor="arn:aws:iam::123456789012:user/someone-else", event_id="unrelated")],
        "UpdateFunctionConfiguration20150331v2": [trail_event(
            "UpdateFunctionConfiguration20150331v2", {"functionName": "api", "layers": [f"{LAYER_ARN}:1"]},
            event_id="attach", at="2026-12-04T09:10:00Z")],
    }
    with Stubber(client) as stub:
        for name in RELATED_EVENT_NAMES:
            stub.add_response("lookup_events", {"Events": responses.get(name, [])}, {
                "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": name}],
                "StartTime": moment - timedelta(hours=24), "EndTime": moment + timedelta(hours=1),
                "MaxResults": 50})
        timeline = related_activity(client, detection, timedelta(hours=24), timedelta(hours=1))
        stub.assert_no_pending_responses()
    assert [(e.event_id, e.summary) for e in timeline] == [
        ("pub", "PublishLayerVersion on this layer (version 1)"),
        ("grant-2", "another grant on layer other to 999999999999 by the same actor"),
        ("attach", "function api attached this layer"),
    ]


def test_lookup_events_respects_two_calls_a_second():
    clock = [0.0]
    waits = []
    limiter = RateLimiter(2.0, clock=lambda: clock[0], sleep=lambda s: waits.append(s))
    client = boto3.client("cloudtrail", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        for token in ("a", "b", None):
            stub.add_response("lookup_events", {"Events": [], **({"NextToken": token} if token else {})})
        lookup_events(client, "PublishLayerVersion20181031", datetime.now(timezone.utc) - timedelta(hours=1),
                      datetime.now(timezone.utc), limiter=limiter)
    assert waits == [0.5, 1.0]  # three calls at t=0 cannot all go at once: 0, +0.5, +1.0


def test_relate_ignores_other_layers_and_actors():
    detection = detection_from_record(cloudtrail_record("utils", 1, "*", "pub"), "t")
    assert relate({"eventName": "DeleteLayerVersion20181031", "requestParameters": {"layerName": "x"}}, detection) is None
    assert relate({"eventName": "CreateFunction20150331", "requestParameters": {"layers": ["arn:other:1"]}},
                  detection) is None


# ----------------------------------------------------------------------------- secrets


def zip_of(files: dict[str, bytes | str], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


PLANTED = {
    "python/settings.py": 'AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"\nDEBUG = False\n',
    "nodejs/node_modules/cfg/index.js": 'module.exports = { slack: "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx" }\n',
    "python/clean.py": "def add(a, b):\n    return a + b\n",
}


def test_planted_secrets_are_found_with_file_line_type_and_masked_hint():
    scan = scan_layer_zip(zip_of(PLANTED))
    kinds = {(f.path, f.line, f.type) for f in scan.findings}
    assert ("python/settings.py", 1, "AWS Access Key") in kinds
    assert ("nodejs/node_modules/cfg/index.js", 1, "Slack Token") in kinds
    assert scan.files_scanned == 3
    rendered = json.dumps([f.__dict__ for f in scan.findings])
    assert "AKIAIOSFODNN7EXAMPLE" not in rendered and "xoxb-123456789012" not in rendered
    assert mask("AKIAIOSFODNN7EXAMPLE") == "AK****** (20 characters)"


def test_zip_bomb_by_declared_size_and_by_file_count_is_not_unpacked():
    bomb = zip_of({"bomb.txt": b"0" * (20 * 1024 * 1024)})
    assert len(bomb) < 100_000
    scan = scan_layer_zip(bomb, Limits(max_uncompressed_bytes=10 * 1024 * 1024))
    assert scan.files_scanned == 0 and "possible zip bomb" in scan.problems[0]
    many = zip_of({f"f{i}.txt": "x" for i in range(50)})
    assert "over the 20-file cap" in scan_layer_zip(many, Limits(max_files=20)).problems[0]


def test_path_tricks_are_reported_and_never_written_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scan = scan_layer_zip(zip_of({"../../escape.py": 'token = "AKIAIOSFODNN7EXAMPLE"\n', "/abs/x.py": "x = 1\n"}))
    assert any("../../escape.py" in p for p in scan.problems) and any("/abs/x.py" in p for p in scan.problems)
    assert not (tmp_path.parent / "escape.py").exists() and not (tmp_path / "escape.py").exists()
    assert [f.path for f in scan.findings] == ["../../escape.py"]  # still scanned, from memory


def test_garbage_is_not_a_zip():
    assert "not a readable zip archive" in scan_layer_zip(b"not a zip").problems[0]


def test_layer_content_is_downloaded_over_http_with_a_size_cap():
    content = zip_of(PLANTED)
    server = HttpServer()
    server.route("GET", "/layer.zip", lambda request: Reply(200, content, {"Content-Type": "application/zip"}))
    with server:
        investigator = Investigator(AwsClients(), InvestigationSettings(max_layer_bytes=10 * 1024 * 1024))
        scan = investigator._scan({"Content": {"Location": f"{server.url}/layer.zip"}})
        assert scan.found
        small = Investigator(AwsClients(), InvestigationSettings(max_layer_bytes=100))
        with pytest.raises(ValueError, match="over the 100-byte cap"):
            small._scan({"Content": {"Location": f"{server.url}/layer.zip"}})


def test_secrets_raise_the_ticket_to_rotate():
    from actions.collect_context import LayerContext
    from actions.scan_layer import SecretScan, SecretFinding
    from integrations.aws import LayerPolicy

    detection = detection_from_record(cloudtrail_record("utils", 1, "*", "pub"), "t")
    assessment = assess(detection, minimal_config())
    context = LayerContext(None, LayerPolicy(), (), secrets=SecretScan(
        (SecretFinding("python/settings.py", 1, "AWS Access Key", "AK****** (20 characters)"),), 3))
    fields = render_ticket("LG-1", detection, assessment.classification, assessment.response, None, context,
                           dict(DEFAULT_PRIORITIES))
    assert "Secrets found: rotate them now" in fields.description
    assert "python/settings.py" in fields.description and "AK\\*\\*\\*\\*\\*\\* \\(20 characters\\)" in fields.description


# ----------------------------------------------------------------------------- actor profile


@pytest.mark.parametrize("sample, identity, mfa", [
    ("iam_user", "IAM user", "not reported"),
    ("assumed_role", "assumed role", "no"),
])
def test_actor_profiles_from_the_user_identity_samples(sample, identity, mfa):
    record = cloudtrail_record("utils", 1, "*", "pub")
    record["userIdentity"] = load_sample("aws_docs_cloudtrail_useridentity_examples.json")[sample]
    profile = profile_actor(detection_from_record(record, "t"), prior_grants=2)
    assert (profile.identity, profile.mfa, profile.prior_grants) == (identity, mfa, 2)
    if sample == "assumed_role":
        assert profile.session_issuer == "arn:aws:iam::123456789012:role/RoleToBeAssumed"


def test_actor_profile_of_an_aws_service_and_of_root():
    service = load_sample("elastic_integrations_cloudtrail_test-assume-role-aws-service-json.log")
    record = cloudtrail_record("utils", 1, "*", "pub", source_ip=service["sourceIPAddress"],
                               user_agent=service["userAgent"])
    record["userIdentity"] = service["userIdentity"]
    profile = profile_actor(detection_from_record(record, "t"))
    assert profile.identity == "AWS service (ec2.amazonaws.com)"
    assert profile.source == "an AWS service (ec2.amazonaws.com)" and profile.tool == "an AWS service"
    root = load_sample("aws_docs_cloudwatch_events_api_call_via_cloudtrail_root_createbucket.json")["detail"]
    record["userIdentity"] = root["userIdentity"]
    assert profile_actor(detection_from_record(record, "t")).identity == "root user of the account"


@pytest.mark.parametrize("user_agent, tool", [
    ("aws-cli/2.17.60 md/awscrt#0.21.2 ua/2.0 os/macos#23.6.0", "AWS CLI"),
    ("aws-sdk-js/3.758.0 ua/2.1 os/darwin#24.5.0 lang/js md/nodejs#22.14.0", "AWS SDK for JavaScript"),
    ("Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux lang/python#3.12.1", "AWS SDK for Python (boto3)"),
    ("APN/1.0 HashiCorp/1.0 Terraform/1.9.5 (+https://www.terraform.io) terraform-provider-aws/5.70.0", "Terraform"),
    ("cloudformation.amazonaws.com", "CloudFormation"),
    ("aws-sdk-js/2.1 aws-cdk/2.150.0", "AWS CDK"),
    ("console.amazonaws.com", "AWS console"),
    ("", "no user agent"),
])
def test_tool_from_user_agent(user_agent, tool):
    assert tool_from_user_agent(user_agent) == tool


def test_source_kinds():
    assert source_kind("8.8.8.8") == "public address 8.8.8.8"
    assert source_kind("10.1.2.3").startswith("private address")
    assert source_kind("203.0.113.45").startswith("reserved address")
    assert source_kind("lambda.amazonaws.com").startswith("an AWS service")


# ----------------------------------------------------------------------------- other accounts


def test_a_role_that_cannot_be_assumed_is_recorded_with_what_to_run_by_hand():
    class DenyingSession(boto3.session.Session):
        def client(self, service, *args, **kwargs):
            client = super().client(service, *args, **kwargs)
            if service == "sts":
                stub = Stubber(client)
                stub.add_client_error("assume_role", "AccessDenied", "not authorized to perform sts:AssumeRole",
                                      http_status_code=403, expected_params={
                                          "RoleArn": f"arn:aws:iam::{OWNER}:role/LayerGuardResponder",
                                          "RoleSessionName": ANY})
                stub.activate()
            return client

    aws = AwsClients(assume_role="arn:aws:iam::{account_id}:role/LayerGuardResponder",
                     session_factory=lambda: DenyingSession(region_name=REGION, aws_access_key_id="x",
                                                            aws_secret_access_key="x"))
    detection = detection_from_record(cloudtrail_record("utils", 1, "*", "pub"), "t")
    context = Investigator(aws, InvestigationSettings(lookup_activity=False)).collect(detection)
    assert any("cannot assume arn:aws:iam::123456789012:role/LayerGuardResponder" in e for e in context.errors)
    assert any("aws lambda get-layer-version-policy" in e for e in context.errors)
    assessment = assess(detection, minimal_config())
    fields = render_ticket("LG-1", detection, assessment.classification, assessment.response, None, context,
                           dict(DEFAULT_PRIORITIES))
    assert "h3. Collection problems" in fields.description
    assert "get\\-layer\\-version\\-policy" in fields.description or "get-layer-version-policy" in fields.description


def test_concurrent_parts_of_an_investigation_assume_each_account_role_once():
    """Investigation asks for clients from several threads at once: one role assumption per
    account (each is an STS call and a CloudTrail entry), and every thread gets the same client."""
    assumed: list[str] = []

    class OneAssumptionSession(boto3.session.Session):
        def client(self, service, *args, **kwargs):
            client = super().client(service, *args, **kwargs)
            if service == "sts":
                stub = Stubber(client)  # a second AssumeRole would fail: no response is queued for it
                stub.add_response("assume_role", {"Credentials": {
                    "AccessKeyId": "ASIAEXAMPLEEXAMPLE01", "SecretAccessKey": "s" * 40, "SessionToken": "t" * 40,
                    "Expiration": datetime(2030, 1, 1, tzinfo=timezone.utc)}})
                stub.activate()
                client.meta.events.register("after-call.sts.AssumeRole",
                                            lambda **_: assumed.append(threading.current_thread().name))
            return client

    aws = AwsClients(assume_role="arn:aws:iam::{account_id}:role/LayerGuardResponder",
                     session_factory=lambda: OneAssumptionSession(region_name=REGION, aws_access_key_id="x",
                                                                  aws_secret_access_key="x"))
    start = threading.Barrier(8)
    clients = []

    def ask():
        start.wait()
        clients.append(aws.lambda_client(PARTNER, REGION))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(assumed) == 1
    assert len(clients) == 8 and len({id(client) for client in clients}) == 1
