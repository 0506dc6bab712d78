"""`flipmoe import otlp`: OTLP/JSON file-exporter output -> incident directory, and its bad inputs."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flipmoe.cli import main
from flipmoe.config import TelemetryConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.importers.otlp import histogram_quantiles, import_otlp, read_otlp
from flipmoe.telemetry import Incident, TimeWindow, read_incident

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
ALL_FILES = [FIXTURES / name
             for name in ("traces.jsonl", "logs.jsonl", "metrics.jsonl", "payment_summary.json")]
TRACE_A, TRACE_B = "5b8efff798038103d269b633813fc60c", "0af7651916cd43dd8448eb211c80319c"
T0 = pd.Timestamp("2024-05-14T09:30:00Z")
NS0 = 1715679000_000000000


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Incident:
    out = import_otlp(ALL_FILES, tmp_path_factory.mktemp("otlp") / "checkout-incident")
    return read_incident(out)


def _write_lines(path: Path, *records: Any) -> Path:
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records), encoding="utf-8")
    return path


def _span(span_id: str, parent: str = "", **overrides: Any) -> dict[str, Any]:
    span = {"traceId": TRACE_A, "spanId": span_id, "parentSpanId": parent, "name": "op", "kind": 2,
            "startTimeUnixNano": str(NS0), "endTimeUnixNano": str(NS0 + 5_000_000), "status": {}}
    return span | overrides


def _spans_request(*spans: dict[str, Any], service: str = "svc") -> dict[str, Any]:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {}, "spans": list(spans)}]}]}


def _gauge_request(*values: Any) -> dict[str, Any]:
    points = [{"timeUnixNano": str(NS0 + i * 10**9), "asDouble": v} for i, v in enumerate(values)]
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]}
    metric = {"name": "queue.depth", "gauge": {"dataPoints": points}}
    return {"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"metrics": [metric]}]}]}


# --- end to end on the fixtures ---------------------------------------------------------------------

def test_spans_keep_ids_parents_durations_and_statuses(imported: Incident) -> None:
    spans = imported.spans.set_index("span_id")
    assert len(spans) == 8
    assert set(spans["trace_id"]) == {TRACE_A, TRACE_B}
    assert spans.loc["a5b2c3d4e5f60718", "service"] == "payment"
    assert spans.loc["a5b2c3d4e5f60718", "pod"] == "payment-6b7c8d9e0-m3n4o"
    assert spans.loc["a5b2c3d4e5f60718", "parent_span_id"] == "a4b2c3d4e5f60718"
    assert spans.loc["a5b2c3d4e5f60718", "operation"] == "oteldemo.PaymentService/Charge"
    assert spans.loc["a5b2c3d4e5f60718", "duration"] == pytest.approx(2283.0)
    assert spans.loc["a5b2c3d4e5f60718", "start"] == T0 + pd.Timedelta("10.013s")
    assert sorted(spans.index[spans["parent_span_id"].isna()]) == ["a1b2c3d4e5f60718", "b1b2c3d4e5f60718"]
    assert spans["status"].to_dict() == {
        "a1b2c3d4e5f60718": "unset", "b1b2c3d4e5f60718": "ok", "a2b2c3d4e5f60718": "error",
        "b2b2c3d4e5f60718": "unset", "a3b2c3d4e5f60718": "error", "a4b2c3d4e5f60718": "error",
        "b3b2c3d4e5f60718": "unset", "a5b2c3d4e5f60718": "error"}


def test_logs_take_levels_bodies_times_and_trace_context(imported: Incident) -> None:
    logs = imported.logs
    assert list(logs["level"]) == ["WARN", "ERROR", "WARN", "INFO", "DEBUG"]
    assert list(logs["service"]) == ["payment", "payment", "checkout", "frontend", "frontend"]
    error = logs.iloc[1]
    assert error["message"] == "charge failed: card processor timed out after 2000ms"
    assert (error["trace_id"], error["span_id"]) == (TRACE_A, "a5b2c3d4e5f60718")
    assert json.loads(logs.iloc[2]["message"]) == {"event": "order.failed", "order_id": "ord-1042",
                                                   "attempts": 3}
    # The filelog line without a time of its own gets the collector's observedTimeUnixNano.
    assert logs.iloc[3]["timestamp"] == T0 + pd.Timedelta("20.05s")
    assert pd.isna(logs.iloc[3]["trace_id"])


def test_metrics_fold_attributes_and_derive_histogram_and_summary_rows(imported: Incident) -> None:
    metrics = imported.metrics
    series = metrics.groupby("metric")["value"].apply(list).to_dict()
    assert series["process.cpu.utilization"] == [0.21, 0.64]
    # Both points of this series list their attributes in different orders; they stay one series.
    assert series['rpc.server.requests{rpc.grpc.status_code="OK",rpc.method="PlaceOrder"}'] == [1180, 1204]
    assert series['rpc.server.requests{rpc.grpc.status_code="INTERNAL",rpc.method="PlaceOrder"}'] == [9]
    labels = '{http.request.method="GET",http.route="/checkout"}'
    assert series[f"http.server.request.duration_count{labels}"] == [50, 60]
    assert series[f"http.server.request.duration_sum{labels}"] == [2.05, 14.9]
    # First point: its own buckets; second: the increase since the first (see _add_histogram_quantiles).
    assert series[f"http.server.request.duration_p50{labels}"] == pytest.approx([0.04125, 0.75])
    assert series[f"http.server.request.duration_p95{labels}"] == pytest.approx([0.2375, 2.5])
    assert series["rpc_duration_seconds_p90"] == [0.9]
    assert series["rpc_duration_seconds_count"] == [1210]
    # kubeletstats-style points name their service and pod in data point attributes, the node in the resource.
    memory = metrics[metrics["metric"] == "k8s.pod.memory.working_set"]
    assert set(zip(memory["service"], memory["pod"], memory["node"], strict=True)) == {
        ("payment", "payment-6b7c8d9e0-m3n4o", "node-b")}


def test_topology_window_and_defaults(imported: Incident) -> None:
    assert imported.topology is not None
    assert imported.topology.edges == [("checkout", "payment"), ("frontend", "checkout")]
    assert imported.topology.placement["frontend-7d9f8b6c5-x2k4p"] == "node-a"
    assert imported.meta.id == "checkout-incident"
    assert imported.meta.source == "otlp"
    assert "no alert text" in imported.meta.alert
    assert imported.meta.window.start == T0
    assert imported.meta.window.end == T0 + pd.Timedelta("31s")
    assert imported.telemetry.services() == ["checkout", "frontend", "payment"]
    assert imported.warnings == []


def test_snake_case_enum_names_numbers_and_gzip_read_the_same(tmp_path: Path) -> None:
    def variant(value: Any) -> Any:
        if isinstance(value, dict):
            renamed = {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): variant(v) for k, v in value.items()}
            if "kind" in renamed:
                renamed["kind"] = {2: "SPAN_KIND_SERVER", 3: "SPAN_KIND_CLIENT"}[renamed["kind"]]
            if "code" in renamed:
                renamed["code"] = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")[
                    renamed["code"]]
            for key in ("start_time_unix_nano", "end_time_unix_nano"):
                if key in renamed:
                    renamed[key] = int(renamed[key])
            return renamed
        return [variant(v) for v in value] if isinstance(value, list) else value

    lines = (FIXTURES / "traces.jsonl").read_text().splitlines()
    path = tmp_path / "traces.snake.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.writelines(json.dumps(variant(json.loads(line))) + "\n" for line in lines)
    warnings: list[str] = []
    spans = read_otlp([path], warnings=warnings).spans
    expected = read_otlp([FIXTURES / "traces.jsonl"]).spans
    pd.testing.assert_frame_equal(spans, expected)
    assert warnings == []


def test_pretty_printed_document_is_one_request(tmp_path: Path) -> None:
    path = tmp_path / "traces.json"
    path.write_text(json.dumps(_spans_request(_span("00000000000000a1")), indent=2))
    assert read_otlp([path]).spans["span_id"].tolist() == ["00000000000000a1"]


def test_pre_1_0_scope_names_are_accepted(tmp_path: Path) -> None:
    request = _spans_request(_span("00000000000000a1"))
    block = request["resourceSpans"][0]
    block["instrumentationLibrarySpans"] = [{"instrumentationLibrary": {"name": "old"},
                                             "spans": block.pop("scopeSpans")[0]["spans"]}]
    warnings: list[str] = []
    spans = read_otlp([_write_lines(tmp_path / "old.jsonl", request)], warnings=warnings).spans
    assert spans["span_id"].tolist() == ["00000000000000a1"] and warnings == []


def test_base64_ids_of_generic_proto3_json_writers_are_read_as_hex(tmp_path: Path) -> None:
    request = _spans_request(_span("AAAAAAAAAKE=", traceId="W47/95gDgQPSabYzgT/GDA=="))
    spans = read_otlp([_write_lines(tmp_path / "b64.jsonl", request)]).spans
    assert (spans.loc[0, "trace_id"], spans.loc[0, "span_id"]) == (TRACE_A, "00000000000000a1")


def test_baseline_files_become_the_baseline(tmp_path: Path) -> None:
    out = import_otlp([FIXTURES / "traces.jsonl"], tmp_path / "inc",
                      baseline_files=[FIXTURES / "metrics.jsonl"], alert="checkout p95 above 2s",
                      incident_id="INC-7",
                      window=TimeWindow("2024-05-14T09:30:05Z", "2024-05-14T09:30:25Z"))
    incident = read_incident(out)
    assert incident.meta.id == "INC-7" and incident.meta.alert == "checkout p95 above 2s"
    assert incident.meta.window.start == T0 + pd.Timedelta("5s")
    assert incident.baseline is not None and incident.baseline.modalities == ["metrics"]
    assert incident.modalities == ["spans"]


# --- recoverable problems become warnings ------------------------------------------------------------

def test_unknown_fields_warn_once_per_field(tmp_path: Path) -> None:
    spans = [_span(f"00000000000000a{i}", fooBar=i) for i in range(1, 4)]
    path = _write_lines(tmp_path / "t.jsonl", _spans_request(*spans),
                        _spans_request(_span("00000000000000b1", fooBar=0)))
    warnings: list[str] = []
    assert len(read_otlp([path], warnings=warnings).spans) == 4
    assert warnings == [f"{path}:1: ignored unknown OTLP field 'Span.fooBar' (reported once)"]


def test_nan_metric_values_are_dropped_with_a_warning(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "m.jsonl", _gauge_request(1.5, "NaN", "Infinity", 2))
    warnings: list[str] = []
    metrics = read_otlp([path], warnings=warnings).metrics
    assert metrics["value"].tolist() == [1.5, 2.0]
    assert any("dropped 2 metric row(s) with NaN" in w for w in warnings)


def test_stale_points_are_skipped(tmp_path: Path) -> None:
    request = _gauge_request(1.0, 2.0)
    request["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][1]["flags"] = 1
    assert read_otlp([_write_lines(tmp_path / "m.jsonl", request)]).metrics["value"].tolist() == [1.0]


def test_duplicate_span_ids_and_parent_cycles_are_fixed_with_warnings(tmp_path: Path) -> None:
    a, b, c = "00000000000000a1", "00000000000000b1", "00000000000000c1"
    path = _write_lines(tmp_path / "t.jsonl", _spans_request(_span(a, parent=b), _span(b, parent=a), _span(c),
                                                             _span(c, name="again")))
    warnings: list[str] = []
    spans = read_otlp([path], warnings=warnings).spans
    assert spans["span_id"].tolist() == [a, b, c]
    assert spans["parent_span_id"].isna().sum() == 2  # c, and one span of the a <-> b cycle
    assert any("repeats an earlier span" in w for w in warnings)
    assert any("broke 1 cyclic parent link" in w for w in warnings)


def test_resources_without_service_name_use_unknown_service(tmp_path: Path) -> None:
    request = _spans_request(_span("00000000000000a1"))
    request["resourceSpans"][0]["resource"] = {}
    warnings: list[str] = []
    spans = read_otlp([_write_lines(tmp_path / "t.jsonl", request)], warnings=warnings).spans
    assert spans["service"].tolist() == ["unknown_service"]
    assert any("no service.name" in w for w in warnings)


# --- bad input ----------------------------------------------------------------------------------------

GOOD_LINE = json.dumps(_spans_request(_span("00000000000000a1")))


@pytest.mark.parametrize(("content", "message"), [
    ("", "file is empty"),
    ("\n  \n", "file is empty"),
    (GOOD_LINE + "\n" + GOOD_LINE[:-40] + "\n", "line 2: not valid JSON"),
    (GOOD_LINE[:100], "line 1: not valid JSON"),
    ('{"foo": 1}\n', "line 1: not an OTLP export request"),
    ("[1, 2]\n", "line 1: ExportRequest must be a JSON object, got an array"),
    ('{"resourceSpans": {}}\n', "line 1: 'resourceSpans' must be a JSON array, got an object"),
    (json.dumps(_spans_request(_span("00000000000000a1", traceId=""))), "line 1: span 'op' has no traceId"),
    (json.dumps(_spans_request(_span("xyz"))), "line 1: spanId 'xyz' is not a 8-byte id in hex"),
    (json.dumps(_spans_request(_span("00000000000000a1", startTimeUnixNano="yesterday"))),
     "startTimeUnixNano must be an integer"),
    (json.dumps(_spans_request(_span("00000000000000a1", endTimeUnixNano="0"))), "has no endTimeUnixNano"),
    (json.dumps(_spans_request(_span("00000000000000a1", status={"code": "BROKEN"}))),
     "status.code 'BROKEN'"),
    (json.dumps(_spans_request(_span("00000000000000a1", name=7))),
     "span name must be a string, got a number"),
    (json.dumps(_gauge_request("lots")), "asDouble must be a number"),
])
def test_bad_files_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FlipmoeInputError) as err:
        read_otlp([path])
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_histogram_bucket_mismatch_is_refused(tmp_path: Path) -> None:
    point = {"timeUnixNano": str(NS0), "count": "3", "bucketCounts": ["1", "2"], "explicitBounds": [1, 2]}
    request = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "latency", "histogram": {"dataPoints": [point], "aggregationTemporality": 1}}]}]}]}
    with pytest.raises(FlipmoeInputError, match="2 bucketCounts for 2 bounds"):
        read_otlp([_write_lines(tmp_path / "h.jsonl", request)])


def test_a_100_mb_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as handle:
        handle.write(b'{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"stringValue":"')
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            handle.write(chunk)
        handle.write(b'"}}]}}]}\n')
    with pytest.raises(FlipmoeInputError, match=r"huge.jsonl: line 1 is longer than 67108864 bytes"):
        read_otlp([path])


def test_the_line_limit_is_configurable(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "t.jsonl", _spans_request(_span("00000000000000a1")),
                        _spans_request(*[_span(f"{i:016x}") for i in range(1, 20)]))
    with pytest.raises(FlipmoeInputError, match="line 2 is longer than 2048 bytes"):
        read_otlp([path], config=TelemetryConfig(max_json_line_bytes=2048))


def test_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(gzip.compress(GOOD_LINE.encode())[:-12])
    with pytest.raises(FlipmoeInputError, match="truncated or corrupt gzip"):
        read_otlp([path])


def test_files_without_any_telemetry_are_refused(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "t.jsonl", {"resourceSpans": []}, {"resourceLogs": [{"scopeLogs": []}]})
    with pytest.raises(FlipmoeInputError, match="no metrics, logs, spans or events to import"):
        import_otlp([path], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_import_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD_LINE + "\n" + GOOD_LINE[:50] + "\n")
    with pytest.raises(FlipmoeInputError):
        import_otlp([FIXTURES / "traces.jsonl", bad], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


# --- histogram quantiles --------------------------------------------------------------------------------

def test_histogram_quantiles_interpolate_inside_buckets() -> None:
    # 10 values: 6 in (0.1, 0.25], 3 in (0.25, 0.5], 1 in (0.5, 1].
    estimates = histogram_quantiles([0.1, 0.25, 0.5, 1.0], [0, 6, 3, 1, 0])
    assert estimates == pytest.approx({0.5: 0.225, 0.95: 0.75, 0.99: 0.95})


def test_histogram_quantiles_open_ends() -> None:
    # Prometheus' convention without min/max: the top bucket answers its lower (highest finite) bound.
    assert histogram_quantiles([1.0], [0, 4])[0.5] == 1.0
    # With min/max the open buckets are closed by them, and estimates stay inside them.
    assert histogram_quantiles([1.0], [0, 4], low=0.5, high=3.0)[0.5] == pytest.approx(2.0)
    assert histogram_quantiles([1.0], [4, 0], low=0.5, high=0.9)[0.99] <= 0.9
    assert histogram_quantiles([1.0, 2.0], [0, 0, 0]) == {}
    assert histogram_quantiles([], [5]) == {}
    assert histogram_quantiles([], [5], low=1.0, high=3.0)[0.5] == pytest.approx(2.0)


# --- command line ----------------------------------------------------------------------------------------

def test_cli_imports_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "inc"
    code = main(["import", "otlp", *map(str, ALL_FILES), "--out", str(out), "--alert", "checkout errors",
                 "--window-start", "2024-05-14T09:30:00Z", "--window-end", "2024-05-14T09:31:00Z"])
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    incident = read_incident(out)
    assert incident.meta.alert == "checkout errors"
    assert incident.modalities == ["metrics", "logs", "spans"]


@pytest.mark.parametrize("extra", [[], ["--window-start", "2024-05-14T09:30:00Z"]])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               extra: list[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("" if not extra else GOOD_LINE)
    code = main(["import", "otlp", str(bad), "--out", str(tmp_path / "inc"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("flipmoe: error: ") and err.count("\n") == 1
    assert not (tmp_path / "inc").exists()
