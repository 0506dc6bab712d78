"""Submitted incidents on the service's disk: staging, the disk quota, and retention of finished jobs.

A submission is written under `data_dir/incidents/<job id>/` (an archive extracted as a stream, JSON
telemetry written as an incident directory, or an alert's planned incident, whose telemetry the job pulls
into it); its report goes to `data_dir/reports/<job id>/`. Both count
against `ServeSettings.upload_quota_bytes`. Finished jobs (done or failed) are removed with their files
once older than `keep_finished_seconds` or beyond the newest `keep_finished_jobs`. An archive upload
needs room for the largest archive accepted (`max_archive_bytes`), a JSON one any room at all; when
there is less, the oldest finished jobs go first, and when only queued or running jobs hold the space,
the upload is refused with 507. Uploads staged at the same moment may together pass the quota by
their own size. Incidents named by a server path are the operator's and are
never removed.

Everything here blocks (disk, SQLite): the app calls it from a worker thread, never on the event loop.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from fastapi import HTTPException

from flipmoe.errors import FlipmoeInputError
from flipmoe.serve.alertmanager import ALERT_FILE
from flipmoe.serve.ingest import write_json_incident
from flipmoe.serve.jobs import JobStore
from flipmoe.serve.security import ArchiveLimits, ArchiveTooLarge, extract_incident_archive
from flipmoe.telemetry.json_input import JsonInputError, parse_json

if TYPE_CHECKING:
    from flipmoe.serve.app import ServeSettings

ARCHIVE_TYPES = ("application/gzip", "application/x-gzip", "application/x-tar", "application/zip",
                 "application/octet-stream")
_MAX_SERVER_PATH = 4096


class Uploads:
    """The incidents and reports directories of one service, with their quota and retention."""

    def __init__(self, settings: ServeSettings, store: JobStore) -> None:
        self.settings, self.store = settings, store
        self.incidents = settings.data_dir / "incidents"
        self.reports = settings.data_dir / "reports"
        self.incidents.mkdir(parents=True, exist_ok=True)
        self.reports.mkdir(parents=True, exist_ok=True)

    def stage(self, content_type: str, body: IO[bytes], job_id: str) -> Path:
        """Write the submitted incident for job `job_id`: an archive, JSON telemetry, or a server path."""
        self.expire()
        kind = content_type.split(";")[0].strip().lower()
        target = self.incidents / job_id
        if kind == "application/json":
            body.seek(0)
            data = _json_body(body.read())
            if isinstance(data, dict) and set(data) == {"path"}:
                return self.server_path(data["path"])
            self._make_room(0)
            try:
                return write_json_incident(data, target)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
        if kind in ARCHIVE_TYPES:
            return self._extract(body, target)
        raise HTTPException(415, "send the incident as application/json telemetry or as an archive "
                                 "(application/gzip, application/x-tar, application/zip)")

    def stage_alert(self, request: dict[str, object], job_id: str) -> Path:
        """Write an alert job's planned incident; its telemetry is pulled into the same directory when it runs."""
        self.expire()
        self._make_room(0)
        target = self.incidents / job_id
        target.mkdir(parents=True)
        (target / ALERT_FILE).write_text(json.dumps(request), encoding="utf-8")
        return target

    def server_path(self, path: object) -> Path:
        settings = self.settings
        if not settings.allow_server_paths or settings.server_path_root is None:
            raise HTTPException(403, "server-side paths are disabled; upload the incident instead")
        if not isinstance(path, str) or not path or "\x00" in path or len(path) > _MAX_SERVER_PATH:
            raise FlipmoeInputError(f"'path' must be a non-empty string of at most {_MAX_SERVER_PATH} characters "
                                    "without NUL bytes")
        root = settings.server_path_root.resolve()
        candidate = (root / path).resolve()
        if root != candidate and root not in candidate.parents:
            raise HTTPException(403, f"{path!r} is outside the directory the operator allowed")
        if not (candidate / "incident.json").is_file():
            raise FlipmoeInputError(f"{path!r} is not an incident directory (no incident.json)")
        return candidate

    def discard(self, job_id: str) -> None:
        """Remove what was staged for a job that was not accepted after all."""
        shutil.rmtree(self.incidents / job_id, ignore_errors=True)

    def expire(self) -> int:
        """Remove finished jobs beyond the retention settings, with their files; returns how many."""
        cutoff = time.time() - self.settings.keep_finished_seconds
        removed = self.store.remove_finished(older_than=cutoff, keep=self.settings.keep_finished_jobs)
        for job_id in removed:
            self._remove_files(job_id)
        return len(removed)

    def usage(self) -> int:
        """Bytes of the files under the incidents and reports directories."""
        return _tree_bytes(self.incidents) + _tree_bytes(self.reports)

    def _extract(self, body: IO[bytes], target: Path) -> Path:
        settings = self.settings
        room = self._make_room(settings.max_archive_bytes)
        limits = ArchiveLimits(max_bytes=min(settings.max_archive_bytes, room),
                               max_member_bytes=settings.max_archive_member_bytes,
                               max_members=settings.max_archive_members)
        try:
            return extract_incident_archive(body, target, limits=limits)
        except ArchiveTooLarge:
            if room < settings.max_archive_bytes:
                raise self._quota_full() from None
            raise

    def _make_room(self, wanted: int) -> int:
        """Free space under the quota for `wanted` bytes, removing the oldest finished jobs if need be;
        returns the room there is (maybe less than `wanted`). No room at all is a 507."""
        room = self.settings.upload_quota_bytes - self.usage()
        while room < wanted:
            oldest = self.store.remove_finished(older_than=math.inf, limit=1)
            if not oldest:
                break
            room += self._remove_files(oldest[0])
        if room <= 0:
            raise self._quota_full()
        return room

    def _quota_full(self) -> HTTPException:
        return HTTPException(507, f"the service's upload quota ({self.settings.upload_quota_bytes} bytes) is full "
                                  "with queued and running jobs; retry when they have finished",
                             headers={"Retry-After": "60"})

    def _remove_files(self, job_id: str) -> int:
        """Remove a job's upload and report; returns the bytes freed."""
        # Only the service's own copies: a server-path incident stays where the operator put it.
        freed = 0
        for directory in (self.incidents / job_id, self.reports / job_id):
            freed += _tree_bytes(directory)
            shutil.rmtree(directory, ignore_errors=True)
        return freed


def _json_body(data: bytes) -> object:
    try:
        return parse_json(data)
    except JsonInputError as err:
        raise FlipmoeInputError(f"the body is not usable JSON: {err.problem}",
                                hint="send JSON telemetry as UTF-8, or an archive with an archive content type"
                                if err.malformed else None) from None


def _tree_bytes(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:  # removed by a concurrent clean-up
                continue
    return total
