"""Report rendering: report.json / .md / self-contained .html with plots, escaping, missing modalities."""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import tiny_incident

from data_pipeline.chaos import generate_incident
from director.render import log_template_plot, render_html, render_markdown, report_plots, write_report
from director.report import (
    Decision,
    Evidence,
    Finding,
    Gap,
    RcaReport,
    RootCause,
    RunbookRecord,
    StepRecord,
)
from flipmoe.telemetry import Incident, Telemetry

XSS = "<script>alert('pwned')</script>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def incident() -> Incident:
    incident, _ = generate_incident("webshop", "cpu_hog", seed=11)
    return incident


def _report(incident: Incident) -> RcaReport:
    metrics = incident.metrics
    assert metrics is not None
    pod = str(metrics["pod"].iloc[0])
    service = str(metrics.loc[metrics["pod"] == pod, "service"].iloc[0])
    node = str(metrics.loc[metrics["pod"] == pod, "node"].iloc[0])
    window = incident.meta.window.to_json()
    start = (incident.meta.window.start + (incident.meta.window.end - incident.meta.window.start) / 3)
    metric_ref = {"type": "metric", "metric": "container_cpu_usage_seconds_total:rate1m", "service": service,
                  "pod": pod, "start": start.isoformat(), "end": window["end"]}
    log_ref = {"type": "log", "kind": "new_template", "template": f"user said {XSS} | <*>", "count_before": 0,
               "count_during": 42, "example": f"user said {XSS} | 7"}
    callee = incident.topology.callees(service) if incident.topology else []
    second = callee[0] if callee else "frontend"
    return RcaReport(
        incident=incident.id, alert=incident.meta.alert, window=window,
        root_causes=[
            RootCause(rank=1, service=service, pod=pod, node=node, metric="container_cpu_usage_seconds_total:rate1m",
                      log_pattern=log_ref["template"], fault_type="cpu_hog", fault_type_confidence=0.81, score=0.92,
                      verified=True, evidence=[
                          Evidence(modality="metrics", role="anomaly", summary="CPU usage jumped to its limit",
                                   strength=4.2, reference=metric_ref),
                          Evidence(modality="logs", role="new-template", summary=f"new log line {XSS}",
                                   strength=2.0, reference=log_ref)]),
            RootCause(rank=2, service=second, score=0.31, evidence=[
                Evidence(modality="traces", role="slow-span", summary="slower calls", strength=1.1,
                         reference={"trace_id": "abc", "span_id": "def"})]),
        ],
        summary=f"{service} burns CPU; the log shows {XSS}.",
        reasoning=["CPU rose first at the suspect", "callers' latency followed"],
        findings={"logs": [Finding(modality="logs", summary=f"ERROR burst {XSS}", strength=1.5,
                                   reference={"service": second, "template": "timeout calling <*>",
                                              "count_before": 3, "count_during": 30})],
                  "metrics": [Finding(modality="metrics", summary="CPU up", strength=4.2)]},
        modalities_used=["metrics", "logs", "traces"],
        runbook=RunbookRecord(name="latency-triage", source="knowledge-base:latency",
                              text="runbook latency {\n  step triage: triage()\n  # ``` fenced?\n}\n",
                              steps=[StepRecord(name="triage", actor="triage", status="ok", started_s=0.0,
                                                duration_s=0.12),
                                     StepRecord(name="verify", actor="verify", status="failed", started_s=0.2,
                                                duration_s=0.3, attempts=2, error=f"boom {XSS}")],
                              decisions=[Decision(at_s=0.5, kind="backtrack", detail="no evidence for db")],
                              backtracks=1),
        gaps=[Gap(what="events", reason="the events actor timed out")],
        queries={"promql": [f'rate(container_cpu_usage_seconds_total{{pod="{pod}"}}[5m])'],
                 "logql": ['{service="x"} |= "<b>"']},
        model={"bundle": "nano"}, timings_s={"analysis": 1.2, "total": 1.9})


def test_writes_three_files_atomically(incident: Incident, tmp_path: Path) -> None:
    report = _report(incident)
    paths = write_report(report, incident, tmp_path / "out")
    assert set(paths) == {"json", "md", "html"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json", "report.md"]
    assert RcaReport.model_validate_json(paths["json"].read_text()) == report
    write_report(report, incident, tmp_path / "out")  # overwriting leaves no temporary files behind
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_markdown_has_every_section_and_escapes_telemetry(incident: Incident) -> None:
    report = _report(incident)
    md = render_markdown(report)
    for heading in ("# RCA report", "## Summary", "## Root causes", "### 1. ", "## Reasoning",
                    "## Findings by modality", "## Runbook", "### Execution trace", "### Decisions", "## Gaps",
                    "## Queries", "## Timings", "What to check next (cpu_hog)"):
        assert heading in md, heading
    # Markdown shows code literally; everywhere else raw HTML from telemetry must be escaped.
    prose = re.sub(r"(`{3,})[^\n]*\n.*?\n\1", "", md, flags=re.DOTALL)
    prose = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", prose)
    assert "<script" not in prose and "&lt;script&gt;" in prose
    assert f"`user said {XSS} | <*>`" in md
    assert "| cpu_hog (81%) |" in md and "| 0.920 | yes |" in md
    # The runbook text holds ``` so its fence must be longer.
    assert "````\nrunbook latency {" in md


def test_html_is_self_contained_with_three_inline_plots(incident: Incident) -> None:
    page = render_html(_report(incident), incident)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|@import|url\(|src=['\"]http|href=['\"]http", page, re.IGNORECASE)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(image).startswith(PNG_MAGIC) for image in images)
    for text in ("What to check next", "latency-triage", "no evidence for db", "the events actor timed out",
                 "status-failed", "rate(container_cpu_usage_seconds_total"):
        assert text in page, text


def test_html_escapes_everything_from_telemetry(incident: Incident) -> None:
    page = render_html(_report(incident), incident)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;" in page  # inside a query


def test_log_template_plot_uses_counts_from_evidence_and_findings(incident: Incident) -> None:
    plot = log_template_plot(_report(incident))
    assert plot.png is not None and plot.png.startswith(PNG_MAGIC)


def test_missing_modalities_give_notes_not_failures(incident: Incident, tmp_path: Path) -> None:
    report = _report(incident)
    bare = replace(incident, telemetry=Telemetry(logs=incident.logs), topology=None, baseline=None)
    plots = report_plots(report, bare)
    assert [p.png is None for p in plots] == [True, True, False]
    assert "no metrics" in plots[0].note and "call graph is unknown" in plots[1].note
    page = render_html(report, bare)
    assert "the incident has no metrics" in page and page.count("data:image/png") == 1
    no_incident = write_report(report, None, tmp_path / "none")
    assert "not available to the renderer" in no_incident["html"].read_text()


def test_an_empty_report_still_renders(tmp_path: Path) -> None:
    incident = tiny_incident()
    report = RcaReport(incident="tiny", alert="a", window=incident.meta.window.to_json(), root_causes=[],
                       summary="", runbook=RunbookRecord(name="r", source="generated:test", text=""))
    paths = write_report(report, incident, tmp_path)
    md = paths["md"].read_text()
    assert "_No root cause was found._" in md and "_No step ran._" in md
    page = paths["html"].read_text()
    assert "No root cause was found" in page and "the top suspects&#x27; evidence names no metric" in page
    assert json.loads(paths["json"].read_text())["root_causes"] == []


def test_html_reads_top_down_summary_then_plots_then_evidence(incident: Incident) -> None:
    report = _report(incident)
    page = render_html(report, incident)
    summary = page.index("id='summary'")
    plots = page.index("<figure>")
    evidence = page.index("id='evidence'")
    first_table = page.index("<table")
    assert page.index("<h1>") < summary < plots < evidence < first_table < page.index("<h2>Reasoning")
    card = page[summary:page.index("</section>", summary)]
    top = report.root_causes[0]
    for fact in (f"{top.service} / pod {top.pod} / node {top.node}", "cpu_hog", "81%",
                 "What to do next", top.evidence[0].reference["start"]):
        assert fact in card, fact
    # The three plots come before any evidence table: the call graph no longer sits below them.
    assert page.rindex("<figure>") < evidence


def test_evidence_references_are_collapsed_key_value_rows(incident: Incident) -> None:
    page = render_html(_report(incident), incident)
    assert "<details class='ref'><summary>metric</summary>" in page
    assert "<tr><th>metric</th><td><code>container_cpu_usage_seconds_total:rate1m</code></td></tr>" in page
    assert "metric=container_cpu_usage_seconds_total" not in page  # no raw key=value text any more
    # Telemetry inside a reference stays escaped in its collapsed table.
    assert "<tr><th>template</th><td><code>user said &lt;script&gt;" in page


def test_code_spans_become_code_elements_and_stay_escaped(incident: Incident) -> None:
    report = _report(incident).model_copy(update={
        "summary": "CPU rose: check `rate(container_cpu_usage_seconds_total[5m])` and `<script>x</script>`.",
        "reasoning": ["the query ``sum by (pod) (rate(x[1m]))`` moved first", "an `unclosed span stays text"]})
    page = render_html(report, incident)
    assert "<code>rate(container_cpu_usage_seconds_total[5m])</code>" in page
    assert "<code>&lt;script&gt;x&lt;/script&gt;</code>" in page and "<script" not in page.lower()
    assert "<code>sum by (pod) (rate(x[1m]))</code>" in page
    assert "an `unclosed span stays text" in page
    prose = re.sub(r"<pre>.*?</pre>", "", page, flags=re.DOTALL)
    assert "`rate(" not in prose and "``sum" not in prose


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_report_files_are_readable_as_the_umask_allows(incident: Incident, tmp_path: Path, umask: int,
                                                       mode: int) -> None:
    previous = os.umask(umask)
    try:
        paths = write_report(_report(incident), None, tmp_path / "out")
    finally:
        os.umask(previous)
    assert {name: path.stat().st_mode & 0o777 for name, path in paths.items()} == dict.fromkeys(paths, mode)
