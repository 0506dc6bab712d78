"""Trace analysis on hand-built call trees with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flipmoe.telemetry.incident import Incident, IncidentMeta, Telemetry, TimeWindow
from flipmoe.toolkits.findings import to_json
from flipmoe.toolkits.traces import (
    TraceToolkitConfig,
    analyse_traces,
    depths,
    exclusive_time,
    resolve_parents,
)

T0 = pd.Timestamp("2024-03-01T08:00:00Z")
ALERT = T0 + pd.Timedelta("10min")
END = T0 + pd.Timedelta("20min")

Span = tuple[str, str, str | None, str, str, float, float, str]
"""(trace_id, span_id, parent_span_id, service, operation, start offset ms, duration ms, status)."""


def spans_frame(spans: list[Span], *, origin: pd.Timestamp = T0) -> pd.DataFrame:
    frame = pd.DataFrame(spans, columns=["trace_id", "span_id", "parent_span_id", "service", "operation",
                                         "start", "duration", "status"])
    frame["pod"] = frame["service"] + "-0"
    frame["start"] = origin + pd.to_timedelta(frame["start"], unit="ms")
    return frame


def chain_trace(trace: str, at_ms: float, *, leaf_ms: float = 10.0, error: bool = False,
                call_c: bool = True, call_d: bool = False) -> list[Span]:
    """frontend:home -> orders:get -> (db:query, optional cache:get) with 1 ms of own work per hop."""
    leaf = "error" if error else "ok"
    status = "error" if error else "ok"
    spans: list[Span] = [
        (trace, "a", None, "frontend", "home", at_ms, leaf_ms + 4, status),
        (trace, "b", "a", "orders", "get", at_ms + 1, leaf_ms + 2, status),
    ]
    if call_c:
        spans.append((trace, "c", "b", "db", "query", at_ms + 2, leaf_ms, leaf))
    if call_d:
        spans.append((trace, "d", "b", "cache", "get", at_ms + 2, 1.0, "ok"))
    return spans


def jitter(i: int) -> float:
    return float(i % 3) - 1.0  # -1, 0, +1 ms: a small deterministic spread


def incident_of(normal: list[Span], during: list[Span], *, baseline: bool = True,
                alert: pd.Timestamp | None = ALERT) -> Incident:
    meta = IncidentMeta(id="t", alert="x", window=TimeWindow(T0, END), alert_time=alert)
    if baseline:
        return Incident(meta=meta, telemetry=Telemetry(spans=spans_frame(during, origin=ALERT)),
                        baseline=Telemetry(spans=spans_frame(normal, origin=T0 - pd.Timedelta(hours=1))))
    return Incident(meta=meta, telemetry=Telemetry(spans=pd.concat(
        [spans_frame(normal), spans_frame(during, origin=ALERT)], ignore_index=True)))


NORMAL = [s for i in range(30) for s in chain_trace(f"n{i}", 1000.0 * i, leaf_ms=10 + jitter(i))]


# ------------------------------------------------------------------------------------- call trees


def test_exclusive_time_with_overlapping_parallel_children() -> None:
    # parent [0, 100]; A [10, 50] with grandchild [20, 40]; B [30, 70] overlaps A; C [90, 120] overruns
    # the parent and is clipped to [90, 100]. Union under the parent: [10, 70] + [90, 100] = 70.
    start = np.array([0.0, 10.0, 30.0, 90.0, 20.0])
    duration = np.array([100.0, 40.0, 40.0, 30.0, 20.0])
    parent = np.array([-1, 0, 0, 0, 1])
    assert exclusive_time(start, duration, parent).tolist() == [30.0, 20.0, 40.0, 30.0, 20.0]


def test_exclusive_time_ignores_children_outside_the_parent() -> None:
    # An async child that starts after its parent ended covers none of the parent's time.
    got = exclusive_time(np.array([0.0, 50.0, 5.0]), np.array([10.0, 5.0, 10.0]), np.array([-1, 0, 0]))
    assert got.tolist() == [5.0, 5.0, 10.0]


def test_orphans_become_roots_and_cycles_are_broken() -> None:
    trace = np.zeros(5, dtype=np.int64)
    span_id = pd.Series(["r", "x", "o", "c1", "c2"])
    parent_id = pd.Series([None, "r", "lost", "c2", "c1"])
    parent = resolve_parents(trace, span_id, parent_id)
    assert parent.tolist() == [-1, 0, -1, 4, 3]
    depth, fixed = depths(parent)
    assert depth.tolist() == [0, 1, 0, 0, 0] and fixed.tolist() == [-1, 0, -1, -1, -1]


def test_parents_resolve_within_their_own_trace_only() -> None:
    parent = resolve_parents(np.array([0, 1, 1]), pd.Series(["a", "a", "b"]), pd.Series([None, None, "a"]))
    assert parent.tolist() == [-1, -1, 1]


# ----------------------------------------------------------------------------------------- latency


def test_slow_leaf_is_blamed_not_its_callers() -> None:
    during = [s for i in range(10) for s in chain_trace(f"s{i}", 1000.0 * i, leaf_ms=200.0)]
    report = analyse_traces(incident_of(NORMAL, during))
    slow = [t for t in report.anomalies if t.kind == "slow_operation"]
    assert [(t.service, t.operation) for t in slow] == [("db", "query")]
    (t,) = slow
    assert t.path == ("frontend:home", "orders:get", "db:query")
    assert (t.calls, t.affected, t.timeouts) == (10, 10, 10)
    assert (t.p50_ms, t.baseline_p50_ms, t.self_p50_ms, t.baseline_self_p50_ms) == (200.0, 10.0, 200.0, 10.0)
    # Every span of the worst trace ran over its limit; only the leaf's own time grew.
    assert [(x.service, x.duration_ms, x.self_ms) for x in t.slow_spans] == [
        ("frontend", 204.0, 2.0), ("orders", 202.0, 2.0), ("db", 200.0, 200.0)]
    assert t.evidence.trace_ids[0] == "s0" and ("s0", "c") in t.evidence.spans
    assert (t.start, t.end) == (ALERT + pd.Timedelta("2ms"), ALERT + pd.Timedelta("9202ms"))
    by_service = {s.service: s for s in report.services}
    assert by_service["db"].latency_score > 10 and by_service["orders"].latency_score == 0.0
    # The leaf's 190 added ms are 190 / 204 of what the user waited; the callers added nothing of their own.
    assert t.latency_share == pytest.approx(190 / 204)
    assert by_service["db"].latency_share == pytest.approx(190 / 204) and by_service["orders"].latency_share == 0.0


def test_a_slowdown_users_cannot_feel_weighs_little_as_evidence() -> None:
    """A database call that triples from 3 to 9 ms inside 2-second requests is a real change, and explains 0.3%
    of the latency: its signal is weighed by that share, while the same tripling of a call that makes up most
    of the request keeps its weight."""
    from flipmoe.toolkits.signals import trace_signals

    def trace(name: str, at: float, db_ms: float, own_ms: float) -> list[Span]:
        return [(name, "a", None, "frontend", "home", at, own_ms + db_ms + 2, "ok"),
                (name, "b", "a", "orders", "get", at + 1, db_ms + 1, "ok"),
                (name, "c", "b", "db", "query", at + 1.5, db_ms, "ok")]

    def db_strength(db_before: float, db_after: float, own_ms: float) -> tuple[float, float | None]:
        normal = [x for i in range(30) for x in trace(f"n{i}", 1000.0 * i, db_before * (1 + 0.01 * jitter(i)), own_ms)]
        during = [x for i in range(20) for x in trace(f"s{i}", 1000.0 * i, db_after, own_ms)]
        report = analyse_traces(incident_of(normal, during))
        share = next(s.latency_share for s in report.services if s.service == "db")
        return max((x.strength for x in trace_signals(report) if x.service == "db"), default=0.0), share

    hidden, hidden_share = db_strength(3.0, 9.0, own_ms=2000.0)
    felt, felt_share = db_strength(30.0, 90.0, own_ms=5.0)
    assert hidden_share == pytest.approx(6 / 2011, rel=0.05) and felt_share == pytest.approx(60 / 97, rel=0.05)
    assert felt > 0.3 and 0 < hidden < 0.05 * felt


def test_timeout_limit_is_mean_plus_three_sigma() -> None:
    # Baseline of 30 leaf spans: 10 of each of 9, 10, 11 ms -> mean 10, std 0.830; 3-sigma limit 12.49 ms,
    # but the spread floor (5% of 10 ms = 0.5 ms) does not bind.
    limit = 10 + 3 * np.std(np.repeat([9.0, 10.0, 11.0], 10), ddof=1)
    under = chain_trace("u", 0.0, leaf_ms=limit - 0.05)
    over = [s for i in range(3) for s in chain_trace(f"o{i}", 100.0 * (i + 1), leaf_ms=limit + 0.05)]
    sensitive = TraceToolkitConfig(min_latency_score=0.0, min_slow_spans=1)
    report = analyse_traces(incident_of(NORMAL, under + over), config=sensitive)
    (t,) = [t for t in report.anomalies if t.kind == "slow_operation"]
    assert (t.service, t.calls, t.timeouts) == ("db", 4, 3)
    assert t.slow_spans[-1].upper_ms == pytest.approx(limit)


def test_tiny_baseline_uses_a_robust_limit() -> None:
    # Three reference spans with one outlier: mean + 3 std would allow ~200 ms; median + 3 robust
    # sigma (MAD 0, floored to 0.5 ms) gives 11.5 ms.
    normal = [s for i, ms in enumerate([10.0, 10.0, 100.0])
              for s in chain_trace(f"n{i}", 1000.0 * i, leaf_ms=ms)]
    during = [s for i in range(10) for s in chain_trace(f"s{i}", 1000.0 * i, leaf_ms=30.0)]
    (t,) = [t for t in analyse_traces(incident_of(normal, during)).anomalies if t.kind == "slow_operation"]
    assert t.service == "db" and t.slow_spans[-1].upper_ms == pytest.approx(11.5)


def test_a_significant_but_immaterial_rise_in_slow_calls_is_not_reported() -> None:
    # 3% of 1000 calls slow against none of 300 in the baseline: z is large, but 3% is under the 5% bar.
    normal = [s for i in range(300) for s in chain_trace(f"n{i}", 100.0 * i, leaf_ms=10 + jitter(i))]
    during = [s for i in range(1000)
              for s in chain_trace(f"s{i}", 100.0 * i, leaf_ms=200.0 if i % 100 < 3 else 10.0)]
    assert not [t for t in analyse_traces(incident_of(normal, during)).anomalies]
    strict = TraceToolkitConfig(min_slow_fraction=0.02)
    (t,) = [t for t in analyse_traces(incident_of(normal, during), config=strict).anomalies]
    assert (t.kind, t.service, t.affected) == ("slow_operation", "db", 30)


def test_one_operation_has_a_limit_per_call_path() -> None:
    # db:query is 10 ms under orders:get but 100 ms under reports:run; 100 ms under orders:get is slow.
    def report_trace(trace: str, at: float, ms: float) -> list[Span]:
        return [(trace, "a", None, "frontend", "report", at, ms + 2, "ok"),
                (trace, "b", "a", "reports", "run", at + 1, ms + 1, "ok"),
                (trace, "c", "b", "db", "query", at + 1.5, ms, "ok")]

    normal = NORMAL + [s for i in range(30) for s in report_trace(f"r{i}", 1000.0 * i, 100 + jitter(i))]
    during = [s for i in range(5) for s in chain_trace(f"s{i}", 1000.0 * i, leaf_ms=100.0)]
    (t,) = [t for t in analyse_traces(incident_of(normal, during)).anomalies if t.kind == "slow_operation"]
    assert t.path == ("frontend:home", "orders:get", "db:query") and t.affected == 5


# ------------------------------------------------------------------------------------------ errors


def test_error_chain_origin_is_the_deepest_erroring_span() -> None:
    during = [s for i in range(10) for s in chain_trace(f"e{i}", 1000.0 * i, error=i < 5)]
    report = analyse_traces(incident_of(NORMAL, during))
    (t,) = [t for t in report.anomalies if t.kind == "error_chain"]
    assert (t.service, t.operation, t.calls, t.affected) == ("db", "query", 10, 5)
    assert t.chain == ("frontend:home", "orders:get", "db:query")
    assert (t.error_rate, t.baseline_error_rate) == (0.5, 0.0)
    assert t.evidence.trace_ids == ("e0", "e1", "e2", "e3", "e4")
    summary = {s.service: s for s in report.services}
    frontend = summary["frontend"]
    assert (frontend.errors, frontend.origin_errors, frontend.error_score) == (5, 0, 0)
    assert summary["db"].error_rate == 0.5 and summary["db"].error_score > 3
    assert report.services[0].service == "db"


# --------------------------------------------------------------------------------------- structure


def test_missing_and_added_calls() -> None:
    during = [s for i in range(20) for s in chain_trace(f"s{i}", 1000.0 * i, call_c=False, call_d=True)]
    report = analyse_traces(incident_of(NORMAL, during))
    by_kind = {t.kind: t for t in report.anomalies if t.kind in ("missing_call", "added_call")}
    missing, added = by_kind["missing_call"], by_kind["added_call"]
    assert (missing.service, missing.operation, missing.caller) == ("db", "query", "orders:get")
    assert (missing.affected, missing.calls) == (0, 20)
    assert missing.expected_calls == pytest.approx(30.5 / 31 * 20)
    assert missing.path == ("frontend:home", "orders:get", "db:query")
    assert missing.evidence.spans[0] == ("s0", "b")  # the caller span that made no call
    assert (added.service, added.operation, added.caller) == ("cache", "get", "orders:get")
    assert added.affected == 20
    assert added.path == ("frontend:home", "orders:get", "cache:get")
    assert json.loads(json.dumps(to_json(added)))["evidence"]["spans"][0] == ["s0", "d"]


def test_a_normal_incident_has_no_findings() -> None:
    during = [s for i in range(30) for s in chain_trace(f"s{i}", 1000.0 * i, leaf_ms=10 + jitter(i + 1))]
    report = analyse_traces(incident_of(NORMAL, during))
    assert report.anomalies == ()
    assert {s.service for s in report.services} == {"frontend", "orders", "db"}


# -------------------------------------------------------------------------------- summary, degraded


def test_service_summary_numbers() -> None:
    during = [s for i in range(4) for s in chain_trace(f"s{i}", 1000.0 * i, leaf_ms=20.0, error=i == 0)]
    summary = {s.service: s for s in analyse_traces(incident_of(NORMAL, during)).services}["orders"]
    assert (summary.requests, summary.errors, summary.error_rate, summary.origin_errors) == (4, 1, 0.25, 0)
    assert (summary.self_p50_ms, summary.self_p95_ms) == (2.0, 2.0)
    assert (summary.baseline_self_p50_ms, summary.baseline_error_rate) == (2.0, 0.0)


def test_without_baseline_traces_before_the_alert_are_normal() -> None:
    during = [s for i in range(10) for s in chain_trace(f"s{i}", 1000.0 * i, leaf_ms=200.0)]
    report = analyse_traces(incident_of(NORMAL, during, baseline=False))
    assert report.reference == "traces starting before 08:10:00 UTC"
    assert [t.service for t in report.anomalies if t.kind == "slow_operation"] == ["db"]
    assert report.spans == 30 and report.traces == 10


def test_degraded_inputs_never_raise() -> None:
    meta = IncidentMeta(id="t", alert="x", window=TimeWindow(T0, END), alert_time=ALERT)
    assert "no spans" in analyse_traces(Incident(meta=meta)).notes[0]
    only_during = incident_of([], chain_trace("s", 0.0), baseline=False)
    report = analyse_traces(only_during)
    assert report.anomalies == () and any("no normal traces" in n for n in report.notes)
    assert report.services[0].baseline_error_rate is None
    outside = incident_of(NORMAL, chain_trace("late", 3_600_000.0))
    assert any("no spans inside" in n for n in analyse_traces(outside).notes)
    new_op = incident_of(NORMAL, [("x", "a", None, "newsvc", "op", 0.0, 5.0, "ok")])
    assert any("no reference spans" in n for n in analyse_traces(new_op).notes)
    orphan = incident_of(NORMAL, [("x", "a", "gone", "orders", "get", 0.0, 5.0, "ok")])
    assert any("not in the data" in n for n in analyse_traces(orphan).notes)
    optional = ["parent_span_id", "status", "pod"]
    bare_spans = spans_frame(NORMAL + chain_trace("s", 700_000.0)).drop(columns=optional)
    bare = Incident(meta=meta, telemetry=Telemetry(spans=bare_spans))
    assert {s.service for s in analyse_traces(bare).services} == {"frontend", "orders", "db"}


def test_no_alert_and_no_history_uses_the_first_third() -> None:
    during = [s for i in range(10) for s in chain_trace(f"s{i}", 1000.0 * i, leaf_ms=200.0)]
    report = analyse_traces(incident_of(NORMAL, during, baseline=False, alert=None))
    assert any("first third" in n for n in report.notes)
    assert [t.service for t in report.anomalies if t.kind == "slow_operation"] == ["db"]


def test_pre_alert_traces_join_a_distant_baseline_in_the_reference() -> None:
    # The baseline is an hour away with fast leaves; the minutes before the alert are the same regime
    # as the incident (20 ms leaves). Only with both in the reference is 20 ms after the alert normal.
    fast = [s for i in range(30) for s in chain_trace(f"b{i}", 1000.0 * i, leaf_ms=10 + jitter(i))]
    recent = [s for i in range(30) for s in chain_trace(f"r{i}", 1000.0 * i, leaf_ms=20 + jitter(i))]
    during = [s for i in range(30) for s in chain_trace(f"d{i}", 1000.0 * i, leaf_ms=20 + jitter(i))]
    meta = IncidentMeta(id="t", alert="x", window=TimeWindow(T0, END), alert_time=ALERT)
    incident = Incident(
        meta=meta,
        telemetry=Telemetry(spans=pd.concat([spans_frame(recent), spans_frame(during, origin=ALERT)],
                                            ignore_index=True)),
        baseline=Telemetry(spans=spans_frame(fast, origin=T0 - pd.Timedelta(hours=1))))
    report = analyse_traces(incident)
    assert "before" in report.reference and "baseline" in report.reference
    assert report.spans == len(during), "only traces after the alert are judged"
    assert not [a for a in report.anomalies if a.kind == "slow_operation"]
