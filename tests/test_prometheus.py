"""The Prometheus connector against a real Prometheus server holding backfilled series."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_server import SAMPLES, STEP_SECONDS, PrometheusServer, demo_prometheus

from flipmoe.cli import main
from flipmoe.config import FlipmoeConfig, PrometheusConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.importers.prometheus import (
    PrometheusClient,
    RangeSeries,
    _chunks,
    _place,
    fetch_metrics,
    import_prometheus,
)
from flipmoe.telemetry import TimeWindow, read_incident

integration = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with demo_prometheus(tmp_path_factory.mktemp("prometheus")) as running:
        yield running


def _config(server: PrometheusServer, **prometheus: Any) -> FlipmoeConfig:
    config = FlipmoeConfig()
    return replace(config, prometheus=replace(config.prometheus, **{"url": server.url, **prometheus}))


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize(("start", "end", "step", "max_points"), [
    (0, 0, 15, 2), (0, 1000, 15, 2), (0, 15_000 * 479, 15_000, 7), (5, 10**6, 333, 11_000)])
def test_chunks_cover_the_step_grid_once_within_the_point_limit(start: int, end: int, step: int,
                                                                max_points: int) -> None:
    points = []
    for chunk_start, chunk_end in _chunks(start, end, step, max_points):
        chunk = list(range(chunk_start, chunk_end + 1, step))
        assert len(chunk) <= max_points
        points.extend(chunk)
    assert points == list(range(start, end + 1, step))


def test_labels_become_columns_with_fallbacks_and_distinct_metric_names() -> None:
    def series(**labels: str) -> RangeSeries:
        return RangeSeries(labels=labels, timestamps_ms=np.array([0]), values=np.array([1.0]))

    warnings: list[str] = []
    placed = _place([series(__name__="rpc", service="a", pod="a-0", node="n1", code="500", job="j"),
                     series(__name__="rpc", job="db", instance="db:9187"),
                     series(service="x"), series(job="x"),
                     series(code="200")],
                    name=None, query="rpc", config=PrometheusConfig(), warnings=warnings)
    assert [identity for identity, _ in placed] == [
        ("a", "a-0", "n1", "rpc{code=500,job=j}"),
        ("db", "db:9187", None, "rpc"),
        ("x", None, None, "rpc{service=x}"),
        ("x", None, None, "rpc{job=x}"),
    ]
    assert warnings and "dropped 1 series" in warnings[0]


@integration
def test_query_range_returns_the_backfilled_samples(server: PrometheusServer) -> None:
    with PrometheusClient(_config(server).prometheus) as client:
        result = client.query_range("container_cpu_usage", server.start, server.end,
                                    STEP_SECONDS)
    expected = server.find("container_cpu_usage")
    assert sorted(s.labels["pod"] for s in result) == sorted(s.labels["pod"] for s in expected)
    for backfilled in expected:
        (got,) = [s for s in result if s.labels == {"__name__": backfilled.name, **backfilled.labels}]
        assert got.timestamps_ms.tolist() == [ts * 1000 for ts in backfilled.timestamps]
        assert got.values.tolist() == backfilled.values


@integration
def test_chunked_range_equals_one_request(server: PrometheusServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    span = (server.start, server.end)
    with PrometheusClient(_config(server).prometheus) as client:
        whole = client.query_range("http_requests_total", *span)
    with PrometheusClient(_config(server, max_points_per_series=7).prometheus) as client:
        requests = []
        original = client._get

        def counting_get(*args: Any, **kwargs: Any) -> Any:
            requests.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(client, "_get", counting_get)
        chunked = client.query_range("http_requests_total", *span)
    assert len(requests) == -(-SAMPLES // 7)
    assert [s.labels for s in chunked] == [s.labels for s in whole]
    for one, other in zip(chunked, whole, strict=True):
        assert one.timestamps_ms.tolist() == other.timestamps_ms.tolist()
        assert one.values.tolist() == other.values.tolist()


@integration
def test_range_above_the_server_limit_is_split(server: PrometheusServer) -> None:
    # 2 hours at 0.5 s is 14,400 points: one request would be refused (limit 11,000).
    with PrometheusClient(_config(server).prometheus) as client:
        (series,) = client.query_range('container_cpu_usage{pod="checkout-0"}', server.start,
                                       server.end, step=0.5)
    assert len(series.values) == (SAMPLES - 1) * STEP_SECONDS * 2 + 1
    assert np.all(np.diff(series.timestamps_ms) == 500)
    assert series.values[-1] == server.find("container_cpu_usage", pod="checkout-0")[0].values[-1]


@integration
def test_rate_over_the_counter(server: PrometheusServer) -> None:
    window = TimeWindow(server.start, server.end)
    metrics = fetch_metrics({"rps": "rate(http_requests_total[1m])"}, window, config=_config(server))
    settled = metrics[metrics["timestamp"] >= server.start + pd.Timedelta(minutes=2)]
    ok = settled[(settled["pod"] == "frontend-0") & (settled["metric"] == "rps{code=200}")]
    assert len(ok) > 400 and np.allclose(ok["value"], 10.0)
    errors = settled[(settled["pod"] == "checkout-0") & (settled["metric"] == "rps{code=500}")]
    before = errors[errors["timestamp"] < server.shift_at]["value"]
    after = errors[errors["timestamp"] >= server.shift_at + pd.Timedelta(minutes=1)]["value"]
    assert np.allclose(before, 0.2) and np.allclose(after, 2.0)


@integration
def test_nan_and_infinite_values_are_parsed_then_dropped(server: PrometheusServer) -> None:
    span = (server.start, server.start + pd.Timedelta(minutes=5))
    with PrometheusClient(_config(server).prometheus) as client:
        for query, expected in [("container_cpu_usage / 0", np.inf), ("-container_cpu_usage / 0", -np.inf),
                                ("0 * container_cpu_usage / 0", np.nan)]:
            result = client.query_range(query, *span)
            assert len(result) == 4
            for series in result:
                np.testing.assert_array_equal(series.values, np.full(21, expected))
    warnings: list[str] = []
    metrics = fetch_metrics({"inf": "container_cpu_usage / 0"}, TimeWindow(*span),
                            config=_config(server), warnings=warnings)
    assert metrics.empty and any("NaN or infinite" in w for w in warnings)


@integration
def test_invalid_promql_is_a_clear_error(server: PrometheusServer) -> None:
    with PrometheusClient(_config(server).prometheus) as client:
        with pytest.raises(FlipmoeInputError, match=r"'rate\(http_requests_total\[1m\]'.*bad_data.*parse"):
            client.query_range("rate(http_requests_total[1m]", server.start, server.end)
        with pytest.raises(FlipmoeInputError, match="range vector"):
            client.query_range("http_requests_total[1m]", server.start, server.end)
    with PrometheusClient(_config(server, url=f"{server.url}/not-prometheus").prometheus) as client:
        with pytest.raises(FlipmoeInputError, match="HTTP 404 .* not a Prometheus API response"):
            client.query_range("up", server.start, server.end)


@integration
def test_series_and_label_values(server: PrometheusServer) -> None:
    span = (server.start, server.end)
    with PrometheusClient(_config(server).prometheus) as client:
        assert client.label_values("service", *span) == ["checkout", "frontend", "payment"]
        frontend = client.label_values("pod", *span, match=['{service="frontend"}'])
        assert frontend == ["frontend-0", "frontend-1"]
        found = client.series(['http_requests_total{service="checkout"}'], *span)
    assert sorted(labels["code"] for labels in found) == ["200", "500"]


@integration
def test_fetch_metrics_maps_labels_onto_the_metrics_table(server: PrometheusServer) -> None:
    window = TimeWindow(server.start, server.end + pd.Timedelta(seconds=STEP_SECONDS))
    metrics = fetch_metrics({"cpu": "container_cpu_usage", "requests": "http_requests_total",
                             "open_fds": "process_open_fds"}, window, config=_config(server))
    assert len(metrics) == len(server.series) * SAMPLES
    assert not metrics.duplicated(["timestamp", "service", "pod", "node", "metric"]).any()
    assert sorted(metrics["service"].unique()) == ["checkout", "frontend", "payment", "postgres"]
    assert set(metrics["metric"]) == {"cpu", "requests{code=200}", "requests{code=500}", "open_fds"}
    database = metrics[metrics["service"] == "postgres"]
    assert set(database["pod"]) == {"db-0:9187"} and database["node"].isna().all()
    cpu = metrics[(metrics["pod"] == "checkout-0") & (metrics["metric"] == "cpu")]
    assert set(cpu["node"]) == {"node-a"}
    assert cpu[cpu["timestamp"] >= server.shift_at]["value"].min() >= 85.0
    assert cpu[cpu["timestamp"] < server.shift_at]["value"].max() < 22.0

    listed = fetch_metrics(["container_cpu_usage", "rate(http_requests_total[1m])"], window,
                           config=_config(server))
    assert set(listed["metric"]) == {"container_cpu_usage", "rate(http_requests_total[1m]){code=200}",
                                     "rate(http_requests_total[1m]){code=500}"}


@integration
def test_import_prometheus_writes_a_readable_incident(server: PrometheusServer, tmp_path: Path) -> None:
    window = TimeWindow(server.start + pd.Timedelta(minutes=80), server.end)
    baseline = TimeWindow(server.start, server.start + pd.Timedelta(minutes=20))
    out = import_prometheus({"cpu": "container_cpu_usage", "rps": "rate(http_requests_total[1m])"},
                            tmp_path / "checkout-cpu", window=window, baseline_window=baseline,
                            alert="checkout CPU above 80%", config=_config(server))
    incident = read_incident(out)
    assert incident.meta.id == "checkout-cpu" and incident.meta.alert == "checkout CPU above 80%"
    assert incident.meta.window == window and incident.meta.source == f"prometheus {server.url}"
    assert incident.modalities == ["metrics"] and not incident.warnings
    assert incident.telemetry.services() == ["checkout", "frontend", "payment"]
    assert incident.telemetry.pods() == ["checkout-0", "frontend-0", "frontend-1", "payment-0"]
    assert incident.metrics is not None
    assert incident.metrics["timestamp"].min() == window.start - pd.Timedelta(hours=1)
    assert incident.baseline is not None and incident.baseline.metrics is not None
    assert incident.baseline.metrics["timestamp"].max() < baseline.end
    with pytest.raises(FlipmoeInputError, match="already exists"):
        import_prometheus(["container_cpu_usage"], out, window=window, config=_config(server))


@integration
def test_cli_end_to_end(server: PrometheusServer, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    queries = tmp_path / "queries.yaml"
    queries.write_text("cpu: container_cpu_usage\nopen_fds: process_open_fds\n", encoding="utf-8")
    out = tmp_path / "incident"
    code = main(["import", "prometheus", "--url", server.url, "--queries", str(queries),
                 "--query", 'errors=rate(http_requests_total{code="500"}[1m])',
                 "--start", server.shift_at.isoformat(), "--end", server.end.isoformat(),
                 "--step", "30", "--out", str(out), "--id", "inc-1"])
    assert code == 0, capsys.readouterr().err
    assert f"wrote {out}" in capsys.readouterr().out
    incident = read_incident(out)
    assert incident.meta.id == "inc-1" and incident.metrics is not None
    assert set(incident.metrics["metric"]) == {"cpu", "open_fds", "errors{code=500}"}
    cpu = incident.metrics[(incident.metrics["pod"] == "checkout-0") & (incident.metrics["metric"] == "cpu")]
    assert set(cpu["timestamp"].diff().dropna()) == {pd.Timedelta(seconds=30)}
    assert incident.telemetry.services() == ["checkout", "frontend", "payment", "postgres"]


def test_cli_unreachable_or_bad_url_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--query", "up", "--start", "2024-05-01T10:00:00Z", "--end", "2024-05-01T10:30:00Z",
            "--out", str(tmp_path / "out")]
    assert main(["import", "prometheus", "--url", _closed_port_url(), *args]) == 2
    assert "cannot reach Prometheus" in (err := capsys.readouterr().err) and "after 3 attempt(s)" in err
    assert main(["import", "prometheus", "--url", "localhost:9090", *args]) == 2
    assert "must start with http://" in capsys.readouterr().err
    assert main(["import", "prometheus", "--url", _closed_port_url(), "--query", "a=up", "--query", "up",
                 *args[2:]]) == 2
    assert "name every query" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
