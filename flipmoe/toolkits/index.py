"""The incident's shared structures, computed once and read by every analysis step and the renderer.

The call graph, which pods belong to which service, and where pods run are needed by localisation,
diagnosis, the event toolkit, the explorer's tools and the report's call-graph plot; the explorer also
reads the baseline's per-operation latency. Computing them in each of those places gave three call graphs
with three different rules; `IncidentIndex` is the one place they are built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flipmoe.telemetry.incident import Incident, call_edges


@dataclass(frozen=True, kw_only=True)
class IncidentIndex:
    """Read-only maps over one incident's telemetry (window, baseline and topology)."""

    services: tuple[str, ...]
    """Every service seen in any table of the window, sorted."""
    call_edges: tuple[tuple[str, str], ...]
    """(caller, callee) service pairs: the topology's edges plus those the window's and the baseline's spans
    show, sorted. Empty when the incident has neither topology nor spans."""
    topology_edges: tuple[tuple[str, str], ...] = ()
    """The topology's own edges (what the call graph is without the trace modality)."""
    pods_of_service: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Service -> its pods, from every table of the window."""
    node_of_pod: dict[str, str] = field(default_factory=dict)
    """Pod -> node: the topology's placement, else the node column of the metrics."""
    baseline_latency_ms: dict[tuple[str, str], float] = field(default_factory=dict)
    """(service, operation) -> median span duration in the fault-free baseline; empty without baseline spans."""

    @property
    def service_of_pod(self) -> dict[str, str]:
        return {pod: service for service, pods in self.pods_of_service.items() for pod in pods}

    def edges(self, *, traces: bool = True) -> tuple[tuple[str, str], ...]:
        """The call graph, with or without what the spans show (an analysis without traces may not use them)."""
        return self.call_edges if traces else self.topology_edges

    def callers(self, service: str) -> list[str]:
        """Services that call `service`."""
        return [a for a, b in self.call_edges if b == service]

    def callees(self, service: str) -> list[str]:
        return [b for a, b in self.call_edges if a == service]

    def pods_on_node(self, node: str) -> list[str]:
        return sorted(p for p, n in self.node_of_pod.items() if n == node)


def build_index(incident: Incident) -> IncidentIndex:
    """The index of `incident` (a pass over its tables; ~10 ms for a chaos incident, ~0.5 s for a real day)."""
    pods: dict[str, set[str]] = {}
    for name in incident.modalities:
        table = incident.telemetry.table(name)
        if table is None or "pod" not in table.columns:
            continue
        pairs = table[["service", "pod"]].dropna().drop_duplicates()
        for service, pod in zip(pairs["service"], pairs["pod"], strict=True):
            pods.setdefault(str(service), set()).add(str(pod))
    topology = tuple(sorted(set(incident.topology.edges))) if incident.topology is not None else ()
    edges: set[tuple[str, str]] = set(topology)
    for telemetry in (incident.telemetry, incident.baseline):
        if telemetry is not None and telemetry.spans is not None:
            edges.update(call_edges(telemetry.spans))
    nodes: dict[str, str] = {}
    metrics = incident.metrics
    if metrics is not None and "node" in metrics.columns:
        placed = metrics[["pod", "node"]].dropna().drop_duplicates("pod")
        nodes.update(zip(placed["pod"].astype(str), placed["node"].astype(str), strict=True))
    if incident.topology is not None and incident.topology.placement:
        nodes.update(incident.topology.placement)
    latency: dict[tuple[str, str], float] = {}
    if incident.baseline is not None and incident.baseline.spans is not None and not incident.baseline.spans.empty:
        medians = incident.baseline.spans.groupby(["service", "operation"])["duration"].median().reset_index()
        latency = {(str(s), str(o)): round(float(v), 3) for s, o, v in
                   zip(medians["service"], medians["operation"], medians["duration"], strict=True)}
    return IncidentIndex(services=tuple(incident.telemetry.services()), call_edges=tuple(sorted(edges)),
                         baseline_latency_ms=latency,
                         topology_edges=topology,
                         pods_of_service={s: tuple(sorted(p)) for s, p in sorted(pods.items())}, node_of_pod=nodes)
