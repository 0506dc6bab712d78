"""The Loki connector against a local Loki double (real HTTP round trips; tests/http_doubles.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from http_doubles import LokiDouble, LokiEntry, closed_port_url

from flipmoe.cli import main
from flipmoe.config import FlipmoeConfig, LokiConfig, SecretRef
from flipmoe.errors import FlipmoeInputError
from flipmoe.importers.loki import LokiClient, fetch_logs
from flipmoe.net import ServiceError
from flipmoe.telemetry import TimeWindow, read_incident

T0 = pd.Timestamp("2026-03-01T10:00:00Z")
WINDOW = TimeWindow(T0, T0 + pd.Timedelta(minutes=10))


def entries() -> list[LokiEntry]:
    """Two streams of checkout and one of payment; three lines share one nanosecond; a stream without a service."""
    out = []
    for i in range(25):
        at = T0 + pd.Timedelta(seconds=10 * i)
        out.append(LokiEntry(at, f"level=info msg=\"handled {i}\"",
                             {"app": "checkout", "pod": "checkout-0", "node": "node-a", "namespace": "shop"}))
        out.append(LokiEntry(at, f"ERROR charge failed {i}", {"service_name": "payment", "instance": "payment-1",
                                                             "namespace": "shop"},
                             metadata={"trace_id": f"{i:032x}"}))
    tie = T0 + pd.Timedelta(seconds=95)
    out += [LokiEntry(tie, f"same instant {k}", {"app": "checkout", "pod": "checkout-1", "level": "warn",
                                                 "namespace": "shop"}) for k in range(3)]
    out.append(LokiEntry(T0, "no service here", {"namespace": "shop", "filename": "/var/log/x"}))
    out.append(LokiEntry(T0 + pd.Timedelta(minutes=20), "after the window", {"app": "checkout", "namespace": "shop"}))
    return out


@pytest.fixture(scope="module")
def loki() -> Iterator[LokiDouble]:
    with LokiDouble(entries()) as server:
        yield server  # type: ignore[misc]


def config(url: str, **loki: object) -> FlipmoeConfig:
    return FlipmoeConfig(loki=LokiConfig(url=url, **loki))  # type: ignore[arg-type]


def test_pages_forward_through_a_window_larger_than_the_limit(loki: LokiDouble) -> None:
    before = len(loki.requests)
    with LokiClient(LokiConfig(url=loki.url, limit=4)) as client:
        got = client.query_range('{namespace="shop"}', WINDOW.start, WINDOW.end)
    expected = [e for e in entries() if WINDOW.start <= e.timestamp < WINDOW.end]
    assert len(got) == len(expected)  # every line once, the three at one instant included
    assert [e.timestamp_ns for e in got] == sorted(e.timestamp_ns for e in got)
    requests = loki.requests[before:]
    assert len(requests) > len(expected) // 4
    assert all(r.params["direction"] == "forward" and r.params["limit"] == "4" for r in requests)
    assert requests[0].params["start"] == str(WINDOW.start.value) and requests[0].params["end"] == str(WINDOW.end.value)


def test_more_lines_at_one_instant_than_a_page_are_skipped_with_a_warning(loki: LokiDouble) -> None:
    warnings: list[str] = []
    with LokiClient(LokiConfig(url=loki.url, limit=2)) as client:
        got = client.query_range('{pod="checkout-1"}', WINDOW.start, WINDOW.end, warnings)
    assert 1 <= len(got) <= 3 and any("more than loki.limit (2) lines at" in w for w in warnings)


def test_labels_map_onto_the_logs_table(loki: LokiDouble) -> None:
    warnings: list[str] = []
    logs, placement = fetch_logs(['{namespace="shop"}', '{app="checkout"}'], WINDOW, config=config(loki.url),
                                 warnings=warnings)
    assert set(logs["service"]) == {"checkout", "payment"}
    assert len(logs) == 25 + 25 + 3  # lines both queries return are kept once; the service-less one is dropped
    payment = logs[logs["service"] == "payment"]
    assert set(payment["pod"]) == {"payment-1"} and set(payment["level"]) == {"ERROR"}
    assert payment["trace_id"].iloc[0] == f"{0:032x}"  # structured metadata
    checkout = logs[logs["pod"] == "checkout-0"]
    assert set(checkout["level"]) == {"INFO"}  # read off `level=info` in the line
    assert set(logs[logs["pod"] == "checkout-1"]["level"]) == {"WARN"}  # the level label
    assert placement == {"checkout-0": "node-a"}
    assert any("dropped 1 line(s)" in w and "loki.service_labels" in w for w in warnings)


def test_a_bad_query_and_a_metric_query_are_clear_errors(loki: LokiDouble) -> None:
    with pytest.raises(FlipmoeInputError, match="Loki rejected query 'namespace=shop': parse error"):
        fetch_logs(["namespace=shop"], WINDOW, config=config(loki.url))
    with pytest.raises(FlipmoeInputError, match="is a metric query"):
        fetch_logs(['rate({app="checkout"}[1m])'], WINDOW, config=config(loki.url))


def test_transient_failures_are_retried_then_a_down_loki_is_named(loki: LokiDouble) -> None:
    loki.fail(503, times=2)
    logs, _ = fetch_logs(['{app="checkout"}'], WINDOW, config=config(loki.url, retry_backoff_seconds=0.01))
    assert len(logs) == 28
    url = closed_port_url()
    with pytest.raises(ServiceError, match=f"cannot reach Loki at {url}.*gave up after 2 attempt") as err:
        fetch_logs(['{app="checkout"}'], WINDOW, config=config(url, retries=1, retry_backoff_seconds=0.01))
    assert err.value.service == f"Loki at {url}"


def test_tenant_and_basic_auth_are_sent_and_the_password_is_not_logged(
        loki: LokiDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-loki-password-9f2c"
    (tmp_path / "password").write_text(secret + "\n")
    caplog.set_level(logging.DEBUG)
    before = len(loki.requests)
    password = SecretRef(file=str(tmp_path / "password"))
    fetch_logs(['{app="checkout"}'], WINDOW, config=config(loki.url, tenant="team-a", username="reader",
                                                           password=password))
    request = loki.requests[before]
    assert request.headers["x-scope-orgid"] == "team-a"
    assert request.headers["authorization"].startswith("Basic ")
    assert secret not in caplog.text


def test_cli_import_loki_writes_a_logs_incident(loki: LokiDouble, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "checkout-errors"
    assert main(["import", "loki", "--url", loki.url, "--query", '{namespace="shop"} |= "ERROR"',
                 "--start", "2026-03-01T10:00:00Z", "--end", "2026-03-01T10:10:00Z", "--out", str(out),
                 "--alert", "payment errors"]) == 0
    incident = read_incident(out)
    assert incident.meta.alert == "payment errors" and incident.logs is not None
    assert set(incident.logs["service"]) == {"payment"} and len(incident.logs) == 25
    assert main(["import", "loki", "--url", closed_port_url(), "--query", "{a=\"b\"}", "--start",
                 "2026-03-01T10:00:00Z", "--end", "2026-03-01T10:10:00Z", "--out", str(tmp_path / "x")]) == 2
    assert "cannot reach Loki at" in capsys.readouterr().err and not (tmp_path / "x").exists()
