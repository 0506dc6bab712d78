"""Fuzzing (hypothesis) of every HTTP endpoint and every importer: bad input is a 4xx or a one-line error.

The HTTP app runs in-process (TestClient, a stand-in analyzer and model service); each importer runs
through the CLI on generated files. The properties: no 5xx, no traceback, errors in the one documented
shape. Examples are derandomised and bounded so the module stays within ~20 s on two cores; the number
of cases run is printed at the end of the module (`pytest -s tests/test_fuzz.py`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tarfile
import urllib.parse
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from conftest import tiny_incident
from fastapi.testclient import TestClient
from http_doubles import closed_port_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_import_hardening import otlp_span
from test_import_tvdiag import write_release
from test_serve_app import stub_analyzer
from test_serve_hardening import StubModels

from flipmoe.cli import main
from flipmoe.config import FlipmoeConfig, LokiConfig
from flipmoe.importers.nezha import parse_log_line
from flipmoe.serve.app import ServeSettings, create_app
from flipmoe.telemetry import write_incident

CASES: Counter[str] = Counter()
# FLIPMOE_FUZZ_EXAMPLES=2000 (and FLIPMOE_FUZZ_RANDOM=1 for new seeds) runs a deeper search by hand.
FUZZ = settings(max_examples=int(os.environ.get("FLIPMOE_FUZZ_EXAMPLES", "50")), deadline=None,
                derandomize=not os.environ.get("FLIPMOE_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def case_count() -> Iterator[None]:
    yield
    print(f"\nfuzz cases: {sum(CASES.values())} ({', '.join(f'{k} {v}' for k, v in sorted(CASES.items()))})")


# -- strategies ----------------------------------------------------------------------------------------

# Text that JSON can carry but UTF-8 cannot: escaped lone surrogates, spliced into generated JSON.
HOSTILE_FRAGMENTS = ['"\\ud800"', '"\\udfff x"', "1" * 5001, "[" * 200 + "]" * 200, "1e999", "-1e999", "NaN",
                     "Infinity", '"\\u0000"', '"' + "x" * 3000 + '"', "{}", "[]", "null", "true", "-0"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01T10:05:00+02:00", "1772359200",
                                     "1772359200123", "not a time", "", "error", "ok", "2262-04-11T23:47:16Z"]))
json_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=12)


def json_text(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


@st.composite
def spliced_json(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> bytes:
    """JSON of `base`, with a hostile fragment spliced in for a value, or a few bytes flipped."""
    text = json_text(draw(base))
    mutation = draw(st.sampled_from(["none", "splice", "flip", "truncate"]))
    if mutation == "splice":
        for literal in ("null", "true", "false", '""', "0"):
            if literal in text:
                text = text.replace(literal, draw(st.sampled_from(HOSTILE_FRAGMENTS)), 1)
                break
    data = text.encode()
    if mutation == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1:]
    if mutation == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    return data


WINDOW = {"start": "2026-03-01T10:00:00Z", "end": "2026-03-01T10:10:00Z"}


def _tiny_files() -> dict[str, bytes]:
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        root = write_incident(tiny_incident(), Path(work) / "tiny")
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


TINY_FILES = _tiny_files()
ROW_FIELDS = ["timestamp", "service", "pod", "node", "metric", "value", "level", "message", "trace_id", "span_id",
              "parent_span_id", "operation", "start", "duration", "status", "kind", "reason"]

telemetry_bodies = st.fixed_dictionaries({
    "incident": st.one_of(st.just({"id": "fz", "alert": "slow", "window": WINDOW}), json_values,
                          st.fixed_dictionaries({"id": scalars, "alert": scalars, "window": st.one_of(
                              st.just(WINDOW), json_values), "alert_time": scalars, "scope": json_values})),
}, optional={name: st.one_of(st.lists(st.dictionaries(st.sampled_from(ROW_FIELDS), scalars, max_size=8),
                                      max_size=4), json_values)
             for name in ("metrics", "logs", "spans", "events")} | {"topology": json_values})


REQUIRED_ROWS = {"metrics": ["timestamp", "service", "metric", "value"],
                 "logs": ["timestamp", "service", "level", "message"],
                 "spans": ["trace_id", "span_id", "service", "operation", "start", "duration"],
                 "events": ["timestamp", "kind", "reason"]}
VALID_CELLS = {"timestamp": "2026-03-01T10:01:00Z", "start": "2026-03-01T10:01:00Z", "value": 1.5, "duration": 12.0,
               "service": "api", "metric": "cpu", "message": "GET /cart 200", "trace_id": "t1", "span_id": "a",
               "operation": "GET /", "kind": "deploy", "reason": "Deployed", "level": "info"}


@st.composite
def near_valid_telemetry(draw: st.DrawFn) -> dict[str, Any]:
    """A valid JSON incident whose rows then get random values in random cells: reaches the table checks."""
    body: dict[str, Any] = {"incident": {"id": "fz", "alert": "slow checkout", "window": WINDOW}}
    for table in draw(st.lists(st.sampled_from(sorted(REQUIRED_ROWS)), min_size=1, max_size=4, unique=True)):
        rows = []
        for _ in range(draw(st.integers(1, 4))):
            row = {column: VALID_CELLS[column] for column in REQUIRED_ROWS[table]}
            for column in draw(st.lists(st.sampled_from(ROW_FIELDS), max_size=2)):
                row[column] = draw(scalars)
            rows.append(row)
        body[table] = rows
    return body


@st.composite
def near_valid_chat(draw: st.DrawFn) -> dict[str, Any]:
    """A valid chat request with one field set to a random value: reaches generation."""
    body: dict[str, Any] = {"model": draw(st.sampled_from(["flipmoe", "logs"])),
                            "messages": [{"role": "user", "content": draw(st.text(min_size=1, max_size=30))}],
                            "stream": draw(st.booleans())}
    field = draw(st.sampled_from(["none", "max_tokens", "temperature", "top_p", "stop", "content", "role", "n"]))
    if field in ("content", "role"):
        body["messages"][0][field] = draw(json_values)
    elif field != "none":
        body[field] = draw(scalars)
    return body


@st.composite
def archives(draw: st.DrawFn) -> tuple[bytes, str]:
    """Tar (plain or gzipped) or zip uploads with hostile member names, types and sizes, maybe damaged."""
    names = st.one_of(st.sampled_from([".", "./", "incident.json", "a", "a/b", "a/", "../x", "/etc/x", "x/../../y",
                                       "c:evil", "x\x00y", "é/ü.csv", "a" * 300, "metrics.csv", "sub/incident.json",
                                       "baseline/logs.csv"]), st.text(min_size=1, max_size=12))
    members = draw(st.lists(st.tuples(names, st.sampled_from(["file", "dir", "symlink"]),
                                      st.one_of(st.binary(max_size=64),
                                                st.just(json.dumps({"id": "z", "alert": "a",
                                                                    "window": WINDOW}).encode()))),
                            max_size=6))
    if draw(st.booleans()):  # a real incident, with the hostile members added to it
        members = [("incident.json", "file", TINY_FILES["incident.json"]), *members,
                   *[(name, "file", data) for name, data in TINY_FILES.items() if name != "incident.json"]]
    kind = draw(st.sampled_from(["tar.gz", "tar", "zip"]))
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate names are part of the test
            for name, member_type, data in members:
                with contextlib.suppress(ValueError, IndexError):  # names zipfile itself cannot write
                    if member_type == "dir":
                        archive.writestr(name + "/", b"")
                    else:
                        archive.writestr(name, data)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz" if kind == "tar.gz" else "w", format=tarfile.PAX_FORMAT) as tar:
            for name, member_type, data in members:
                info = tarfile.TarInfo(name)
                info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[member_type]
                info.linkname = "/etc/passwd" if member_type == "symlink" else ""
                info.size = len(data) if member_type == "file" else 0
                with contextlib.suppress(ValueError):
                    tar.addfile(info, io.BytesIO(data) if member_type == "file" else None)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1:]
    content_type = {"tar.gz": "application/gzip", "tar": "application/x-tar", "zip": "application/zip"}[kind]
    return data, draw(st.sampled_from([content_type, "application/octet-stream", "application/json"]))


# -- the HTTP app --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("fuzz-serve")
    write_incident(tiny_incident(), root / "allowed" / "tiny")
    settings_ = ServeSettings(data_dir=root / "serve", allow_server_paths=True, server_path_root=root / "allowed",
                              max_request_bytes=256 * 1024, max_archive_bytes=1024 * 1024)
    # Alerts are accepted (a backend is configured); their jobs fail fast on the closed port, with no delivery.
    config = FlipmoeConfig(loki=LokiConfig(url=closed_port_url(), queries=['{a="b"}'], retries=0))
    with TestClient(create_app(settings_, analyzer=stub_analyzer, models=StubModels(), config=config)) as test_client:
        yield test_client


def assert_handled(answer: httpx.Response) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    assert "Traceback" not in answer.text
    if answer.status_code >= 400 and answer.request.method != "HEAD":  # HEAD answers carry no body
        error = answer.json()["error"]
        assert error["status"] == answer.status_code and "\n" not in error["message"]


@FUZZ
@given(body=st.one_of(spliced_json(telemetry_bodies), near_valid_telemetry().map(lambda b: json_text(b).encode())))
def test_fuzz_json_incident_submissions(client: TestClient, body: bytes) -> None:
    CASES["POST /v1/incidents json"] += 1
    assert_handled(client.post("/v1/incidents", content=body, headers={"content-type": "application/json"}))


@FUZZ
@given(upload=archives())
def test_fuzz_archive_submissions(client: TestClient, upload: tuple[bytes, str]) -> None:
    CASES["POST /v1/incidents archive"] += 1
    data, content_type = upload
    assert_handled(client.post("/v1/incidents", content=data, headers={"content-type": content_type}))


@FUZZ
@given(body=st.binary(max_size=300), content_type=st.one_of(
    st.sampled_from(["application/json", "application/gzip", "application/zip", "text/plain", "",
                     "application/json; charset=utf-16", "multipart/form-data; boundary=x"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)),
    path=st.one_of(st.text(max_size=20), st.sampled_from(["tiny", "../tiny", "/etc", ".", "tiny\x00"])))
def test_fuzz_raw_submissions_and_server_paths(client: TestClient, body: bytes, content_type: str, path: str) -> None:
    CASES["POST /v1/incidents raw/path"] += 2
    assert_handled(client.post("/v1/incidents", content=body, headers={"content-type": content_type}))
    assert_handled(client.post("/v1/incidents", content=json.dumps({"path": path}).encode(),
                               headers={"content-type": "application/json"}))


@FUZZ
@given(job_id=st.text(max_size=80), key=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                                                max_size=300))
def test_fuzz_job_lookups_and_idempotency_keys(client: TestClient, job_id: str, key: str) -> None:
    CASES["GET /v1/incidents/{id}"] += 3
    quoted = urllib.parse.quote(job_id, safe="")
    assert_handled(client.get(f"/v1/incidents/{quoted}"))
    assert_handled(client.get(f"/v1/incidents/{quoted}/report.html"))
    assert_handled(client.post("/v1/incidents", content=b"{}",
                               headers={"content-type": "application/json", "idempotency-key": key}))


@st.composite
def near_valid_alertmanager(draw: st.DrawFn) -> dict[str, Any]:
    """An Alertmanager webhook payload with one field (of the payload or of its alert) set to a random value."""
    alert: dict[str, Any] = {"status": "firing", "labels": {"alertname": "A", "service": "api"}, "annotations": {},
                             "startsAt": draw(st.sampled_from(["2026-03-01T10:00:00Z", "0001-01-01T00:00:00Z",
                                                               "9999-12-31T23:59:59.999999999Z",
                                                               "2026-03-01T10:00:00.123456789+05:30"])),
                             "endsAt": "0001-01-01T00:00:00Z", "fingerprint": draw(st.text(max_size=8))}
    body: dict[str, Any] = {"version": "4", "groupKey": draw(st.text(min_size=1, max_size=20)), "status": "firing",
                            "receiver": "r", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                            "externalURL": "", "truncatedAlerts": 0, "alerts": [alert]}
    target = draw(st.sampled_from([body, alert]))
    field = draw(st.sampled_from(sorted(target)))
    if draw(st.booleans()):
        target[field] = draw(json_values)
    return body


@FUZZ
@given(body=st.one_of(spliced_json(near_valid_alertmanager()), near_valid_alertmanager().map(
    lambda b: json_text(b).encode())))
def test_fuzz_alertmanager_webhook(client: TestClient, body: bytes) -> None:
    CASES["POST /v1/alertmanager"] += 1
    assert_handled(client.post("/v1/alertmanager", content=body, headers={"content-type": "application/json"}))


generate_bodies = st.fixed_dictionaries({}, optional={
    "prompt": st.one_of(st.text(max_size=40), json_values), "task": st.one_of(st.none(), scalars),
    "max_tokens": scalars, "stop": st.one_of(st.lists(st.text(max_size=5), max_size=10), json_values),
    "temperature": scalars, "top_p": scalars, "extra": scalars})
chat_bodies = st.fixed_dictionaries({"model": st.one_of(st.sampled_from(["flipmoe", "logs", "nope"]), scalars)},
                                    optional={
    "messages": st.one_of(st.lists(st.fixed_dictionaries({
        "role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), scalars),
        "content": st.one_of(st.text(max_size=30), st.lists(st.dictionaries(
            st.sampled_from(["type", "text"]), st.one_of(st.just("text"), json_values), max_size=2), max_size=3),
            json_values)}), max_size=3), json_values),
    "max_tokens": scalars, "max_completion_tokens": scalars, "temperature": scalars, "top_p": scalars,
    "stop": st.one_of(st.text(max_size=5), json_values), "stream": st.one_of(st.booleans(), scalars),
    "n": scalars, "user": json_values})


@FUZZ
@given(route=spliced_json(generate_bodies), generate=spliced_json(generate_bodies),
       chat=st.one_of(spliced_json(chat_bodies), near_valid_chat().map(lambda b: json_text(b).encode())),
       name=st.sampled_from(["logs", "flipmoe", "nope", "%00", "..%2F.."]))
def test_fuzz_model_endpoints(client: TestClient, route: bytes, generate: bytes, chat: bytes, name: str) -> None:
    CASES["POST model endpoints"] += 3
    headers = {"content-type": "application/json"}
    assert_handled(client.post("/v1/route", content=route, headers=headers))
    assert_handled(client.post(f"/v1/experts/{name}/generate", content=generate, headers=headers))
    assert_handled(client.post("/v1/chat/completions", content=chat, headers=headers))


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
       path=st.sampled_from(["/healthz", "/metrics", "/v1/models", "/v1/incidents", "/v1/route", "/v1/chat/completions",
                             "/v1/experts/logs/generate", "/v1/alertmanager", "/", "/docs", "/openapi.json"]),
       suffix=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=10),
       headers=st.dictionaries(st.sampled_from(["content-length", "content-type", "authorization", "idempotency-key"]),
                               st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
                               max_size=3))
def test_fuzz_every_route_and_method(client: TestClient, method: str, path: str, suffix: str,
                                     headers: dict[str, str]) -> None:
    CASES["any route"] += 1
    url = path + urllib.parse.quote(suffix, safe="/")
    assert_handled(client.request(method, url, headers=headers))


# -- importers -----------------------------------------------------------------------------------------

def run_importer(argv: list[str]) -> None:
    """The CLI on `argv`: exit 0, or 2 with one-line errors; never an exception or a traceback."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    assert code in (0, 2), (code, err.getvalue())
    assert "Traceback" not in err.getvalue()
    if code == 2:
        assert any(line.startswith("flipmoe: error: ") for line in err.getvalue().splitlines()), err.getvalue()


csv_cells = st.one_of(scalars.map(lambda v: "" if v is None else str(v)),
                      st.sampled_from(["1e999", "-1e999", "nan", "inf", "1e300", "9" * 400, "00:00", "\x00", "é",
                                       '"quoted, comma"', "line\nbreak"]))
CSV_TABLES = {"spans": ["trace_id", "span_id", "parent_span_id", "service", "pod", "operation", "start", "duration",
                        "status"],
              "metrics": ["timestamp", "service", "pod", "node", "metric", "value"],
              "logs": ["timestamp", "service", "pod", "level", "message", "trace_id", "span_id"],
              "events": ["timestamp", "kind", "reason", "service", "pod", "node", "message"]}


@FUZZ
@given(table=st.sampled_from(sorted(CSV_TABLES)), data=st.data(), unit=st.sampled_from(["us", "ms", "s"]))
def test_fuzz_import_csv(tmp_path_factory: pytest.TempPathFactory, table: str, data: st.DataObject,
                         unit: str) -> None:
    CASES["import csv"] += 1
    work = tmp_path_factory.mktemp("csv")
    columns = data.draw(st.lists(st.sampled_from(CSV_TABLES[table]), min_size=1, unique=True))
    rows = data.draw(st.lists(st.lists(csv_cells, min_size=len(columns), max_size=len(columns) + 1), max_size=4))
    source = work / f"{table}.csv"
    with source.open("w", newline="", encoding="utf-8", errors="surrogatepass") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    run_importer(["import", "csv", f"--{table}", str(source), "--duration-unit", unit, "--out", str(work / "out")])


otlp_lines = st.one_of(
    st.builds(otlp_span, service=st.text(max_size=8).map(lambda t: json.dumps(t)[1:-1]),
              name=st.sampled_from(["GET /", "\\ud800", "x\\u0000y", "é"])),
    spliced_json(st.fixed_dictionaries({}, optional={
        key: st.lists(st.fixed_dictionaries({}, optional={
            "resource": json_values, "scopeSpans": json_values, "scopeLogs": json_values,
            "scopeMetrics": json_values}), max_size=2) for key in ("resourceSpans", "resourceLogs", "resourceMetrics")
    })).map(lambda b: b.decode("utf-8", "replace")),
    json_values.map(json_text))


@FUZZ
@given(lines=st.lists(otlp_lines, min_size=1, max_size=3), gzipped=st.booleans())
def test_fuzz_import_otlp(tmp_path_factory: pytest.TempPathFactory, lines: list[str], gzipped: bool) -> None:
    import gzip

    CASES["import otlp"] += 1
    work = tmp_path_factory.mktemp("otlp")
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    source = work / "batch.json"
    source.write_bytes(gzip.compress(data)[: -3 if len(lines) > 2 else None] if gzipped else data)
    run_importer(["import", "otlp", str(source), "--out", str(work / "out")])


@FUZZ
@given(fault_list=spliced_json(st.one_of(json_values, st.dictionaries(st.sampled_from(["08", "14", "x"]), st.lists(
    st.fixed_dictionaries({}, optional={"inject_time": scalars, "inject_pod": scalars, "inject_type": st.one_of(
        st.sampled_from(["cpu_contention", "return", "exception"]), scalars), "inject_timestamp": scalars}),
    max_size=2), max_size=2))), root_causes=spliced_json(json_values), log_line=st.text(max_size=60))
def test_fuzz_import_nezha(tmp_path_factory: pytest.TempPathFactory, fault_list: bytes, root_causes: bytes,
                           log_line: str) -> None:
    CASES["import nezha"] += 1
    parse_log_line(log_line)
    parse_log_line('{"log": "' + log_line.replace("\\", "\\\\").replace('"', '\\"') + '\\ud800", "stream": 1}')
    root = tmp_path_factory.mktemp("nezha")
    day = root / "rca_data" / "2023-01-29"
    day.mkdir(parents=True)
    (day / "2023-01-29-fault_list.json").write_bytes(fault_list)
    (root / "construct_data").mkdir()
    (root / "construct_data" / "root_cause_ts.json").write_bytes(root_causes)
    run_importer(["import", "nezha", str(root), "--out", str(root / "out")])


@FUZZ
@given(which=st.sampled_from(["metrics", "logs", "traces", "nodes", "edges", "label"]),
       content=st.one_of(spliced_json(st.one_of(json_values, st.dictionaries(st.sampled_from(["7", "9", "x"]),
                                                                             json_values, max_size=3))),
                         st.text(max_size=80).map(str.encode)))
def test_fuzz_import_tvdiag(tmp_path_factory: pytest.TempPathFactory, which: str, content: bytes) -> None:
    CASES["import tvdiag"] += 1
    release = write_release(tmp_path_factory.mktemp("tvdiag") / "release")
    target = release / "shop" / ("label.csv" if which == "label" else f"raw/{which}.json")
    target.write_bytes(content)
    run_importer(["import", "tvdiag", str(release), "--out", str(release.parent / "out")])


@FUZZ
@given(body=st.one_of(spliced_json(st.fixed_dictionaries({"status": st.sampled_from(["success", "error"])}, optional={
    "data": st.one_of(json_values, st.fixed_dictionaries({"resultType": st.sampled_from(["matrix", "vector"]),
                                                          "result": st.lists(st.fixed_dictionaries({}, optional={
                                                              "metric": json_values, "values": json_values}),
                                                              max_size=2)})),
    "errorType": scalars, "error": scalars})), st.binary(max_size=40)),
    status=st.sampled_from([200, 400, 422, 500, 503]))
def test_fuzz_import_prometheus(tmp_path_factory: pytest.TempPathFactory, body: bytes, status: int) -> None:
    import flipmoe.importers.prometheus as prometheus

    CASES["import prometheus"] += 1
    work = tmp_path_factory.mktemp("prometheus")
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body,
                                                                   headers={"content-type": "application/json"}))
    real_client = httpx.Client

    def mocked_client(*args: Any, **kwargs: Any) -> httpx.Client:
        return real_client(*args, **kwargs, transport=transport)

    with mock.patch.object(prometheus.httpx, "Client", mocked_client), \
            mock.patch("flipmoe.net.time.sleep", lambda seconds: None):
        run_importer(["import", "prometheus", "--url", "http://prometheus.invalid:9090", "--query", "cpu=up",
                      "--start", "2026-03-01T10:00:00Z", "--end", "2026-03-01T10:10:00Z", "--out", str(work / "out")])

