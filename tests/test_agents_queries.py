"""PromQL / LogQL generation: well-formed, escaped, and accepted by the real Prometheus parser and server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pandas as pd
import pytest
from prometheus_server import PrometheusServer, demo_prometheus

from director.agents.queries import (
    QueryNames,
    logql_queries,
    promql_queries,
    queries_for,
    range_for,
    selector,
    template_filter,
    validate_promql,
)
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import TimeWindow
from flipmoe.toolkits.rootcause import RootCause


def _suspect(**fields: object) -> RootCause:
    """A root cause as the queries see it: only `service` is required here."""
    return RootCause(rank=1, score=0.0, **fields)  # type: ignore[arg-type]


WINDOW = TimeWindow(pd.Timestamp("2026-03-01T10:00:00Z"), pd.Timestamp("2026-03-01T10:30:00Z"))
FULL = _suspect(service="cart", pod="cart-7d9-abc", node="node-1", metric="http_requests_total",
               log_pattern="GetCartAsync called with userId=<*>")
ODD = _suspect(service='we"ird\\svc', pod="p\n1", metric="PodClientLatencyP90(s)", log_pattern="<*> <*>")
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed "
                                    "(.ci/install-prometheus.sh installs it)")


def test_promql_for_a_suspect_covers_its_metric_golden_signals_pod_and_node() -> None:
    queries = promql_queries(FULL, range_="5m")
    assert queries[0] == 'rate(http_requests_total{service="cart",pod="cart-7d9-abc"}[5m])'
    assert 'sum(rate(http_requests_total{service="cart",status=~"5.."}[5m])) / ' \
           'sum(rate(http_requests_total{service="cart"}[5m]))' in queries
    assert 'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{service="cart"}[5m])))' \
        in queries
    assert 'sum(rate(container_cpu_usage_seconds_total{pod="cart-7d9-abc"}[5m]))' in queries
    assert 'max(container_memory_working_set_bytes{pod="cart-7d9-abc"})' in queries
    assert '1 - avg(rate(node_cpu_seconds_total{node="node-1",mode="idle"}[5m]))' in queries
    assert len(queries) == len(set(queries))


def test_metric_shapes_choose_rate_gauge_or_quantile() -> None:
    assert promql_queries(_suspect(service="a", metric="x:rate1m"))[0] == 'x:rate1m{service="a"}'
    assert promql_queries(_suspect(service="a", metric="go_goroutines"))[0] == 'go_goroutines{service="a"}'
    assert promql_queries(_suspect(service="a", metric="rpc_seconds_bucket"))[0].startswith("histogram_quantile(0.95")


def test_names_and_values_are_escaped() -> None:
    assert selector("PodClientLatencyP90(s)", {"pod": "a"}) == '{__name__="PodClientLatencyP90(s)",pod="a"}'
    queries = promql_queries(ODD)
    assert queries[0] == '{__name__="PodClientLatencyP90(s)",service="we\\"ird\\\\svc",pod="p\\n1"}'
    assert all("\n" not in q for q in queries + logql_queries(ODD))


def test_logql_for_errors_and_a_template() -> None:
    queries = logql_queries(FULL, range_="5m")
    stream = '{service="cart", pod="cart-7d9-abc"}'
    assert queries[0] == stream + ' |~ "(?i)(error|exception|fatal|timeout)"'
    assert queries[1] == f'sum by (pod) (count_over_time({queries[0]} [5m]))'
    assert queries[2] == (stream + ' |= "GetCartAsync called with userId="'
                          ' | pattern "GetCartAsync called with userId=<_>"')
    assert queries[3] == f"sum(count_over_time({queries[2]} [5m]))"
    assert len(logql_queries(ODD)) == 2  # a template of wildcards only has nothing to filter on


def test_template_filter_leaves_out_patterns_it_cannot_express() -> None:
    assert template_filter("{a=\"b\"}", "x") is None
    assert template_filter("{a=\"b\"}", "payload <html> size <*>") == '{a="b"} |= "payload <html> size"'
    assert template_filter("{a=\"b\"}", "ids <*><*> done") == '{a="b"} |= "done"'


def test_queries_for_merges_suspects_and_fits_the_range_to_the_window() -> None:
    found = queries_for([FULL, _suspect(service="cart")], window=WINDOW)
    assert found.range == "3m" and found.start == "2026-03-01T10:00:00Z"
    assert len(found.promql) == len(set(found.promql))
    assert found.as_report() == {"promql": found.promql, "logql": found.logql}
    assert range_for(None) == "5m"
    assert range_for(TimeWindow(WINDOW.start, WINDOW.start + pd.Timedelta(days=1))) == "60m"


def test_label_names_are_validated() -> None:
    with pytest.raises(FlipmoeInputError, match="label name"):
        QueryNames(service_label="bad-label")


@needs_promtool
def test_the_prometheus_parser_accepts_every_generated_query() -> None:
    found = queries_for([FULL, ODD, _suspect(service="db", metric="kube_pod_container_status_restarts_total")],
                        window=WINDOW)
    errors = validate_promql(found.promql)
    assert errors is not None and set(errors) == set(found.promql)
    assert all(error is None for error in errors.values()), errors
    broken = validate_promql(["rate(x[5m]", "up"])
    assert broken is not None and broken["up"] is None and "parse error" in str(broken["rate(x[5m]"])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with demo_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


def _query(server: PrometheusServer, promql: str, at: pd.Timestamp) -> dict:
    reply = httpx.get(f"{server.url}/api/v1/query", params={"query": promql, "time": at.timestamp()}, timeout=10)
    body = reply.json()
    assert reply.status_code == 200 and body["status"] == "success", (promql, body)
    return body["data"]


@pytest.mark.integration
def test_a_real_prometheus_server_runs_the_generated_queries(prometheus: PrometheusServer) -> None:
    names = QueryNames(status_label="code", cpu_seconds="container_cpu_usage")
    suspect = _suspect(service="checkout", pod="checkout-0", node="node-a", metric="container_cpu_usage")
    queries = promql_queries(suspect, range_="5m", names=names)
    at = prometheus.shift_at + pd.Timedelta(minutes=15)
    results = {q: _query(prometheus, q, at) for q in queries}
    cpu = results['container_cpu_usage{service="checkout",pod="checkout-0"}']["result"]
    assert len(cpu) == 1 and float(cpu[0]["value"][1]) > 80
    ratio = results['sum(rate(http_requests_total{service="checkout",code=~"5.."}[5m])) / '
                    'sum(rate(http_requests_total{service="checkout"}[5m]))']["result"]
    assert float(ratio[0]["value"][1]) == pytest.approx(2.0 / 6.0, rel=0.05)
