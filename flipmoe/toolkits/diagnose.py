"""Fault-type diagnosis: which kind of fault explains the evidence around the top suspect.

The evidence is read into named features in [0, 1] — which resource metrics of the suspect moved
and how, its exclusive latency, error origins and vanished calls in traces, the failure classes its
logs and events mention (out of memory, DNS, TLS, ...), what its callers' logs and traces say,
whether it is a database or a cache, whether the whole node is sick — plus, as `any_*`, the
strongest sign of each mechanism anywhere in the incident, which still names the fault type when
localisation picked a neighbour of the root cause. The names are semantic, never one system's
metric names or log strings, so the same vector is read on any system.

Two scorers read the vector:
- a multinomial logistic regression (`DiagnosisModel`) fitted on chaos-gym incidents of several
  systems by `eval.train_diagnosis` (`flipmoe train diagnosis`) and shipped as
  `diagnosis_model.json`; inference is plain numpy, so the analysis path needs no scikit-learn;
- hand-written prototypes, an SRE's rules of thumb per fault type, not fitted to any data.
With the model present the two are pooled log-linearly, `log p_model + prior_weight * log p_prototypes`
(the weight is chosen by cross-validation at training time); without it the prototypes decide alone.
Each diagnosis lists the features that pushed the winner.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import Topology
from flipmoe.telemetry.taxonomy import FAULT_TYPES
from flipmoe.toolkits.events import EventReport
from flipmoe.toolkits.findings import MetricPattern
from flipmoe.toolkits.localize import RootCause
from flipmoe.toolkits.logs import LogReport
from flipmoe.toolkits.metrics import MetricReport
from flipmoe.toolkits.traces import TraceReport
from flipmoe.toolkits.vocabulary import TEXT_CLASSES, metric_category, text_classes

log = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).with_name("diagnosis_model.json")
"""The shipped learned model (written by `flipmoe train diagnosis`)."""

_RESOURCES = ("cpu", "memory", "disk", "network")
# What one service's own evidence says (read for the suspect, its callers and every service).
_SERVICE_METRIC_FEATURES = (
    *(f"m_{c}" for c in (*_RESOURCES, "latency", "errors", "saturation", "restarts")),
    "m_cpu_throttled", "m_cpu_pressure", "m_memory_rising", "m_network_loss", "m_resource_down", "m_traffic_up",
    "m_traffic_down", "m_missing", "m_cache", *(f"m_node_{c}" for c in _RESOURCES),
)
_SERVICE_TRACE_FEATURES = ("t_self", "t_errors", "t_in_missing", "t_out_missing", "t_added_calls")
_SERVICE_LOG_FEATURES = (*(f"l_{c}" for c in TEXT_CLASSES), "l_error", "l_quiet", "l_broken")
_EVENT_FEATURES = tuple(f"e_{c}" for c in TEXT_CLASSES)
# Callers show what the suspect does to them (timeouts, TLS or DNS errors, retries).
_CALLER_VIEW = ("t_self", "t_errors", *(f"l_{c}" for c in TEXT_CLASSES), "l_error")
# The strongest sign of a mechanism anywhere in the incident: it still names the fault type when
# localisation picked a neighbour of the root cause. Symptoms that spread everywhere (latency,
# error rates, ERROR lines) are left out; they say nothing about the mechanism.
_INCIDENT_VIEW = (
    *(f"m_{c}" for c in (*_RESOURCES, "saturation", "restarts")), "m_cpu_throttled", "m_cpu_pressure",
    "m_memory_rising", "m_network_loss", "m_resource_down", "m_missing", "m_cache",
    *(f"m_node_{c}" for c in _RESOURCES),
    "t_self", "t_errors", "t_in_missing", "t_out_missing", "t_added_calls",
    *(f"l_{c}" for c in TEXT_CLASSES), *_EVENT_FEATURES,
)
FEATURE_NAMES: tuple[str, ...] = (
    *_SERVICE_METRIC_FEATURES, "node_wide", *_SERVICE_TRACE_FEATURES, *_SERVICE_LOG_FEATURES, *_EVENT_FEATURES,
    "e_config_change", "is_database", "is_cache",
    *(f"callers_{name}" for name in _CALLER_VIEW), *(f"any_{name}" for name in _INCIDENT_VIEW),
)
"""The fixed feature vector, in the order the learned model reads it."""

# fault type -> {feature: weight}. Negative weights are evidence against the type.
_PROTOTYPES: dict[str, dict[str, float]] = {
    "cpu_hog": {"m_cpu": 1.0, "t_self": 0.2, "m_node_cpu": -0.3, "node_wide": -0.3},
    "cpu_contention": {"m_cpu": 0.7, "m_node_cpu": 0.5, "node_wide": 0.3, "t_self": 0.2},
    "memory_leak": {"m_memory": 0.6, "m_memory_rising": 0.5, "e_oom": 0.6, "l_oom": 0.4, "m_restarts": 0.2},
    "disk_io": {"m_disk": 0.8, "l_disk": 0.7, "e_disk": 0.6},
    "network_delay": {"t_self": 0.5, "m_latency": 0.4, "m_network": 0.3, "t_errors": -0.3, "m_cpu": -0.5,
                      "l_exception": -0.2},
    "packet_loss": {"m_network": 0.3, "l_timeout": 0.3, "l_connection": 0.3, "t_errors": 0.3, "t_self": 0.2,
                    "m_cpu": -0.4},
    "dns_failure": {"l_dns": 1.0, "t_errors": 0.2},
    "pod_crash_loop": {"e_crash": 0.8, "m_restarts": 0.6, "m_missing": 0.4, "l_crash": 0.4, "e_probe": 0.2,
                       "e_oom": -0.4},
    "node_failure": {"e_node": 1.0, "node_wide": 0.6, "m_missing": 0.2},
    "bad_config": {"e_config_change": 0.6, "l_config": 0.5, "l_connection": 0.2, "t_errors": 0.2},
    "code_exception": {"l_exception": 0.7, "t_errors": 0.4, "e_deploy": 0.3, "l_broken": 0.3, "l_wrong_result": -0.2},
    "code_wrong_result": {"l_wrong_result": 0.6, "t_errors": 0.3, "m_errors": 0.3, "e_deploy": 0.3, "l_broken": 0.3,
                          "l_exception": -0.3},
    "db_slow_query": {"is_database": 0.5, "l_slow_query": 0.6, "l_pool": 0.6, "t_self": 0.3, "m_saturation": 0.2},
    "cache_outage": {"is_cache": 0.6, "l_cache": 0.4, "l_connection": 0.3, "t_errors": 0.2},
    "certificate_expiry": {"l_tls": 1.0, "callers_l_tls": 0.8},
    "retry_storm": {"l_retry": 0.6, "l_timeout": 0.3, "m_traffic_up": 0.4, "callers_l_retry": 0.3},
}
assert set(_PROTOTYPES) == set(FAULT_TYPES), "every fault type of the taxonomy needs a prototype"
assert all(f in FEATURE_NAMES for proto in _PROTOTYPES.values() for f in proto), "prototypes use known features"
_PROTOTYPE_TEMPERATURE = 0.2
"""Prototype scores are sums of weights x features in [0, 1]; 0.2 apart is a clear preference."""

_DATABASE_NAME = re.compile(r"(^|[-_.])(db|database|mysql|postgres\w*|mongo\w*|mariadb|cassandra|sql)([-_.]|$)")
_CACHE_NAME = re.compile(r"(^|[-_.])(cache|redis|memcache\w*|valkey)([-_.]|$)")
# Metric names that measure the host, not the container ('nodejs_*' is a runtime, not a node).
_NODE_METRIC = re.compile(r"(?<![a-z])(node|host|instance:)(?!js)", re.IGNORECASE)
# Aspects of a resource that a category alone does not tell apart (cAdvisor / PSI / TCP vocabulary).
# CFS throttling means a container hit its own quota; pressure (PSI), steal and run-queue waits mean
# it waited for a CPU someone else held.
_CPU_THROTTLED = re.compile(r"throttl", re.IGNORECASE)
_CPU_PRESSURE = re.compile(r"pressure|steal|wait|run ?queue", re.IGNORECASE)
_NETWORK_LOSS = re.compile(r"drop|retrans|loss|discard", re.IGNORECASE)
_CACHE_METRIC = re.compile(r"cache|hit ?(ratio|rate)|evict|keyspace", re.IGNORECASE)
_UP_PATTERNS = (MetricPattern.SPIKE, MetricPattern.LEVEL_SHIFT_UP, MetricPattern.TREND_UP)
_DOWN_PATTERNS = (MetricPattern.DIP, MetricPattern.LEVEL_SHIFT_DOWN, MetricPattern.TREND_DOWN,
                  MetricPattern.DROP_TO_ZERO)


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    fault_type: str
    confidence: float
    """Probability of the winning type; low values mean the evidence is ambiguous."""
    scores: Mapping[str, float]
    """Every fault type's probability, highest first."""
    features: Mapping[str, float]
    """The non-zero features read from the evidence."""
    reasons: tuple[str, ...]
    """The features that contributed most to the winner, in words."""


@dataclass(frozen=True, kw_only=True)
class DiagnosisModel:
    """A multinomial logistic regression over `feature_names`, pooled with the prototypes."""

    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    coef_KF: np.ndarray
    """(K classes, F features) weights."""
    intercept_K: np.ndarray
    prior_weight: float = 0.0
    """Weight of the prototypes' log-probabilities added to the model's (0: the model alone)."""
    card: Mapping[str, Any] = field(default_factory=dict)
    """How the model was trained and how well it did (data, seeds, cross-validation)."""

    def __post_init__(self) -> None:
        k, f = len(self.classes), len(self.feature_names)
        if self.coef_KF.shape != (k, f) or self.intercept_K.shape != (k,):
            raise ValueError(f"weights of shape {self.coef_KF.shape} and {self.intercept_K.shape} "
                             f"do not fit {k} classes x {f} features")
        unknown = set(self.classes) - set(FAULT_TYPES)
        if unknown:
            raise ValueError(f"classes not in the taxonomy: {', '.join(sorted(unknown))}")

    def vector(self, features: Mapping[str, float]) -> np.ndarray:
        """(F,) the model's input; features it was not trained on are ignored."""
        return np.array([features.get(name, 0.0) for name in self.feature_names], dtype=float)

    def logits(self, features: Mapping[str, float]) -> np.ndarray:
        """(K,) unnormalised log-probabilities of the model alone."""
        return self.coef_KF @ self.vector(features) + self.intercept_K

    def contributions(self, features: Mapping[str, float], fault_type: str) -> list[tuple[str, float]]:
        """(feature, weight x value) for `fault_type`, most positive first, zero terms left out."""
        x_F = self.vector(features)
        terms_F = self.coef_KF[self.classes.index(fault_type)] * x_F
        order = np.argsort(-terms_F, kind="stable")
        return [(self.feature_names[i], float(terms_F[i])) for i in order if x_F[i] != 0.0]

    def to_json(self) -> dict[str, Any]:
        return {"format": "flipmoe-diagnosis-logreg/1", "classes": list(self.classes),
                "feature_names": list(self.feature_names),
                "coef": [[round(float(w), 6) for w in row] for row in self.coef_KF],
                "intercept": [round(float(b), 6) for b in self.intercept_K],
                "prior_weight": self.prior_weight, "card": dict(self.card)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DiagnosisModel:
        return cls(classes=tuple(data["classes"]), feature_names=tuple(data["feature_names"]),
                   coef_KF=np.asarray(data["coef"], dtype=float),
                   intercept_K=np.asarray(data["intercept"], dtype=float),
                   prior_weight=float(data.get("prior_weight", 0.0)), card=data.get("card", {}))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path


def load_model(path: str | Path = MODEL_PATH) -> DiagnosisModel | None:
    """The learned model at `path`, or None when there is none (diagnosis then uses the prototypes).

    A file that cannot be read is logged and treated as absent: a broken model must not stop an RCA.
    """
    path = Path(path)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    return _load_model(str(path), stamp)


def read_model(path: str | Path) -> DiagnosisModel:
    """The model at a path a user named: unlike `load_model`, a missing or unusable file is an error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise FlipmoeInputError(f"cannot read the diagnosis model ({err.strerror or err})", path=path) from None
    except ValueError as err:
        raise FlipmoeInputError(f"the diagnosis model is not JSON ({err})", path=path) from None
    try:
        return DiagnosisModel.from_json(data)
    except (ValueError, KeyError, TypeError) as err:
        raise FlipmoeInputError(f"not a diagnosis model ({type(err).__name__}: {err})", path=path,
                                hint="write one with 'flipmoe train diagnosis --out FILE'") from None


@lru_cache(maxsize=8)
def _load_model(path: str, stamp: int) -> DiagnosisModel | None:
    try:
        return read_model(path)
    except FlipmoeInputError as err:
        log.warning("%s; diagnosing with the prototypes — run 'flipmoe train diagnosis' to rebuild it", err)
        return None


def diagnose(
    suspect: RootCause | None,
    *,
    metrics: MetricReport | None = None,
    traces: TraceReport | None = None,
    logs: LogReport | None = None,
    events: EventReport | None = None,
    topology: Topology | None = None,
    callers: Sequence[str] = (),
    model_path: str | Path = MODEL_PATH,
) -> Diagnosis | None:
    """The most likely fault type at `suspect`, or None without a suspect."""
    if suspect is None:
        return None
    features = diagnosis_features(suspect, metrics=metrics, traces=traces, logs=logs, events=events,
                                  topology=topology, callers=callers)
    return classify(features, load_model(model_path))


def classify(features: Mapping[str, float], model: DiagnosisModel | None) -> Diagnosis:
    """Score a feature dict: the model pooled with the prototypes, or the prototypes alone (model None)."""
    prior = prototype_log_probabilities(features)
    if model is None:
        classes, log_p = tuple(prior), np.array(list(prior.values()))
    else:
        classes = model.classes
        log_p = _log_softmax(model.logits(features)
                             + model.prior_weight * np.array([prior[name] for name in classes]))
    p_K = np.exp(log_p)
    order = np.argsort(-p_K, kind="stable")
    winner = classes[order[0]]
    if model is None:
        terms = sorted(((w * features.get(f, 0.0), f) for f, w in _PROTOTYPES[winner].items()), reverse=True)
        reasons = tuple(f"{f}={features[f]:.2f}" for c, f in terms if c > 0)[:4]
    else:
        reasons = tuple(f"{f}={features[f]:.2f} (+{c:.2f})"
                        for f, c in model.contributions(features, winner) if c > 0)[:4]
    return Diagnosis(fault_type=winner, confidence=float(p_K[order[0]]),
                     scores={classes[i]: round(float(p_K[i]), 4) for i in order},
                     features={k: round(v, 3) for k, v in features.items() if v}, reasons=reasons)


def prototype_log_probabilities(features: Mapping[str, float]) -> dict[str, float]:
    """Every fault type's log-probability under the prototypes, in taxonomy order."""
    scores_K = np.array([sum(w * features.get(f, 0.0) for f, w in _PROTOTYPES[name].items()) for name in FAULT_TYPES])
    return dict(zip(FAULT_TYPES, _log_softmax(scores_K / _PROTOTYPE_TEMPERATURE).tolist(), strict=True))


def _log_softmax(z_K: np.ndarray) -> np.ndarray:
    shifted = z_K - z_K.max()
    return shifted - math.log(float(np.exp(shifted).sum()))


def diagnosis_features(
    suspect: RootCause,
    *,
    metrics: MetricReport | None = None,
    traces: TraceReport | None = None,
    logs: LogReport | None = None,
    events: EventReport | None = None,
    topology: Topology | None = None,
    callers: Sequence[str] = (),
) -> dict[str, float]:
    """The named features in [0, 1] read from the evidence around `suspect` (absent ones are 0)."""
    evidence: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    _metric_evidence(evidence, metrics)
    _trace_evidence(evidence, traces)
    _log_evidence(evidence, logs)
    _alert_evidence(evidence, events)
    features: dict[str, float] = defaultdict(float)
    for name, value in evidence.get(suspect.service, {}).items():
        _raise(features, name, value)
    for caller in set(callers) - {suspect.service}:
        for name in _CALLER_VIEW:
            _raise(features, f"callers_{name}", evidence.get(caller, {}).get(name, 0.0))
    for service_evidence in evidence.values():
        for name in _INCIDENT_VIEW:
            _raise(features, f"any_{name}", service_evidence.get(name, 0.0))
    _node_features(features, suspect, metrics)
    _event_features(features, suspect, events)
    _kind_features(features, suspect.service, topology)
    return {name: value for name, value in features.items() if value}


Evidence = dict[str, dict[str, float]]
"""service -> {feature: value}: what each service's own telemetry says."""


def _raise(features: dict[str, float], name: str, value: float) -> None:
    assert name in _KNOWN, f"unknown diagnosis feature {name}"
    features[name] = max(features[name], min(max(value, 0.0), 1.0))


_KNOWN = frozenset(FEATURE_NAMES)


def _squash(z: float) -> float:
    """A z-like score in [0, inf) -> [0, 1): 3 (the usual detection threshold) maps to one half."""
    return z / (z + 3.0) if z > 0 else 0.0


def _metric_evidence(evidence: Evidence, report: MetricReport | None) -> None:
    if report is None:
        return
    for anomaly in report.anomalies:
        features = evidence[anomaly.service]
        strength = _squash(anomaly.score)
        if anomaly.pattern in (MetricPattern.MISSING_DATA, MetricPattern.DROP_TO_ZERO):
            _raise(features, "m_missing", strength)
            if anomaly.pattern is MetricPattern.MISSING_DATA:
                continue  # a series that stopped says the pod is gone, not which way its resources went
        change = anomaly.relative_change or 0.0
        _metric_features(features, anomaly.metric, strength, upward=change > 0 or anomaly.pattern in _UP_PATTERNS,
                         downward=change < 0 or anomaly.pattern in _DOWN_PATTERNS,
                         rising=anomaly.pattern in (MetricPattern.TREND_UP, MetricPattern.LEVEL_SHIFT_UP))


def _metric_features(features: dict[str, float], metric: str, strength: float, *, upward: bool, downward: bool,
                     rising: bool) -> None:
    """What one moved metric says: the resource or signal it measures, which way, which aspect."""
    category = metric_category(metric)
    if _NODE_METRIC.search(metric) and category in _RESOURCES:
        if upward:
            _raise(features, f"m_node_{category}", strength)
        return
    if category == "cpu" and (_CPU_THROTTLED.search(metric) or _CPU_PRESSURE.search(metric)):
        if upward:
            _raise(features, "m_cpu_throttled" if _CPU_THROTTLED.search(metric) else "m_cpu_pressure", strength)
    elif category in (*_RESOURCES, "latency", "errors", "saturation", "restarts"):
        # Error metrics count either way: a success rate falls when errors rise.
        if upward or category == "errors":
            _raise(features, f"m_{category}", strength)
        elif downward and category in _RESOURCES:
            _raise(features, "m_resource_down", strength)
    if category == "memory" and rising:
        _raise(features, "m_memory_rising", strength)
    if category == "network" and upward and _NETWORK_LOSS.search(metric):
        _raise(features, "m_network_loss", strength)
    if _CACHE_METRIC.search(metric):
        _raise(features, "m_cache", strength)
    if category == "traffic" and (upward or downward):
        _raise(features, "m_traffic_up" if upward else "m_traffic_down", strength)


def _alert_evidence(evidence: Evidence, report: EventReport | None) -> None:
    """Alerts other detectors raised (`kind` metric / log / trace events) read as the anomalies our own
    detectors would have found: a metric alert as a moved metric (its message says `up` or `down`
    where known; a level, so an upward memory alert counts as rising memory), a trace alert as slow
    (`PD`, performance degradation) or failing calls, a log alert as error lines."""
    if report is None:
        return
    for finding in report.findings:
        if not finding.kind.endswith(" alert") or not finding.service:
            continue
        features = evidence[finding.service]
        kind = finding.kind.removesuffix(" alert").lower()
        for reason, message in finding.alerts:
            direction = message.strip().lower()
            if kind == "metric":
                # Without a direction an alert is read as a rise (what alerting rules mostly watch for),
                # but only an `up` says the level rose.
                down = direction.startswith("down")
                _metric_features(features, reason, finding.strength, upward=not down, downward=down,
                                 rising=direction.startswith("up"))
            elif kind == "trace":
                _raise(features, "t_self" if direction.startswith("pd") else "t_errors", finding.strength)
            elif kind == "log":
                _raise(features, "l_error", finding.strength)


def _node_features(features: dict[str, float], suspect: RootCause, report: MetricReport | None) -> None:
    """How many other services on the suspect's node are sick too (a node-level cause)."""
    if report is None or suspect.node is None:
        return
    sick = {a.service for a in report.anomalies
            if a.node == suspect.node and a.service != suspect.service
            and metric_category(a.metric) in ("cpu", "memory", "errors", "latency")}
    if sick:
        _raise(features, "node_wide", len(sick) / (len(sick) + 2.0))


def _trace_evidence(evidence: Evidence, report: TraceReport | None) -> None:
    if report is None:
        return
    for summary in report.services:
        _raise(evidence[summary.service], "t_self", _squash(summary.latency_score))
        _raise(evidence[summary.service], "t_errors", _squash(summary.error_score))
    for anomaly in report.anomalies:
        caller = (anomaly.caller or "").partition(":")[0]
        if anomaly.kind == "added_call":
            for service in {anomaly.service, caller} - {""}:
                _raise(evidence[service], "t_added_calls", _squash(anomaly.score))
        elif anomaly.kind == "missing_call":
            # Calls to a service that stopped: it is unreachable; calls from it that stopped: it
            # fails before calling out (no DNS, bad config).
            _raise(evidence[anomaly.service], "t_in_missing", _squash(anomaly.score))
            if caller:
                _raise(evidence[caller], "t_out_missing", _squash(anomaly.score))


def _classes(texts: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for text in texts:
        found |= text_classes(text)
    return found


def _log_evidence(evidence: Evidence, report: LogReport | None) -> None:
    if report is None:
        return
    for finding in report.findings:
        features = evidence[finding.service]
        if finding.kind == "broken_pattern":
            # The code stopped reaching a line on its normal path: a code fault's signature. The line's words
            # say what stopped, not what failed, so they name no failure class.
            _raise(features, "l_broken", finding.score)
            continue
        if finding.kind == "disappeared_template" or (finding.kind == "frequency_shift" and finding.z < 0):
            _raise(features, "l_quiet", finding.score)
            continue
        if finding.level in ("ERROR", "FATAL"):
            _raise(features, "l_error", finding.score)
        for name in _classes([finding.evidence.template, finding.evidence.example]):
            _raise(features, f"l_{name}", finding.score)


def _event_features(features: dict[str, float], suspect: RootCause, report: EventReport | None) -> None:
    if report is None:
        return
    for finding in report.findings:
        about_suspect = (finding.service == suspect.service or (finding.pod and finding.pod == suspect.pod)
                         or (finding.node and finding.node == suspect.node and not finding.service))
        if finding.is_change:
            # Innocent deploys and config changes happen during incidents too: only the suspect's count.
            if about_suspect:
                _raise(features, "e_config_change" if "config" in finding.kind.lower() else "e_deploy", 1.0)
            continue
        for name in finding.classes | _reason_classes(finding.reason):
            _raise(features, f"any_e_{name}", finding.strength)
            if about_suspect:
                _raise(features, f"e_{name}", finding.strength)


def _reason_classes(reason: str) -> set[str]:
    """Kubernetes event reasons are CamelCase words the text patterns do not always catch."""
    lowered = reason.lower()
    classes = set()
    if "oom" in lowered:
        classes.add("oom")
    if "backoff" in lowered or "crash" in lowered:
        classes.add("crash")
    if "node" in lowered or "evict" in lowered:
        classes.add("node")
    if "unhealthy" in lowered or "probe" in lowered:
        classes.add("probe")
    if "disk" in lowered:
        classes.add("disk")
    return classes


def _kind_features(features: dict[str, float], service: str, topology: Topology | None) -> None:
    kind = (topology.kinds.get(service, "") if topology is not None else "").lower()
    name = service.lower()
    if kind == "database" or _DATABASE_NAME.search(name):
        features["is_database"] = 1.0
    if kind == "cache" or _CACHE_NAME.search(name):
        features["is_cache"] = 1.0
