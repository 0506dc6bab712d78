"""The incident directory of DESIGN.md: read it into an `Incident`, write one atomically.

```
incident.json   id, alert, window {start, end}, optional alert_time, scope, source
metrics.*       long format: timestamp, service, pod, node, metric, value
logs.*          timestamp, service, pod, level, message, trace_id, span_id
spans.*         trace_id, span_id, parent_span_id, service, pod, operation, start, duration, status
events.*        optional: timestamp, kind, reason, service, pod, node, message
topology.json   optional service dependency graph
baseline/       optional fault-free window, same tables
code/           optional source tree the incident carries (flipmoe extension)
label.json      optional ground truth; never read here (see `label.load_label`)
```
Tables are `.parquet` (written by flipmoe), `.csv` or `.csv.gz`. Writing goes to a temporary
sibling directory that is renamed into place, so a failure never leaves a half-written incident.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import tempfile
import warnings as warnings_module
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flipmoe.config import TelemetryConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import MODALITIES, Incident, IncidentMeta, Telemetry, Topology
from flipmoe.telemetry.json_input import JsonInputError, parse_json
from flipmoe.telemetry.label import LABEL_FILE, Label
from flipmoe.telemetry.schema import STRING, TABLES
from flipmoe.telemetry.validate import normalise_table

INCIDENT_FILE = "incident.json"
TOPOLOGY_FILE = "topology.json"
BASELINE_DIR = "baseline"
CODE_DIR = "code"
_TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def read_table_file(path: str | Path, table: str, *, config: TelemetryConfig | None = None,
                    warnings: list[str] | None = None) -> pd.DataFrame:
    """Read one table file (Parquet, CSV or gzipped CSV) and normalise it to the schema."""
    path = Path(path)
    config = config or TelemetryConfig()
    raw = _read_raw(path, table, config)
    return normalise_table(raw, table, source=str(path), config=config, warnings=warnings)


def _read_raw(path: Path, table: str, config: TelemetryConfig) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise FlipmoeInputError("file is empty", path=path, hint=f"a {table} file needs a header row")
    if path.suffix == ".parquet":
        try:
            return pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError) as err:
            raise FlipmoeInputError(f"not a readable Parquet file ({err})", path=path) from None
    string_cols = {c.name: STRING for c in TABLES[table] if c.kind == "string"}
    # The C parser refuses fields above csv.field_size_limit only in the python engine; guard explicitly
    # so a giant single line fails fast with a clear message instead of exhausting memory.
    csv.field_size_limit(config.max_field_bytes)
    try:
        with _open_text(path) as handle:
            header = handle.readline(config.max_field_bytes + 1)
            if len(header) > config.max_field_bytes:
                raise FlipmoeInputError(f"first line is longer than {config.max_field_bytes} bytes; "
                                        "this is not a CSV table", path=path)
        with warnings_module.catch_warnings():
            # Rows with more fields than the header would silently become an index: refuse them.
            warnings_module.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, dtype=string_cols, keep_default_na=False, na_values=[""],
                               compression="infer", on_bad_lines="error", index_col=False)
    except FlipmoeInputError:
        raise
    except pd.errors.EmptyDataError:
        raise FlipmoeInputError("file has no header row", path=path) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as err:
        raise FlipmoeInputError(f"malformed CSV ({err})", path=path) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise FlipmoeInputError(f"truncated or corrupt gzip data ({err})", path=path) from None
    except UnicodeDecodeError as err:
        raise FlipmoeInputError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=path) from None


def _open_text(path: Path) -> Any:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _find_table(directory: Path, table: str) -> Path | None:
    found = [directory / f"{table}{suffix}" for suffix in _TABLE_SUFFIXES if (directory / f"{table}{suffix}").exists()]
    if len(found) > 1:
        raise FlipmoeInputError(f"{table} is stored twice ({', '.join(p.name for p in found)})", path=directory,
                                hint="keep one file per table")
    return found[0] if found else None


def _read_telemetry(directory: Path, config: TelemetryConfig, warnings: list[str],
                    only: Sequence[str] | None = None) -> Telemetry:
    tables = {}
    for name in MODALITIES if only is None else [m for m in MODALITIES if m in only]:
        path = _find_table(directory, name)
        if path is not None:
            tables[name] = read_table_file(path, name, config=config, warnings=warnings)
    return Telemetry(**tables)


def find_incidents(path: str | Path) -> list[Path]:
    """`path` itself when it is an incident directory, else every incident directory below it, sorted."""
    root = Path(path)
    if not root.is_dir():
        raise FlipmoeInputError("no such directory", path=root)
    if (root / "incident.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob("incident.json") if not p.parent.name.startswith("."))
    if not found:
        raise FlipmoeInputError("no incident directories (with incident.json) below", path=root)
    return found


def read_incident(path: str | Path, *, config: TelemetryConfig | None = None,
                  tables: Sequence[str] | None = None) -> Incident:
    """Read an incident directory. Never opens `label.json`. `tables` reads only those tables (e.g.
    `("events",)` for an alert history), without the baseline."""
    directory = Path(path)
    if not directory.is_dir():
        raise FlipmoeInputError("not an incident directory (no such directory)", path=directory)
    meta_path = directory / INCIDENT_FILE
    if not meta_path.exists():
        raise FlipmoeInputError(f"no {INCIDENT_FILE}", path=directory,
                                hint="an incident directory needs incident.json with id, alert and window")
    config = config or TelemetryConfig()
    warnings: list[str] = []
    meta = IncidentMeta.from_json(_read_json(meta_path), path=str(meta_path), warnings=warnings)
    telemetry = _read_telemetry(directory, config, warnings, tables)
    baseline = None
    if tables is None and (directory / BASELINE_DIR).is_dir():
        baseline = _read_telemetry(directory / BASELINE_DIR, config, warnings)
        if not baseline.modalities:
            warnings.append(f"{directory / BASELINE_DIR}: baseline directory holds no telemetry; ignored")
            baseline = None
    topology = None
    if (directory / TOPOLOGY_FILE).exists():
        topology = Topology.from_json(_read_json(directory / TOPOLOGY_FILE), path=str(directory / TOPOLOGY_FILE))
    code_dir = directory / CODE_DIR if (directory / CODE_DIR).is_dir() else None
    if not telemetry.modalities:
        warnings.append(f"{directory}: the incident holds no telemetry inside its files")
    return Incident(meta=meta, telemetry=telemetry, baseline=baseline, topology=topology,
                    code_dir=code_dir, warnings=warnings)


def _read_json(path: Path) -> Any:
    try:
        return parse_json(path.read_bytes())
    except JsonInputError as err:
        raise FlipmoeInputError(err.problem, path=path) from None


def _write_telemetry(telemetry: Telemetry, directory: Path, fmt: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in telemetry.modalities:
        table = telemetry.table(name)
        assert table is not None
        columns = [c.name for c in TABLES[name]]
        frame = table[columns].reset_index(drop=True)
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), directory / f"{name}.parquet",
                           compression="zstd")
        else:
            frame.to_csv(directory / f"{name}.csv", index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")


def write_incident(incident: Incident, path: str | Path, *, label: Label | None = None,
                   overwrite: bool = False, fmt: str = "parquet") -> Path:
    """Write `incident` (and its optional `label`) as an incident directory at `path`, atomically."""
    if fmt not in ("parquet", "csv"):
        raise FlipmoeInputError(f"unknown table format {fmt!r}; use 'parquet' or 'csv'")
    target = Path(path)
    if target.exists() and not overwrite:
        raise FlipmoeInputError("already exists", path=target, hint="choose another --out or remove it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; an incident store is usually shared
    try:
        (staging / INCIDENT_FILE).write_text(json.dumps(incident.meta.to_json(), indent=2), encoding="utf-8")
        _write_telemetry(incident.telemetry, staging, fmt)
        if incident.baseline is not None and incident.baseline.modalities:
            _write_telemetry(incident.baseline, staging / BASELINE_DIR, fmt)
        if incident.topology is not None:
            (staging / TOPOLOGY_FILE).write_text(json.dumps(incident.topology.to_json(), indent=2), encoding="utf-8")
        if incident.code_dir is not None:
            shutil.copytree(incident.code_dir, staging / CODE_DIR)
        if label is not None:
            (staging / LABEL_FILE).write_text(json.dumps(label.to_json(), indent=2), encoding="utf-8")
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _replace_dir(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    retired = target.with_name(f".{target.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    os.rename(target, retired)
    os.rename(staging, target)
    shutil.rmtree(retired, ignore_errors=True)
