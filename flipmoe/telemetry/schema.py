"""Column schemas of the incident model's tables (DESIGN.md, "Incident directory").

Tables are long-format pandas DataFrames. Timestamps are `datetime64[ns, UTC]`; span durations are
float milliseconds; span status is one of `SPAN_STATUSES`; log level one of `LOG_LEVELS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

# pandas' default string dtype since 3.0: Arrow-backed, NaN for missing values.
STRING = pd.StringDtype("pyarrow", na_value=np.nan)

Kind = Literal["timestamp", "string", "float"]


@dataclass(frozen=True, kw_only=True)
class Column:
    name: str
    """Column name in files and DataFrames."""
    kind: Kind
    """Logical type; the reader converts to it."""
    required: bool = True
    """A required column must exist and (for strings and timestamps) have no missing values."""
    doc: str = ""


TABLES: dict[str, tuple[Column, ...]] = {
    "metrics": (
        Column(name="timestamp", kind="timestamp", doc="sample time, UTC"),
        Column(name="service", kind="string", doc="service the series belongs to"),
        Column(name="pod", kind="string", required=False, doc="pod, empty for service-level series"),
        Column(name="node", kind="string", required=False, doc="node, empty when unknown"),
        Column(name="metric", kind="string", doc="metric name, e.g. CpuUsageRate(%)"),
        Column(name="value", kind="float", doc="sample value"),
    ),
    "logs": (
        Column(name="timestamp", kind="timestamp", doc="time the line was written, UTC"),
        Column(name="service", kind="string"),
        Column(name="pod", kind="string", required=False),
        Column(name="level", kind="string", doc="one of LOG_LEVELS"),
        Column(name="message", kind="string", doc="the log message without its header"),
        Column(name="trace_id", kind="string", required=False),
        Column(name="span_id", kind="string", required=False),
    ),
    "spans": (
        Column(name="trace_id", kind="string"),
        Column(name="span_id", kind="string"),
        Column(name="parent_span_id", kind="string", required=False, doc="empty for a root span"),
        Column(name="service", kind="string"),
        Column(name="pod", kind="string", required=False),
        Column(name="operation", kind="string"),
        Column(name="start", kind="timestamp", doc="span start, UTC"),
        Column(name="duration", kind="float", doc="milliseconds"),
        Column(name="status", kind="string", required=False, doc="one of SPAN_STATUSES; empty means unset"),
    ),
    "events": (
        Column(name="timestamp", kind="timestamp"),
        Column(name="kind", kind="string", doc="e.g. k8s, deploy, config_change, scaling"),
        Column(name="reason", kind="string", doc="e.g. OOMKilled, BackOff, Unhealthy, Deployed"),
        Column(name="service", kind="string", required=False),
        Column(name="pod", kind="string", required=False),
        Column(name="node", kind="string", required=False),
        Column(name="message", kind="string", required=False),
    ),
}

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "UNKNOWN")
SPAN_STATUSES = ("ok", "error", "unset")

_LEVEL_ALIASES = {
    "WARNING": "WARN",
    "ERR": "ERROR",
    "SEVERE": "ERROR",
    "CRITICAL": "FATAL",
    "CRIT": "FATAL",
    "PANIC": "FATAL",
    "EMERG": "FATAL",
    "ALERT": "FATAL",
    "NOTICE": "INFO",
    "INFORMATION": "INFO",
    "FINE": "DEBUG",
    "FINER": "TRACE",
    "FINEST": "TRACE",
    "VERBOSE": "DEBUG",
}


def normalise_level(level: object) -> str:
    """Map a level spelling (warning, W, err, CRITICAL, ...) onto one of `LOG_LEVELS`."""
    if level is None:
        return "UNKNOWN"
    text = str(level).strip().upper()
    if text in LOG_LEVELS:
        return text
    if text in _LEVEL_ALIASES:
        return _LEVEL_ALIASES[text]
    single = {"T": "TRACE", "D": "DEBUG", "I": "INFO", "W": "WARN", "E": "ERROR", "F": "FATAL"}
    return single.get(text, "UNKNOWN")


def column_names(table: str) -> list[str]:
    return [c.name for c in TABLES[table]]
