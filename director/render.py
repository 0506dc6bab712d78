"""Render an `RcaReport` as `report.json`, `report.md` and a self-contained `report.html`.

The HTML file carries everything it shows: inline CSS, plots as inline base64 PNG (matplotlib's Agg
backend, no pyplot), no scripts, fonts or links to fetch. It can be mailed or attached to a ticket.
Three plots come from the incident when it is given:

- the metric series the top suspects' evidence names, with the incident window and each anomaly
  episode shaded and the alert time marked;
- the call graph (topology, else the spans' call edges) with the suspects highlighted;
- log-template counts before against during, from the report's log evidence references.

The page reads top-down: a summary card (top cause, fault type, confidence, onset, what to do next),
the plots, then each suspect's evidence with its references collapsed, then how the run went.
A plot whose data is missing is replaced by a note saying why. Everything from the telemetry (names,
log lines, summaries) is HTML-escaped; log lines can hold markup. `code spans` in prose become
<code>. Files are written atomically (a temporary file renamed into place), so a reader never sees half
a report, and readable as the umask allows.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from director.report import Evidence, RcaReport, RootCause
from flipmoe.telemetry.incident import Incident
from flipmoe.toolkits.index import build_index

_MAX_METRIC_PANELS = 4
_MAX_PODS_PER_PANEL = 4
_MAX_TEMPLATES = 8
_PLOTTED_SUSPECTS = 3
_TEMPLATE_LABEL_CHARS = 70
_DPI = 80
_NODE_GAP = 0.22
"""Arrows stop this far (in layer widths) from a service's centre, short of its label."""


@dataclass(frozen=True, kw_only=True)
class Plot:
    """A rendered figure (PNG bytes) or, when it could not be drawn, the reason."""

    title: str
    png: bytes | None = None
    note: str = ""


# ------------------------------------------------------------------------------------------ entry


def write_report(report: RcaReport, incident: Incident | None, out_dir: str | Path) -> dict[str, Path]:
    """Write `report.json`, `report.md` and `report.html` into `out_dir`; returns their paths by format."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checks = next_checks(report)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    _write_atomic(paths["json"], report.to_json() + "\n")
    _write_atomic(paths["md"], render_markdown(report, checks=checks))
    _write_atomic(paths["html"], render_html(report, incident, checks=checks))
    return paths


def next_checks(report: RcaReport) -> dict[int, list[str]]:
    """'What to check next' per root-cause rank, from the knowledge base's document of its fault type."""
    from director.agents.knowledge import what_to_check

    return {cause.rank: what_to_check(cause.fault_type) for cause in report.root_causes if cause.fault_type}


def _write_atomic(path: Path, text: str) -> None:
    # Created with mode 0666 less the umask, as any other file (mkstemp's 0600 would hide reports that a
    # web server or a colleague is meant to read).
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------- markdown


def _md(text: object) -> str:
    """Prose from telemetry, safe in Markdown: no raw HTML, no table breaks."""
    return (html.escape(str(text), quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " "))


def _code_span(text: object) -> str:
    value = str(text).replace("\n", " ")
    longest = max((len(part) for part in _backtick_runs(value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _backtick_runs(text: str) -> list[str]:
    runs, current = [], ""
    for char in text:
        if char == "`":
            current += char
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    return runs


def _code_block(text: str, language: str = "") -> str:
    longest = max((len(run) for run in _backtick_runs(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _reference(reference: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_short(value)}" for key, value in reference.items() if key != "type")


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _where(cause: RootCause) -> str:
    parts = [cause.service]
    if cause.pod:
        parts.append(f"pod {cause.pod}")
    if cause.node:
        parts.append(f"node {cause.node}")
    return " / ".join(parts)


def _fault(cause: RootCause) -> str:
    if not cause.fault_type:
        return "unknown"
    if cause.fault_type_confidence is None:
        return cause.fault_type
    return f"{cause.fault_type} ({cause.fault_type_confidence:.0%})"


def render_markdown(report: RcaReport, *, checks: dict[int, list[str]] | None = None) -> str:
    """`report.md`: readable in a terminal and on a code host."""
    checks = checks if checks is not None else next_checks(report)
    lines = [f"# RCA report: {_md(report.incident)}", "",
             f"**Alert:** {_md(report.alert)}  ",
             f"**Window:** {_md(report.window.get('start', '?'))} – {_md(report.window.get('end', '?'))}  ",
             f"**Modalities used:** {_md(', '.join(report.modalities_used) or 'none')}", "",
             "## Summary", "", _md(report.summary) or "_No summary._", ""]
    lines += ["## Root causes", ""]
    if report.root_causes:
        lines += ["| rank | service | pod | node | fault type | score | verified |",
                  "|---:|---|---|---|---|---:|---|"]
        for cause in report.root_causes:
            lines.append(f"| {cause.rank} | {_md(cause.service)} | {_md(cause.pod or '')} | {_md(cause.node or '')} "
                         f"| {_md(_fault(cause))} | {cause.score:.3f} | {_verified(cause)} |")
        lines.append("")
        for cause in report.root_causes:
            lines += [f"### {cause.rank}. {_md(_where(cause))}", ""]
            if cause.metric:
                lines.append(f"- Metric that moved most: {_code_span(cause.metric)}")
            if cause.log_pattern:
                lines.append(f"- Log pattern that changed most: {_code_span(cause.log_pattern)}")
            if cause.evidence:
                lines += ["", "Evidence:", ""]
                lines += [f"- **{_md(e.modality)} / {_md(e.role)}** (strength {e.strength:.2f}): {_md(e.summary)}"
                          + (f"  \n  {_code_span(_reference(e.reference))}" if e.reference else "")
                          for e in cause.evidence]
            else:
                lines += ["", "_No evidence recorded._"]
            if checks.get(cause.rank):
                lines += ["", f"What to check next ({_md(cause.fault_type)}):", ""]
                lines += [f"- {item}" for item in checks[cause.rank]]
            lines.append("")
    else:
        lines += ["_No root cause was found._", ""]
    if report.reasoning:
        lines += ["## Reasoning", ""] + [f"{i}. {_md(step)}" for i, step in enumerate(report.reasoning, 1)] + [""]
    lines += ["## Findings by modality", ""]
    if report.findings:
        for modality, findings in report.findings.items():
            lines += [f"### {_md(modality)}", ""]
            lines += [f"- {_md(f.summary)} (strength {f.strength:.2f})" for f in findings] or ["_None._"]
            lines.append("")
    else:
        lines += ["_No findings._", ""]
    lines += _markdown_runbook(report)
    lines += ["## Gaps", ""]
    lines += [f"- **{_md(g.what)}**: {_md(g.reason)}" for g in report.gaps] or ["_None: every step ran._"]
    lines.append("")
    if any(report.queries.values()):
        lines += ["## Queries", ""]
        for language, queries in report.queries.items():
            if queries:
                lines += [f"{_md(language)}:", "", _code_block("\n".join(queries), language.lower()), ""]
    if report.model:
        lines += ["## Model", "", _code_block(json.dumps(report.model, indent=2, default=str), "json"), ""]
    lines += ["## Timings", ""]
    if report.timings_s:
        lines += ["| stage | seconds |", "|---|---:|"]
        lines += [f"| {_md(stage)} | {seconds:.3f} |" for stage, seconds in report.timings_s.items()]
    else:
        lines.append("_Not recorded._")
    return "\n".join(lines).rstrip() + "\n"


def _verified(cause: RootCause) -> str:
    return {True: "yes", False: "no", None: "–"}[cause.verified]


def _markdown_runbook(report: RcaReport) -> list[str]:
    runbook = report.runbook
    lines = ["## Runbook", "", f"**{_md(runbook.name)}** from {_md(runbook.source)}, "
             f"{runbook.backtracks} back-track(s)", "", _code_block(runbook.text), "", "### Execution trace", ""]
    if runbook.steps:
        lines += ["| step | actor | status | start (s) | duration (s) | attempts | result |",
                  "|---|---|---|---:|---:|---:|---|"]
        for step in runbook.steps:
            result = step.summary + (f" error: {step.error}" if step.error else "")
            lines.append(f"| {_md(step.name)} | {_md(step.actor)} | {step.status} | {step.started_s:.3f} "
                         f"| {step.duration_s:.3f} | {step.attempts} | {_md(result)} |")
    else:
        lines.append("_No step ran._")
    if runbook.decisions:
        lines += ["", "### Decisions", ""]
        lines += [f"- {d.at_s:.3f} s, {d.kind}: {_md(d.detail)}" for d in runbook.decisions]
    lines.append("")
    return lines


# ------------------------------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:.2em 0}h2{border-bottom:2px solid #dde1e7;padding-bottom:4px;margin-top:1.6em}
.meta{color:#555}.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 16px;margin:12px 0}
.card.top{border-left:6px solid #d62728}.score{float:right;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.92em}
th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef0f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#1d2330;color:#e8eaef;padding:10px 12px;border-radius:6px;overflow-x:auto;white-space:pre-wrap}
code{background:#eef0f4;padding:0 3px;border-radius:3px;word-break:break-all}
.note{color:#7a5b00;background:#fff8e1;border:1px solid #f2dc9b;border-radius:6px;padding:6px 10px}
.status-ok{color:#1a7f37}.status-failed,.status-timeout{color:#cf222e}.status-no-evidence,.status-skipped{color:#9a6700}
figure{margin:12px 0;background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:8px}
figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}
.summary{border-left:6px solid #d62728}.summary h2{border:0;margin-top:.2em}
.summary dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:8px 0}
.summary dt{color:#555}.summary dd{margin:0}
details.ref summary{cursor:pointer;color:#3a5a99}table.kv{margin-top:4px;font-size:.95em}
table.kv th{width:1%;white-space:nowrap}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_html(report: RcaReport, incident: Incident | None, *,
                checks: dict[int, list[str]] | None = None) -> str:
    """`report.html`: one self-contained file (no external CSS, scripts, fonts or images).

    It reads top-down: the answer first (a summary card), then the pictures that support it (the
    timeline of the anomalous metrics, the call graph, the log templates), then the evidence behind
    each suspect, then how the run went (reasoning, runbook, gaps, queries, timings).
    """
    checks = checks if checks is not None else next_checks(report)
    parts = [f"<h1>RCA report: {_e(report.incident)}</h1>",
             f"<p class='meta'><b>Alert:</b> {_e(report.alert)}<br><b>Window:</b> "
             f"{_e(report.window.get('start', '?'))} – {_e(report.window.get('end', '?'))}<br>"
             f"<b>Modalities used:</b> {_e(', '.join(report.modalities_used) or 'none')}</p>",
             _html_summary(report, checks.get(1, [])),
             "<h2 id='timeline'>Timeline and call graph</h2>"]
    parts += [_html_plot(plot) for plot in report_plots(report, incident)]
    parts.append("<h2 id='evidence'>Root causes and evidence</h2>")
    if not report.root_causes:
        parts.append("<p class='note'>No root cause was found.</p>")
    for cause in report.root_causes:
        parts.append(_html_cause(cause, checks.get(cause.rank, [])))
    if report.reasoning:
        parts.append("<h2>Reasoning</h2><ol>" + "".join(f"<li>{_prose(s)}</li>" for s in report.reasoning) + "</ol>")
    parts.append("<h2>Findings by modality</h2>")
    if report.findings:
        for modality, findings in report.findings.items():
            parts.append(f"<h3>{_e(modality)}</h3><ul>" + "".join(
                f"<li>{_prose(f.summary)} <span class='meta'>(strength {f.strength:.2f})</span>"
                f"{_html_reference(f.reference)}</li>" for f in findings) + "</ul>")
    else:
        parts.append("<p><i>No findings.</i></p>")
    parts += _html_runbook(report)
    parts.append("<h2>Gaps</h2>")
    parts.append("<ul>" + "".join(f"<li><b>{_e(g.what)}</b>: {_prose(g.reason)}</li>" for g in report.gaps) + "</ul>"
                 if report.gaps else "<p><i>None: every step ran.</i></p>")
    if any(report.queries.values()):
        parts.append("<h2>Queries</h2>")
        for language, queries in report.queries.items():
            if queries:
                parts.append(f"<h3>{_e(language)}</h3><pre>{_e(chr(10).join(queries))}</pre>")
    if report.model:
        parts.append(f"<h2>Model</h2><pre>{_e(json.dumps(report.model, indent=2, default=str))}</pre>")
    parts.append("<h2>Timings</h2>")
    parts.append(_table(["stage", "seconds"], [[_e(k), f"{v:.3f}"] for k, v in report.timings_s.items()],
                        numeric={1}) if report.timings_s else "<p><i>Not recorded.</i></p>")
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>RCA report: {_e(report.incident)}</title><style>{_CSS}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def onset(cause: RootCause) -> str | None:
    """When the trouble began at a suspect: the earliest start its evidence names (ISO-8601), if any."""
    starts = []
    for evidence in cause.evidence:
        try:
            start = pd.Timestamp(evidence.reference["start"])
        except (KeyError, TypeError, ValueError):
            continue
        if start.tzinfo is not None:
            starts.append(start)
    return min(starts).isoformat() if starts else None


def _html_summary(report: RcaReport, checks: list[str]) -> str:
    """The answer in one card: top cause, fault type, confidence, onset and what to do next."""
    card = ["<section class='card summary' id='summary'><h2>Summary</h2>",
            f"<p>{_prose(report.summary) or '<i>No summary.</i>'}</p>"]
    if not report.root_causes:
        card.append("<p class='note'>No root cause was found.</p></section>")
        return "".join(card)
    top = report.root_causes[0]
    confidence = "–" if top.fault_type_confidence is None else f"{top.fault_type_confidence:.0%}"
    facts = [("Top cause", f"<b>{_e(_where(top))}</b> <span class='meta'>(score {top.score:.3f})</span>"),
             ("Fault type", _e(top.fault_type or "unknown")),
             ("Confidence", confidence),
             ("Onset", _e(onset(top) or "not determined")),
             ("Verified", _verified(top))]
    card.append("<dl>" + "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts) + "</dl>")
    if checks:
        card.append("<p><b>What to do next:</b></p><ol>" + "".join(f"<li>{_prose(c)}</li>" for c in checks)
                    + "</ol>")
    card.append("</section>")
    return "".join(card)


def _html_cause(cause: RootCause, checks: list[str]) -> str:
    head = (f"<div class='card{' top' if cause.rank == 1 else ''}'><span class='score'>score {cause.score:.3f}</span>"
            f"<h3>{cause.rank}. {_e(cause.service)}</h3><p>")
    facts = []
    for label, value in (("pod", cause.pod), ("node", cause.node), ("fault type", _fault(cause)),
                         ("metric", cause.metric), ("log pattern", cause.log_pattern),
                         ("verified", _verified(cause))):
        if value:
            facts.append(f"<b>{label}:</b> <code>{_e(value)}</code>")
    rows = [[_e(e.modality), _e(e.role), f"{e.strength:.2f}", _prose(e.summary), _html_reference(e.reference)]
            for e in cause.evidence]
    evidence = _table(["modality", "role", "strength", "summary", "reference"], rows, numeric={2}) \
        if rows else "<p><i>No evidence recorded.</i></p>"
    check_list = ("<p><b>What to check next:</b></p><ul>" + "".join(f"<li>{_prose(c)}</li>" for c in checks)
                  + "</ul>" if checks else "")
    return head + "<br>".join(facts) + "</p>" + evidence + check_list + "</div>"


def _html_reference(reference: dict[str, Any]) -> str:
    """An evidence reference, collapsed: its kind as the summary line, then one row per field."""
    fields = [(key, value) for key, value in reference.items() if key != "type"]
    if not fields:
        return ""
    kind = reference.get("type") or ", ".join(key for key, _ in fields[:3])
    rows = "".join(f"<tr><th>{_e(key)}</th><td><code>{_e(_short(value, 300))}</code></td></tr>"
                   for key, value in fields)
    return f"<details class='ref'><summary>{_e(kind)}</summary><table class='kv'>{rows}</table></details>"


_CODE_SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)")


def _prose(text: object) -> str:
    """Text from the analysis or the telemetry as HTML: escaped, with its `code spans` as <code>."""
    # Escaping first leaves backticks alone and makes the span's content safe to wrap.
    return _CODE_SPAN.sub(lambda m: f"<code>{m.group(2).strip()}</code>", _e(text))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: set[int] | frozenset[int] = frozenset()
           ) -> str:
    """An HTML table; cells must already be escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_runbook(report: RcaReport) -> list[str]:
    runbook = report.runbook
    parts = ["<h2>Runbook</h2>",
             f"<p><b>{_e(runbook.name)}</b> from <code>{_e(runbook.source)}</code>, "
             f"{runbook.backtracks} back-track(s)</p>",
             f"<pre>{_e(runbook.text)}</pre>", "<h3>Execution trace</h3>"]
    rows = [[_e(s.name), _e(s.actor), f"<span class='status-{_e(s.status)}'>{_e(s.status)}</span>",
             f"{s.started_s:.3f}", f"{s.duration_s:.3f}", str(s.attempts),
             _prose(s.summary) + (f"<br><b>error:</b> {_prose(s.error)}" if s.error else "")] for s in runbook.steps]
    parts.append(_table(["step", "actor", "status", "start (s)", "duration (s)", "attempts", "result"], rows,
                        numeric={3, 4, 5}) if rows else "<p><i>No step ran.</i></p>")
    if runbook.decisions:
        parts.append("<h3>Decisions</h3>")
        parts.append(_table(["at (s)", "kind", "detail"],
                            [[f"{d.at_s:.3f}", _e(d.kind), _prose(d.detail)] for d in runbook.decisions], numeric={0}))
    return parts


def _html_plot(plot: Plot) -> str:
    if plot.png is None:
        return f"<figure><figcaption>{_e(plot.title)}</figcaption><p class='note'>{_e(plot.note)}</p></figure>"
    data = base64.b64encode(plot.png).decode("ascii")
    return (f"<figure><img alt='{_e(plot.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(plot.title)}{(' — ' + _e(plot.note)) if plot.note else ''}</figcaption></figure>")


# ------------------------------------------------------------------------------------------ plots


def report_plots(report: RcaReport, incident: Incident | None) -> list[Plot]:
    """The report's three plots, each drawn or replaced by a note saying why not."""
    if incident is None:
        reason = "the incident's telemetry was not available to the renderer"
        return [Plot(title=title, note=reason) for title in
                ("Anomalous metrics of the top suspects", "Call graph", "Log templates before and during")]
    return [metric_plot(report, incident), call_graph_plot(report, incident), log_template_plot(report)]


@dataclass(frozen=True)
class _Series:
    service: str
    pod: str | None
    metric: str
    episode: tuple[pd.Timestamp, pd.Timestamp] | None


def _metric_series(report: RcaReport) -> list[_Series]:
    """The metric series the top suspects point at: their evidence references, then their `metric`."""
    chosen: dict[tuple[str, str | None, str], _Series] = {}
    for cause in report.root_causes[:_PLOTTED_SUSPECTS]:
        for evidence in sorted(cause.evidence, key=lambda e: -e.strength):
            ref = evidence.reference
            if evidence.modality != "metrics" or not isinstance(ref.get("metric"), str):
                continue
            key = (str(ref.get("service") or cause.service), ref.get("pod") or None, ref["metric"])
            chosen.setdefault(key, _Series(*key, _episode(ref)))
        if cause.metric:
            key = (cause.service, cause.pod, cause.metric)
            if not any(k[0] == key[0] and k[2] == key[2] for k in chosen):
                chosen[key] = _Series(*key, None)
    return list(chosen.values())[:_MAX_METRIC_PANELS]


def _episode(reference: dict[str, Any]) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    try:
        start, end = pd.Timestamp(reference["start"]), pd.Timestamp(reference["end"])
    except (KeyError, TypeError, ValueError):
        return None
    if start.tzinfo is None or end.tzinfo is None or not start <= end:
        return None
    return start, end


def _figure(width: float, height: float) -> Any:
    # No pyplot (global state, slow import) and no automatic layout (it draws the figure twice):
    # margins are set per plot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def metric_plot(report: RcaReport, incident: Incident) -> Plot:
    title = "Anomalous metrics of the top suspects"
    metrics = incident.metrics
    if metrics is None:
        return Plot(title=title, note="the incident has no metrics")
    series = _metric_series(report)
    if not series:
        return Plot(title=title, note="the top suspects' evidence names no metric")
    panels = []
    for one in series:
        rows = metrics[(metrics["metric"] == one.metric) & (metrics["service"] == one.service)]
        if one.pod is not None and (rows["pod"] == one.pod).any():
            rows = rows[rows["pod"] == one.pod]
        if len(rows):
            panels.append((one, rows))
    if not panels:
        return Plot(title=title, note="the metrics the evidence names are not in the incident's metrics table")
    window = incident.meta.window
    origin = window.start
    height = 1.9 * len(panels) + 0.7
    figure = _figure(9.0, height)
    figure.subplots_adjust(left=0.08, right=0.98, top=1 - 0.35 / height, bottom=0.55 / height, hspace=0.45)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (one, rows) in zip(axes, panels, strict=True):
        pods = rows["pod"].fillna("").unique()[:_MAX_PODS_PER_PANEL]
        for pod in pods:
            line = rows[rows["pod"].fillna("") == pod].sort_values("timestamp")
            ax.plot(_minutes(line["timestamp"], origin), line["value"].to_numpy(), linewidth=1.2,
                    label=pod or one.service)
        ax.axvspan(0.0, _minutes1(window.end, origin), color="#4c72b0", alpha=0.06)
        if one.episode is not None:
            ax.axvspan(_minutes1(one.episode[0], origin), _minutes1(one.episode[1], origin), color="#d62728",
                       alpha=0.18)
        if incident.meta.alert_time is not None:
            ax.axvline(_minutes1(incident.meta.alert_time, origin), color="#d62728", linestyle="--", linewidth=1)
        where = f"{one.service} / {pods[0]}" if len(pods) == 1 and pods[0] else one.service
        ax.set_title(f"{one.metric} — {where}", fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
        ax.locator_params(axis="y", nbins=4)  # every tick is a text to lay out: fewer draw faster
        ax.grid(alpha=0.3)
        if len(pods) > 1:
            ax.legend(fontsize=7, loc="upper left", framealpha=0.7)
    # Minutes from the window start read faster in an incident than wall-clock ticks (and draw faster).
    axes[-1].set_xlabel(f"minutes after the window start ({_clock(origin)} UTC)", fontsize=8)
    return Plot(title=title, png=_png(figure),
                note="blue: the incident window; red: the anomaly episode the evidence names; dashed: the alert")


def _minutes(times: pd.Series, origin: pd.Timestamp) -> Any:
    return ((times - origin) / pd.Timedelta(minutes=1)).to_numpy(dtype=float)


def _minutes1(ts: pd.Timestamp, origin: pd.Timestamp) -> float:
    return float((ts - origin) / pd.Timedelta(minutes=1))


def _clock(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S")


def _edges(report: RcaReport, incident: Incident) -> list[tuple[str, str]]:
    """The call graph the ranking walked (in the report), else the incident's."""
    if report.call_graph:
        return [(a, b) for a, b in report.call_graph]
    return list(build_index(incident).call_edges)


def _layers(services: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Depth of each service: longest call chain from an entry service (cycles cut at first revisit)."""
    callees: dict[str, list[str]] = defaultdict(list)
    has_caller = set()
    for a, b in edges:
        callees[a].append(b)
        has_caller.add(b)
    depth = {s: 0 for s in services}
    roots = [s for s in services if s not in has_caller] or list(services[:1])
    for root in roots:
        stack = [(root, 0, frozenset([root]))]
        while stack:
            node, d, path = stack.pop()
            depth[node] = max(depth[node], d)
            stack.extend((c, d + 1, path | {c}) for c in callees[node] if c not in path and depth.get(c, 0) <= d)
    return depth


def call_graph_plot(report: RcaReport, incident: Incident) -> Plot:
    title = "Call graph"
    edges = _edges(report, incident)
    services = sorted({s for e in edges for s in e} | {c.service for c in report.root_causes})
    if not edges:
        return Plot(title=title, note="no topology and no spans: the call graph is unknown")
    depth = _layers(services, edges)
    columns: dict[int, list[str]] = defaultdict(list)
    for service in services:
        columns[depth[service]].append(service)
    position: dict[str, tuple[float, float]] = {}
    callers: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        callers[b].append(a)
    for d in sorted(columns):
        # Order a layer by where its callers sit (barycentre heuristic): fewer crossing arrows.
        def barycentre(service: str) -> tuple[float, str]:
            ys = [position[c][1] for c in callers[service] if c in position]
            return (-sum(ys) / len(ys) if ys else 0.0, service)

        members = sorted(columns[d], key=barycentre)
        for i, service in enumerate(members):
            position[service] = (float(d), -(i - (len(members) - 1) / 2))
    rank = {c.service: c.rank for c in reversed(report.root_causes)}
    tallest = max(len(m) for m in columns.values())
    figure = _figure(max(6.0, 2.6 * len(columns)), max(3.0, 0.55 * tallest + 1.0))
    figure.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.01)
    ax = figure.subplots()
    suspects = {c.service for c in report.root_causes[:_PLOTTED_SUSPECTS]}
    # One quiver for all arrows: a FancyArrowPatch per edge costs ~10 ms each to draw.
    for near_suspect, color, width in ((False, "#9aa0a6", 0.0012), (True, "#444", 0.0022)):
        chosen = [(a, b) for a, b in edges if (a in suspects or b in suspects) == near_suspect]
        if not chosen:
            continue
        start = np.array([position[a] for a, _ in chosen])
        delta = np.array([position[b] for _, b in chosen]) - start
        length = np.hypot(delta[:, 0], delta[:, 1])[:, None]
        unit = delta / np.maximum(length, 1e-9)
        start = start + unit * _NODE_GAP
        delta = delta - unit * 2 * _NODE_GAP
        ax.quiver(start[:, 0], start[:, 1], delta[:, 0], delta[:, 1], angles="xy", scale_units="xy", scale=1,
                  color=color, width=width, headwidth=5, headlength=6, zorder=1)
    for service, (x, y) in position.items():
        r = rank.get(service)
        color = "#d62728" if r == 1 else "#ff9f40" if r is not None and r <= _PLOTTED_SUSPECTS else "#e8eaef"
        label = f"#{r} {service}" if r is not None and r <= _PLOTTED_SUSPECTS else service
        ax.text(x, y, label, ha="center", va="center", fontsize=8, color="white" if r == 1 else "#1d2330", zorder=2,
                bbox={"boxstyle": "round,pad=0.35", "fc": color, "ec": "#555" if r else "#aaa"})
    xs = [p[0] for p in position.values()]
    ys = [p[1] for p in position.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.axis("off")
    top = report.root_causes[0].service if report.root_causes else None
    note = f"callers on the left; red: the most likely root cause ({top})" if top else "callers on the left"
    return Plot(title=title, png=_png(figure), note=note)


def _log_evidence(report: RcaReport) -> list[tuple[str, str, float, float, str]]:
    """(service, template, before, during, unit) from every log reference with counts, strongest first."""
    items: list[tuple[float, Evidence | Any, str]] = []
    for cause in report.root_causes:
        items += [(e.strength, e, cause.service) for e in cause.evidence if e.modality == "logs"]
    for finding in report.findings.get("logs", []):
        items.append((finding.strength, finding, str(finding.reference.get("service", ""))))
    seen: set[tuple[str, str]] = set()
    rows = []
    for _, item, service in sorted(items, key=lambda t: -t[0]):
        ref = item.reference
        if "template" not in ref:
            continue
        rate = "rate_before" in ref and "rate_during" in ref
        before, during = (ref.get("rate_before"), ref.get("rate_during")) if rate else \
            (ref.get("count_before"), ref.get("count_during"))
        if not isinstance(before, int | float) or not isinstance(during, int | float):
            continue
        key = (service, str(ref["template"]))
        if key not in seen:
            seen.add(key)
            rows.append((service, str(ref["template"]), float(before), float(during),
                         "lines per minute" if rate else "lines"))
    return rows[:_MAX_TEMPLATES]


def log_template_plot(report: RcaReport) -> Plot:
    title = "Log templates before and during"
    rows = _log_evidence(report)
    if not rows:
        return Plot(title=title, note="the report holds no log-template evidence with counts")
    height = 0.4 * len(rows) + 1.0
    figure = _figure(10.0, height)
    figure.subplots_adjust(left=0.45, right=0.98, top=1 - 0.15 / height, bottom=0.5 / height)
    ax = figure.subplots()
    ys = list(range(len(rows)))[::-1]
    height = 0.38
    ax.barh([y + height / 2 for y in ys], [r[2] for r in rows], height=height, color="#8da0cb", label="before")
    ax.barh([y - height / 2 for y in ys], [r[3] for r in rows], height=height, color="#d62728", label="during")
    ax.set_yticks(ys, [_label(f"{r[0]}: {r[1]}") for r in rows], fontsize=7)
    units = {r[4] for r in rows}
    ax.set_xlabel(units.pop() if len(units) == 1 else "lines (per minute where known)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return Plot(title=title, png=_png(figure), note="before: the reference (baseline or pre-alert lines)")


def _label(text: str) -> str:
    # matplotlib reads $...$ as math text: a log line with two dollars would not render literally.
    text = text.replace("$", r"\$")
    return text if len(text) <= _TEMPLATE_LABEL_CHARS else text[:_TEMPLATE_LABEL_CHARS - 1] + "…"
