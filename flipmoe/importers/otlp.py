"""OTLP/JSON files, as the OpenTelemetry Collector's file exporter writes them -> an incident directory.

The file exporter writes one export request per line (JSON Lines): an ExportTraceServiceRequest
`{"resourceSpans": [...]}`, ExportLogsServiceRequest `{"resourceLogs": [...]}` or
ExportMetricsServiceRequest `{"resourceMetrics": [...]}` in the OTLP/JSON encoding
(opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): trace and span ids are hex strings, 64-bit
integers are decimal strings (numbers are accepted too), enums are numbers or names, keys are
lowerCamelCase; the proto's snake_case names are accepted as well, as the proto3 JSON mapping asks of
parsers. A file may instead hold one (pretty-printed) request, and may be gzipped.

The JSON is mapped to rows by hand, not through opentelemetry-proto's `json_format.Parse`: that
follows the generic proto3 JSON mapping, so it reads the hex trace and span ids as base64 and
returns garbage ids; it rejects a whole batch over one unknown field, where a warning is enough; and
on 9.4 MB of the fixture's trace batches (upb backend) `Parse` alone took 8.5x as long as
`json.loads` plus this walk to rows (measured once, by hand; not a test).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from flipmoe.config import TelemetryConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.importers._common import write_imported
from flipmoe.telemetry import Telemetry, TimeWindow
from flipmoe.telemetry.json_input import JsonInputError, parse_json
from flipmoe.telemetry.schema import TABLES
from flipmoe.telemetry.validate import normalise_table

__all__ = ["histogram_quantiles", "import_otlp", "read_otlp"]

# Message kind -> its fields (lowerCamelCase), after the OTLP v1 protos. Fields of messages we never
# descend into (scope, span events, links, exemplars) are not listed: nothing reads them.
_FIELDS: dict[str, frozenset[str]] = {name: frozenset(fields.split()) for name, fields in {
    "ExportRequest": "resourceSpans resourceLogs resourceMetrics",
    "ResourceSpans": "resource scopeSpans schemaUrl",
    "ResourceLogs": "resource scopeLogs schemaUrl",
    "ResourceMetrics": "resource scopeMetrics schemaUrl",
    "Resource": "attributes droppedAttributesCount entityRefs",
    "ScopeSpans": "scope spans schemaUrl",
    "ScopeLogs": "scope logRecords schemaUrl",
    "ScopeMetrics": "scope metrics schemaUrl",
    "Span": "traceId spanId traceState parentSpanId flags name kind startTimeUnixNano endTimeUnixNano "
            "attributes droppedAttributesCount events droppedEventsCount links droppedLinksCount status",
    "Status": "message code",
    "LogRecord": "timeUnixNano observedTimeUnixNano severityNumber severityText body attributes "
                 "droppedAttributesCount flags traceId spanId eventName",
    "Metric": "name description unit gauge sum histogram exponentialHistogram summary metadata",
    "Gauge": "dataPoints",
    "Sum": "dataPoints aggregationTemporality isMonotonic",
    "Histogram": "dataPoints aggregationTemporality",
    "ExponentialHistogram": "dataPoints aggregationTemporality",
    "Summary": "dataPoints",
    "NumberDataPoint": "attributes startTimeUnixNano timeUnixNano asDouble asInt exemplars flags",
    "HistogramDataPoint": "attributes startTimeUnixNano timeUnixNano count sum bucketCounts explicitBounds "
                          "exemplars flags min max",
    "ExponentialHistogramDataPoint": "attributes startTimeUnixNano timeUnixNano count sum scale zeroCount "
                                     "positive negative flags exemplars min max zeroThreshold",
    "SummaryDataPoint": "attributes startTimeUnixNano timeUnixNano count sum quantileValues flags",
    "ValueAtQuantile": "quantile value",
    "KeyValue": "key value",
    "AnyValue": "stringValue boolValue intValue doubleValue arrayValue kvlistValue bytesValue",
    "ArrayValue": "values",
    "KeyValueList": "values",
}.items()}

# Collectors before v0.49 wrote the pre-1.0 names of the scope messages.
_ALIASES = {"instrumentationLibrarySpans": "scopeSpans", "instrumentationLibraryLogs": "scopeLogs",
            "instrumentationLibraryMetrics": "scopeMetrics", "instrumentationLibrary": "scope"}

_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_STATUS_NAMES = ("unset", "ok", "error")
_SEVERITY_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
# SEVERITY_NUMBER_TRACE = 1, TRACE2..TRACE4 = 2..4, DEBUG = 5, ..., FATAL4 = 24.
_SEVERITY_NUMBERS = {"SEVERITY_NUMBER_UNSPECIFIED": 0} | {
    f"SEVERITY_NUMBER_{level}{step if step > 1 else ''}": 4 * i + step
    for i, level in enumerate(_SEVERITY_LEVELS) for step in range(1, 5)}
_TEMPORALITIES = {"AGGREGATION_TEMPORALITY_UNSPECIFIED": 0, "AGGREGATION_TEMPORALITY_DELTA": 1,
                  "AGGREGATION_TEMPORALITY_CUMULATIVE": 2}
_CUMULATIVE = 2
_NO_RECORDED_VALUE = 1  # DataPointFlags bit: the point marks a series as gone (Prometheus staleness)
_QUANTILES = (0.5, 0.95, 0.99)
_INT64_MAX = 2**63 - 1

# Resource (or data point) attributes that name where telemetry came from, per OTel semantic conventions.
_SERVICE_KEY, _POD_KEY, _NODE_KEYS = "service.name", "k8s.pod.name", ("k8s.node.name", "host.name")
_PLACEMENT_KEYS = frozenset((_SERVICE_KEY, _POD_KEY, *_NODE_KEYS))
# What OTel SDKs report when service.name is not configured.
_UNKNOWN_SERVICE = "unknown_service"
_HEX = re.compile(r"[0-9a-f]*")


@dataclass(frozen=True)
class _Origin:
    """Service, pod and node that a batch of telemetry came from."""

    service: str | None
    pod: str | None
    node: str | None


@dataclass(frozen=True)
class _HistogramPoint:
    """One histogram data point, kept until all files are read: cumulative points need their predecessor."""

    series: tuple[str | None, str | None, str | None, str, str, int]
    """(service, pod, node, metric name, attribute labels, startTimeUnixNano): one series' points share it."""
    time_ns: int
    cumulative: bool
    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    low: float | None
    high: float | None


@dataclass
class _Reader:
    """Rows gathered from every file, and where in which file the reader is, for error messages."""

    path: Path = Path()
    line: int = 0
    rows: dict[str, dict[str, list[Any]]] = field(default_factory=lambda: {
        table: {c.name: [] for c in TABLES[table]} for table in ("metrics", "logs", "spans")})
    histograms: list[_HistogramPoint] = field(default_factory=list)
    placement: dict[str, str] = field(default_factory=dict)
    unknown_fields: dict[str, str] = field(default_factory=dict)
    """'Kind.field' -> 'file:line' where it was first seen; reported once each."""
    rows_without_service: int = 0
    bodiless_logs: int = 0
    exponential_histograms: int = 0

    def error(self, problem: str, hint: str | None = None) -> FlipmoeInputError:
        return FlipmoeInputError(f"line {self.line}: {problem}", path=self.path, hint=hint)

    def add(self, table: str, **values: Any) -> None:
        if values["service"] is None:
            values["service"] = _UNKNOWN_SERVICE
            self.rows_without_service += 1
        for name, column in self.rows[table].items():
            column.append(values.get(name))


def read_otlp(files: Sequence[str | Path], *, config: TelemetryConfig | None = None,
              warnings: list[str] | None = None) -> Telemetry:
    """Read OTLP/JSON files (traces, logs and metrics, in any mix) into canonical tables."""
    telemetry, _ = _read(files, config or TelemetryConfig(), warnings if warnings is not None else [])
    return telemetry


def import_otlp(files: Sequence[str | Path], out: str | Path, *, incident_id: str | None = None,
                alert: str | None = None, window: TimeWindow | None = None,
                baseline_files: Sequence[str | Path] | None = None, config: TelemetryConfig | None = None,
                overwrite: bool = False, warnings: list[str] | None = None) -> Path:
    """Read OTLP/JSON files and write them as the incident directory `out` (atomically).

    Defaults: the id is `out`'s name, the window the time span of the data.
    """
    config = config or TelemetryConfig()
    warnings = warnings if warnings is not None else []
    telemetry, placement = _read(files, config, warnings)
    baseline = None
    if baseline_files:
        baseline, baseline_placement = _read(baseline_files, config, warnings)
        placement = baseline_placement | placement
    return write_imported(out, telemetry, baseline=baseline, placement=placement, incident_id=incident_id,
                          alert=alert or "no alert text given (imported from OTLP/JSON)", window=window,
                          source="otlp", overwrite=overwrite)


def _read(files: Sequence[str | Path], config: TelemetryConfig,
          warnings: list[str]) -> tuple[Telemetry, dict[str, str]]:
    if not files:
        raise FlipmoeInputError("no OTLP/JSON files given")
    reader = _Reader()
    for path in map(Path, files):
        reader.path = path
        for line, record in _records(path, config.max_json_line_bytes):
            reader.line = line
            _read_request(record, reader)
    _add_histogram_quantiles(reader)
    warnings.extend(_reader_warnings(reader))
    source = str(files[0]) if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more OTLP files)"
    tables = {table: normalise_table(_frame(columns), table, source=source, config=config, warnings=warnings)
              for table, columns in reader.rows.items() if columns["service"]}
    return Telemetry(**tables), reader.placement


def _reader_warnings(reader: _Reader) -> list[str]:
    warnings = [f"{where}: ignored unknown OTLP field '{name}' (reported once)"
                for name, where in reader.unknown_fields.items()]
    if reader.rows_without_service:
        warnings.append(f"{reader.rows_without_service} OTLP row(s) carry no service.name attribute; "
                        f"they are filed under '{_UNKNOWN_SERVICE}', as OpenTelemetry SDKs do")
    if reader.bodiless_logs:
        warnings.append(f"dropped {reader.bodiless_logs} OTLP log record(s) with neither a body nor an "
                        "event name")
    if reader.exponential_histograms:
        warnings.append(f"{reader.exponential_histograms} exponential histogram point(s) imported as _count "
                        "and _sum only; their quantiles are not estimated")
    return warnings


def _frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    # Time columns hold integer nanoseconds since the epoch, which is what OTLP stores.
    data: dict[str, Any] = {}
    for name, values in columns.items():
        if name in ("timestamp", "start"):
            data[name] = pd.to_datetime(np.asarray(values, dtype=np.int64), unit="ns", utc=True)
        else:
            data[name] = values
    return pd.DataFrame(data)


# --- files -> JSON records -------------------------------------------------------------------------

def _records(path: Path, limit: int) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for each record of `path`, read one line at a time."""
    try:
        yield from _records_unchecked(path, limit)
    except FileNotFoundError:
        raise FlipmoeInputError("no such file", path=path) from None
    except IsADirectoryError:
        raise FlipmoeInputError("is a directory, not an OTLP/JSON file", path=path) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise FlipmoeInputError(f"truncated or corrupt gzip data ({err})", path=path) from None


def _records_unchecked(path: Path, limit: int) -> Iterator[tuple[int, Any]]:
    first_line = 0
    with _open(path) as handle:
        for number, line in _lines(handle, limit, path):
            if not line.strip():
                continue
            try:
                record = parse_json(line)
            except JsonInputError as err:
                if err.malformed and not first_line:
                    # The first record does not fit on its line: the file is one pretty-printed document.
                    yield number, _document(path, limit)
                    return
                raise _json_error(path, number, err) from None
            first_line = first_line or number
            yield number, record
    if not first_line:
        raise FlipmoeInputError("file is empty", path=path,
                                hint="expected OTLP/JSON export requests, one per line")


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


def _lines(handle: IO[bytes], limit: int, path: Path) -> Iterator[tuple[int, bytes]]:
    # readline(limit + 1) never holds more than the limit in memory, however long the line is.
    number = 0
    while line := handle.readline(limit + 1):
        number += 1
        if len(line.rstrip(b"\r\n")) > limit:
            raise _too_long(path, f"line {number} is longer than {limit} bytes")
        yield number, line


def _document(path: Path, limit: int) -> Any:
    with _open(path) as handle:
        text = handle.read(limit + 1)
    if len(text) > limit:
        raise _too_long(path, f"the file is neither JSON Lines nor a JSON document of at most {limit} bytes")
    try:
        return parse_json(text)
    except JsonInputError as err:
        raise _json_error(path, err.line, err) from None


def _too_long(path: Path, problem: str) -> FlipmoeInputError:
    return FlipmoeInputError(problem, path=path,
                             hint="if the batch is genuine, raise telemetry.max_json_line_bytes")


def _json_error(path: Path, line: int, err: JsonInputError) -> FlipmoeInputError:
    return FlipmoeInputError(f"line {line}: {err.problem}", path=path,
                             hint="a truncated line? the collector writes one complete JSON object per line"
                             if err.malformed else None)


# --- JSON records -> rows --------------------------------------------------------------------------

@lru_cache(maxsize=1024)
def _camel(key: str) -> str:
    name = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), key)
    return _ALIASES.get(name, name)


def _message(value: Any, kind: str, reader: _Reader) -> dict[str, Any]:
    """`value` as an OTLP message of `kind`, keyed by lowerCamelCase names, its unknown fields dropped."""
    if not isinstance(value, dict):
        raise reader.error(f"{kind} must be a JSON object, got {_json_type(value)}")
    known = _FIELDS[kind]
    fields = {}
    for key, item in value.items():
        name = _camel(key)
        if name in known:
            fields[name] = item
        elif f"{kind}.{key}" not in reader.unknown_fields:
            reader.unknown_fields[f"{kind}.{key}"] = f"{reader.path}:{reader.line}"
    return fields


def _repeated(fields: dict[str, Any], name: str, kind: str, reader: _Reader) -> list[dict[str, Any]]:
    """The messages of the repeated field `name` of a message."""
    return _messages(fields.get(name), name, kind, reader)


def _messages(items: Any, name: str, kind: str, reader: _Reader) -> list[dict[str, Any]]:
    # proto3 JSON leaves empty repeated fields out, and some writers write null.
    if items is None:
        return []
    if not isinstance(items, list):
        raise reader.error(f"'{name}' must be a JSON array, got {_json_type(items)}")
    return [_message(item, kind, reader) for item in items]


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _read_request(record: Any, reader: _Reader) -> None:
    request = _message(record, "ExportRequest", reader)
    if not request:
        raise reader.error("not an OTLP export request",
                           hint="expected an object with resourceSpans, resourceLogs or resourceMetrics")
    for key, (resource_kind, scopes_key, scope_kind, items_key, item_kind, add) in _SIGNALS.items():
        for resource_block in _repeated(request, key, resource_kind, reader):
            origin = _resource_origin(resource_block.get("resource"), reader)
            for scope in _repeated(resource_block, scopes_key, scope_kind, reader):
                for item in _repeated(scope, items_key, item_kind, reader):
                    add(item, origin, reader)


def _resource_origin(resource: Any, reader: _Reader) -> _Origin:
    fields = _message({} if resource is None else resource, "Resource", reader)
    attributes = _attributes(fields.get("attributes"), reader)
    return _placed(_Origin(service=_text(attributes.get(_SERVICE_KEY)), pod=_text(attributes.get(_POD_KEY)),
                           node=_node(attributes)), reader)


def _placed(origin: _Origin, reader: _Reader) -> _Origin:
    """`origin`, noting its pod's node for the topology's placement."""
    if origin.pod and origin.node:
        reader.placement[origin.pod] = origin.node
    return origin


def _node(attributes: dict[str, Any]) -> str | None:
    return next((text for key in _NODE_KEYS if (text := _text(attributes.get(key)))), None)


def _attributes(items: Any, reader: _Reader, name: str = "attributes") -> dict[str, Any]:
    attributes = {}
    for pair in _messages(items, name, "KeyValue", reader):
        key = pair.get("key")
        if not isinstance(key, str):
            raise reader.error(f"attribute key must be a string, got {_json_type(key)}")
        attributes[key] = _any_value(pair.get("value"), reader)
    return attributes


def _any_value(value: Any, reader: _Reader) -> Any:
    """An AnyValue as plain Python data: str, int, float, bool, list, dict, or None when empty."""
    fields = _message({} if value is None else value, "AnyValue", reader)
    for name, convert in _ANY_VALUE_KINDS.items():
        if name in fields:
            return convert(fields[name], reader)
    return None


def _string(value: Any, reader: _Reader, what: str = "stringValue") -> str:
    if not isinstance(value, str):
        raise reader.error(f"{what} must be a string, got {_json_type(value)}")
    return value


def _bool(value: Any, reader: _Reader) -> bool:
    if not isinstance(value, bool):
        raise reader.error(f"boolValue must be true or false, got {_json_type(value)}")
    return value


def _array(value: Any, reader: _Reader) -> list[Any]:
    values = _message(value, "ArrayValue", reader).get("values")
    if values is not None and not isinstance(values, list):
        raise reader.error(f"'arrayValue.values' must be a JSON array, got {_json_type(values)}")
    return [_any_value(item, reader) for item in values or ()]


def _kvlist(value: Any, reader: _Reader) -> dict[str, Any]:
    return _attributes(_message(value, "KeyValueList", reader).get("values"), reader, "kvlistValue.values")


_ANY_VALUE_KINDS: dict[str, Callable[[Any, _Reader], Any]] = {
    "stringValue": _string,
    "intValue": lambda value, reader: _integer(value, reader, "intValue"),
    "doubleValue": lambda value, reader: _double(value, reader, "doubleValue"),
    "boolValue": _bool,
    "arrayValue": _array,
    "kvlistValue": _kvlist,
    # bytes are base64 in OTLP/JSON; the text is as good a label as any decoding of it.
    "bytesValue": lambda value, reader: _string(value, reader, "bytesValue"),
}


def _text(value: Any) -> str | None:
    """Attribute or body value as text: scalars as written, structured values as JSON."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _integer(value: Any, reader: _Reader, what: str) -> int:
    """An int64/uint64 field: a decimal string in OTLP/JSON, a number from lenient writers."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise reader.error(f"{what} must be an integer (a decimal string in OTLP/JSON), got {value!r}")


def _double(value: Any, reader: _Reader, what: str) -> float:
    # proto3 JSON writes non-finite doubles as the strings "NaN", "Infinity" and "-Infinity".
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise reader.error(f"{what} must be a number, got {value!r}")


def _nanos(fields: dict[str, Any], name: str, reader: _Reader) -> int:
    """A fixed64 timestamp in nanoseconds since the epoch; 0 when absent (proto3 omits zeros)."""
    nanos = _integer(fields.get(name, 0), reader, name)
    if not 0 <= nanos <= _INT64_MAX:
        raise reader.error(f"{name} {nanos} is out of range for a timestamp in nanoseconds")
    return nanos


def _enum(value: Any, names: dict[str, int], reader: _Reader, what: str) -> int:
    """An enum field, written as its number or its name."""
    number = names.get(value, value) if isinstance(value, str) else value
    if isinstance(number, str) and number.strip().isdigit():
        number = int(number)
    if isinstance(number, bool) or number not in names.values():
        raise reader.error(f"{what} {value!r} is none of its enum names or numbers "
                           f"({min(names.values())}..{max(names.values())})")
    return int(number)


def _id(value: Any, size: int, reader: _Reader, what: str) -> str | None:
    """A trace or span id as lowercase hex; None when absent or all zeros (the spec's 'invalid' id)."""
    if value is None or value == "":
        return None
    text = _string(value, reader, what).strip().lower()
    hex_id = text if len(text) == 2 * size and _HEX.fullmatch(text) else _base64_id(value, size)
    if hex_id is None:
        raise reader.error(f"{what} {value!r} is not a {size}-byte id in hex")
    return None if hex_id.strip("0") == "" else hex_id


def _base64_id(value: str, size: int) -> str | None:
    # OTLP/JSON says hex, but exporters built on the generic proto3 JSON mapping write bytes as base64.
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == size else None


# --- spans and logs --------------------------------------------------------------------------------

def _add_span(span: dict[str, Any], origin: _Origin, reader: _Reader) -> None:
    trace_id = _id(span.get("traceId"), 16, reader, "traceId")
    span_id = _id(span.get("spanId"), 8, reader, "spanId")
    if trace_id is None or span_id is None:
        raise reader.error(f"span {span.get('name')!r} has no {'traceId' if trace_id is None else 'spanId'}")
    name = _string(span.get("name", ""), reader, "span name")
    start, end = _nanos(span, "startTimeUnixNano", reader), _nanos(span, "endTimeUnixNano", reader)
    if not name or not start or not end:
        missing = "name" if not name else "startTimeUnixNano" if not start else "endTimeUnixNano"
        raise reader.error(f"span {span_id} has no {missing}")
    status = _message(span.get("status") or {}, "Status", reader)
    code = _enum(status.get("code", 0), _STATUS_CODES, reader, "status.code")
    reader.add("spans", trace_id=trace_id, span_id=span_id,
               parent_span_id=_id(span.get("parentSpanId"), 8, reader, "parentSpanId"),
               service=origin.service, pod=origin.pod, operation=name, start=start,
               duration=(end - start) / 1e6, status=_STATUS_NAMES[code])


def _add_log(record: dict[str, Any], origin: _Origin, reader: _Reader) -> None:
    # timeUnixNano is when the event happened; collectors fill only observedTimeUnixNano when the
    # source line carried no time of its own.
    time = _nanos(record, "timeUnixNano", reader) or _nanos(record, "observedTimeUnixNano", reader)
    if not time:
        raise reader.error("log record has neither timeUnixNano nor observedTimeUnixNano")
    message = _text(_any_value(record.get("body"), reader))
    message = message or _string(record.get("eventName", ""), reader, "eventName")
    if not message:
        reader.bodiless_logs += 1
        return
    reader.add("logs", timestamp=time, service=origin.service, pod=origin.pod,
               level=_log_level(record, reader), message=message,
               trace_id=_id(record.get("traceId"), 16, reader, "traceId"),
               span_id=_id(record.get("spanId"), 8, reader, "spanId"))


def _log_level(record: dict[str, Any], reader: _Reader) -> str:
    # severityNumber is OTel's normalised scale (four steps per level); severityText is the source's own
    # spelling and only decides when no number was set.
    number = _enum(record.get("severityNumber", 0), _SEVERITY_NUMBERS, reader, "severityNumber")
    if number:
        return _SEVERITY_LEVELS[(number - 1) // 4]
    return _string(record.get("severityText", ""), reader, "severityText") or "UNKNOWN"


# --- metrics ---------------------------------------------------------------------------------------

def _add_metric(metric: dict[str, Any], origin: _Origin, reader: _Reader) -> None:
    name = _string(metric.get("name", ""), reader, "metric name")
    if not name:
        raise reader.error("metric has no name")
    kinds = [kind for kind in _POINT_READERS if kind in metric]
    if len(kinds) > 1:
        raise reader.error(f"metric {name!r} has more than one data kind ({', '.join(kinds)})")
    for kind in kinds:
        data = _message(metric[kind], kind[0].upper() + kind[1:], reader)
        temporality = _enum(data.get("aggregationTemporality", 0), _TEMPORALITIES, reader,
                            "aggregationTemporality")
        point_kind, read_point = _POINT_READERS[kind]
        for point in _repeated(data, "dataPoints", point_kind, reader):
            if _integer(point.get("flags", 0), reader, "flags") & _NO_RECORDED_VALUE:
                continue
            read_point(point, name, temporality == _CUMULATIVE, origin, reader)


def _point_series(point: dict[str, Any], origin: _Origin, reader: _Reader) -> tuple[_Origin, str]:
    """The point's origin (its own service/pod/node attributes win) and its other attributes as labels.

    The metrics table is long format with service, pod and node as its only dimensions, so every
    other attribute (http.route, state, cpu, ...) is folded into the metric name: otherwise the points
    of different series would interleave into one. Keys are sorted so a series keeps one name across
    batches and files; values are quoted as in Prometheus' exposition format.
    """
    attributes = _attributes(point.get("attributes"), reader)
    origin = _placed(_Origin(service=_text(attributes.get(_SERVICE_KEY)) or origin.service,
                             pod=_text(attributes.get(_POD_KEY)) or origin.pod,
                             node=_node(attributes) or origin.node), reader)
    labels = ",".join(f"{key}={json.dumps(_text(value) or '', ensure_ascii=False)}"
                      for key, value in sorted(attributes.items()) if key not in _PLACEMENT_KEYS)
    return origin, "{" + labels + "}" if labels else ""


def _point_time(point: dict[str, Any], reader: _Reader) -> int:
    time = _nanos(point, "timeUnixNano", reader)
    if not time:
        raise reader.error("metric data point has no timeUnixNano")
    return time


def _add_metric_row(reader: _Reader, time: int, origin: _Origin, metric: str, value: float) -> None:
    reader.add("metrics", timestamp=time, service=origin.service, pod=origin.pod, node=origin.node,
               metric=metric, value=value)


def _read_number_point(point: dict[str, Any], name: str, cumulative: bool, origin: _Origin,
                       reader: _Reader) -> None:
    # A cumulative monotonic sum stays a running total, as Prometheus stores counters: rates are the
    # analysis' business, and a total keeps the information a rate would lose at a reset.
    if "asDouble" in point:
        value = _double(point["asDouble"], reader, "asDouble")
    elif "asInt" in point:
        value = float(_integer(point["asInt"], reader, "asInt"))
    else:
        raise reader.error(f"data point of metric {name!r} has neither asDouble nor asInt")
    origin, labels = _point_series(point, origin, reader)
    _add_metric_row(reader, _point_time(point, reader), origin, name + labels, value)


def _add_count_and_sum(point: dict[str, Any], name: str, labels: str, time: int, origin: _Origin,
                       reader: _Reader) -> None:
    _add_metric_row(reader, time, origin, f"{name}_count{labels}",
                    float(_integer(point.get("count", 0), reader, "count")))
    if "sum" in point:
        _add_metric_row(reader, time, origin, f"{name}_sum{labels}", _double(point["sum"], reader, "sum"))


def _read_histogram_point(point: dict[str, Any], name: str, cumulative: bool, origin: _Origin,
                          reader: _Reader) -> None:
    origin, labels = _point_series(point, origin, reader)
    time = _point_time(point, reader)
    _add_count_and_sum(point, name, labels, time, origin, reader)
    counts = tuple(_integer(c, reader, "bucketCounts") for c in point.get("bucketCounts") or ())
    bounds = tuple(_double(b, reader, "explicitBounds") for b in point.get("explicitBounds") or ())
    if counts and len(counts) != len(bounds) + 1:
        raise reader.error(f"histogram {name!r} has {len(counts)} bucketCounts for {len(bounds)} bounds",
                           hint="OTLP needs one more bucket count than bounds")
    if counts:
        low = _double(point["min"], reader, "min") if "min" in point else None
        high = _double(point["max"], reader, "max") if "max" in point else None
        start = _nanos(point, "startTimeUnixNano", reader)
        series = (origin.service, origin.pod, origin.node, name, labels, start)
        reader.histograms.append(_HistogramPoint(series=series, time_ns=time, cumulative=cumulative,
                                                 bounds=bounds, counts=counts, low=low, high=high))


def _read_exponential_point(point: dict[str, Any], name: str, cumulative: bool, origin: _Origin,
                            reader: _Reader) -> None:
    # Buckets of exponential histograms change scale from point to point, which makes the differences
    # between cumulative points a re-bucketing job; count and sum carry most of the signal.
    origin, labels = _point_series(point, origin, reader)
    _add_count_and_sum(point, name, labels, _point_time(point, reader), origin, reader)
    reader.exponential_histograms += 1


def _read_summary_point(point: dict[str, Any], name: str, cumulative: bool, origin: _Origin,
                        reader: _Reader) -> None:
    origin, labels = _point_series(point, origin, reader)
    time = _point_time(point, reader)
    _add_count_and_sum(point, name, labels, time, origin, reader)
    for quantile in _repeated(point, "quantileValues", "ValueAtQuantile", reader):
        q = _double(quantile.get("quantile", 0.0), reader, "quantile")
        value = _double(quantile.get("value", 0.0), reader, "value")
        _add_metric_row(reader, time, origin, f"{name}_{_quantile_name(q)}{labels}", value)


def _quantile_name(q: float) -> str:
    return f"p{q * 100:g}"


_PointReader = Callable[[dict[str, Any], str, bool, _Origin, _Reader], None]
_POINT_READERS: dict[str, tuple[str, _PointReader]] = {
    "gauge": ("NumberDataPoint", _read_number_point),
    "sum": ("NumberDataPoint", _read_number_point),
    "histogram": ("HistogramDataPoint", _read_histogram_point),
    "exponentialHistogram": ("ExponentialHistogramDataPoint", _read_exponential_point),
    "summary": ("SummaryDataPoint", _read_summary_point),
}

_AddItem = Callable[[dict[str, Any], _Origin, _Reader], None]
# Export request key -> (resource kind, scope list key, scope kind, item list key, item kind, reader).
_SIGNALS: dict[str, tuple[str, str, str, str, str, _AddItem]] = {
    "resourceSpans": ("ResourceSpans", "scopeSpans", "ScopeSpans", "spans", "Span", _add_span),
    "resourceLogs": ("ResourceLogs", "scopeLogs", "ScopeLogs", "logRecords", "LogRecord", _add_log),
    "resourceMetrics": ("ResourceMetrics", "scopeMetrics", "ScopeMetrics", "metrics", "Metric", _add_metric),
}


def _add_histogram_quantiles(reader: _Reader) -> None:
    """Add name_p50/_p95/_p99 rows for every histogram point, estimated from its buckets.

    A cumulative histogram's buckets count everything since the series started, so its quantiles
    would barely move during an incident; like Prometheus' `histogram_quantile(rate(...))`, they are
    taken over the increase since the series' previous point instead (or over the point itself when it
    is the first, or the counts dropped because the process restarted).
    """
    previous: dict[tuple[str | None, str | None, str | None, str, str, int], _HistogramPoint] = {}
    for point in sorted(reader.histograms, key=lambda p: p.time_ns):
        counts, low, high = point.counts, point.low, point.high
        before = previous.get(point.series)
        if point.cumulative and before is not None and before.bounds == point.bounds:
            increase = tuple(now - then for now, then in zip(counts, before.counts, strict=True))
            if min(increase) >= 0:
                # min and max cover the whole series, not the increase: they no longer bound it.
                counts, low, high = increase, None, None
        previous[point.series] = point
        service, pod, node, name, labels, _ = point.series
        origin = _Origin(service=service, pod=pod, node=node)
        for q, value in histogram_quantiles(point.bounds, counts, low=low, high=high).items():
            _add_metric_row(reader, point.time_ns, origin, f"{name}_{_quantile_name(q)}{labels}", value)


def histogram_quantiles(bounds: Sequence[float], counts: Sequence[int], *, low: float | None = None,
                        high: float | None = None,
                        quantiles: Iterable[float] = _QUANTILES) -> dict[float, float]:
    """Estimate quantiles of an explicit-bucket histogram (an estimate: buckets hide where values lie).

    Bucket i holds values in (bounds[i-1], bounds[i]]; the first and last are open-ended. Inside the
    bucket holding the quantile's rank the value is interpolated linearly, as Prometheus'
    `histogram_quantile` does. The open ends are closed by the observed `low`/`high` (OTLP's min/max)
    when known, otherwise like Prometheus: 0 below a positive first bound, and the highest finite
    bound for ranks in the top bucket. Returns {} for an empty histogram, or one with no bounds and
    no min/max to anchor it.
    """
    total = sum(counts)
    if total <= 0 or (not bounds and (low is None or high is None)):
        return {}
    first_edge = low if low is not None else (0.0 if bounds[0] > 0 else bounds[0])
    last_edge = high if high is not None else bounds[-1]
    edges = [first_edge, *bounds, last_edge]
    cumulative = np.cumsum(counts)
    estimates = {}
    for q in quantiles:
        rank = q * total
        i = min(int(np.searchsorted(cumulative, rank, side="left")), len(counts) - 1)
        below = float(cumulative[i - 1]) if i else 0.0
        lower, upper = edges[i], edges[i + 1]
        value = lower + (upper - lower) * (rank - below) / counts[i] if counts[i] else upper
        estimates[q] = float(np.clip(value, low if low is not None else -math.inf,
                                     high if high is not None else math.inf))
    return estimates
