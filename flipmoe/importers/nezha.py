"""Nezha RCA data sets (IntelligentDDS/Nezha, FSE 2023) -> one incident directory per labelled fault.

Layout read (every CSV may be plain `.csv` or gzipped `.csv.gz`):
```
ROOT/rca_data/<date>/<date>-fault_list.json   faults: {"HH": [{inject_time, inject_pod, inject_type}]}
ROOT/rca_data/<date>/metric/<pod>_metric.csv  one row per minute for the whole day, one file per pod
ROOT/rca_data/<date>/metric/front_service.csv frontend SLIs (service "frontend", no pod)
ROOT/rca_data/<date>/log/HH_MM_log.csv        Docker JSON log lines around minute HH:MM
ROOT/rca_data/<date>/trace/HH_MM_trace.csv    spans around minute HH:MM
ROOT/construct_data/<date>/{log,trace}/       optional fault-free minute(s) -> the incidents' baseline/
ROOT/construct_data/root_cause_ts.json        optional fine-grained labels, [service][fault type]
```
Each fault becomes `OUT/<epoch seconds of inject_time>/`. The alert text and window are generic
("TrainTicket: anomaly reported around 08:43:04 UTC", alert time +- `ImportConfig` minutes); the answer
goes only to `label.json`.

Nezha quirks handled here:
- `inject_time` is read as UTC; `inject_timestamp` is ignored (wrong, mostly by 8 hours, in most rows).
- Log and trace files are selected by the time their rows cover, not by their names: a file may cover
  up to three minutes and neighbouring files overlap, so rows present in two files are kept once.
- The clock inside log messages is UTC+8; timestamps come from the `Timestamp` column instead.
- Metric files cover the whole day: each is read once per day, not once per fault. They have no node;
  the node comes from the pod -> node placement seen in the day's logs. NaN samples (many: latencies
  of minutes without traffic) are dropped with one warning per day. The files stay wide in memory;
  each incident takes its long-format slice.
- Lines the CSV parser cannot split (a real file has two records spliced together) are skipped, and Log
  fields that are not a JSON record are dropped, each with a warning naming the file.
- `construct_data/<date>/metric/` duplicates `rca_data/<date>/metric/` byte for byte, so baseline
  metrics are cut from the day's metric files over the minutes of the baseline's log and trace files.

Failure policy: problems with ROOT itself (no `rca_data/`, no date, a bad `root_cause_ts.json`) raise
`FlipmoeInputError` before anything is written. A bad fault list or metric file fails the faults of
its date; a bad fault entry, or a log or trace file that cannot be read in a fault's window, fails that
fault. The other faults are still imported, each incident written atomically, and at the end
`NezhaImportError` lists what failed together with the incidents that were written.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import warnings as pywarnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from flipmoe.config import FlipmoeConfig, TelemetryConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident, IncidentMeta, Telemetry, TimeWindow, Topology, write_incident
from flipmoe.telemetry.incident import call_edges
from flipmoe.telemetry.json_input import JsonInputError, parse_json
from flipmoe.telemetry.label import Label
from flipmoe.telemetry.schema import column_names, normalise_level
from flipmoe.telemetry.taxonomy import map_dataset_type
from flipmoe.telemetry.validate import normalise_table

__all__ = ["NezhaImportError", "import_nezha", "parse_log_line", "service_of_pod"]

SOURCE = "nezha"
ROOT_CAUSE_FILE = "root_cause_ts.json"
FRONTEND = "frontend"
_LOG_COLUMNS = column_names("logs")

_MINUTE_FILE = re.compile(r"(\d{2})_(\d{2})_(log|trace)\.csv(?:\.gz)?")
_METRIC_FILE = re.compile(r".+_metric\.csv(?:\.gz)?|front_service\.csv(?:\.gz)?")
# Kubernetes names a Deployment's pod <deployment>-<replicaset hash>-<5-character suffix>.
_POD_SUFFIXES = re.compile(r"-[0-9a-z]{6,10}-[0-9a-z]{5}$")
# A file named HH_MM holds about HH:MM-1:08 .. HH:MM:08; when it cannot be read, faults whose window
# meets this span around its minute fail, since their rows might have been in it.
_MINUTE_SPAN = pd.Timedelta(minutes=1)
# Spans of traces that start inside the window can sit in the next file; read that far past the end.
_TRACE_TAIL = pd.Timedelta(minutes=1)

Progress = Callable[[str], None]


class NezhaImportError(FlipmoeInputError):
    """Some faults could not be imported; the incidents in `written` were imported all the same."""

    def __init__(self, failures: Sequence[str], written: Sequence[Path]) -> None:
        self.failures = list(failures)
        self.written = list(written)
        super().__init__(f"{len(self.failures)} problem(s) stopped faults from being imported "
                         f"({len(self.written)} incident(s) written): " + "; ".join(self.failures),
                         hint="fix or remove the files named, then import again with --overwrite")


def import_nezha(
    root: str | Path,
    out: str | Path,
    *,
    config: FlipmoeConfig | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    warnings: list[str] | None = None,
) -> list[Path]:
    """Import every labelled fault under `root/rca_data/*/` as `out/<epoch>/`; returns the paths written.

    `progress` receives one line per date read and per incident written; fixed problems are appended
    to `warnings`. Raises `NezhaImportError` after the others were written if any fault failed.
    """
    config = config or FlipmoeConfig()
    root = Path(root)
    if Path(out).exists() and not Path(out).is_dir():
        raise FlipmoeInputError("exists and is not a directory", path=out, hint="--out names a directory")
    run = _Run(out=Path(out), config=config, overwrite=overwrite,
               warnings=warnings if warnings is not None else [], report=progress or (lambda _line: None))
    day_dirs = _day_dirs(root, run.warnings)
    run.fine_grained = _read_root_causes(root / "construct_data" / ROOT_CAUSE_FILE)
    for day_dir, date in day_dirs:
        _import_day(day_dir, date, root / "construct_data" / day_dir.name, run)
    if run.failures:
        raise NezhaImportError(run.failures, run.written)
    return run.written


def service_of_pod(pod: str) -> str:
    """The service a pod belongs to: its name without the ReplicaSet hash and pod suffix."""
    return _POD_SUFFIXES.sub("", pod)


# --- the data set's tree ---------------------------------------------------------------------------


def _day_dirs(root: Path, warnings: list[str]) -> list[tuple[Path, dt.date]]:
    if not root.is_dir():
        raise FlipmoeInputError("no such directory", path=root, hint="give the root of a Nezha data set")
    rca = root / "rca_data"
    if not rca.is_dir():
        raise FlipmoeInputError("not a Nezha data set: it has no rca_data/ directory", path=root,
                                hint="ROOT must hold rca_data/<date>/, and may hold construct_data/")
    days = []
    for child in sorted(p for p in rca.iterdir() if p.is_dir()):
        try:
            days.append((child, dt.date.fromisoformat(child.name)))
        except ValueError:
            warnings.append(f"{child}: ignored, not a YYYY-MM-DD date directory")
    if not days:
        raise FlipmoeInputError("rca_data/ holds no YYYY-MM-DD date directory", path=rca)
    return days


def _read_json(path: Path) -> Any:
    try:
        return parse_json(path.read_bytes())
    except FileNotFoundError:
        raise FlipmoeInputError("file not found", path=path) from None
    except JsonInputError as err:
        raise FlipmoeInputError(err.problem, path=path) from None


def _read_root_causes(path: Path) -> dict[str, dict[str, str]]:
    """root_cause_ts.json: {service: {fault type: metric name or 'start statement_end statement'}}."""
    if not path.exists():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise FlipmoeInputError("must map each service to an object {fault type: root cause}", path=path)
    return {str(service): {str(k): str(v) for k, v in causes.items()} for service, causes in data.items()}


@dataclass(frozen=True, kw_only=True)
class _Fault:
    inject_time: pd.Timestamp
    pod: str
    original_type: str
    where: str
    """The entry in the fault list, for messages."""

    @property
    def id(self) -> str:
        return str(int(self.inject_time.timestamp()))

    @property
    def service(self) -> str:
        return service_of_pod(self.pod)


def _read_fault_list(day_dir: Path) -> tuple[list[_Fault], list[str]]:
    """The date's faults in injection order, and a message for each entry that cannot be used."""
    path = day_dir / f"{day_dir.name}-fault_list.json"
    if not path.exists():
        raise FlipmoeInputError("fault list not found", path=path,
                                hint="every rca_data/<date>/ needs its <date>-fault_list.json")
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(entries, list) for entries in data.values()):
        raise FlipmoeInputError("must hold an object {hour: [fault, ...]}", path=path)
    faults, failures = [], []
    for hour, entries in data.items():
        for i, entry in enumerate(entries):
            where = f"{path} [{hour!r}][{i}]"
            try:
                faults.append(_fault(entry, where))
            except FlipmoeInputError as err:
                failures.append(f"{where}: {err}")
    return sorted(faults, key=lambda f: f.inject_time), failures


def _fault(entry: Any, where: str) -> _Fault:
    fields = ("inject_time", "inject_pod", "inject_type")
    if not isinstance(entry, dict) or any(not isinstance(entry.get(k), str) or not entry[k] for k in fields):
        raise FlipmoeInputError(f"a fault needs the strings {', '.join(fields)}")
    try:
        inject_time = pd.Timestamp(entry["inject_time"])
    except ValueError:
        raise FlipmoeInputError(f"inject_time {entry['inject_time']!r} is not a date and time") from None
    # Nezha writes inject_time in UTC without saying so.
    inject_time = inject_time.tz_convert("UTC") if inject_time.tzinfo else inject_time.tz_localize("UTC")
    return _Fault(inject_time=inject_time, pod=entry["inject_pod"], original_type=entry["inject_type"],
                  where=where)


# --- one day's telemetry, read once ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Part:
    """One minute file's table, the minute its name gives, and the times its rows cover."""

    minute: pd.Timestamp
    first: pd.Timestamp
    last: pd.Timestamp
    frame: pd.DataFrame


@dataclass(kw_only=True)
class _MinuteTables:
    """The logs or spans of a day, file by file."""

    parts: list[_Part] = field(default_factory=list)
    unreadable: list[tuple[pd.Timestamp, FlipmoeInputError]] = field(default_factory=list)
    """Files that failed, with the minute their name gives."""

    def check_readable(self, start: pd.Timestamp, end: pd.Timestamp) -> None:
        for minute, err in self.unreadable:
            if minute - _MINUTE_SPAN < end and minute + _MINUTE_SPAN > start:
                raise err

    def overlapping(self, start: pd.Timestamp, end: pd.Timestamp) -> list[pd.DataFrame]:
        return [part.frame for part in self.parts if part.first < end and part.last >= start]

    @property
    def frames(self) -> list[pd.DataFrame]:
        return [part.frame for part in self.parts]

    def extent(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """From the earliest to the latest time the files' names or rows give."""
        if not self.parts:
            return None
        return (min(min(p.first, p.minute - _MINUTE_SPAN) for p in self.parts),
                max(max(p.last, p.minute + _MINUTE_SPAN) for p in self.parts))


@dataclass(kw_only=True)
class _Day:
    system: str
    metrics: _Metrics | None
    logs: _MinuteTables
    spans: _MinuteTables
    placement: dict[str, str]
    topology: Topology
    baseline: Telemetry | None
    injections: list[_Fault]


def _load_day(day_dir: Path, date: dt.date, construct_dir: Path, faults: list[_Fault],
              config: TelemetryConfig, warnings: list[str], report: Progress) -> _Day:
    metric_files = _metric_files(day_dir / "metric", warnings)
    report(f"{day_dir.name}: {len(faults)} fault(s); reading {len(metric_files)} metric files, logs, traces")
    logs = _read_minute_dir(day_dir / "log", "log", date, config, warnings)
    spans = _read_minute_dir(day_dir / "trace", "trace", date, config, warnings)
    base_logs, base_spans = _read_construct(construct_dir, date, config, warnings)
    placement = _placement(logs.frames + base_logs.frames)
    metrics = _read_metrics(day_dir / "metric", metric_files, placement, config, warnings)
    topology = _topology(spans.frames + base_spans.frames, metrics, placement)
    baseline = _baseline(base_logs, base_spans, metrics)
    return _Day(system=_system_name(topology.services), metrics=metrics, logs=logs, spans=spans,
                placement=placement, topology=topology, baseline=baseline, injections=faults)


def _system_name(services: Sequence[str]) -> str:
    # Nezha holds two systems; TrainTicket's services all start with "ts-".
    named = [s for s in services if s != FRONTEND]
    return "TrainTicket" if named and all(s.startswith("ts-") for s in named) else "OnlineBoutique"


def _minute_files(directory: Path, kind: str, date: dt.date,
                  warnings: list[str]) -> dict[pd.Timestamp, list[Path]]:
    """The directory's HH_MM_<kind>.csv[.gz] files by the minute their name gives."""
    found: dict[pd.Timestamp, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        match = _MINUTE_FILE.fullmatch(path.name)
        if match is None or match[3] != kind:
            warnings.append(f"{path}: ignored, not a Nezha {kind} file (HH_MM_{kind}.csv or .csv.gz)")
            continue
        minute = pd.Timestamp(f"{date.isoformat()} {match[1]}:{match[2]}", tz="UTC")
        found.setdefault(minute, []).append(path)
    return found


def _read_minute_dir(directory: Path, kind: str, date: dt.date, config: TelemetryConfig,
                     warnings: list[str]) -> _MinuteTables:
    reader = _read_span_file if kind == "trace" else _read_log_file
    tables = _MinuteTables()
    if not directory.is_dir():
        return tables
    for minute, paths in _minute_files(directory, kind, date, warnings).items():
        try:
            if len(paths) > 1:
                raise FlipmoeInputError(f"minute {minute:%H:%M} is stored twice ({paths[0].name} and "
                                        f"{paths[1].name})", path=directory, hint="keep one of the two files")
            frame = reader(paths[0], config, warnings)
        except FlipmoeInputError as err:
            tables.unreadable.append((minute, err))
            continue
        if len(frame):
            time = frame["start" if kind == "trace" else "timestamp"]
            tables.parts.append(_Part(minute=minute, first=time.min(), last=time.max(), frame=frame))
    return tables


def _read_construct(directory: Path, date: dt.date, config: TelemetryConfig,
                    warnings: list[str]) -> tuple[_MinuteTables, _MinuteTables]:
    """The fault-free minute(s) of construct_data/<date>/; a bad file costs only the baseline."""
    logs = _read_minute_dir(directory / "log", "log", date, config, warnings)
    spans = _read_minute_dir(directory / "trace", "trace", date, config, warnings)
    bad = logs.unreadable + spans.unreadable
    if bad:
        warnings.append(f"{bad[0][1]}; the incidents of {directory.name} get no baseline")
        return _MinuteTables(), _MinuteTables()
    return logs, spans


def _baseline(logs: _MinuteTables, spans: _MinuteTables, metrics: _Metrics | None) -> Telemetry | None:
    """The construct minute(s): their logs and spans, and the day's metrics over those minutes."""
    extents = [e for e in (logs.extent(), spans.extent()) if e is not None]
    if not extents:
        return None
    start, end = min(e[0] for e in extents), max(e[1] for e in extents)
    return Telemetry(metrics=None if metrics is None else metrics.between(start, end),
                     logs=_dedupe_logs(logs.frames), spans=_dedupe_spans(spans.frames))


# --- reading files ---------------------------------------------------------------------------------


def _read_csv(path: Path, *, required: Sequence[str], dtype: Any, warnings: list[str]) -> pd.DataFrame:
    """Read a plain or gzipped CSV; lines the parser cannot split are skipped with a warning."""
    if path.stat().st_size == 0:
        raise FlipmoeInputError("file is empty", path=path, hint="a Nezha CSV file starts with a header row")
    try:
        with pywarnings.catch_warnings(record=True) as caught:
            pywarnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""], on_bad_lines="warn")
    except pd.errors.EmptyDataError:
        raise FlipmoeInputError("file has no header row", path=path) from None
    except pd.errors.ParserError as err:
        raise FlipmoeInputError(f"malformed CSV ({err})", path=path) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise FlipmoeInputError(f"truncated or corrupt gzip data ({err})", path=path,
                                hint="copy the file again from the data set") from None
    except UnicodeDecodeError as err:
        raise FlipmoeInputError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=path) from None
    skipped = [str(w.message).strip() for w in caught if issubclass(w.category, pd.errors.ParserWarning)]
    if skipped:
        warnings.append(f"{path}: skipped {len(skipped)} malformed line(s), e.g. '{skipped[0]}'")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise FlipmoeInputError(f"missing column(s) {', '.join(missing)}", path=path,
                                hint=f"a Nezha file of this kind has columns {', '.join(required)}")
    return frame


def _normalise(frame: pd.DataFrame, table: str, path: Path, columns: dict[str, str],
               config: TelemetryConfig, warnings: list[str]) -> pd.DataFrame:
    """`normalise_table`, with errors pointing at the file's own column and data row."""
    try:
        return normalise_table(frame, table, source=str(path), config=config, warnings=warnings)
    except FlipmoeInputError as err:
        row = int(frame.index[err.row - 1]) + 1 if err.row is not None else None
        column = columns.get(err.column, err.column) if err.column is not None else None
        raise FlipmoeInputError(err.problem, path=path, column=column, row=row, hint=err.hint) from None


def _services(pods: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(pods, use_na_sentinel=False)
    names = np.array([service_of_pod(p) if isinstance(p, str) else "" for p in uniques], dtype=object)
    return names[codes]


def _numbers(series: pd.Series, path: Path, column: str) -> pd.Series:
    """A numeric column; a cell that is neither a number nor empty/NaN is an error naming its row."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series
    numeric = pd.to_numeric(series, errors="coerce")
    text = series.astype(str).str.strip().str.lower()
    bad = numeric.isna() & series.notna() & ~text.isin(["", "nan", "null", "none"])
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise FlipmoeInputError(f"not a number: {series.iloc[position]!r}", path=path, column=column,
                                row=int(series.index[position]) + 1)
    return numeric


def _epoch(series: pd.Series, path: Path, column: str, unit: Literal["s", "ms", "us", "ns"]) -> pd.Series:
    values = _numbers(series, path, column)
    if values.isna().any():
        position = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise FlipmoeInputError("missing time", path=path, column=column, row=int(series.index[position]) + 1)
    # Integer nanoseconds go through int64, not float64, which would round them to ~256 ns.
    return pd.to_datetime(values.astype("int64") if unit == "ns" else values, unit=unit, utc=True)


def _iso_times(series: pd.Series, path: Path, column: str) -> pd.Series:
    """ISO-8601 UTC times. Some Nezha rows lack the 'Z' (and their TimeUnixNano is garbage): still UTC."""
    times = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")
    if times.isna().any():
        position = int(np.flatnonzero(times.isna().to_numpy())[0])
        value = series.iloc[position]
        problem = f"not an ISO-8601 time: {value!r}" if isinstance(value, str) else "missing time"
        raise FlipmoeInputError(problem, path=path, column=column, row=int(series.index[position]) + 1)
    return times


def _read_log_file(path: Path, config: TelemetryConfig, warnings: list[str]) -> pd.DataFrame:
    """Columns Timestamp, Node, PodName, TraceID, SpanID, Log (a Docker JSON record) -> the logs table.

    The node is kept in an extra `node` column for the placement; it is not part of the logs table.
    """
    raw = _read_csv(path, required=("Timestamp", "PodName", "Log"), dtype=str, warnings=warnings)
    raw["Timestamp"] = _iso_times(raw["Timestamp"], path, "Timestamp")
    parsed = [parse_log_line(text) if isinstance(text, str) else None for text in raw["Log"].tolist()]
    undecodable = sum(p is None for p in parsed)
    if undecodable:
        warnings.append(f"{path}: dropped {undecodable} row(s) whose Log field is not a JSON log record")
    keep = np.array([p is not None and p[1] != "" for p in parsed], dtype=bool)
    if int((~keep).sum()) > undecodable:
        warnings.append(f"{path}: dropped {int((~keep).sum()) - undecodable} empty log line(s)")
    kept = [p for p in parsed if p is not None and p[1] != ""]
    raw = raw[keep]
    frame = pd.DataFrame({
        "timestamp": raw["Timestamp"],
        "service": _services(raw["PodName"]),
        "pod": raw["PodName"],
        "level": [level for level, _ in kept],
        "message": [message for _, message in kept],
        "trace_id": raw.get("TraceID"),
        "span_id": raw.get("SpanID"),
    }, index=raw.index)
    columns = {"service": "PodName", "pod": "PodName", "message": "Log", "trace_id": "TraceID",
               "span_id": "SpanID"}
    table = _normalise(frame, "logs", path, columns, config, warnings)
    table["node"] = raw["Node"].to_numpy() if "Node" in raw else np.nan
    return table


def _read_span_file(path: Path, config: TelemetryConfig, warnings: list[str]) -> pd.DataFrame:
    """TraceID, SpanID, ParentID ('root'), PodName, OperationName, StartTimeUnixNano, Duration (us)."""
    ids = ("TraceID", "SpanID", "ParentID", "PodName", "OperationName")
    raw = _read_csv(path, required=(*ids, "StartTimeUnixNano", "Duration"), dtype=dict.fromkeys(ids, str),
                    warnings=warnings).drop_duplicates()
    frame = pd.DataFrame({
        "trace_id": raw["TraceID"],
        "span_id": raw["SpanID"],
        "parent_span_id": raw["ParentID"],
        "service": _services(raw["PodName"]),
        "pod": raw["PodName"],
        "operation": raw["OperationName"],
        "start": _epoch(raw["StartTimeUnixNano"], path, "StartTimeUnixNano", "ns"),
        "duration": _numbers(raw["Duration"], path, "Duration") / 1000.0,
        "status": "unset",  # Nezha's spans carry no status
    }, index=raw.index)
    columns = {"trace_id": "TraceID", "span_id": "SpanID", "parent_span_id": "ParentID",
               "service": "PodName", "pod": "PodName", "operation": "OperationName",
               "start": "StartTimeUnixNano", "duration": "Duration"}
    return _normalise(frame, "spans", path, columns, config, warnings)


def _metric_files(directory: Path, warnings: list[str]) -> list[Path]:
    if not directory.is_dir():
        warnings.append(f"{directory}: no metric directory; incidents of this date have no metrics")
        return []
    files = []
    for path in sorted(directory.iterdir()):
        if _METRIC_FILE.fullmatch(path.name):
            files.append(path)
        else:
            warnings.append(f"{path}: ignored, not a Nezha metric file (<pod>_metric.csv, front_service.csv)")
    return files


@dataclass(frozen=True, kw_only=True)
class _MetricFile:
    """One metric file as read: a row per minute, a column per metric (long format is 19x larger)."""

    times: np.ndarray
    """datetime64[ns] UTC instants, without a zone so that slicing stays in numpy."""
    services: np.ndarray
    pods: np.ndarray | None
    """Per row; None for front_service, whose series belong to no pod."""
    nodes: np.ndarray | None
    """Per row, from the placement; None where unknown."""
    names: np.ndarray
    values: np.ndarray
    """(minutes, metrics)"""

    def columns(self, start: np.datetime64, end: np.datetime64) -> dict[str, np.ndarray]:
        """Long-format columns of the minutes in [start, end), NaN samples left out."""
        rows = np.flatnonzero((self.times >= start) & (self.times < end))
        minute, metric = np.nonzero(np.isfinite(self.values[rows]))  # row-major, like `values`
        rows = rows[minute]
        none = np.full(len(rows), None, dtype=object)
        return {
            "timestamp": self.times[rows],
            "service": self.services[rows],
            "pod": self.pods[rows] if self.pods is not None else none,
            "node": self.nodes[rows] if self.nodes is not None else none,
            "metric": self.names[metric],
            "value": self.values[rows, metric],
        }


@dataclass(kw_only=True)
class _Metrics:
    """A day's metric files, kept wide; incidents take long-format slices of them."""

    directory: Path
    files: list[_MetricFile]
    config: TelemetryConfig

    def between(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame | None:
        lo, hi = (t.tz_convert("UTC").tz_localize(None).to_datetime64() for t in (start, end))
        parts = [f.columns(lo, hi) for f in self.files]
        long = pd.DataFrame({name: np.concatenate([part[name] for part in parts]) for name in parts[0]})
        if long.empty:
            return None
        long["timestamp"] = long["timestamp"].dt.tz_localize("UTC")
        table = normalise_table(long, "metrics", source=str(self.directory), config=self.config)
        return table.sort_values("timestamp", kind="stable", ignore_index=True)

    def services(self) -> set[str]:
        return {str(service) for f in self.files for service in np.unique(f.services)}


def _read_metrics(directory: Path, paths: Sequence[Path], placement: dict[str, str],
                  config: TelemetryConfig, warnings: list[str]) -> _Metrics | None:
    if not paths:
        return None
    files = [_read_metric_file(path, placement, config, warnings) for path in paths]
    nan_counts = [int(np.count_nonzero(~np.isfinite(f.values))) for f in files]
    if sum(nan_counts):
        # One warning per day, not one per file: most pods have NaN latencies in minutes without traffic.
        warnings.append(f"{directory}: dropped {sum(nan_counts):,} NaN or infinite metric samples "
                        f"({sum(n > 0 for n in nan_counts)} of {len(files)} files)")
    return _Metrics(directory=directory, files=files, config=config)


def _read_metric_file(path: Path, placement: dict[str, str], config: TelemetryConfig,
                      warnings: list[str]) -> _MetricFile:
    """Columns Time (ignored), TimeStamp (epoch s), PodName (ServiceName in front_service), then metrics."""
    frontend = path.name.startswith("front_service")
    required = ("TimeStamp",) if frontend else ("TimeStamp", "PodName")
    raw = _read_csv(path, required=required, dtype=dict.fromkeys(("Time", "PodName", "ServiceName"), str),
                    warnings=warnings)
    if not frontend and raw["PodName"].isna().any():
        raise FlipmoeInputError("empty value", path=path, column="PodName",
                                row=int(np.flatnonzero(raw["PodName"].isna().to_numpy())[0]) + 1)
    names = [c for c in raw.columns if c not in ("Time", "TimeStamp", "PodName", "ServiceName")]
    values = np.column_stack([_numbers(raw[name], path, name).to_numpy(dtype="float64")
                              for name in names]) if names else np.empty((len(raw), 0))
    finite = np.isfinite(values)
    if not finite.all() and not config.drop_nan_metric_values:
        row, column = np.argwhere(~finite)[0]
        raise FlipmoeInputError("NaN or infinite metric value", path=path, column=names[column],
                                row=int(row) + 1, hint="set telemetry.drop_nan_metric_values to drop them")
    times = _epoch(raw["TimeStamp"], path, "TimeStamp", "s").dt.tz_localize(None).to_numpy("datetime64[ns]")
    names_array = np.array(names, dtype=object)
    if frontend:
        return _MetricFile(times=times, services=np.full(len(raw), FRONTEND, dtype=object), pods=None,
                           nodes=None, names=names_array, values=values)
    pods = raw["PodName"].to_numpy(dtype=object)
    return _MetricFile(times=times, services=_services(raw["PodName"]), pods=pods,
                       nodes=np.array([placement.get(pod) for pod in pods], dtype=object),
                       names=names_array, values=values)


# --- log lines -------------------------------------------------------------------------------------

_LEVELS = r"TRACE|DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|ERR|SEVERE|FATAL|CRITICAL|CRIT|PANIC"
# "16:42:22.382 INFO  t.s.TravelServiceImpl#532 ..." (TrainTicket's logback), "2023-01-29 08:42:22,382
# [ERROR] ...", Spring Boot's "2023-01-29T08:42:22.382Z  WARN 1 --- [main] ...", Go's "2023/01/29 08:42:22
# [INFO] ...".
_CLOCK_LEVEL = re.compile(r"\s*(?:\d{4}[-/]\d{2}[-/]\d{2}[T ])?\d{2}:\d{2}:\d{2}(?:[.,]\d+)?"
                          rf"(?:Z|[+-]\d{{2}}:?\d{{2}})?\s+[\[(]?({_LEVELS})[\])]?:?(?:\s+|$)", re.IGNORECASE)
# klog/glog, Kubernetes' own components: "I0129 08:42:22.382312       1 main.go:42] ..."
_KLOG = re.compile(r"([IWEF])\d{4} \d{2}:\d{2}:\d{2}\.\d+\s")
# Python's "INFO:root:...", "[error] ...", .NET's "info: Microsoft.Hosting.Lifetime[0]", "WARN  c.e.Foo - ..."
_LEADING_LEVEL = re.compile(rf"\s*([\[(]?)({_LEVELS})[\])]?(:|\s)", re.IGNORECASE)
# JSON logs (logrus, zap, pino, structlog) and logfmt: "level":"info", "severity":"ERROR", level=warn,
# and pino's numeric "level":30.
_KEYED_LEVEL = re.compile(r"""["']?(?:level|severity|lvl|levelname|log\.level)["']?\s*[:=]\s*["']?(\w+)""",
                          re.IGNORECASE)
# Last resort, an upper-case level word near the start: Python's "2023-01-29 08:42:22,382 - app - ERROR - ..."
_LOOSE_LEVEL = re.compile(rf"(?<![\w.])({_LEVELS})(?![\w.])")
_PINO_LEVELS = {"10": "TRACE", "20": "DEBUG", "30": "INFO", "40": "WARN", "50": "ERROR", "60": "FATAL"}


def parse_log_line(record: str) -> tuple[str, str] | None:
    """A Nezha `Log` field -> (level, message), or None when it is a broken JSON record.

    The field is a Docker JSON record {"log": "<line>\\n", "stream": ..., "time": ...}; a field that is
    not JSON is taken as the line itself. A leading clock + level header is stripped (timestamp and
    level are columns of their own); other shapes keep the whole line. The level is one of LOG_LEVELS.
    """
    line = record
    if record.lstrip().startswith("{"):
        try:
            decoded = parse_json(record)
        except JsonInputError:
            return None
        if isinstance(decoded, dict) and isinstance(decoded.get("log"), str):
            line = decoded["log"]
    line = line.rstrip("\r\n")
    header = _CLOCK_LEVEL.match(line)
    if header is not None:
        return normalise_level(header[1]), line[header.end():] or line
    return normalise_level(_level_of(line)), line


def _level_of(line: str) -> str:
    klog = _KLOG.match(line)
    if klog is not None:
        return klog[1]
    leading = _LEADING_LEVEL.match(line)
    # A bare word needs to be upper case, or "Error connecting to ..." would read as a level.
    if leading is not None and (leading[2].isupper() or leading[1] or leading[3] == ":"):
        return leading[2]
    keyed = _KEYED_LEVEL.search(line, 0, 300)
    if keyed is not None:
        return _PINO_LEVELS.get(keyed[1], keyed[1])
    loose = _LOOSE_LEVEL.search(line, 0, 60)
    return loose[1] if loose is not None else "UNKNOWN"


# --- assembling and writing incidents --------------------------------------------------------------


@dataclass(kw_only=True)
class _Run:
    """One import: its settings, and what it has written or failed so far."""

    out: Path
    config: FlipmoeConfig
    overwrite: bool
    warnings: list[str]
    report: Progress
    fine_grained: dict[str, dict[str, str]] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)


def _import_day(day_dir: Path, date: dt.date, construct_dir: Path, run: _Run) -> None:
    try:
        faults, bad_entries = _read_fault_list(day_dir)
        run.failures.extend(bad_entries)
        todo = [fault for fault in faults if _may_write(fault, run)]
        if not todo:
            if not faults:
                run.warnings.append(f"{day_dir}: the fault list holds no usable fault")
            return
        day = _load_day(day_dir, date, construct_dir, faults, run.config.telemetry, run.warnings, run.report)
    except FlipmoeInputError as err:
        run.failures.append(f"{day_dir.name}: {err}; no fault of this date was imported")
        return
    for fault in todo:
        try:
            path, incident = _import_fault(fault, day, run)
        except FlipmoeInputError as err:
            run.failures.append(f"fault {fault.id} ({fault.where}): {err}")
            continue
        run.written.append(path)
        run.report(f"wrote {path}  ({_rows(incident.telemetry)})")


def _may_write(fault: _Fault, run: _Run) -> bool:
    """Check before reading a day's files that the fault's incident can be written; record it if not."""
    if fault.id in run.ids:
        problem = FlipmoeInputError("another fault was injected in the same second, so the incident id "
                                    "(epoch seconds) would repeat")
    elif (run.out / fault.id).exists() and not run.overwrite:
        problem = FlipmoeInputError("already exists", path=run.out / fault.id,
                                    hint="pass --overwrite to replace it, or choose another --out")
    else:
        run.ids.add(fault.id)
        return True
    run.failures.append(f"fault {fault.id} ({fault.where}): {problem}")
    return False


def _import_fault(fault: _Fault, day: _Day, run: _Run) -> tuple[Path, Incident]:
    label = Label(service=fault.service, pod=fault.pod, node=day.placement.get(fault.pod),
                  fault_type=map_dataset_type(SOURCE, fault.original_type), original_type=fault.original_type,
                  fine_grained=run.fine_grained.get(fault.service, {}).get(fault.original_type),
                  inject_time=fault.inject_time.isoformat().replace("+00:00", "Z"), source=SOURCE)
    incident = _incident(fault, day, run.config, run.warnings)
    return write_incident(incident, run.out / fault.id, label=label, overwrite=run.overwrite), incident


def _between(table: pd.DataFrame, column: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    time = table[column]
    return table[((time >= start) & (time < end)).to_numpy()].reset_index(drop=True)


def _dedupe_logs(frames: Sequence[pd.DataFrame]) -> pd.DataFrame | None:
    """The logs table of rows read from overlapping files: each line once, in time order."""
    if not frames:
        return None
    unique = pd.concat([frame[_LOG_COLUMNS] for frame in frames], ignore_index=True).drop_duplicates()
    return unique.sort_values("timestamp", kind="stable", ignore_index=True)


def _dedupe_spans(frames: Sequence[pd.DataFrame]) -> pd.DataFrame | None:
    """Spans read from overlapping files: each (trace_id, span_id) once, in start order."""
    if not frames:
        return None
    spans = pd.concat(frames, ignore_index=True).drop_duplicates(subset=["trace_id", "span_id"])
    return spans.sort_values("start", kind="stable", ignore_index=True)


def _placement(frames: Iterable[pd.DataFrame]) -> dict[str, str]:
    """Pod -> node from the Node column of the logs; a pod's first node wins."""
    pairs = [frame[["pod", "node"]].dropna().drop_duplicates() for frame in frames]
    if not pairs:
        return {}
    unique = pd.concat(pairs, ignore_index=True).drop_duplicates(subset=["pod"])
    return dict(sorted(zip(unique["pod"], unique["node"], strict=True)))


def _topology(span_frames: Sequence[pd.DataFrame], metrics: _Metrics | None,
              placement: dict[str, str]) -> Topology:
    """The day's services, with caller -> callee edges from every parent -> child span link."""
    services: set[str] = set()
    edges: list[tuple[str, str]] = []
    if span_frames:
        # Spans read twice from overlapping files give the same edges: no need to drop them first.
        links = ["trace_id", "span_id", "parent_span_id", "service"]
        spans = pd.concat([frame[links] for frame in span_frames], ignore_index=True)
        edges = call_edges(spans)
        services.update(spans["service"].unique())
    if metrics is not None:
        services.update(metrics.services())
    return Topology(services=sorted(services), edges=edges, placement=placement)


def _window_logs(day: _Day, window: TimeWindow) -> pd.DataFrame | None:
    logs = _dedupe_logs(day.logs.overlapping(window.start, window.end))
    return _between(logs, "timestamp", window.start, window.end) if logs is not None else None


def _window_spans(day: _Day, window: TimeWindow) -> pd.DataFrame | None:
    """Whole traces that start inside the window, so that every kept span keeps its tree."""
    spans = _dedupe_spans(day.spans.overlapping(window.start, window.end + _TRACE_TAIL))
    if spans is None:
        return None
    trace_start = spans.groupby("trace_id")["start"].transform("min")
    inside = ((trace_start >= window.start) & (trace_start < window.end)).to_numpy()
    return spans[inside].reset_index(drop=True)


def _incident(fault: _Fault, day: _Day, config: FlipmoeConfig, warnings: list[str]) -> Incident:
    """The fault's incident: a generic alert at the injection time, the window's telemetry, no answer."""
    imports = config.imports
    window = TimeWindow(fault.inject_time - pd.Timedelta(minutes=imports.window_before_minutes),
                        fault.inject_time + pd.Timedelta(minutes=imports.window_after_minutes))
    day.logs.check_readable(window.start, window.end)
    day.spans.check_readable(window.start, window.end + _TRACE_TAIL)
    history_start = window.start - pd.Timedelta(minutes=imports.history_minutes)
    metrics = None if day.metrics is None else day.metrics.between(history_start, window.end)
    telemetry = Telemetry(metrics=metrics, logs=_window_logs(day, window), spans=_window_spans(day, window))
    warnings.extend(_window_warnings(fault, day, window, history_start, telemetry))
    alert = f"{day.system}: anomaly reported around {fault.inject_time:%H:%M:%S} UTC"
    meta = IncidentMeta(id=fault.id, alert=alert, window=window, alert_time=fault.inject_time, source=SOURCE)
    return Incident(meta=meta, telemetry=telemetry, baseline=day.baseline, topology=day.topology)


def _window_warnings(fault: _Fault, day: _Day, window: TimeWindow, history_start: pd.Timestamp,
                     telemetry: Telemetry) -> list[str]:
    notes = [f"incident {fault.id}: no {name} found for its window {window.start:%H:%M:%S}.."
             f"{window.end:%H:%M:%S}; the incident has none" for name in ("metrics", "logs", "spans")
             if telemetry.table(name) is None]
    if telemetry.metrics is not None:
        first = telemetry.metrics["timestamp"].min()
        if first - history_start > pd.Timedelta(minutes=2):  # samples come every minute
            notes.append(f"incident {fault.id}: metrics start at {first:%H:%M:%S}, later than the wanted "
                         f"history from {history_start:%H:%M:%S}")
    notes.extend(f"incident {fault.id}: its window also holds the injection of incident {other.id} at "
                 f"{other.inject_time:%H:%M:%S}; both faults may show"
                 for other in day.injections
                 if other is not fault and window.start <= other.inject_time < window.end)
    return notes


def _rows(telemetry: Telemetry) -> str:
    counts = {name: len(table) for name in ("metrics", "logs", "spans")
              if (table := telemetry.table(name)) is not None}
    return ", ".join(f"{name} {counts[name]:,}" if name in counts else f"no {name}"
                     for name in ("metrics", "logs", "spans"))
