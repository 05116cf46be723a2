"""deploy/hub.yaml and deploy/member.yaml: valid CloudFormation (cfn-lint, which checks
every resource type, property and reference against AWS's specifications), and in step
with the code they deploy: the table the store uses, the permissions the code needs,
the handler and the environment it reads, and a rule that matches the detection."""

import importlib
import json
from pathlib import Path

import boto3
import pytest
import yaml
from cfnlint.api import lint_file
from moto import mock_aws

from integrations.state_dynamodb import TABLE_SCHEMA
from integrations.sandbox.world import cloudtrail_record

ROOT = Path(__file__).resolve().parents[2]
HUB = yaml.safe_load((ROOT / "deploy" / "hub.yaml").read_text())
MEMBER = yaml.safe_load((ROOT / "deploy" / "member.yaml").read_text())
POLICY = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())


@pytest.mark.parametrize("template", ["hub.yaml", "member.yaml"])
def test_templates_are_valid_cloudformation(template):
    problems = lint_file(ROOT / "deploy" / template)
    assert not problems, "\n".join(f"{p.rule.id} line {p.linenumber}: {p.message}" for p in problems)


def normalised(statements):
    def one(statement):
        actions = statement["Action"]
        return {**statement, "Action": sorted([actions] if isinstance(actions, str) else actions)}
    return {s["Sid"]: one(s) for s in statements}


def role_statements(template, logical_id):
    [policy] = template["Resources"][logical_id]["Properties"]["Policies"]
    return normalised(policy["PolicyDocument"]["Statement"])


def test_the_hub_role_grants_exactly_the_policy_the_code_needs_plus_reading_its_queue():
    hub = role_statements(HUB, "FunctionRole")
    assert hub.pop("EventSourceMapping")["Action"] == ["sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                                      "sqs:ReceiveMessage"]
    assert hub == normalised(POLICY["Statement"])


def test_the_member_role_grants_what_the_hub_does_in_a_member_account():
    member_side = {"ContainAndInvestigateLayers", "FindConsumers", "RelatedActivity"}
    expected = {sid: s for sid, s in normalised(POLICY["Statement"]).items() if sid in member_side}
    assert role_statements(MEMBER, "ResponderRole") == expected
    assert POLICY["Statement"][[s["Sid"] for s in POLICY["Statement"]].index("MemberAccountRole")]["Resource"] \
        == f"arn:aws:iam::*:role/{MEMBER['Resources']['ResponderRole']['Properties']['RoleName']}"


def test_the_state_table_is_the_one_the_store_creates():
    table = HUB["Resources"]["StateTable"]["Properties"]
    for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes"):
        assert table[key] == TABLE_SCHEMA[key], key
    assert table["TableName"] in json.dumps(POLICY)


def test_the_function_runs_the_lambda_handler_with_the_environment_it_reads():
    function = HUB["Resources"]["Function"]["Properties"]
    module, name = function["Handler"].rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))
    assert set(function["Environment"]["Variables"]) == {
        "LAYERGUARD_CONFIG", "LAYERGUARD_QUEUE_URL", "JIRA_EMAIL", "JIRA_API_TOKEN", "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET", "LAYERGUARD_WEBHOOK_TOKEN"}
    mapping = HUB["Resources"]["DetectionQueueToFunction"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]  # the handler reports failures per message
    queue = HUB["Resources"]["DetectionQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert queue["QueueName"] in json.dumps(POLICY)


@pytest.mark.parametrize("template, rule", [(HUB, "DetectionRule"), (MEMBER, "ForwardLayerGrants")])
def test_the_rules_match_layer_grants_and_nothing_else(template, rule, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    pattern = json.dumps(template["Resources"][rule]["Properties"]["EventPattern"])
    grant = cloudtrail_record("utils", 1, "*", "pub")
    removal = {**grant, "eventName": "RemoveLayerVersionPermission20181031"}
    with mock_aws():
        # The rule as deployed, with a queue as its target (as the hub's), and events put on the bus.
        events, sqs = boto3.client("events", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName="target")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="rule", EventPattern=pattern)
        events.put_targets(Rule="rule", Targets=[{"Id": "q", "Arn": arn}])

        def delivered(record):
            events.put_events(Entries=[{"Source": "aws.lambda", "DetailType": "AWS API Call via CloudTrail",
                                        "Detail": json.dumps(record)}])
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            for message in messages:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            return [json.loads(m["Body"])["detail"]["eventName"] for m in messages]

        assert delivered(grant) == ["AddLayerVersionPermission20181031"]
        assert delivered({**grant, "eventName": "AddLayerVersionPermission"}) == ["AddLayerVersionPermission"]
        assert delivered(removal) == []
        assert delivered({**grant, "eventSource": "s3.amazonaws.com"}) == []
