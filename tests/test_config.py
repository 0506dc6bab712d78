import pytest

from flipmoe.config import FlipmoeConfig, PrometheusConfig, TelemetryConfig, from_dict
from flipmoe.errors import FlipmoeInputError


def test_defaults_round_trip_through_yaml(tmp_path):
    config = FlipmoeConfig()
    config.prometheus.step_seconds = 30.0
    path = tmp_path / "flipmoe.yaml"
    config.save(path)
    assert FlipmoeConfig.load(path) == config


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert FlipmoeConfig.load(path) == FlipmoeConfig()


def test_partial_file_keeps_other_defaults(tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text("prometheus:\n  url: http://prom:9090\n")
    config = FlipmoeConfig.load(path)
    assert config.prometheus.url == "http://prom:9090"
    assert config.telemetry == TelemetryConfig()


def test_unknown_key_names_key_and_lists_valid_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("prometheus:\n  urll: x\n")
    with pytest.raises(FlipmoeInputError) as err:
        FlipmoeConfig.load(path)
    assert "'urll'" in str(err.value) and "url" in str(err.value) and str(path) in str(err.value)


def test_wrong_type_is_rejected():
    with pytest.raises(FlipmoeInputError, match="step_seconds must be float"):
        from_dict(PrometheusConfig, {"step_seconds": "fast"})


def test_int_is_accepted_for_float():
    assert from_dict(PrometheusConfig, {"step_seconds": 5}).step_seconds == 5.0


def test_validation_in_post_init():
    with pytest.raises(FlipmoeInputError, match="step_seconds"):
        PrometheusConfig(step_seconds=-1)


def test_fields_are_keyword_only():
    with pytest.raises(TypeError):
        TelemetryConfig(1000)  # type: ignore[misc]


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(FlipmoeInputError, match="not valid YAML"):
        FlipmoeConfig.load(path)
