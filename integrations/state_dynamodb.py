"""The state store in DynamoDB, for running LayerGuard as several processes or Lambda
functions across hosts. Same interface and same guarantees as the SQLite store:

- one open case per (layer version, grantee): a lock item ``OPEN#<case key>`` written in
  the same transaction as the case, and deleted in the transaction that closes it;
- one case per CloudTrail event: a conditional put on ``EVENT#<event id>``;
- the case's one decision: a conditional update written in one transaction with its
  history entry and the job that applies it;
- jobs are claimed with a conditional update (status and attempt count unchanged), so two
  workers never run the same attempt; a job whose lease ran out is claimable again.

One table, string keys ``pk``/``sk``, two indexes: ``by_case_key`` (``case_key``,
``created_at``) and ``by_actor`` (``actor_arn``). ``create_table`` makes it for tests
and local use; deployments create it from ``deploy/`` and only read and write items.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any, Iterable, Iterator

from integrations.retry import aws_error_code, aws_retry
from integrations.state import (CASE_FIELDS, JSON_FIELDS, THIS_PROCESS, Case, GrantException, HistoryEntry, Job,
                                check_case_fields, create_is_taken, intent_fields)

_FLOAT_FIELDS = frozenset(name for name, f in Case.__dataclass_fields__.items() if f.type == "float")
# deploy/hub.yaml declares the same table; a test keeps the two equal.
TABLE_SCHEMA = {
    "AttributeDefinitions": [{"AttributeName": name, "AttributeType": kind} for name, kind in (
        ("pk", "S"), ("sk", "S"), ("case_key", "S"), ("created_at", "N"), ("actor_arn", "S"))],
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "GlobalSecondaryIndexes": [
        {"IndexName": "by_case_key", "Projection": {"ProjectionType": "ALL"},
         "KeySchema": [{"AttributeName": "case_key", "KeyType": "HASH"},
                       {"AttributeName": "created_at", "KeyType": "RANGE"}]},
        {"IndexName": "by_actor", "Projection": {"ProjectionType": "KEYS_ONLY"},
         "KeySchema": [{"AttributeName": "actor_arn", "KeyType": "HASH"}]}],
}
_JOBS = {"S": "JOB"}
_EXCEPTIONS = {"S": "EXCEPTION"}


class DynamoDBStateStore:
    def __init__(self, dynamodb_client, table: str, clock=time.time):
        self.dynamodb = dynamodb_client
        self.table = table
        self.clock = clock

    @staticmethod
    def create_table(dynamodb_client, table: str) -> None:
        """The table and its indexes (on-demand capacity), waiting until it is active."""
        dynamodb_client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **TABLE_SCHEMA)
        dynamodb_client.get_waiter("table_exists").wait(TableName=table)

    # -- plumbing

    def _call(self, operation: str, **kwargs) -> dict:
        return aws_retry(getattr(self.dynamodb, operation))(TableName=self.table, **kwargs)

    def _get(self, pk: str, sk: str) -> dict | None:
        return self._call("get_item", Key=_key(pk, sk), ConsistentRead=True).get("Item")

    def _query(self, **kwargs) -> Iterator[dict]:
        while True:
            page = self._call("query", **kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _transact(self, *items: dict) -> bool:
        """Write all of ``items`` or none; False when one of their conditions did not hold.

        A transaction cancelled only by a conflicting concurrent transaction is tried again."""
        writes = [{operation: {**body, "TableName": self.table}} for item in items for operation, body in item.items()]
        for attempt in range(5):
            try:
                aws_retry(self.dynamodb.transact_write_items)(TransactItems=writes)
                return True
            except self.dynamodb.exceptions.TransactionCanceledException as exc:
                codes = {reason.get("Code") for reason in exc.response.get("CancellationReasons", [])}
                if "ConditionalCheckFailed" in codes:
                    return False
                if "TransactionConflict" not in codes:
                    raise
                time.sleep(0.05 * 2 ** attempt)
        raise RuntimeError(f"DynamoDB table {self.table}: a transaction kept conflicting with others")

    def _history_item(self, case_id: str, status: str, note: str) -> dict:
        # Sorted by when it was written; the random tail keeps two entries of one instant apart.
        sk = f"H#{time.time_ns():020d}#{uuid.uuid4().hex[:8]}"
        return {"Put": {"Item": {**_key(f"CASE#{case_id}", sk), "at": _n(self.clock()), "status": {"S": status},
                                 "note": {"S": note}}}}

    def ping(self) -> None:
        self._get("PING", "PING")

    def close(self) -> None:
        pass

    # -- cases

    def open_case(self, case: Case) -> tuple[Case, bool]:
        """Insert the case unless one is already open for its grant; return (case, created)."""
        now = self.clock()
        case = replace(case, created_at=now, updated_at=now)
        for _ in range(5):
            lock = self._get(f"OPEN#{case.case_key}", "OPEN")
            if lock:
                existing = self.get_case(lock["case_id"]["S"])
                if existing and existing.is_open:
                    return existing, False
                self._drop_stale_lock(case.case_key, lock["case_id"]["S"])  # its case is gone or closed
                continue
            writes = [{"Put": {"Item": _case_item(case), "ConditionExpression": "attribute_not_exists(pk)"}},
                      self._history_item(case.case_id, case.status, "case opened")]
            if case.is_open:
                writes.append({"Put": {"Item": _open_lock(case), "ConditionExpression": "attribute_not_exists(pk)"}})
            if self._transact(*writes):
                return case, True
            # Another process opened a case for this grant first: the next turn returns it.
        raise RuntimeError(f"DynamoDB table {self.table}: could not open or find the case for {case.case_key}")

    def _drop_stale_lock(self, key: str, case_id: str) -> None:
        try:
            self._call("delete_item", Key=_key(f"OPEN#{key}", "OPEN"), ConditionExpression="case_id = :id",
                       ExpressionAttributeValues={":id": {"S": case_id}})
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            pass  # replaced meanwhile: the next look finds the new one

    def get_case(self, case_id: str) -> Case | None:
        item = self._get(f"CASE#{case_id}", "CASE")
        return _case_from_item(item) if item else None

    def update_case(self, case_id: str, note: str = "", **changes: Any) -> Case:
        check_case_fields(changes)
        before = self.get_case(case_id)
        if before is None:
            raise KeyError(case_id)
        after = replace(before, **changes, updated_at=self.clock())
        names = {f"#f{i}": name for i, name in enumerate([*changes, "updated_at"])}
        values = {f":v{i}": _value(name, getattr(after, name)) for i, name in enumerate([*changes, "updated_at"])}
        values[":status"] = {"S": before.status}
        sets = [f"#f{i} = :v{i}" for i in range(len(names))]
        if "status" in changes:
            sets.append("is_open = :open")
            values[":open"] = _n(int(after.is_open))
        writes = [{"Update": {"Key": _key(f"CASE#{case_id}", "CASE"), "UpdateExpression": "SET " + ", ".join(sets),
                              "ConditionExpression": "#status = :status",
                              "ExpressionAttributeNames": {**names, "#status": "status"},
                              "ExpressionAttributeValues": values}}]
        if before.is_open and not after.is_open:
            writes.append({"Delete": {"Key": _key(f"OPEN#{before.case_key}", "OPEN")}})
        elif after.is_open and not before.is_open:
            writes.append({"Put": {"Item": _open_lock(after), "ConditionExpression": "attribute_not_exists(pk)"}})
        if "status" in changes or note:
            writes.append(self._history_item(case_id, after.status, note))
        if not self._transact(*writes):
            current = self.get_case(case_id)
            if current is not None and current.status != before.status:
                return self.update_case(case_id, note, **changes)  # the status moved meanwhile: decide again
            raise RuntimeError(f"case {case_id}: another case for {before.case_key} is already open")
        return self.get_case(case_id) or after

    def latest_closed_case(self, key: str) -> Case | None:
        """The newest closed case of this grant that has a ticket (from an index, eventually consistent)."""
        for item in self._query(IndexName="by_case_key", KeyConditionExpression="case_key = :key",
                                ExpressionAttributeValues={":key": {"S": key}}, ScanIndexForward=False):
            case = _case_from_item(item)
            if not case.is_open and case.ticket_key:
                return case
        return None

    def claim_create(self, case_id: str, what: str, lease_seconds: float = 120.0) -> tuple[bool, float]:
        """Record the intent to create the case's ticket or message (see the SQLite store)."""
        at, by, done = intent_fields(what)
        for _ in range(10):
            case = self.get_case(case_id)
            if case is None:
                raise KeyError(case_id)
            earlier = getattr(case, at)
            if create_is_taken(getattr(case, done), earlier, getattr(case, by), self.clock(), lease_seconds):
                return False, earlier
            try:
                self._call("update_item", Key=_key(f"CASE#{case_id}", "CASE"),
                           UpdateExpression=f"SET {at} = :now, {by} = :me",
                           ConditionExpression=f"{at} = :earlier OR attribute_not_exists({at})",
                           ExpressionAttributeValues={":now": _n(self.clock()), ":me": {"S": THIS_PROCESS},
                                                      ":earlier": _n(earlier)})
                return True, earlier
            except self.dynamodb.exceptions.ConditionalCheckFailedException:
                continue  # someone else recorded an intent meanwhile: look again
        raise RuntimeError(f"case {case_id}: the {what} intent kept changing under us")

    def release_create(self, case_id: str, what: str) -> None:
        self._call("update_item", Key=_key(f"CASE#{case_id}", "CASE"),
                   UpdateExpression=f"SET {what}_intent_at = :zero, {what}_intent_by = :none",
                   ExpressionAttributeValues={":zero": _n(0), ":none": {"S": ""}})

    def grants_by_actor(self, actor_arn: str) -> int:
        if not actor_arn:
            return 0
        return sum(1 for _ in self._query(IndexName="by_actor", KeyConditionExpression="actor_arn = :arn",
                                          ExpressionAttributeValues={":arn": {"S": actor_arn}}))

    def list_cases(self) -> list[Case]:
        cases, kwargs = [], {"FilterExpression": "sk = :case", "ExpressionAttributeValues": {":case": {"S": "CASE"}}}
        while True:
            page = self._call("scan", **kwargs)
            cases += [_case_from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return sorted(cases, key=lambda c: (c.created_at, c.case_id))
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def history(self, case_id: str) -> list[HistoryEntry]:
        items = self._query(KeyConditionExpression="pk = :pk AND begins_with(sk, :h)", ConsistentRead=True,
                            ExpressionAttributeValues={":pk": {"S": f"CASE#{case_id}"}, ":h": {"S": "H#"}})
        return [HistoryEntry(case_id, float(i["at"]["N"]), i["status"]["S"], i["note"]["S"]) for i in items]

    # -- events

    def claim_event(self, event_id: str, case_id: str) -> str:
        """Record that ``event_id`` belongs to ``case_id``; return the case it belongs to."""
        try:
            self._call("put_item", Item={**_key(f"EVENT#{event_id}", "EVENT"), "case_id": {"S": case_id},
                                         "done": _n(0), "at": _n(self.clock())},
                       ConditionExpression="attribute_not_exists(pk)")
            return case_id
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return self._get(f"EVENT#{event_id}", "EVENT")["case_id"]["S"]

    def event_status(self, event_id: str) -> tuple[str, str] | None:
        item = self._get(f"EVENT#{event_id}", "EVENT")
        return (item["case_id"]["S"], "done" if item["done"]["N"] == "1" else "in_progress") if item else None

    def event_steps(self, event_id: str) -> frozenset[str]:
        item = self._get(f"EVENT#{event_id}", "EVENT") or {}
        return frozenset(item.get("steps", {}).get("SS", []))

    def mark_event_step(self, event_id: str, step: str) -> None:
        self._update_if_exists(_key(f"EVENT#{event_id}", "EVENT"), "ADD steps :step", {":step": {"SS": [step]}})

    def finish_event(self, event_id: str) -> None:
        self._update_if_exists(_key(f"EVENT#{event_id}", "EVENT"), "SET done = :one", {":one": _n(1)})

    def _update_if_exists(self, key: dict, expression: str, values: dict, names: dict | None = None) -> None:
        """Like SQL's UPDATE: a missing item stays missing (DynamoDB would create it)."""
        try:
            self._call("update_item", Key=key, UpdateExpression=expression, ExpressionAttributeValues=values,
                       ConditionExpression="attribute_exists(pk)", **({"ExpressionAttributeNames": names}
                                                                     if names else {}))
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            pass

    # -- decisions and jobs

    def record_decision(self, case_id: str, decision: str, by: str, waiting_status: str,
                        job_kind: str, payload: dict | None = None) -> bool:
        """Conditionally record the case's one decision with the job that applies it (one transaction)."""
        now = self.clock()
        return self._transact(
            {"Update": {"Key": _key(f"CASE#{case_id}", "CASE"),
                        "UpdateExpression": "SET decision = :d, decision_by = :by, decision_at = :now, updated_at = :now",
                        "ConditionExpression": "attribute_exists(pk) AND decision = :none AND #status = :status",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {":d": {"S": decision}, ":by": {"S": by}, ":now": _n(now),
                                                      ":none": {"S": ""}, ":status": {"S": waiting_status}}}},
            self._history_item(case_id, waiting_status, f"decision recorded: {decision} by {by}"),
            {"Put": {"Item": self._job_item(job_kind, case_id, payload)}})

    def _job_item(self, kind: str, case_id: str, payload: dict | None) -> dict:
        # Job ids come from a counter so that jobs run oldest first, as in the SQLite store.
        job_id = int(self._call("update_item", Key=_key("COUNTER", "JOB"), UpdateExpression="ADD n :one",
                                ExpressionAttributeValues={":one": _n(1)}, ReturnValues="UPDATED_NEW")
                     ["Attributes"]["n"]["N"])
        return {"pk": _JOBS, "sk": {"S": f"{job_id:012d}"}, "job_id": _n(job_id), "kind": {"S": kind},
                "case_id": {"S": case_id}, "payload": {"S": json.dumps(payload or {}, default=str)},
                "status": {"S": "pending"}, "attempts": _n(0), "steps": {"M": {}}, "not_before": _n(0),
                "lease_until": _n(0), "last_error": {"S": ""}, "created_at": _n(self.clock())}

    def enqueue(self, kind: str, case_id: str, payload: dict | None = None) -> int:
        item = self._job_item(kind, case_id, payload)
        self._call("put_item", Item=item)
        return int(item["job_id"]["N"])

    def _jobs(self) -> Iterator[dict]:
        """Jobs not done, oldest first (a done job is deleted: the case history keeps the record)."""
        return self._query(KeyConditionExpression="pk = :jobs", ExpressionAttributeValues={":jobs": _JOBS},
                           ConsistentRead=True)

    def claim_job(self, lease_seconds: float = 300.0, job_id: int | None = None) -> Job | None:
        """The oldest ready job, or job ``job_id`` whatever its schedule (`layerguard retry`)."""
        now = self.clock()
        if job_id is not None:
            item = self._get("JOB", f"{job_id:012d}")
            candidates: Iterable[dict] = [item] if item else []
        else:
            candidates = (item for item in self._jobs() if _ready(item, now))
        for item in candidates:
            try:
                self._call("update_item", Key=_key("JOB", item["sk"]["S"]),
                           UpdateExpression="SET #status = :running, attempts = :next, lease_until = :lease",
                           ConditionExpression="#status = :status AND attempts = :attempts",
                           ExpressionAttributeNames={"#status": "status"},
                           ExpressionAttributeValues={
                               ":running": {"S": "running"}, ":next": _n(int(item["attempts"]["N"]) + 1),
                               ":lease": _n(now + lease_seconds), ":status": item["status"],
                               ":attempts": item["attempts"]})
            except self.dynamodb.exceptions.ConditionalCheckFailedException:
                continue  # another worker claimed it first
            job, _ = _job_from_item(item)
            return replace(job, attempts=job.attempts + 1)
        return None

    def mark_job_step(self, job_id: int, step: str, detail: str = "") -> None:
        self._update_if_exists(_key("JOB", f"{job_id:012d}"), "SET steps.#step = :detail",
                               {":detail": {"S": detail}}, {"#step": step})

    def finish_job(self, job_id: int) -> None:
        self._call("delete_item", Key=_key("JOB", f"{job_id:012d}"))

    def retry_job(self, job_id: int, error: str, delay_seconds: float) -> None:
        self._update_if_exists(_key("JOB", f"{job_id:012d}"),
                               "SET #status = :pending, not_before = :when, last_error = :error",
                               {":pending": {"S": "pending"}, ":when": _n(self.clock() + delay_seconds),
                                ":error": {"S": error[:500]}}, {"#status": "status"})

    def release_running_jobs(self) -> int:
        """Nothing to do: many processes share the table, so a running job is only taken
        back when its lease runs out (``claim_job`` does that)."""
        return 0

    def has_pending(self, kind: str, case_id: str) -> bool:
        return any(i["kind"]["S"] == kind and i["case_id"]["S"] == case_id for i in self._jobs())

    def pending_jobs(self) -> list[tuple[Job, str]]:
        return [_job_from_item(item) for item in self._jobs()]

    # -- exceptions (a kept grant, trusted until it expires)

    def add_exception(self, exception: GrantException) -> None:
        self._call("put_item", Item={
            "pk": _EXCEPTIONS, "sk": {"S": f"{exception.layer_arn}|{exception.grantee}"},
            "layer_arn": {"S": exception.layer_arn}, "grantee": {"S": exception.grantee},
            "expires_at": _n(exception.expires_at), "created_by": {"S": exception.created_by},
            "case_id": {"S": exception.case_id}, "created_at": _n(self.clock())})

    def active_exception(self, layer_arn: str, grantee: str) -> GrantException | None:
        item = self._get("EXCEPTION", f"{layer_arn}|{grantee}")
        exception = _exception_from_item(item) if item else None
        return exception if exception and exception.expires_at > self.clock() else None

    def list_exceptions(self) -> list[GrantException]:
        items = self._query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": _EXCEPTIONS})
        return sorted((_exception_from_item(item) for item in items), key=lambda e: e.expires_at)


# ----------------------------------------------------------------------------- items


def _key(pk: str, sk: str) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _n(number: float) -> dict:
    return {"N": repr(number) if isinstance(number, float) else str(number)}


def _value(name: str, value: Any) -> dict:
    if name in JSON_FIELDS:
        return {"S": json.dumps(list(value) if isinstance(value, tuple) else value, default=str)}
    if name in _FLOAT_FIELDS:
        return _n(float(value))
    return {"S": str(value)}


def _case_item(case: Case) -> dict:
    item = {**_key(f"CASE#{case.case_id}", "CASE"), "is_open": _n(int(case.is_open))}
    item.update({name: _value(name, getattr(case, name)) for name in CASE_FIELDS})
    actor = ((case.detection or {}).get("actor") or {}).get("arn")
    if actor:  # only cases with an actor appear in the by_actor index
        item["actor_arn"] = {"S": actor}
    return item


def _case_from_item(item: dict) -> Case:
    data: dict[str, Any] = {}
    for name in CASE_FIELDS:
        raw = item.get(name)
        if raw is None:
            continue  # written before the field existed: the dataclass default applies
        if name in JSON_FIELDS:
            value = json.loads(raw["S"])
            data[name] = tuple(value) if isinstance(value, list) else value
        else:
            data[name] = float(raw["N"]) if "N" in raw else raw["S"]
    return Case(**data)


def _open_lock(case: Case) -> dict:
    return {**_key(f"OPEN#{case.case_key}", "OPEN"), "case_id": {"S": case.case_id}}


def _ready(item: dict, now: float) -> bool:
    status = item["status"]["S"]
    return ((status == "pending" and float(item["not_before"]["N"]) <= now)
            or (status == "running" and float(item["lease_until"]["N"]) < now))


def _job_from_item(item: dict) -> tuple[Job, str]:
    steps = {name: value["S"] for name, value in item["steps"]["M"].items()}
    return (Job(int(item["job_id"]["N"]), item["kind"]["S"], item["case_id"]["S"], json.loads(item["payload"]["S"]),
                int(item["attempts"]["N"]), steps), item["last_error"]["S"])


def _exception_from_item(item: dict) -> GrantException:
    return GrantException(item["layer_arn"]["S"], item["grantee"]["S"], float(item["expires_at"]["N"]),
                          item["created_by"]["S"], item["case_id"]["S"])
