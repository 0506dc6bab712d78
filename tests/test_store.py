import ast
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_incident

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import read_incident, write_incident
from flipmoe.telemetry.label import Label, load_label

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip(tmp_path, fmt):
    incident = tiny_incident()
    write_incident(incident, tmp_path / "inc", fmt=fmt)
    back = read_incident(tmp_path / "inc")
    assert back.meta.to_json() == incident.meta.to_json()
    for name in incident.modalities:
        pd.testing.assert_frame_equal(back.telemetry.table(name), incident.telemetry.table(name),
                                      check_dtype=fmt == "parquet")
    assert back.baseline is not None and back.baseline.modalities == incident.modalities
    assert back.topology.edges == incident.topology.edges
    assert back.warnings == []


def test_label_is_only_reachable_through_the_evaluation_accessor(tmp_path):
    label = Label(service="api", pod="api-55c-def", fault_type="code_exception", original_type="exception")
    write_incident(tiny_incident(), tmp_path / "inc", label=label)
    incident = read_incident(tmp_path / "inc")
    assert "label" not in json.dumps(incident.meta.to_json())
    assert not hasattr(incident, "label")
    assert load_label(tmp_path / "inc") == label
    assert load_label(REPO / "tests") is None


def test_analysis_path_never_imports_the_label_accessor():
    """director/ is the analysis path: it must not be able to read ground truth."""
    offenders = []
    for path in (REPO / "director").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith("flipmoe.telemetry.label") or n.endswith(".load_label") for n in names):
                offenders.append(str(path))
        if "label.json" in path.read_text():
            offenders.append(str(path))
    assert offenders == []


def test_label_with_unknown_fault_type_is_rejected(tmp_path):
    (tmp_path / "label.json").write_text(json.dumps({"service": "a", "fault_type": "gremlins"}))
    with pytest.raises(FlipmoeInputError, match="not in the taxonomy"):
        load_label(tmp_path)


def test_existing_target_needs_overwrite(tmp_path):
    write_incident(tiny_incident(), tmp_path / "inc")
    with pytest.raises(FlipmoeInputError, match="already exists"):
        write_incident(tiny_incident(), tmp_path / "inc")
    write_incident(tiny_incident(n_minutes=4), tmp_path / "inc", overwrite=True)
    assert len(read_incident(tmp_path / "inc").metrics) == 4 * 4 * 3 * 2


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import flipmoe.telemetry.store as store

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "_write_telemetry", explode)
    with pytest.raises(OSError):
        write_incident(tiny_incident(), tmp_path / "inc")
    assert list(tmp_path.iterdir()) == []


def _incident_dir(tmp_path) -> Path:
    directory = tmp_path / "inc"
    write_incident(tiny_incident(), directory, fmt="csv")
    return directory


def test_missing_incident_json(tmp_path):
    directory = _incident_dir(tmp_path)
    (directory / "incident.json").unlink()
    with pytest.raises(FlipmoeInputError, match="no incident.json"):
        read_incident(directory)


def test_incident_json_errors_name_the_file(tmp_path):
    directory = _incident_dir(tmp_path)
    (directory / "incident.json").write_text('{"id": "x", "alert": ')
    with pytest.raises(FlipmoeInputError, match="incident.json: not valid JSON"):
        read_incident(directory)
    (directory / "incident.json").write_text('{"id": "x", "alert": "a"}')
    with pytest.raises(FlipmoeInputError, match="missing field 'window'"):
        read_incident(directory)


def test_unknown_incident_fields_warn(tmp_path):
    directory = _incident_dir(tmp_path)
    meta = json.loads((directory / "incident.json").read_text())
    meta["root_cause"] = "api"
    (directory / "incident.json").write_text(json.dumps(meta))
    assert any("root_cause" in w for w in read_incident(directory).warnings)


def test_empty_table_file(tmp_path):
    directory = _incident_dir(tmp_path)
    (directory / "logs.csv").write_text("")
    with pytest.raises(FlipmoeInputError, match=r"logs.csv: file is empty"):
        read_incident(directory)


def test_truncated_gzip(tmp_path):
    directory = _incident_dir(tmp_path)
    data = gzip.compress((directory / "logs.csv").read_bytes())
    (directory / "logs.csv").unlink()
    (directory / "logs.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FlipmoeInputError, match=r"logs.csv.gz: truncated or corrupt gzip"):
        read_incident(directory)


def test_wrong_columns(tmp_path):
    directory = _incident_dir(tmp_path)
    (directory / "spans.csv").write_text("a,b\n1,2\n")
    with pytest.raises(FlipmoeInputError, match=r"spans.csv: missing required column"):
        read_incident(directory)


def test_table_stored_twice_is_ambiguous(tmp_path):
    directory = _incident_dir(tmp_path)
    (directory / "metrics.csv.gz").write_bytes(gzip.compress((directory / "metrics.csv").read_bytes()))
    with pytest.raises(FlipmoeInputError, match="stored twice"):
        read_incident(directory)


def test_huge_single_line_fails_fast(tmp_path):
    from flipmoe.config import TelemetryConfig

    directory = _incident_dir(tmp_path)
    with open(directory / "logs.csv", "w") as handle:
        chunk = "x" * (1 << 20)
        for _ in range(100):  # a 100 MB file without a newline
            handle.write(chunk)
    with pytest.raises(FlipmoeInputError, match="not a CSV table"):
        read_incident(directory, config=TelemetryConfig())


def test_missing_modalities_are_absent_not_errors(tmp_path):
    directory = _incident_dir(tmp_path)
    for name in ("logs.csv", "spans.csv", "events.csv"):
        (directory / name).unlink()
    incident = read_incident(directory)
    assert incident.modalities == ["metrics"]
    assert incident.logs is None


def test_rows_with_surplus_fields_are_refused(tmp_path):
    directory = _incident_dir(tmp_path)
    text = (directory / "events.csv").read_text().splitlines()
    (directory / "events.csv").write_text("\n".join([text[0], text[1] + ",surplus"]) + "\n")
    with pytest.raises(FlipmoeInputError, match="events.csv: malformed CSV"):
        read_incident(directory)


def test_written_directory_follows_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        write_incident(tiny_incident(), tmp_path / "inc")
    finally:
        os.umask(old)
    assert (tmp_path / "inc").stat().st_mode & 0o777 == 0o755
