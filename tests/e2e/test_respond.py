"""`layerguard respond` end to end: the grant, the ticket, the Slack message, the state file."""

import io
import json
import os
import subprocess
import sys
import zipfile

import pytest

from integrations.sandbox.http_emulator import Fault
from integrations.sandbox.world import PARTNER_ACCOUNT_ID, cloudtrail_record
from integrations.state import SQLiteStateStore
from tests.e2e.conftest import LAYER, buttons, respond, slack_messages, write_detections

ACTOR = "arn:aws:iam::123456789012:user/dev-alice"


def test_public_grant_is_removed_verified_ticketed_and_announced(world, tmp_path):
    path = write_detections(tmp_path / "d.json", cloudtrail_record(
        LAYER, 1, "*", "public-share", source_ip="198.51.100.23", user_agent="aws-cli/2.17.60 [evil|http://x]"))
    code, [outcome] = respond(world, path)

    assert code == 0
    assert outcome["decision"] == "contained" and outcome["grant"] == "public"
    assert outcome["removed_statements"] == ["public-share"]
    # The grant is gone from the layer policy; the partner's is untouched.
    assert [s["Sid"] for s in world.policy_statements(LAYER, 1)] == ["partner-share"]

    # One ticket, with actor, IP, user agent (escaped) and consumers.
    [(key, issue)] = world.jira.issues.items()
    assert outcome["ticket"] == key
    fields = issue["fields"]
    assert fields["priority"]["name"] == "Highest"
    assert {"layerguard", "public", "T1648", "T1578.005"} <= set(fields["labels"])
    assert ACTOR in fields["description"]
    assert "198.51.100.23" in fields["description"]
    assert r"\[evil\|http\[:\]//x\]" in fields["description"]
    assert "function:checkout-api:1" in fields["description"]
    assert "Removed statement public-share" in fields["description"]

    # A notification linking the ticket; its only button undoes a false positive.
    [message] = slack_messages(world)
    assert [(b["action_id"], b["value"]) for b in buttons(message)] == [("restore_grant", outcome["case_id"])]
    assert f"/browse/{key}|{key}>" in json.dumps(message["blocks"])
    assert sorted(outcome["consumers"]) == sorted([
        "arn:aws:lambda:us-east-1:123456789012:function:checkout-api:$LATEST",
        "arn:aws:lambda:us-east-1:123456789012:function:checkout-api:1"])

    # The state file holds the case, the ticket, the message and the removed statement verbatim.
    [case] = SQLiteStateStore(world.state_path).list_cases()
    assert (case.status, case.ticket_key, case.slack_ts) == ("contained", key, message["ts"])
    assert case.removed_statements[0]["Sid"] == "public-share"
    assert case.removed_statements[0]["Principal"] == "*"


def test_cross_account_grant_waits_for_approval_with_both_buttons(world, tmp_path):
    path = write_detections(tmp_path / "d.json", cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share"))
    code, [outcome] = respond(world, path)

    assert code == 0
    assert (outcome["decision"], outcome["grant"]) == ("awaiting_approval", "cross-account")
    assert {s["Sid"] for s in world.policy_statements(LAYER, 1)} == {"public-share", "partner-share"}
    [message] = slack_messages(world)
    assert [(b["action_id"], b["value"]) for b in buttons(message)] == [
        ("revoke_grant", outcome["case_id"]), ("keep_grant", outcome["case_id"])]
    assert world.jira.issues[outcome["ticket"]]["fields"]["priority"]["name"] == "High"
    [case] = SQLiteStateStore(world.state_path).list_cases()
    assert case.status == "awaiting_approval"


def test_replayed_detection_makes_no_second_ticket_revoke_or_message(world, tmp_path):
    record = cloudtrail_record(LAYER, 1, "*", "public-share")
    path = write_detections(tmp_path / "d.json", record)
    respond(world, path)
    world.grant(LAYER, 1, "public-share", "*")  # if the replay acted, this would be removed

    code, [outcome] = respond(world, path)
    assert code == 0 and outcome["decision"] == "duplicate"
    assert len(world.jira.issues) == 1
    assert len(slack_messages(world)) == 1
    assert "public-share" in {s["Sid"] for s in world.policy_statements(LAYER, 1)}


def test_a_grant_re_added_after_containment_is_a_new_case_linked_to_the_old_one(world, tmp_path):
    _, [first] = respond(world, write_detections(tmp_path / "a.json", cloudtrail_record(LAYER, 1, "*", "public-share")))
    world.grant(LAYER, 1, "public-share-again", "*")
    code, [second] = respond(world, write_detections(
        tmp_path / "b.json", cloudtrail_record(LAYER, 1, "*", "public-share-again")))

    assert code == 0 and second["decision"] == "contained"
    assert second["removed_statements"] == ["public-share-again"]
    assert second["case_id"] != first["case_id"] and second["ticket"] != first["ticket"]
    links = world.jira.issues[second["ticket"]]["fields"]["issuelinks"]
    assert [link["outwardIssue"]["key"] for link in links] == [first["ticket"]]
    assert len(slack_messages(world)) == 2


def test_repeat_detection_of_a_grant_awaiting_approval_comments_on_its_ticket(world, tmp_path):
    _, [first] = respond(world, write_detections(
        tmp_path / "a.json", cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share")))
    code, [second] = respond(world, write_detections(
        tmp_path / "b.json", cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share")))

    assert code == 0 and (second["case_id"], second["ticket"]) == (first["case_id"], first["ticket"])
    [(key, issue)] = world.jira.issues.items()
    comments = issue["fields"]["comment"]["comments"]
    assert len(comments) == 1 and "Repeat detection" in comments[0]["body"]
    assert len(slack_messages(world)) == 1


def test_dry_run_changes_nothing(world, tmp_path):
    path = write_detections(tmp_path / "d.json", cloudtrail_record(LAYER, 1, "*", "public-share"),
                            cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share"))
    before = world.policy_statements(LAYER, 1)
    code, outcomes = respond(world, path, "--dry-run")

    assert code == 0
    assert [o["decision"] for o in outcomes] == ["contained", "awaiting_approval"]
    assert outcomes[0]["removed_statements"] == ["public-share"] and outcomes[0]["dry_run"]
    assert world.policy_statements(LAYER, 1) == before
    assert world.jira.issues == {} and slack_messages(world) == []
    assert world.jira.calls() == 0 and world.slack.calls() == 0
    assert not world.state_path.exists()


def test_trusted_account_is_not_touched(world, tmp_path):
    world.config_path = world.write_config("trusted.yaml", trusted_accounts=[PARTNER_ACCOUNT_ID])
    code, [outcome] = respond(world, write_detections(
        tmp_path / "d.json", cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share")))

    assert code == 0 and outcome["decision"] == "trusted"
    assert "trusted_accounts" in outcome["reason"]
    assert {s["Sid"] for s in world.policy_statements(LAYER, 1)} == {"public-share", "partner-share"}
    assert world.jira.calls() == 0 and world.slack.calls() == 0


def test_containment_does_not_wait_for_jira_and_resumes_after_an_outage(world, tmp_path):
    world.jira.faults.append(Fault(count=100, status=500))
    path = write_detections(tmp_path / "d.json", cloudtrail_record(LAYER, 1, "*", "public-share"))
    code, [outcome] = respond(world, path)

    assert code == 1
    assert outcome["decision"] == "contained"
    assert any("Jira" in e for e in outcome["errors"])
    assert [s["Sid"] for s in world.policy_statements(LAYER, 1)] == ["partner-share"]
    [case] = SQLiteStateStore(world.state_path).list_cases()
    assert case.status == "contained" and case.ticket_key == ""

    world.jira.faults.clear()
    code, [outcome] = respond(world, path)
    assert code == 0 and outcome["ticket"]
    assert len(world.jira.issues) == 1 and len(slack_messages(world)) == 1


def test_bad_input_names_the_file_and_field_and_exits_2(world, tmp_path, capsys):
    record = cloudtrail_record(LAYER, 1, "*", "public-share", event_id="evt-bad")
    del record["requestParameters"]["principal"]
    good = cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share")
    path = write_detections(tmp_path / "mixed.jsonl", record, good)
    code, outcomes = respond(world, path)

    assert code == 2
    err = capsys.readouterr().err
    assert "mixed.jsonl line 1 (event evt-bad): field 'requestParameters.principal' is missing" in err
    assert [o["decision"] for o in outcomes] == ["awaiting_approval"]  # the good one is still handled


def test_skipped_events_state_their_reason(world, tmp_path):
    record = cloudtrail_record(LAYER, 1, "*", "public-share")
    record["errorCode"] = "AccessDeniedException"
    code, [outcome] = respond(world, write_detections(tmp_path / "d.json", record))
    assert code == 0 and outcome["decision"] == "skipped"
    assert "AccessDeniedException" in outcome["reason"]
    assert world.jira.calls() == 0


def test_config_error_exits_2_naming_the_key(world, tmp_path, capsys):
    world.config_path.write_text(world.config_path.read_text().replace("project: SEC", "project: ''"))
    code, _ = respond(world, write_detections(tmp_path / "d.json", cloudtrail_record(LAYER, 1, "*", "x")))
    assert code == 2
    assert "jira.project: missing" in capsys.readouterr().err
    assert [s["Sid"] for s in world.policy_statements(LAYER, 1)] == ["public-share", "partner-share"]


def test_missing_secret_exits_2_without_acting(world, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    code, _ = respond(world, write_detections(tmp_path / "d.json", cloudtrail_record(LAYER, 1, "*", "x")))
    assert code == 2 and "SLACK_BOT_TOKEN" in capsys.readouterr().err
    assert len(world.policy_statements(LAYER, 1)) == 2


def test_console_script_reads_stdin_in_a_fresh_process(world):
    record = cloudtrail_record(LAYER, 1, "*", "public-share")
    env = dict(os.environ, **world.environment())
    result = subprocess.run([sys.executable, "-m", "playbooks.cli", "respond", "-", "--json",
                             "--config", str(world.config_path)],
                            input=json.dumps(record).encode(), capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    outcome = json.loads(result.stdout)
    assert outcome["decision"] == "contained"
    assert [s["Sid"] for s in world.policy_statements(LAYER, 1)] == ["partner-share"]
    # Secrets never reach the output.
    assert "sandbox-jira-token" not in result.stdout.decode() + result.stderr.decode()


def test_cases_command_lists_status(world, tmp_path):
    import io

    from playbooks.cli import main

    respond(world, write_detections(tmp_path / "d.json", cloudtrail_record(LAYER, 1, "*", "public-share"),
                                    cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share")))
    out = io.StringIO()
    assert main(["cases", "--config", str(world.config_path), "--json"], stdout=out) == 0
    cases = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(c["status"] for c in cases) == ["awaiting_approval", "contained"]
    assert all(c["history"] for c in cases)


def test_ticket_and_prompt_carry_the_investigation(world, tmp_path):
    newer = world.publish_layer(LAYER)  # version 2, shared with an organization
    world.grant(LAYER, newer["Version"], "org-share", "*", organization_id="o-someone1234")
    code, [outcome] = respond(world, write_detections(
        tmp_path / "d.json", cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share",
                                               user_agent="APN/1.0 HashiCorp/1.0 Terraform/1.9.5",
                                               source_ip="8.8.8.8")))
    assert code == 0
    description = world.jira.issues[outcome["ticket"]]["fields"]["description"]
    assert "h3. Other versions of this layer" in description
    assert "|2|org:o-someone1234|" in description
    assert "||Tool|Terraform|" in description and "||Source|public address 8.8.8.8|" in description
    assert "Accounts searched: 123456789012" in description
    [message] = slack_messages(world)
    facts = json.dumps(message["blocks"])
    for label in ("Who", "From", "Tool", "Consumers", "Secrets in the layer"):
        assert f"*{label}*" in facts
    assert "Terraform" in facts and "2 function(s) in 1 account(s)" in facts


def test_grant_in_a_member_account_is_contained_through_the_assumed_role(world, tmp_path):
    """moto keeps resources per account: an assumed role in 210987654321 sees only that account."""
    from integrations.aws import AwsClients

    member = AwsClients(assume_role="arn:aws:iam::{account_id}:role/LayerGuardResponder")
    client = member.lambda_client(PARTNER_ACCOUNT_ID, "us-east-1")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("python/m.py", "X = 1\n")
    layer = client.publish_layer_version(LayerName="member-layer", Content={"ZipFile": archive.getvalue()})
    client.add_layer_version_permission(LayerName="member-layer", VersionNumber=1, StatementId="pub",
                                        Action="lambda:GetLayerVersion", Principal="*")
    world.config_path = world.write_config("member.yaml")
    text = world.config_path.read_text().replace("aws:\n", "aws:\n  assume_role: arn:aws:iam::{account_id}:role/LayerGuardResponder\n", 1)
    world.config_path.write_text(text)
    code, [outcome] = respond(world, write_detections(tmp_path / "d.json", cloudtrail_record(
        layer["LayerArn"], 1, "*", "pub")))

    assert code == 0 and outcome["decision"] == "contained"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_layer_version_policy(LayerName="member-layer", VersionNumber=1)


def test_a_role_that_cannot_be_assumed_still_opens_the_ticket_and_alerts(world, tmp_path):
    import boto3
    from botocore.stub import Stubber

    from integrations.aws import AwsClients
    from playbooks.cli import build_services
    from playbooks.config import Secrets, load_config
    from playbooks.detection import detection_from_record
    from playbooks.layer_exposure import respond as run_playbook

    class DenyingSession(boto3.session.Session):
        def client(self, service, *args, **kwargs):
            client = super().client(service, *args, **kwargs)
            if service == "sts":
                stub = Stubber(client)
                for _ in range(3):
                    stub.add_client_error("assume_role", "AccessDenied", http_status_code=403)
                stub.activate()
            return client

    config = load_config(world.config_path)
    services = build_services(config, Secrets.from_environment(), aws=AwsClients(
        assume_role="arn:aws:iam::{account_id}:role/LayerGuardResponder", session_factory=DenyingSession))
    outcome = run_playbook(detection_from_record(cloudtrail_record(LAYER, 1, "*", "public-share"), "t"),
                           config, services)

    assert outcome.decision == "failed" and outcome.errors
    description = world.jira.issues[outcome.ticket]["fields"]["description"]
    assert "Containment FAILED" in description
    assert "remove\\-layer\\-version\\-permission" in description or "remove-layer-version-permission" in description
    assert "h3. Collection problems" in description
    [message] = slack_messages(world)
    assert "could not remove this grant" in json.dumps(message["blocks"])
    [case] = SQLiteStateStore(world.state_path).list_cases()
    assert case.status == "failed"


def test_outbox_keeps_what_jira_and_slack_missed_until_layerguard_retry(world, tmp_path):
    from playbooks.cli import main

    world.jira.faults.append(Fault(count=1000, status=503))
    world.slack.faults.append(Fault(count=1000, status=500))
    path = write_detections(tmp_path / "d.json", cloudtrail_record(LAYER, 1, "*", "public-share"))
    code, [outcome] = respond(world, path)
    assert code == 1 and outcome["decision"] == "contained"  # containment never waits on them
    assert [s["Sid"] for s in world.policy_statements(LAYER, 1)] == ["partner-share"]

    out = io.StringIO()
    main(["cases", "--config", str(world.config_path)], stdout=out)
    assert f"pending    respond for {outcome['case_id']}" in out.getvalue()
    code, _ = respond(world, path)  # a second failing run queues nothing twice
    assert len(SQLiteStateStore(world.state_path).pending_jobs()) == 1

    world.jira.faults.clear()
    world.slack.faults.clear()
    out = io.StringIO()
    assert main(["retry", "--config", str(world.config_path)], stdout=out) == 0
    assert "ran 1 job(s); 0 still pending" in out.getvalue()
    assert len(world.jira.issues) == 1 and len(slack_messages(world)) == 1
    [case] = SQLiteStateStore(world.state_path).list_cases()
    assert case.ticket_key and case.slack_ts and case.status == "contained"


def test_state_in_a_dynamodb_table_behaves_as_the_sqlite_file(world, tmp_path):
    """The AWS deployment keeps state in DynamoDB: same playbook, same one case per grant."""
    from tests.e2e.conftest import main, use_dynamodb_state

    use_dynamodb_state(world, world.config_path)
    detections = write_detections(tmp_path / "d.json", cloudtrail_record(LAYER, 1, "*", "public-share"),
                                  cloudtrail_record(LAYER, 1, PARTNER_ACCOUNT_ID, "partner-share"))

    code, outcomes = respond(world, detections)
    assert code == 0
    assert [o["decision"] for o in outcomes] == ["contained", "awaiting_approval"]
    assert [s["Sid"] for s in world.policy_statements(LAYER, 1)] == ["partner-share"]
    code, replayed = respond(world, detections)
    assert [o["decision"] for o in replayed] == ["duplicate", "duplicate"]
    assert len(world.jira.issues) == 2 and len(slack_messages(world)) == 2
    assert not world.state_path.exists()  # nothing went to a local file

    out = io.StringIO()
    assert main(["cases", "--json", "--config", str(world.config_path)], stdout=out) == 0
    cases = sorted((c["status"], c["ticket"]) for c in map(json.loads, out.getvalue().splitlines()))
    assert cases == sorted([("contained", outcomes[0]["ticket"]), ("awaiting_approval", outcomes[1]["ticket"])])
