"""Incident-level tasks on held-out chaos incidents: localisation, diagnosis, RCA summary, scenario ->
cause, metric spike cause, Kubernetes event cause, latency forecast, and call-graph reasoning.

Every model and the rule read the same *evidence digest* of the incident (`evidence_digest`): the
alert, the largest metric changes against the fault-free baseline, the services whose error logs and
failing or slow spans grew, and the warning events — computed from the raw telemetry, never from the
label or from the analysis toolkits. The rule reads the digest only (the services it names, in the
order of their changes; keywords of the metrics and events). The platform's own analysis path
(`director.director.analyse_incident`: the Director's runbook, as `flipmoe rca` runs it) on the whole
incident is the tasks' `toolkit` baseline — it reads more than the models, so it is reported as its
own model (`--model toolkit`) — cached per incident, so one analysis serves every task.

The RCA summary's references are written from the label alone (service, fault type, fine-grained
cause where the label has one, onset, propagation path), never from a digest or a system's output.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from eval.tasks._core import (
    EvalItem,
    EvalTask,
    exact_scorer,
    first_rule_match,
    macro_f1_scorer,
    mape_scorer,
    ranking_scorer,
    set_f1_scorer,
    summary_scorer,
)
from eval.tasks._data import EvalData
from experts.sources import ChaosSample, balanced, digest

FORECAST_HISTORY, FORECAST_HORIZON = 24, 6
_LATENCY = re.compile(r"latency|duration|p9\d|response_time|_rt\b", re.IGNORECASE)


def incident_tasks() -> list[EvalTask]:
    digest_format = "evidence digest: alert, top metric changes, log/trace changes, warning events"
    return [
        EvalTask(name="localisation_service", category="localisation", metric="A@1 (A@3, A@5, MRR)",
                 description="incident evidence -> services ranked as root cause, comma-separated",
                 input_format=digest_format, build=_incident_builder("service"), rule=_digest_rank_rule("service"),
                 toolkit=_rank_rule("service"), score=ranking_scorer(), max_new_tokens=48, size=20),
        EvalTask(name="localisation_pod", category="localisation", metric="A@1 (A@3, A@5, MRR)",
                 description="incident evidence -> pods ranked as root cause, comma-separated",
                 input_format=digest_format, build=_incident_builder("pod"), rule=_digest_rank_rule("pod"),
                 toolkit=_rank_rule("pod"), score=ranking_scorer(), max_new_tokens=64, size=20),
        EvalTask(name="fault_type_diagnosis", category="diagnosis", metric="macro_f1",
                 description="incident evidence -> fault type (flipmoe taxonomy)", input_format=digest_format,
                 build=_incident_builder("fault_type"), rule=digest_diagnosis_rule, toolkit=_diagnosis_rule,
                 score=macro_f1_scorer(), max_new_tokens=8, size=20),
        EvalTask(name="scenario_cause_mc", category="cloud_devops", metric="exact",
                 description="incident evidence + four candidate causes -> the letter of the right one",
                 input_format=digest_format + ", then options A-D", build=_mc_items, rule=_digest_mc_rule,
                 toolkit=_mc_rule, score=exact_scorer(), max_new_tokens=2, size=20),
        EvalTask(name="rca_summary", category="log_metric_summarisation", metric="normalised_rouge2+gate",
                 description="incident evidence -> RCA summary (cause, where, evidence, propagation)",
                 input_format=digest_format, build=_summary_items, rule=digest_summary_rule, toolkit=_summary_rule,
                 score=summary_scorer(), max_new_tokens=96, size=20,
                 notes="3 references per item, written from the label alone"),
        EvalTask(name="metric_spike_cause", category="metric_timeseries", metric="macro_f1",
                 description="largest metric changes of an incident -> fault type",
                 input_format="the metric part of the evidence digest", build=_spike_items, rule=_spike_rule,
                 score=macro_f1_scorer(), max_new_tokens=8, size=20),
        EvalTask(name="k8s_event_cause", category="cloud_devops", metric="macro_f1",
                 description="Kubernetes/deploy/config event -> the fault it signals, or benign",
                 input_format="one event: kind, reason, object, message", build=_event_items, rule=_event_rule,
                 score=macro_f1_scorer(), max_new_tokens=8),
        EvalTask(name="latency_forecast", category="metric_timeseries", metric="1 - MAPE",
                 description=f"{FORECAST_HISTORY} points of a fault-free latency series -> the next "
                             f"{FORECAST_HORIZON}", input_format="metric, service, values",
                 build=_forecast_items, rule=_forecast_rule, score=mape_scorer(), max_new_tokens=48),
        EvalTask(name="blast_radius", category="software_engineering", metric="set_f1",
                 description="call graph + failing service -> every service that calls it, directly or not",
                 input_format="caller -> callee edges, then the failing service", build=_blast_items,
                 rule=_blast_rule, score=set_f1_scorer(";"), max_new_tokens=64),
        EvalTask(name="dependency_path", category="software_engineering", metric="exact",
                 description="call graph + two services -> the shortest call path 'a > b > c'",
                 input_format="caller -> callee edges, then from/to", build=_path_items, rule=_path_rule,
                 score=exact_scorer(), max_new_tokens=32),
    ]


# --- the evidence digest -------------------------------------------------------------------------


def metric_changes(sample: ChaosSample, *, top: int = 8) -> list[str]:
    """The `top` (pod, metric) series that moved most from their baseline, as text lines."""
    baseline = sample.table("metrics", baseline=True)
    window = sample.table("metrics")
    keys = ["service", "pod", "metric"]
    base = baseline.fillna({"pod": "-"}).groupby(keys)["value"].agg(
        median="median", mad=lambda v: float(np.median(np.abs(v - np.median(v)))))
    now = window.fillna({"pod": "-"}).groupby(keys)["value"].agg(["max", "min"])
    joined = now.join(base, how="inner")
    scale = 1.4826 * joined["mad"] + 0.05 * joined["median"].abs() + 1e-9
    up = (joined["max"] - joined["median"]) / scale
    down = (joined["median"] - joined["min"]) / scale
    joined = joined.assign(z=np.maximum(up, down), rising=up >= down).sort_values("z", ascending=False)
    lines = []
    for key, row in joined.head(top).iterrows():
        service, pod, metric = cast(tuple[str, str, str], key)  # the group keys, "-" standing for no pod
        level = row["max"] if row["rising"] else row["min"]
        where = service if pod == "-" else f"{service} pod {pod}"
        lines.append(f"{where} {metric}: baseline {_num(row['median'])} -> {'max' if row['rising'] else 'min'} "
                     f"{_num(level)}")
    return lines


def _log_changes(sample: ChaosSample, *, top: int = 5) -> list[str]:
    def counts(logs: pd.DataFrame) -> pd.Series:
        return logs[logs["level"].isin(["ERROR", "FATAL", "WARN"])].groupby("service").size()

    logs = sample.table("logs")
    before, during = counts(sample.table("logs", baseline=True)), counts(logs)
    growth = during.sub(before, fill_value=0).sort_values(ascending=False)
    lines = []
    for service, delta in growth.head(top).items():
        if delta <= 0:
            break
        errors = logs[(logs["service"] == service) & logs["level"].isin(["ERROR", "FATAL"])]["message"]
        example = str(errors.iloc[0]).split("\n", 1)[0][:160] if len(errors) else ""
        lines.append(f"{service}: {int(before.get(service, 0))} -> {int(during.get(service, 0))} warn/error lines"
                     + (f"; e.g. {example}" if example else ""))
    return lines


def _trace_changes(sample: ChaosSample, *, top: int = 5) -> list[str]:
    def stats(spans: pd.DataFrame) -> pd.DataFrame:
        return spans.groupby("service").agg(errors=("status", lambda s: int((s == "error").sum())),
                                            p95=("duration", lambda d: float(np.percentile(d, 95))))

    before, during = stats(sample.table("spans", baseline=True)), stats(sample.table("spans"))
    joined = during.merge(before, how="left", left_index=True, right_index=True,
                          suffixes=("", "_before")).fillna(0.0)
    joined = joined.assign(rank=(joined["errors"] - joined["errors_before"]).clip(lower=0)
                           + 10 * np.log(np.maximum(joined["p95"], 1) / np.maximum(joined["p95_before"], 1)))
    lines = []
    for service, row in joined.sort_values("rank", ascending=False).head(top).iterrows():
        if row["rank"] <= 0:
            break
        lines.append(f"{service}: error spans {int(row['errors_before'])} -> {int(row['errors'])}, "
                     f"p95 {_num(row['p95_before'])} ms -> {_num(row['p95'])} ms")
    return lines


def _event_lines(sample: ChaosSample, *, top: int = 6) -> list[str]:
    events = sample.table("events")
    events = events[~events["reason"].isin(_ROUTINE)].drop_duplicates(["reason", "service"]).head(top)
    return [f"{_event_text(row)}" for row in events.itertuples(index=False)]


def evidence_digest(sample: ChaosSample, *, metrics_only: bool = False) -> str:
    key = (sample.system, sample.fault, sample.seed)
    if key not in _METRIC_LINES:
        _METRIC_LINES[key] = _present(metric_changes, sample)
    parts = [f"alert: {sample.incident.meta.alert}", "metric changes against the fault-free baseline:",
             *_METRIC_LINES[key]]
    if not metrics_only:
        parts += ["services with more warn/error logs:", *_present(_log_changes, sample),
                  "services with more failing or slower spans:", *_present(_trace_changes, sample),
                  "events:", *_present(_event_lines, sample)]
    return "\n".join(parts)


def _present(section: Any, sample: ChaosSample) -> list[str]:
    """A digest section's lines, or none when the incident lacks the tables it reads (real incidents may)."""
    try:
        return list(section(sample))
    except (ValueError, KeyError):
        return []


_DIGESTS: dict[tuple[str, str, int, bool], str] = {}
_ANALYSES: dict[tuple[str, str, int], Any] = {}
_METRIC_LINES: dict[tuple[str, str, int], list[str]] = {}


def _digest_of(sample: ChaosSample, metrics_only: bool = False) -> str:
    key = (sample.system, sample.fault, sample.seed, metrics_only)
    if key not in _DIGESTS:
        _DIGESTS[key] = evidence_digest(sample, metrics_only=metrics_only)
    return _DIGESTS[key]


def _num(value: float) -> str:
    return f"{value:.4g}"


# --- localisation, diagnosis, scenario, summary ----------------------------------------------------


def _incident_builder(target: str):  # type: ignore[no-untyped-def]
    def build(data: EvalData) -> list[EvalItem]:
        items = []
        for sample in data.chaos():
            truth = getattr(sample.label, target)
            if not truth:
                continue
            items.append(EvalItem(id=f"{target}-{sample.seed}", input=_digest_of(sample), references=(str(truth),),
                                  meta={"source": f"chaos:{sample.seed}", "system": sample.system,
                                        "fault": sample.fault, "split": "heldout"}, payload=sample))
        return items[: data.config.max_items]
    return build


def analysis_of(sample: ChaosSample) -> Any:
    """The `flipmoe rca` report of a held-out incident (the Director in this process, no model; one per
    incident, shared by every task)."""
    from director.actors.base import RunSettings
    from director.director import analyse_incident

    key = (sample.system, sample.fault, sample.seed)
    if key not in _ANALYSES:
        _ANALYSES[key] = analyse_incident(sample.incident, settings=RunSettings(top=20))
    return _ANALYSES[key]


def _ranking(sample: ChaosSample, level: str) -> list[str]:
    causes = analysis_of(sample).root_causes
    return list(dict.fromkeys(str(getattr(c, level)) for c in causes if getattr(c, level)))


def _rank_rule(level: str):  # type: ignore[no-untyped-def]
    def rule(items: Sequence[EvalItem]) -> list[str]:
        return [", ".join(_ranking(item.payload, level)[:10]) for item in items]
    return rule


def _diagnosed(sample: ChaosSample) -> str:
    causes = analysis_of(sample).root_causes
    return (causes[0].fault_type or "") if causes else ""


def _diagnosis_rule(items: Sequence[EvalItem]) -> list[str]:
    return [_diagnosed(item.payload) for item in items]


def _mc_items(data: EvalData) -> list[EvalItem]:
    from flipmoe.telemetry.taxonomy import FAULT_TYPES

    items = []
    for sample in data.chaos():
        services = sorted(set(sample.table("metrics")["service"].dropna().astype(str)) - {sample.label.service},
                          key=lambda s: digest(str(sample.seed), s))
        faults = sorted((f for f in FAULT_TYPES if f != sample.label.fault_type),
                        key=lambda f: digest(str(sample.seed), f))
        truth = f"{sample.label.fault_type} in {sample.label.service}"
        options = [truth, f"{faults[0]} in {sample.label.service}", f"{sample.label.fault_type} in {services[0]}",
                   f"{faults[1]} in {services[1 % len(services)]}"]
        options.sort(key=lambda o: digest(str(sample.seed), o))
        letters = "ABCD"
        text = _digest_of(sample) + "\nWhich is the root cause?\n" + "\n".join(
            f"{letters[i]}) {o}" for i, o in enumerate(options))
        items.append(EvalItem(id=f"mc-{sample.seed}", input=text, references=(letters[options.index(truth)],),
                              meta={"source": f"chaos:{sample.seed}", "split": "heldout"}, payload=sample))
    return items[: data.config.max_items]


_OPTION = re.compile(r"^([ABCD])\) (\S+) in (\S+)$", re.MULTILINE)


def _mc_rule(items: Sequence[EvalItem]) -> list[str]:
    return [_best_option(item.input, (_ranking(item.payload, "service") or [""])[0], _diagnosed(item.payload))
            for item in items]


def _best_option(question: str, top: str, fault: str) -> str:
    """The option naming the top suspect (and, better, also the diagnosed fault type); A when none does."""
    options = _OPTION.findall(question)
    return max(options, key=lambda o: 2 * (o[2] == top) + (o[1] == fault), default=("A", "", ""))[0]


def _summary_items(data: EvalData) -> list[EvalItem]:
    items = [EvalItem(id=f"rca-{sample.seed}", input=_digest_of(sample), references=label_summaries(sample.label),
                      meta={"source": f"chaos:{sample.seed}", "split": "heldout"}, payload=sample)
             for sample in data.chaos()]
    return items[: data.config.max_items]


def label_summaries(label: Any) -> tuple[str, str, str]:
    """Three reference summaries written from the label alone: the service (and pod), the fault type, the
    fine-grained cause where the label has one, the onset and the propagation path."""
    fault = str(label.original_type or label.fault_type).replace("_", " ")
    where = label.service + (f" (pod {label.pod})" if label.pod else "")
    onset = f"{pd.Timestamp(label.inject_time):%H:%M} UTC" if label.inject_time else "the alert"
    cause = f", located at {label.fine_grained}" if label.fine_grained else ""
    path = " -> ".join(label.propagation_path) or label.service
    return (f"The root cause is a {fault} fault in {where}{cause}, starting at {onset}. It propagated along {path}.",
            f"{label.service} is the culprit: {fault}{cause} from {onset}. Impact path: {path}.",
            f"A {fault} injected into {label.service} at {onset}{cause} explains the alert; the failure travelled "
            f"{path}.")


def _summary_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        service = (_ranking(item.payload, "service") or ["unknown"])[0]
        fault = _diagnosed(item.payload).replace("_", " ") or "fault"
        evidence = next((line for line in item.input.split("\n")[2:] if service in line), "")
        answers.append(f"Most likely root cause: {fault} in {service}. {evidence}.")
    return answers


# --- rules on the digest alone (the models' input) ------------------------------------------------

def digest_sections(text: str) -> dict[str, list[str]]:
    """The digest's lines by section: "metrics", "logs", "traces", "events"."""
    names = {"metric changes against the fault-free baseline:": "metrics",
             "services with more warn/error logs:": "logs",
             "services with more failing or slower spans:": "traces", "events:": "events"}
    sections: dict[str, list[str]] = {name: [] for name in names.values()}
    current = None
    for line in text.split("\n"):
        if line in names:
            current = names[line]
        elif current is not None and line.strip():
            sections[current].append(line)
    return sections


def digest_ranking(text: str, level: str) -> list[str]:
    """Services (or pods) the digest names, ranked by their changes: each section votes 1/rank for the
    entity of each of its lines (metric lines are sorted by the size of the change, log and trace lines
    by their growth)."""
    sections = digest_sections(text)
    votes: dict[str, float] = {}
    for name in ("metrics", "logs", "traces"):
        for rank, line in enumerate(sections[name], start=1):
            head = line.split(":", 1)[0].split()
            if level == "pod":
                entity = head[2] if len(head) > 2 and head[1] == "pod" else ""
            else:
                entity = head[0] if head else ""
            if entity:
                votes[entity] = votes.get(entity, 0.0) + 1.0 / rank
    return sorted(votes, key=lambda e: -votes[e])


def _digest_rank_rule(level: str):  # type: ignore[no-untyped-def]
    def rule(items: Sequence[EvalItem]) -> list[str]:
        return [", ".join(digest_ranking(item.input, level)[:10]) for item in items]
    return rule


def digest_fault(text: str) -> str:
    """A fault type from the digest's words: a warning event's reason first, else the metric that moved
    most, else a code exception when error logs grew."""
    sections = digest_sections(text)
    for line in sections["events"]:
        fault = next((f for f, rule in _EVENT_RULES if rule.search(line)), "")
        if fault:
            return fault
    if sections["metrics"]:
        metric = sections["metrics"][0].split(":", 1)[0].rsplit(" ", 1)[-1]
        fault = next((f for f, rule in _SPIKE_RULES if rule.search(metric)), "")
        if fault:
            return fault
    return "code_exception" if sections["logs"] else "cpu_hog"


def digest_diagnosis_rule(items: Sequence[EvalItem]) -> list[str]:
    return [digest_fault(item.input) for item in items]


def _digest_mc_rule(items: Sequence[EvalItem]) -> list[str]:
    return [_best_option(item.input, (digest_ranking(item.input, "service") or [""])[0], digest_fault(item.input))
            for item in items]


def digest_summary_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        service = (digest_ranking(item.input, "service") or ["unknown"])[0]
        fault = digest_fault(item.input).replace("_", " ")
        evidence = next((line for line in item.input.split("\n")[2:] if line.startswith(service)), "")
        answers.append(f"Most likely root cause: {fault} in {service}. {evidence}.")
    return answers


# --- metrics --------------------------------------------------------------------------------------


def _spike_items(data: EvalData) -> list[EvalItem]:
    return [EvalItem(id=f"spike-{s.seed}", input=_digest_of(s, True), references=(s.label.fault_type,),
                     meta={"source": f"chaos:{s.seed}", "split": "heldout"})
            for s in data.chaos()][: data.config.max_items]


_SPIKE_RULES = (
    ("node_failure", re.compile(r"node_|kube_node|instance:")),
    ("pod_crash_loop", re.compile(r"restart")),
    ("memory_leak", re.compile(r"mem")),
    ("cpu_hog", re.compile(r"cpu_usage|cpu_seconds|cpu.*percent")),
    ("cpu_contention", re.compile(r"throttl|pressure|cpu")),
    ("disk_io", re.compile(r"fs_|disk|io_time|volume")),
    ("packet_loss", re.compile(r"drop|loss|retrans")),
    ("network_delay", re.compile(r"rtt|network|latency")),
    ("db_slow_query", re.compile(r"slow_quer|db_")),
    ("cache_outage", re.compile(r"redis|cache|evict")),
    ("code_exception", re.compile(r"error")),
)


def _spike_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        lines = item.input.split("\n")[2:]
        first = lines[0].split(":", 1)[0].rsplit(" ", 1)[-1] if lines else ""
        answers.append(next((fault for fault, rule in _SPIKE_RULES if rule.search(first)), "code_wrong_result"))
    return answers


def _forecast_items(data: EvalData) -> list[EvalItem]:
    items = []
    for sample in data.chaos():
        base = sample.table("metrics", baseline=True)
        latency = base[base["metric"].astype(str).str.contains(_LATENCY)]
        series = latency.groupby(["metric", "service", "timestamp"])["value"].mean()
        keys = sorted({(m, s) for m, s, _ in series.index}, key=lambda k: digest(str(sample.seed), *k))
        for metric, service in keys[:3]:
            values = series.loc[(metric, service)].to_numpy()[-(FORECAST_HISTORY + FORECAST_HORIZON):]
            if len(values) < FORECAST_HISTORY + FORECAST_HORIZON or not np.all(values > 0):
                continue
            history, future = values[:FORECAST_HISTORY], values[FORECAST_HISTORY:]
            text = (f"metric={metric} service={service} values: {' '.join(_num(v) for v in history)}\n"
                    f"next {FORECAST_HORIZON} values?")
            items.append(EvalItem(id=f"fc-{digest(text)[:10]}", input=text,
                                  references=(" ".join(_num(v) for v in future),),
                                  meta={"source": f"chaos:{sample.seed}", "split": "heldout"}))
    return items[: data.config.max_items]


def _forecast_rule(items: Sequence[EvalItem]) -> list[str]:
    from eval.metrics import parse_numbers

    answers = []
    for item in items:
        values = parse_numbers(item.input.split("values:", 1)[-1].split("\n", 1)[0])
        level = float(np.mean(values[-FORECAST_HORIZON:])) if values else 0.0
        answers.append(" ".join([_num(level)] * FORECAST_HORIZON))
    return answers


# --- events ---------------------------------------------------------------------------------------

_ROUTINE = {"Scheduled", "Pulling", "Pulled", "Created", "Started", "ScalingReplicaSet", "SuccessfulCreate"}


def _event_text(row: Any) -> str:
    target = next((str(v) for v in (row.pod, row.service, row.node) if isinstance(v, str) and v), "-")
    return f"{row.kind} {row.reason} {target}: {str(row.message).split(chr(10), 1)[0][:200]}"


def _event_items(data: EvalData) -> list[EvalItem]:
    items: dict[str, EvalItem] = {}
    for sample in data.chaos():
        label = sample.label
        onset = pd.Timestamp(label.inject_time) - pd.Timedelta(minutes=2) if label.inject_time else None
        culprit = {label.service, label.pod, label.node} - {None}
        events = sample.table("events")
        after_onset = (events["timestamp"] >= onset if onset is not None
                       else pd.Series(True, index=events.index, dtype=bool))
        for row, recent in zip(events.itertuples(index=False), after_onset, strict=True):
            ours = bool({row.service, row.pod, row.node} & culprit) and recent
            text = _event_text(row)
            cause = label.fault_type if ours and row.reason not in _ROUTINE else "benign"
            items.setdefault(f"{row.reason}|{cause}|{sample.seed}", EvalItem(
                id=f"ev-{digest(text)[:10]}", input=text, references=(cause,),
                meta={"source": f"chaos:{sample.seed}", "split": "heldout"}))
    ordered = sorted(items.values(), key=lambda item: item.id)
    return balanced(ordered, lambda item: item.references[0], data.config.max_items)


_EVENT_RULES = (
    ("memory_leak", re.compile(r"OOM|out of memory|memory", re.IGNORECASE)),
    ("pod_crash_loop", re.compile(r"BackOff|CrashLoop|Unhealthy|exited", re.IGNORECASE)),
    ("node_failure", re.compile(r"NodeNotReady|TaintManager|NotReady|Evict", re.IGNORECASE)),
    ("bad_config", re.compile(r"ConfigMap|config", re.IGNORECASE)),
    ("certificate_expiry", re.compile(r"cert|tls|x509", re.IGNORECASE)),
    ("disk_io", re.compile(r"disk|volume|DiskPressure", re.IGNORECASE)),
    ("code_exception", re.compile(r"Deployed|rollout", re.IGNORECASE)),
)


def _event_rule(items: Sequence[EvalItem]) -> list[str]:
    return first_rule_match(_EVENT_RULES, items, "benign")


# --- the call graph -------------------------------------------------------------------------------


def _graph_text(edges: Sequence[tuple[str, str]]) -> str:
    return "calls:\n" + "\n".join(f"{a} -> {b}" for a, b in sorted(edges))


def _parse_edges(text: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b in re.findall(r"^(\S+) -> (\S+)$", text, re.MULTILINE)]


def _callers(edges: Sequence[tuple[str, str]], service: str) -> list[str]:
    up: dict[str, set[str]] = {}
    for a, b in edges:
        up.setdefault(b, set()).add(a)
    seen, queue = set(), deque([service])
    while queue:
        for caller in up.get(queue.popleft(), ()):
            if caller not in seen and caller != service:
                seen.add(caller)
                queue.append(caller)
    return sorted(seen)


def _shortest(edges: Sequence[tuple[str, str]], start: str, end: str) -> list[str]:
    down: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        down.setdefault(a, []).append(b)
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == end:
            path = [node]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for nxt in down.get(node, []):
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return []


def _topologies(data: EvalData) -> list[tuple[ChaosSample, list[tuple[str, str]]]]:
    seen, out = set(), []
    for sample in data.chaos():
        topology = sample.incident.topology
        edges = sorted({(str(a), str(b)) for a, b in topology.edges}) if topology is not None else []
        if edges and sample.system + str(edges[:3]) not in seen:
            seen.add(sample.system + str(edges[:3]))
            out.append((sample, edges))
    return out


def _blast_items(data: EvalData) -> list[EvalItem]:
    items = []
    for sample, edges in _topologies(data):
        callees = sorted({b for _, b in edges}, key=lambda s: digest(str(sample.seed), s))
        for service in callees[:4]:
            text = f"{_graph_text(edges)}\nfailing service: {service}"
            items.append(EvalItem(id=f"blast-{digest(text)[:10]}", input=text,
                                  references=("; ".join(_callers(edges, service)),),
                                  meta={"source": f"chaos:{sample.seed}", "split": "heldout"}))
    return sorted(items, key=lambda item: item.id)[: data.config.max_items]


def _blast_rule(items: Sequence[EvalItem]) -> list[str]:
    return ["; ".join(_callers(_parse_edges(item.input), item.input.rsplit("failing service: ", 1)[-1].strip()))
            for item in items]


def _path_items(data: EvalData) -> list[EvalItem]:
    items = []
    for sample, edges in _topologies(data):
        roots = sorted({a for a, _ in edges} - {b for _, b in edges})
        if not roots:
            continue
        targets = sorted({b for _, b in edges}, key=lambda s: digest(str(sample.seed), "path", s))
        for target in targets[:4]:
            path = _shortest(edges, roots[0], target)
            if len(path) < 3:
                continue
            text = f"{_graph_text(edges)}\nfrom: {roots[0]}\nto: {target}"
            items.append(EvalItem(id=f"path-{digest(text)[:10]}", input=text, references=(" > ".join(path),),
                                  meta={"source": f"chaos:{sample.seed}", "split": "heldout"}))
    return sorted(items, key=lambda item: item.id)[: data.config.max_items]


def _path_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        start = item.input.rsplit("from: ", 1)[-1].split("\n", 1)[0].strip()
        end = item.input.rsplit("to: ", 1)[-1].strip()
        answers.append(" > ".join(_shortest(_parse_edges(item.input), start, end)))
    return answers
