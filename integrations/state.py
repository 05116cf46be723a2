"""The state store: cases, their history, processed events. SQLite here; DynamoDB later.

A case is one layer version + one grantee. At most one case per (layer version,
grantee) is open at a time, enforced by a partial unique index so that two
processes sharing one file still agree.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

OPEN_STATUSES = frozenset({"received", "contained", "already_contained", "awaiting_approval", "notified", "failed"})


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
    removed_statements: tuple[dict, ...] = ()
    detection: dict = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class HistoryEntry:
    case_id: str
    at: float
    status: str
    note: str


def case_key(layer_version_arn: str, grantee: str) -> str:
    return f"{layer_version_arn}|{grantee}"


def new_case_id() -> str:
    return "LG-" + uuid.uuid4().hex[:10].upper()


class StateStore(Protocol):
    def open_case(self, case: Case) -> tuple[Case, bool]: ...
    def get_case(self, case_id: str) -> Case | None: ...
    def update_case(self, case_id: str, note: str = "", **changes: Any) -> Case: ...
    def claim_event(self, event_id: str, case_id: str) -> str: ...
    def event_status(self, event_id: str) -> tuple[str, str] | None: ...
    def finish_event(self, event_id: str) -> None: ...
    def list_cases(self) -> list[Case]: ...
    def history(self, case_id: str) -> list[HistoryEntry]: ...


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
    removed_statements TEXT NOT NULL DEFAULT '[]',
    detection TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_case_per_grant ON cases(case_key) WHERE is_open = 1;
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
    at REAL NOT NULL
);
"""

_COLUMNS = ("case_id", "case_key", "layer_version_arn", "grantee", "grant_kind", "severity", "status",
            "ticket_key", "slack_channel", "slack_ts", "removed_statements", "detection",
            "created_at", "updated_at")


class SQLiteStateStore:
    def __init__(self, path: str | Path, clock=time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._local = threading.local()
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
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, *_):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> "_Tx":
        return self._Tx(self._db())

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @staticmethod
    def _row_to_case(row: sqlite3.Row) -> Case:
        data = {name: row[name] for name in _COLUMNS}
        data["removed_statements"] = tuple(json.loads(data["removed_statements"]))
        data["detection"] = json.loads(data["detection"])
        return Case(**data)

    # -- cases

    def open_case(self, case: Case) -> tuple[Case, bool]:
        """Insert the case unless one is already open for its grant; return (case, created)."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT * FROM cases WHERE case_key = ? AND is_open = 1", (case.case_key,)).fetchone()
            if row:
                return self._row_to_case(row), False
            case = replace(case, created_at=now, updated_at=now)
            values = [getattr(case, name) for name in _COLUMNS]
            values[_COLUMNS.index("removed_statements")] = json.dumps(list(case.removed_statements))
            values[_COLUMNS.index("detection")] = json.dumps(case.detection, default=str)
            db.execute(f"INSERT INTO cases ({', '.join(_COLUMNS)}, is_open) VALUES "
                       f"({', '.join('?' for _ in _COLUMNS)}, ?)", (*values, int(case.is_open)))
            db.execute("INSERT INTO case_history (case_id, at, status, note) VALUES (?, ?, ?, ?)",
                       (case.case_id, now, case.status, "case opened"))
            return case, True

    def get_case(self, case_id: str) -> Case | None:
        row = self._db().execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return self._row_to_case(row) if row else None

    def update_case(self, case_id: str, note: str = "", **changes: Any) -> Case:
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown case fields: {sorted(unknown)}")
        now = self._clock()
        encoded = dict(changes)
        if "removed_statements" in encoded:
            encoded["removed_statements"] = json.dumps(list(encoded["removed_statements"]))
        if "detection" in encoded:
            encoded["detection"] = json.dumps(encoded["detection"], default=str)
        encoded["updated_at"] = now
        if "status" in encoded:
            encoded["is_open"] = int(encoded["status"] in OPEN_STATUSES)
        assignments = ", ".join(f"{name} = ?" for name in encoded)
        with self._tx() as db:
            cursor = db.execute(f"UPDATE cases SET {assignments} WHERE case_id = ?", (*encoded.values(), case_id))
            if cursor.rowcount != 1:
                raise KeyError(case_id)
            if "status" in changes or note:
                status = changes.get("status") or db.execute(
                    "SELECT status FROM cases WHERE case_id = ?", (case_id,)).fetchone()[0]
                db.execute("INSERT INTO case_history (case_id, at, status, note) VALUES (?, ?, ?, ?)",
                           (case_id, now, status, note))
            row = db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return self._row_to_case(row)

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
                       (event_id, case_id, self._clock()))
            return db.execute("SELECT case_id FROM processed_events WHERE event_id = ?", (event_id,)).fetchone()[0]

    def event_status(self, event_id: str) -> tuple[str, str] | None:
        """(case_id, "done" | "in_progress") for an event seen before, else None."""
        row = self._db().execute("SELECT case_id, done FROM processed_events WHERE event_id = ?", (event_id,)).fetchone()
        return (row[0], "done" if row[1] else "in_progress") if row else None

    def finish_event(self, event_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE processed_events SET done = 1 WHERE event_id = ?", (event_id,))
