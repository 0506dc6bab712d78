"""`flipmoe import csv`: CSV files with their own column names -> incident directory, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flipmoe.cli import main
from flipmoe.errors import FlipmoeInputError
from flipmoe.importers.csv_import import CsvMapping, TableMapping, import_csv, with_overrides
from flipmoe.telemetry import Incident, read_incident

FIXTURES = Path(__file__).parent / "fixtures" / "csv"
T0 = pd.Timestamp("2024-05-14T09:30:00Z")
SPAN_HEADER = "trace_id,span_id,parent_span_id,service,operation,start,duration\n"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Incident, list[str]]:
    warnings: list[str] = []
    out = import_csv(tmp_path_factory.mktemp("csv") / "payment-timeouts",
                     mapping=CsvMapping.load(FIXTURES / "mapping.yaml"), warnings=warnings)
    return read_incident(out), warnings


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _spans_mapping(path: Path, **options: str) -> CsvMapping:
    return CsvMapping(spans=TableMapping(file=str(path)), **options)  # type: ignore[arg-type]


# --- end to end on the fixtures ---------------------------------------------------------------------

def test_naive_timestamps_are_read_in_the_mapping_timezone(imported: tuple[Incident, list[str]]) -> None:
    logs = imported[0].logs
    # 17:30:11 in Shanghai (UTC+8) is 09:30:11 UTC.
    assert logs["timestamp"].tolist() == [T0 + pd.Timedelta(s) for s in ("11s", "12.295s", "20.01s")]
    assert logs["level"].tolist() == ["WARN", "ERROR", "INFO"]
    assert set(logs["service"]) == {"payment"} and set(logs["pod"]) == {"payment-6b7c8d9e0-m3n4o"}
    assert logs["trace_id"].iloc[0] == "5b8efff798038103d269b633813fc60c"


def test_spans_convert_offsets_units_statuses_and_parents(imported: tuple[Incident, list[str]]) -> None:
    spans = imported[0].spans.set_index("span_id")
    assert spans.loc["a5b2c3d4e5f60718", "start"] == T0 + pd.Timedelta("10.013s")
    assert spans.loc["a5b2c3d4e5f60718", "duration"] == pytest.approx(2283.0)  # 2283000 us
    assert spans.loc["a5b2c3d4e5f60718", "parent_span_id"] == "a3b2c3d4e5f60718"
    assert spans["status"].tolist() == ["unset", "error", "error", "ok", "unset"]
    assert spans["parent_span_id"].isna().sum() == 2


def test_metrics_events_topology_and_warnings(imported: tuple[Incident, list[str]]) -> None:
    incident, warnings = imported
    metrics = incident.metrics
    assert metrics["timestamp"].min() == T0  # epoch milliseconds
    assert metrics["metric"].value_counts().to_dict() == {"cpu_usage_percent": 2,
                                                          "memory_working_set_bytes": 2}
    assert incident.events["reason"].tolist() == ["Deployed", "Unhealthy"]
    assert incident.topology is not None
    assert incident.topology.edges == [("checkout", "payment"), ("frontend", "checkout")]
    assert incident.topology.placement == {"frontend-7d9f8b6c5-x2k4p": "node-a",
                                           "payment-6b7c8d9e0-m3n4o": "node-b"}
    assert incident.meta.id == "payment-timeouts" and incident.meta.source == "csv"
    assert incident.meta.window.start == pd.Timestamp("2024-05-14T09:29:40Z")
    assert incident.meta.window.end == pd.Timestamp("2024-05-14T09:31:01Z")
    assert any("metrics.csv: dropped 1 metric row(s) with NaN" in w for w in warnings)
    assert any("spans_offset.csv: ignored column(s) Kind" in w for w in warnings)


def test_baseline_files_become_the_baseline(tmp_path: Path) -> None:
    mapping = CsvMapping.load(FIXTURES / "mapping.yaml")
    mapping.metrics.baseline_file = str(FIXTURES / "metrics.csv")
    incident = read_incident(import_csv(tmp_path / "inc", mapping=mapping))
    assert incident.baseline is not None and incident.baseline.modalities == ["metrics"]


# --- mapping: YAML, validation, command-line overrides ---------------------------------------------------

def test_command_line_values_override_the_yaml() -> None:
    base = CsvMapping(logs=TableMapping(file="a.csv", columns={"message": "msg", "level": "sev"},
                                        constants={"service": "checkout"}), timezone="UTC")
    merged = with_overrides(base, files={"logs": "b.csv"}, columns={"logs": {"service": "svc"}},
                            constants={"logs": {"level": "INFO"}}, timezone="+08:00", duration_unit="us")
    assert merged.logs == TableMapping(file="b.csv", columns={"message": "msg", "service": "svc"},
                                       constants={"level": "INFO"})
    assert (merged.timezone, merged.duration_unit) == ("+08:00", "us")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"columns": {"logz": {"a": "b"}}}, "unknown table(s) logz"),
    ({"columns": {"logs": {"latency": "x"}}, "files": {"logs": "x.csv"}}, "latency is not a logs column"),
    ({"constants": {"spans": {"service": "x"}}}, "columns of spans are mapped, but no spans file"),
    ({"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
    ({"duration_unit": "min"}, "duration_unit 'min' is not one of us, ms, s"),
])
def test_bad_overrides_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(FlipmoeInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        with_overrides(CsvMapping(), **kwargs)


@pytest.mark.parametrize(("yaml", "message"), [
    ("logs:\n  file: a.csv\n  colums: {message: msg}\n", "unknown key(s) 'colums' in logs"),
    ("metrics:\n  file: a.csv\n  columns: {value: v}\n  constants: {value: 1}\n",
     "both a source column and a constant"),
    ("spans:\n  file: a.csv\n  columns: {duration: [a, b]}\n", "columns.duration must be a column name"),
    ("frobnicate: 1\n", "unknown key(s) 'frobnicate'"),
])
def test_bad_mapping_yaml_is_refused_with_its_path(tmp_path: Path, yaml: str, message: str) -> None:
    path = _csv(tmp_path / "mapping.yaml", yaml)
    with pytest.raises(FlipmoeInputError) as err:
        CsvMapping.load(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_mapping_files_are_relative_to_the_yaml(tmp_path: Path) -> None:
    path = _csv(tmp_path / "m.yaml", "spans: {file: spans.csv, baseline_file: base/spans.csv}\n")
    spans = CsvMapping.load(path).spans
    assert spans.file == str(tmp_path / "spans.csv")
    assert spans.baseline_file == str(tmp_path / "base/spans.csv")


# --- bad input ----------------------------------------------------------------------------------------

def test_a_mapped_column_the_file_lacks_lists_the_file_columns(tmp_path: Path) -> None:
    mapping = with_overrides(CsvMapping.load(FIXTURES / "mapping.yaml"),
                             columns={"logs": {"message": "text"}})
    expected = (r"logs_naive.csv: .* column\(s\) text, which the file lacks "
                r"\(its columns are: ts, severity, msg, trace\)")
    with pytest.raises(FlipmoeInputError, match=expected):
        import_csv(tmp_path / "inc", mapping=mapping)


def test_a_required_column_without_source_or_constant_is_named(tmp_path: Path) -> None:
    columns = {"timestamp": "ts", "level": "severity", "message": "msg"}
    mapping = CsvMapping(logs=TableMapping(file=str(FIXTURES / "logs_naive.csv"), columns=columns))
    with pytest.raises(FlipmoeInputError, match=r"no column for logs 'service'.*--const logs.service=VALUE"):
        import_csv(tmp_path / "inc", mapping=mapping)


def test_naive_timestamps_without_a_timezone_are_refused(tmp_path: Path) -> None:
    mapping = CsvMapping(logs=TableMapping(file=str(FIXTURES / "logs_naive.csv"),
                                           columns={"timestamp": "ts", "level": "severity", "message": "msg"},
                                           constants={"service": "payment"}))
    with pytest.raises(FlipmoeInputError, match=r"logs_naive.csv, column 'timestamp', row 1: timestamp "
                                                r"'2024-05-14 17:30:11.000' has no timezone"):
        import_csv(tmp_path / "inc", mapping=mapping)


@pytest.mark.parametrize(("timezone", "problem"), [
    (None, "timestamp 'yesterday noon' has no timezone"),
    ("Europe/Berlin", "unparseable timestamp 'yesterday noon'"),
])
def test_unparseable_timestamps_name_their_row(tmp_path: Path, timezone: str | None, problem: str) -> None:
    path = _csv(tmp_path / "s.csv", SPAN_HEADER + "t1,s1,,api,GET /,2024-05-14T09:30:00Z,5\n"
                                                  "t1,s2,s1,db,query,yesterday noon,3\n")
    mapping = _spans_mapping(path, **({"timezone": timezone} if timezone else {}))
    with pytest.raises(FlipmoeInputError, match=rf"s.csv, column 'start', row 2: {problem}"):
        import_csv(tmp_path / "inc", mapping=mapping)


def test_mixed_naive_and_offset_timestamps_with_a_timezone(tmp_path: Path) -> None:
    path = _csv(tmp_path / "s.csv", SPAN_HEADER + "t1,s1,,api,GET /,2024-05-14T11:30:00,5\n"
                                                  "t1,s2,s1,db,query,2024-05-14T09:30:01Z,3\n"
                                                  "t1,s3,s1,db,query,2024-05-14 10:30:02+01:00,3\n"
                                                  "t1,s4,s1,db,query,14 May 2024 11:30:03.5,3\n")
    mapping = _spans_mapping(path, timezone="Europe/Berlin")
    spans = read_incident(import_csv(tmp_path / "inc", mapping=mapping)).spans
    assert spans["start"].tolist() == [T0 + pd.Timedelta(s) for s in ("0s", "1s", "2s", "3.5s")]


def test_timestamps_in_a_daylight_saving_gap_are_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "s.csv", SPAN_HEADER + "t1,s1,,api,GET /,2024-03-31 02:30:00,5\n")
    with pytest.raises(FlipmoeInputError, match="row 1: timestamp '2024-03-31 02:30:00' does not exist"):
        import_csv(tmp_path / "inc", mapping=_spans_mapping(path, timezone="Europe/Berlin"))


def test_nan_durations_are_dropped_and_empty_services_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "s.csv", SPAN_HEADER + "t1,s1,,api,GET /,2024-05-14T09:30:00Z,5\n"
                                                  "t1,s2,s1,db,query,2024-05-14T09:30:00Z,NaN\n")
    warnings: list[str] = []
    spans = read_incident(import_csv(tmp_path / "ok", mapping=_spans_mapping(path), warnings=warnings)).spans
    assert spans["span_id"].tolist() == ["s1"]
    assert any("dropped 1 span(s) with missing or negative duration" in w for w in warnings)
    _csv(path, SPAN_HEADER + "t1,s1,,api,GET /,2024-05-14T09:30:00Z,5\n"
                             "t1,s2,s1,,query,2024-05-14T09:30:00Z,3\n")
    with pytest.raises(FlipmoeInputError, match="column 'service', row 2: empty value in a required column"):
        import_csv(tmp_path / "bad", mapping=_spans_mapping(path))


def test_duplicate_span_ids_and_parent_cycles_are_fixed_with_warnings(tmp_path: Path) -> None:
    path = _csv(tmp_path / "s.csv", SPAN_HEADER + "t1,a,b,api,x,2024-05-14T09:30:00Z,5\n"
                                                  "t1,b,a,db,y,2024-05-14T09:30:00Z,3\n"
                                                  "t1,b,,db,y,2024-05-14T09:30:00Z,3\n")
    warnings: list[str] = []
    spans = read_incident(import_csv(tmp_path / "inc", mapping=_spans_mapping(path), warnings=warnings)).spans
    assert spans["span_id"].tolist() == ["a", "b"] and spans["parent_span_id"].isna().sum() == 1
    assert any("repeats an earlier span" in w for w in warnings)
    assert any("broke 1 cyclic parent link" in w for w in warnings)


@pytest.mark.parametrize(("content", "message"), [
    ("", "file is empty"),
    (SPAN_HEADER + "t1,s1,,api,GET /,2024-05-14T09:30:00Z,5,surplus,fields\n", "malformed CSV"),
    (SPAN_HEADER + "t1,s1,,api,GET /,2024-05-14T09:30:00Z,fast\n",
     "column 'duration', row 1: not a number: 'fast'"),
])
def test_unreadable_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = _csv(tmp_path / "s.csv", content)
    with pytest.raises(FlipmoeInputError, match=message):
        import_csv(tmp_path / "inc", mapping=_spans_mapping(path))


def test_a_failed_import_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = _csv(tmp_path / "bad.csv", "ts,msg\n2024-05-14 17:30:11,hello\n")
    mapping = with_overrides(CsvMapping.load(FIXTURES / "mapping.yaml"), files={"logs": str(bad)},
                             columns={"logs": {"level": "msg"}}, timezone="UTC")
    with pytest.raises(FlipmoeInputError, match="lacks"):
        import_csv(tmp_path / "out", mapping=mapping)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


# --- command line ----------------------------------------------------------------------------------------

def test_cli_with_mapping_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "inc"
    code = main(["import", "csv", "--mapping", str(FIXTURES / "mapping.yaml"),
                 "--map", "logs.message=severity", "--out", str(out), "--id", "INC-9",
                 "--alert", "payment timeouts"])
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    incident = read_incident(out)
    assert incident.meta.id == "INC-9" and incident.meta.alert == "payment timeouts"
    assert incident.logs["message"].tolist() == ["warning", "ERR", "info"]


def test_cli_without_mapping(tmp_path: Path) -> None:
    code = main(["import", "csv", "--logs", str(FIXTURES / "logs_naive.csv"), "--map", "logs.timestamp=ts",
                 "--map", "logs.level=severity", "--map", "logs.message=msg",
                 "--const", "logs.service=payment", "--timezone", "+08:00", "--out", str(tmp_path / "inc")])
    assert code == 0
    assert read_incident(tmp_path / "inc").logs["timestamp"].iloc[0] == T0 + pd.Timedelta("11s")


@pytest.mark.parametrize("args", [
    ["--logs", str(FIXTURES / "logs_naive.csv")],
    ["--logs", str(FIXTURES / "logs_naive.csv"), "--map", "logs.timestamp"],
    ["--mapping", str(FIXTURES / "mapping.yaml"), "--timezone", "Nowhere/Land"],
    [],
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               args: list[str]) -> None:
    code = main(["import", "csv", *args, "--out", str(tmp_path / "inc")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("flipmoe: error: ") and err.count("\n") == 1
    assert not (tmp_path / "inc").exists()
