"""Corpus sources: files, JSONL, LogHub and chaos-gym incidents, turned into `Document`s.

A source is split into small picklable read tasks (`source_tasks`: one per file or per incident), and
`read_task` turns one task into documents. The single-process runner reads the tasks in a loop; the
Ray runner maps `read_task` over them, so simulating incidents and reading files run on the workers.

Telemetry is cut into documents the experts read: log lines of one service in windows of
`lines_per_document` lines, one rendered call tree per trace, Prometheus-style exposition of a
service's metrics over a few scrapes, Kubernetes events in windows, and each file of the incident's
source tree (`code/`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from data_pipeline.config import SourceConfig
from data_pipeline.documents import Document, modality_from_extension, normalise_text
from flipmoe.errors import FlipmoeInputError

_BINARY_PROBE = 8192
_METRIC_SCRAPES = 6


@dataclass(frozen=True)
class ReadTask:
    """One unit of reading: a file of a source, or one incident (a directory or a chaos seed)."""

    source: SourceConfig
    path: str = ""
    seed: int = 0


def source_tasks(source: SourceConfig) -> list[ReadTask]:
    """The read tasks of `source`; a missing path is an input error naming it."""
    if source.kind == "chaos":
        return [ReadTask(source, seed=source.seed + i) for i in range(source.incidents)]
    root = Path(source.path)
    if not root.exists():
        if not source.required:
            return []
        raise FlipmoeInputError(f"source {source.name!r}: path does not exist", path=root)
    if source.kind == "incidents":
        dirs = [root] if (root / "incident.json").exists() else sorted(p.parent for p in root.glob("*/incident.json"))
        return [ReadTask(source, path=str(d)) for d in dirs]
    if root.is_file():
        return [ReadTask(source, path=str(root))]
    files = sorted({p for pattern in source.include for p in root.glob(pattern) if p.is_file()})
    return [ReadTask(source, path=str(p)) for p in files]


def read_task(task: ReadTask) -> list[Document]:
    """The documents of one read task (normalised, modality hint in `meta["hint"]`, not yet tagged)."""
    source = task.source
    if source.kind in ("chaos", "incidents"):
        incident, _ = load_incident(task)
        return list(incident_documents(incident, source))
    if source.kind == "jsonl":
        return list(_jsonl_documents(Path(task.path), source))
    if source.kind == "loghub":
        return list(_loghub_documents(Path(task.path), source))
    return list(_file_documents(Path(task.path), source))


def load_incident(task: ReadTask) -> tuple[Any, Any]:
    """(incident, label or None) of a chaos or incidents read task."""
    source = task.source
    if source.kind == "chaos":
        from data_pipeline.chaos import generate_incident

        return generate_incident(source.system, seed=task.seed, window_minutes=source.window_minutes)
    from flipmoe.telemetry import read_incident
    from flipmoe.telemetry.label import load_label

    path = Path(task.path)
    return read_incident(path), load_label(path)


def read_text_file(path: Path) -> str:
    """A file as text: UTF-8 with replacement characters for bad bytes (the garbage filter sees them);
    NUL bytes survive, so binary files are recognised later instead of failing here."""
    return path.read_bytes().decode("utf-8", errors="replace")


def _document(source: SourceConfig, doc_id: str, text: str, hint: str | None, **meta: object) -> Document:
    return Document(id=doc_id, text=normalise_text(text), source=source.name,
                    meta={"hint": source.modality or hint or "", **meta})


def _chunks(text: str, max_chars: int) -> Iterator[str]:
    """Cut `text` at line boundaries into pieces of at most `max_chars` (a longer line is cut hard)."""
    piece: list[str] = []
    size = 0
    for line in text.split("\n"):
        while len(line) > max_chars:
            if piece:
                yield "\n".join(piece)
                piece, size = [], 0
            yield line[:max_chars]
            line = line[max_chars:]
        if size + len(line) + 1 > max_chars and piece:
            yield "\n".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line) + 1
    if piece:
        yield "\n".join(piece)


def _key(path: Path, source: SourceConfig) -> str:
    """A file's part of its documents' ids: its path relative to the source's folder (its name for a single
    file), so ids, and what the id-keyed stages keep, do not depend on where the corpus lies."""
    root = Path(source.path) if source.path else None
    if root is not None and root.is_dir():
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def _file_documents(path: Path, source: SourceConfig) -> Iterator[Document]:
    text = read_text_file(path)
    hint = modality_from_extension(path.name)
    if "\x00" in text[:_BINARY_PROBE]:
        # Binary: one document, so the binary filter counts the file once instead of per chunk.
        yield _document(source, f"{source.name}:{_key(path, source)}", text[: source.max_chars], hint,
                        path=str(path))
        return
    if hint == "log":
        lines = text.rstrip("\n").split("\n")
        for i in range(0, len(lines), source.lines_per_document):
            yield _document(source, f"{source.name}:{_key(path, source)}#{i}",
                            "\n".join(lines[i:i + source.lines_per_document]),
                            hint, path=str(path))
        return
    for i, chunk in enumerate(_chunks(text, source.max_chars)):
        yield _document(source, f"{source.name}:{_key(path, source)}#{i}", chunk, hint, path=str(path))


def _jsonl_documents(path: Path, source: SourceConfig) -> Iterator[Document]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for row, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise FlipmoeInputError(f"not valid JSON: {err.msg}", path=path, row=row) from None
            text = record.get(source.text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise FlipmoeInputError(f"no string field {source.text_field!r}", path=path, row=row,
                                        hint="set text_field of the source")
            hint = record.get(source.modality_field) if source.modality_field else None
            yield _document(source, f"{source.name}:{_key(path, source)}#{row}", text,
                            hint if isinstance(hint, str) else None,
                            path=str(path))


def _loghub_documents(path: Path, source: SourceConfig) -> Iterator[Document]:
    """LogHub raw logs (`*.log`) or structured samples (`*.csv` with a Content column)."""
    if path.suffix == ".csv":
        frame = pd.read_csv(path)
        if "Content" not in frame.columns:
            raise FlipmoeInputError("LogHub CSV without a Content column", path=path)
        lines = frame["Content"].astype(str).tolist()
    else:
        lines = read_text_file(path).rstrip("\n").split("\n")
    step = source.lines_per_document
    for i in range(0, len(lines), step):
        yield _document(source, f"{source.name}:{path.name}#{i}", "\n".join(lines[i:i + step]), "log",
                        path=str(path), system=path.name.split("_")[0])


def incident_documents(incident: object, source: SourceConfig) -> Iterator[Document]:
    """Documents of one incident (an `flipmoe.telemetry.Incident`): logs, traces, metrics, events, code."""
    meta = incident.meta  # type: ignore[attr-defined]
    prefix = f"{source.name}:{meta.id}"
    logs, spans = incident.logs, incident.spans  # type: ignore[attr-defined]
    metrics, events = incident.metrics, incident.events  # type: ignore[attr-defined]
    step = source.lines_per_document
    if logs is not None and len(logs):
        for service, group in logs.sort_values("timestamp").groupby("service", sort=True):
            lines = (group["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z "
                     + group["level"].astype(str).str.upper() + " " + group["pod"].astype(str) + " "
                     + group["message"].astype(str)).tolist()
            for i in range(0, len(lines), step):
                yield _document(source, f"{prefix}:logs:{service}#{i}", "\n".join(lines[i:i + step]), "log",
                                incident=meta.id, service=str(service))
    if spans is not None and len(spans):
        trace_ids = spans["trace_id"].drop_duplicates()
        picked = trace_ids.iloc[:: max(1, len(trace_ids) // source.traces_per_incident)][: source.traces_per_incident]
        for trace_id, trace in spans[spans["trace_id"].isin(set(picked))].groupby("trace_id", sort=False):
            yield _document(source, f"{prefix}:trace:{trace_id}", render_trace(trace), "trace",
                            incident=meta.id, trace_id=str(trace_id))
    if metrics is not None and len(metrics):
        for service, group in metrics.groupby("service", sort=True):
            times = sorted(group["timestamp"].unique())
            for i in range(0, len(times), _METRIC_SCRAPES):
                window = group[group["timestamp"].isin(set(times[i:i + _METRIC_SCRAPES]))]
                yield _document(source, f"{prefix}:metrics:{service}#{i}", render_metrics(window), "metric",
                                incident=meta.id, service=str(service))
    if events is not None and len(events):
        lines = (events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ") + " " + events["kind"].astype(str) + " "
                 + events["reason"].astype(str) + " " + events["service"].astype(str) + " "
                 + events["message"].astype(str)).tolist()
        for i in range(0, len(lines), step):
            yield _document(source, f"{prefix}:events#{i}", "\n".join(lines[i:i + step]), "log", incident=meta.id)
    code_dir = getattr(incident, "code_dir", None)
    if code_dir is not None and Path(code_dir).is_dir():
        for path in sorted(p for p in Path(code_dir).rglob("*") if p.is_file()):
            relative = path.relative_to(code_dir)
            for j, chunk in enumerate(_chunks(read_text_file(path), source.max_chars)):
                yield _document(source, f"{prefix}:code:{relative}#{j}", chunk, modality_from_extension(path.name),
                                incident=meta.id, path=str(relative))


def render_trace(trace: pd.DataFrame) -> str:
    """One trace as an indented call tree: `service operation duration=12.3ms status=ok`, children below."""
    children: dict[object, list[int]] = {}
    parents = trace["parent_span_id"].where(trace["parent_span_id"].isin(set(trace["span_id"])))
    order = trace.sort_values("start").index
    for index in order:
        parent = parents.loc[index]
        children.setdefault(None if pd.isna(parent) else parent, []).append(index)
    lines = [f"trace_id={trace['trace_id'].iloc[0]}"]
    stack = [(index, 0) for index in reversed(children.get(None, []))]
    while stack:
        index, depth = stack.pop()
        row = trace.loc[index]
        lines.append(f"{'  ' * depth}{row['service']} {row['operation']} duration={row['duration']:.3f}ms "
                     f"status={row['status']}")
        stack.extend((child, depth + 1) for child in reversed(children.get(row["span_id"], [])))
    return "\n".join(lines)


def render_metrics(window: pd.DataFrame) -> str:
    """Metric rows as Prometheus exposition lines: `name{service="a",pod="b"} value epoch_ms`."""
    epoch_ms = (window["timestamp"].astype("int64") // 1_000_000).astype(str)
    values = window["value"].map(lambda v: f"{v:.6g}")
    return "\n".join((window["metric"].astype(str) + '{service="' + window["service"].astype(str) + '",pod="'
                      + window["pod"].astype(str) + '"} ' + values + " " + epoch_ms).tolist())
