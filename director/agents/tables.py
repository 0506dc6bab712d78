"""Ad-hoc analysis of an incident's tables: model-written pandas or SQL, run in the sandbox.

The explorer's `analyse_table` tool. The incident's tables (metrics, logs, spans, events, and the
baseline's as baseline_metrics, ...) are written as Parquet into a directory the sandbox may only read
(`director.agents.sandbox.DATA`). The code runs with each table loaded as a pandas DataFrame of that
name, `pd` imported, and `sql(query)` answering SQLite over the same tables; what it prints comes back,
cut to `max_chars`. The code is untrusted: it runs only in the sandbox, and where there is none
(no bubblewrap) it is refused, not run.

    analysis = analyse_tables(incident, "print(logs.groupby('service').size())")
    analysis.text, analysis.ok
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from director.agents.sandbox import DATA, SandboxUnavailableError, isolation, run_code
from flipmoe.telemetry.incident import MODALITIES, Incident

__all__ = ["ANALYSE_TABLE_TOOL", "TableAnalysis", "analyse_tables", "table_frames", "unavailable_reason"]

ANALYSE_TABLE_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "analyse_table",
    "description": "run Python over the incident's tables in a sandbox and return what it prints: pandas "
                   "DataFrames metrics, logs, spans, events (and baseline_metrics, ... when there is a baseline) "
                   "are loaded, pd is imported, sql(query) runs SQLite over the same tables and returns a "
                   "DataFrame; no network, no files beyond the tables",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["code"],
                   "properties": {"code": {"type": "string", "maxLength": 4000}}}}}
"""The tool as an OpenAI chat-completions function spec."""

MAX_CODE_CHARS = 4000

# Loads the tables, then runs the model's code (a literal, compiled as "<analysis>" so that tracebacks
# point into it) in the same namespace.
_PRELUDE = '''
import pandas as pd
from pathlib import Path as _Path
pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 20)
pd.set_option("display.max_rows", 60)
TABLES = sorted(_file.stem for _file in _Path(__DATA__).glob("*.parquet"))
for _name in TABLES:
    globals()[_name] = pd.read_parquet(_Path(__DATA__) / (_name + ".parquet"))
_db = None

def sql(query):
    """SQLite over the tables (timestamps as ISO text); returns a DataFrame."""
    global _db
    if _db is None:
        import sqlite3
        _db = sqlite3.connect(":memory:")
        for name in TABLES:
            frame = globals()[name]
            dates = [c for c in frame.columns if isinstance(frame[c].dtype, pd.DatetimeTZDtype)]
            frame.assign(**{c: frame[c].astype(str) for c in dates}).to_sql(name, _db, index=False)
    return pd.read_sql_query(query, _db)

exec(compile(__CODE__, "<analysis>", "exec"), globals())
'''


@dataclass(frozen=True)
class TableAnalysis:
    """What a piece of analysis code printed, or why it failed."""

    text: str
    """Its output (stdout, then the end of the traceback when it failed), at most `max_chars` long."""
    ok: bool
    error: str | None = None
    """Why it failed ('timeout', 'memory limit (...)', 'ValueError: ...', 'sandbox unavailable: ...'), or None."""


def unavailable_reason() -> str | None:
    """Why code cannot be analysed on this machine (the sandbox is missing), or None when it can."""
    try:
        isolation()
    except SandboxUnavailableError as err:
        return str(err)
    return None


def table_frames(incident: Incident) -> dict[str, pd.DataFrame]:
    """The tables the code sees, by name: the incident's modalities, then the baseline's prefixed."""
    frames = {name: table for name in MODALITIES if (table := incident.telemetry.table(name)) is not None}
    if incident.baseline is not None:
        frames |= {f"baseline_{name}": table for name in MODALITIES
                   if (table := incident.baseline.table(name)) is not None}
    return frames


def analyse_tables(incident: Incident, code: str, *, timeout_s: float = 30.0, memory_mb: int = 2048,
                   max_chars: int = 4000) -> TableAnalysis:
    """Run analysis `code` over the incident's tables in the sandbox (see the module docstring)."""
    if not isinstance(code, str) or not code.strip():
        return TableAnalysis("error: 'code' must be Python source that prints its result", False, "no code")
    if len(code) > MAX_CODE_CHARS:
        return TableAnalysis(f"error: the code is longer than {MAX_CODE_CHARS} characters", False, "code too long")
    reason = unavailable_reason()
    if reason is not None:
        return TableAnalysis(f"error: analyse_table is unavailable: {reason}", False, f"sandbox unavailable: {reason}")
    directory = Path(tempfile.mkdtemp(prefix="flipmoe-tables-"))
    try:
        _write_tables(directory, table_frames(incident))
        program = _PRELUDE.replace("__DATA__", repr(DATA)).replace("__CODE__", repr(code))
        result = run_code(program, data_dir=directory, timeout_s=timeout_s, memory_mb=memory_mb,
                          max_output_chars=max_chars)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if result.ok:
        return TableAnalysis(_cut(result.stdout or "(the code printed nothing)", max_chars), True)
    error = result.killed_reason or _last_line(result.stderr) or f"exit status {result.exit_code}"
    tail = "\n".join(result.stderr.strip().splitlines()[-6:])
    return TableAnalysis(_cut(f"{result.stdout}error: {error}\n{tail}".strip(), max_chars), False, error)


def _write_tables(directory: Path, frames: dict[str, pd.DataFrame]) -> None:
    # The sandbox's uid is not the owner: the directory and files must be readable by others.
    directory.chmod(0o755)
    for name, frame in frames.items():
        path = directory / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        path.chmod(0o644)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 16] + "\n...[truncated]"
