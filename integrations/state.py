"""The state store: cases, their history, processed events, decisions, jobs and
exceptions. SQLite here; ``state_dynamodb.py`` keeps the same promises in DynamoDB.

A case is one layer version + one grantee. At most one case per (layer version,
grantee) is open at a time, enforced by a partial unique index so that two
processes sharing one file still agree. Decisions are conditional updates: the
first one wins, and it is written together with the job that carries it out, so
a crash after Slack's ack loses nothing.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Protocol

# A case stays open while LayerGuard still waits on something. Once a grant is contained
# it is closed: the same grant granted again is a new incident, a new case linked to it.
OPEN_STATUSES = frozenset({"received", "awaiting_approval", "notified", "failed"})
JSON_FIELDS = ("removed_statements", "detection", "slack_blocks")


@dataclass(frozen=True)
class Case:
    case_id: str
    case_key: str
    layer_version_arn: str
    grantee: str
    grant_kind: str
    severity: str
    status: str = "received"
    ticket_key: str = ""
    slack_channel: str = ""
    slack_ts: str = ""
    slack_blocks: tuple[dict, ...] = ()
    removed_statements: tuple[dict, ...] = ()
    detection: dict = field(default_factory=dict)
    decision: str = ""
    decision_by: str = ""
    decision_at: float = 0.0
    reminded_at: float = 0.0
    escalated_at: float = 0.0
    previous_ticket: str = ""
    ticket_intent_at: float = 0.0  # a ticket creation was started (it may have landed)
    slack_intent_at: float = 0.0  # a message post was started (it may have landed)
    ticket_intent_by: str = ""  # host:pid that started it
    slack_intent_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


CASE_FIELDS = tuple(Case.__dataclass_fields__)


@dataclass(frozen=True)
class HistoryEntry:
    case_id: str
    at: float
    status: str
    note: str


@dataclass(frozen=True)
class Job:
    job_id: int
    kind: str
    case_id: str
    payload: dict
    attempts: int
    steps: dict[str, str]  # step done -> what it found, so a resumed job can report it


@dataclass(frozen=True)
class GrantException:
    layer_arn: str
    grantee: str
    expires_at: float
    created_by: str
    case_id: str


THIS_PROCESS = f"{socket.gethostname()}:{os.getpid()}"


def alive_elsewhere(owner: str) -> bool:
    """Is the process that recorded an intent another one, still running? (Other hosts: assume so.)"""
    host, _, pid = owner.rpartition(":")
    if owner == THIS_PROCESS or not pid.isdigit():
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def intent_fields(what: str) -> tuple[str, str, str]:
    """The case fields of a create intent ("ticket" or "slack"): when, by whom, and what it made."""
    return f"{what}_intent_at", f"{what}_intent_by", {"ticket": "ticket_key", "slack": "slack_ts"}[what]


def create_is_taken(existing: str, earlier: float, owner: str, now: float, lease_seconds: float) -> bool:
    """The thing exists already, or a live process claimed its creation within the lease."""
    return bool(existing) or bool(earlier and now - earlier < lease_seconds and alive_elsewhere(owner))


def check_case_fields(changes: Iterable[str]) -> None:
    unknown = set(changes) - set(CASE_FIELDS)
    if unknown:
        raise ValueError(f"unknown case fields: {sorted(unknown)}")


def case_key(layer_version_arn: str, grantee: str) -> str:
    return f"{layer_version_arn}|{grantee}"


def new_case_id() -> str:
    return "LG-" + uuid.uuid4().hex[:10].upper()


class StateStore(Protocol):
    def open_case(self, case: Case) -> tuple[Case, bool]: ...
    def get_case(self, case_id: str) -> Case | None: ...
    def update_case(self, case_id: str, note: str = "", **changes: Any) -> Case: ...
    def latest_closed_case(self, key: str) -> Case | None: ...
    def list_cases(self) -> list[Case]: ...
    def grants_by_actor(self, actor_arn: str) -> int: ...
    def claim_create(self, case_id: str, what: str, lease_seconds: float = 120.0) -> tuple[bool, float]: ...
    def release_create(self, case_id: str, what: str) -> None: ...
    def history(self, case_id: str) -> list[HistoryEntry]: ...
    def claim_event(self, event_id: str, case_id: str) -> str: ...
    def event_status(self, event_id: str) -> tuple[str, str] | None: ...
    def event_steps(self, event_id: str) -> frozenset[str]: ...
    def mark_event_step(self, event_id: str, step: str) -> None: ...
    def finish_event(self, event_id: str) -> None: ...
    def record_decision(self, case_id: str, decision: str, by: str, waiting_status: str,
                        job_kind: str, payload: dict | None = None) -> bool: ...
    def enqueue(self, kind: str, case_id: str, payload: dict | None = None) -> int: ...
    def claim_job(self, lease_seconds: float = 300.0, job_id: int | None = None) -> Job | None: ...
    def has_pending(self, kind: str, case_id: str) -> bool: ...
    def mark_job_step(self, job_id: int, step: str, detail: str = "") -> None: ...
    def finish_job(self, job_id: int) -> None: ...
    def retry_job(self, job_id: int, error: str, delay_seconds: float) -> None: ...
    def release_running_jobs(self) -> int: ...
    def pending_jobs(self) -> list[tuple[Job, str]]: ...
    def add_exception(self, exception: GrantException) -> None: ...
    def active_exception(self, layer_arn: str, grantee: str) -> GrantException | None: ...
    def list_exceptions(self) -> list[GrantException]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    case_key TEXT NOT NULL,
    layer_version_arn TEXT NOT NULL,
    grantee TEXT NOT NULL,
    grant_kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    is_open INTEGER NOT NULL,
    ticket_key TEXT NOT NULL DEFAULT '',
    slack_channel TEXT NOT NULL DEFAULT '',
    slack_ts TEXT NOT NULL DEFAULT '',
    slack_blocks TEXT NOT NULL DEFAULT '[]',
    removed_statements TEXT NOT NULL DEFAULT '[]',
    detection TEXT NOT NULL DEFAULT '{}',
    decision TEXT NOT NULL DEFAULT '',
    decision_by TEXT NOT NULL DEFAULT '',
    decision_at REAL NOT NULL DEFAULT 0,
    reminded_at REAL NOT NULL DEFAULT 0,
    escalated_at REAL NOT NULL DEFAULT 0,
    previous_ticket TEXT NOT NULL DEFAULT '',
    ticket_intent_at REAL NOT NULL DEFAULT 0,
    slack_intent_at REAL NOT NULL DEFAULT 0,
    ticket_intent_by TEXT NOT NULL DEFAULT '',
    slack_intent_by TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_case_per_grant ON cases(case_key) WHERE is_open = 1;
CREATE INDEX IF NOT EXISTS cases_by_key ON cases(case_key, created_at);
CREATE TABLE IF NOT EXISTS case_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    at REAL NOT NULL,
    status TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_case ON case_history(case_id, id);
CREATE TABLE IF NOT EXISTS processed_events (
    event_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    steps TEXT NOT NULL DEFAULT '[]',
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    case_id TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    steps TEXT NOT NULL DEFAULT '{}',
    not_before REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(status, not_before);
CREATE TABLE IF NOT EXISTS grant_exceptions (
    layer_arn TEXT NOT NULL,
    grantee TEXT NOT NULL,
    expires_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    case_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (layer_arn, grantee)
);
"""



class SQLiteStateStore:
    def __init__(self, path: str | Path, clock=time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._db().executescript(_SCHEMA)  # idempotent; executescript manages its own transaction

    # -- plumbing

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    class _Tx:
        """A write transaction. Threads of one process queue on a lock rather than on
        SQLite's busy handler, whose sleeps grow to 100 ms under contention."""

        def __init__(self, db: sqlite3.Connection, lock: threading.Lock):
            self.db, self.lock = db, lock

        def __enter__(self) -> sqlite3.Connection:
            self.lock.acquire()
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.lock.release()
                raise
            return self.db

        def __exit__(self, exc_type, *_):
            try:
                self.db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.lock.release()

    def _tx(self) -> "_Tx":
        return self._Tx(self._db(), self._write_lock)

    def ping(self) -> None:
        self._db().execute("SELECT 1").fetchone()

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @staticmethod
    def _row_to_case(row: sqlite3.Row) -> Case:
        data = {name: row[name] for name in CASE_FIELDS}
        for name in JSON_FIELDS:
            data[name] = json.loads(data[name])
        data["removed_statements"] = tuple(data["removed_statements"])
        data["slack_blocks"] = tuple(data["slack_blocks"])
        return Case(**data)

    @staticmethod
    def _encode(name: str, value: Any) -> Any:
        if name in JSON_FIELDS:
            return json.dumps(list(value) if isinstance(value, tuple) else value, default=str)
        return value

    def _history(self, db: sqlite3.Connection, case_id: str, status: str, note: str) -> None:
        db.execute("INSERT INTO case_history (case_id, at, status, note) VALUES (?, ?, ?, ?)",
                   (case_id, self.clock(), status, note))

    def _enqueue(self, db: sqlite3.Connection, kind: str, case_id: str, payload: dict | None) -> int:
        cursor = db.execute("INSERT INTO jobs (kind, case_id, payload, created_at) VALUES (?, ?, ?, ?)",
                            (kind, case_id, json.dumps(payload or {}, default=str), self.clock()))
        return int(cursor.lastrowid)

    # -- cases

    def open_case(self, case: Case) -> tuple[Case, bool]:
        """Insert the case unless one is already open for its grant; return (case, created)."""
        now = self.clock()
        with self._tx() as db:
            row = db.execute("SELECT * FROM cases WHERE case_key = ? AND is_open = 1", (case.case_key,)).fetchone()
            if row:
                return self._row_to_case(row), False
            case = replace(case, created_at=now, updated_at=now)
            values = [self._encode(name, getattr(case, name)) for name in CASE_FIELDS]
            db.execute(f"INSERT INTO cases ({', '.join(CASE_FIELDS)}, is_open) VALUES "
                       f"({', '.join('?' for _ in CASE_FIELDS)}, ?)", (*values, int(case.is_open)))
            self._history(db, case.case_id, case.status, "case opened")
            return case, True

    def get_case(self, case_id: str) -> Case | None:
        row = self._db().execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return self._row_to_case(row) if row else None

    def update_case(self, case_id: str, note: str = "", **changes: Any) -> Case:
        check_case_fields(changes)
        encoded = {name: self._encode(name, value) for name, value in changes.items()}
        encoded["updated_at"] = self.clock()
        if "status" in encoded:
            encoded["is_open"] = int(encoded["status"] in OPEN_STATUSES)
        assignments = ", ".join(f"{name} = ?" for name in encoded)
        with self._tx() as db:
            cursor = db.execute(f"UPDATE cases SET {assignments} WHERE case_id = ?", (*encoded.values(), case_id))
            if cursor.rowcount != 1:
                raise KeyError(case_id)
            row = db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
            if "status" in changes or note:
                self._history(db, case_id, row["status"], note)
        return self._row_to_case(row)

    def latest_closed_case(self, key: str) -> Case | None:
        row = self._db().execute("SELECT * FROM cases WHERE case_key = ? AND is_open = 0 AND ticket_key != '' "
                                 "ORDER BY created_at DESC LIMIT 1", (key,)).fetchone()
        return self._row_to_case(row) if row else None

    def claim_create(self, case_id: str, what: str, lease_seconds: float = 120.0) -> tuple[bool, float]:
        """Record the intent to create the case's ticket or message before doing it.

        Returns (claimed, earlier intent time). Only one live process holds the claim: one
        that died, or that held it longer than ``lease_seconds``, loses it. An earlier
        intent means an earlier attempt may have landed, so the caller looks for it first.
        """
        at, by, done = intent_fields(what)
        now = self.clock()
        with self._tx() as db:
            row = db.execute(f"SELECT {at}, {by}, {done} FROM cases WHERE case_id = ?", (case_id,)).fetchone()
            earlier, owner, existing = row[0], row[1], row[2]
            if create_is_taken(existing, earlier, owner, now, lease_seconds):
                return False, earlier
            db.execute(f"UPDATE cases SET {at} = ?, {by} = ? WHERE case_id = ?", (now, THIS_PROCESS, case_id))
            return True, earlier

    def release_create(self, case_id: str, what: str) -> None:
        """The attempt certainly created nothing: the next one need not look for it."""
        with self._tx() as db:
            db.execute(f"UPDATE cases SET {what}_intent_at = 0, {what}_intent_by = '' WHERE case_id = ?", (case_id,))

    def grants_by_actor(self, actor_arn: str) -> int:
        """How many cases this actor's grants have opened (for the actor profile)."""
        if not actor_arn:
            return 0
        return self._db().execute("SELECT COUNT(*) FROM cases WHERE json_extract(detection, '$.actor.arn') = ?",
                                  (actor_arn,)).fetchone()[0]

    def list_cases(self) -> list[Case]:
        rows = self._db().execute("SELECT * FROM cases ORDER BY created_at, case_id").fetchall()
        return [self._row_to_case(row) for row in rows]

    def history(self, case_id: str) -> list[HistoryEntry]:
        rows = self._db().execute("SELECT case_id, at, status, note FROM case_history WHERE case_id = ? ORDER BY id",
                                  (case_id,)).fetchall()
        return [HistoryEntry(*row) for row in rows]

    # -- events

    def claim_event(self, event_id: str, case_id: str) -> str:
        """Record that ``event_id`` belongs to ``case_id``; return the case it belongs to."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO processed_events (event_id, case_id, done, at) VALUES (?, ?, 0, ?)",
                       (event_id, case_id, self.clock()))
            return db.execute("SELECT case_id FROM processed_events WHERE event_id = ?", (event_id,)).fetchone()[0]

    def event_status(self, event_id: str) -> tuple[str, str] | None:
        """(case_id, "done" | "in_progress") for an event seen before, else None."""
        row = self._db().execute("SELECT case_id, done FROM processed_events WHERE event_id = ?", (event_id,)).fetchone()
        return (row[0], "done" if row[1] else "in_progress") if row else None

    def event_steps(self, event_id: str) -> frozenset[str]:
        row = self._db().execute("SELECT steps FROM processed_events WHERE event_id = ?", (event_id,)).fetchone()
        return frozenset(json.loads(row[0])) if row else frozenset()

    def mark_event_step(self, event_id: str, step: str) -> None:
        with self._tx() as db:
            row = db.execute("SELECT steps FROM processed_events WHERE event_id = ?", (event_id,)).fetchone()
            steps = sorted(set(json.loads(row[0])) | {step}) if row else [step]
            db.execute("UPDATE processed_events SET steps = ? WHERE event_id = ?", (json.dumps(steps), event_id))

    def finish_event(self, event_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE processed_events SET done = 1 WHERE event_id = ?", (event_id,))

    # -- decisions and jobs

    def record_decision(self, case_id: str, decision: str, by: str, waiting_status: str,
                        job_kind: str, payload: dict | None = None) -> bool:
        """Conditionally record the case's one decision with the job that applies it.

        True for the winner; False when the case was already decided or is not in
        ``waiting_status``. Kept to three statements: it runs inside Slack's ack.
        """
        now = self.clock()
        with self._tx() as db:
            updated = db.execute(
                "UPDATE cases SET decision = ?, decision_by = ?, decision_at = ?, updated_at = ? "
                "WHERE case_id = ? AND decision = '' AND status = ?",
                (decision, by, now, now, case_id, waiting_status)).rowcount
            if updated != 1:
                return False
            self._history(db, case_id, waiting_status, f"decision recorded: {decision} by {by}")
            self._enqueue(db, job_kind, case_id, payload)
        return True

    def enqueue(self, kind: str, case_id: str, payload: dict | None = None) -> int:
        with self._tx() as db:
            return self._enqueue(db, kind, case_id, payload)

    _READY = ("SELECT * FROM jobs WHERE (status = 'pending' AND not_before <= ?) "
              "OR (status = 'running' AND lease_until < ?) ORDER BY job_id LIMIT 1")

    _BY_ID = "SELECT * FROM jobs WHERE job_id = ? AND status != 'done'"

    def claim_job(self, lease_seconds: float = 300.0, job_id: int | None = None) -> Job | None:
        """The oldest ready job, or job ``job_id`` whatever its schedule (`layerguard retry`)."""
        now = self.clock()
        query, params = (self._BY_ID, (job_id,)) if job_id is not None else (self._READY, (now, now))
        if self._db().execute(query, params).fetchone() is None:
            return None  # the common idle answer, without taking the write lock
        with self._tx() as db:
            row = db.execute(query, params).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = ? WHERE job_id = ?",
                       (now + lease_seconds, row["job_id"]))
        return Job(row["job_id"], row["kind"], row["case_id"], json.loads(row["payload"]), row["attempts"] + 1,
                   json.loads(row["steps"]))

    def mark_job_step(self, job_id: int, step: str, detail: str = "") -> None:
        with self._tx() as db:
            steps = json.loads(db.execute("SELECT steps FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0])
            steps[step] = detail
            db.execute("UPDATE jobs SET steps = ? WHERE job_id = ?", (json.dumps(steps), job_id))

    def finish_job(self, job_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = 'done', last_error = '' WHERE job_id = ?", (job_id,))

    def retry_job(self, job_id: int, error: str, delay_seconds: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = 'pending', not_before = ?, last_error = ? WHERE job_id = ?",
                       (self.clock() + delay_seconds, error[:500], job_id))

    def release_running_jobs(self) -> int:
        """At start-up: jobs a previous process was running when it died are pending again."""
        with self._tx() as db:
            return db.execute("UPDATE jobs SET status = 'pending', lease_until = 0 WHERE status = 'running'").rowcount

    def has_pending(self, kind: str, case_id: str) -> bool:
        return self._db().execute("SELECT 1 FROM jobs WHERE kind = ? AND case_id = ? AND status != 'done'",
                                  (kind, case_id)).fetchone() is not None

    def pending_jobs(self) -> list[tuple[Job, str]]:
        rows = self._db().execute("SELECT * FROM jobs WHERE status != 'done' ORDER BY job_id").fetchall()
        return [(Job(r["job_id"], r["kind"], r["case_id"], json.loads(r["payload"]), r["attempts"],
                     json.loads(r["steps"])), r["last_error"]) for r in rows]

    # -- exceptions (a kept grant, trusted until it expires)

    def add_exception(self, exception: GrantException) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO grant_exceptions VALUES (?, ?, ?, ?, ?, ?)",
                       (exception.layer_arn, exception.grantee, exception.expires_at, exception.created_by,
                        exception.case_id, self.clock()))

    def active_exception(self, layer_arn: str, grantee: str) -> GrantException | None:
        row = self._db().execute(
            "SELECT layer_arn, grantee, expires_at, created_by, case_id FROM grant_exceptions "
            "WHERE layer_arn = ? AND grantee = ? AND expires_at > ?", (layer_arn, grantee, self.clock())).fetchone()
        return GrantException(*row) if row else None

    def list_exceptions(self) -> list[GrantException]:
        rows = self._db().execute("SELECT layer_arn, grantee, expires_at, created_by, case_id "
                                  "FROM grant_exceptions ORDER BY expires_at").fetchall()
        return [GrantException(*row) for row in rows]
