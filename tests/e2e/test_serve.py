"""`layerguard serve` end to end over real HTTP: signed Slack clicks, the webhook, expiry."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import io

import pytest
import requests

from integrations.sandbox.world import PARTNER_ACCOUNT_ID, cloudtrail_record
from integrations.state import SQLiteStateStore
from playbooks.cli import main
from playbooks.faults import CRASH_EXIT_CODE
from tests.e2e.conftest import (APPROVER, LAYER, WEBHOOK_TOKEN, block_actions_body, buttons, case_of, click, idle,
                                respond, signed_headers, slack_messages, start_service, wait_for, write_detections)


@pytest.fixture
def serve(world):
    services = []

    def start(**overrides):
        service = start_service(world, **overrides)
        services.append(service)
        return service
    yield start
    for service in services:
        service.stop()


def detect(world, tmp_path, principal=PARTNER_ACCOUNT_ID, sid="partner-share"):
    code, [outcome] = respond(world, write_detections(tmp_path / f"{sid}-{time.time_ns()}.json",
                                                      cloudtrail_record(LAYER, 1, principal, sid)))
    assert code == 0, outcome
    return outcome


def sids(world):
    return {s["Sid"] for s in world.policy_statements(LAYER, 1)}


def message_of(world, case):
    return next(m for m in slack_messages(world) if m["ts"] == case.slack_ts)


def comments(world, key):
    return [c["body"] for c in world.jira.issues[key]["fields"]["comment"]["comments"]]


def status(world, key):
    return world.jira.issues[key]["fields"]["status"]["name"]


def settled(world, case_id, wanted):
    return wait_for(lambda: (c := case_of(world, case_id)).status == wanted and idle(world) and c)


# ----------------------------------------------------------------------------- decisions


def test_authorised_revoke(world, serve, tmp_path):
    service = serve()
    outcome = detect(world, tmp_path)
    response = click(service.url, "revoke_grant", outcome["case_id"])

    assert response.status_code == 200
    case = settled(world, outcome["case_id"], "revoked")
    assert sids(world) == {"public-share"}  # exactly the case's statement is gone
    message = message_of(world, case)
    assert buttons(message) == []
    assert f"Revoked by <@{APPROVER}>" in json.dumps(message["blocks"])
    assert any("Revoked" in c and APPROVER in c for c in comments(world, case.ticket_key))
    assert status(world, case.ticket_key) == "Done"
    assert case.decision_by == APPROVER


def test_keep_writes_an_expiring_exception_that_trusts_later_detections(world, serve, tmp_path):
    service = serve(approval={"keep_exception_for": "1h"})
    outcome = detect(world, tmp_path)
    assert click(service.url, "keep_grant", outcome["case_id"]).status_code == 200

    case = settled(world, outcome["case_id"], "accepted")
    assert sids(world) == {"public-share", "partner-share"}
    assert "Kept by" in json.dumps(message_of(world, case)["blocks"])
    assert status(world, case.ticket_key) == "Done"
    [exception] = SQLiteStateStore(world.state_path).list_exceptions()
    assert (exception.grantee, exception.created_by) == (f"account:{PARTNER_ACCOUNT_ID}", APPROVER)
    assert exception.expires_at > time.time() + 3500

    out = io.StringIO()
    main(["cases", "--config", str(world.config_path)], stdout=out)
    assert f"exception  account:{PARTNER_ACCOUNT_ID}" in out.getvalue()

    again = detect(world, tmp_path, sid="partner-share-2")
    assert again["decision"] == "trusted" and f"kept by {APPROVER}" in again["reason"]


def test_restore_re_adds_the_exact_removed_statement(world, serve, tmp_path):
    service = serve()
    outcome = detect(world, tmp_path, principal="*", sid="public-share")
    assert sids(world) == {"partner-share"}
    click(service.url, "restore_grant", outcome["case_id"])

    case = settled(world, outcome["case_id"], "restored")
    restored = next(s for s in world.policy_statements(LAYER, 1) if s["Sid"] == "public-share")
    assert restored["Principal"] == "*" and "OrganizationId" not in restored
    assert any("Restored" in c for c in comments(world, case.ticket_key))
    assert "restored by" in " ".join(h.note for h in SQLiteStateStore(world.state_path).history(case.case_id))


# ----------------------------------------------------------------------------- refusals


def test_bad_signature_and_stale_timestamp_are_refused(world, serve, tmp_path):
    service = serve()
    outcome = detect(world, tmp_path)
    body = block_actions_body("revoke_grant", outcome["case_id"])
    forged = requests.post(f"{service.url}/slack/actions", data=body,
                           headers=signed_headers(body, secret="not-the-secret"), timeout=10)
    stale = requests.post(f"{service.url}/slack/actions", data=body,
                          headers=signed_headers(body, timestamp=int(time.time()) - 6 * 60), timeout=10)
    tampered = requests.post(f"{service.url}/slack/actions", data=body.replace("revoke", "keep_"),
                             headers=signed_headers(body), timeout=10)

    assert (forged.status_code, stale.status_code, tampered.status_code) == (401, 401, 401)
    time.sleep(0.3)
    assert case_of(world, outcome["case_id"]).decision == ""
    assert sids(world) == {"public-share", "partner-share"}


def test_unauthorised_user_changes_nothing_and_is_told_privately(world, serve, tmp_path):
    service = serve()
    outcome = detect(world, tmp_path)
    assert click(service.url, "revoke_grant", outcome["case_id"], user_id="U0INTRUDER").status_code == 200

    wait_for(lambda: world.slack.ephemeral and idle(world))
    [notice] = world.slack.ephemeral
    assert notice["user"] == "U0INTRUDER" and "not authorised" in notice["text"]
    case = case_of(world, outcome["case_id"])
    assert (case.status, case.decision) == ("awaiting_approval", "")
    assert sids(world) == {"public-share", "partner-share"}
    assert any("Refused approval attempt" in c and "U0INTRUDER" in c for c in comments(world, case.ticket_key))


def test_user_group_members_may_decide_and_a_failed_lookup_refuses(world, serve, tmp_path):
    world.slack.usergroups["S0SECLEADS"] = ["U0GROUPIE"]
    service = serve(slack={"approvers": [], "approver_groups": ["S0SECLEADS", "S0NOSUCH"]})
    first = detect(world, tmp_path)
    click(service.url, "revoke_grant", first["case_id"], user_id="U0GROUPIE")
    settled(world, first["case_id"], "revoked")

    # U0OUTSIDER is not in S0SECLEADS, and S0NOSUCH cannot be looked up: fail closed.
    world.grant(LAYER, 1, "partner-share-2", "111122223333")
    second = detect(world, tmp_path, principal="111122223333", sid="partner-share-2")
    click(service.url, "revoke_grant", second["case_id"], user_id="U0OUTSIDER")
    wait_for(lambda: world.slack.ephemeral and idle(world))
    assert "could not verify membership of user group S0NOSUCH" in world.slack.ephemeral[-1]["text"]
    assert case_of(world, second["case_id"]).status == "awaiting_approval"
    assert "partner-share-2" in sids(world)


# ----------------------------------------------------------------------------- exactly one decision


def test_two_concurrent_clicks_make_one_decision(world, serve, tmp_path):
    service = serve(slack={"approvers": [APPROVER, "U0SECOND"]})
    outcome = detect(world, tmp_path)
    barrier = threading.Barrier(2)
    results = {}

    def press(action, user):
        barrier.wait()
        results[user] = click(service.url, action, outcome["case_id"], user_id=user)
    threads = [threading.Thread(target=press, args=("revoke_grant", APPROVER)),
               threading.Thread(target=press, args=("keep_grant", "U0SECOND"))]
    [t.start() for t in threads]
    [t.join() for t in threads]

    assert {r.status_code for r in results.values()} == {200}
    case = wait_for(lambda: (c := case_of(world, outcome["case_id"])).status in ("revoked", "accepted")
                    and idle(world) and world.slack.ephemeral and c)
    winner = case.decision_by
    loser = ({APPROVER, "U0SECOND"} - {winner}).pop()
    [notice] = world.slack.ephemeral
    assert notice["user"] == loser and f"already decided by {winner}" in notice["text"]
    decision_comments = [c for c in comments(world, case.ticket_key) if c.startswith(("*Revoked", "*Kept"))]
    assert len(decision_comments) == 1


def test_replayed_click_is_applied_once(world, serve, tmp_path):
    service = serve()
    outcome = detect(world, tmp_path)
    body = block_actions_body("revoke_grant", outcome["case_id"])
    headers = signed_headers(body)
    first = requests.post(f"{service.url}/slack/actions", data=body, headers=headers, timeout=10)
    case = settled(world, outcome["case_id"], "revoked")
    updates_before = world.slack.calls()
    replay = requests.post(f"{service.url}/slack/actions", data=body, headers=headers, timeout=10)

    assert (first.status_code, replay.status_code) == (200, 200)
    wait_for(lambda: world.slack.ephemeral and idle(world))
    assert "already decided by U0APPROVER" in world.slack.ephemeral[0]["text"]
    assert world.slack.calls() - updates_before == 1  # only the ephemeral notice, no second chat.update
    assert len([c for c in comments(world, case.ticket_key) if c.startswith("*Revoked")]) == 1


# ----------------------------------------------------------------------------- expiry


@pytest.mark.parametrize("on_timeout, final_status, still_there, words", [
    ("revoke", "revoked", {"public-share"}, "Revoked by the approval timeout"),
    ("keep", "accepted", {"public-share", "partner-share"}, "Kept by the approval timeout"),
])
def test_timeout_applies_the_configured_outcome(world, tmp_path, on_timeout, final_status, still_there, words):
    outcome = detect(world, tmp_path)
    config = world.write_config("expire.yaml", approval={"timeout": "1s", "on_timeout": on_timeout})
    time.sleep(1.1)
    out = io.StringIO()
    assert main(["expire", "--config", str(config)], stdout=out) == 0
    assert f"{outcome['case_id']}: {on_timeout} (timeout)" in out.getvalue()

    case = case_of(world, outcome["case_id"])
    assert (case.status, case.decision_by) == (final_status, "timeout")
    assert sids(world) == still_there
    assert words in json.dumps(message_of(world, case)["blocks"])
    assert any("approval timeout" in c for c in comments(world, case.ticket_key))


def test_timeout_escalates_and_reminds_in_the_thread(world, tmp_path):
    outcome = detect(world, tmp_path)
    config = world.write_config("expire.yaml", approval={"timeout": "2s", "remind_after": "1s",
                                                         "on_timeout": "escalate"})
    time.sleep(1.1)
    main(["expire", "--config", str(config)], stdout=io.StringIO())
    time.sleep(1.0)
    main(["expire", "--config", str(config)], stdout=io.StringIO())
    main(["expire", "--config", str(config)], stdout=io.StringIO())  # escalates once only

    case = case_of(world, outcome["case_id"])
    assert case.status == "awaiting_approval" and case.escalated_at and case.reminded_at
    thread = [m for m in slack_messages(world) if m.get("thread_ts") == case.slack_ts]
    assert [m["text"].split(":")[0] for m in thread] == ["Reminder", "Escalation"]
    assert "<@U0APPROVER>" in thread[1]["text"]
    notes = comments(world, case.ticket_key)
    assert sum("Escalated" in c for c in notes) == 1 and sum("Reminder" in c for c in notes) == 1


def test_click_after_timeout_decision_does_nothing(world, serve, tmp_path):
    outcome = detect(world, tmp_path)
    service = serve()
    config = world.write_config("expire.yaml", approval={"timeout": "1s", "on_timeout": "revoke"})
    time.sleep(1.1)
    main(["expire", "--config", str(config)], stdout=io.StringIO())
    assert case_of(world, outcome["case_id"]).status == "revoked"

    click(service.url, "keep_grant", outcome["case_id"])
    wait_for(lambda: world.slack.ephemeral and idle(world))
    assert "already decided by timeout" in world.slack.ephemeral[0]["text"]
    assert case_of(world, outcome["case_id"]).status == "revoked"
    assert SQLiteStateStore(world.state_path).list_exceptions() == []


# ----------------------------------------------------------------------------- speed and crashes


def test_ack_is_fast_while_jira_is_slow(world, serve, tmp_path):
    service = serve()
    outcome = detect(world, tmp_path)
    world.jira.latency_seconds = 5.0
    response = click(service.url, "revoke_grant", outcome["case_id"])

    assert response.status_code == 200 and response.elapsed_seconds < 3.0
    assert case_of(world, outcome["case_id"]).decision == "revoke"  # recorded before the ack
    case = wait_for(lambda: (c := case_of(world, outcome["case_id"])).status == "revoked" and idle(world) and c,
                    timeout=60)
    world.jira.latency_seconds = 0
    assert status(world, case.ticket_key) == "Done"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve_process(world, port, **extra_env):
    env = dict(os.environ, **world.environment(), LAYERGUARD_WEBHOOK_TOKEN=WEBHOOK_TOKEN, **extra_env)
    process = subprocess.Popen([sys.executable, "-m", "playbooks.cli", "serve", "--config", str(world.config_path),
                                "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: _healthy(f"http://127.0.0.1:{port}"), timeout=60)
    return process


def _healthy(url):
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_process_killed_after_the_ack_resumes_the_decision_on_restart(world, tmp_path):
    outcome = detect(world, tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve_process(world, port, LAYERGUARD_CRASH_AT="apply_decision:start")
    try:
        assert click(url, "revoke_grant", outcome["case_id"]).status_code == 200
        assert process.wait(timeout=30) == CRASH_EXIT_CODE
    finally:
        process.kill()
    case = case_of(world, outcome["case_id"])
    assert (case.decision, case.status) == ("revoke", "awaiting_approval")
    assert "partner-share" in sids(world)

    process = start_serve_process(world, port)
    try:
        case = wait_for(lambda: (c := case_of(world, outcome["case_id"])).status == "revoked" and idle(world) and c,
                        timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert sids(world) == {"public-share"}
    assert len([c for c in comments(world, case.ticket_key) if c.startswith("*Revoked")]) == 1


# ----------------------------------------------------------------------------- webhook and health


def test_webhook_authentication_and_bad_payloads(world, serve):
    service = serve()
    url = f"{service.url}/detections"
    good = json.dumps(cloudtrail_record(LAYER, 1, "*", "public-share"))
    bearer = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}

    assert requests.post(url, data=good, timeout=10).status_code == 401
    assert requests.post(url, data=good, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    bad = requests.post(url, data="{not json", headers=bearer, timeout=10)
    assert bad.status_code == 400 and "invalid JSON" in bad.json()["error"]
    missing = json.loads(good)
    del missing["requestParameters"]["layerName"]
    bad_field = requests.post(url, data=json.dumps(missing), headers=bearer, timeout=10)
    assert bad_field.status_code == 400 and "requestParameters.layerName" in bad_field.json()["error"]
    too_big = requests.post(url, data=b" " * (service.max_body_bytes + 1), headers=bearer, timeout=10)
    assert too_big.status_code == 413
    assert world.jira.issues == {} and sids(world) == {"public-share", "partner-share"}

    accepted = requests.post(url, data=good, headers=bearer, timeout=10)
    assert accepted.status_code == 202
    [case_id] = accepted.json()["case_ids"]
    case = settled(world, case_id, "contained")
    assert sids(world) == {"partner-share"} and case.ticket_key in world.jira.issues
    replay = requests.post(url, data=good, headers=bearer, timeout=10)
    assert replay.json()["accepted"][0]["status"] == "duplicate"


def test_healthz_reports_dependencies(world, serve):
    service = serve()
    assert requests.get(f"{service.url}/healthz", timeout=10).json()["checks"] == {"state": "ok"}
    deep = requests.get(f"{service.url}/healthz?deep=1", timeout=10)
    assert deep.status_code == 200 and deep.json()["checks"] == {"state": "ok", "jira": "ok", "slack": "ok"}
    from integrations.sandbox.http_emulator import Fault
    world.jira.faults.append(Fault(count=100, status=500))
    degraded = requests.get(f"{service.url}/healthz?deep=1", timeout=30)
    assert degraded.status_code == 503 and degraded.json()["checks"]["jira"].startswith("error")


def test_clicks_from_another_workspace_are_ignored(world, serve, tmp_path):
    service = serve(slack={"team_id": "T0OURTEAM"})
    outcome = detect(world, tmp_path)
    body = block_actions_body("revoke_grant", outcome["case_id"], team_id="T0EVILTEAM")
    response = requests.post(f"{service.url}/slack/actions", data=body, headers=signed_headers(body), timeout=10)
    assert response.status_code == 200
    time.sleep(0.3)
    assert case_of(world, outcome["case_id"]).decision == ""
    assert world.slack.ephemeral == [] and "partner-share" in sids(world)


def test_a_new_grant_after_a_closed_case_opens_a_new_linked_case(world, serve, tmp_path):
    service = serve()
    first = detect(world, tmp_path)
    click(service.url, "revoke_grant", first["case_id"])
    settled(world, first["case_id"], "revoked")

    world.grant(LAYER, 1, "partner-share", PARTNER_ACCOUNT_ID)  # granted again
    second = detect(world, tmp_path)
    assert second["case_id"] != first["case_id"] and second["decision"] == "awaiting_approval"
    assert second["ticket"] != first["ticket"]
    links = world.jira.issues[second["ticket"]]["fields"]["issuelinks"]
    assert [link["outwardIssue"]["key"] for link in links] == [first["ticket"]]
    assert first["ticket"] in world.jira.issues[second["ticket"]]["fields"]["description"]
