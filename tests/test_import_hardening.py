"""Importer inputs that used to end in a traceback (issue 21) are one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from flipmoe.cli import main
from flipmoe.telemetry.json_input import JsonInputError, parse_json

SPAN = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")


def otlp_span(service: str = "checkout", name: str = "GET /cart") -> str:
    return ('{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "'
            + service + '"}}]}, "scopeSpans": [{"spans": [{"traceId": "' + SPAN[0] + '", "spanId": "' + SPAN[1]
            + '", "name": "' + name + '", "startTimeUnixNano": "1700000000000000000", '
            '"endTimeUnixNano": "1700000001000000000"}]}]}]}')


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flipmoe: error: ") and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("duration", ["1e999", "-1e999x", "1e300"])
def test_csv_span_duration_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str], duration: str) -> None:
    spans = tmp_path / "spans.csv"
    spans.write_text("trace_id,span_id,parent_span_id,service,pod,operation,start,duration,status\n"
                     f"t1,a,,front,front-1,GET /,2026-03-01T10:00:00Z,{duration},ok\n"
                     "t1,b,a,api,api-1,get,2026-03-01T10:00:00Z,5,ok\n", encoding="utf-8")
    code, err = run_cli(["import", "csv", "--spans", str(spans), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "duration")
    assert not (tmp_path / "out").exists()


def test_csv_span_end_beyond_the_timestamp_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spans = tmp_path / "spans.csv"
    spans.write_text("trace_id,span_id,service,operation,start,duration\n"
                     "t1,a,front,GET /,2262-04-01T00:00:00Z,999999999999\n", encoding="utf-8")
    code, err = run_cli(["import", "csv", "--spans", str(spans), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "2262")


def test_csv_timestamp_beyond_nanosecond_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "metrics.csv"  # found by tests/test_fuzz.py: a year parsed, but not representable
    metrics.write_text("timestamp,service,metric,value\n2026-03-01T10:00:00Z,api,cpu,1\n-1000,api,cpu,2\n",
                       encoding="utf-8")
    code, err = run_cli(["import", "csv", "--metrics", str(metrics), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "row 2: timestamp '-1000' is out of range")


@pytest.mark.parametrize(("text", "fragment"), [
    ('{"resourceSpans": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than"),
    ('{"resourceSpans": [{"resource": {"attributes": [{"key": "k", "value": '
     + '{"arrayValue": {"values": [' * 3000 + "]}}" * 3000 + "}]}}]}", "nested deeper than"),
    (otlp_span(service="\\ud800x"), "surrogate"),
    (otlp_span(name="op\\udc00"), "surrogate"),
    ('{"resourceSpans": [], "x": ' + "9" * 5001 + "}", "digits"),
])
def test_otlp_hostile_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str) -> None:
    source = tmp_path / "batch.json"
    source.write_text(text + "\n", encoding="utf-8")
    code, err = run_cli(["import", "otlp", str(source), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, fragment)


def test_otlp_valid_surrogate_pairs_still_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "batch.json"
    source.write_text(otlp_span(name="pay \\ud83d\\udcb3") + "\n", encoding="utf-8")
    code, err = run_cli(["import", "otlp", str(source), "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err


@pytest.mark.parametrize(("data", "problem", "malformed"), [
    (b"\xff{}", "not UTF-8", True),
    (b'{"a": [1, 2', "not valid JSON", True),
    (b"[" * 65 + b"]" * 65, "nested deeper than 64", False),
    (b'{"a": "\\udfff"}', "surrogate", False),
    (b"1" * 5000, "digits", False),
])
def test_parse_json_names_the_problem(data: bytes, problem: str, malformed: bool) -> None:
    with pytest.raises(JsonInputError, match=problem) as caught:
        parse_json(data)
    assert caught.value.malformed is malformed


def test_parse_json_accepts_ordinary_json() -> None:
    assert parse_json(b'\xef\xbb\xbf{"a": ["\\ud83d\\ude00", 1.5, null, "\\\\ud800"]}') == {
        "a": ["\U0001f600", 1.5, None, "\\ud800"]}
    assert parse_json("[" * 64 + "]" * 64) is not None
