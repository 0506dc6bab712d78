"""Simulated microservice systems: services, operations, call graphs, pods on nodes, load.

A `System` is plain data. Each `Service` has a kind (application service, database or cache), a
runtime (java, go, python, node, csharp; mysql, postgres, mongodb, redis for data stores), replicas,
resource limits and `Operation`s. An operation has a log-normal self time (its median and shape,
excluding downstream calls), a CPU cost, and the `Call`s it makes: to an operation of another
service, with a probability, a repeat count, a client timeout, retries, an optional fallback (a
cache miss or failure falls back to the database) and whether the caller tolerates a failure.
`RequestType`s are the user-facing entry operations with their share of the traffic; the load
follows a daily shape that peaks at `peak_rps`.

Built-in systems (`get_system(name)`):
- `webshop`: an 11-service online shop after Google's Online Boutique (gRPC, five languages, a Redis
  cart store), Prometheus-style metric names, 15 s metrics.
- `ticketing`: a 46-service train-ticket system after TrainTicket (42 application services, mostly
  Java over REST with deep call chains; two MySQL databases, a MongoDB and a Redis cache),
  Nezha-style metric names, 30 s metrics.
- `random-N`: a random layered DAG of N services (`random_dag`), and `random`, a fresh random DAG of
  8 to 40 services per incident seed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from data_pipeline.chaos.config import METRIC_SCHEMES
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import Topology

ServiceKind = Literal["service", "database", "cache"]
APP_RUNTIMES = ("java", "go", "python", "node", "csharp")
STORE_RUNTIMES = {"mysql": "database", "postgres": "database", "mongodb": "database", "redis": "cache"}

# Runtime defaults: (cpu limit cores, memory limit MiB, resident memory MiB, port).
_RUNTIME_RESOURCES = {
    "java": (1.0, 1536, 520, 8080), "go": (0.5, 256, 40, 8080), "python": (0.5, 384, 110, 8080),
    "node": (0.5, 384, 90, 8080), "csharp": (0.5, 512, 140, 7070), "mysql": (2.0, 4096, 1400, 3306),
    "postgres": (2.0, 4096, 900, 5432), "mongodb": (2.0, 4096, 1200, 27017), "redis": (0.5, 1024, 60, 6379),
}


@dataclass(frozen=True, kw_only=True)
class Call:
    """One downstream call an operation makes."""

    service: str
    """Callee service."""
    operation: str
    """Callee operation, by its `method` name."""
    probability: float = 1.0
    """Chance the call is made at all (branches of the handler)."""
    count: int = 1
    """Sequential repeats of the call (e.g. one conversion per cart item)."""
    timeout_ms: float = 10_000.0
    """Client timeout of one attempt."""
    retries: int = 0
    """Extra attempts after a timeout, refused connection or 5xx."""
    fallback: tuple[str, str] | None = None
    """(service, method) called when this call fails or misses (a cache in front of a database)."""
    optional: bool = False
    """The caller degrades gracefully (logs a warning) instead of failing when the call fails."""


@dataclass(frozen=True, kw_only=True)
class Operation:
    """A handler of a service: its span name, its cost and its downstream calls."""

    method: str
    """Handler name in code (unique within the service), e.g. `getOrderById` or `orders.select`."""
    name: str
    """Server span name, e.g. `GET /api/v1/orders/{id}`, `hipstershop.CartService/GetCart`, `SELECT ts.orders`."""
    median_ms: float
    """Median self time when unloaded (downstream calls excluded)."""
    sigma: float = 0.45
    """Shape of the log-normal self time (0.3 tight, 0.8 heavy-tailed)."""
    cpu_ms: float | None = None
    """CPU milliseconds per call; None means 60% of the median self time."""
    calls: tuple[Call, ...] = ()
    parallel: bool = False
    """Calls run concurrently (the handler waits for the slowest) instead of one after another."""
    writes: bool = False
    """The handler writes (to disk or a store): disk faults hit it."""
    error_rate: float = 0.0002
    """Baseline probability of an unexpected error (bad input, a transient bug)."""
    response_bytes: int = 2048

    @property
    def cpu_cost_ms(self) -> float:
        return self.cpu_ms if self.cpu_ms is not None else 0.6 * self.median_ms


@dataclass(frozen=True, kw_only=True)
class Service:
    name: str
    kind: ServiceKind = "service"
    runtime: str = "java"
    replicas: int = 1
    operations: tuple[Operation, ...] = ()
    cpu_limit: float | None = None
    """CPU limit in cores; None takes the runtime's default."""
    memory_limit_mb: float | None = None
    memory_base_mb: float | None = None
    """Resident memory at rest."""
    port: int | None = None

    def resources(self) -> tuple[float, float, float, int]:
        """(cpu limit, memory limit MiB, resident MiB, port) with runtime defaults filled in."""
        cpu, mem, base, port = _RUNTIME_RESOURCES[self.runtime]
        return (self.cpu_limit or cpu, self.memory_limit_mb or mem, self.memory_base_mb or base, self.port or port)

    def operation(self, method: str) -> Operation:
        for op in self.operations:
            if op.method == method:
                return op
        raise FlipmoeInputError(f"service {self.name} has no operation {method!r}",
                                hint=f"valid: {', '.join(o.method for o in self.operations)}")


@dataclass(frozen=True, kw_only=True)
class RequestType:
    """A user-facing request: an entry operation and its share of the traffic."""

    name: str
    service: str
    operation: str
    weight: float


@dataclass(frozen=True, kw_only=True)
class Pod:
    name: str
    service: str
    node: str
    ip: str


@dataclass(frozen=True, kw_only=True)
class System:
    """A simulated system. Pods are placed on nodes when `pods` is left empty."""

    name: str
    description: str
    services: tuple[Service, ...]
    request_types: tuple[RequestType, ...]
    nodes: tuple[str, ...]
    pods: tuple[Pod, ...] = ()
    node_cores: float = 8.0
    node_memory_gb: float = 32.0
    peak_rps: float = 30.0
    """Requests per second at the daily peak."""
    utc_offset_hours: float = 0.0
    """Local time of the users: the daily load shape peaks late morning and evening local time."""
    metric_scheme: str = "prometheus"
    metric_step_s: float = 15.0
    trace_sample_rate: float = 0.03
    log_sample_rate: float = 0.5
    """Fraction of simulated requests whose request-scoped lines are kept (`ChaosConfig` may override it)."""
    namespace: str = "default"

    def __post_init__(self) -> None:
        _validate(self)
        if not self.pods:
            object.__setattr__(self, "pods", _place(self))

    @property
    def service_names(self) -> list[str]:
        return [s.name for s in self.services]

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise FlipmoeInputError(f"system {self.name} has no service {name!r}",
                                hint=f"valid: {', '.join(self.service_names)}")

    @property
    def edges(self) -> list[tuple[str, str]]:
        """Service-level (caller, callee) pairs, fallbacks included, in declaration order."""
        seen: dict[tuple[str, str], None] = {}
        for svc in self.services:
            for op in svc.operations:
                for call in op.calls:
                    seen[(svc.name, call.service)] = None
                    if call.fallback is not None:
                        seen[(svc.name, call.fallback[0])] = None
        return list(seen)

    @property
    def entry_services(self) -> list[str]:
        return list(dict.fromkeys(rt.service for rt in self.request_types))

    def topology(self) -> Topology:
        return Topology(services=self.service_names, edges=self.edges,
                        kinds={s.name: s.kind for s in self.services},
                        placement={p.name: p.node for p in self.pods})


# --- validation ---------------------------------------------------------------------------------------

def _validate(system: System) -> None:
    def bad(problem: str, hint: str | None = None) -> FlipmoeInputError:
        return FlipmoeInputError(f"system {system.name!r}: {problem}", hint=hint)

    if system.metric_scheme not in METRIC_SCHEMES:
        raise bad(f"unknown metric scheme {system.metric_scheme!r}", f"valid: {', '.join(METRIC_SCHEMES)}")
    if not system.services or not system.nodes or not system.request_types:
        raise bad("needs services, nodes and request types")
    if system.peak_rps <= 0 or system.node_cores <= 0 or system.metric_step_s <= 0:
        raise bad("peak_rps, node_cores and metric_step_s must be positive")
    if not 0 < system.trace_sample_rate <= 1:
        raise bad("trace_sample_rate must be in (0, 1]")
    if not 0 < system.log_sample_rate <= 1:
        raise bad("log_sample_rate must be in (0, 1]")
    names = system.service_names
    if len(set(names)) != len(names):
        raise bad("service names repeat")
    by_name = {s.name: s for s in system.services}
    for svc in system.services:
        _validate_service(svc, bad)
    valid_ops = {(s.name, o.method) for s in system.services for o in s.operations}
    for svc in system.services:
        for op in svc.operations:
            for call in op.calls:
                targets = [(call.service, call.operation)] + ([call.fallback] if call.fallback else [])
                for target in targets:
                    if target not in valid_ops:
                        raise bad(f"{svc.name}.{op.method} calls unknown operation {target[0]}.{target[1]}",
                                  f"services: {', '.join(names)}")
                if not 0 <= call.probability <= 1 or call.count < 1 or call.timeout_ms <= 0 or call.retries < 0:
                    raise bad(f"{svc.name}.{op.method} -> {call.service}: probability must be in [0, 1], "
                              "count >= 1, timeout > 0 and retries >= 0")
    for rt in system.request_types:
        if (rt.service, rt.operation) not in valid_ops:
            raise bad(f"request type {rt.name} names unknown operation {rt.service}.{rt.operation}")
        if rt.weight <= 0:
            raise bad(f"request type {rt.name} has a non-positive weight {rt.weight}")
        if by_name[rt.service].kind != "service":
            raise bad(f"request type {rt.name} enters at data store {rt.service}")
    _check_acyclic(system, bad)
    if system.pods:
        placed = {p.service for p in system.pods}
        unknown_nodes = {p.node for p in system.pods} - set(system.nodes)
        if placed != set(names) or unknown_nodes:
            raise bad("pods must cover every service and sit on listed nodes")


def _validate_service(svc: Service, bad) -> None:  # type: ignore[no-untyped-def]
    if svc.runtime not in _RUNTIME_RESOURCES:
        raise bad(f"service {svc.name} has unknown runtime {svc.runtime!r}",
                  f"valid: {', '.join(_RUNTIME_RESOURCES)}")
    expected_kind = STORE_RUNTIMES.get(svc.runtime, "service")
    if svc.kind != expected_kind:
        raise bad(f"service {svc.name}: runtime {svc.runtime} is a {expected_kind}, not a {svc.kind}")
    if svc.replicas < 1 or not svc.operations:
        raise bad(f"service {svc.name} needs at least one replica and one operation")
    methods = [o.method for o in svc.operations]
    if len(set(methods)) != len(methods):
        raise bad(f"service {svc.name} repeats an operation name")
    for op in svc.operations:
        if op.median_ms <= 0 or op.sigma <= 0 or op.cpu_cost_ms < 0 or not 0 <= op.error_rate < 1:
            raise bad(f"{svc.name}.{op.method}: median and sigma must be positive, cpu_ms >= 0, "
                      "error_rate in [0, 1)")
    cpu, mem, base, _ = svc.resources()
    if cpu <= 0 or mem <= base or base <= 0:
        raise bad(f"service {svc.name}: cpu limit must be positive and memory limit above resident memory")


def _check_acyclic(system: System, bad) -> None:  # type: ignore[no-untyped-def]
    """Operation-level call graphs must be DAGs, or a request would never finish."""
    graph = {(s.name, o.method): [(c.service, c.operation) for c in o.calls]
             + [c.fallback for c in o.calls if c.fallback] for s in system.services for o in s.operations}
    state: dict[tuple[str, str], int] = {}

    def visit(node: tuple[str, str], path: list[tuple[str, str]]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = " -> ".join(f"{s}.{m}" for s, m in path + [node, nxt])
                raise bad(f"operation calls form a cycle: {cycle}")
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


# --- placement ----------------------------------------------------------------------------------------

_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def k8s_suffix(key: str, length: int) -> str:
    """A Kubernetes-looking random suffix that is a pure function of `key`."""
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return "".join(_K8S_ALPHABET[b % len(_K8S_ALPHABET)] for b in digest[:length])


def pod_name(system: str, service: Service, index: int, generation: str = "") -> str:
    """Deployment pods are `<svc>-<template hash>-<suffix>`; data stores are StatefulSet pods `<svc>-<i>`."""
    if service.kind != "service":
        return f"{service.name}-{index}"
    template = k8s_suffix(f"{system}/{service.name}/{generation}", 10 if len(service.name) < 24 else 9)
    return f"{service.name}-{template}-{k8s_suffix(f'{system}/{service.name}/{generation}/{index}', 5)}"


def _place(system: System) -> tuple[Pod, ...]:
    """Spread replicas over nodes: a service's replicas land on different nodes, load stays even."""
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(system.name.encode(), digest_size=8).digest(), "big"))
    load = dict.fromkeys(system.nodes, 0.0)
    per_node = dict.fromkeys(system.nodes, 0)
    pods = []
    for svc in system.services:
        cpu = svc.resources()[0]
        used: set[str] = set()
        for i in range(svc.replicas):
            choices = [n for n in system.nodes if n not in used] or list(system.nodes)
            jitter = rng.random(len(choices)) * 0.3
            node = min(zip(choices, jitter, strict=True), key=lambda nj: load[nj[0]] + nj[1])[0]
            used.add(node)
            load[node] += cpu
            per_node[node] += 1
            node_index = system.nodes.index(node)
            pods.append(Pod(name=pod_name(system.name, svc, i), service=svc.name, node=node,
                            ip=f"10.{40 + node_index // 250}.{node_index % 250}.{10 + per_node[node]}"))
    return tuple(pods)


# --- compact constructors -----------------------------------------------------------------------------

def _c(service: str, method: str, *, p: float = 1.0, n: int = 1, timeout: float = 10_000.0, retries: int = 0,
       fallback: tuple[str, str] | None = None, optional: bool = False) -> Call:
    return Call(service=service, operation=method, probability=p, count=n, timeout_ms=timeout,
                retries=retries, fallback=fallback, optional=optional)


def _op(method: str, name: str, median_ms: float, *calls: Call, **kw: object) -> Operation:
    return Operation(method=method, name=name, median_ms=median_ms, calls=calls, **kw)  # type: ignore[arg-type]


def _svc(name: str, runtime: str, *ops: Operation, replicas: int = 1, cpu_limit: float | None = None,
         memory_limit_mb: float | None = None, memory_base_mb: float | None = None) -> Service:
    kind: ServiceKind = "database" if runtime in ("mysql", "postgres", "mongodb") else \
        "cache" if runtime == "redis" else "service"
    return Service(name=name, kind=kind, runtime=runtime, replicas=replicas, operations=ops, cpu_limit=cpu_limit,
                   memory_limit_mb=memory_limit_mb, memory_base_mb=memory_base_mb)


def _sql_store(name: str, runtime: str, database: str, tables: Mapping[str, float]) -> Service:
    """A SQL database with select/insert/update operations per table (median select time in ms)."""
    ops = []
    for table, median in tables.items():
        ops.append(_op(f"{table}.select", f"SELECT {database}.{table}", median, sigma=0.6, response_bytes=1500,
                       error_rate=5e-5))
        ops.append(_op(f"{table}.insert", f"INSERT {database}.{table}", median * 1.6, sigma=0.5, writes=True,
                       response_bytes=64))
        ops.append(_op(f"{table}.update", f"UPDATE {database}.{table}", median * 1.4, sigma=0.5, writes=True,
                       response_bytes=64))
    return _svc(name, runtime, *ops)


def _mongo_store(name: str, database: str, collections: Mapping[str, float]) -> Service:
    ops = []
    for coll, median in collections.items():
        ops.append(_op(f"{coll}.find", f"find {database}.{coll}", median, sigma=0.6, response_bytes=1800,
                       error_rate=5e-5))
        ops.append(_op(f"{coll}.insert", f"insert {database}.{coll}", median * 1.5, sigma=0.5, writes=True,
                       response_bytes=64))
        ops.append(_op(f"{coll}.update", f"update {database}.{coll}", median * 1.3, sigma=0.5, writes=True,
                       response_bytes=64))
    return _svc(name, "mongodb", *ops)


def _redis_store(name: str, commands: Mapping[str, bool]) -> Service:
    """A Redis instance; `commands` maps a command to whether it writes."""
    ops = [_op(cmd, cmd, 0.25, sigma=0.35, writes=writes, response_bytes=600, cpu_ms=0.05, error_rate=2e-5)
           for cmd, writes in commands.items()]
    return _svc(name, "redis", *ops)


# --- webshop: after Online Boutique -------------------------------------------------------------------

def webshop() -> System:
    """11 services: a Go frontend over gRPC services in five languages and a Redis cart store."""
    cur, cat, cart = "currencyservice", "productcatalogservice", "cartservice"
    rec, ads, ship = "recommendationservice", "adservice", "shippingservice"
    pay, email, checkout = "paymentservice", "emailservice", "checkoutservice"
    grpc = "hipstershop.{}/{}".format
    product = _c(cat, "GetProduct", timeout=800, retries=2)
    services = (
        _svc("frontend", "go",
             _op("home", "GET /", 4.0, _c(cur, "GetSupportedCurrencies"), _c(cat, "ListProducts", timeout=2000),
                 _c(cart, "GetCart"), _c(cur, "Convert", n=6), _c(ads, "GetAds", optional=True, timeout=500),
                 response_bytes=40_000),
             _op("product", "GET /product/{id}", 3.0, product, _c(cur, "GetSupportedCurrencies"),
                 _c(cart, "GetCart"), _c(cur, "Convert"), _c(rec, "ListRecommendations", timeout=3000),
                 _c(ads, "GetAds", optional=True, timeout=500), response_bytes=25_000),
             _op("addToCart", "POST /cart", 2.0, product, _c(cart, "AddItem", retries=1, timeout=1500),
                 writes=True, response_bytes=800),
             _op("viewCart", "GET /cart", 4.0, _c(cur, "GetSupportedCurrencies"), _c(cart, "GetCart"),
                 _c(rec, "ListRecommendations", timeout=3000), _c(ship, "GetQuote"),
                 _c(cat, "GetProduct", n=2, timeout=800, retries=2), _c(cur, "Convert", n=2), response_bytes=30_000),
             _op("placeOrder", "POST /cart/checkout", 5.0, _c(checkout, "PlaceOrder", timeout=8000),
                 _c(rec, "ListRecommendations", optional=True, timeout=3000), _c(cur, "GetSupportedCurrencies"),
                 writes=True, response_bytes=20_000),
             _op("setCurrency", "POST /setCurrency", 0.6, _c(cur, "GetSupportedCurrencies"), response_bytes=300),
             replicas=2, cpu_limit=1.0),
        _svc(cur, "node",
             _op("GetSupportedCurrencies", grpc("CurrencyService", "GetSupportedCurrencies"), 0.8, response_bytes=900),
             _op("Convert", grpc("CurrencyService", "Convert"), 0.6, sigma=0.35, response_bytes=120)),
        _svc(cat, "go",
             _op("ListProducts", grpc("ProductCatalogService", "ListProducts"), 1.5, response_bytes=9000),
             _op("GetProduct", grpc("ProductCatalogService", "GetProduct"), 0.7, response_bytes=700),
             _op("SearchProducts", grpc("ProductCatalogService", "SearchProducts"), 2.0, response_bytes=3000)),
        _svc(cart, "csharp",
             _op("GetCart", grpc("CartService", "GetCart"), 1.0, _c("redis-cart", "HGET", timeout=5000),
                 response_bytes=600),
             _op("AddItem", grpc("CartService", "AddItem"), 1.5, _c("redis-cart", "HGET", timeout=5000),
                 _c("redis-cart", "HSET", timeout=5000), _c("redis-cart", "EXPIRE", timeout=5000), writes=True,
                 response_bytes=64),
             _op("EmptyCart", grpc("CartService", "EmptyCart"), 1.0, _c("redis-cart", "HSET", timeout=5000),
                 writes=True, response_bytes=64)),
        _svc(rec, "python",
             _op("ListRecommendations", grpc("RecommendationService", "ListRecommendations"), 6.0,
                 _c(cat, "ListProducts", timeout=2000), sigma=0.55, response_bytes=500)),
        _svc(ads, "java", _op("GetAds", grpc("AdService", "GetAds"), 2.0, response_bytes=400), cpu_limit=0.5,
             memory_limit_mb=600, memory_base_mb=260),
        _svc(ship, "go",
             _op("GetQuote", grpc("ShippingService", "GetQuote"), 0.8, response_bytes=120),
             _op("ShipOrder", grpc("ShippingService", "ShipOrder"), 1.5, writes=True, response_bytes=120)),
        _svc(pay, "node", _op("Charge", grpc("PaymentService", "Charge"), 3.0, writes=True, response_bytes=150)),
        _svc(email, "python",
             _op("SendOrderConfirmation", grpc("EmailService", "SendOrderConfirmation"), 8.0, sigma=0.6,
                 writes=True, response_bytes=40)),
        _svc(checkout, "go",
             _op("PlaceOrder", grpc("CheckoutService", "PlaceOrder"), 4.0, _c(cart, "GetCart"),
                 _c(cat, "GetProduct", n=2, timeout=800, retries=2), _c(cur, "Convert", n=3),
                 _c(ship, "GetQuote"), _c(pay, "Charge", timeout=1500, retries=2),
                 _c(ship, "ShipOrder", timeout=1500, retries=1), _c(cart, "EmptyCart"),
                 _c(email, "SendOrderConfirmation", optional=True, timeout=2000), writes=True, response_bytes=1500)),
        _redis_store("redis-cart", {"HGET": False, "HSET": True, "EXPIRE": True}),
    )
    request_types = (
        RequestType(name="home", service="frontend", operation="home", weight=30),
        RequestType(name="product", service="frontend", operation="product", weight=35),
        RequestType(name="add-to-cart", service="frontend", operation="addToCart", weight=10),
        RequestType(name="view-cart", service="frontend", operation="viewCart", weight=12),
        RequestType(name="checkout", service="frontend", operation="placeOrder", weight=5),
        RequestType(name="set-currency", service="frontend", operation="setCurrency", weight=3),
    )
    nodes = tuple(f"gke-shop-default-pool-{k8s_suffix('shop-pool', 8)}-{k8s_suffix(f'shop-node{i}', 4)}"
                  for i in range(3))
    return System(name="webshop", description="online shop after Online Boutique: 11 services, gRPC, Redis cart",
                  services=services, request_types=request_types, nodes=nodes, node_cores=4.0, node_memory_gb=16,
                  peak_rps=40.0, utc_offset_hours=-5.0, metric_scheme="prometheus", metric_step_s=15.0,
                  trace_sample_rate=0.03, namespace="boutique")


# --- ticketing: after TrainTicket ---------------------------------------------------------------------

def ticketing() -> System:
    """42 application services, two MySQL databases, a MongoDB and a Redis cache; deep REST chains."""
    def rest(method: str, verb: str, path: str, median: float, *calls: Call, **kw: object) -> Operation:
        return _op(method, f"{verb} {path}", median, *calls, **kw)

    def s(name: str) -> str:
        return f"ts-{name}-service"

    sql_order, sql_travel, mongo, redis = "ts-mysql-order", "ts-mysql-travel", "ts-mongo", "ts-redis"

    def cached(key_cmd: str, store: str, table: str) -> Call:
        return _c(redis, key_cmd, timeout=1000, fallback=(store, f"{table}.select"))

    # A Spring Data read loads the entity and then its associations: two statements, as the real TrainTicket's
    # traces show (its handlers make about twice the database calls of one per lookup).
    def q(store: str, table: str, verb: str = "select") -> Call:
        return _c(store, f"{table}.{verb}", timeout=5000, n=2 if verb == "select" else 1)

    def mq(coll: str, verb: str = "find") -> Call:
        return _c(mongo, f"{coll}.{verb}", timeout=5000, n=2 if verb == "find" else 1)

    api = "/api/v1/"
    station_ids = _c(s("station"), "queryForIdBatch")
    station_id = _c(s("station"), "queryForStationId")
    config = _c(s("config"), "retrieve")
    order_by_id = _c(s("order"), "getOrderById")
    modify_order = _c(s("order"), "modifyOrder")
    trip_detail = _c(s("travel"), "getTripAllDetailInfo")
    route_by_trip = _c(s("travel"), "getRouteByTripId")
    user_by_id = _c(s("user"), "getUserByUserId")
    left_tickets = _c(s("seat"), "getLeftTicketOfInterval")
    ticket_info = _c(s("ticketinfo"), "queryForTravel")
    services = [
        _svc(s("gateway"), "java", *[
            rest(_route_method(svc, method), verb, f"{api}{path}", 1.2,
                 _c(svc, method, timeout=30_000, retries=1 if svc == s("auth") else 0))
            for verb, path, svc, method in _TICKETING_ROUTES], replicas=2, cpu_limit=2.0),
        _svc(s("auth"), "java", rest("getToken", "POST", api + "users/login", 9.0,
                                     _c(s("verification-code"), "verifyCode"), mq("auth_user"))),
        _svc(s("verification-code"), "java",
             rest("verifyCode", "GET", api + "verifycode/verify/{verifyCode}", 2.0),
             rest("generate", "GET", api + "verifycode/generate", 4.0, response_bytes=6000)),
        _svc(s("user"), "java", rest("getUserByUserId", "GET", api + "userservice/users/id/{userId}", 3.0,
                                     mq("user"))),
        _svc(s("contacts"), "java",
             rest("findContactsByAccountId", "GET", api + "contactservice/contacts/account/{accountId}", 4.0,
                  mq("contacts")),
             rest("getContactsByContactsId", "GET", api + "contactservice/contacts/{id}", 3.0, mq("contacts"))),
        _svc(s("station"), "java",
             rest("queryForIdBatch", "POST", api + "stationservice/stations/idlist", 3.0,
                  cached("MGET", sql_travel, "station")),
             rest("queryForStationId", "GET", api + "stationservice/stations/id/{stationNameForId}", 2.0,
                  cached("GET", sql_travel, "station")),
             rest("query", "GET", api + "stationservice/stations", 5.0, q(sql_travel, "station"))),
        _svc(s("train"), "java", rest("retrieveByName", "GET", api + "trainservice/trains/byName/{name}", 2.0,
                                      q(sql_travel, "train_type"))),
        _svc(s("route"), "java",
             rest("queryById", "GET", api + "routeservice/routes/{routeId}", 2.0, cached("GET", sql_travel, "route")),
             rest("queryByStartAndTerminal", "GET", api + "routeservice/routes/{start}/{end}", 4.0,
                  q(sql_travel, "route"))),
        _svc(s("price"), "java", rest("query", "GET", api + "priceservice/prices/{routeId}/{trainType}", 2.0,
                                      cached("GET", sql_travel, "price_config"))),
        _svc(s("config"), "java", rest("retrieve", "GET", api + "configservice/configs/{configName}", 1.5,
                                       cached("GET", sql_travel, "config"))),
        _svc(s("basic"), "java", rest("queryForTravel", "POST", api + "basicservice/basic/travel", 6.0,
                                      station_ids, _c(s("train"), "retrieveByName"), _c(s("route"), "queryById"),
                                      _c(s("price"), "query", timeout=800, retries=2))),
        _svc(s("ticketinfo"), "java", rest("queryForTravel", "POST", api + "ticketinfoservice/ticketinfo", 2.0,
                                           _c(s("basic"), "queryForTravel"))),
        _svc(s("order"), "java", *_order_ops(rest, api + "orderservice/order", "orders", sql_order, station_ids),
             replicas=2),
        _svc(s("order-other"), "java",
             *_order_ops(rest, api + "orderOtherService/orderOther", "orders_other", sql_order, station_ids)),
        _svc(s("seat"), "java",
             rest("getLeftTicketOfInterval", "POST", api + "seatservice/seats/left_tickets", 6.0,
                  _c(s("order"), "getSoldTickets", timeout=1500, retries=2, p=0.7),
                  _c(s("order-other"), "getSoldTickets", p=0.3), config),
             rest("distributeSeat", "POST", api + "seatservice/seats", 5.0,
                  _c(s("order"), "getSoldTickets", timeout=1500, retries=2), config), replicas=2),
        _svc(s("travel"), "java",
             rest("queryInfo", "POST", api + "travelservice/trips/left", 10.0, q(sql_travel, "trip"),
                  _c(s("ticketinfo"), "queryForTravel", n=2), _c(s("seat"), "getLeftTicketOfInterval", n=2)),
             rest("getRouteByTripId", "GET", api + "travelservice/routes/{tripId}", 3.0, q(sql_travel, "trip"),
                  _c(s("route"), "queryById")),
             rest("getTripAllDetailInfo", "POST", api + "travelservice/trip_detail", 8.0, q(sql_travel, "trip"),
                  ticket_info, left_tickets)),
        _svc(s("travel2"), "java",
             rest("queryInfo", "POST", api + "travel2service/trips/left", 10.0, q(sql_travel, "trip2"),
                  _c(s("ticketinfo"), "queryForTravel", n=2), _c(s("seat"), "getLeftTicketOfInterval", n=2)),
             rest("getTripAllDetailInfo", "POST", api + "travel2service/trip_detail", 8.0, q(sql_travel, "trip2"),
                  ticket_info, left_tickets)),
        _svc(s("route-plan"), "java",
             rest("getCheapestRoutes", "POST", api + "routeplanservice/routePlan/cheapestRoute", 5.0,
                  _c(s("travel"), "queryInfo"), _c(s("travel2"), "queryInfo"), station_ids),
             rest("getQuickestRoutes", "POST", api + "routeplanservice/routePlan/quickestRoute", 5.0,
                  _c(s("travel"), "queryInfo"), _c(s("travel2"), "queryInfo", p=0.5), station_ids),
             rest("getMinStopStations", "POST", api + "routeplanservice/routePlan/minStopStations", 6.0,
                  _c(s("route"), "queryByStartAndTerminal"), trip_detail)),
        _svc(s("travel-plan"), "java",
             rest("getByCheapest", "POST", api + "travelplanservice/travelPlan/cheapest", 5.0,
                  _c(s("route-plan"), "getCheapestRoutes"), left_tickets, station_id),
             rest("getByQuickest", "POST", api + "travelplanservice/travelPlan/quickest", 5.0,
                  _c(s("route-plan"), "getQuickestRoutes"), left_tickets, station_id),
             rest("getByMinStation", "POST", api + "travelplanservice/travelPlan/minStation", 5.0,
                  _c(s("route-plan"), "getMinStopStations"))),
        _svc(s("security"), "java", rest("check", "GET", api + "securityservice/securityConfigs/{accountId}", 3.0,
                                         q(sql_order, "security_config"), _c(s("order"), "checkSecurityAboutOrder"),
                                         _c(s("order-other"), "checkSecurityAboutOrder"))),
        _svc(s("assurance"), "java",
             rest("getAllAssuranceType", "GET", api + "assuranceservice/assurances/types", 1.0),
             rest("createNewAssurance", "GET", api + "assuranceservice/assurances/{typeIndex}/{orderId}", 3.0,
                  mq("assurance", "insert"), writes=True)),
        _svc(s("train-food"), "java", rest("getTrainFoodOfTrip", "GET", api + "trainfoodservice/trainfoods/{tripId}",
                                           2.0, mq("train_food"))),
        _svc(s("station-food"), "java",
             rest("getFoodStoresByStationNames", "POST", api + "stationfoodservice/stationfoodstores", 3.0,
                  mq("station_food_store")),
             rest("getStationFoodStoreById", "GET", api + "stationfoodservice/stationfoodstores/bystoreid/{id}", 2.0,
                  mq("station_food_store"))),
        _svc(s("delivery"), "java", rest("createDelivery", "POST", api + "deliveryservice/delivery", 2.0,
                                         mq("delivery", "insert"), writes=True)),
        _svc(s("food"), "java",
             rest("getAllFood", "GET", api + "foodservice/foods/{date}/{startStation}/{endStation}/{tripId}", 6.0,
                  _c(s("train-food"), "getTrainFoodOfTrip"), route_by_trip,
                  _c(s("station-food"), "getFoodStoresByStationNames")),
             rest("createFoodOrder", "POST", api + "foodservice/orders", 4.0, mq("food_order", "insert"),
                  _c(s("delivery"), "createDelivery", p=0.5, optional=True), writes=True)),
        _svc(s("food-delivery"), "java", rest("createFoodDeliveryOrder", "POST", api + "fooddeliveryservice/orders",
                                              4.0, _c(s("station-food"), "getStationFoodStoreById"),
                                              mq("food_delivery_order", "insert"), writes=True)),
        _svc(s("consign-price"), "java",
             rest("getPriceByWeightAndRegion", "GET",
                  api + "consignpriceservice/consignprice/{weight}/{isWithinRegion}", 2.0,
                  mq("consign_price"))),
        _svc(s("consign"), "java", rest("insertConsign", "PUT", api + "consignservice/consigns", 4.0,
                                        _c(s("consign-price"), "getPriceByWeightAndRegion"),
                                        mq("consign_record", "insert"), writes=True)),
        _svc(s("notification"), "java", rest("preserveSuccess", "POST",
                                             api + "notifyservice/notification/preserve_success", 12.0,
                                             sigma=0.7, writes=True),
             rest("orderCancelSuccess", "POST", api + "notifyservice/notification/order_cancel_success", 12.0,
                  sigma=0.7, writes=True)),
        _svc(s("preserve"), "java", _preserve_op(rest, api + "preserveservice/preserve", s("travel"), s("order")),
             replicas=2),
        _svc(s("preserve-other"), "java", _preserve_op(rest, api + "preserveotherservice/preserveOther",
                                                       s("travel2"), s("order-other"))),
        _svc(s("payment"), "java", rest("pay", "POST", api + "paymentservice/payment", 6.0,
                                        q(sql_order, "payment", "insert"), writes=True)),
        _svc(s("inside-payment"), "java",
             rest("pay", "POST", api + "inside_pay_service/inside_payment", 8.0, order_by_id,
                  q(sql_order, "account"), _c(s("payment"), "pay", timeout=2000, retries=2), modify_order,
                  writes=True),
             rest("drawBack", "GET", api + "inside_pay_service/inside_payment/drawback/{userId}/{money}", 4.0,
                  q(sql_order, "account", "update"), writes=True)),
        _svc(s("cancel"), "java",
             rest("calculate", "GET", api + "cancelservice/cancel/refound/{orderId}", 4.0, order_by_id),
             rest("cancelTicket", "GET", api + "cancelservice/cancel/{orderId}/{loginId}", 10.0, order_by_id,
                  modify_order, _c(s("inside-payment"), "drawBack"), user_by_id,
                  _c(s("notification"), "orderCancelSuccess", optional=True, timeout=3000))),
        _svc(s("rebook"), "java", rest("rebook", "POST", api + "rebookservice/rebook", 12.0, order_by_id,
                                       trip_detail, _c(s("seat"), "distributeSeat"),
                                       _c(s("inside-payment"), "pay", p=0.3), modify_order)),
        _svc(s("execute"), "java", rest("collectTicket", "GET", api + "executeservice/execute/collected/{orderId}",
                                        3.0, order_by_id, modify_order)),
        _svc(s("admin-order"), "java", rest("getAllOrders", "GET", api + "adminorderservice/adminorder", 8.0,
                                            _c(s("order"), "findAllOrder"), _c(s("order-other"), "findAllOrder"))),
        _svc(s("admin-basic-info"), "java",
             rest("getAllStations", "GET", api + "adminbasicservice/adminbasic/stations", 3.0,
                  _c(s("station"), "query"))),
        _svc(s("voucher"), "python", rest("getVoucher", "POST", "/getVoucher", 4.0,
                                          _c(s("order-other"), "getOrderById"), q(sql_order, "voucher"))),
        _svc(s("wait-order"), "java", rest("createNewOrder", "POST", api + "waitorderservice/order", 5.0,
                                           _c(s("contacts"), "getContactsByContactsId"),
                                           q(sql_order, "wait_list_order", "insert"), writes=True)),
        _svc(s("news"), "go", rest("hello", "GET", "/news", 1.0, response_bytes=4000)),
        _svc(s("ticket-office"), "node", rest("getSpecificOffices", "POST", "/office/getSpecificOffices", 2.5,
                                              mq("office"))),
        _sql_store(sql_order, "mysql", "ts",
                   {"orders": 2.5, "orders_other": 2.5, "payment": 2.0, "account": 1.5, "security_config": 1.0,
                    "voucher": 1.5, "wait_list_order": 2.0}),
        # The cached tables are the expensive ones to read (that is why they are cached).
        _sql_store(sql_travel, "mysql", "ts",
                   {"trip": 3.0, "trip2": 3.0, "route": 6.0, "station": 7.0, "train_type": 1.0,
                    "price_config": 5.0, "config": 4.0}),
        _mongo_store(mongo, "ts",
                     {"auth_user": 1.5, "user": 1.5, "contacts": 2.0, "assurance": 1.5, "train_food": 2.0,
                      "station_food_store": 2.0, "food_order": 2.0, "delivery": 1.5, "food_delivery_order": 2.0,
                      "consign_price": 1.0, "consign_record": 2.0, "office": 1.5}),
        _redis_store(redis, {"GET": False, "MGET": False, "SET": True}),
    ]
    request_types = tuple(RequestType(name=f"{verb} {path}", service=s("gateway"),
                                      operation=_route_method(svc, method), weight=weight)
                          for (verb, path, svc, method), weight in zip(_TICKETING_ROUTES, _TICKETING_WEIGHTS,
                                                                        strict=True))
    nodes = tuple(f"k8s-worker-{i:02d}" for i in range(1, 7))
    return System(name="ticketing", description="train-ticket booking after TrainTicket: 42 services, MySQL, "
                                                "MongoDB, Redis, deep REST call chains",
                  services=tuple(services), request_types=request_types, nodes=nodes, node_cores=8.0,
                  node_memory_gb=32, peak_rps=1.0, utc_offset_hours=8.0, metric_scheme="nezha",
                  metric_step_s=30.0, trace_sample_rate=1.0, log_sample_rate=1.0,
                  namespace="train-ticket")


def _order_ops(rest, base: str, table: str, store: str, station_ids: Call) -> tuple[Operation, ...]:  # type: ignore[no-untyped-def]
    def q(verb: str = "select") -> Call:
        return _c(store, f"{table}.{verb}", timeout=5000)

    return (
        rest("getSoldTickets", "POST", base + "/tickets", 5.0, q()),
        rest("queryOrdersForRefresh", "POST", base + "/refresh", 6.0, q(), station_ids, response_bytes=12_000),
        rest("create", "POST", base, 8.0, q(), q("insert"), writes=True),
        rest("getOrderById", "GET", base + "/{orderId}", 3.0, q()),
        rest("modifyOrder", "GET", base + "/status/{orderId}/{status}", 4.0, q(), q("update"), writes=True),
        rest("checkSecurityAboutOrder", "GET", base + "/security/{checkDate}/{accountId}", 3.0, q()),
        rest("findAllOrder", "GET", base, 12.0, q(), sigma=0.7, response_bytes=60_000),
    )


def _preserve_op(rest, path: str, travel: str, order: str) -> Operation:  # type: ignore[no-untyped-def]
    return rest("preserve", "POST", path, 20.0,
                _c("ts-security-service", "check", timeout=2000, retries=1),
                _c("ts-contacts-service", "getContactsByContactsId"),
                _c(travel, "getTripAllDetailInfo"),
                _c("ts-station-service", "queryForStationId", n=2),
                _c("ts-seat-service", "distributeSeat"),
                _c(order, "create"),
                # Most bookings of the real TrainTicket's load add an assurance and a meal.
                _c("ts-assurance-service", "createNewAssurance", p=0.8),
                _c("ts-food-service", "createFoodOrder", p=0.8),
                _c("ts-consign-service", "insertConsign", p=0.2),
                _c("ts-user-service", "getUserByUserId"),
                _c("ts-notification-service", "preserveSuccess", optional=True, timeout=3000),
                writes=True, sigma=0.5)


def _route_method(service: str, method: str) -> str:
    """The gateway handler forwarding to `service.method`: `ts-travel2-service`, `queryInfo` -> `travel2QueryInfo`."""
    name = _camel(re.sub(r"^ts-|-service$", "", service))
    return name[0].lower() + name[1:] + method[0].upper() + method[1:]


# (verb, path under /api/v1/, service, method) of the gateway's routes, and their traffic weights.
_TICKETING_ROUTES = (
    ("POST", "users/login", "ts-auth-service", "getToken"),
    ("GET", "verifycode/generate", "ts-verification-code-service", "generate"),
    ("POST", "travelservice/trips/left", "ts-travel-service", "queryInfo"),
    ("POST", "travel2service/trips/left", "ts-travel2-service", "queryInfo"),
    ("POST", "travelplanservice/travelPlan/cheapest", "ts-travel-plan-service", "getByCheapest"),
    ("POST", "travelplanservice/travelPlan/quickest", "ts-travel-plan-service", "getByQuickest"),
    ("POST", "travelplanservice/travelPlan/minStation", "ts-travel-plan-service", "getByMinStation"),
    ("POST", "preserveservice/preserve", "ts-preserve-service", "preserve"),
    ("POST", "preserveotherservice/preserveOther", "ts-preserve-other-service", "preserve"),
    ("POST", "orderservice/order/refresh", "ts-order-service", "queryOrdersForRefresh"),
    ("POST", "orderOtherService/orderOther/refresh", "ts-order-other-service", "queryOrdersForRefresh"),
    ("POST", "inside_pay_service/inside_payment", "ts-inside-payment-service", "pay"),
    ("GET", "cancelservice/cancel/refound/{orderId}", "ts-cancel-service", "calculate"),
    ("GET", "cancelservice/cancel/{orderId}/{loginId}", "ts-cancel-service", "cancelTicket"),
    ("POST", "rebookservice/rebook", "ts-rebook-service", "rebook"),
    ("GET", "executeservice/execute/collected/{orderId}", "ts-execute-service", "collectTicket"),
    ("GET", "foodservice/foods/{date}/{startStation}/{endStation}/{tripId}", "ts-food-service", "getAllFood"),
    ("POST", "fooddeliveryservice/orders", "ts-food-delivery-service", "createFoodDeliveryOrder"),
    ("GET", "contactservice/contacts/account/{accountId}", "ts-contacts-service", "findContactsByAccountId"),
    ("GET", "assuranceservice/assurances/types", "ts-assurance-service", "getAllAssuranceType"),
    ("GET", "adminorderservice/adminorder", "ts-admin-order-service", "getAllOrders"),
    ("GET", "adminbasicservice/adminbasic/stations", "ts-admin-basic-info-service", "getAllStations"),
    ("POST", "getVoucher", "ts-voucher-service", "getVoucher"),
    ("POST", "waitorderservice/order", "ts-wait-order-service", "createNewOrder"),
    ("GET", "news", "ts-news-service", "hello"),
    ("POST", "office/getSpecificOffices", "ts-ticket-office-service", "getSpecificOffices"),
    ("GET", "trainservice/trains/byName/{name}", "ts-train-service", "retrieveByName"),
)
_TICKETING_WEIGHTS = (8, 1, 26, 24, 1, 1, 1, 7, 5, 1, 1, 8, 1, 4, 1, 10, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
"""The mix the TrainTicket load generator sends (first-hop operations of the real day's 4,483 traces: trip
searches 51%, login 8%, payment 8%, reservations 13%, food 7%, ticket collection 10%, cancel 4%); the routes
it never calls keep a trickle, as a user would send."""


# --- random DAGs --------------------------------------------------------------------------------------

_NOUNS = ("inventory", "billing", "invoice", "search", "profile", "session", "ledger", "pricing", "tax",
          "fraud", "notification", "media", "geo", "routing", "review", "loyalty", "coupon", "audit",
          "report", "catalog", "stock", "warehouse", "quote", "risk", "identity", "token", "feed", "ranking",
          "chat", "upload", "thumbnail", "webhook", "subscription", "refund", "shipment", "label", "account",
          "wallet", "rating", "preference", "translation", "schedule", "booking", "dispatch", "tracking")
_VERBS = ("Get", "List", "Create", "Update", "Validate", "Compute", "Resolve", "Sync", "Lookup", "Check")
_SUFFIXES = ("service", "svc", "api", "server")


def random_dag(n_services: int, *, seed: int = 0) -> System:
    """A random layered microservice DAG of exactly `n_services` services (data stores included)."""
    if not isinstance(n_services, int) or not 5 <= n_services <= 400:
        raise FlipmoeInputError(f"random DAG size {n_services!r} is out of range",
                                hint="use 5 to 400 services (one gateway, data stores and the rest)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, n_services, 0xDA6]))
    suffix = str(rng.choice(_SUFFIXES))
    n_stores = max(2, n_services // 7)
    n_apps = n_services - n_stores
    names = _random_names(rng, n_apps - 1, suffix)
    layers = _layers(rng, n_apps - 1)
    grpc = bool(rng.random() < 0.5)
    stores = _random_stores(rng, n_stores)
    apps: dict[str, list[Operation]] = {}
    runtimes = {name: str(rng.choice(APP_RUNTIMES, p=[0.35, 0.3, 0.15, 0.12, 0.08])) for name in names}
    # Build bottom-up so every call targets an existing operation of a deeper layer.
    by_layer: list[list[str]] = [[] for _ in range(max(layers) + 1)]
    for name, layer in zip(names, layers, strict=True):
        by_layer[layer].append(name)
    for depth in range(len(by_layer) - 1, -1, -1):
        deeper = [n for d in range(depth + 1, len(by_layer)) for n in by_layer[d]]
        for name in by_layer[depth]:
            apps[name] = _random_ops(rng, name, deeper, apps, stores, grpc)
    _connect_unreachable(rng, apps, by_layer, stores)
    gateway = "api-gateway" if suffix != "api" else "edge-gateway"
    top = [(name, op.method) for name in by_layer[0] for op in apps[name]]
    gateway_ops = [_op(_route_method(t, method), f"{'POST' if i % 3 == 0 else 'GET'} /{_kebab(t)}/{method.lower()}",
                       1.0, _c(t, method, timeout=15_000)) for i, (t, method) in enumerate(top)]
    services = [_svc(gateway, "go", *gateway_ops, replicas=2, cpu_limit=1.0)]
    services += [_svc(name, runtimes[name], *apps[name], replicas=int(rng.choice([1, 1, 2, 3])))
                 for name in names]
    services += [store for store, _ in stores]
    weights = rng.dirichlet(np.full(len(top), 1.5)) * 100
    request_types = tuple(RequestType(name=op.name, service=gateway, operation=op.method, weight=float(w) + 0.5)
                          for op, w in zip(gateway_ops, weights, strict=True))
    n_pods = sum(s.replicas for s in services)
    nodes = tuple(f"ip-10-0-{int(rng.integers(1, 255))}-{int(rng.integers(1, 255))}.ec2.internal"
                  for _ in range(max(2, -(-n_pods // 7))))
    return System(name=f"random-{n_services}" + (f"-s{seed}" if seed else ""),
                  description=f"random layered DAG of {n_services} services (seed {seed})",
                  services=tuple(services), request_types=request_types, nodes=tuple(dict.fromkeys(nodes)),
                  node_cores=float(rng.choice([4.0, 8.0, 16.0])), peak_rps=float(rng.uniform(10, 60)),
                  utc_offset_hours=float(rng.integers(-8, 10)),
                  metric_scheme=str(rng.choice(METRIC_SCHEMES)), metric_step_s=float(rng.choice([15.0, 30.0, 60.0])),
                  trace_sample_rate=float(rng.choice([0.01, 0.02, 0.05])), namespace="prod")


def _random_names(rng: np.random.Generator, n: int, suffix: str) -> list[str]:
    nouns = list(rng.permutation(_NOUNS))
    names = []
    for i in range(n):
        base = nouns[i % len(nouns)] + (f"-{i // len(nouns) + 1}" if i >= len(nouns) else "")
        names.append(f"{base}-{suffix}")
    return names


def _layers(rng: np.random.Generator, n: int) -> list[int]:
    """Layer of each application service: a few at the top, depth grows slowly with size."""
    depth = int(np.clip(round(np.log2(n + 1)) + 1, 2, 7))
    layers = sorted(int(x) for x in rng.integers(0, depth, n))
    layers[0] = 0
    return layers


def _random_stores(rng: np.random.Generator, n: int) -> list[tuple[Service, list[str]]]:
    """Data stores with their operation methods: the first is a cache, the rest databases."""
    stores: list[tuple[Service, list[str]]] = []
    cache = _redis_store("redis", {"GET": False, "SET": True})
    stores.append((cache, ["GET"]))
    for i in range(n - 1):
        runtime = str(rng.choice(["mysql", "postgres", "mongodb"]))
        tables = {str(t): float(rng.uniform(0.8, 4.0)) for t in rng.choice(_NOUNS, 3, replace=False)}
        name = f"{runtime}-{i}" if runtime != "mongodb" else f"mongo-{i}"
        store = _mongo_store(name, "app", tables) if runtime == "mongodb" else _sql_store(name, runtime, "app", tables)
        reads = [o.method for o in store.operations if not o.writes]
        stores.append((store, reads))
    return stores


def _random_ops(rng: np.random.Generator, name: str, deeper: list[str], apps: dict[str, list[Operation]],
                stores: list[tuple[Service, list[str]]], grpc: bool) -> list[Operation]:
    noun = _camel(name.split("-")[0])
    ops = []
    for verb in rng.choice(_VERBS, int(rng.integers(1, 4)), replace=False):
        method = f"{verb}{noun}"
        calls = []
        for callee in rng.choice(deeper, min(len(deeper), int(rng.integers(0, 4))), replace=False) if deeper else []:
            target = apps[str(callee)][int(rng.integers(len(apps[str(callee)])))]
            calls.append(_c(str(callee), target.method, p=float(rng.choice([1.0, 1.0, 0.6])),
                            timeout=float(rng.choice([800, 2000, 5000])), retries=int(rng.choice([0, 0, 0, 2])),
                            optional=bool(rng.random() < 0.1)))
        if rng.random() < 0.5:
            calls.append(_store_call(rng, stores))
        span_name = (f"{_camel(name.rsplit('-', 1)[0])}.{_camel(name.rsplit('-', 1)[0])}Service/{method}" if grpc
                 else f"{'POST' if verb in ('Create', 'Update', 'Sync') else 'GET'} /v1/{_kebab(name)}/{verb.lower()}")
        # Some handlers fan out concurrently and wait for the slowest call.
        parallel = len(calls) >= 2 and bool(rng.random() < 0.3)
        ops.append(_op(method, span_name, float(rng.lognormal(np.log(3.0), 0.7)), *calls, parallel=parallel,
                       writes=verb in ("Create", "Update", "Sync"), sigma=float(rng.uniform(0.3, 0.7))))
    return ops


def _store_call(rng: np.random.Generator, stores: list[tuple[Service, list[str]]]) -> Call:
    store, reads = stores[int(rng.integers(len(stores)))]
    if store.kind == "cache" and len(stores) > 1:
        db, db_reads = stores[1 + int(rng.integers(len(stores) - 1))]
        return _c(store.name, reads[0], timeout=1000, fallback=(db.name, db_reads[int(rng.integers(len(db_reads)))]))
    return _c(store.name, reads[int(rng.integers(len(reads)))], timeout=5000)


def _connect_unreachable(rng: np.random.Generator, apps: dict[str, list[Operation]], by_layer: list[list[str]],
                         stores: list[tuple[Service, list[str]]]) -> None:
    """Give every operation below the top layer a caller, and every data store a client.

    Layers are wired top-down, so when a layer is reached all shallower operations are final: an
    operation nobody reaches gets a call from a reachable operation of a shallower layer.
    """
    top = {(name, op.method) for name in by_layer[0] for op in apps[name]}
    for depth in range(1, len(by_layer)):
        reached = _reached_ops(apps, top)
        callers = sorted(k for k in reached if k[0] in {n for d in range(depth) for n in by_layer[d]})
        for name in by_layer[depth]:
            for op in apps[name]:
                if (name, op.method) not in reached:
                    caller = callers[int(rng.integers(len(callers)))]
                    _add_call(apps, caller, _c(name, op.method, timeout=2000))
    reached_services = {k[0] for k in _reached_ops(apps, top)}
    callers = sorted(_reached_ops(apps, top))
    for store, reads in stores:
        if store.name in reached_services:
            continue
        caller = callers[int(rng.integers(len(callers)))]
        if store.kind == "cache":
            db, db_reads = stores[1]
            _add_call(apps, caller, _c(store.name, reads[0], timeout=1000, fallback=(db.name, db_reads[0])))
            reached_services.add(db.name)
        else:
            _add_call(apps, caller, _c(store.name, reads[0], timeout=5000))
        reached_services.add(store.name)
    if not any(c.retries for ops in apps.values() for o in ops for c in o.calls if c.service in apps):
        # Retry storms need at least one retried service-to-service call.
        for ops in apps.values():
            for i, op in enumerate(ops):
                for j, call in enumerate(op.calls):
                    if call.service in apps:
                        calls = list(op.calls)
                        calls[j] = replace(call, retries=2, timeout_ms=1000.0)
                        ops[i] = replace(op, calls=tuple(calls))
                        return


def _reached_ops(apps: dict[str, list[Operation]], start: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Application operations reachable from `start` (data stores are not followed)."""
    ops = {(name, op.method): op for name, ops_ in apps.items() for op in ops_}
    seen: set[tuple[str, str]] = set()
    todo = list(start)
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        todo += [(c.service, c.operation) for c in ops[key].calls if c.service in apps]
    return seen


def _add_call(apps: dict[str, list[Operation]], caller: tuple[str, str], call: Call) -> None:
    ops = apps[caller[0]]
    i = next(k for k, op in enumerate(ops) if op.method == caller[1])
    ops[i] = replace(ops[i], calls=ops[i].calls + (call,))


def _camel(text: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", text) if part)


def _kebab(text: str) -> str:
    return text.rsplit("-", 1)[0] if text.endswith(_SUFFIXES) else text


# --- registry -----------------------------------------------------------------------------------------

_BUILTIN = {"webshop": webshop, "ticketing": ticketing}
_RANDOM = re.compile(r"^random(?:-(\d+))?$")


def system_names() -> list[str]:
    return [*_BUILTIN, "random-N", "random"]


def get_system(name: str, *, seed: int = 0) -> System:
    """A built-in system by name; `random-N` is a random DAG of N services, `random` one of random size per seed."""
    if name in _BUILTIN:
        return _BUILTIN[name]()
    match = _RANDOM.match(name)
    if match is None:
        raise FlipmoeInputError(f"unknown system {name!r}",
                                hint=f"valid: {', '.join(system_names())} (N = number of services, 5..400)")
    if match.group(1) is not None:
        return random_dag(int(match.group(1)))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    return random_dag(int(rng.integers(8, 41)), seed=seed)


@dataclass(frozen=True, kw_only=True)
class SystemSummary:
    name: str
    services: int
    pods: int
    description: str
    extra: dict[str, str] = field(default_factory=dict)


def summarise_systems() -> list[SystemSummary]:
    """What `flipmoe chaos list` prints about systems."""
    out = []
    for name in _BUILTIN:
        system = get_system(name)
        out.append(SystemSummary(name=name, services=len(system.services), pods=len(system.pods),
                                 description=system.description,
                                 extra={"metrics": f"{system.metric_scheme}, {system.metric_step_s:g} s"}))
    example = random_dag(20)
    out.append(SystemSummary(name="random-N", services=len(example.services), pods=len(example.pods),
                             description="random layered DAG of N services (counts shown for N=20)"))
    out.append(SystemSummary(name="random", services=0, pods=0,
                             description="a fresh random DAG of 8 to 40 services per incident seed"))
    return out
