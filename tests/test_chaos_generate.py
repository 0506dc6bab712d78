"""Chaos-gym incidents: determinism, honest labels, round trips, consistency, bad input and the CLI.

Short windows on the 11-service web shop with a reduced sample rate keep the file fast; each fault
is simulated once per module and shared by the tests that read it.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_pipeline.chaos import ChaosConfig, generate_corpus, generate_incident, get_system
from data_pipeline.chaos.metric_names import metric_name
from flipmoe.cli import main
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import read_incident, write_incident
from flipmoe.telemetry.label import load_label
from flipmoe.telemetry.taxonomy import FAULT_TYPES

FAST = ChaosConfig(samples_per_minute=60, load_probes=1)
WINDOW = 6
SCHEME = get_system("webshop").metric_scheme
# A target per fault that has callers, so propagation has somewhere to go.
TARGETS = {
    "cpu_contention": "cartservice", "cpu_hog": "cartservice", "memory_leak": "cartservice",
    "disk_io": "cartservice", "network_delay": "cartservice", "packet_loss": "cartservice",
    "dns_failure": "checkoutservice", "pod_crash_loop": "cartservice", "node_failure": None,
    "bad_config": "checkoutservice", "code_exception": "currencyservice", "code_wrong_result": "cartservice",
    "db_slow_query": "redis-cart", "cache_outage": "redis-cart", "certificate_expiry": "cartservice",
    "retry_storm": "productcatalogservice",
}


@pytest.fixture(scope="module")
def incidents():
    cache = {}

    def get(fault: str):
        if fault not in cache:
            cache[fault] = generate_incident("webshop", fault, seed=11, window_minutes=WINDOW, target=TARGETS[fault],
                                             severity=0.9, onset="sudden", config=FAST)
        return cache[fault]

    return get


def _after(table: pd.DataFrame, label, column: str = "timestamp") -> pd.DataFrame:
    return table[table[column] >= pd.Timestamp(label.inject_time) + pd.Timedelta(seconds=30)]


def _series(incident, label, metric: str, pods: list[str]) -> tuple[pd.Series, pd.Series]:
    """(baseline values, values after the onset) of one metric on the given pods."""
    def pick(table):
        return table[(table.metric == metric) & table.pod.isin(pods)].value

    return pick(incident.baseline.metrics), pick(_after(incident.metrics, label))


def _root_pods(incident, label) -> list[str]:
    if label.pod is not None:
        return [label.pod]
    return [p for p, _ in incident.topology.placement.items() if p.startswith(label.service)]


def _moved(base: pd.Series, after: pd.Series, *, use_max: bool = False) -> bool:
    """The fault period departs from the baseline by far more than the baseline's own spread.

    The spread is the baseline's 5-95% range over 3.3 (one standard deviation of a normal), so a lone
    blip in the baseline (a few errors in a quiet bucket) does not hide the fault.
    """
    b = base.to_numpy()
    a = after.to_numpy().max() if use_max else after.to_numpy().mean()
    low, high = np.percentile(b, [5, 95])
    return abs(a - b.mean()) > 4 * (high - low) / 3.3 + 0.1 * abs(b.mean()) + 1e-9


def _logs_matching(table, service: str, pattern: str) -> int:
    logs = table[table.service == service]
    return int(logs.message.str.contains(pattern, regex=True).sum())


# --- determinism ------------------------------------------------------------------------------------

def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    def make():
        return generate_incident("webshop", "network_delay", seed=5, window_minutes=4, config=FAST)

    (a, label_a), (b, label_b) = make(), make()
    for x, y in ((a.telemetry, b.telemetry), (a.baseline, b.baseline)):
        assert x.modalities == y.modalities
        for name in x.modalities:
            pd.testing.assert_frame_equal(x.table(name), y.table(name))
    assert label_a.to_json() == label_b.to_json() and a.meta.to_json() == b.meta.to_json()
    write_incident(a, tmp_path / "a", label=label_a)
    write_incident(b, tmp_path / "b", label=label_b)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and any(str(f).startswith("code/") for f in files_a)
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other, _ = generate_incident("webshop", "network_delay", seed=6, window_minutes=4, config=FAST)
    assert other.id != a.id
    assert not a.metrics.value.equals(other.metrics.value)


# --- every fault: a valid incident that round-trips ------------------------------------------------

@pytest.mark.parametrize("fault", list(FAULT_TYPES))
def test_every_fault_makes_a_valid_incident_that_round_trips(fault, incidents, tmp_path):
    incident, label = incidents(fault)
    assert label.fault_type == fault and label.service in get_system("webshop").service_names
    meta = incident.meta
    assert meta.window.start <= pd.Timestamp(label.inject_time) < meta.window.end
    assert meta.window.start < meta.alert_time < meta.window.end
    assert pd.Timestamp(label.inject_time) <= meta.alert_time
    # Nothing in incident.json gives the answer away.
    text = json.dumps(meta.to_json()).lower()
    assert fault not in text and fault.replace("_", " ") not in text
    assert label.service not in meta.alert or label.service in get_system("webshop").entry_services
    assert set(incident.modalities) >= {"metrics", "logs", "spans"}
    assert incident.baseline is not None and incident.code_dir is not None
    path = write_incident(incident, tmp_path / incident.id, label=label)
    back = read_incident(path)
    assert not back.warnings
    for name in incident.modalities:
        pd.testing.assert_frame_equal(back.telemetry.table(name), incident.telemetry.table(name), check_dtype=False)
    assert back.topology.edges == incident.topology.edges
    assert (path / "code").is_dir() and load_label(path).to_json() == label.to_json()


# --- honest labels ----------------------------------------------------------------------------------

METRIC_FAULTS = ["cpu_contention", "cpu_hog", "memory_leak", "disk_io", "network_delay", "packet_loss",
                 "retry_storm"]


@pytest.mark.parametrize("fault", METRIC_FAULTS)
def test_the_labelled_metric_carries_the_fault(fault, incidents):
    incident, label = incidents(fault)
    base, after = _series(incident, label, label.fine_grained, _root_pods(incident, label))
    assert len(base) and len(after), f"{label.fine_grained} is reported for {label.pod}"
    assert _moved(base, after, use_max=fault == "memory_leak"), (fault, base.mean(), after.mean())


@pytest.mark.parametrize("fault", list(FAULT_TYPES))
def test_a_caller_shows_propagated_symptoms(fault, incidents):
    incident, label = incidents(fault)
    path = label.propagation_path
    assert path[0] == label.service
    if len(path) == 1:
        assert label.service in get_system("webshop").entry_services
        return
    caller = path[1]
    assert (caller, path[0]) in incident.topology.edges or fault == "node_failure"
    pods = [p for p in incident.topology.placement if p.startswith(caller)]
    moved = [_moved(*_series(incident, label, metric_name(SCHEME, q), pods))
             for q in ("lat_p95", "err_ratio", "client_lat_p95")]
    assert any(moved) or _error_rate(_after(incident.logs, label), caller) > 3 * _error_rate(
        incident.baseline.logs, caller) + 1.0, (fault, caller)


def _error_rate(logs: pd.DataFrame, service: str) -> float:
    """ERROR and WARN lines of a service per minute of the table's span."""
    minutes = (logs.timestamp.max() - logs.timestamp.min()).total_seconds() / 60
    return int(((logs.service == service) & logs.level.isin(["ERROR", "WARN"])).sum()) / max(minutes, 1e-9)


def test_code_exception_logs_stack_traces_into_the_carried_code(incidents):
    incident, label = incidents("code_exception")
    path, line = label.fine_grained.rsplit(":", 1)
    source = (incident.code_dir / path).read_text().splitlines()
    assert "item.name" in source[int(line) - 1], "the labelled line is the injected bug"
    pattern = rf"{Path(path).name}:{line}\b"
    assert _logs_matching(_after(incident.logs, label), label.service, pattern) > 3
    assert _logs_matching(incident.baseline.logs, label.service, pattern) == 0
    deploys = incident.events[incident.events.kind == "deploy"]
    assert label.service in set(deploys.service)


def test_code_wrong_result_surfaces_at_the_callers(incidents):
    incident, label = incidents("code_wrong_result")
    caller = label.propagation_path[1]
    if label.extra["variant"] == "wrong_value":
        pattern = f"unexpected response from {label.service}"
        assert _logs_matching(_after(incident.logs, label), caller, pattern) > 3
        assert _logs_matching(incident.baseline.logs, caller, pattern) == 0
    else:
        spans = _after(incident.spans, label, "start")
        root = spans[spans.service == label.service]
        assert (root.status == "error").mean() > 0.1


def test_orchestration_faults_leave_their_marks(incidents):
    incident, label = incidents("pod_crash_loop")
    base, after = _series(incident, label, metric_name(SCHEME, "restarts"), [label.pod])
    assert base.max() == 0 and after.max() >= 2
    assert "BackOff" in set(incident.events[incident.events.pod == label.pod].reason)

    incident, label = incidents("node_failure")
    events = incident.events
    assert "NodeNotReady" in set(events[events.node == label.node].reason)
    late = incident.metrics[incident.metrics.timestamp > pd.Timestamp(label.inject_time) + pd.Timedelta(seconds=30)]
    assert label.node not in set(late.node), "a lost node reports no metrics"
    assert label.pod in label.extra["pods_on_node"]

    incident, label = incidents("bad_config")
    changes = incident.events[incident.events.kind == "config_change"]
    assert any(label.fine_grained in m for m in changes[changes.service == label.service].message)


def test_dependency_faults_name_the_data_store(incidents):
    incident, label = incidents("db_slow_query")
    assert label.service == "redis-cart" and label.fine_grained == "HGET"
    assert _moved(*_series(incident, label, metric_name(SCHEME, "lat_p95"), _root_pods(incident, label)))
    incident, label = incidents("cache_outage")
    assert label.service == "redis-cart"
    pattern = "RedisConnectionException|No connection"
    assert _logs_matching(_after(incident.logs, label), "cartservice", pattern) > 3
    incident, label = incidents("certificate_expiry")
    assert _logs_matching(_after(incident.logs, label), label.service, "TLS handshake error") > 3
    assert _logs_matching(incident.baseline.logs, label.service, "TLS handshake error") == 0
    incident, label = incidents("dns_failure")
    pattern = "no such host|i/o timeout|UnknownHost|resolution"
    assert _logs_matching(_after(incident.logs, label), label.service, pattern) > 3


# --- consistency ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["node_failure", "code_exception", "retry_storm"])
def test_pods_are_placed_and_spans_follow_topology_edges(fault, incidents):
    incident, _ = incidents(fault)
    placement, edges = incident.topology.placement, set(incident.topology.edges)
    system = get_system("webshop")
    assert set(placement.values()) <= set(system.nodes)
    for telemetry in (incident.telemetry, incident.baseline):
        for name in telemetry.modalities:
            pods = set(telemetry.table(name).pod.dropna())
            assert pods <= set(placement), (name, pods - set(placement))
        spans = telemetry.spans
        parents = spans.set_index("span_id").service
        linked = spans.dropna(subset=["parent_span_id"])
        parent_service = parents.reindex(linked.parent_span_id).to_numpy()
        known = pd.notna(parent_service)
        assert known.mean() > 0.99, "parents of spans are in the table"
        callees = linked.service.to_numpy()[known]
        pairs = {(a, b) for a, b in zip(parent_service[known], callees, strict=True) if a != b}
        assert pairs <= edges, pairs - edges
    metrics = incident.metrics
    assert (metrics.node.to_numpy() == metrics.pod.map(placement).to_numpy()).all()


def test_random_system_by_size(tmp_path):
    incident, label = generate_incident("random-9", seed=2, window_minutes=4, config=FAST)
    assert len(incident.topology.services) == 9
    assert label.service in incident.topology.services
    assert incident.metrics.service.nunique() == 9


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"system": "nowhere"}, "unknown system 'nowhere'.*valid: webshop"),
    ({"fault": "gremlins"}, "unknown fault type 'gremlins'.*valid: cpu_contention"),
    ({"severity": -0.5}, "severity"),
    ({"severity": 1.5}, "severity"),
    ({"onset": "slowly"}, "valid: sudden, gradual"),
    ({"window_minutes": 0.5}, "window_minutes"),
    ({"seed": -1}, "seed"),
    ({"target": "no-such-service"}, "cannot target.*valid: .*cartservice"),
    ({"fault": "certificate_expiry", "target": "frontend"}, "cannot target.*valid:"),
    ({"fault": "node_failure", "target": "no-such-node"}, "nodes: gke-"),
])
def test_bad_input_says_what_is_valid(kwargs, match):
    args = {"system": "webshop", "fault": "cpu_hog", "seed": 1, "window_minutes": 4, "config": FAST, **kwargs}
    system = args.pop("system")
    fault = args.pop("fault")
    with pytest.raises(FlipmoeInputError, match=match):
        generate_incident(system, fault, **args)


def test_bad_config_values_are_refused():
    with pytest.raises(FlipmoeInputError, match="trace_sample_rate"):
        ChaosConfig(trace_sample_rate=-0.1)
    with pytest.raises(FlipmoeInputError, match="metric_scheme"):
        ChaosConfig(metric_scheme="statsd")


# --- corpus and CLI -------------------------------------------------------------------------------

def test_corpus_takes_fault_types_round_robin(tmp_path):
    paths = generate_corpus("webshop", 3, seed=4, out=tmp_path, faults=["cpu_hog", "dns_failure"],
                            window_minutes=3, config=FAST)
    assert [load_label(p).fault_type for p in paths] == ["cpu_hog", "dns_failure", "cpu_hog"]
    assert len({p.name for p in paths}) == 3
    with pytest.raises(FlipmoeInputError, match="unknown fault type"):
        generate_corpus("webshop", 1, seed=0, out=tmp_path, faults=["nope"])


def test_cli_lists_systems_and_faults(capsys):
    assert main(["chaos", "list"]) == 0
    out = capsys.readouterr().out
    assert "webshop" in out and "ticketing" in out and "random-N" in out
    for fault in FAULT_TYPES.values():
        assert fault.name in out and fault.level.value in out


def test_cli_generates_incident_directories(tmp_path, capsys):
    out = tmp_path / "corpus"
    code = main(["chaos", "generate", "--system", "webshop", "--faults", "2", "--seed", "7", "--out", str(out),
                 "--fault", "cpu_hog", "--window-minutes", "3"])
    assert code == 0
    dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(dirs) == 2 and all((d / "label.json").exists() and (d / "incident.json").exists() for d in dirs)
    assert main(["chaos", "generate", "--system", "nope", "--faults", "1", "--seed", "1", "--out", str(out)]) == 2
    assert "unknown system 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_corpus_on_ray_workers_matches_one_process(tmp_path):
    ray = pytest.importorskip("ray")
    local = generate_corpus("webshop", 2, seed=9, out=tmp_path / "one", window_minutes=3, config=FAST)
    try:
        parallel = generate_corpus("webshop", 2, seed=9, out=tmp_path / "two", window_minutes=3, config=FAST,
                                   workers=2)
    finally:
        ray.shutdown()
    assert [p.name for p in local] == [p.name for p in parallel]
    for a, b in zip(local, parallel, strict=True):
        assert (a / "metrics.parquet").read_bytes() == (b / "metrics.parquet").read_bytes()
    assert np.all([load_label(p).fault_type for p in parallel] == ["cpu_contention", "cpu_hog"])


def test_a_release_train_deploys_other_services_around_a_faulty_change():
    from data_pipeline.chaos import ChaosConfig

    incident, label = generate_incident("webshop", "code_exception", seed=5, config=ChaosConfig(release_train=3))
    deploys = incident.events[incident.events["kind"] == "deploy"]
    assert label.service in set(deploys["service"]) and len(set(deploys["service"]) - {label.service}) >= 3
    spread = deploys["timestamp"].max() - deploys["timestamp"].min()
    assert spread.total_seconds() <= 150, "the release ships within a couple of minutes"
    plain, _ = generate_incident("webshop", "code_exception", seed=5)
    assert len(plain.events[plain.events["kind"] == "deploy"]) < len(deploys)


def test_release_train_is_validated():
    from data_pipeline.chaos import ChaosConfig

    with pytest.raises(FlipmoeInputError, match="release_train"):
        ChaosConfig(release_train=9)
    with pytest.raises(FlipmoeInputError, match="release_spread_s"):
        ChaosConfig(release_train=3, release_spread_s=5)


def test_a_spread_release_train_deploys_before_the_faulty_change():
    from data_pipeline.chaos import ChaosConfig

    config = ChaosConfig(release_train=3, release_spread_s=900)
    incident, label = generate_incident("webshop", "code_exception", seed=5, config=config)
    deploys = incident.events[incident.events["kind"] == "deploy"]
    faulty = deploys[deploys["service"] == label.service]["timestamp"].min()
    offsets = (deploys[deploys["service"] != label.service]["timestamp"] - faulty).dt.total_seconds()
    assert len(offsets) >= 3
    assert ((offsets >= -930) & (offsets <= 60)).all()
    assert offsets.min() < -60, "some land well before the faulty change"


# --- noise like real telemetry --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quiet_ticketing():
    """A fault-free stretch of the ticketing system: the baseline of one incident."""
    incident, _ = generate_incident("ticketing", "cpu_hog", seed=5, window_minutes=20, config=FAST)
    return incident


def test_requests_arrive_as_a_poisson_process(quiet_ticketing):
    # A lightly loaded pod's request count jumps from bucket to bucket as counting noise does
    # (variance about the mean), instead of following the smooth load curve.
    metrics = quiet_ticketing.baseline.metrics
    workload = metrics[metrics.metric == "PodWorkload(Ops)"]
    step = 30.0
    ratios = []
    for _, series in workload.groupby("pod"):
        counts = series.sort_values("timestamp")["value"].to_numpy() * step
        if counts.mean() > 2:
            ratios.append(counts.var() / counts.mean())
    assert len(ratios) >= 5
    assert 0.5 < float(np.median(ratios)) < 3.0


def test_memory_drifts_and_cpu_comes_in_bursts(quiet_ticketing):
    from data_pipeline.chaos.realism import noise_by_metric

    noise = noise_by_metric(quiet_ticketing)
    memory, cpu = noise.loc["MemoryUsage(Mi)"], noise.loc["CpuUsageRate(%)"]
    assert memory["cv"] < 0.02 and memory["acf1"] > 0.5      # smooth and autocorrelated
    assert cpu["cv"] > 0.3 and abs(cpu["acf1"]) < 0.3        # bursty, sample to sample


def test_spring_database_calls_hang_from_a_repository_span(quiet_ticketing):
    spans = quiet_ticketing.spans
    by_id = spans.set_index("span_id")
    sql = spans[spans.operation.str.startswith("SELECT ") & spans.service.str.startswith("ts-")]
    assert len(sql)
    parents = by_id.loc[sql.parent_span_id]
    assert parents.operation.str.fullmatch(r"[A-Za-z0-9]+Repository\.(findAll|save)").all()
    assert (parents.service.to_numpy() == sql.service.to_numpy()).all()
    assert parents.operation.str.contains("Controller").sum() == 0
    grandparents = by_id.loc[parents.parent_span_id]
    assert grandparents.operation.str.contains(r"Controller\.").all()
    # The repository span encloses its call.
    assert (parents.start.to_numpy() <= sql.start.to_numpy()).all()
    assert (parents.duration.to_numpy() >= sql.duration.to_numpy()).all()


def test_latency_percentiles_come_from_histogram_buckets():
    from data_pipeline.chaos.metrics import histogram_quantiles

    key = np.array([0, 0, 0, 0, 1, 1])
    values = np.array([0.001, 0.03, 0.04, 20.0, 0.3, 0.3])
    q = histogram_quantiles(key, values, 3, (0.5, 0.95))
    # Group 0: rank 2 of 4 falls half way into the (0.025, 0.05] bucket (one value below it, two in it);
    # p95 lands in the overflow bucket, reported as the last finite bound.
    assert q[0] == pytest.approx([0.0375, 10.0])
    # Group 1: both values in (0.25, 0.5], interpolated linearly inside it.
    assert q[1] == pytest.approx([0.375, 0.25 + 0.25 * 0.95])
    assert np.isnan(q[2]).all()


def test_noisy_handlers_are_the_same_in_every_incident_of_a_system():
    def benign_errors(seed: int) -> set[str]:
        incident, _ = generate_incident("ticketing", "cpu_hog", seed=seed, window_minutes=10, config=FAST)
        logs = incident.baseline.logs
        return set(logs[(logs.level == "ERROR") & logs.message.str.contains(" Failed\\]\\[")]
                   .message.str.extract(r"\[(\w+)\]\[")[0])

    first, second = benign_errors(1), benign_errors(2)
    assert first and second and len(first & second) >= min(len(first), len(second)) // 2


def test_spring_handlers_write_business_lines_inside_their_span(quiet_ticketing):
    logs = quiet_ticketing.baseline.logs
    spring = logs[logs.service.str.startswith("ts-") & logs.span_id.notna()]
    per_span = spring.groupby("span_id").size()
    assert per_span.mean() > 2.5          # entry, exit and business lines between them
    steps = spring[spring.message.str.contains(r"\]\[(?:Check|Query|Convert result|Build response)")]
    assert len(steps) and steps.span_id.isin(per_span[per_span >= 3].index).mean() > 0.9
