"""Multi-modal root-cause localisation: fuse per-modality signals into a ranked list of suspects.

Each modality's toolkit is turned into `Signal`s — "this service/pod looks wrong, this much, for this
reason" — and this module reasons about how faults propagate:

1. Each signal has a *role*. A `cause` signal is local to where it is observed (CPU, memory, disk,
   restarts, the exclusive time of a span, an error that originates in a service, an OOMKilled
   event). A `symptom` signal also appears at callers of a broken service (the p95 latency or error
   rate of a caller, its inclusive span time). Symptoms count for less.
2. Evidence that most services show at once cannot tell them apart: each kind of evidence is
   weighted by its rarity among services (inverse document frequency, services as documents).
   Per service, the signals of a modality combine by noisy-OR (several independent hints make a
   service more suspect, none can push it past 1); the modalities combine the same way.
3. A personalised PageRank walks the call graph from symptoms towards their explanations: from a
   caller the walk moves to callees in proportion to how anomalous they are, and stays on a service
   that is more anomalous than everything it calls. A root cause therefore collects the mass of the
   callers whose symptoms it explains, and a caller whose latency is all downstream passes its
   mass on (MicroRCA / MonitorRank style, with the anomaly scores as the personalisation).
4. A service whose anomalies start first gets a small bonus: faults precede their propagation.

The final service score is the geometric mean of its own anomaly and its PageRank share, times the
onset bonus; pods and nodes are ranked inside each service by their own signals, except that a pod a
rollout replaced ranks below its service's live pods (`replaced_pods`). Any subset of modalities works:
with one modality the same reasoning runs on that modality's signals only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from flipmoe.toolkits.findings import MetricPattern
from flipmoe.toolkits.rootcause import RootCause, evidence_of

Role = Literal["cause", "symptom"]


@dataclass(frozen=True, kw_only=True)
class Signal:
    """One piece of evidence that a service (and maybe a pod) is anomalous."""

    modality: str
    """metrics | traces | logs | events."""
    service: str
    pod: str | None = None
    node: str | None = None
    strength: float
    """How anomalous, in [0, 1] (see `squash`)."""
    role: Role
    kind: str = ""
    """What sort of evidence this is, e.g. 'metrics:cpu', 'traces:error_origin'; rarity is counted per kind."""
    start: pd.Timestamp | None = None
    """When the anomaly began, if known."""
    summary: str
    """One line a report can show, e.g. a description of the anomaly."""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    """A reference into the telemetry (metric + window, template + counts, trace and span ids)."""


@dataclass(frozen=True, kw_only=True)
class LocalizationConfig:
    """Weights of the fusion; chosen from first principles, not fitted to any data set."""

    symptom_weight: float = 0.5
    """A symptom counts half as much as a cause: it may have been propagated from elsewhere."""
    modality_weights: Mapping[str, float] = field(default_factory=lambda: {
        "metrics": 1.0, "traces": 1.0, "logs": 0.8, "events": 0.7})
    """Events and logs are noisier (benign warnings, routine deploys) than metrics and traces."""
    signals_per_modality: int = 3
    """Only the strongest few signals of a service count, so a service with many metrics is not favoured."""
    damping: float = 0.85
    """PageRank damping (probability of following an edge rather than restarting)."""
    back_edge_weight: float = 0.1
    """Weight of walking back from a callee to its caller, relative to forward edges."""
    rarity_strength: float = 0.5
    """A service 'has' a kind of evidence when one of its signals of that kind is at least this strong."""
    focus_floor: float = 0.1
    """A modality whose evidence is spread evenly over all services still counts this much."""
    focus_power: float = 0.5
    """Exponent on a modality's focus (0 ignores it)."""
    rarity_floor: float = 0.1
    """Evidence every service shows still counts this much: it cannot rank services but orders pods."""
    rarity_power: float = 0.5
    """Exponent on rarity: 1 is plain inverse document frequency, 0 ignores how common evidence is."""
    onset_bonus: float = 0.25
    """Extra weight for the service whose anomalies start first."""
    onset_scale_s: float = 120.0
    """How fast the onset bonus decays with delay after the earliest anomaly."""

    def __post_init__(self) -> None:
        if not 0 < self.damping < 1:
            raise ValueError("damping must be in (0, 1)")
        if not 0 <= self.symptom_weight <= 1:
            raise ValueError("symptom_weight must be in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class Localization:
    root_causes: tuple[RootCause, ...]
    """Most likely first; one entry per (service, pod)."""
    service_scores: Mapping[str, float]
    modalities: tuple[str, ...]
    """Modalities that contributed signals."""
    notes: tuple[str, ...] = ()
    modality_weights: Mapping[str, float] = field(default_factory=dict)
    """The weight each modality's evidence had in the fusion (the gate's, or the entropy rule's)."""


def squash(score: float, *, half: float = 3.0) -> float:
    """Map an unbounded anomaly score (about standard deviations) to [0, 1): `half` maps to 0.5.

    A rational squash keeps order among very large scores, which an exponential would flatten to 1.
    """
    if not math.isfinite(score) or score <= 0:
        return 0.0
    return score / (score + half)


def _noisy_or(strengths: Iterable[float]) -> float:
    product = 1.0
    for value in strengths:
        product *= 1.0 - min(max(value, 0.0), 1.0)
    return 1.0 - product


def _rarity(signals: Sequence[Signal], n_services: int, config: LocalizationConfig) -> dict[str, float]:
    """Per kind of evidence, how rare it is among services: log((N+1)/(n+1)) / log(N+1).

    Evidence that most services show (minute-level latency noise, a node-wide metric, an error
    storm seen by every caller) cannot tell them apart; evidence that one service shows can. This
    is inverse document frequency with services as documents.
    """
    holders: dict[str, set[str]] = defaultdict(set)
    for signal in signals:
        if signal.strength >= config.rarity_strength:
            holders[signal.kind].add(signal.service)
    scale = math.log(n_services + 1)
    return {kind: max(math.log((n_services + 1) / (len(services) + 1)) / scale, config.rarity_floor)
            for kind, services in holders.items()}


ModalityGate = Callable[[Mapping[str, Mapping[str, float]], int], Mapping[str, float]]
"""Given every service's evidence per modality ({service: {modality: score in [0, 1]}}, see `modality_evidence`)
and the number of services, the weight (>= 0) of each modality's evidence in the fusion; a weighted score is capped
at 1 before the modalities combine. The learned gate of the mixture (`router.gate`) is one; `entropy_rule` is the
hand-set default."""


def modality_evidence(signals: Sequence[Signal], n_services: int, config: LocalizationConfig | None = None
                      ) -> dict[str, dict[str, float]]:
    """{service: {modality: how anomalous the modality finds the service}}: the strongest few of its signals,
    causes over symptoms and rare kinds of evidence over common ones, combined by noisy-OR."""
    config = config or LocalizationConfig()
    rarity = _rarity(signals, n_services, config)
    by_service: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for signal in signals:
        weight = 1.0 if signal.role == "cause" else config.symptom_weight
        weight *= rarity.get(signal.kind, 1.0) ** config.rarity_power
        by_service[signal.service][signal.modality].append(signal.strength * weight)
    return {service: {m: _noisy_or(sorted(v, reverse=True)[: config.signals_per_modality])
                      for m, v in modalities.items()}
            for service, modalities in by_service.items()}


def entropy_rule(per_modality: Mapping[str, Mapping[str, float]], n_services: int,
                 config: LocalizationConfig | None = None) -> dict[str, float]:
    """The hand-set weights: a fixed prior per modality times how much the modality singles services out."""
    config = config or LocalizationConfig()
    focus = _modality_focus(per_modality, n_services, config)
    return {m: config.modality_weights.get(m, 0.5) * f for m, f in focus.items()}


def _service_anomaly(signals: Sequence[Signal], n_services: int, config: LocalizationConfig,
                     gate: ModalityGate | None = None
                     ) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, float]]:
    per_modality = modality_evidence(signals, n_services, config)
    weights = dict(gate(per_modality, n_services)) if gate is not None else entropy_rule(
        per_modality, n_services, config)
    fused = {service: _noisy_or(weights.get(m, 0.0) * s for m, s in scores.items())
             for service, scores in per_modality.items()}
    return fused, per_modality, weights


def _modality_focus(per_modality: Mapping[str, Mapping[str, float]], n_services: int,
                    config: LocalizationConfig) -> dict[str, float]:
    """How much each modality singles services out: 1 - normalised entropy of its scores over services.

    A modality that finds every service about equally anomalous (noisy minute-level metrics, a
    system-wide slowdown) says little about where the fault is; one that points at a few services
    says much. Like `_rarity`, but for a modality as a whole.
    """
    totals: dict[str, list[float]] = defaultdict(list)
    for scores in per_modality.values():
        for modality, score in scores.items():
            totals[modality].append(score)
    focus = {}
    for modality, values in totals.items():
        p = np.array(values) / max(sum(values), 1e-12)
        p = p[p > 0]
        entropy = float(-(p * np.log(p)).sum()) / math.log(n_services) if n_services > 1 else 0.0
        focus[modality] = max(1.0 - entropy, config.focus_floor) ** config.focus_power
    return focus


def _pagerank(services: list[str], edges: Iterable[tuple[str, str]], anomaly: Mapping[str, float],
              config: LocalizationConfig) -> np.ndarray:
    """Personalised PageRank over the call graph, walking from callers towards anomalous callees."""
    index = {s: i for i, s in enumerate(services)}
    n = len(services)
    a_N = np.array([anomaly.get(s, 0.0) for s in services]) + 1e-6
    weight_NN = np.zeros((n, n))
    callees: dict[int, list[int]] = defaultdict(list)
    for caller, callee in set(edges):
        if caller in index and callee in index and caller != callee:
            u, v = index[caller], index[callee]
            callees[u].append(v)
            weight_NN[u, v] += a_N[v]
            weight_NN[v, u] += config.back_edge_weight * a_N[u]
    for u in range(n):
        strongest_callee = max((a_N[v] for v in callees[u]), default=0.0)
        # Staying put is how a service that explains its callers but not vice versa keeps its mass.
        weight_NN[u, u] += max(a_N[u] - strongest_callee, 0.0) + 1e-6
    transition_NN = weight_NN / weight_NN.sum(axis=1, keepdims=True)
    personal_N = a_N / a_N.sum()
    rank_N = personal_N.copy()
    for _ in range(100):
        updated = (1 - config.damping) * personal_N + config.damping * rank_N @ transition_NN
        if np.abs(updated - rank_N).sum() < 1e-10:
            break
        rank_N = updated
    return rank_N


def _onset_factor(signals: Sequence[Signal], config: LocalizationConfig) -> dict[str, float]:
    starts: dict[str, pd.Timestamp] = {}
    for signal in signals:
        if signal.start is not None and signal.strength >= 0.5:
            if signal.service not in starts or signal.start < starts[signal.service]:
                starts[signal.service] = signal.start
    if not starts:
        return {}
    first = min(starts.values())
    return {s: 1.0 + config.onset_bonus * math.exp(-(t - first).total_seconds() / config.onset_scale_s)
            for s, t in starts.items()}


@dataclass(frozen=True, kw_only=True)
class FusionParts:
    """The fusion's intermediate scores for one incident (what `rank_root_causes` combines)."""

    services: list[str]
    per_modality: dict[str, dict[str, float]]
    """`modality_evidence`: {service: {modality: score}}."""
    weights: dict[str, float]
    """The weight of each modality (the gate's, or `entropy_rule`'s)."""
    anomaly: dict[str, float]
    """Per service, the modalities' weighted evidence combined by noisy-OR."""
    propagation: dict[str, float]
    """Per service, its PageRank share over the call graph (max 1), or 1 everywhere without a directed graph."""
    onset: dict[str, float]
    """Per service with a timed anomaly, its onset factor (1 + bonus for the earliest)."""
    notes: list[str]


def fusion_parts(signals: Sequence[Signal], *, call_edges: Iterable[tuple[str, str]] = (),
                 services: Iterable[str] = (), config: LocalizationConfig | None = None,
                 gate: ModalityGate | None = None) -> FusionParts | None:
    """The fusion's parts over every service in `services`, the signals and the call graph; None without any."""
    config = config or LocalizationConfig()
    edges = list(call_edges)
    all_services = sorted(set(services) | {s.service for s in signals} | {x for e in edges for x in e})
    if not all_services:
        return None
    notes = []
    anomaly, per_modality, weights = _service_anomaly(signals, len(all_services), config, gate)
    directed = {(caller, callee) for caller, callee in edges if caller != callee}
    if directed and all((callee, caller) in directed for caller, callee in directed):
        # Every edge has its reverse: the graph cannot tell callers from callees (a topology of who
        # talks to whom, as TVDiag's), and a walk towards callees would only favour the hubs.
        notes.append("the call graph has no direction (every edge has its reverse): suspects are ranked "
                     "by their own evidence, without propagation along it")
        propagation = dict.fromkeys(all_services, 1.0)
    else:
        rank_N = _pagerank(all_services, edges, anomaly, config)
        propagation = dict(zip(all_services, rank_N / rank_N.max(), strict=True))
    return FusionParts(services=all_services, per_modality=per_modality, weights=weights, anomaly=anomaly,
                       propagation=propagation, onset=_onset_factor(signals, config), notes=notes)


def rank_root_causes(
    signals: Sequence[Signal],
    *,
    call_edges: Iterable[tuple[str, str]] = (),
    services: Iterable[str] = (),
    pods_of_service: Mapping[str, Sequence[str]] | None = None,
    placement: Mapping[str, str] | None = None,
    config: LocalizationConfig | None = None,
    notes: Sequence[str] = (),
    gate: ModalityGate | None = None,
) -> Localization:
    """Rank (service, pod, node) suspects from `signals` and the call graph (caller, callee) edges; `gate`
    weighs each modality's evidence (default: `entropy_rule`)."""
    config = config or LocalizationConfig()
    placement = placement or {}
    pods_of_service = pods_of_service or {}
    notes = list(notes)
    parts = fusion_parts(signals, call_edges=call_edges, services=services, config=config, gate=gate)
    if parts is None:
        return Localization(root_causes=(), service_scores={}, modalities=(),
                            notes=(*notes, "no services found in any modality: nothing to rank"))
    notes.extend(parts.notes)
    anomaly, propagation, onset = parts.anomaly, parts.propagation, parts.onset
    service_scores = {
        s: math.sqrt(anomaly.get(s, 0.0) * propagation[s]) * onset.get(s, 1.0) / (1.0 + config.onset_bonus)
        for s in parts.services
    }
    if not signals:
        notes.append("no anomaly found in any modality: the ranking only reflects the call graph")
    ranked = _rank_pods(signals, service_scores, anomaly, propagation, parts.per_modality, pods_of_service,
                        placement)
    modalities = tuple(sorted({s.modality for s in signals}))
    return Localization(root_causes=tuple(ranked), service_scores=service_scores, modalities=modalities,
                        notes=tuple(notes), modality_weights={m: round(w, 4) for m, w in sorted(parts.weights.items())})


_ROLLOUT_SPAN = pd.Timedelta(minutes=10)
"""How long after a change of its service a pod's disappearance still counts as the rollout replacing it."""
_GONE_REASONS = frozenset({"killing"})
"""Event reasons that report a pod being stopped (Kubernetes' vocabulary)."""


def replaced_pods(signals: Sequence[Signal]) -> set[str]:
    """Pods that a rollout replaced: they stopped (telemetry ended, or a Killing event) within `_ROLLOUT_SPAN`
    after a change (deploy, config change, rollout) of their service.

    A rollout stops the old pods and starts new ones, so the change runs in the new pods while the old ones
    show the loudest evidence of all (every series "stopped reporting"). A stopped pod whose service did not
    change is different: the stop may be the fault (a killed pod), and it keeps its place.
    """
    changed: dict[str, pd.Timestamp] = {}
    for signal in signals:
        if signal.evidence.get("change") and signal.start is not None:
            changed[signal.service] = min(changed.get(signal.service, signal.start), signal.start)
    replaced = set()
    for signal in signals:
        since = changed.get(signal.service)
        if since is None or not signal.pod or signal.start is None:
            continue
        gone = signal.evidence.get("pattern") == MetricPattern.MISSING_DATA.value or (
            signal.modality == "events" and str(signal.evidence.get("reason", "")).lower() in _GONE_REASONS)
        if gone and since <= signal.start <= since + _ROLLOUT_SPAN:
            replaced.add(signal.pod)
    return replaced


def _rank_pods(signals: Sequence[Signal], service_scores: Mapping[str, float], anomaly: Mapping[str, float],
               propagation: Mapping[str, float], per_modality: Mapping[str, Mapping[str, float]],
               pods_of_service: Mapping[str, Sequence[str]], placement: Mapping[str, str]) -> list[RootCause]:
    by_service: dict[str, list[Signal]] = defaultdict(list)
    for signal in signals:
        by_service[signal.service].append(signal)
    replaced = replaced_pods(signals)
    entries: list[tuple[float, str, str, str | None, tuple[Signal, ...]]] = []
    for service, score in service_scores.items():
        own = sorted(by_service.get(service, []), key=lambda s: s.strength, reverse=True)
        pod_strength: dict[str, float] = defaultdict(float)
        for signal in own:
            if signal.pod:
                pod_strength[signal.pod] = _noisy_or([pod_strength[signal.pod], signal.strength])
        for pod in pods_of_service.get(service, ()):
            pod_strength.setdefault(pod, 0.0)
        if not pod_strength:
            pod_strength[""] = 0.0
        live = [strength for pod, strength in pod_strength.items() if pod not in replaced]
        strongest = max(live or pod_strength.values()) or 1.0
        for pod, strength in pod_strength.items():
            # The service's score dominates; the pod's own evidence orders pods within the service, and a pod
            # the rollout replaced comes after the live ones (when the service has any).
            pod_score = score * (0.8 + 0.2 * min(strength / strongest, 1.0))
            if pod in replaced and live:
                pod_score = score * 0.79 * strength / max(pod_strength.values())
            evidence = _diverse(tuple(s for s in own if s.pod in (pod, None)) if pod else tuple(own))
            node = placement.get(pod) or next((s.node for s in evidence if s.node), None)
            entries.append((pod_score, service, pod, node, evidence[:8]))
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    return [RootCause(rank=rank, service=service, pod=pod or None, node=node, score=round(score, 4),
                      modality_scores={k: round(v, 4) for k, v in per_modality.get(service, {}).items()},
                      evidence=[evidence_of(s) for s in evidence])
            for rank, (score, service, pod, node, evidence) in enumerate(entries, start=1)]


def _diverse(signals: tuple[Signal, ...]) -> tuple[Signal, ...]:
    """Strongest signal of each kind first, then the rest: a report should show different evidence."""
    seen: set[str] = set()
    first: list[Signal] = []
    rest: list[Signal] = []
    for signal in signals:
        (rest if signal.kind in seen else first).append(signal)
        seen.add(signal.kind)
    return (*first, *rest)
