"""Output guardrails: generated text may only name what exists in the incident.

A model that summarises an incident can invent a service, a pod or a metric that reads plausibly.
`check` extracts the entity-like names of a text — identifiers with `-`, `_`, `:` or camelCase,
names following "service", "pod", "node", "metric" (quoted, hyphenated or identifier-shaped), and quoted log
lines — and looks them up in the incident's `IncidentVocabulary`. `guarded_generate` asks again
(telling the model which names do not exist) and, if that does not help, drops the sentences that
name them. `validate_output` checks structured outputs against a pydantic model with errors a
person can read.

Extraction favours precision: a plain English word after "service" ("the service degraded") is not
taken for a name, so a hallucinated name written as a plain lowercase word can pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import pandas as pd
from pydantic import BaseModel, ValidationError

from flipmoe.telemetry.incident import Incident
from flipmoe.telemetry.taxonomy import FAULT_TYPES

EntityKind = Literal["service", "pod", "node", "metric", "log_template", "name"]

M = TypeVar("M", bound=BaseModel)

# Words of Kubernetes, runtimes and protocols that look like identifiers but name no entity.
_COMMON_TERMS = frozenset(t.lower() for t in (
    "CrashLoopBackOff", "OOMKilled", "NodeNotReady", "ImagePullBackOff", "ErrImagePull", "BackOff",
    "FailedScheduling", "FailedMount", "NullPointerException", "OutOfMemoryError", "KeyError", "TypeError",
    "ValueError", "IndexError", "TimeoutError", "ConnectionError", "UnknownHostException", "DiskPressure",
    "MemoryPressure", "PIDPressure", "ConfigMap", "StatefulSet", "DaemonSet", "ReplicaSet", "PodDisruptionBudget",
    "CoreDNS", "PromQL", "LogQL", "OpenTelemetry", "JavaScript", "TypeScript", "GitHub", "PostgreSQL", "MySQL",
    "MongoDB", "gRPC", "HTTP/1.1", "HTTP/2", "p50", "p90", "p95", "p99", "5xx", "4xx", "x509", "k8s",
    "kube-dns", "cert-manager", "node-exporter", "kube-state-metrics", "cAdvisor", "root-cause", "re-run",
    "follow-up", "round-trip", "fault-free", "back-off", "read-only", "long-running", "end-to-end",
    "time-out", "step-by-step", "up-to-date", "per-pod", "per-service", "per-node", "rate1m", "ratio_rate1m",
))
_CUE = re.compile(r"\b(service|pod|node|host|metric|container)s?\s+[`'\"]?([A-Za-z0-9_.:/\-()]+)[`'\"]?",
                  re.IGNORECASE)
_QUOTED = re.compile(r"`([^`\n]{2,200})`|\"([^\"\n]{2,200})\"|'([^'\n]{8,200})'")
_TOKEN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/\-()]*[A-Za-z0-9_)]|[A-Za-z0-9_]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_TIME_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?)?$|^\d{1,2}:\d{2}(:\d{2})?Z?$|"
                        r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$|^[\d.:/\-]+$", re.IGNORECASE)
_TEMPLATE_SIMILARITY = 0.6
_MIN_TEMPLATE_WORDS = 3


@dataclass(frozen=True, kw_only=True)
class Entity:
    """A name found in generated text."""

    text: str
    kind: EntityKind
    sentence: str = ""


@dataclass(frozen=True, kw_only=True)
class GuardrailResult:
    ok: bool
    """True when every entity the text names exists in the incident."""
    unknown_entities: list[Entity]
    cleaned_text: str
    """The text without the sentences that name an unknown entity."""
    attempts: int = 1
    """Generations it took (`guarded_generate`)."""


@dataclass(frozen=True, kw_only=True)
class IncidentVocabulary:
    """Every name an answer about the incident may use."""

    services: frozenset[str] = frozenset()
    pods: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    metrics: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    log_templates: tuple[str, ...] = ()
    """Mined templates (`<*>` for variables) or raw messages."""
    other: frozenset[str] = frozenset()
    """Further allowed names: event reasons, trace ids, words of log lines and event messages."""
    _lower: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _template_words: tuple[frozenset[str], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        lower: dict[str, str] = {}
        for kind in ("other", "operations", "metrics", "nodes", "pods", "services"):  # later wins
            for name in getattr(self, kind):
                lower[name.lower()] = kind
        object.__setattr__(self, "_lower", lower)
        object.__setattr__(self, "_template_words", tuple(_words(t) for t in self.log_templates))

    @classmethod
    def from_incident(cls, incident: Incident, *, log_templates: Iterable[str] = (),
                      extra: Iterable[str] = ()) -> IncidentVocabulary:
        """Names of the incident's telemetry, baseline and topology; `log_templates` from the log toolkit
        (without them, the distinct log messages serve, up to a few thousand)."""
        services: set[str] = set()
        pods: set[str] = set()
        nodes: set[str] = set()
        metrics: set[str] = set()
        operations: set[str] = set()
        other: set[str] = set(extra)
        messages: set[str] = set()
        for telemetry in (incident.telemetry, incident.baseline):
            if telemetry is None:
                continue
            for name in telemetry.modalities:
                table = telemetry.table(name)
                assert table is not None
                services.update(_distinct(table, "service"))
                pods.update(_distinct(table, "pod"))
                nodes.update(_distinct(table, "node"))
            if telemetry.metrics is not None:
                metrics.update(_distinct(telemetry.metrics, "metric"))
            if telemetry.spans is not None:
                operations.update(_distinct(telemetry.spans, "operation"))
            if telemetry.events is not None:
                other.update(_distinct(telemetry.events, "reason"))
                messages.update(_distinct(telemetry.events, "message"))
            if telemetry.logs is not None:
                messages.update(telemetry.logs["message"].drop_duplicates().head(5000).astype(str))
        if incident.topology is not None:
            services.update(incident.topology.services)
            services.update(s for edge in incident.topology.edges for s in edge)
            pods.update(incident.topology.placement)
            nodes.update(incident.topology.placement.values())
        templates = list(log_templates) or sorted(messages)
        for text in [*templates, *messages, incident.meta.alert]:
            other.update(_TOKEN.findall(text))
        return cls(services=frozenset(services), pods=frozenset(pods), nodes=frozenset(nodes),
                   metrics=frozenset(metrics), operations=frozenset(operations), log_templates=tuple(templates),
                   other=frozenset(other))

    def knows(self, name: str, kind: EntityKind = "name") -> bool:
        """Whether `name` exists in the incident. A service, pod or node must be one of the incident's
        services, pods or nodes: a word that only occurs inside a log line does not make it one (a log
        line saying "report service X" must not let X pass as a suspect)."""
        stripped = name.strip("`'\"()[],;").split("{", 1)[0].rstrip(".")
        low = stripped.lower()
        if low in _COMMON_TERMS or low in FAULT_TYPES or _TIME_LIKE.match(low) \
                or low.replace("-", " ").replace("_", " ") in FAULT_TYPES_WORDS:
            return True
        found = self._lower.get(low)
        if kind in ("service", "pod", "node"):
            return found in ("services", "pods", "nodes")
        return found is not None

    def matches_template(self, quoted: str) -> bool:
        """Whether a quoted log line fits a known template or message."""
        words = _words(quoted)
        if len(words) < _MIN_TEMPLATE_WORDS:
            return True
        for template, template_words in zip(self.log_templates, self._template_words, strict=True):
            if _template_regex(template).search(quoted):
                return True
            if template_words and len(words & template_words) / len(words) >= _TEMPLATE_SIMILARITY:
                return True
        return False


FAULT_TYPES_WORDS = frozenset(name.replace("_", " ") for name in FAULT_TYPES)


def _distinct(table: pd.DataFrame, column: str) -> set[str]:
    if column not in table.columns:
        return set()
    return {str(v) for v in table[column].dropna().unique()}


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z][a-z0-9]+", text.lower().replace("<*>", " ")) if len(w) > 2)


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = _REGEX_CACHE.get(template)
    if pattern is None:
        parts = [re.escape(p) for p in template.split("<*>")]
        pattern = re.compile(".*?".join(parts)) if any(p.strip() for p in template.split("<*>")) \
            else re.compile(r"(?!)")
        _REGEX_CACHE[template] = pattern
    return pattern


def _looks_like_identifier(token: str) -> bool:
    core = token.strip("()")
    if len(core) < 3 or _TIME_LIKE.match(core.lower()):
        return False
    if "_" in core or ":" in core:
        return True
    if "-" in core and any(c.isdigit() for c in core):
        return True
    if re.search(r"[a-z][A-Z]", core) and len(core) >= 6:
        return True
    return bool(re.fullmatch(r"[a-z][a-z0-9]*(service|svc|-db|db)", core))


def _guess_kind(name: str, vocabulary: IncidentVocabulary, cue: str | None) -> EntityKind:
    if cue in ("service", "pod", "node", "metric"):
        return cue  # type: ignore[return-value]
    if cue == "host":
        return "node"
    if cue == "container":
        return "pod"
    if any(name.startswith(service + "-") for service in vocabulary.services):
        return "pod"
    if "_" in name or ":" in name:
        return "metric"
    if re.match(r"node\b|.*-node\b", name.lower()) or any(name.startswith(n.rsplit("-", 1)[0] + "-")
                                                           for n in vocabulary.nodes if "-" in n):
        return "node"
    if re.search(r"(service|svc)$", name):
        return "service"
    return "name"


def extract_entities(text: str, vocabulary: IncidentVocabulary) -> list[Entity]:
    """Entity-like names of `text`, each with its sentence (known and unknown alike)."""
    found: list[Entity] = []
    for sentence in split_sentences(text):
        found += _sentence_entities(sentence, vocabulary)
    return found


def _sentence_entities(sentence: str, vocabulary: IncidentVocabulary) -> list[Entity]:
    names: dict[str, EntityKind] = {}  # first kind seen wins, in sentence order

    def add(name: str, kind: EntityKind) -> None:
        name = name.strip("`'\".,;()[]")
        if name:
            names.setdefault(name, kind)

    quoted_spans: list[tuple[int, int]] = []
    for match in _QUOTED.finditer(sentence):
        quoted = next(g for g in match.groups() if g is not None)
        if len(_words(quoted)) >= _MIN_TEMPLATE_WORDS:
            add(quoted, "log_template")
            quoted_spans.append(match.span())
    for match in _CUE.finditer(sentence):
        name = match.group(2).rstrip(".,;:)")
        if any(a <= match.start(2) < b for a, b in quoted_spans):
            continue
        explicit = sentence[match.start(2) - 1:match.start(2)] in "`'\""
        # After a cue, a hyphenated word is a name too ("service quantum-flux"); a plain word is not.
        if explicit or "-" in name.strip("-") or _looks_like_identifier(name):
            add(name, _guess_kind(name, vocabulary, match.group(1).lower()))
    for match in _TOKEN.finditer(sentence):
        if any(a <= match.start() < b for a, b in quoted_spans):
            continue
        token = match.group(0).split("{", 1)[0].rstrip(".:")
        if _looks_like_identifier(token):
            add(token, _guess_kind(token, vocabulary, None))
    return [Entity(text=name, kind=kind, sentence=sentence) for name, kind in names.items()]


def split_sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def check(text: str, vocabulary: IncidentVocabulary) -> GuardrailResult:
    """Every entity `text` names must exist in the incident; `cleaned_text` drops the sentences that
    name one that does not."""
    unknown = [e for e in extract_entities(text, vocabulary) if not _known(e, vocabulary)]
    bad_sentences = {e.sentence for e in unknown}
    cleaned = " ".join(s for s in split_sentences(text) if s not in bad_sentences)
    return GuardrailResult(ok=not unknown, unknown_entities=unknown, cleaned_text=cleaned)


def _known(entity: Entity, vocabulary: IncidentVocabulary) -> bool:
    if entity.kind == "log_template":
        return vocabulary.matches_template(entity.text)
    return vocabulary.knows(entity.text, entity.kind)


def guarded_generate(generate_fn: Callable[[str], str], prompt: str, vocabulary: IncidentVocabulary,
                     retries: int = 2) -> GuardrailResult:
    """Generate, check, and regenerate up to `retries` times with the unknown names pointed out; if
    the last answer still names unknown entities, drop the sentences that do (`cleaned_text`)."""
    attempt_prompt = prompt
    result = GuardrailResult(ok=False, unknown_entities=[], cleaned_text="")
    for attempt in range(1, retries + 2):
        result = check(generate_fn(attempt_prompt), vocabulary)
        result = GuardrailResult(ok=result.ok, unknown_entities=result.unknown_entities,
                                 cleaned_text=result.cleaned_text, attempts=attempt)
        if result.ok:
            return result
        names = ", ".join(sorted({e.text for e in result.unknown_entities}))
        attempt_prompt = (f"{prompt}\n\nDo not mention {names}: they do not exist in this incident. "
                          "Name only services, pods, nodes, metrics and log lines that appear in the data.")
    return result


class OutputValidationError(ValueError):
    """A structured output that does not fit its schema; the message lists every problem."""

    def __init__(self, model_name: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{model_name}: {len(problems)} problem(s): " + "; ".join(problems))


def validate_output(model_cls: type[M], data: object) -> M:
    """Parse `data` (a dict, or text holding JSON, possibly in a ```json fence) into `model_cls`;
    raises `OutputValidationError` naming each bad field, what was wrong and the value given."""
    if isinstance(data, str | bytes):
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        try:
            data, _ = json.JSONDecoder().raw_decode(_json_block(text).strip())
        except json.JSONDecodeError as err:
            raise OutputValidationError(model_cls.__name__, [f"not valid JSON: {err.msg} at line {err.lineno} "
                                                             f"column {err.colno}"]) from None
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            where = ".".join(str(part) for part in item["loc"]) or "(top level)"
            given = item.get("input")
            shown = "" if item["type"] == "missing" else f" (got {_short(given)})"
            problems.append(f"{where}: {item['msg']}{shown}")
        raise OutputValidationError(model_cls.__name__, problems) from None


def _json_block(text: str) -> str:
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        return fenced.group(1)
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    return text[start:] if start >= 0 else text


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
