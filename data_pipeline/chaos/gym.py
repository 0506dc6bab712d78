"""A Gymnasium environment for root-cause analysis: an agent investigates one incident with tool calls.

Each step the agent makes one tool call, as a dict `{"tool": name, "args": {...}}` or its JSON text
(ThinkFL's `{"name": ..., "arguments": ...}` and `<tool_call>` wrapping are accepted too):

- `search_traces(parent_span_id, trace_id=None)`: the child spans of a span in the window;
  `parent_span_id` null or "root" lists a sample of root spans to start from.
- `search_fluctuating_metrics(service, timestamp=alert time)`: the service's series whose level
  after `timestamp` departs from the minutes before it (robust z-score), largest change first.
- `search_logs(service, window=incident window, query="")`: matching lines, counted by level and
  grouped by (pod, level, message).
- `submit(root_causes)` (alias `print_results`): a ranked list of at least three
  `{service, pod?, node?}`; ends the episode with the grader's reward (`grader.grade_submission`).

A malformed call (unknown tool, bad or missing argument, unknown service or span) returns an error
observation and `-malformed_penalty`; it never raises. Other calls earn 0. The episode is truncated
after `max_steps` calls. Observations are printable-ASCII text (so they lie in a `spaces.Text`);
`info["data"]` carries the same result as plain Python data.

The environment reads the label: it is an evaluation and training component, never the RCA path.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from data_pipeline.chaos.grader import GraderWeights, grade_submission, is_wellformed_entry
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident, read_incident
from flipmoe.telemetry.label import Label, load_label
from flipmoe.telemetry.validate import to_utc

ROOT = "root"
_PRINTABLE = frozenset(string.printable)
_TOOL_CALL_TAG = re.compile(r"^\s*<tool_call>(.*?)(?:</?tool_call>)?\s*$", re.DOTALL)
_VARIABLE = r"[0-9a-fA-F]{8,}(?:-[0-9a-fA-F]{4,})*|\d+(?:\.\d+)?"
_SEVERITY = {"FATAL": 0, "ERROR": 1, "WARN": 2, "INFO": 3, "DEBUG": 4, "TRACE": 5, "UNKNOWN": 6}
_ARG_ALIASES = {"service_name": "service"}

TOOL_HELP = """\
Tools (one call per step, as JSON {"tool": NAME, "args": {...}}):
  search_traces(parent_span_id, trace_id?)  child spans of a span; "root" lists sampled root spans
  search_fluctuating_metrics(service, timestamp?)  the service's series that changed at timestamp
      (default: the alert time)
  search_logs(service, window?, query?)  the service's log lines; window [start, end]; query is a substring
  submit(root_causes)  ranked list of >= 3 {"service", "pod"?, "node"?}; ends the episode"""


@dataclass(kw_only=True)
class GymConfig:
    """Limits and tool settings of `RCAEnv`."""

    max_steps: int = 20
    """Calls per episode; the episode is truncated after this many."""
    max_rows: int = 20
    """Rows a tool returns at most (the observation says how many were left out)."""
    max_observation_chars: int = 8000
    """Observations are cut to this length, so one call cannot flood an agent's context."""
    max_action_chars: int = 16_000
    """Longest JSON action accepted."""
    lookback_minutes: float = 10.0
    """search_fluctuating_metrics compares against this many minutes before the timestamp."""
    lookahead_minutes: float = 5.0
    """... with this many minutes from the timestamp on."""
    z_threshold: float = 3.0
    """A series fluctuates when its robust z-score reaches this."""
    malformed_penalty: float = 0.05
    """Reward subtracted for a malformed call."""
    grader: GraderWeights | None = None
    """Weights of the submission grader; None means the grader's defaults."""

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_rows < 1:
            raise FlipmoeInputError("gym max_steps and max_rows must be >= 1")
        if self.max_observation_chars < 200 or self.max_action_chars < 200:
            raise FlipmoeInputError("gym max_observation_chars and max_action_chars must be >= 200")
        if self.lookback_minutes <= 0 or self.lookahead_minutes <= 0 or self.z_threshold <= 0:
            raise FlipmoeInputError("gym lookback_minutes, lookahead_minutes and z_threshold must be > 0")
        if self.malformed_penalty < 0:
            raise FlipmoeInputError("gym malformed_penalty must be >= 0")


@dataclass(frozen=True)
class _Result:
    text: str
    data: Any


class RCAEnv(gym.Env[str, str]):
    """One incident as an episode: observe the alert, call tools, submit ranked root causes."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, incident: Incident, label: Label, *, config: GymConfig | None = None) -> None:
        self.incident = incident
        self.label = label
        self.config = config or GymConfig()
        self.observation_space = spaces.Text(self.config.max_observation_chars, charset=_PRINTABLE)
        self.action_space = spaces.Text(self.config.max_action_chars, charset=_PRINTABLE)
        self._spans = _window_spans(incident)
        self._children = _children_index(self._spans)
        self._roots = self._spans[_is_root(self._spans)]
        self._baseline_ms = _baseline_latency(incident)
        self._services = _all_services(incident)
        self._pod_nodes = _pod_nodes(incident)
        self._tools: dict[str, Callable[[dict[str, Any]], _Result]] = {
            "search_traces": self._search_traces,
            "search_fluctuating_metrics": self._search_fluctuating_metrics,
            "search_logs": self._search_logs,
        }
        self._steps = self._malformed = 0
        self._terminated = self._truncated = False

    @classmethod
    def from_dir(cls, path: str | Path, *, config: GymConfig | None = None) -> RCAEnv:
        """An environment over an incident directory; it must hold a `label.json`."""
        label = load_label(path)
        if label is None:
            raise FlipmoeInputError("no label.json: the gym needs the ground truth to grade", path=path,
                                    hint="import or generate the incident with its label")
        return cls(read_incident(path), label, config=config)

    @classmethod
    def from_chaos(cls, system: str, seed: int, fault: str | None = None, *,
                   config: GymConfig | None = None) -> RCAEnv:
        """An environment over a freshly simulated chaos-gym incident."""
        from data_pipeline.chaos.generate import generate_incident  # the simulator is heavy: import on use

        incident, label = generate_incident(system, fault, seed=seed)
        return cls(incident, label, config=config)

    # --- the Gymnasium contract -------------------------------------------------------------------

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self._steps = self._malformed = 0
        self._terminated = self._truncated = False
        data = {"alert": self.incident.meta.alert, "window": self.incident.meta.window.to_json(),
                "alert_time": _iso(self.incident.meta.alert_time), "services": self._services,
                "modalities": self.incident.modalities, "max_steps": self.config.max_steps}
        info = {"step": 0, "tool": None, "ok": True, "error": None, "data": data}
        return self._observe(_intro_text(data)), info

    def step(self, action: str | Mapping[str, Any]) -> tuple[str, float, bool, bool, dict[str, Any]]:
        info: dict[str, Any] = {"step": self._steps, "tool": None, "ok": False, "error": None, "data": None}
        if self._terminated or self._truncated:
            info["error"] = "the episode is over; call reset()"
            return self._observe(f"error: {info['error']}"), 0.0, self._terminated, self._truncated, info
        self._steps += 1
        info["step"] = self._steps
        try:
            tool, args = self._parse_action(action)
            info["tool"] = tool
            if tool == "submit":
                reward, info["grade"] = self._submit(args)
                result = _Result(_grade_text(info["grade"]), info["grade"])
                self._terminated = True
            else:
                result, reward = self._tools[tool](args), 0.0
            info["ok"] = True
        except FlipmoeInputError as err:
            self._malformed += 1
            reward, info["error"] = -self.config.malformed_penalty, str(err)
            result = _Result(f"error: {err}", None)
        info["data"] = result.data
        text = result.text
        if not self._terminated and self._steps >= self.config.max_steps:
            self._truncated = True
            text += f"\n(step budget of {self.config.max_steps} used up: episode truncated)"
        return self._observe(text), float(reward), self._terminated, self._truncated, info

    def _observe(self, text: str) -> str:
        """Printable ASCII, cut to the observation space's length."""
        text = text.encode("ascii", "backslashreplace").decode("ascii")
        text = "".join(c if c in _PRINTABLE else "?" for c in text)
        limit = self.config.max_observation_chars
        return text if len(text) <= limit else text[: limit - 16] + "\n...[truncated]"

    # --- parsing ----------------------------------------------------------------------------------

    def _parse_action(self, action: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if isinstance(action, str):
            action = _json_object(action, what="action", limit=self.config.max_action_chars)
        if not isinstance(action, Mapping):
            raise FlipmoeInputError("an action is a JSON object {\"tool\": name, \"args\": {...}}")
        tool = action.get("tool", action.get("name"))
        if tool == "print_results":
            tool = "submit"
        if not isinstance(tool, str) or (tool != "submit" and tool not in self._tools):
            raise FlipmoeInputError(f"unknown tool {tool!r}",
                                    hint=f"valid: {', '.join([*self._tools, 'submit'])}")
        args = action.get("args", action.get("arguments", {}))
        if isinstance(args, str):
            args = _json_object(args, what="arguments", limit=self.config.max_action_chars)
        if not isinstance(args, Mapping):
            raise FlipmoeInputError(f"{tool}: args must be a JSON object")
        return tool, {_ARG_ALIASES.get(str(k), str(k)): v for k, v in args.items()}

    def _service_arg(self, args: dict[str, Any], tool: str) -> str:
        service = args.get("service")
        if not isinstance(service, str) or not service:
            raise FlipmoeInputError(f"{tool}: 'service' must be a service name")
        if service not in self._services:
            close = difflib.get_close_matches(service, self._services, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see the service list"
            raise FlipmoeInputError(f"{tool}: unknown service {service!r}", hint=hint)
        return service

    # --- tools ------------------------------------------------------------------------------------

    def _search_traces(self, args: dict[str, Any]) -> _Result:
        _check_keys(args, {"parent_span_id", "trace_id"}, "search_traces")
        parent = args.get("parent_span_id")
        trace_id = args.get("trace_id")
        if parent is None or str(parent).strip().lower() in (ROOT, ""):
            return self._sample_roots()
        parent = str(parent)
        if not (self._spans["span_id"] == parent).any():
            raise FlipmoeInputError(f"search_traces: no span {parent!r} in the window",
                                    hint="start from parent_span_id 'root'")
        rows = self._spans.iloc[self._children.get(parent, np.empty(0, dtype=np.int64))]
        if trace_id is not None:
            rows = rows[rows["trace_id"] == str(trace_id)]
        if rows.empty:
            return _Result(f"span {parent} has no child spans (a leaf)", [])
        return self._span_rows(rows.sort_values("start"), f"child spans of {parent}")

    def _sample_roots(self) -> _Result:
        roots = self._roots
        alert_time = self.incident.meta.alert_time
        if alert_time is not None and (roots["start"] >= alert_time).any():
            roots = roots[roots["start"] >= alert_time]
        if roots.empty:
            return _Result("no spans in the window", [])
        n = min(self.config.max_rows, len(roots))
        picked = roots.iloc[np.sort(self.np_random.choice(len(roots), size=n, replace=False))]
        # Errors, then slow requests, first: where an investigator would look.
        picked = picked.assign(_err=picked["status"] != "error").sort_values(["_err", "duration"],
                                                                              ascending=[True, False])
        return self._span_rows(picked, f"{n} of {len(roots)} root spans (sampled)")

    def _span_rows(self, rows: pd.DataFrame, title: str) -> _Result:
        shown = rows.head(self.config.max_rows)
        data = [{
            "trace_id": r.trace_id, "span_id": r.span_id, "service": r.service, "pod": _str(r.pod),
            "operation": r.operation, "start": _iso(r.start), "duration_ms": round(float(r.duration), 3),
            "status": _str(r.status), "children": len(self._children.get(r.span_id, ())),
            "baseline_p50_ms": self._baseline_ms.get((r.service, r.operation)),
        } for r in shown.itertuples(index=False)]
        lines = [title + ":", "span_id | service | pod | operation | duration_ms | status | children"
                 + (" | baseline_p50_ms" if self._baseline_ms else "")]
        for d in data:
            line = (f"{d['span_id']} | {d['service']} | {d['pod'] or '-'} | {d['operation']} | "
                    f"{d['duration_ms']:.1f} | {d['status'] or '-'} | {d['children']}")
            if self._baseline_ms:
                line += f" | {_num(d['baseline_p50_ms'])}"
            lines.append(line)
        return _Result("\n".join(lines + _more(len(rows), len(shown))), data)

    def _search_fluctuating_metrics(self, args: dict[str, Any]) -> _Result:
        _check_keys(args, {"service", "timestamp"}, "search_fluctuating_metrics")
        service = self._service_arg(args, "search_fluctuating_metrics")
        raw_time = args.get("timestamp")
        at = self._default_time() if raw_time is None else self._time_arg(raw_time, "timestamp")
        metrics = self.incident.metrics
        if metrics is None:
            raise FlipmoeInputError("search_fluctuating_metrics: this incident has no metrics")
        rows = _fluctuations(metrics[metrics["service"] == service], self._baseline_metrics(service), at,
                             self.config)
        rows = [{**r, "node": self._pod_nodes.get(r["pod"])} for r in rows]
        head = (f"fluctuating metrics of {service} at {_iso(at)} "
                f"({len(rows)} series with |z| >= {self.config.z_threshold:g}):")
        if not rows:
            return _Result(head + "\nnone", [])
        lines = [head, "metric | pod | node | before | after | change | z"]
        for r in rows[: self.config.max_rows]:
            change = "new (from 0)" if r["rel_change"] is None else f"{r['rel_change']:+.0%}"
            lines.append(f"{r['metric']} | {r['pod'] or '-'} | {r['node'] or '-'} | {_num(r['before'])} | "
                         f"{_num(r['after'])} | {change} | {_z_text(r['z'])}")
        return _Result("\n".join(lines + _more(len(rows), self.config.max_rows)), rows)

    def _baseline_metrics(self, service: str) -> pd.DataFrame | None:
        baseline = self.incident.baseline
        if baseline is None or baseline.metrics is None:
            return None
        return baseline.metrics[baseline.metrics["service"] == service]

    def _search_logs(self, args: dict[str, Any]) -> _Result:
        _check_keys(args, {"service", "window", "query"}, "search_logs")
        service = self._service_arg(args, "search_logs")
        start, end = self._window_arg(args.get("window"))
        query = args.get("query") or ""
        if not isinstance(query, str):
            raise FlipmoeInputError("search_logs: 'query' must be a string")
        logs = self.incident.logs
        if logs is None:
            raise FlipmoeInputError("search_logs: this incident has no logs")
        mask = (logs["service"] == service) & (logs["timestamp"] >= start) & (logs["timestamp"] < end)
        if query:
            mask &= logs["message"].str.contains(query, case=False, regex=False)
        matched = logs[mask.fillna(False).to_numpy()]
        return self._log_groups(matched, f"{service} logs in [{_iso(start)}, {_iso(end)})"
                                         + (f" matching {query!r}" if query else ""))

    def _log_groups(self, matched: pd.DataFrame, title: str) -> _Result:
        counts = {str(k): int(v) for k, v in matched["level"].value_counts().items()}
        by_level = ", ".join(f"{level} {n}" for level, n in counts.items()) or "none"
        head = f"{title}: {len(matched)} lines; {by_level}"
        if matched.empty:
            return _Result(head, {"counts": counts, "groups": []})
        # Lines that differ only in ids and numbers are one group, shown by their first example.
        keyed = matched.assign(pod=matched["pod"].fillna("-"),
                               _template=matched["message"].str.replace(_VARIABLE, "#", regex=True))
        groups = (keyed.sort_values("timestamp").groupby(["pod", "level", "_template"], sort=False)
                  .agg(lines=("timestamp", "size"), first=("timestamp", "min"), message=("message", "first"))
                  .reset_index())
        groups["_sev"] = groups["level"].map(_SEVERITY).fillna(len(_SEVERITY))
        groups = groups.sort_values(["_sev", "lines", "first"], ascending=[True, False, True])
        shown = groups.head(self.config.max_rows)
        data = [{"pod": g.pod, "level": g.level, "message": g.message, "count": int(g.lines),
                 "first": _iso(g.first)} for g in shown.itertuples(index=False)]
        lines = [head, "count | level | pod | first | message"]
        lines += [f"{d['count']} | {d['level']} | {d['pod']} | {d['first']} | {d['message'][:200]}"
                  for d in data]
        return _Result("\n".join(lines + _more(len(groups), len(shown))), {"counts": counts, "groups": data})

    def _submit(self, args: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        _check_keys(args, {"root_causes"}, "submit")
        causes = args.get("root_causes")
        minimum = (self.config.grader or GraderWeights()).min_entries
        if not isinstance(causes, list) or sum(map(is_wellformed_entry, causes)) < minimum:
            raise FlipmoeInputError(f"submit: 'root_causes' must list at least {minimum} entries like "
                                    '{"service": "...", "pod": "...", "node": "..."}, most likely first')
        return grade_submission(causes, self.label, steps=self._steps, max_steps=self.config.max_steps,
                                malformed_calls=self._malformed, weights=self.config.grader)

    # --- argument helpers -------------------------------------------------------------------------

    def _default_time(self) -> pd.Timestamp:
        meta = self.incident.meta
        return meta.alert_time if meta.alert_time is not None else meta.window.start

    def _time_arg(self, value: object, what: str) -> pd.Timestamp:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise FlipmoeInputError(f"{what} must be an ISO-8601 UTC time or epoch seconds/milliseconds")
        parsed = to_utc(pd.Series([value]), source="action", column=what)
        if parsed.isna().iloc[0]:
            raise FlipmoeInputError(f"{what}: unparseable time {value!r}")
        return parsed.iloc[0]

    def _window_arg(self, window: object) -> tuple[pd.Timestamp, pd.Timestamp]:
        if window is None:
            return self.incident.meta.window.start, self.incident.meta.window.end
        if isinstance(window, Mapping) and set(window) == {"start", "end"}:
            window = [window["start"], window["end"]]
        if not isinstance(window, list | tuple) or len(window) != 2:
            raise FlipmoeInputError("search_logs: 'window' must be [start, end] or {\"start\", \"end\"}")
        start, end = (self._time_arg(v, "window") for v in window)
        if not start < end:
            raise FlipmoeInputError("search_logs: window start must be before its end")
        return start, end


# --- pure helpers ---------------------------------------------------------------------------------

def _json_object(text: str, *, what: str, limit: int) -> Any:
    if len(text) > limit:
        raise FlipmoeInputError(f"{what} is longer than {limit} characters")
    tagged = _TOOL_CALL_TAG.match(text)
    try:
        return json.loads(tagged.group(1) if tagged else text)
    except json.JSONDecodeError as err:
        raise FlipmoeInputError(f"{what} is not valid JSON ({err.msg} at column {err.colno})") from None


def _check_keys(args: Mapping[str, Any], allowed: set[str], tool: str) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise FlipmoeInputError(f"{tool}: unknown argument(s) {', '.join(unknown)}",
                                hint=f"arguments: {', '.join(sorted(allowed))}")


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


def _baseline_latency(incident: Incident) -> dict[tuple[str, str], float]:
    baseline = incident.baseline
    if baseline is None or baseline.spans is None:
        return {}
    medians = baseline.spans.groupby(["service", "operation"])["duration"].median()
    return {(str(s), str(o)): round(float(v), 3) for (s, o), v in medians.items()}


def _all_services(incident: Incident) -> list[str]:
    names = set(incident.telemetry.services())
    if incident.topology is not None:
        names.update(incident.topology.services)
    return sorted(names)


def _pod_nodes(incident: Incident) -> dict[str, str]:
    placement = dict(incident.topology.placement) if incident.topology is not None else {}
    metrics = incident.metrics
    if metrics is not None:
        known = metrics.dropna(subset=["pod", "node"]).drop_duplicates("pod")
        placement.update(zip(known["pod"].astype(str), known["node"].astype(str), strict=True))
    return placement


def _fluctuations(series: pd.DataFrame, baseline: pd.DataFrame | None, at: pd.Timestamp,
                  config: GymConfig) -> list[dict[str, Any]]:
    """Series whose median after `at` departs from the reference before it by >= z_threshold robust sigmas.

    The reference is the `lookback_minutes` before `at`; a series with fewer than three samples there
    falls back on the baseline's samples of the same series.
    """
    # Service-level series have no pod; an empty string keeps them groupable.
    series = series.assign(pod=series["pod"].fillna(""))
    ts = series["timestamp"]
    before = series[(ts >= at - pd.Timedelta(minutes=config.lookback_minutes)) & (ts < at)]
    after = series[(ts >= at) & (ts < at + pd.Timedelta(minutes=config.lookahead_minutes))]
    keys = ["pod", "metric"]
    counts = before.groupby(keys)["value"].size()
    enough = list(counts[counts >= 3].index)
    reference = before
    if baseline is not None:
        baseline = baseline.assign(pod=baseline["pod"].fillna(""))
        reference = pd.concat([before[_keys_in(before, enough)], baseline[~_keys_in(baseline, enough)]])
    ref = reference.groupby(keys)["value"].agg(["median", "size", _mad])
    now = after.groupby(keys)["value"].median()
    rows = []
    for key, after_value in now.items():
        if key not in ref.index or ref.loc[key, "size"] < 2:
            continue
        before_value, mad = float(ref.loc[key, "median"]), float(ref.loc[key, "_mad"])
        # A flat reference has MAD 0: floor the scale at 5% of its level so tiny wiggles are not "infinite".
        scale = max(1.4826 * mad, 0.05 * abs(before_value), 1e-9)
        z = (float(after_value) - before_value) / scale
        if abs(z) >= config.z_threshold:
            rel = (float(after_value) - before_value) / abs(before_value) if before_value != 0 else None
            rows.append({"metric": str(key[1]), "pod": str(key[0]) or None, "before": before_value,
                         "after": float(after_value), "rel_change": rel, "z": z})
    # Series that appear from zero first, then by relative change, then by z.
    return sorted(rows, key=lambda r: (r["rel_change"] is not None, -abs(r["rel_change"] or 0.0),
                                       -abs(r["z"])))


def _keys_in(frame: pd.DataFrame, keys: list[tuple[str, str]]) -> np.ndarray:
    return pd.MultiIndex.from_frame(frame[["pod", "metric"]]).isin(keys)


def _mad(values: pd.Series) -> float:
    return float((values - values.median()).abs().median())


def _intro_text(data: dict[str, Any]) -> str:
    alert = f"; the alert fired at {data['alert_time']}" if data["alert_time"] else ""
    return "\n".join([
        f"ALERT: {data['alert']}",
        f"Window: {data['window']['start']} to {data['window']['end']} (UTC){alert}.",
        f"Telemetry: {', '.join(data['modalities']) or 'none'}.",
        f"Services ({len(data['services'])}): {', '.join(data['services'])}",
        TOOL_HELP,
        f"You have {data['max_steps']} calls. Find the root cause service, pod and node.",
    ])


def _grade_text(grade: dict[str, Any]) -> str:
    ranks = ", ".join(f"{level} rank {grade[f'{level}_rank'] or '-'}" for level in ("service", "pod", "node")
                      if grade[level] is not None)
    return (f"submitted. reward {grade['total']:.3f} (correctness {grade['correctness']:.2f}, "
            f"format {grade['format']:.2f}, efficiency {grade['efficiency']:.2f}; {ranks})")


def _more(total: int, shown: int) -> list[str]:
    return [f"... {total - shown} more not shown"] if total > shown else []


def _iso(ts: pd.Timestamp | None) -> str | None:
    if ts is None:
        return None
    return ts.tz_convert("UTC").isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _str(value: object) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def _z_text(z: float) -> str:
    # A series that leaves a flat zero has an astronomically large z; its size says nothing more.
    return f"{z:+.1f}" if abs(z) < 1000 else (">+999" if z > 0 else "<-999")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
