"""Turn raw tables into the incident model's canonical columns, or say exactly what is wrong.

`normalise_table` is the one place that checks a table against `schema.TABLES`: importers and the
incident-directory reader both go through it. Problems that make a table unusable raise
`FlipmoeInputError` naming the source, column and row (rows count data rows from 1, header
excluded); problems with a documented fix (unknown columns, NaN metric values, duplicate span ids,
cycles in parent links, over-long messages) are fixed and reported as warnings.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from flipmoe.config import TelemetryConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.schema import SPAN_STATUSES, STRING, TABLES, Column, normalise_level

_MAX_SPAN_MS = 1e12
"""Longest span duration accepted (~31 years): beyond it a duration is corrupt, and start + duration
leaves the range of timestamps."""
_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}:?\d{2}|\bUTC|\bGMT)\s*$", re.IGNORECASE)


def normalise_table(
    df: pd.DataFrame,
    table: str,
    *,
    source: str,
    config: TelemetryConfig | None = None,
    warnings: list[str] | None = None,
) -> pd.DataFrame:
    """Return `df` with exactly the schema's columns, converted and checked.

    `source` names where the rows came from (a file path, usually) for messages; warnings about
    fixed problems are appended to `warnings`.
    """
    config = config or TelemetryConfig()
    warnings = warnings if warnings is not None else []
    columns = TABLES[table]
    missing = [c.name for c in columns if c.required and c.name not in df.columns]
    if missing:
        raise FlipmoeInputError(
            f"missing required column(s) {', '.join(missing)} for {table}",
            path=source,
            hint=f"{table} columns are {', '.join(c.name for c in columns)}",
        )
    unknown = [c for c in df.columns if c not in {col.name for col in columns}]
    if unknown:
        warnings.append(f"{source}: ignored unknown column(s) {', '.join(map(str, unknown))}")
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for col in columns:
        if col.name in df.columns:
            out[col.name] = _convert(df[col.name].reset_index(drop=True), col, source)
        else:
            out[col.name] = _empty(col, len(df))
    out = _TABLE_FIXES[table](out, source=source, config=config, warnings=warnings)
    return out.reset_index(drop=True)


def empty_table(table: str) -> pd.DataFrame:
    """A zero-row table with the schema's columns and dtypes."""
    return pd.DataFrame({c.name: _empty(c, 0) for c in TABLES[table]})


def _empty(col: Column, n: int) -> pd.Series:
    if col.kind == "timestamp":
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    if col.kind == "float":
        return pd.Series(np.nan, index=range(n), dtype="float64")
    return pd.Series(np.nan, index=range(n), dtype=STRING)


def _first_bad_row(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


def _convert(series: pd.Series, col: Column, source: str) -> pd.Series:
    if col.kind == "timestamp":
        converted = to_utc(series, source=source, column=col.name)
        if col.required and converted.isna().any():
            raise FlipmoeInputError("missing timestamp", path=source, column=col.name,
                                    row=_first_bad_row(converted.isna()))
        return converted
    if col.kind == "float":
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
            return series.astype("float64")
        numeric = pd.to_numeric(series, errors="coerce").astype("float64")
        bad = numeric.isna() & series.notna()
        if bad.any():
            spelled_missing = series[bad].astype(STRING).str.strip().str.lower().isin(["nan", "", "none", "null"])
            bad[bad] = ~spelled_missing.to_numpy()
        if bad.any():
            row = _first_bad_row(bad)
            raise FlipmoeInputError(f"not a number: {series.iloc[row - 1]!r}", path=source,
                                    column=col.name, row=row)
        return numeric
    text = series.astype(STRING).str.strip()
    text = text.mask(text == "")
    if col.required and text.isna().any():
        raise FlipmoeInputError("empty value in a required column", path=source, column=col.name,
                                row=_first_bad_row(text.isna()))
    return text


def to_utc(series: pd.Series, *, source: str, column: str, assume_utc: bool = False) -> pd.Series:
    """Convert timestamps to `datetime64[ns, UTC]`.

    Accepts timezone-aware datetimes, strings with an explicit offset (converted to UTC) and epoch
    numbers (unit inferred from magnitude: s, ms, us or ns). Strings without a timezone are refused
    unless `assume_utc`, because guessing a timezone silently shifts every event.
    """
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(series.dtype):
        if not assume_utc:
            raise FlipmoeInputError("timestamps have no timezone", path=source, column=column,
                                    hint="store them as UTC, or pass a timezone to the importer")
        return series.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_integer_dtype(series.dtype) and not series.isna().any():
        return _int_epoch_to_utc(series.astype("int64"), source=source, column=column)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return _epoch_to_utc(series.astype("float64"), source=source, column=column)
    text = series.astype(STRING).str.strip()
    present = text.notna() & (text != "")
    numeric = pd.to_numeric(text.where(present), errors="coerce")
    if present.any() and numeric[present].notna().all():
        return _epoch_to_utc(numeric.astype("float64"), source=source, column=column)
    if not assume_utc:
        naive = present & ~text.fillna("").str.contains(_TZ_SUFFIX)
        if naive.any():
            row = _first_bad_row(naive)
            raise FlipmoeInputError(
                f"timestamp {text.iloc[row - 1]!r} has no timezone", path=source, column=column, row=row,
                hint="flipmoe stores UTC: write a 'Z' or '+00:00' suffix, or pass a timezone to the importer",
            )
    cleaned = text
    named_utc = text.str.endswith("UTC") | text.str.endswith("GMT")
    if named_utc.any():  # pandas parses "+00:00" but not a trailing zone name
        cleaned = text.mask(named_utc, text[named_utc].str.slice(0, -3).str.rstrip() + "+00:00")
    parsed = pd.to_datetime(cleaned, utc=True, errors="coerce", format="ISO8601")
    if (parsed.isna() & present).any():
        # ISO8601 is fast but strict; retry the stragglers with pandas' flexible parser.
        retry = present & parsed.isna()
        parsed[retry] = pd.to_datetime(cleaned[retry], utc=True, errors="coerce", format="mixed")
    bad = parsed.isna() & present
    if bad.any():
        row = _first_bad_row(bad)
        raise FlipmoeInputError(f"unparseable timestamp {text.iloc[row - 1]!r}", path=source,
                                column=column, row=row)
    try:
        return parsed.astype("datetime64[ns, UTC]")
    except pd.errors.OutOfBoundsDatetime:  # parsed, at a coarser unit, but beyond nanosecond timestamps
        outside = (parsed < pd.Timestamp.min.tz_localize("UTC")) | (parsed > pd.Timestamp.max.tz_localize("UTC"))
        row = _first_bad_row(outside) if outside.any() else 1
        raise FlipmoeInputError(f"timestamp {text.iloc[row - 1]!r} is out of range (years 1677 to 2262)",
                                path=source, column=column, row=row) from None


def _epoch_unit(magnitude: float) -> str:
    return "ns" if magnitude > 1e17 else "us" if magnitude > 1e14 else "ms" if magnitude > 1e11 else "s"


def _int_epoch_to_utc(values: pd.Series, *, source: str, column: str) -> pd.Series:
    """Integer epochs stay integers: float64 would round nanosecond epochs by ~256 ns."""
    if values.empty:
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    unit = _epoch_unit(float(np.median(np.abs(values.to_numpy()))))
    scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    limit = 4_100_000_000_000_000_000 // scale  # beyond year 2100: not a plausible telemetry timestamp
    too_far = values.abs() > limit
    if too_far.any():
        row = _first_bad_row(too_far)
        raise FlipmoeInputError(f"epoch timestamp {values.iloc[row - 1]!r} is out of range",
                                path=source, column=column, row=row)
    return pd.to_datetime(values * scale, unit="ns", utc=True).astype("datetime64[ns, UTC]")


def _epoch_to_utc(values: pd.Series, *, source: str, column: str) -> pd.Series:
    finite = values[np.isfinite(values)]
    if finite.empty:
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    magnitude = float(np.median(np.abs(finite)))
    unit = _epoch_unit(magnitude)
    scale = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}[unit]
    nanos = values * scale
    too_far = nanos.abs() > 4.1e18  # beyond year 2100 in ns: not a plausible telemetry timestamp
    if too_far.any():
        row = _first_bad_row(too_far)
        raise FlipmoeInputError(f"epoch timestamp {values.iloc[row - 1]!r} is out of range",
                                path=source, column=column, row=row)
    as_int = nanos.round().astype("Int64")
    return pd.to_datetime(as_int, unit="ns", utc=True).astype("datetime64[ns, UTC]")


def _fix_metrics(df: pd.DataFrame, *, source: str, config: TelemetryConfig, warnings: list[str]) -> pd.DataFrame:
    nan = df["value"].isna() | ~np.isfinite(df["value"].fillna(0.0))
    if nan.any():
        if not config.drop_nan_metric_values:
            raise FlipmoeInputError("NaN or infinite metric value", path=source, column="value",
                                    row=_first_bad_row(nan))
        warnings.append(f"{source}: dropped {int(nan.sum())} metric row(s) with NaN or infinite values")
        df = df[~nan]
    return df


def _fix_logs(df: pd.DataFrame, *, source: str, config: TelemetryConfig, warnings: list[str]) -> pd.DataFrame:
    df["level"] = _map_unique(df["level"], normalise_level)
    limit = config.max_message_bytes
    long = df["message"].str.len() > limit
    if long.any():
        warnings.append(f"{source}: truncated {int(long.sum())} log message(s) longer than {limit} characters")
        df.loc[long, "message"] = df.loc[long, "message"].str.slice(0, limit) + "…[truncated]"
    return df


def normalise_status(status: object) -> str:
    """Map OTLP codes, HTTP-ish and free-text span statuses onto `SPAN_STATUSES`."""
    if status is None or (isinstance(status, float) and np.isnan(status)):
        return "unset"
    text = str(status).strip().lower()
    if text in SPAN_STATUSES:
        return text
    if text in ("2", "status_code_error", "err", "failed", "failure", "false") or "error" in text:
        return "error"
    if text in ("1", "status_code_ok", "success", "true", "0"):
        return "ok" if text != "0" else "unset"
    if text.isdigit() and len(text) == 3:
        return "error" if text[0] in "45" else "ok"
    return "unset"


def _fix_spans(df: pd.DataFrame, *, source: str, config: TelemetryConfig, warnings: list[str]) -> pd.DataFrame:
    df["status"] = _map_unique(df["status"], normalise_status)
    df["parent_span_id"] = df["parent_span_id"].mask(df["parent_span_id"].str.lower().isin(["root", "0", "none"]))
    too_long = df["duration"] > _MAX_SPAN_MS
    if too_long.any():
        row = _first_bad_row(too_long)
        raise FlipmoeInputError(f"span duration {float(df['duration'].iloc[row - 1]):g} ms is out of range",
                                path=source, column="duration", row=row,
                                hint=f"durations are milliseconds, at most {_MAX_SPAN_MS:.0e}")
    bad_duration = df["duration"].isna() | (df["duration"] < 0)
    if bad_duration.any():
        warnings.append(f"{source}: dropped {int(bad_duration.sum())} span(s) with missing or negative duration")
        df = df[~bad_duration]
    dup = df.duplicated(subset=["trace_id", "span_id"], keep="first")
    if dup.any():
        warnings.append(f"{source}: dropped {int(dup.sum())} span(s) whose (trace_id, span_id) repeats an "
                        f"earlier span; the first occurrence is kept")
        df = df[~dup]
    self_parent = df["parent_span_id"] == df["span_id"]
    df.loc[self_parent.fillna(False), "parent_span_id"] = pd.NA
    cyclic = _spans_in_cycles(df)
    if self_parent.fillna(False).any() or cyclic:
        n = int(self_parent.fillna(False).sum()) + len(cyclic)
        warnings.append(f"{source}: broke {n} cyclic parent link(s); those spans are treated as roots")
        if cyclic:
            df.loc[list(cyclic), "parent_span_id"] = pd.NA
    return df


def _spans_in_cycles(df: pd.DataFrame) -> set[int]:
    """Index labels of spans whose parent chain loops back on itself (vectorised pointer jumping)."""
    if df.empty:
        return set()
    trace_code = pd.factorize(df["trace_id"])[0].astype(np.int64)
    span_codes, _ = pd.factorize(pd.concat([df["span_id"], df["parent_span_id"]], ignore_index=True))
    n = len(df)
    width = int(span_codes.max()) + 2
    own_key = trace_code * width + span_codes[:n]
    parent_key = trace_code * width + span_codes[n:]
    order = np.argsort(own_key, kind="stable")
    found = np.searchsorted(own_key, parent_key, sorter=order)
    found = np.minimum(found, n - 1)
    parent = np.where(own_key[order[found]] == parent_key, order[found], -1)
    parent[df["parent_span_id"].isna().to_numpy()] = -1
    ancestor = parent.copy()
    for _ in range(int(np.ceil(np.log2(n + 1))) + 1):
        has = ancestor >= 0
        ancestor[has] = ancestor[ancestor[has]]
    stuck = np.flatnonzero(ancestor >= 0)
    if stuck.size == 0:
        return set()
    # Rare path: walk the few spans that never reach a root to find the cycle members themselves.
    members: set[int] = set()
    for start in stuck:
        seen: dict[int, int] = {}
        node, step = int(start), 0
        while node >= 0 and node not in seen:
            seen[node] = step
            node, step = int(parent[node]), step + 1
        if node >= 0:
            cycle_node = node
            while True:
                members.add(cycle_node)
                cycle_node = int(parent[cycle_node])
                if cycle_node == node:
                    break
    labels = df.index.to_numpy()
    # Breaking one link per cycle suffices; break the link of the earliest member of each cycle.
    return {labels[m] for m in _one_per_cycle(members, parent)}


def _one_per_cycle(members: set[int], parent: np.ndarray) -> set[int]:
    chosen: set[int] = set()
    remaining = set(members)
    while remaining:
        start = min(remaining)
        chosen.add(start)
        node = start
        while node in remaining:
            remaining.discard(node)
            node = int(parent[node])
    return chosen


def _map_unique(series: pd.Series, fn: Callable[[object], str]) -> pd.Series:
    """Apply `fn` once per distinct value: columns like level and status have a handful of them."""
    codes, uniques = pd.factorize(series, use_na_sentinel=False)
    mapped = np.array([fn(None if pd.isna(u) else u) for u in uniques], dtype=object)
    return pd.Series(mapped[codes], index=series.index, dtype=STRING)


def _fix_events(df: pd.DataFrame, *, source: str, config: TelemetryConfig, warnings: list[str]) -> pd.DataFrame:
    return df


_TABLE_FIXES = {"metrics": _fix_metrics, "logs": _fix_logs, "spans": _fix_spans, "events": _fix_events}
