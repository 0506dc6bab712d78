"""The chaos gym's systems, engine and source tree, below the incident level."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from data_pipeline.chaos import ChaosConfig, get_system, random_dag
from data_pipeline.chaos import simulate as sim
from data_pipeline.chaos.code import CodeBase
from data_pipeline.chaos.metric_names import QUANTITIES, metric_name
from data_pipeline.chaos.systems import Call, system_names
from flipmoe.errors import FlipmoeInputError


def _depth(system) -> int:
    """Longest chain of services a request can walk through."""
    ops = {(s.name, o.method): o for s in system.services for o in s.operations}

    def depth(key) -> int:
        return 1 + max((depth((c.service, c.operation)) for c in ops[key].calls), default=0)

    return max(depth((rt.service, rt.operation)) for rt in system.request_types)


def _reachable(system) -> set[str]:
    ops = {(s.name, o.method): o for s in system.services for o in s.operations}
    seen, todo = set(), [(rt.service, rt.operation) for rt in system.request_types]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        for c in ops[key].calls:
            todo.append((c.service, c.operation))
            if c.fallback:
                todo.append(c.fallback)
    return {service for service, _ in seen}


def test_webshop_has_the_eleven_services_of_a_web_shop():
    shop = get_system("webshop")
    names = set(shop.service_names)
    assert len(names) == 11
    for part in ("frontend", "cart", "checkout", "payment", "catalog", "currency", "shipping", "email",
                 "recommendation", "ad"):
        assert any(part in name for name in names), part
    assert [s.kind for s in shop.services].count("cache") == 1
    assert _reachable(shop) == names


def test_ticketing_is_large_deep_and_has_databases():
    tt = get_system("ticketing")
    kinds = [s.kind for s in tt.services]
    assert kinds.count("service") >= 40 and kinds.count("database") >= 2 and kinds.count("cache") == 1
    assert _depth(tt) >= 6, "deep call chains"
    assert _reachable(tt) == set(tt.service_names)


def test_pods_sit_on_nodes_and_replicas_spread():
    for name in ("webshop", "ticketing"):
        system = get_system(name)
        assert {p.service for p in system.pods} == set(system.service_names)
        assert {p.node for p in system.pods} <= set(system.nodes)
        for svc in system.services:
            nodes = [p.node for p in system.pods if p.service == svc.name]
            assert len(nodes) == svc.replicas and len(set(nodes)) == min(svc.replicas, len(system.nodes))
        assert system.topology().placement == {p.name: p.node for p in system.pods}


@pytest.mark.parametrize("n", [5, 12, 37])
def test_random_dag_has_exactly_the_requested_size(n):
    system = random_dag(n, seed=3)
    assert len(system.services) == n
    assert _reachable(system) == set(system.service_names), "every service is reachable from the entry"
    assert {"cache", "database"} <= {s.kind for s in system.services}


def test_random_dag_is_a_function_of_its_seed():
    assert random_dag(15, seed=1) == random_dag(15, seed=1)
    assert random_dag(15, seed=1).service_names != random_dag(15, seed=2).service_names
    assert get_system("random-15") == random_dag(15)
    sizes = {len(get_system("random", seed=s).services) for s in range(6)}
    assert len(sizes) > 1 and all(8 <= k <= 40 for k in sizes)


def test_unknown_system_lists_the_valid_ones():
    with pytest.raises(FlipmoeInputError, match="valid: webshop, ticketing"):
        get_system("shop")
    assert system_names()[:2] == ["webshop", "ticketing"]
    with pytest.raises(FlipmoeInputError, match="5 to 400"):
        random_dag(3)


def test_impossible_systems_are_refused():
    shop = get_system("webshop")
    with pytest.raises(FlipmoeInputError, match="peak_rps"):
        replace(shop, peak_rps=-1.0, pods=())
    frontend = shop.services[0]
    bad_call = replace(frontend.operations[0], calls=(Call(service="nowhere", operation="x"),))
    with pytest.raises(FlipmoeInputError, match="unknown operation nowhere.x"):
        replace(shop, services=(replace(frontend, operations=(bad_call,)),) + shop.services[1:], pods=())
    # currency calls back into the frontend: a request would never finish.
    loop = replace(shop.services[1].operations[0], calls=(Call(service="frontend", operation="home"),))
    services = (shop.services[0], replace(shop.services[1], operations=(loop,) + shop.services[1].operations[1:]),
                *shop.services[2:])
    with pytest.raises(FlipmoeInputError, match="cycle"):
        replace(shop, services=services, pods=())
    with pytest.raises(FlipmoeInputError, match="non-positive weight"):
        replace(shop, request_types=(replace(shop.request_types[0], weight=-2.0),), pods=())


def test_every_scheme_names_every_quantity():
    for scheme in ("prometheus", "human", "nezha"):
        names = [metric_name(scheme, q) for q in QUANTITIES]
        assert len(set(names)) == len(names)
    assert metric_name("nezha", "cpu") == "CpuUsageRate(%)"


def test_load_shape_has_quiet_nights_and_busy_evenings():
    shape = sim.load_shape(np.arange(24.0))
    assert shape.min() >= 0.25 and shape.max() <= 1.0
    assert shape[20] > shape[11] > shape[3]


def _run(system_name: str, minutes: int = 6) -> sim.Simulation:
    system = get_system(system_name)
    rng = np.random.default_rng(0)
    buckets = int(minutes * 60 / system.metric_step_s)
    timeline = sim.Timeline(pd.Timestamp("2025-01-06T18:00:00Z"), system.metric_step_s, buckets, buckets // 2)
    cluster = sim.Cluster(system, timeline, rng)
    compiled = sim.Compiled(system)
    cond = sim.Conditions.neutral(buckets, len(cluster.pods), len(system.services), len(system.nodes))
    config = ChaosConfig(samples_per_minute=60, load_probes=1)
    rps = sim.request_rate(system, timeline, rng)
    result = sim.Engine(compiled, cluster, cond, timeline, rng, config, 0.05, rps).run()
    return sim.Simulation(system=system, compiled=compiled, cluster=cluster, cond=cond, timeline=timeline,
                          result=result, scheme=system.metric_scheme, rng=rng)


def test_fault_free_simulation_is_healthy_and_consistent():
    s = _run("webshop")
    r = s.result.records
    roots = (r.role == sim.SERVER) & (r.parent < 0)
    assert (r.code[roots] >= 10).mean() < 0.03, "a healthy system rarely fails"
    # Every non-root record's parent exists, and a client span's child runs inside it.
    pos = {rid: i for i, rid in enumerate(r.rid)}
    for i in np.flatnonzero(~roots)[:2000]:
        parent = pos[r.parent[i]]
        assert r.start[i] >= r.start[parent] - 1e-9
        if r.role[parent] == sim.CLIENT:
            assert r.service[i] == r.peer[parent], "a client span's child runs in the callee"
            assert r.dur[i] <= r.dur[parent] + 1e-6


def test_slower_pod_makes_slower_callers():
    """A condition on one pod shows up in its callers' client spans: propagation, not labelling."""
    base = _run("webshop")
    system = base.system
    cart = system.service_names.index("cartservice")
    cond = sim.Conditions.neutral(base.timeline.n_buckets, len(base.cluster.pods), len(system.services),
                                  len(system.nodes))
    cart_pods = base.cluster.pods_of(cart)
    cond.net_delay_ms[:, cart_pods] = 300.0
    rng = np.random.default_rng(0)
    result = sim.Engine(base.compiled, base.cluster, cond, base.timeline, rng,
                        ChaosConfig(samples_per_minute=60, load_probes=1), 0.05,
                        sim.request_rate(system, base.timeline, rng)).run()

    def client_ms(records) -> float:
        calls = (records.role == sim.CLIENT) & (records.peer == cart)
        return float(np.median(records.dur[calls]))

    assert client_ms(result.records) > client_ms(base.result.records) + 250


def test_injected_bug_is_where_the_stack_trace_points():
    system = get_system("ticketing")
    code = CodeBase(system)
    location = code.inject_bug("ts-order-service", "getOrderById", "exception")
    buggy = code.files[location.path][location.line - 1]
    assert ".getName().trim()" in buggy
    trace = code.stack_trace("ts-order-service", "getOrderById", "compute")
    assert f"OrderServiceImpl.java:{location.line})" in trace and "NullPointerException" in trace
    entry = code.line("ts-order-service", "getOrderById", "entry")
    assert "LOGGER.info" in code.files[location.path][entry - 1]
    old = code.set_env("ts-preserve-service", "ORDER_SERVICE_PORT", "12032")
    assert old is not None and 'value: "12032"' in "\n".join(code.files["ts-preserve-service/deploy.yaml"])
