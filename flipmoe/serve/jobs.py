"""Durable incident-analysis jobs: a SQLite table that survives replica and process deaths.

A job is accepted (`queued`) before the HTTP answer is sent, so an accepted job is never lost:
workers claim jobs with a lease that their process renews every few seconds while it lives; a worker
that dies leaves a lease that expires within `lease_s`, and the job is claimed again (up to
`max_attempts`, then it is `failed` with the reason). A service that starts on the same host requeues
at once the jobs of its predecessors whose processes are gone (`release_dead`). Finished jobs are
removed by the service's retention rules (`remove_finished`). Submissions may carry an idempotency
key: the same key returns the same job instead of a second one.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    state TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '',
    incident_dir TEXT NOT NULL,
    out_dir TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    lease_until REAL,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    summary TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, submitted_at);
"""


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    progress: str
    incident_dir: str
    out_dir: str
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    summary: dict[str, Any] | None
    idempotency_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "progress": self.progress, "attempts": self.attempts,
                "submitted_at": self.submitted_at, "started_at": self.started_at,
                "finished_at": self.finished_at, "error": self.error, "summary": self.summary}


class JobStore:
    """Jobs in one SQLite file (WAL mode: readers never block the writer)."""

    def __init__(self, path: str | Path, *, lease_s: float = 120.0, max_attempts: int = 3) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease_s, self.max_attempts = lease_s, max_attempts
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def submit(self, *, incident_dir: str, out_dir: str, idempotency_key: str | None = None,
               job_id: str | None = None) -> tuple[Job, bool]:
        """Accept a job; returns (job, created). An existing idempotency key returns its job unchanged."""
        job_id = job_id or uuid.uuid4().hex
        with self._lock, self._connect() as db:
            if idempotency_key:
                row = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    return _job(row), False
            db.execute("INSERT INTO jobs (id, idempotency_key, state, incident_dir, out_dir, submitted_at) "
                       "VALUES (?, ?, 'queued', ?, ?, ?)", (job_id, idempotency_key, incident_dir, out_dir,
                                                             time.time()))
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()), True

    def by_idempotency_key(self, key: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
        return _job(row) if row else None

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def recent(self, limit: int) -> list[Job]:
        """The `limit` most recently submitted jobs, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY submitted_at DESC LIMIT ?", (limit,)).fetchall()
        return [_job(row) for row in rows]

    def claim(self, worker: str) -> Job | None:
        """The oldest queued job, or one whose worker's lease expired; None when there is none.

        A job whose attempts are used up is failed here, with the reason, instead of being retried.
        """
        now = time.time()
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("UPDATE jobs SET state = 'failed', finished_at = ?, lease_until = NULL, "
                           "error = COALESCE(error, '') || 'worker lost ' || attempts || ' time(s); giving up' "
                           "WHERE state = 'running' AND lease_until < ? AND attempts >= ?",
                           (now, now, self.max_attempts))
                row = db.execute("SELECT * FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_until < ?) "
                                 "ORDER BY submitted_at LIMIT 1", (now,)).fetchone()
                if row is None:
                    db.execute("COMMIT")
                    return None
                db.execute("UPDATE jobs SET state = 'running', worker = ?, lease_until = ?, attempts = attempts + 1, "
                           "started_at = COALESCE(started_at, ?), progress = 'started' WHERE id = ?",
                           (worker, now + self.lease_s, now, row["id"]))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def heartbeat(self, job_id: str, worker: str, progress: str) -> None:
        """Extend the lease of a running job and record its progress."""
        with self._connect() as db:
            db.execute("UPDATE jobs SET progress = ?, lease_until = ? "
                       "WHERE id = ? AND worker = ? AND state = 'running'",
                       (progress, time.time() + self.lease_s, job_id, worker))

    def renew(self, worker: str) -> int:
        """Extend the leases of every job `worker` is running (its process is alive); returns how many."""
        with self._connect() as db:
            return db.execute("UPDATE jobs SET lease_until = ? WHERE worker = ? AND state = 'running'",
                              (time.time() + self.lease_s, worker)).rowcount

    def complete(self, job_id: str, worker: str, summary: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute("UPDATE jobs SET state = 'done', progress = 'done', finished_at = ?, lease_until = NULL, "
                       "summary = ? WHERE id = ? AND worker = ?", (time.time(), json.dumps(summary), job_id, worker))

    def fail(self, job_id: str, worker: str, error: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE jobs SET state = 'failed', finished_at = ?, lease_until = NULL, error = ? "
                       "WHERE id = ? AND worker = ?", (time.time(), error[:2000], job_id, worker))

    def release_worker(self, worker: str) -> int:
        """Requeue the running jobs of a worker that is shutting down (they restart elsewhere at once)."""
        with self._connect() as db:
            return db.execute("UPDATE jobs SET state = 'queued', lease_until = NULL, worker = NULL "
                              "WHERE worker = ? AND state = 'running'", (worker,)).rowcount

    def release_dead(self, host: str, *, alive: Callable[[int], bool] | None = None) -> int:
        """Requeue the running jobs of workers on `host` whose process is gone, so a restarted service
        resumes them at once instead of waiting for their leases to expire. Workers are named
        `host:pid:...` (`worker_name`); others are left to their leases. This assumes that processes
        sharing a host name and a data directory share a PID namespace (one machine or one pod)."""
        alive = alive or _pid_alive
        prefix = f"{host}:"
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # no claim may slip in between reading and requeueing
            try:
                running = db.execute("SELECT id, worker FROM jobs WHERE state = 'running' "
                                     "AND substr(worker, 1, ?) = ?", (len(prefix), prefix)).fetchall()
                dead = []
                for row in running:
                    pid = str(row["worker"])[len(prefix):].partition(":")[0]
                    if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
                        dead.append((row["id"], row["worker"]))
                for job_id, worker in dead:
                    db.execute("UPDATE jobs SET state = 'queued', lease_until = NULL, worker = NULL "
                               "WHERE id = ? AND state = 'running' AND worker = ?", (job_id, worker))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return len(dead)

    def remove_finished(self, *, older_than: float, keep: int | None = None, limit: int | None = None) -> list[str]:
        """Delete finished jobs that finished before `older_than` or are not among the newest `keep`
        finished ones, oldest first and at most `limit`; returns their ids (their files are the caller's)."""
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                ids = [row["id"] for row in db.execute(
                    "SELECT id FROM jobs WHERE state IN ('done', 'failed') AND (finished_at < ? OR id NOT IN "
                    "(SELECT id FROM jobs WHERE state IN ('done', 'failed') ORDER BY finished_at DESC LIMIT ?)) "
                    "ORDER BY finished_at LIMIT ?",
                    (older_than, -1 if keep is None else keep, -1 if limit is None else limit))]
                db.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id in ids])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return ids

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        found = {row["state"]: row["n"] for row in rows}
        return {state: found.get(state, 0) for state in STATES}


def _job(row: sqlite3.Row) -> Job:
    return Job(id=row["id"], state=row["state"], progress=row["progress"], incident_dir=row["incident_dir"],
               out_dir=row["out_dir"], submitted_at=row["submitted_at"], started_at=row["started_at"],
               finished_at=row["finished_at"], attempts=row["attempts"], error=row["error"],
               summary=json.loads(row["summary"]) if row["summary"] else None,
               idempotency_key=row["idempotency_key"])


def worker_name(worker_id: str) -> str:
    """A worker's name in the job table: `host:pid:id`, so a restart can tell its dead predecessors."""
    return f"{socket.gethostname()}:{os.getpid()}:{worker_id}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
