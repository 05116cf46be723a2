"""Intake: every input shape becomes one Detection; bad input names the field."""

import gzip
import json

import pytest

from integrations.sandbox.world import cloudtrail_record
from playbooks.detection import (Detection, IntakeError, Skipped, detections_from_document, parse_flat_map,
                                 read_documents)
from tests.conftest import load_sample


def detect(data, source="input.json"):
    if not isinstance(data, (bytes, str)):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    return [d for doc in read_documents(data, source) for d in detections_from_document(doc)]


def only(data, source="input.json"):
    items = detect(data, source)
    assert len(items) == 1
    return items[0]


# ----------------------------------------------------------------------------- shapes


def test_eventbridge_event_from_truststack_sample(truststack_event):
    d = only(truststack_event)
    assert isinstance(d, Detection)
    assert d.source_format == "eventbridge"
    assert (d.event_id, d.account_id, d.region) == ("test-event-id", "463470966597", "us-east-1")
    assert d.layer_arn == "arn:aws:lambda:us-east-1:463470966597:layer:test-layer"
    assert d.layer_version_arn.endswith(":test-layer:1")
    assert (d.version, d.principal, d.statement_id) == (1, "123456789012", "test-statement")
    assert d.actor.type == "AssumedRole"
    assert d.actor.arn == "arn:aws:sts::123456789012:assumed-role/AWSControlTowerExecution/aws-sdk-js-1748943273662"
    assert d.actor.session_issuer_arn == "arn:aws:iam::123456789012:role/AWSControlTowerExecution"
    assert d.actor.access_key_id == "ASIAWX2IFW5C5ER7HJMN"
    assert d.actor.mfa_authenticated is False
    assert d.source_ip == "192.0.2.123"
    assert d.user_agent.startswith("aws-sdk-js/3.758.0")


def test_single_cloudtrail_record(truststack_event):
    d = only(truststack_event["detail"])
    assert d.source_format == "cloudtrail"
    assert d.event_id == "test-event-id"


def test_cloudtrail_log_file_plain_and_gzip():
    log = {"Records": [cloudtrail_record("a", 1, "*", "s1"), cloudtrail_record("b", 2, "210987654321", "s2")]}
    plain = detect(log, "log.json")
    zipped = detect(gzip.compress(json.dumps(log).encode()), "log.json.gz")
    assert [d.layer_name for d in plain] == ["a", "b"] == [d.layer_name for d in zipped]
    assert all(d.source_format == "cloudtrail-log" for d in zipped)
    assert zipped[1].location == "log.json.gz Records[1]"


def test_json_lines_of_mixed_shapes(truststack_event):
    lines = "\n".join([json.dumps(cloudtrail_record("a", 1, "*", "s1")), "", json.dumps(truststack_event)])
    items = detect(lines, "batch.jsonl")
    assert [i.source_format for i in items] == ["cloudtrail", "eventbridge"]
    assert items[1].location == "batch.jsonl line 3"


def test_json_array_of_records():
    items = detect([cloudtrail_record("a", 1, "*", "s1"), cloudtrail_record("b", 1, "*", "s2")])
    assert [i.layer_name for i in items] == ["a", "b"]


def test_elastic_document_uses_event_original(elastic_doc):
    d = only(elastic_doc)
    assert d.source_format == "elastic"
    assert (d.event_id, d.layer_name, d.version, d.principal) == (
        "98675cf5-df23-4169-8411-58429782c464", "shared-deps", 4, "*")
    assert d.actor.arn == "arn:aws:iam::000000000:user/test@elastic.co"
    assert d.source_ip == "216.160.83.56"


def test_elastic_document_without_original_uses_flattened(elastic_doc):
    del elastic_doc["event"]["original"]
    d = only(elastic_doc)
    assert (d.layer_name, d.version, d.statement_id, d.principal) == ("shared-deps", 4, "pub", "*")
    assert d.account_id == "111122223333"
    assert d.actor.type == "IAMUser"
    assert d.user_agent.startswith("aws-cli/2.17.60")


def test_elastic_document_with_only_flat_string(elastic_doc):
    del elastic_doc["event"]["original"]
    del elastic_doc["aws"]["cloudtrail"]["flattened"]
    d = only(elastic_doc)
    assert (d.layer_name, d.version, d.principal) == ("shared-deps", 4, "*")


def test_elastic_alert_with_dotted_keys(elastic_doc):
    """Kibana alerts often flatten the source document into dotted keys."""
    flat = {
        "kibana.alert.rule.name": "AWS Lambda Layer Shared Externally",
        "event.action": "AddLayerVersionPermission20181031",
        "event.provider": "lambda.amazonaws.com",
        "event.outcome": "success",
        "event.id": "alert-event-1",
        "cloud.region": "eu-west-1",
        "cloud.account.id": "111122223333",
        "aws.cloudtrail.request_parameters": "{layerName=arn:aws:lambda:eu-west-1:111122223333:layer:x, "
                                             "versionNumber=2, principal=210987654321, statementId=s}",
        "aws.cloudtrail.user_identity.arn": "arn:aws:iam::111122223333:user/bob",
        "aws.cloudtrail.user_identity.type": "IAMUser",
        "source.ip": "198.51.100.7",
        "user_agent.original": "console.amazonaws.com",
    }
    d = only(flat)
    assert (d.layer_arn, d.version, d.principal, d.region) == (
        "arn:aws:lambda:eu-west-1:111122223333:layer:x", 2, "210987654321", "eu-west-1")
    assert d.actor.arn == "arn:aws:iam::111122223333:user/bob"


def test_flat_map_values_may_hold_commas_and_equals():
    parsed = parse_flat_map("{principal=*, statementId=a=b, c, layerName=x, versionNumber=3, "
                            "action=lambda:GetLayerVersion}")
    assert parsed == {"principal": "*", "statementId": "a=b, c", "layerName": "x", "versionNumber": "3",
                      "action": "lambda:GetLayerVersion"}


def test_flat_map_rejects_duplicate_keys():
    with pytest.raises(IntakeError, match="names 'principal' twice"):
        parse_flat_map("{principal=*, principal=123456789012}")


def test_layer_given_as_arn_and_version_as_string():
    record = cloudtrail_record("arn:aws:lambda:eu-central-1:999988887777:layer:lib", "7", "*", "s")
    d = only(record)
    assert d.layer_arn == "arn:aws:lambda:eu-central-1:999988887777:layer:lib"
    assert d.layer_account_id == "999988887777"
    assert d.version == 7


def test_principal_as_root_arn_and_organization():
    d = only(cloudtrail_record("lib", 1, "*", "org", organization_id="o-abc123def4"))
    assert (d.principal, d.organization_id) == ("*", "o-abc123def4")


# ----------------------------------------------------------------------------- skips


def test_other_event_is_skipped_with_reason():
    s = only(load_sample("elastic_integrations_cloudtrail_test-add-permission-json.log"))
    assert isinstance(s, Skipped)
    assert "AddPermission20150331v2" in s.reason


def test_failed_event_is_skipped_with_reason():
    record = cloudtrail_record("lib", 1, "*", "s")
    record["errorCode"] = "AccessDeniedException"
    s = only(record)
    assert isinstance(s, Skipped) and "AccessDeniedException" in s.reason


def test_failed_elastic_event_is_skipped(elastic_doc):
    del elastic_doc["event"]["original"]
    elastic_doc["event"]["outcome"] = "failure"
    assert isinstance(only(elastic_doc), Skipped)


def test_stratus_access_denied_sample_is_skipped():
    s = only(load_sample("stratus_cloudtrail_errorcode_accessdenied_assumedrole.json"))
    assert isinstance(s, Skipped)


def test_other_lambda_event_sample_is_skipped():
    s = only(load_sample("stratus_cloudtrail_updatefunctionconfiguration_layers_iamuser.json"))
    assert isinstance(s, Skipped) and "UpdateFunctionConfiguration" in s.reason


def test_event_from_wrong_source_is_skipped():
    record = cloudtrail_record("lib", 1, "*", "s")
    record["eventSource"] = "evil.amazonaws.com"
    assert isinstance(only(record), Skipped)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("data, message", [
    (b"{not json", "invalid JSON"),
    (b"", "empty input"),
    (b"\x1f\x8b\x08\x00garbage", "not a readable gzip file"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"42", "expected a JSON object"),
    (b'{"hello": "world"}', "not a CloudTrail record"),
    (b'{"Records": "nope"}', "'Records' must be a list"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_unreadable_documents_name_the_problem(data, message):
    with pytest.raises(IntakeError, match=message) as info:
        detect(data, "bad.json")
    assert info.value.location.startswith("bad.json")


def test_bad_line_in_json_lines_names_the_line():
    text = json.dumps(cloudtrail_record("a", 1, "*", "s")) + "\n{oops\n"
    with pytest.raises(IntakeError, match=r"batch.jsonl line 2: invalid JSON"):
        detect(text, "batch.jsonl")


@pytest.mark.parametrize("field, value, message", [
    ("layerName", None, "requestParameters.layerName' is missing"),
    ("principal", "", "requestParameters.principal' is missing"),
    ("versionNumber", "latest", "versionNumber' is not a whole number"),
    ("versionNumber", 0, "must be 1 or more"),
    ("versionNumber", True, "versionNumber' is missing"),
    ("layerName", "bad name with spaces", "neither a layer name nor a layer ARN"),
    ("principal", {"AWS": "*"}, "principal' must be text"),
])
def test_bad_fields_are_named(field, value, message):
    record = cloudtrail_record("lib", 1, "*", "s", event_id="evt-1")
    record["requestParameters"][field] = value
    with pytest.raises(IntakeError, match=message) as info:
        detect(record, "x.json")
    assert "event evt-1" in str(info.value)


def test_missing_request_parameters_is_named():
    record = cloudtrail_record("lib", 1, "*", "s")
    record["requestParameters"] = None
    with pytest.raises(IntakeError, match="'requestParameters' is missing"):
        detect(record)


def test_missing_region_for_a_plain_layer_name_is_named():
    record = cloudtrail_record("lib", 1, "*", "s")
    del record["awsRegion"]
    with pytest.raises(IntakeError, match="'awsRegion' is missing"):
        detect(record)


def test_event_without_id_gets_a_stable_one():
    record = cloudtrail_record("lib", 1, "*", "s")
    del record["eventID"]
    assert only(record).event_id == only(record).event_id
    assert only(record).event_id.startswith("sha256:")
