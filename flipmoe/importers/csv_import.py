"""CSV files with their own column names -> an incident directory.

A `CsvMapping` (YAML, or built in code) says per table which file to read, which of its columns holds
each canonical column, and constants for the columns the file lacks (a log file of one service has no
service column); for all tables, the timezone of timestamps written without one and the unit of span
durations. Every table then goes through `normalise_table`, so a bad value is reported with its file,
column and row. Example mapping:

```yaml
timezone: Asia/Shanghai        # for naive timestamps; leave out to refuse them
duration_unit: us              # spans' duration column
spans:
  file: traces.csv             # relative to this YAML
  columns: {trace_id: TraceID, span_id: SpanID, parent_span_id: ParentID, service: ServiceName,
            operation: OperationName, start: StartTimeUnixNano, duration: Duration, status: StatusCode}
logs:
  file: checkout.log.csv
  columns: {timestamp: time, level: severity, message: msg}
  constants: {service: checkout}
  baseline_file: checkout.baseline.log.csv
```
"""

from __future__ import annotations

import dataclasses
import gzip
import re
import zlib
from dataclasses import dataclass, field
from datetime import timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from warnings import catch_warnings, simplefilter
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from flipmoe.config import TelemetryConfig, load_yaml
from flipmoe.errors import FlipmoeInputError
from flipmoe.importers._common import write_imported
from flipmoe.telemetry import MODALITIES, Telemetry, TimeWindow
from flipmoe.telemetry.schema import STRING, TABLES
from flipmoe.telemetry.validate import normalise_table, to_utc

__all__ = ["CsvMapping", "TableMapping", "import_csv", "with_overrides"]

_MS_PER_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")
# The rule `validate.to_utc` uses to tell a timestamp that names its timezone from a naive one.
_NAMES_ZONE = re.compile(r"(?:Z|[+-]\d{2}:?\d{2}|\bUTC|\bGMT)\s*$", re.IGNORECASE)


@dataclass(kw_only=True)
class TableMapping:
    """How one CSV file becomes one of the incident's tables."""

    file: str | None = None
    """The CSV file (plain or gzipped); None: the table is not imported. Relative paths in a mapping
    YAML are relative to the YAML's directory."""
    columns: dict[str, str] = field(default_factory=dict)
    """Canonical column -> the file's column; canonical columns left out are looked up by their own name."""
    constants: dict[str, str] = field(default_factory=dict)
    """Canonical column -> the value of every row, for columns the file lacks (e.g. service: checkout)."""
    baseline_file: str | None = None
    """A CSV of a fault-free window in the same layout, written to the incident's baseline/."""

    def __post_init__(self) -> None:
        self.columns = _text_values(self.columns, "columns")
        self.constants = _text_values(self.constants, "constants")
        both = sorted(set(self.columns) & set(self.constants))
        if both:
            raise FlipmoeInputError(f"column(s) {', '.join(both)} have both a source column and a constant")


def _text_values(mapping: dict[str, Any], what: str) -> dict[str, str]:
    # YAML reads `value: 3` or `pod: 07` as numbers; they are names here.
    for key, value in mapping.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise FlipmoeInputError(f"{what}.{key} must be a column name or a value, got {value!r}")
    return {str(key): str(value) for key, value in mapping.items()}


@dataclass(kw_only=True)
class CsvMapping:
    """Which CSV files make an incident, and how their columns map onto flipmoe's tables."""

    metrics: TableMapping = field(default_factory=TableMapping)
    """Long-format metrics: timestamp, service, pod, node, metric, value."""
    logs: TableMapping = field(default_factory=TableMapping)
    """Logs: timestamp, service, pod, level, message, trace_id, span_id."""
    spans: TableMapping = field(default_factory=TableMapping)
    """Spans: trace_id, span_id, parent_span_id, service, pod, operation, start, duration, status."""
    events: TableMapping = field(default_factory=TableMapping)
    """Events: timestamp, kind, reason, service, pod, node, message."""
    timezone: str | None = None
    """Timezone of timestamps written without one: an IANA name (Asia/Shanghai) or an offset (+08:00).
    None refuses such timestamps, because a guessed timezone silently shifts every event."""
    duration_unit: str = "ms"
    """Unit of the spans' duration column: us, ms or s."""

    def __post_init__(self) -> None:
        if self.duration_unit not in _MS_PER_UNIT:
            raise FlipmoeInputError(f"duration_unit {self.duration_unit!r} is not one of "
                                    f"{', '.join(_MS_PER_UNIT)}")
        if self.timezone is not None:
            _tzinfo(self.timezone)
        for name in MODALITIES:
            spec: TableMapping = getattr(self, name)
            valid = [c.name for c in TABLES[name]]
            unknown = sorted((set(spec.columns) | set(spec.constants)) - set(valid))
            if unknown:
                raise FlipmoeInputError(f"{name}: {', '.join(unknown)} is not a {name} column",
                                        hint=f"{name} columns are {', '.join(valid)}")

    @classmethod
    def load(cls, path: str | Path) -> CsvMapping:
        """Read a mapping YAML; its relative file paths are taken relative to the YAML's directory."""
        path = Path(path)
        mapping = load_yaml(cls, path)
        base = path.parent
        return dataclasses.replace(mapping, metrics=_rebase(mapping.metrics, base),
                                   logs=_rebase(mapping.logs, base), spans=_rebase(mapping.spans, base),
                                   events=_rebase(mapping.events, base))

    def tables(self) -> dict[str, TableMapping]:
        """The tables that have a file to import."""
        return {name: getattr(self, name) for name in MODALITIES if getattr(self, name).file}


def _rebase(spec: TableMapping, base: Path) -> TableMapping:
    def rebased(file: str | None) -> str | None:
        return str(base / file) if file else file

    return dataclasses.replace(spec, file=rebased(spec.file), baseline_file=rebased(spec.baseline_file))


def with_overrides(mapping: CsvMapping, *, files: dict[str, str] | None = None,
                   columns: dict[str, dict[str, str]] | None = None,
                   constants: dict[str, dict[str, str]] | None = None, timezone: str | None = None,
                   duration_unit: str | None = None) -> CsvMapping:
    """`mapping` with command-line values in place of the YAML's, per table and column.

    A column given a source column here loses the YAML's constant for it, and the other way round.
    """
    files, columns, constants = files or {}, columns or {}, constants or {}
    named = set(files) | set(columns) | set(constants)
    unknown = sorted(named - set(MODALITIES))
    if unknown:
        raise FlipmoeInputError(f"unknown table(s) {', '.join(unknown)}",
                                hint=f"tables are {', '.join(MODALITIES)}")
    tables = {}
    for name in MODALITIES:
        spec: TableMapping = getattr(mapping, name)
        mapped, fixed = columns.get(name, {}), constants.get(name, {})
        tables[name] = TableMapping(
            file=files.get(name, spec.file),
            columns={k: v for k, v in spec.columns.items() if k not in fixed} | mapped,
            constants={k: v for k, v in spec.constants.items() if k not in mapped} | fixed,
            baseline_file=spec.baseline_file)
        if (mapped or fixed) and not tables[name].file:
            raise FlipmoeInputError(f"columns of {name} are mapped, but no {name} file is given",
                                    hint=f"give --{name} FILE, or {name}.file in the mapping YAML")
    return CsvMapping(**tables, timezone=timezone or mapping.timezone,
                      duration_unit=duration_unit or mapping.duration_unit)


def import_csv(out: str | Path, *, mapping: CsvMapping, incident_id: str | None = None,
               alert: str | None = None, window: TimeWindow | None = None,
               config: TelemetryConfig | None = None, overwrite: bool = False,
               warnings: list[str] | None = None) -> Path:
    """Read the CSV files `mapping` names and write them as the incident directory `out` (atomically).

    Defaults: the id is `out`'s name, the window the time span of the data.
    """
    config = config or TelemetryConfig()
    warnings = warnings if warnings is not None else []
    specs = mapping.tables()
    if not specs:
        raise FlipmoeInputError("no CSV files to import",
                                hint="give --metrics, --logs, --spans or --events, or files in a mapping")
    tables, baseline_tables = {}, {}
    for name, spec in specs.items():
        assert spec.file is not None  # tables() keeps only the tables with a file
        tables[name] = _read_table(Path(spec.file), name, spec, mapping, config, warnings)
        if spec.baseline_file:
            baseline_tables[name] = _read_table(Path(spec.baseline_file), name, spec, mapping, config,
                                                warnings)
    telemetry = Telemetry(**tables)
    baseline = Telemetry(**baseline_tables) if baseline_tables else None
    return write_imported(out, telemetry, baseline=baseline, placement=_placement(telemetry, baseline),
                          incident_id=incident_id, alert=alert or "no alert text given (imported from CSV)",
                          window=window, source="csv", overwrite=overwrite)


def _read_table(path: Path, table: str, spec: TableMapping, mapping: CsvMapping, config: TelemetryConfig,
                warnings: list[str]) -> pd.DataFrame:
    raw = _read_csv(path)
    if raw.empty:
        warnings.append(f"{path}: no data rows")
    frame = _canonical_frame(raw, table, spec, path, warnings)
    if mapping.timezone is not None:
        zone = _tzinfo(mapping.timezone)
        for col in TABLES[table]:
            if col.kind == "timestamp" and col.name in frame:
                frame[col.name] = _localise(frame[col.name], zone, source=str(path), column=col.name)
    df = normalise_table(frame, table, source=str(path), config=config, warnings=warnings)
    if table == "spans":
        df["duration"] = df["duration"] * _MS_PER_UNIT[mapping.duration_unit]
    return df


def _read_csv(path: Path) -> pd.DataFrame:
    # Every column is read as text: the schema decides types, and "NA" stays a pod name, not a gap.
    # Rows longer than the header would silently turn into an index (or, with index_col=False, be cut
    # with a mere ParserWarning): both lose data, so the warning is raised as an error.
    try:
        with catch_warnings():
            simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, dtype=STRING, keep_default_na=False, na_values=[""], compression="infer",
                               index_col=False, on_bad_lines="error")
    except pd.errors.ParserWarning:
        raise FlipmoeInputError("malformed CSV (rows have more fields than the header)", path=path) from None
    except FileNotFoundError:
        raise FlipmoeInputError("no such file", path=path) from None
    except IsADirectoryError:
        raise FlipmoeInputError("is a directory, not a CSV file", path=path) from None
    except pd.errors.EmptyDataError:
        raise FlipmoeInputError("file is empty", path=path, hint="a CSV table needs a header row") from None
    except pd.errors.ParserError as err:
        raise FlipmoeInputError(f"malformed CSV ({' '.join(str(err).split())})", path=path) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise FlipmoeInputError(f"truncated or corrupt gzip data ({err})", path=path) from None
    except UnicodeDecodeError as err:
        raise FlipmoeInputError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=path) from None


def _canonical_frame(raw: pd.DataFrame, table: str, spec: TableMapping, path: Path,
                     warnings: list[str]) -> pd.DataFrame:
    """The file's columns renamed to the table's, constants filled in; errors list the file's columns."""
    have = ", ".join(map(str, raw.columns))
    missing = [source for source in spec.columns.values() if source not in raw.columns]
    if missing:
        raise FlipmoeInputError(f"the mapping names column(s) {', '.join(missing)}, which the file lacks",
                                path=path, hint=f"its columns are: {have}")
    frame = pd.DataFrame(index=raw.index)
    used = set(spec.columns.values())
    for col in TABLES[table]:
        if col.name in spec.columns:
            frame[col.name] = raw[spec.columns[col.name]]
        elif col.name in spec.constants:
            frame[col.name] = spec.constants[col.name]
        elif col.name in raw.columns:
            frame[col.name] = raw[col.name]
            used.add(col.name)
        elif col.required:
            raise FlipmoeInputError(
                f"no column for {table} '{col.name}'", path=path,
                hint=f"its columns are: {have}; map one (--map {table}.{col.name}=COLUMN) "
                     f"or give a constant (--const {table}.{col.name}=VALUE)")
    unused = [str(c) for c in raw.columns if c not in used]
    if unused:
        warnings.append(f"{path}: ignored column(s) {', '.join(unused)}, which map to no {table} column")
    return frame


def _tzinfo(name: str) -> tzinfo:
    offset = _OFFSET.fullmatch(name.strip())
    if offset:
        sign, hours, minutes = offset.groups()
        return timezone((1 if sign == "+" else -1) * timedelta(hours=int(hours), minutes=int(minutes)))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FlipmoeInputError(f"unknown timezone {name!r}",
                                hint="an IANA name such as Asia/Shanghai, or an offset like +08:00") from None


def _localise(series: pd.Series, zone: tzinfo, *, source: str, column: str) -> pd.Series:
    """UTC timestamps, reading those written without a timezone as wall-clock time in `zone`.

    Timestamps with an offset and epoch numbers (UTC by definition) are left to `to_utc`. Row numbers
    in errors are data rows counted from 1, as `normalise_table` counts them.
    """
    text = series.astype(STRING).str.strip().reset_index(drop=True)
    epoch = pd.to_numeric(text, errors="coerce").notna()
    naive = text.notna() & ~text.str.contains(_NAMES_ZONE).fillna(True) & ~epoch
    converted = to_utc(text.mask(naive), source=source, column=column)
    if not naive.any():
        return converted
    wall = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
    if wall.isna().any():
        # ISO 8601 is fast but strict; retry the rest with pandas' flexible parser, as to_utc does.
        wall[wall.isna()] = pd.to_datetime(text[naive][wall.isna()], format="mixed", errors="coerce")
    _refuse_first(wall.isna(), text, "unparseable timestamp {!r}", source, column)
    local = wall.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    _refuse_first(local.isna(), text, f"timestamp {{!r}} does not exist or is ambiguous in {zone}", source,
                  column, hint="a daylight-saving change: write the timestamps around it with an offset")
    converted[naive] = local.dt.tz_convert("UTC")
    return converted


def _refuse_first(bad: pd.Series, text: pd.Series, problem: str, source: str, column: str,
                  hint: str | None = None) -> None:
    if bad.any():
        label = bad.index[np.flatnonzero(bad.to_numpy())[0]]
        raise FlipmoeInputError(problem.format(text[label]), path=source, column=column, row=int(label) + 1,
                                hint=hint)


def _placement(*telemetries: Telemetry | None) -> dict[str, str]:
    """Pod -> node, from the tables that carry both."""
    placement: dict[str, str] = {}
    for telemetry in telemetries:
        for table in (telemetry.metrics, telemetry.events) if telemetry is not None else ():
            if table is not None:
                pairs = table[["pod", "node"]].dropna().drop_duplicates("pod", keep="last")
                placement.update(zip(pairs["pod"], pairs["node"], strict=True))
    return placement
