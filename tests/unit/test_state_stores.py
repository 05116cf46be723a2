"""One contract, two stores: SQLite (a real file) and DynamoDB (moto). Every guarantee the
playbook leans on is checked on both, so either can sit behind `serve`, the CLI or Lambda."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from moto import mock_aws

from integrations.retry import BOTOCORE_CONFIG
from integrations.state import Case, GrantException, SQLiteStateStore, case_key, new_case_id
from integrations.state_dynamodb import DynamoDBStateStore

LAYER_VERSION = "arn:aws:lambda:us-east-1:123456789012:layer:utils:1"


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def dynamodb_store(clock, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1", config=BOTOCORE_CONFIG)
        DynamoDBStateStore.create_table(client, "layerguard-state")
        yield DynamoDBStateStore(client, "layerguard-state", clock=clock)


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, tmp_path, clock):
    if request.param == "sqlite":
        return SQLiteStateStore(tmp_path / "state.sqlite", clock=clock)
    return request.getfixturevalue("dynamodb_store")


def a_case(grantee: str = "account:210987654321", actor: str = "arn:aws:iam::123456789012:user/dev") -> Case:
    return Case(case_id=new_case_id(), case_key=case_key(LAYER_VERSION, grantee), layer_version_arn=LAYER_VERSION,
                grantee=grantee, grant_kind="cross-account", severity="high",
                detection={"event_id": "e1", "actor": {"arn": actor}, "score": 1.5})


def test_one_open_case_per_grant_and_a_new_one_after_it_closes(store, clock):
    first, created = store.open_case(a_case())
    assert created
    again, created_again = store.open_case(a_case())
    assert (again.case_id, created_again) == (first.case_id, False)

    store.update_case(first.case_id, status="contained", ticket_key="SEC-1", note="grant removed")
    clock.now += 60
    second, created = store.open_case(a_case())
    assert created and second.case_id != first.case_id
    assert store.latest_closed_case(first.case_key).case_id == first.case_id
    assert [c.case_id for c in store.list_cases()] == [first.case_id, second.case_id]


def test_concurrent_openings_of_one_grant_make_one_case(store):
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: store.open_case(a_case()), range(8)))
    assert sum(created for _, created in results) == 1
    assert len({case.case_id for case, _ in results}) == 1
    assert len(store.list_cases()) == 1


def test_cases_round_trip_every_field_and_keep_their_history(store, clock):
    case, _ = store.open_case(a_case())
    clock.now += 5
    updated = store.update_case(case.case_id, note="ticket opened", ticket_key="SEC-7",
                                removed_statements=({"Sid": "pub", "Principal": "*"},), decision_at=12.5)
    assert updated.ticket_key == "SEC-7" and updated.removed_statements == ({"Sid": "pub", "Principal": "*"},)
    assert updated.updated_at == clock.now and updated.decision_at == 12.5
    assert store.get_case(case.case_id) == updated
    assert store.get_case(case.case_id).detection == {"event_id": "e1", "actor": {"arn": "arn:aws:iam::123456789012:user/dev"},
                                                      "score": 1.5}
    store.update_case(case.case_id, status="revoked", note="approver revoked")
    assert [(h.status, h.note) for h in store.history(case.case_id)] == [
        ("received", "case opened"), ("received", "ticket opened"), ("revoked", "approver revoked")]
    with pytest.raises(ValueError, match="unknown case fields"):
        store.update_case(case.case_id, colour="red")
    with pytest.raises(KeyError):
        store.update_case("LG-MISSING", status="revoked")


def test_one_case_per_event_and_its_steps(store):
    case, _ = store.open_case(a_case())
    assert store.claim_event("evt-1", case.case_id) == case.case_id
    assert store.claim_event("evt-1", "LG-OTHER") == case.case_id  # the first claim wins
    assert store.event_status("evt-1") == (case.case_id, "in_progress")
    store.mark_event_step("evt-1", "contained")
    store.mark_event_step("evt-1", "ticket")
    store.mark_event_step("never-seen", "ticket")  # changes nothing, creates nothing
    assert store.event_steps("evt-1") == {"contained", "ticket"}
    assert store.event_status("never-seen") is None and store.event_steps("never-seen") == frozenset()
    store.finish_event("evt-1")
    assert store.event_status("evt-1") == (case.case_id, "done")


def test_the_first_decision_wins_and_brings_its_job(store):
    case, _ = store.open_case(a_case())
    store.update_case(case.case_id, status="awaiting_approval")
    assert store.record_decision(case.case_id, "revoke", "U1", "awaiting_approval", "apply_decision",
                                 {"decision": "revoke"})
    assert not store.record_decision(case.case_id, "keep", "U2", "awaiting_approval", "apply_decision")
    decided = store.get_case(case.case_id)
    assert (decided.decision, decided.decision_by) == ("revoke", "U1")
    assert [(job.kind, job.payload) for job, _ in store.pending_jobs()] == [("apply_decision", {"decision": "revoke"})]
    assert store.history(case.case_id)[-1].note == "decision recorded: revoke by U1"

    other, _ = store.open_case(a_case("account:999999999999"))
    assert not store.record_decision(other.case_id, "revoke", "U1", "awaiting_approval", "apply_decision")
    assert not store.record_decision("LG-MISSING", "revoke", "U1", "awaiting_approval", "apply_decision")


def test_jobs_run_oldest_first_once_per_lease_and_retry_later(store, clock):
    case, _ = store.open_case(a_case())
    first = store.enqueue("apply_decision", case.case_id, {"n": 1})
    second = store.enqueue("reminder", case.case_id, {"n": 2})
    assert store.has_pending("reminder", case.case_id) and not store.has_pending("expire", case.case_id)

    job = store.claim_job(lease_seconds=60)
    assert (job.job_id, job.attempts) == (first, 1)
    assert store.claim_job(lease_seconds=60).job_id == second
    assert store.claim_job(lease_seconds=60) is None  # both leased

    store.mark_job_step(first, "slack_updated", "ts 1.2")
    store.retry_job(first, "Jira 503", delay_seconds=30)
    assert store.claim_job() is None  # not before 30 s
    clock.now += 31
    again = store.claim_job(lease_seconds=60)
    assert (again.job_id, again.attempts, again.steps) == (first, 2, {"slack_updated": "ts 1.2"})
    assert dict((job.job_id, error) for job, error in store.pending_jobs())[first] == "Jira 503"

    store.finish_job(first)
    clock.now += 61  # the second job's lease ran out: its worker is presumed dead
    assert store.claim_job().job_id == second
    store.finish_job(second)
    assert store.pending_jobs() == [] and not store.has_pending("reminder", case.case_id)
    assert store.claim_job(job_id=second) is None


def test_a_job_can_be_run_by_id_whatever_its_schedule(store):
    case, _ = store.open_case(a_case())
    job_id = store.enqueue("apply_decision", case.case_id)
    store.retry_job(job_id, "down", delay_seconds=3600)
    assert store.claim_job() is None
    assert store.claim_job(job_id=job_id).job_id == job_id


def test_only_one_worker_claims_a_job(store):
    case, _ = store.open_case(a_case())
    store.enqueue("apply_decision", case.case_id)
    with ThreadPoolExecutor(max_workers=4) as pool:
        claimed = [job for job in pool.map(lambda _: store.claim_job(), range(8)) if job]
    assert len(claimed) == 1


def test_create_intents_tell_the_next_attempt_to_look_first(store, clock):
    case, _ = store.open_case(a_case())
    assert store.claim_create(case.case_id, "ticket") == (True, 0.0)
    clock.now += 1
    claimed, earlier = store.claim_create(case.case_id, "ticket")  # this process again, after a crash
    assert claimed and earlier == clock.now - 1
    store.release_create(case.case_id, "ticket")
    assert store.claim_create(case.case_id, "ticket") == (True, 0.0)
    store.update_case(case.case_id, ticket_key="SEC-1")
    assert store.claim_create(case.case_id, "ticket")[0] is False  # it exists: never create a second


def test_kept_grants_are_trusted_until_they_expire(store, clock):
    store.add_exception(GrantException("arn:layer:a", "account:1", clock.now + 100, "U1", "LG-1"))
    store.add_exception(GrantException("arn:layer:b", "account:2", clock.now + 50, "U2", "LG-2"))
    assert store.active_exception("arn:layer:a", "account:1").created_by == "U1"
    assert [e.layer_arn for e in store.list_exceptions()] == ["arn:layer:b", "arn:layer:a"]
    clock.now += 101
    assert store.active_exception("arn:layer:a", "account:1") is None


def test_grants_are_counted_per_actor(store):
    store.open_case(a_case("account:1", actor="arn:aws:iam::123456789012:user/dev"))
    store.open_case(a_case("account:2", actor="arn:aws:iam::123456789012:user/dev"))
    store.open_case(a_case("account:3", actor="arn:aws:iam::123456789012:role/ci"))
    assert store.grants_by_actor("arn:aws:iam::123456789012:user/dev") == 2
    assert store.grants_by_actor("") == 0


def test_dynamodb_items_written_before_a_field_existed_still_work(dynamodb_store):
    """A table outlives releases: a case item without a newer attribute reads with its default."""
    store = dynamodb_store
    case, _ = store.open_case(a_case())
    store.dynamodb.update_item(TableName=store.table, Key={"pk": {"S": f"CASE#{case.case_id}"}, "sk": {"S": "CASE"}},
                               UpdateExpression="REMOVE ticket_intent_at, ticket_intent_by, previous_ticket")
    assert store.get_case(case.case_id).previous_ticket == ""
    assert store.claim_create(case.case_id, "ticket") == (True, 0.0)
