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


def test_alert_sections_load_from_yaml_with_secret_references(tmp_path, monkeypatch):
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "prometheus:\n  queries: {cpu: 'rate(cpu[1m])'}\n"
        "loki:\n  queries: ['{namespace=\"shop\"}']\n  token: {env: LOKI_TOKEN}\n"
        "delivery:\n  targets:\n    - {kind: slack, url_secret: {file: /run/secrets/slack}}\n"
        "    - {kind: pagerduty, token: {env: PD_KEY}}\n")
    config = FlipmoeConfig.load(path)
    assert config.prometheus.queries == {"cpu": "rate(cpu[1m])"}
    assert [t.name for t in config.delivery.targets] == ["slack", "pagerduty"]
    assert config.delivery.targets[1].url == "https://events.pagerduty.com/v2/enqueue"
    monkeypatch.setenv("LOKI_TOKEN", " t0ken\n")
    assert config.loki.token.read("loki.token") == "t0ken"
    config.save(tmp_path / "again.yaml")  # secrets are references: saving writes no value
    assert "t0ken" not in (tmp_path / "again.yaml").read_text()
    assert FlipmoeConfig.load(tmp_path / "again.yaml") == config


def test_a_secret_comes_from_env_or_file_not_both():
    from flipmoe.config import SecretRef

    with pytest.raises(FlipmoeInputError, match="not both"):
        SecretRef(env="A", file="/b")
    with pytest.raises(FlipmoeInputError, match="cannot read the secret file"):
        SecretRef(file="/no/such/secret").read("x")
