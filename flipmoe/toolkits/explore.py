"""The explorer's tools over one incident, in the style of ThinkFL: an agent investigates with tool calls.

    tools = ExploreTools(incident)
    tools.briefing(max_steps=12).text        # the alert, the services, the tools
    tools.search_traces("root").text         # the failing, then slowest, root spans since the alert
    tools.call("search_logs", {"service": "cartservice", "query": "error"})
    tools.print_results([{"service": "cartservice"}, {"service": "redis-cart"}, {"service": "frontend"}])

The tools:

- `search_traces(parent_span_id, trace_id?)`: the child spans of a span of the window, in call order;
  "root" (or null) lists the root spans since the alert time, failing first, then slowest first.
- `search_fluctuating_metrics(service, timestamp?)`: the service's series whose median in the minutes
  from `timestamp` (default: the alert time) departs from normal by at least `z_threshold`, with the
  modified z-score of the metric analysis (`flipmoe.toolkits.metrics.RobustMAD`). Normal is the
  incident's baseline of the series, or the minutes before `timestamp` where it has too little baseline.
- `search_logs(service, window?, query?)`: the service's lines in the window (default: the incident
  window), optionally those containing `query` (case-insensitive), counted by level and grouped by
  (pod, level, message template): templates the baseline never logged first, then the most severe.
- `print_results(root_causes)` (`submit` is an alias): the final answer, a ranked list of
  `{service?, pod?, node?, reason?}`; checked for shape and for names that exist in the incident.

One implementation for both users: the Gymnasium environment (`data_pipeline.chaos.gym.RCAEnv`),
where a policy is trained, and the director's explorer actor (`director.actors.explorer`), where it
runs. A policy therefore sees at inference exactly the observations it was trained on.

Every result is an `Observation`: compact text for the model (printable ASCII, telemetry lines with
instructions or tool-call markup redacted by `flipmoe.toolkits.untrusted.neutralise`, at most
`max_observation_chars`) and the same result as plain data. A bad
call (unknown tool, missing or malformed argument, unknown service or span) is an error observation,
never an exception. The tools are deterministic: the same calls on the same incident read the same.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np
import pandas as pd

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import Incident
from flipmoe.telemetry.validate import to_utc
from flipmoe.toolkits.index import IncidentIndex, build_index
from flipmoe.toolkits.metrics import RobustMAD, nanmedian_rows, reference_split_time
from flipmoe.toolkits.untrusted import REDACTED, neutralise

__all__ = ["CALL_SCHEMA", "REDACTED", "ROOT", "TOOLS", "ExploreConfig", "ExploreTools", "Observation",
           "call_arguments", "observation_text", "parse_call"]

ROOT = "root"
_PRINTABLE = frozenset(string.printable)
_TOOL_CALL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</?tool_call>|$)", re.DOTALL)
_VARIABLE = r"[0-9a-fA-F]{8,}(?:-[0-9a-fA-F]{4,})*|\d+(?:\.\d+)?"
_SEVERITY = {"FATAL": 0, "ERROR": 1, "WARN": 2, "INFO": 3, "DEBUG": 4, "TRACE": 5, "UNKNOWN": 6}
_TOOL_ALIASES = {"submit": "print_results"}
_ARG_ALIASES = {"service_name": "service"}
ENTRY_LEVELS = ("service", "pod", "node")
_MAX_MESSAGE_CHARS = 160
_Z_CAP = 100.0
"""Displayed z-scores are clipped here, as in the metric analysis: beyond it more digits mean nothing."""
_DETECTOR = RobustMAD()

# ------------------------------------------------------------------------------------------- schema

_NAME = {"type": "string", "maxLength": 60}
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "search_traces",
        "description": "the child spans of a span, in call order; 'root' lists the root spans since the alert, "
                       "failing first, then slowest",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["parent_span_id"],
                       "properties": {"parent_span_id": {"type": "string", "maxLength": 80},
                                      "trace_id": {"type": "string", "maxLength": 80}}}}},
    {"type": "function", "function": {
        "name": "search_fluctuating_metrics",
        "description": "the service's metric series that departed from normal in the minutes from timestamp "
                       "(ISO-8601 UTC or epoch seconds/ms; default: the alert time)",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["service"],
                       "properties": {"service": _NAME,
                                      "timestamp": {"anyOf": [{"type": "string", "maxLength": 40},
                                                              {"type": "number"}]}}}}},
    {"type": "function", "function": {
        "name": "search_logs",
        "description": "the service's log lines, counted by level and grouped by message; window [start, end] "
                       "(default: the incident window); query: a substring",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["service"],
                       "properties": {"service": _NAME,
                                      "window": {"type": "array", "minItems": 2, "maxItems": 2,
                                                 "items": {"type": "string", "maxLength": 40}},
                                      "query": {"type": "string", "maxLength": 80}}}}},
    {"type": "function", "function": {
        "name": "print_results",
        "description": "the final answer: at least three root causes, most likely first; ends the investigation",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["root_causes"],
                       "properties": {"root_causes": {"type": "array", "maxItems": 5, "items": {
                           "type": "object", "additionalProperties": False,
                           "properties": {"service": _NAME, "pod": _NAME, "node": _NAME,
                                          "reason": {"type": "string", "maxLength": 80}}}}}}}},
]
"""The tools as OpenAI chat-completions function specs (what a remote model is offered)."""

CALL_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "object", "required": ["name", "arguments"], "additionalProperties": False,
     "properties": {"name": {"const": t["function"]["name"]}, "arguments": t["function"]["parameters"]}}
    for t in TOOLS]}
"""One tool call `{"name": ..., "arguments": {...}}` as JSON schema; strings and lists are bounded so that
a small model's constrained answer fits its token budget."""

_PARAMETERS: dict[str, dict[str, Any]] = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


# ------------------------------------------------------------------------------------------- config


@dataclass(kw_only=True)
class ExploreConfig:
    """Sizes and statistics of the explorer's tools."""

    max_rows: int = 15
    """Rows a tool lists at most (the observation says how many were left out)."""
    max_observation_chars: int = 4000
    """Observations are cut to this length (about 1000 tokens), so one call cannot flood a small model's context."""
    lookback_minutes: float = 10.0
    """search_fluctuating_metrics: minutes before the timestamp that stand in for a missing baseline."""
    lookahead_minutes: float = 5.0
    """search_fluctuating_metrics: minutes from the timestamp on whose median is compared with normal."""
    z_threshold: float = 3.0
    """A series fluctuates when its modified z-score reaches this."""
    min_reference_points: int = 5
    """Normal samples a series needs to be judged at all (as in the metric analysis)."""
    min_root_causes: int = 3
    """Well-formed entries a final answer must list (ThinkFL asks for three)."""

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.min_reference_points < 2 or self.min_root_causes < 1:
            raise FlipmoeInputError("explore max_rows and min_root_causes must be >= 1, min_reference_points >= 2")
        if self.max_observation_chars < 200:
            raise FlipmoeInputError("explore max_observation_chars must be >= 200")
        if self.lookback_minutes <= 0 or self.lookahead_minutes <= 0 or self.z_threshold <= 0:
            raise FlipmoeInputError("explore lookback_minutes, lookahead_minutes and z_threshold must be > 0")


@dataclass(frozen=True)
class Observation:
    """What one call returns: text for the model and the same result as plain data."""

    tool: str | None
    """The tool called (aliases resolved); None when the call named no known tool."""
    text: str
    """Printable ASCII, redacted and cut to `max_observation_chars`; "error: ..." for a bad call."""
    data: Any = None
    error: str | None = None
    """What was wrong with the call, or None."""

    @property
    def ok(self) -> bool:
        return self.error is None


# ------------------------------------------------------------------------------------------ parsing


def parse_call(action: str | Mapping[str, Any], *, max_chars: int | None = None) -> tuple[object, object]:
    """(name, raw arguments) of one tool call, unchecked (see `ExploreTools.call`).

    A call is `{"name": ..., "arguments": {...}}` (or `{"tool": ..., "args": ...}`), as a mapping or as
    JSON text; in text it may sit inside `<tool_call>` tags after the model's reasoning, as ThinkFL writes it.
    Raises `FlipmoeInputError` for text that holds no JSON object.
    """
    if isinstance(action, str):
        if max_chars is not None and len(action) > max_chars:
            raise FlipmoeInputError(f"the call is longer than {max_chars} characters")
        tagged = _TOOL_CALL_TAG.search(action)
        action = _json(tagged.group(1) if tagged else action, what="the call")
    if not isinstance(action, Mapping):
        raise FlipmoeInputError('a call is a JSON object {"name": TOOL, "arguments": {...}}')
    return action.get("name", action.get("tool")), action.get("arguments", action.get("args"))


def call_arguments(raw: object) -> dict[str, Any]:
    """A call's arguments as a dict: a mapping, its JSON text, or nothing (no arguments)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        raw = _json(raw, what="the arguments")
    if not isinstance(raw, Mapping):
        raise FlipmoeInputError("the arguments must be a JSON object")
    return {str(k): v for k, v in raw.items()}


def _json(text: str, *, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FlipmoeInputError(f"{what} is not valid JSON ({err.msg} at column {err.colno})") from None


def observation_text(text: str, *, max_chars: int) -> str:
    """`text` as an agent reads it: redacted, printable ASCII, at most `max_chars` long."""
    text = neutralise(text).encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(c if c in _PRINTABLE else "?" for c in text)
    return text if len(text) <= max_chars else text[: max_chars - 16] + "\n...[truncated]"


# -------------------------------------------------------------------------------------------- tools


class ExploreTools:
    """The tools over one incident. Build once per incident: the span tree is indexed up front."""

    def __init__(self, incident: Incident, *, config: ExploreConfig | None = None,
                 index: IncidentIndex | None = None) -> None:
        """`index`: the incident's shared maps when the caller has them (the Director builds one per run)."""
        self.incident = incident
        self.config = config or ExploreConfig()
        index = index or build_index(incident)
        self._spans = _window_spans(incident)
        self._children = _children_index(self._spans)
        self._roots = self._spans[_is_root(self._spans)]
        self._baseline_ms = index.baseline_latency_ms
        self._pod_nodes = dict(index.node_of_pod)
        topology = incident.topology.services if incident.topology is not None else []
        self.services = sorted({*index.services, *topology, *(s for edge in index.call_edges for s in edge)})
        """Every service of the incident (telemetry and topology), sorted."""
        self.pods = incident.telemetry.pods()
        self.nodes = sorted({*self._pod_nodes.values(), *_table_nodes(incident)})
        self._tools: dict[str, Callable[..., Observation]] = {
            "search_traces": self.search_traces, "search_fluctuating_metrics": self.search_fluctuating_metrics,
            "search_logs": self.search_logs, "print_results": self.print_results}

    # --- entry points -----------------------------------------------------------------------------

    def briefing(self, *, max_steps: int) -> Observation:
        """The first observation: the alert, the window, the telemetry, the services and the tools."""
        meta = self.incident.meta
        window, alert_time = meta.window.to_json(), _iso(meta.alert_time)
        data = {"alert": meta.alert, "window": window, "alert_time": alert_time, "services": self.services,
                "modalities": self.incident.modalities, "max_steps": max_steps}
        alert = f"; the alert fired at {alert_time}" if alert_time else ""
        text = "\n".join([
            f"ALERT: {meta.alert}",
            f"Window: {window['start']} to {window['end']} (UTC){alert}.",
            f"Telemetry: {', '.join(self.incident.modalities) or 'none'}.",
            f"Services ({len(self.services)}): {', '.join(self.services)}",
            _tool_help(),
            f"You have {max_steps} calls. Find the root cause service, pod and node.",
        ])
        return self._observe(None, text, data)

    def call(self, name: object, arguments: object = None) -> Observation:
        """Run one call given by tool name and raw arguments (a mapping or its JSON text)."""
        tool = _TOOL_ALIASES.get(name, name) if isinstance(name, str) else None
        if tool not in self._tools:
            return self._failure(None, FlipmoeInputError(f"unknown tool {name!r}",
                                                         hint=f"tools: {', '.join(self._tools)}"))
        try:
            args = {_ARG_ALIASES.get(k, k): v for k, v in call_arguments(arguments).items()}
            allowed = _PARAMETERS[tool]["properties"]
            unknown = sorted(set(args) - set(allowed))
            if unknown:
                raise FlipmoeInputError(f"{tool}: unknown argument(s) {', '.join(unknown)}",
                                        hint=f"arguments: {', '.join(allowed)}")
        except FlipmoeInputError as err:
            return self._failure(tool, err)
        return self._tools[tool](**args)

    def call_action(self, action: str | Mapping[str, Any], *, max_chars: int | None = None) -> Observation:
        """Run one call written as a mapping or JSON text (see `parse_call`)."""
        try:
            name, arguments = parse_call(action, max_chars=max_chars)
        except FlipmoeInputError as err:
            return self._failure(None, err)
        return self.call(name, arguments)

    # --- the tools --------------------------------------------------------------------------------

    def search_traces(self, parent_span_id: str | None = ROOT, trace_id: str | None = None) -> Observation:
        return self._run("search_traces", self._search_traces, parent_span_id, trace_id)

    def search_fluctuating_metrics(self, service: str | None = None,
                                   timestamp: str | float | None = None) -> Observation:
        return self._run("search_fluctuating_metrics", self._search_fluctuating_metrics, service, timestamp)

    def search_logs(self, service: str | None = None, window: list[str] | None = None,
                    query: str | None = None) -> Observation:
        return self._run("search_logs", self._search_logs, service, window, query)

    def print_results(self, root_causes: list[Mapping[str, str]] | None = None) -> Observation:
        """Check a final answer. Its data: the list as given (`root_causes`), the count of well-formed
        entries (`wellformed`), those that name only things of the incident (`accepted`) and what was
        dropped from them (`rejected`: unknown names, or the malformed entry itself)."""
        return self._run("print_results", self._print_results, root_causes)

    # --- implementations: (text, data), or FlipmoeInputError for a bad call --------------------------

    def _run(self, tool: str, tool_fn: Callable[..., tuple[str, Any]], *args: Any) -> Observation:
        try:
            text, data = tool_fn(*args)
        except FlipmoeInputError as err:
            return self._failure(tool, err)
        return self._observe(tool, text, data)

    def _observe(self, tool: str | None, text: str, data: Any) -> Observation:
        return Observation(tool, observation_text(text, max_chars=self.config.max_observation_chars), data)

    def _failure(self, tool: str | None, err: FlipmoeInputError) -> Observation:
        return Observation(tool, observation_text(f"error: {err}", max_chars=self.config.max_observation_chars),
                           error=str(err))

    def _search_traces(self, parent: object, trace_id: object) -> tuple[str, Any]:
        if parent is None or str(parent).strip().lower() in (ROOT, ""):
            return self._root_spans()
        parent = str(parent)
        if not (self._spans["span_id"] == parent).any():
            raise FlipmoeInputError(f"no span {parent!r} in the window", hint="start from parent_span_id 'root'")
        rows = self._spans.iloc[self._children.get(parent, np.empty(0, dtype=np.int64))]
        if trace_id is not None:
            rows = rows[rows["trace_id"] == str(trace_id)]
        if rows.empty:
            return f"span {parent} has no child spans (a leaf)", []
        return self._span_rows(rows.sort_values(["start", "span_id"]), f"child spans of {parent}")

    def _root_spans(self) -> tuple[str, Any]:
        roots = self._roots
        alert_time = self.incident.meta.alert_time
        since = ""
        if alert_time is not None and (roots["start"] >= alert_time).any():
            roots, since = roots[roots["start"] >= alert_time], " since the alert"
        if roots.empty:
            return "no spans in the window", []
        # Failing, then slow requests first: where an investigator looks, and the same every time.
        ranked = roots.assign(_ok=roots["status"] != "error").sort_values(
            ["_ok", "duration", "start", "span_id"], ascending=[True, False, True, True])
        shown = min(self.config.max_rows, len(ranked))
        return self._span_rows(ranked, f"{shown} of {len(ranked)} root spans{since} (failing, then slowest, first)")

    def _span_rows(self, rows: pd.DataFrame, title: str) -> tuple[str, Any]:
        shown = rows.head(self.config.max_rows)
        data = [{
            "trace_id": r["trace_id"], "span_id": r["span_id"], "service": r["service"], "pod": _str(r["pod"]),
            "operation": r["operation"], "start": _iso(r["start"]), "duration_ms": round(float(r["duration"]), 3),
            "status": _str(r["status"]), "children": len(self._children.get(r["span_id"], ())),
            "baseline_p50_ms": self._baseline_ms.get((r["service"], r["operation"])),
        } for r in shown.to_dict("records")]
        lines = [title + ":", "span_id | service | pod | operation | duration_ms | status | children"
                 + (" | baseline_p50_ms" if self._baseline_ms else "")]
        for d in data:
            line = (f"{d['span_id']} | {d['service']} | {d['pod'] or '-'} | {d['operation']} | "
                    f"{d['duration_ms']:.1f} | {d['status'] or '-'} | {d['children']}")
            if self._baseline_ms:
                line += f" | {_num(d['baseline_p50_ms'])}"
            lines.append(line)
        return "\n".join(lines + _more(len(rows), len(shown))), data

    def _search_fluctuating_metrics(self, service: object, timestamp: object) -> tuple[str, Any]:
        service = self._service_arg(service)
        at = reference_split_time(self.incident.meta) if timestamp is None else _time_arg(timestamp, "timestamp")
        metrics = self.incident.metrics
        if metrics is None:
            raise FlipmoeInputError("this incident has no metrics")
        rows = self._fluctuations(metrics[metrics["service"] == service], self._baseline_metrics(service), at)
        rows = [{**r, "node": self._pod_nodes.get(r["pod"] or "")} for r in rows]
        references = {r["reference"] for r in rows}
        normal = ("the baseline" if references == {"baseline"} else
                  f"the {self.config.lookback_minutes:g} min before" if references == {"before"} else
                  f"the baseline, else the {self.config.lookback_minutes:g} min before")
        head = (f"fluctuating metrics of {service} at {_iso(at)} "
                f"({len(rows)} series with |z| >= {self.config.z_threshold:g}")
        if not rows:
            return head + "):\nnone", []
        lines = [f"{head}; normal: {normal}):", "metric | pod | node | normal | now | change | z"]
        for r in rows[: self.config.max_rows]:
            change = "new (from 0)" if r["rel_change"] is None else f"{r['rel_change']:+.0%}"
            lines.append(f"{r['metric']} | {r['pod'] or '-'} | {r['node'] or '-'} | {_num(r['before'])} | "
                         f"{_num(r['after'])} | {change} | {r['z']:+.1f}")
        return "\n".join(lines + _more(len(rows), self.config.max_rows)), rows

    def _baseline_metrics(self, service: str) -> pd.DataFrame | None:
        baseline = self.incident.baseline
        if baseline is None or baseline.metrics is None:
            return None
        return baseline.metrics[baseline.metrics["service"] == service]

    def _fluctuations(self, series: pd.DataFrame, baseline: pd.DataFrame | None,
                      at: pd.Timestamp) -> list[dict[str, Any]]:
        """Series whose median from `at` departs from normal by >= z_threshold (modified z-score).

        Normal is the series' baseline when it has `min_reference_points` samples there (a fault-free
        window, like the metric analysis uses), else its samples in the `lookback_minutes` before `at`:
        with a gradual fault, those can already be abnormal, so they are only the fallback.
        """
        config = self.config
        keys = ["pod", "metric"]
        # Service-level series have no pod; an empty string keeps them groupable.
        series = series.assign(pod=series["pod"].fillna(""))
        ts = series["timestamp"]
        after = series[(ts >= at) & (ts < at + pd.Timedelta(minutes=config.lookahead_minutes))]
        now = after.groupby(keys)["value"].median().dropna()
        if now.empty:
            return []
        before = series[(ts >= at - pd.Timedelta(minutes=config.lookback_minutes)) & (ts < at)]
        before_values = {k: g.to_numpy(float) for k, g in before.groupby(keys)["value"]}
        base_values: dict[Any, np.ndarray] = {}
        if baseline is not None:
            baseline = baseline.assign(pod=baseline["pod"].fillna(""))
            base_values = {k: g.to_numpy(float) for k, g in baseline.groupby(keys)["value"]}
        picked: list[tuple[Any, str, np.ndarray]] = []
        for key in now.index:
            for reference, values in (("baseline", base_values.get(key)), ("before", before_values.get(key))):
                if values is not None and np.count_nonzero(~np.isnan(values)) >= config.min_reference_points:
                    picked.append((key, reference, values))
                    break
        if not picked:
            return []
        history_SH = np.full((len(picked), max(len(v) for _, _, v in picked)), np.nan)
        for row, (_, _, values) in enumerate(picked):
            history_SH[row, : len(values)] = values
        now_S1 = now.loc[[key for key, _, _ in picked]].to_numpy(float)[:, None]
        z_S = _DETECTOR.score(history_SH, now_S1, np.zeros(len(picked)))[:, 0]
        center_S = nanmedian_rows(history_SH)
        rows = []
        for (key, reference, _), z, normal, value in zip(picked, z_S, center_S, now_S1[:, 0], strict=True):
            if abs(z) >= config.z_threshold:
                rel = (value - normal) / abs(normal) if normal != 0 else None
                rows.append({"metric": str(key[1]), "pod": str(key[0]) or None, "before": float(normal),
                             "after": float(value), "rel_change": None if rel is None else float(rel),
                             "z": float(np.clip(z, -_Z_CAP, _Z_CAP)), "reference": reference})
        # Series that appear from zero first, then by relative change, then by z, then by name.
        return sorted(rows, key=lambda r: (r["rel_change"] is not None, -abs(r["rel_change"] or 0.0),
                                           -abs(r["z"]), r["metric"], r["pod"] or ""))

    def _search_logs(self, service: object, window: object, query: object) -> tuple[str, Any]:
        service = self._service_arg(service)
        start, end = self._window_arg(window)
        if query is None:
            query = ""
        if not isinstance(query, str):
            raise FlipmoeInputError("'query' must be a string")
        logs = self.incident.logs
        if logs is None:
            raise FlipmoeInputError("this incident has no logs")
        mask = (logs["service"] == service) & (logs["timestamp"] >= start) & (logs["timestamp"] < end)
        if query:
            mask &= logs["message"].str.contains(query, case=False, regex=False)
        matched = logs[mask.fillna(False).to_numpy()]
        title = f"{service} logs in [{_iso(start)}, {_iso(end)})" + (f" matching {query!r}" if query else "")
        return self._log_groups(matched, self._baseline_templates(service), title)

    def _baseline_templates(self, service: str) -> set[tuple[str, str]] | None:
        """(level, template) of every line the service logged in the baseline; None without baseline logs."""
        baseline = self.incident.baseline
        if baseline is None or baseline.logs is None:
            return None
        own = baseline.logs[baseline.logs["service"] == service]
        return set(zip(own["level"].astype(str), _templates(own["message"]), strict=True))

    def _log_groups(self, matched: pd.DataFrame, known: set[tuple[str, str]] | None,
                    title: str) -> tuple[str, Any]:
        counts = {str(k): int(v) for k, v in matched["level"].value_counts().items()}
        by_level = ", ".join(f"{level} {n}" for level, n in counts.items()) or "none"
        head = f"{title}: {len(matched)} lines; {by_level}"
        if matched.empty:
            return head, {"counts": counts, "groups": []}
        # Lines that differ only in ids and numbers are one group, shown by their first example.
        keyed = matched.assign(pod=matched["pod"].fillna("-"), _template=_templates(matched["message"]))
        groups = (keyed.sort_values("timestamp", kind="stable").groupby(["pod", "level", "_template"], sort=False)
                  .agg(lines=("timestamp", "size"), first=("timestamp", "min"), message=("message", "first"))
                  .reset_index())
        # What the service never logged in its fault-free baseline comes first: that is what changed.
        groups["new"] = [None if known is None else (str(level), template) not in known
                          for level, template in zip(groups["level"], groups["_template"], strict=True)]
        groups["_sev"] = groups["level"].map(_SEVERITY).fillna(len(_SEVERITY))
        groups["_old"] = [not new for new in groups["new"]]
        groups = groups.sort_values(
            ["_old", "_sev", "lines", "first", "pod", "_template"], ascending=[True, True, False, True, True, True])
        shown = groups.head(self.config.max_rows)
        data = [{"pod": g["pod"], "level": g["level"], "message": g["message"], "count": int(g["lines"]),
                 "first": _iso(g["first"]), "new": g["new"]} for g in shown.to_dict("records")]
        lines = [head + ("" if known is None else "; new = not in the baseline"),
                 "count | level | pod | first | " + ("" if known is None else "new | ") + "message"]
        for d in data:
            new = "" if known is None else ("new | " if d["new"] else "- | ")
            lines.append(f"{d['count']} | {d['level']} | {d['pod']} | {d['first']} | {new}"
                         f"{d['message'][:_MAX_MESSAGE_CHARS]}")
        return "\n".join(lines + _more(len(groups), len(shown))), {"counts": counts, "groups": data}

    def _print_results(self, root_causes: object) -> tuple[str, Any]:
        minimum = self.config.min_root_causes
        entries = root_causes if isinstance(root_causes, list) else []
        wellformed = [e for e in entries if is_wellformed_entry(e)]
        if len(wellformed) < minimum:
            raise FlipmoeInputError(
                f"'root_causes' must list at least {minimum} entr{'y' if minimum == 1 else 'ies'} like "
                '{"service": "...", "pod": "...", "node": "..."}, most likely first')
        known = {"service": set(self.services), "pod": set(self.pods), "node": set(self.nodes)}
        accepted, rejected = [], []
        for entry in entries:
            if not is_wellformed_entry(entry):
                rejected.append(str(entry)[:80])
                continue
            unknown = [entry[level] for level in ENTRY_LEVELS if entry.get(level) and entry[level] not in known[level]]
            if unknown:
                rejected += unknown
            else:
                accepted.append(dict(entry))
        data = {"root_causes": entries, "wellformed": len(wellformed), "accepted": accepted, "rejected": rejected}
        named = ", ".join(next(e[level] for level in ENTRY_LEVELS if e.get(level)) for e in accepted)
        named = named or "nothing known"
        dropped = f"; not in the incident or malformed: {', '.join(rejected)}" if rejected else ""
        return f"answer: {named}{dropped}", data

    # --- argument helpers -------------------------------------------------------------------------

    def _service_arg(self, service: object) -> str:
        if not isinstance(service, str) or not service:
            raise FlipmoeInputError("'service' must be a service name", hint="see the service list")
        if service not in self.services:
            close = difflib.get_close_matches(service, self.services, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see the service list"
            raise FlipmoeInputError(f"unknown service {service!r}", hint=hint)
        return service

    def _window_arg(self, window: object) -> tuple[pd.Timestamp, pd.Timestamp]:
        if window is None:
            return self.incident.meta.window.start, self.incident.meta.window.end
        if isinstance(window, Mapping) and set(window) == {"start", "end"}:
            window = [window["start"], window["end"]]
        if not isinstance(window, list | tuple) or len(window) != 2:
            raise FlipmoeInputError("'window' must be [start, end] or {\"start\", \"end\"}")
        start, end = (_time_arg(v, "window") for v in window)
        if not start < end:
            raise FlipmoeInputError("the window's start must be before its end")
        return start, end


# ------------------------------------------------------------------------------------- pure helpers


def _tool_help() -> str:
    lines = ['Tools (one call per step, as JSON {"name": TOOL, "arguments": {...}}):']
    for spec in TOOLS:
        function = spec["function"]
        required = function["parameters"]["required"]
        params = ", ".join(p if p in required else f"{p}?" for p in function["parameters"]["properties"])
        lines.append(f"  {function['name']}({params}): {function['description']}")
    return "\n".join(lines)


def is_wellformed_entry(entry: object) -> TypeGuard[Mapping[str, Any]]:
    """A dict with only known keys that names a service, pod or node with a non-empty string."""
    if not isinstance(entry, Mapping) or not set(entry) <= {*ENTRY_LEVELS, "reason"}:
        return False
    if "reason" in entry and not isinstance(entry["reason"], str):
        return False
    named = [entry[level] for level in ENTRY_LEVELS if entry.get(level) is not None]
    return bool(named) and all(isinstance(v, str) and v.strip() for v in named)


def _templates(messages: pd.Series) -> pd.Series:
    return messages.astype(str).str.replace(_VARIABLE, "#", regex=True)


def _time_arg(value: object, what: str) -> pd.Timestamp:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise FlipmoeInputError(f"'{what}' must be an ISO-8601 UTC time or epoch seconds/milliseconds")
    parsed = to_utc(pd.Series([value]), source="call", column=what)
    if parsed.isna().iloc[0]:
        raise FlipmoeInputError(f"'{what}': unparseable time {value!r}")
    return parsed.iloc[0]


def _window_spans(incident: Incident) -> pd.DataFrame:
    spans = incident.in_window().spans
    if spans is None:
        return pd.DataFrame(columns=["trace_id", "span_id", "parent_span_id", "service", "pod", "operation",
                                     "start", "duration", "status"])
    return spans.reset_index(drop=True)


def _children_index(spans: pd.DataFrame) -> dict[str, np.ndarray]:
    """parent span id -> positions of its children in `spans`."""
    with_parent = spans["parent_span_id"].notna().to_numpy()
    positions = np.flatnonzero(with_parent)
    if positions.size == 0:
        return {}
    groups = pd.Series(positions).groupby(spans["parent_span_id"].to_numpy()[with_parent]).indices
    return {str(parent): positions[idx] for parent, idx in groups.items()}


def _is_root(spans: pd.DataFrame) -> np.ndarray:
    """No parent, or a parent that is not in the window (otherwise the span could never be reached)."""
    own = pd.MultiIndex.from_arrays([spans["trace_id"], spans["span_id"]])
    parent = pd.MultiIndex.from_arrays([spans["trace_id"], spans["parent_span_id"]])
    return (spans["parent_span_id"].isna().to_numpy()) | ~parent.isin(own)


def _table_nodes(incident: Incident) -> set[str]:
    nodes: set[str] = set()
    for name in incident.modalities:
        table = incident.telemetry.table(name)
        if table is not None and "node" in table:
            nodes.update(table["node"].dropna().astype(str).unique())
    return nodes


def _more(total: int, shown: int) -> list[str]:
    return [f"... {total - shown} more not shown"] if total > shown else []


def _iso(ts: pd.Timestamp | None) -> str | None:
    if ts is None:
        return None
    return ts.tz_convert("UTC").isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _str(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
