"""The Nezha importer on tests/fixtures/nezha (two faults of the TrainTicket day; see its DERIVED.md)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from flipmoe.cli import main
from flipmoe.config import FlipmoeConfig, ImportConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.importers.nezha import NezhaImportError, import_nezha, parse_log_line, service_of_pod
from flipmoe.telemetry import read_incident
from flipmoe.telemetry.label import load_label

FIXTURE = Path(__file__).parent / "fixtures" / "nezha"
DAY = "rca_data/2023-01-29"
RETURN_ID = str(int(pd.Timestamp("2023-01-29 08:43:04", tz="UTC").timestamp()))
CPU_ID = str(int(pd.Timestamp("2023-01-29 14:49:57", tz="UTC").timestamp()))
CONTACTS_POD = "ts-contacts-service-866bd68c97-xcqfx"
FOOD_POD = "ts-food-service-f5756978c-k8vqf"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[str], list[str]]:
    """The fixture imported once with the default config: (out, paths, warnings, progress lines)."""
    out = tmp_path_factory.mktemp("nezha") / "incidents"
    warnings: list[str] = []
    progress: list[str] = []
    paths = import_nezha(FIXTURE, out, progress=progress.append, warnings=warnings)
    return out, paths, warnings, progress


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A copy of the fixture that a test may damage."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "nezha"))


def _incident_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_one_incident_per_fault_named_by_utc_inject_time(imported):
    out, paths, _, progress = imported
    assert sorted(p.name for p in paths) == [RETURN_ID, CPU_ID] == _incident_dirs(out)
    assert RETURN_ID == "1674981784"  # inject_time read as UTC; the file's inject_timestamp says 1674953044
    assert sum(line.startswith("wrote ") for line in progress) == 2


def test_alert_and_window_say_when_but_not_what(imported):
    out, *_ = imported
    incident = read_incident(out / RETURN_ID)
    meta = incident.meta
    defaults = ImportConfig()
    assert meta.alert == "TrainTicket: anomaly reported around 08:43:04 UTC"
    assert meta.alert_time == pd.Timestamp("2023-01-29 08:43:04", tz="UTC")
    assert meta.window.start == meta.alert_time - pd.Timedelta(minutes=defaults.window_before_minutes)
    assert meta.window.end == meta.alert_time + pd.Timedelta(minutes=defaults.window_after_minutes)
    assert meta.source == "nezha" and meta.scope is None
    text = (out / RETURN_ID / "incident.json").read_text()
    for answer in ("contacts", CONTACTS_POD, "return", "code_wrong_result"):
        assert answer not in text


def test_label_goes_only_to_label_json(imported):
    out, *_ = imported
    incident = read_incident(out / RETURN_ID)
    assert not hasattr(incident, "label")
    label = load_label(out / RETURN_ID)
    assert label is not None
    assert (label.service, label.pod, label.node) == ("ts-contacts-service", CONTACTS_POD, "33.33.33.79")
    assert (label.fault_type, label.original_type) == ("code_wrong_result", "return")
    assert label.fine_grained == "c.s.ContactsServiceImpl#31_c.s.ContactsServiceImpl#34"
    assert (label.inject_time, label.source) == ("2023-01-29T08:43:04Z", "nezha")
    cpu = load_label(out / CPU_ID)
    assert cpu is not None
    assert (cpu.service, cpu.pod, cpu.fault_type, cpu.original_type) == (
        "ts-food-service", FOOD_POD, "cpu_contention", "cpu_contention")
    assert cpu.fine_grained == "CpuUsageRate(%)"


def test_metrics_long_format_with_history_and_placement(imported):
    out, *_ = imported
    incident = read_incident(out / CPU_ID)
    metrics = incident.metrics
    assert metrics is not None
    history_start = incident.meta.window.start - pd.Timedelta(minutes=ImportConfig().history_minutes)
    assert metrics["timestamp"].min() >= history_start
    assert metrics["timestamp"].min() - history_start < pd.Timedelta(minutes=1)
    assert metrics["timestamp"].max() < incident.meta.window.end
    assert set(metrics["service"]) == {"frontend", "ts-contacts-service", "ts-food-service",
                                       "ts-order-service", "ts-gateway-service", "ts-travel-service"}
    frontend = metrics[metrics["service"] == "frontend"]
    assert frontend["pod"].isna().all() and frontend["node"].isna().all()
    assert {"LatencyP90(s)", "SuccessRate(%)"} <= set(frontend["metric"])
    food = metrics[metrics["pod"] == FOOD_POD]
    assert {"CpuUsageRate(%)", "NodeCpuUsageRate(%)", "PodClientLatencyP90(s)"} <= set(food["metric"])
    assert food["node"].nunique() == 1 and food["node"].iloc[0] == incident.topology.placement[FOOD_POD]
    assert metrics["value"].notna().all()


def test_metric_values_match_the_wide_file(imported):
    out, *_ = imported
    metrics = read_incident(out / CPU_ID).metrics
    wide = pd.read_csv(FIXTURE / DAY / "metric" / f"{FOOD_POD}_metric.csv.gz")
    row = wide[wide["TimeStamp"] == 1675003750].iloc[0]  # 14:49:10 UTC
    sample = metrics[(metrics["pod"] == FOOD_POD) & (metrics["metric"] == "CpuUsageRate(%)")
                     & (metrics["timestamp"] == pd.Timestamp("2023-01-29 14:49:10", tz="UTC"))]
    assert sample["value"].tolist() == [pytest.approx(row["CpuUsageRate(%)"])]


def test_logs_levels_messages_and_utc_timestamps(imported):
    out, *_ = imported
    incident = read_incident(out / RETURN_ID)
    logs = incident.logs
    assert logs is not None
    window = incident.meta.window
    assert logs["timestamp"].between(window.start, window.end, inclusive="left").all()
    assert set(logs["level"]) <= {"INFO", "WARN", "ERROR"} and {"INFO", "WARN", "ERROR"} <= set(logs["level"])
    assert not logs["message"].str.endswith("\n").any()
    assert not logs["message"].str.match(r"\d{2}:\d{2}:\d{2}\.\d{3} ").any()  # the UTC+8 header is gone
    raw = pd.read_csv(FIXTURE / DAY / "log" / "08_44_log.csv.gz").iloc[0]
    line = json.loads(raw["Log"])["log"]
    without_header = line.split(" ", 2)[2].strip()
    row = logs[(logs["span_id"] == raw["SpanID"]) & (logs["message"] == without_header)]
    assert row["timestamp"].tolist() == [pd.Timestamp(raw["Timestamp"])]
    assert row["trace_id"].tolist() == [raw["TraceID"]]
    assert row["service"].tolist() == [service_of_pod(raw["PodName"])]


def test_spans_keep_their_tree(imported):
    out, *_ = imported
    spans = read_incident(out / RETURN_ID).spans
    assert spans is not None
    ids = set(zip(spans["trace_id"], spans["span_id"], strict=True))
    children = spans[spans["parent_span_id"].notna()]
    assert all((t, p) in ids for t, p in zip(children["trace_id"], children["parent_span_id"], strict=True))
    assert spans.groupby("trace_id")["parent_span_id"].apply(lambda s: s.isna().sum()).eq(1).all()
    assert set(spans["status"]) == {"unset"}
    raw = pd.read_csv(FIXTURE / DAY / "trace" / "08_44_trace.csv.gz", dtype={"SpanID": str}).iloc[1]
    span = spans[spans["span_id"] == raw["SpanID"]].iloc[0]
    assert span["duration"] == pytest.approx(raw["Duration"] / 1000)
    assert span["start"] == pd.Timestamp(int(raw["StartTimeUnixNano"]), unit="ns", tz="UTC")
    assert (span["pod"], span["service"]) == (raw["PodName"], service_of_pod(raw["PodName"]))


def test_baseline_and_topology(imported):
    out, *_ = imported
    incident = read_incident(out / RETURN_ID)
    baseline = incident.baseline
    assert baseline is not None and baseline.modalities == ["metrics", "logs", "spans"]
    assert baseline.logs["timestamp"].min() >= pd.Timestamp("2023-01-29 08:48", tz="UTC")
    # The metrics of the minute file 08_50 names (08:49-08:51), though its rows cover only seconds.
    assert sorted(baseline.metrics["timestamp"].dt.strftime("%H:%M").unique()) == ["08:49", "08:50"]
    topology = incident.topology
    assert topology is not None
    assert topology.edges == _expected_edges()
    assert topology.placement[CONTACTS_POD] == "33.33.33.79"


def _expected_edges() -> list[tuple[str, str]]:
    """Caller -> callee services of every parent -> child link in the fixture's trace files."""
    spans = pd.concat([pd.read_csv(path, dtype=str) for path in FIXTURE.rglob("*_trace.csv*")])
    spans["service"] = spans["PodName"].map(service_of_pod)
    links = spans.merge(spans, left_on=["TraceID", "ParentID"], right_on=["TraceID", "SpanID"],
                        suffixes=("", "_parent"))
    return sorted({(p, c) for p, c in zip(links["service_parent"], links["service"], strict=True) if p != c})


def test_warns_when_metrics_miss_part_of_the_history(imported):
    _, _, warnings, _ = imported
    assert any(f"incident {RETURN_ID}: metrics start at" in w for w in warnings)
    assert not any(f"incident {CPU_ID}: metrics start at" in w for w in warnings)


def test_warns_when_a_window_holds_another_injection(tmp_path):
    warnings: list[str] = []
    config = FlipmoeConfig(imports=ImportConfig(window_after_minutes=400))
    import_nezha(FIXTURE, tmp_path / "out", config=config, warnings=warnings)
    assert any(f"incident {RETURN_ID}: its window also holds the injection of incident {CPU_ID}" in w
               for w in warnings)


def test_missing_log_files_leave_logs_absent(dataset, tmp_path):
    for minute in ("14_49", "14_50"):
        (dataset / DAY / "log" / f"{minute}_log.csv.gz").unlink()
    (dataset / DAY / "log" / "14_51_log.csv").unlink()
    warnings: list[str] = []
    import_nezha(dataset, tmp_path / "out", warnings=warnings)
    incident = read_incident(tmp_path / "out" / CPU_ID)
    assert incident.logs is None and incident.spans is not None and incident.metrics is not None
    assert any(f"incident {CPU_ID}: no logs" in w for w in warnings)
    assert read_incident(tmp_path / "out" / RETURN_ID).logs is not None


def test_plain_and_gzipped_csv_import_alike(dataset, tmp_path, imported):
    for path in list(dataset.rglob("*.csv.gz")):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    import_nezha(dataset, tmp_path / "out")
    reference, *_ = imported
    for incident_id in (RETURN_ID, CPU_ID):
        plain, gz = read_incident(tmp_path / "out" / incident_id), read_incident(reference / incident_id)
        for name in ("metrics", "logs", "spans"):
            pd.testing.assert_frame_equal(plain.telemetry.table(name), gz.telemetry.table(name))


def test_overlapping_files_keep_each_row_once(dataset, tmp_path, imported):
    # Nezha's minute files overlap; a copy under a neighbouring minute's name must not double rows.
    log_dir, trace_dir = dataset / DAY / "log", dataset / DAY / "trace"
    shutil.copyfile(log_dir / "08_44_log.csv.gz", log_dir / "08_46_log.csv.gz")
    shutil.copyfile(trace_dir / "08_44_trace.csv.gz", trace_dir / "08_46_trace.csv.gz")
    import_nezha(dataset, tmp_path / "out")
    reference, *_ = imported
    copied, original = read_incident(tmp_path / "out" / RETURN_ID), read_incident(reference / RETURN_ID)
    assert len(copied.logs) == len(original.logs) and len(copied.spans) == len(original.spans)


def test_malformed_csv_line_is_skipped_with_a_warning(dataset, tmp_path):
    path = dataset / DAY / "log" / "14_51_log.csv"
    with path.open("a", encoding="utf-8") as handle:
        handle.write('2023-01-29T14:50:01Z,1,n,p,c,t,s,"{""log"":""x""}",extra,fields\n')
    warnings: list[str] = []
    import_nezha(dataset, tmp_path / "out", warnings=warnings)
    assert any(str(path) in w and "skipped 1 malformed line" in w for w in warnings)


def test_truncated_gzip_fails_its_fault_only_and_names_the_file(dataset, tmp_path):
    bad = dataset / DAY / "trace" / "08_44_trace.csv.gz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "out"
    with pytest.raises(NezhaImportError) as caught:
        import_nezha(dataset, out)
    assert [p.name for p in caught.value.written] == [CPU_ID]
    assert len(caught.value.failures) == 1 and str(bad) in caught.value.failures[0]
    assert "truncated or corrupt gzip" in caught.value.failures[0]
    assert _incident_dirs(out) == [CPU_ID]  # no partial directory, no hidden staging directory left


def test_empty_file_is_an_error_naming_it(dataset, tmp_path):
    empty = dataset / DAY / "log" / "14_50_log.csv.gz"
    empty.write_bytes(b"")
    with pytest.raises(NezhaImportError) as caught:
        import_nezha(dataset, tmp_path / "out")
    assert [p.name for p in caught.value.written] == [RETURN_ID]
    assert f"{empty}: file is empty" in caught.value.failures[0]


def test_unknown_fault_type_fails_that_fault(dataset, tmp_path):
    fault_list = dataset / DAY / "2023-01-29-fault_list.json"
    faults = json.loads(fault_list.read_text())
    faults["14"][0]["inject_type"] = "disk_full"
    fault_list.write_text(json.dumps(faults))
    with pytest.raises(NezhaImportError) as caught:
        import_nezha(dataset, tmp_path / "out")
    assert [p.name for p in caught.value.written] == [RETURN_ID]
    assert "'disk_full'" in caught.value.failures[0] and f"fault {CPU_ID}" in caught.value.failures[0]


@pytest.mark.parametrize("damage, problem", [
    (lambda path: path.unlink(), "fault list not found"),
    (lambda path: path.write_text('{"08": [ {"inject_time": '), "not valid JSON"),
    (lambda path: path.write_text('["not", "grouped"]'), "must hold an object"),
])
def test_bad_fault_list_fails_its_date_naming_the_file(dataset, tmp_path, damage, problem):
    fault_list = dataset / DAY / "2023-01-29-fault_list.json"
    damage(fault_list)
    with pytest.raises(NezhaImportError) as caught:
        import_nezha(dataset, tmp_path / "out")
    assert caught.value.written == []
    assert str(fault_list) in caught.value.failures[0] and problem in caught.value.failures[0]


def test_bad_root_cause_file_is_refused_before_writing(dataset, tmp_path):
    (dataset / "construct_data" / "root_cause_ts.json").write_text("{oops")
    with pytest.raises(FlipmoeInputError, match="root_cause_ts.json: not valid JSON"):
        import_nezha(dataset, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_without_construct_data_there_is_no_baseline_nor_fine_grained_label(dataset, tmp_path):
    shutil.rmtree(dataset / "construct_data")
    import_nezha(dataset, tmp_path / "out")
    assert read_incident(tmp_path / "out" / RETURN_ID).baseline is None
    label = load_label(tmp_path / "out" / RETURN_ID)
    assert label is not None and label.fine_grained is None


def test_config_sets_the_window(tmp_path):
    config = FlipmoeConfig(imports=ImportConfig(history_minutes=10, window_before_minutes=1,
                                                window_after_minutes=3))
    import_nezha(FIXTURE, tmp_path / "out", config=config)
    incident = read_incident(tmp_path / "out" / CPU_ID)
    assert incident.meta.window.to_json() == {"start": "2023-01-29T14:48:57Z", "end": "2023-01-29T14:52:57Z"}
    assert incident.metrics["timestamp"].min() >= pd.Timestamp("2023-01-29 14:38:57", tz="UTC")


def test_cli_writes_incidents_and_exits_0(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["import", "nezha", str(FIXTURE), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("wrote ") == 2 and "imported 2 incident(s)" in stdout
    assert main(["import", "nezha", str(FIXTURE), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["import", "nezha", str(FIXTURE), "--out", str(out), "--overwrite"]) == 0


def test_cli_exits_2_on_bad_roots(tmp_path, capsys):
    assert main(["import", "nezha", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["import", "nezha", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no rca_data/ directory" in capsys.readouterr().err


def test_cli_exits_2_and_names_the_file_when_a_fault_fails(dataset, tmp_path, capsys):
    bad = dataset / DAY / "log" / "08_43_log.csv.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    assert main(["import", "nezha", str(dataset), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert str(bad) in captured.err and "imported 1 incident(s)" in captured.out


@pytest.mark.parametrize("record, level, message", [
    ('{"log":"16:42:22.382 INFO  t.s.TravelServiceImpl#532 TraceID: a SpanID: b [x]\\n","stream":"stdout"}',
     "INFO", "t.s.TravelServiceImpl#532 TraceID: a SpanID: b [x]"),
    ('{"log":"16:57:14.166 ERROR  c.s.ContactsServiceImpl#37 boom\\n"}', "ERROR",
     "c.s.ContactsServiceImpl#37 boom"),
    ("2023-01-29 08:42:22,382 [WARNING] slow", "WARN", "slow"),
    ("2023/01/29 08:42:22 [INFO] listening on :8080", "INFO", "listening on :8080"),
    # Other shapes keep the whole line (None: the message is the record itself).
    ("E0129 08:42:22.382312       1 main.go:42] dial failed", "ERROR", None),
    ('{"severity":"warning","message":"retrying","timestamp":"2023-01-29T08:42:22Z"}', "WARN", None),
    ('{"level":50,"msg":"payment failed"}', "ERROR", None),
    ('time="2023-01-29T08:42:22Z" level=debug msg="cache miss"', "DEBUG", None),
    ("INFO:root:started", "INFO", None),
    ("info: Microsoft.Hosting.Lifetime[0]", "INFO", None),
    ("2023-01-29 08:42:22,382 - app - ERROR - failed", "ERROR", None),
    ("Error connecting to the database", "UNKNOWN", None),
    ("\tat org.example.Foo.bar(Foo.java:12)", "UNKNOWN", None),
    ('{"log":"\\n"}', "UNKNOWN", ""),
])
def test_parse_log_line(record, level, message):
    assert parse_log_line(record) == (level, record if message is None else message)


def test_parse_log_line_refuses_a_broken_docker_record():
    assert parse_log_line('{"log":"16:42:22.382 INFO cut off') is None


@pytest.mark.parametrize("pod, service", [
    ("ts-order-service-5b67c48447-mv5hb", "ts-order-service"),
    ("ts-ui-dashboard-5477b965f-2chkr", "ts-ui-dashboard"),
    ("ts-station-food-service-dc4d75dd-fw6ft", "ts-station-food-service"),
    ("redis-cart-74594bd569-2jb6z", "redis-cart"),
    ("ts-admin-basic-info-service", "ts-admin-basic-info-service"),
])
def test_service_of_pod(pod, service):
    assert service_of_pod(pod) == service
