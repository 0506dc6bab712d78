import numpy as np
import pandas as pd
import pytest
from conftest import START, tiny_incident

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import IncidentMeta, Telemetry, TimeWindow, normalise_table
from flipmoe.telemetry.schema import normalise_level
from flipmoe.telemetry.validate import normalise_status


def test_tables_have_canonical_dtypes(incident):
    assert str(incident.metrics["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert incident.metrics["value"].dtype == np.float64
    assert incident.spans["duration"].dtype == np.float64
    assert set(incident.logs["level"]) == {"INFO", "ERROR"}
    assert incident.modalities == ["metrics", "logs", "spans", "events"]


def test_slice_by_window_service_and_pod(incident):
    half = incident.slice(start=START, end=START + pd.Timedelta(minutes=5))
    assert half.metrics["timestamp"].max() < START + pd.Timedelta(minutes=5)
    assert len(half.metrics) == len(incident.metrics) // 2
    api = incident.slice(services=["api"])
    assert set(api.metrics["service"]) == {"api"}
    assert set(api.spans["service"]) == {"api"}
    by_pod = incident.slice(pods=["db-0"])
    assert set(by_pod.metrics["pod"]) == {"db-0"}
    assert by_pod.logs is None, "a slice with no rows drops the modality"


def test_slice_refuses_naive_bounds(incident):
    with pytest.raises(FlipmoeInputError, match="no timezone"):
        incident.slice(start="2026-03-01 10:00:00")


def test_services_and_pods(incident):
    assert incident.telemetry.services() == ["api", "db", "front"]
    assert "db-0" in incident.telemetry.pods()


def test_window_must_be_ordered_and_utc():
    with pytest.raises(FlipmoeInputError, match="not before"):
        TimeWindow("2026-01-01T01:00:00Z", "2026-01-01T00:00:00Z")
    with pytest.raises(FlipmoeInputError, match="no timezone"):
        TimeWindow("2026-01-01T00:00:00", "2026-01-01T01:00:00Z")
    window = TimeWindow("2026-01-01T08:00:00+08:00", "2026-01-01T01:00:00Z")
    assert window.start == pd.Timestamp("2026-01-01T00:00:00Z")


def test_meta_rejects_path_like_ids():
    window = TimeWindow("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z")
    with pytest.raises(FlipmoeInputError):
        IncidentMeta(id="../etc", alert="x", window=window)


def test_empty_table_means_missing_modality():
    empty = normalise_table(pd.DataFrame(columns=["timestamp", "service", "metric", "value"]), "metrics", source="m")
    assert Telemetry(metrics=empty).modalities == []


def test_timestamps_with_offsets_are_converted_to_utc():
    df = pd.DataFrame({"timestamp": ["2023-01-29T16:43:04+08:00", "2023-01-29T08:43:05Z"],
                       "service": "a", "metric": "m", "value": [1, 2]})
    out = normalise_table(df, "metrics", source="m.csv")
    assert list(out["timestamp"]) == [pd.Timestamp("2023-01-29T08:43:04Z"), pd.Timestamp("2023-01-29T08:43:05Z")]


@pytest.mark.parametrize("epoch, unit", [(1674981742, "s"), (1674981742383, "ms"),
                                          (1674981742383150, "us"), (1674981742383150913, "ns")])
def test_epoch_units_are_inferred(epoch, unit):
    df = pd.DataFrame({"timestamp": [epoch], "service": "a", "metric": "m", "value": [1.0]})
    out = normalise_table(df, "metrics", source="m")
    assert out["timestamp"].iloc[0].floor("s") == pd.Timestamp("2023-01-29T08:42:22Z")


def test_naive_timestamp_error_names_source_column_and_row():
    df = pd.DataFrame({"timestamp": ["2023-01-29T08:00:00Z", "2023-01-29 08:01:00"],
                       "service": "a", "metric": "m", "value": [1, 2]})
    with pytest.raises(FlipmoeInputError) as err:
        normalise_table(df, "metrics", source="metrics.csv")
    assert (err.value.path, err.value.column, err.value.row) == ("metrics.csv", "timestamp", 2)
    assert "no timezone" in str(err.value)


def test_unparseable_timestamp_is_an_error():
    df = pd.DataFrame({"timestamp": ["yesterday-ish Z"], "service": "a", "metric": "m", "value": [1]})
    with pytest.raises(FlipmoeInputError, match="unparseable timestamp"):
        normalise_table(df, "metrics", source="m")


def test_missing_required_column_lists_expected_columns():
    with pytest.raises(FlipmoeInputError, match="missing required column.*metric") as err:
        normalise_table(pd.DataFrame({"timestamp": [1], "service": ["a"], "value": [1.0]}), "metrics", source="m")
    assert "columns are" in str(err.value)


def test_non_numeric_value_names_row():
    df = pd.DataFrame({"timestamp": [1, 2], "service": "a", "metric": "m", "value": ["1.5", "lots"]})
    with pytest.raises(FlipmoeInputError) as err:
        normalise_table(df, "metrics", source="m")
    assert err.value.row == 2 and err.value.column == "value"


def test_nan_metric_values_are_dropped_with_warning_and_unknown_columns_ignored():
    warnings: list[str] = []
    df = pd.DataFrame({"timestamp": [1, 2, 3], "service": "a", "metric": "m", "value": [1.0, np.nan, "NaN"],
                       "colour": "blue"})
    out = normalise_table(df, "metrics", source="m.csv", warnings=warnings)
    assert len(out) == 1
    assert any("dropped 2 metric row" in w for w in warnings)
    assert any("unknown column(s) colour" in w for w in warnings)


def test_empty_required_string_names_row():
    df = pd.DataFrame({"timestamp": [1, 2], "service": ["a", " "], "metric": "m", "value": [1.0, 2.0]})
    with pytest.raises(FlipmoeInputError) as err:
        normalise_table(df, "metrics", source="m")
    assert (err.value.column, err.value.row) == ("service", 2)


def _spans(span_ids, parents):
    return pd.DataFrame({"trace_id": "t", "span_id": span_ids, "parent_span_id": parents, "service": "s",
                         "operation": "op", "start": 1674981742383150913, "duration": 1.0})


def test_duplicate_span_ids_keep_first_with_warning():
    warnings: list[str] = []
    out = normalise_table(_spans(["a", "b", "b"], ["root", "a", "a"]), "spans", source="s", warnings=warnings)
    assert list(out["span_id"]) == ["a", "b"]
    assert out["parent_span_id"].isna().iloc[0], "'root' parent means no parent"
    assert any("repeats an earlier span" in w for w in warnings)


def test_parent_cycles_are_broken_once_per_cycle():
    warnings: list[str] = []
    out = normalise_table(_spans(["a", "b", "c", "d", "e"], ["c", "a", "b", None, "d"]), "spans",
                          source="s", warnings=warnings)
    parents = dict(zip(out["span_id"], out["parent_span_id"], strict=True))
    assert sum(pd.isna(parents[s]) for s in "abc") == 1, "one link of the a->b->c cycle is cut"
    assert parents["e"] == "d", "acyclic links are untouched"
    assert any("cyclic parent link" in w for w in warnings)


def test_self_parent_is_a_cycle():
    out = normalise_table(_spans(["a"], ["a"]), "spans", source="s")
    assert out["parent_span_id"].isna().all()


def test_long_messages_are_truncated_with_warning():
    from flipmoe.config import TelemetryConfig

    warnings: list[str] = []
    df = pd.DataFrame({"timestamp": [1], "service": "a", "level": "W", "message": ["x" * 5000]})
    out = normalise_table(df, "logs", source="l", config=TelemetryConfig(max_message_bytes=1000), warnings=warnings)
    assert out["message"].str.len().iloc[0] < 1100
    assert out["level"].iloc[0] == "WARN"
    assert any("truncated" in w for w in warnings)


@pytest.mark.parametrize("raw, level", [("warning", "WARN"), ("E", "ERROR"), ("CRITICAL", "FATAL"),
                                         ("notice", "INFO"), (None, "UNKNOWN"), ("gibberish", "UNKNOWN")])
def test_level_normalisation(raw, level):
    assert normalise_level(raw) == level


@pytest.mark.parametrize("raw, status", [("STATUS_CODE_ERROR", "error"), (2, "error"), ("OK", "ok"),
                                          ("503", "error"), ("200", "ok"), ("", "unset"), (None, "unset")])
def test_status_normalisation(raw, status):
    assert normalise_status(raw) == status


def test_in_window_drops_history():
    incident = tiny_incident()
    incident.meta.window = TimeWindow(START + pd.Timedelta(minutes=2), START + pd.Timedelta(minutes=4))
    inside = incident.in_window()
    assert inside.metrics["timestamp"].min() >= START + pd.Timedelta(minutes=2)


def test_nanosecond_epochs_keep_full_precision():
    df = pd.DataFrame({"timestamp": [1674981742383150913], "service": "a", "metric": "m", "value": [1.0]})
    out = normalise_table(df, "metrics", source="m")
    assert out["timestamp"].iloc[0].value == 1674981742383150913


def test_trailing_utc_zone_name_is_understood():
    df = pd.DataFrame({"timestamp": ["2023-01-29 08:41:10 UTC", "2023-01-29T08:41:11 GMT"],
                       "service": "a", "metric": "m", "value": [1.0, 2.0]})
    out = normalise_table(df, "metrics", source="m")
    assert out["timestamp"].iloc[1] == pd.Timestamp("2023-01-29T08:41:11Z")
