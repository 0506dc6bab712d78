"""Anomaly descriptions: the right numbers, and no number that is not in the finding."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd
import pytest

from flipmoe.toolkits.describe import (
    describe_findings,
    describe_metric,
    describe_service,
    describe_services,
    describe_trace,
    format_value,
    humanise_duration,
    infer_unit,
)
from flipmoe.toolkits.findings import (
    MetricAnomaly,
    MetricEvidence,
    MetricPattern,
    ServiceTraceSummary,
    SlowSpan,
    TraceAnomaly,
    TraceEvidence,
)
from flipmoe.toolkits.metrics import MetricReport
from flipmoe.toolkits.traces import TraceReport

START = pd.Timestamp("2023-01-29T08:43:10Z")
POD = "ts-order-service-5b67c48447-mv5hb"


def cpu_shift(**changes: object) -> MetricAnomaly:
    fields: dict[str, object] = dict(
        service="ts-order-service", pod=POD, node="node-7", metric="CpuUsageRate(%)", rate=False,
        pattern=MetricPattern.LEVEL_SHIFT_UP, detector="mad", start=START, end=START + pd.Timedelta("3min"),
        ongoing=False, points=3, runs=1, before=2.1, spread=0.4, level=76.0, peak_value=78.0,
        peak_time=START + pd.Timedelta("1min"), relative_change=(78.0 - 2.1) / 2.1, score=9.3,
        evidence=MetricEvidence(metric="CpuUsageRate(%)", service="ts-order-service", pod=POD, start=START,
                                end=START + pd.Timedelta("3min")))
    fields.update(changes)
    return MetricAnomaly(**fields)  # type: ignore[arg-type]


def slow_db() -> TraceAnomaly:
    return TraceAnomaly(
        kind="slow_operation", service="db", operation="query", score=12.5,
        path=("frontend:home", "orders:get", "db:query"), calls=40, affected=38,
        start=START, end=START + pd.Timedelta("90s"),
        evidence=TraceEvidence(trace_ids=("t17", "t4"), spans=(("t17", "c"), ("t4", "c")), start=START,
                               end=START + pd.Timedelta("90s")),
        baseline_p50_ms=10.0, p50_ms=210.0, baseline_self_p50_ms=9.5, self_p50_ms=208.0, timeouts=36,
        slow_spans=(SlowSpan(service="orders", operation="get", span_id="b", duration_ms=1866.0,
                             upper_ms=836.0, self_ms=12.0),
                    SlowSpan(service="db", operation="query", span_id="c", duration_ms=1788.0,
                             upper_ms=732.0, self_ms=1788.0)))


PATH = ("frontend:home", "orders:get", "db:query")


def error_origin() -> TraceAnomaly:
    end = START + pd.Timedelta("2min")
    return TraceAnomaly(
        kind="error_chain", service="db", operation="query", score=15.2, path=PATH, calls=20, affected=5,
        start=START, end=end,
        evidence=TraceEvidence(trace_ids=("e1",), spans=(("e1", "c"),), start=START, end=end),
        error_rate=0.25, baseline_error_rate=0.0, chain=PATH)


def missing_call() -> TraceAnomaly:
    end = START + pd.Timedelta("1min")
    return TraceAnomaly(
        kind="missing_call", service="db", operation="query", score=6.1, path=PATH, calls=20, affected=0,
        start=START, end=end,
        evidence=TraceEvidence(trace_ids=("s0",), spans=(("s0", "b"),), start=START, end=end),
        caller="orders:get", expected_calls=19.7)


def numbers_in(text: str, identifiers: tuple[str, ...]) -> list[float]:
    for name in sorted(identifiers, key=len, reverse=True):
        text = text.replace(name, " ")
    return [float(n) for n in re.findall(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?", text)]


def finding_numbers(finding: object) -> list[float]:
    """Every number a finding holds, including clock and calendar parts of its times and durations."""
    values: list[float] = []

    def add(value: object) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int | float):
            values.append(float(value))
        elif isinstance(value, pd.Timestamp):
            values.extend([value.year, value.month, value.day, value.hour, value.minute, value.second])
        elif isinstance(value, pd.Timedelta):
            seconds = value.total_seconds()
            values.extend([seconds, seconds / 60, seconds // 60, seconds % 60, seconds * 1000])
        elif isinstance(value, tuple):
            for item in value:
                add(item)
        elif dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                add(getattr(value, f.name))

    add(finding)
    for name in ("duration", "excess_ms"):
        if hasattr(finding, name):
            add(getattr(finding, name))
    for span in getattr(finding, "slow_spans", ()):
        add(span.excess_ms)
    for share in (getattr(finding, "relative_change", None), getattr(finding, "error_rate", None),
                  getattr(finding, "baseline_error_rate", None)):
        if share is not None:
            values.append(abs(share) * 100)
    return values


def assert_only_finding_numbers(text: str, finding: object, identifiers: tuple[str, ...]) -> None:
    allowed = finding_numbers(finding)
    for number in numbers_in(text, identifiers):
        assert any(number == pytest.approx(v, rel=5e-3, abs=5e-3) for v in allowed), f"{number} in {text!r}"


# -------------------------------------------------------------------------------------------- metrics


def test_brief_metric_description_reads_with_the_right_numbers() -> None:
    text = describe_metric(cpu_shift())
    assert text == (f"The CpuUsageRate(%) of ts-order-service (pod {POD}) rose from 2.1% to 78% (+3614%) at "
                    f"08:43:10 UTC, stayed high for 3 min and was back to normal by 08:46:10 "
                    f"(level shift up, score 9.3).")


def test_detailed_metric_description_adds_statistics() -> None:
    text = describe_metric(cpu_shift(), "detailed")
    assert "Normal: 2.1% ± 0.4%; mean during the anomaly 76%; most extreme 78% at 08:44:10" in text
    assert "3 anomalous samples in 1 run from 2023-01-29 08:43:10 to 08:46:10 UTC (3 min)" in text
    assert text.endswith("; detector mad.")


@pytest.mark.parametrize("finding", [
    cpu_shift(),
    cpu_shift(pattern=MetricPattern.SPIKE, points=1, end=START + pd.Timedelta("1min"), peak_time=START),
    cpu_shift(pattern=MetricPattern.SPIKE, runs=3, points=3, ongoing=True),
    cpu_shift(pattern=MetricPattern.TREND_DOWN, before=50.0, level=20.0, peak_value=12.5,
              relative_change=-0.75, ongoing=True),
    cpu_shift(pattern=MetricPattern.FLUCTUATION),
    cpu_shift(pattern=MetricPattern.DROP_TO_ZERO, peak_value=0.0, level=0.0, relative_change=-1.0),
    cpu_shift(pattern=MetricPattern.MISSING_DATA, level=None, peak_value=None, peak_time=None,
              relative_change=None, ongoing=True, detector="missing_data"),
    cpu_shift(metric="jvm_memory_bytes", before=1536.0 * 1024**2, peak_value=3 * 1024.0**3, spread=1024.0**2,
              level=2.5 * 1024.0**3, relative_change=1.0),
])
def test_descriptions_hold_no_number_that_is_not_in_the_finding(finding: MetricAnomaly) -> None:
    for detail in ("brief", "detailed"):
        text = describe_metric(finding, detail)  # type: ignore[arg-type]
        # Scaled byte values are renderings of the finding's values, so check them in their own unit.
        if finding.metric == "jvm_memory_bytes":
            assert "1.5 GiB" in text and "3 GiB" in text
            continue
        assert_only_finding_numbers(text, finding, (POD, finding.metric, "ts-order-service"))


def test_change_from_zero_is_not_a_percentage() -> None:
    text = describe_metric(cpu_shift(before=0.0, relative_change=None))
    assert "rose from 0% to 78% at" in text and "+" not in text


def test_counter_rate_and_missing_data_wording() -> None:
    rate = describe_metric(cpu_shift(metric="http_requests_total", rate=True, before=1.0, peak_value=10.0,
                                      relative_change=9.0))
    assert rate.startswith("The per-second rate of http_requests_total")
    assert "from 1/s to 10/s (+900%)" in rate
    missing = describe_metric(cpu_shift(pattern=MetricPattern.MISSING_DATA, level=None, peak_value=None,
                                        peak_time=None, relative_change=None, ongoing=True))
    assert "stopped reporting (normally 2.1%) at 08:43:10 UTC and had not resumed by 08:46:10" in missing


@pytest.mark.parametrize(("metric", "unit"), [
    ("CpuUsageRate(%)", "%"), ("NetworkP90(ms)", "ms"), ("latency_ms", "ms"), ("LatencyP99(s)", "s"),
    ("http_request_duration_seconds", "s"), ("MemoryUsage(Mi)", "MiB"), ("NetworkReceiveBytes", "bytes"),
    ("PodWorkload(Ops)", ""), ("cpu_percent", "%"),
])
def test_units_are_inferred_from_metric_names(metric: str, unit: str) -> None:
    assert infer_unit(metric) == unit


def test_values_and_durations_are_humanised() -> None:
    assert format_value(1536.0, "bytes") == "1.5 KiB"
    assert format_value(0.002457, "") == "0.00246"
    assert format_value(1788.4, "ms") == "1788 ms"
    assert format_value(78.0, "%") == "78%"
    durations = ("850ms", "45s", "3min", "150s", "3725s", "1D3h")
    assert [humanise_duration(pd.Timedelta(x)) for x in durations] == [
        "850 ms", "45 s", "3 min", "2 min 30 s", "1 h 2 min", "1 d 3 h"]


# --------------------------------------------------------------------------------------------- traces


def test_slow_operation_detailed_names_path_and_slow_nodes() -> None:
    finding = slow_db()
    brief = describe_trace(finding)
    assert brief.startswith(
        "db:query was slow in its own (exclusive) time between 08:43:10 and 08:44:40 UTC: "
        "median self time 208 ms (normally 9.5 ms), median duration 210 ms (normally 10 ms), "
        "38 of 40 calls over their self-time limit, 36 over their normal duration limit")
    detailed = describe_trace(finding, "detailed")
    assert "Call path: frontend:home -> orders:get -> db:query." in detailed
    assert "- orders:get: 1866 ms, exceeding the limit (836 ms) by 1030 ms; self time 12 ms" in detailed
    assert "- db:query: 1788 ms, exceeding the limit (732 ms) by 1056 ms; self time 1788 ms" in detailed
    assert "Example traces: t17, t4." in detailed
    assert_only_finding_numbers(detailed, finding, ("frontend:home", "orders:get", "db:query", "t17", "t4"))


def test_slow_node_within_its_limit_is_not_said_to_exceed_it() -> None:
    within = SlowSpan(service="db", operation="query", span_id="c", duration_ms=700.0, upper_ms=732.0,
                      self_ms=690.0)
    text = describe_trace(dataclasses.replace(slow_db(), slow_spans=(within,)), "detailed")
    assert "- db:query: 700 ms, within the limit (732 ms); self time 690 ms" in text


def test_error_chain_and_missing_call_descriptions() -> None:
    errors = describe_trace(error_origin(), "detailed")
    assert errors.startswith("Errors originated in db:query between 08:43:10 and 08:45:10 UTC: 5 of its 20 "
                             "calls failed there first, 25% (normally 0%) (score 15.2).")
    assert "Error chain: frontend:home -> orders:get -> db:query." in errors
    missing = describe_trace(missing_call())
    assert missing == ("Missing call between 08:43:10 and 08:44:10 UTC: orders:get (20 calls) made 0 calls "
                       "to db:query, where about 19.7 were expected from the reference (score 6.1).")
    for finding in (error_origin(), missing_call()):
        assert_only_finding_numbers(describe_trace(finding, "detailed"), finding, (*PATH, "e1", "s0"))


# --------------------------------------------------------------------------------- service, whole set


def summary_of(service: str) -> ServiceTraceSummary:
    return ServiceTraceSummary(service=service, requests=40, errors=10, error_rate=0.25, origin_errors=5,
                               baseline_error_rate=0.0, self_p50_ms=208.0, self_p95_ms=400.0,
                               baseline_self_p50_ms=9.5, baseline_self_p95_ms=12.0, latency_score=11.0,
                               error_score=15.2)


def test_service_summary_merges_findings_and_states_missing_modalities() -> None:
    text = describe_service("db", trace_anomalies=[slow_db(), error_origin()], summary=summary_of("db"),
                            has_metrics=False)
    assert text == ("db: No metric series for this service, so metrics could not be used. Traces: 40 spans, "
                    "error rate 25% (normally 0%), 5 errors starting here; self time p50 208 ms / p95 400 ms "
                    "(normally 9.5 ms / 12 ms); latency score 11, error score 15.2. Slow operation query "
                    "(score 12.5). Errors originate in query (score 15.2).")
    metrics_only = describe_service("ts-order-service", metric_anomalies=[cpu_shift()], has_metrics=True,
                                    has_spans=False)
    assert metrics_only == (f"ts-order-service: 1 metric anomaly: CpuUsageRate(%) ({POD}) level shift "
                            "up from 08:43:10 (score 9.3). No spans for this service during the incident, so "
                            "traces could not be used.")


def test_describe_findings_and_services_over_reports() -> None:
    metrics = MetricReport(anomalies=(cpu_shift(),), notes=("no metric baseline: x",), series=1,
                           services=("ts-order-service",), reference="x")
    traces = TraceReport(anomalies=(slow_db(),), services=(summary_of("db"),), notes=(), spans=40, traces=10,
                         reference="x")
    texts = describe_findings(metrics, traces)
    assert texts == [describe_metric(cpu_shift()), describe_trace(slow_db()),
                     "Note (metrics): no metric baseline: x"]
    assert describe_findings(None, None) == []
    services = describe_services(metrics, traces)
    # Both services top one ranking: ties go by name.
    assert [s.split(":")[0] for s in services] == ["db", "ts-order-service"]
    assert "No metric series" in services[0] and "No spans for this service" in services[1]
