"""An incident's logs as templates: counts per time bucket, and what changed against a reference.

The reference says what normal looks like. In order of preference:

1. `baseline`: `incident.baseline.logs`, a fault-free window of the same system, against the
   whole incident window (faults often start before the alert fires).
2. `pre_alert`: the window's lines before `meta.alert_time`, against the lines from it on.
3. `none`: nothing to compare with; the findings are the window's ERROR/FATAL/WARN templates.

A template is compared by its share of its service's (or pod's) lines, so that a change of load
alone is no finding: with `b` of the service's `B` lines before and `d` of its `D` lines during,
the z-score is that of `d` under "same share": given `n = b + d` lines, `d` is binomial with
`p = D / (B + D)`, so `z = (d - n p) / sqrt(n p (1 - p))`. The fold change is
`((d + 0.5) / D) / ((b + 0.5) / B)` (half a line added so an absent template still has a share).
A service silent on one side is compared by lines per minute instead (`B`, `D` become the minutes).

Findings, per service and per pod seen in the window:
- `new_template`: absent before, present during (reported when WARN or worse, or when z >= min_z);
- `frequency_shift`: present in both, |z| >= min_z and fold >= min_fold (or <= 1 / min_fold);
- `disappeared_template`: present before, absent during, z <= -min_z;
- `level_surge`: ERROR+FATAL lines, or WARN lines, up with z >= min_z and fold >= min_fold;
- `error_template` (reference `none` only): an ERROR/FATAL/WARN template of the window, with
  z = sqrt(count), the Poisson z of a count against an empty reference;
- `broken_pattern`: a template of the normal path (below WARN, written by at least 1 / min_fold of
  the reference calls of its operation) that the calls mostly stopped writing (`patterns`: lines
  bound to their calls by span id, counted per call, from the alert on against the reference), by
  the same binomial z with calls in place of lines: z <= -min_z and at most 1 / min_fold of the
  share of calls that wrote it before. Its weight is an error's: a code path that stops being
  reached while its operation is still called is how an exception thrown before a log statement, or
  a wrong value that sends the code down another branch, shows (Nezha's broken event patterns).

A finding's score is `level weight x (1 - exp(-|z| / z_scale))`, halved for decreases (a missing
line is weaker evidence than a new one). A service's or pod's anomaly score combines its three
strongest template findings as independent evidence, `1 - prod(1 - score)`: in [0, 1], one strong
finding is enough to approach 1 and a few weak ones add up. Level surges restate template findings,
so they only set a floor: the score is the larger of the combination and the strongest surge. A pod
absent from the reference is compared with its service's reference spread evenly over the
service's reference pods (a restarted pod has a new name).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import pandas as pd

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident
from flipmoe.toolkits.logs.mining import LogParser, LogParserConfig
from flipmoe.toolkits.logs.patterns import CallPattern, bound, call_patterns

ReferenceKind = Literal["baseline", "pre_alert", "none"]
FindingKind = Literal["new_template", "frequency_shift", "disappeared_template", "level_surge",
                      "error_template", "broken_pattern"]
Scope = Literal["service", "pod"]
_SCOPES: tuple[Scope, ...] = ("service", "pod")

COUNT_COLUMNS = ("window", "service", "pod", "template_id", "template", "level", "count")

# How much a finding at this level can weigh: errors are what incidents are made of.
_LEVEL_WEIGHT = {"FATAL": 1.0, "ERROR": 1.0, "WARN": 0.6, "UNKNOWN": 0.4, "INFO": 0.3, "DEBUG": 0.2,
                 "TRACE": 0.2}
_SERIOUS_LEVELS = ("ERROR", "FATAL", "WARN")
_SURGE_GROUPS = {"ERROR": ("ERROR", "FATAL"), "WARN": ("WARN",)}
_DECREASE_WEIGHT = 0.5
_BREAK_WEIGHT = _LEVEL_WEIGHT["ERROR"]  # a broken per-call pattern weighs like an error (module docstring)
_PSEUDO_COUNT = 0.5
# Only a name's strongest few findings count: a busy service with many small shifts should not
# outrank a quiet one with a single new error.
_STRONGEST = 3


@dataclass(frozen=True, kw_only=True)
class LogToolkitConfig:
    """Settings of the incident log analysis."""

    parser: LogParserConfig = field(default_factory=LogParserConfig)
    """Template mining."""
    bucket: str = "1min"
    """Width of the time buckets of `template_counts`, as a pandas frequency ('30s', '5min')."""
    min_z: float = 3.0
    """Shifts, disappearances and surges are reported from this |z| on."""
    min_fold: float = 2.0
    """...and shifts and surges only when the rate changed at least this many times."""
    z_scale: float = 5.0
    """|z| at which a finding's strength reaches 1 - 1/e (about 0.63)."""
    max_example_chars: int = 300
    """Example lines in evidence are cut to this length."""

    def __post_init__(self) -> None:
        try:
            pd.tseries.frequencies.to_offset(self.bucket)
        except ValueError:
            raise FlipmoeInputError(f"bucket {self.bucket!r} is not a pandas frequency",
                                    hint="use e.g. '30s', '1min', '5min'") from None
        if self.min_z <= 0 or self.z_scale <= 0:
            raise FlipmoeInputError("min_z and z_scale must be positive")
        if self.min_fold < 1:
            raise FlipmoeInputError(f"min_fold must be at least 1, got {self.min_fold}")
        if self.max_example_chars < 16:
            raise FlipmoeInputError(f"max_example_chars must be at least 16, got {self.max_example_chars}")


@dataclass(frozen=True, kw_only=True)
class LogEvidence:
    """What a finding rests on."""

    template_id: int | None
    """The template, or None for a level surge (all lines of a level)."""
    template: str
    """Template text with `<*>` for variables; for a level surge, e.g. 'ERROR lines'."""
    count_before: float
    """Lines in the reference; for a pod absent from it, its service's count per reference pod."""
    count_during: int
    """Lines in the compared part of the window."""
    rate_before: float
    """Lines per minute in the reference."""
    rate_during: float
    """Lines per minute in the compared part of the window."""
    example: str
    """One such line (from the window; from the reference for a disappeared template)."""
    pods: Mapping[str, int] = field(default_factory=dict)
    """Lines per pod on the side the example comes from."""
    operation: str | None = None
    """For a broken pattern, the operation whose calls wrote the template; `count_*` then count calls
    that wrote it (of `calls_*` calls), and `rate_*` are those shares."""
    calls_before: int | None = None
    calls_during: int | None = None


@dataclass(frozen=True, kw_only=True)
class LogFinding:
    """One change in the logs of a service (pod None) or of one of its pods."""

    kind: FindingKind
    service: str
    pod: str | None
    level: str
    """Most frequent level of the template's lines; for a level surge, the level that surged."""
    score: float
    """In [0, 1]: level weight x strength of the change (module docstring)."""
    z: float
    fold: float
    """Rate during / rate before, each with half a line added; NaN without a reference."""
    start: pd.Timestamp | None
    """First line of the change in the window; None for a disappeared template."""
    evidence: LogEvidence

    def describe(self) -> str:
        where = f"{self.service}/{self.pod}" if self.pod else self.service
        evidence = self.evidence
        if evidence.operation is not None:
            return (f"{self.kind} [{self.level}] {where}: {evidence.template} (written in {evidence.count_before:g} "
                    f"of {evidence.calls_before} calls of {evidence.operation} before, {evidence.count_during} of "
                    f"{evidence.calls_during} now, z={self.z:.1f})")
        counts = f"{evidence.count_before:g} -> {evidence.count_during} lines"
        return f"{self.kind} [{self.level}] {where}: {evidence.template} ({counts}, z={self.z:.1f})"


@dataclass(frozen=True, kw_only=True)
class LogReport:
    """Result of `analyse_logs`."""

    reference: ReferenceKind
    """What served as normal: the baseline, the window before the alert, or nothing."""
    notes: tuple[str, ...]
    """What was compared with what, and what could not be used and why."""
    minutes_before: float = 0.0
    minutes_during: float = 0.0
    lines_before: int = 0
    lines_during: int = 0
    templates: Mapping[int, str] = field(default_factory=dict)
    """Template id -> text, for every template mined from both sides."""
    findings: tuple[LogFinding, ...] = ()
    """Service findings (pod None) and pod findings, highest score first."""
    service_scores: Mapping[str, float] = field(default_factory=dict)
    """Anomaly score in [0, 1] of every service with lines on either side."""
    pod_scores: Mapping[str, float] = field(default_factory=dict)
    """Anomaly score in [0, 1] of every pod with lines in the window."""


class _Lines:
    """One side's lines, with the columns that are counted and matched as lists (missing: None).

    Counting and selecting on these is what the comparison does over and over; it is much cheaper
    than pandas group-bys and merges on a few thousand lines.
    """

    def __init__(self, frame: pd.DataFrame, columns: tuple[list, ...] | None = None) -> None:
        self.frame = frame
        self.service, self.pod, self.level, self.template = columns or (
            _values(frame["service"]), _values(frame["pod"]), _values(frame["level"]),
            [int(template_id) for template_id in frame["template_id"]])
        self._keys: dict[tuple[Scope, bool], list[tuple | None]] = {}
        self._counts: dict[tuple[Scope, bool], Counter[tuple]] = {}
        self._positions: dict[tuple[Scope, bool], dict[tuple, list[int]]] = {}

    def with_levels(self, levels: Sequence[str]) -> _Lines:
        """The lines at one of `levels`."""
        positions = [position for position, level in enumerate(self.level) if level in levels]
        columns = tuple([column[position] for position in positions]
                        for column in (self.service, self.pod, self.level, self.template))
        return _Lines(self.frame.iloc[positions], columns)

    def keys(self, scope: Scope, *, by_template: bool) -> list[tuple | None]:
        """Each line's key: (service[, pod][, template id]); None when a part is missing."""
        keys = self._keys.get((scope, by_template))
        if keys is not None:
            return keys
        if scope == "service":
            keys = [None if service is None else (service,) for service in self.service]
        else:
            keys = [None if service is None or pod is None else (service, pod)
                    for service, pod in zip(self.service, self.pod, strict=True)]
        if by_template:
            keys = [None if key is None else (*key, template)
                    for key, template in zip(keys, self.template, strict=True)]
        self._keys[(scope, by_template)] = keys
        return keys

    def count(self, scope: Scope, *, by_template: bool) -> Counter[tuple]:
        """Lines per key, keys in order of first appearance."""
        counts = self._counts.get((scope, by_template))
        if counts is None:
            counts = Counter(key for key in self.keys(scope, by_template=by_template) if key is not None)
            self._counts[(scope, by_template)] = counts
        return counts

    def select(self, scope: Scope, group: Sequence[str], template_id: int | None = None) -> pd.DataFrame:
        """The lines of `group` (service or service and pod), of one template if given."""
        by_template = template_id is not None
        positions = self._positions.get((scope, by_template))
        if positions is None:
            positions = {}
            for position, key in enumerate(self.keys(scope, by_template=by_template)):
                if key is not None:
                    positions.setdefault(key, []).append(position)
            self._positions[(scope, by_template)] = positions
        key = (*group, template_id) if by_template else tuple(group)
        return self.frame.iloc[positions.get(key, [])]


def _values(column: pd.Series) -> list:
    return [None if missing else value for value, missing in zip(column.tolist(), column.isna().tolist(),
                                                                 strict=True)]


@dataclass(frozen=True)
class _Split:
    reference: ReferenceKind
    before: pd.DataFrame
    during: pd.DataFrame
    minutes_before: float
    minutes_during: float
    note: str
    levels: Mapping[int, str] = field(default_factory=dict)
    """Template id -> its most frequent level."""
    before_lines: _Lines | None = None
    during_lines: _Lines | None = None

    @property
    def sides(self) -> tuple[_Lines, _Lines]:
        assert self.before_lines is not None and self.during_lines is not None
        return self.before_lines, self.during_lines


@dataclass(frozen=True)
class _Change:
    """Counts of one key before and during, with the z-score and fold change of its share."""

    before: float
    during: float
    z: float
    fold: float

    @classmethod
    def of(cls, b: float, d: float, group_before: float, group_during: float, split: _Split) -> _Change:
        """From a key's counts `b`, `d` and its group's totals `B`, `D` (`group_before`, `group_during`)."""
        b, d = float(b), float(d)
        # Share of the group's lines when the group logged on both sides, else lines per minute.
        scale_before, scale_during = (group_before, group_during) if group_before > 0 and group_during > 0 \
            else (split.minutes_before, split.minutes_during)
        total, p = b + d, scale_during / (scale_before + scale_during)
        z = (d - total * p) / math.sqrt(total * p * (1 - p)) if total else 0.0
        fold = ((d + _PSEUDO_COUNT) / scale_during) / ((b + _PSEUDO_COUNT) / scale_before)
        return cls(before=b, during=d, z=z, fold=fold)


def with_templates(logs: pd.DataFrame, parser: LogParser) -> pd.DataFrame:
    """`logs` with `template_id` and `template` columns, mined by `parser` (which learns from them).

    The columns hold each line's event (`LogParser.event`): lines that differ only in a word of a
    field's few values (`TrainType: ZhiDa` / `TrainType: GaoTie`) count as one kind of line."""
    parsed = parser.parse(logs["message"].fillna("").astype(str).tolist())
    events = {line.template_id: parser.event(line.template_id) or line for line in set(parsed)}
    out = logs.copy()
    out["template_id"] = [events[line.template_id].template_id for line in parsed]
    out["template"] = [events[line.template_id].template for line in parsed]
    return out


def template_counts(incident: Incident, *, config: LogToolkitConfig | None = None,
                    parser: LogParser | None = None) -> pd.DataFrame:
    """Lines per time bucket, service, pod, template and level in the incident window.

    Columns `COUNT_COLUMNS`; `window` is the bucket's start. Empty (with those columns) when the
    window has no logs. Pass a `parser` to share template ids with another analysis.
    """
    config = config or LogToolkitConfig()
    logs = incident.in_window().logs
    if logs is None:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in COUNT_COLUMNS})
    labelled = with_templates(logs, parser or LogParser(config=config.parser))
    labelled["window"] = labelled["timestamp"].dt.floor(config.bucket)
    keys = list(COUNT_COLUMNS[:-1])
    return labelled.groupby(keys, dropna=False, sort=True).size().rename("count").reset_index()


def analyse_logs(incident: Incident, *, config: LogToolkitConfig | None = None) -> LogReport:
    """Templates that are new, shifted, gone or surging in the incident, and anomaly scores per
    service and pod.

    Never raises on missing data: no logs gives an empty report, no reference a degraded one, and
    `notes` says which.
    """
    config = config or LogToolkitConfig()
    if incident.logs is None:
        return LogReport(reference="none", notes=("the incident has no logs: nothing to analyse",))
    window_logs = incident.in_window().logs
    if window_logs is None:
        return LogReport(reference="none", notes=(f"none of the incident's {len(incident.logs)} log lines "
                                                  "is inside its window: nothing to analyse",))
    split = _split(incident, window_logs)
    parser = LogParser(config=config.parser)
    labelled = with_templates(pd.concat([split.before, split.during], ignore_index=True), parser)
    cut = len(split.before)
    before, during = labelled.iloc[:cut], labelled.iloc[cut:]
    split = replace(split, before=before, during=during, before_lines=_Lines(before),
                    during_lines=_Lines(during), levels=_template_levels(labelled))
    findings = []
    for scope in _SCOPES:
        if split.reference == "none":
            findings += _error_templates(split, scope, config)
        else:
            totals = _totals(split, scope)
            findings += _template_changes(split, scope, config, totals) + _level_surges(split, scope, config, totals)
    notes = [split.note]
    if split.reference != "none":
        breaks, note = _broken_patterns(incident, split, config)
        findings += breaks
        notes.append(note)
    findings.sort(key=lambda f: (-f.score, f.service, f.pod or "", f.kind))
    before, during = split.before, split.during
    services = sorted(set(before["service"].dropna()) | set(during["service"].dropna()))
    return LogReport(
        reference=split.reference, notes=tuple(notes), minutes_before=round(split.minutes_before, 3),
        minutes_during=round(split.minutes_during, 3), lines_before=len(before), lines_during=len(during),
        templates=parser.templates, findings=tuple(findings),
        service_scores=_combine(findings, services, scope="service"),
        pod_scores=_combine(findings, sorted(set(during["pod"].dropna())), scope="pod"))


def _split(incident: Incident, window_logs: pd.DataFrame) -> _Split:
    """Choose the reference and cut the lines into before and during."""
    window, alert = incident.meta.window, incident.meta.alert_time
    baseline = incident.baseline.logs if incident.baseline is not None else None
    window_minutes = _minutes(window.duration)
    if baseline is not None:
        # A baseline of one instant still stands for some time: at least a minute.
        minutes = max(_minutes(baseline["timestamp"].max() - baseline["timestamp"].min()), 1.0)
        return _Split("baseline", baseline, window_logs, minutes, window_minutes,
                      f"compared the incident window with the baseline ({len(baseline)} lines, "
                      f"{minutes:.1f} min)")
    degraded = "templates could not be compared; the findings are the window's ERROR/FATAL/WARN templates"
    if alert is None:
        return _Split("none", window_logs.iloc[:0], window_logs, 0.0, window_minutes,
                      f"no baseline and no alert time: {degraded}")
    before = window_logs[window_logs["timestamp"] < alert]
    if before.empty:
        return _Split("none", before, window_logs, 0.0, window_minutes,
                      f"no baseline and no log line before the alert: {degraded}")
    minutes_before, minutes_during = _minutes(alert - window.start), _minutes(window.end - alert)
    during = window_logs[window_logs["timestamp"] >= alert]
    return _Split("pre_alert", before, during, minutes_before, minutes_during,
                  f"no baseline: compared the {minutes_during:.1f} min from the alert on with the "
                  f"{minutes_before:.1f} min of the window before it ({len(before)} lines)")


def _minutes(delta: pd.Timedelta) -> float:
    return max(delta / pd.Timedelta(minutes=1), 1e-3)


def _broken_patterns(incident: Incident, split: _Split, config: LogToolkitConfig) -> tuple[list[LogFinding], str]:
    """Templates of the normal path that the calls of an operation stopped writing (`broken_pattern`)."""
    alert = incident.meta.alert_time
    window_spans = incident.in_window().spans
    during, spans = split.during, window_spans
    if alert is not None and spans is not None:
        # A share of calls is diluted by the calls made before the fault: compare from the alert on.
        during, spans = during[during["timestamp"] >= alert], spans[spans["start"] >= alert]
    if split.reference == "baseline":
        reference_spans = incident.baseline.spans if incident.baseline is not None else None
    else:
        reference_spans = window_spans[window_spans["start"] < alert] if window_spans is not None else None
    if not (bound(split.before, reference_spans) and bound(during, spans)):
        return [], "log lines carry no span ids that match spans on both sides: no per-call patterns"
    assert reference_spans is not None and spans is not None
    normal_path = {template for template, level in split.levels.items() if level not in _SERIOUS_LEVELS}
    findings = []
    for pattern in call_patterns(split.before, reference_spans, during, spans):
        if pattern.template_id not in normal_path:
            continue
        change = _Change.of(pattern.with_before, pattern.with_during, pattern.calls_before,
                            pattern.calls_during, split)
        # Only a line of the normal path: one that at least 1 / min_fold of the calls wrote before. A line
        # that few calls write depends on their input (a payload of one length, a rare branch), and a
        # change of the request mix alone makes it vanish.
        regular = pattern.with_before >= pattern.calls_before / config.min_fold
        if regular and change.z <= -config.min_z and change.fold <= 1 / config.min_fold:
            findings.append(_break_finding(pattern, change, split, config))
    return findings, (f"per-call patterns: {len(findings)} broken (log lines bound to calls by span id, from the "
                      f"alert on, against the {split.reference.replace('_', '-')} calls)")


def _break_finding(pattern: CallPattern, change: _Change, split: _Split, config: LogToolkitConfig) -> LogFinding:
    lines = split.sides[0].select("service", (pattern.service,), template_id=pattern.template_id)
    level = split.levels.get(pattern.template_id, "UNKNOWN")
    strength = 1.0 - math.exp(-abs(change.z) / config.z_scale)
    evidence = LogEvidence(
        template_id=pattern.template_id, template=str(lines["template"].iloc[0]) if not lines.empty else "",
        count_before=pattern.with_before, count_during=pattern.with_during,
        rate_before=round(pattern.with_before / pattern.calls_before, 4),
        rate_during=round(pattern.with_during / pattern.calls_during, 4),
        example=str(lines["message"].iloc[0])[: config.max_example_chars] if not lines.empty else "",
        operation=pattern.operation, calls_before=pattern.calls_before, calls_during=pattern.calls_during)
    return LogFinding(kind="broken_pattern", service=pattern.service, pod=pattern.pod, level=level,
                      score=round(_BREAK_WEIGHT * strength, 4), z=round(change.z, 3), fold=round(change.fold, 3),
                      start=None, evidence=evidence)


def _template_changes(split: _Split, scope: Scope, config: LogToolkitConfig,
                      totals: Mapping[tuple, tuple[float, int]]) -> list[LogFinding]:
    findings = []
    before, during = split.sides
    for key, b, d in _compared_counts(before, during, scope, by_template=True):
        *group, template_id = key
        change = _Change.of(b, d, *totals.get(tuple(group), (0, 0)), split)
        level = split.levels.get(template_id, "UNKNOWN")
        kind = _template_kind(change, level, config)
        if kind is None:
            continue
        source = during if change.during > 0 else before
        lines = source.select(scope, group, template_id=template_id)
        if lines.empty:  # a pod new since the reference, compared with its service's lines there
            lines = source.select("service", group[:1], template_id=template_id)
        findings.append(_finding(kind, group, level, change, split, template_id=template_id, lines=lines,
                                 config=config))
    return findings


def _template_kind(change: _Change, level: str, config: LogToolkitConfig) -> FindingKind | None:
    if change.before == 0:
        return "new_template" if level in _SERIOUS_LEVELS or change.z >= config.min_z else None
    if change.during == 0:
        return "disappeared_template" if change.z <= -config.min_z else None
    moved = change.fold >= config.min_fold or change.fold <= 1 / config.min_fold
    return "frequency_shift" if abs(change.z) >= config.min_z and moved else None


def _level_surges(split: _Split, scope: Scope, config: LogToolkitConfig,
                  totals: Mapping[tuple, tuple[float, int]]) -> list[LogFinding]:
    findings = []
    for label, levels in _SURGE_GROUPS.items():
        before, during = (side.with_levels(levels) for side in split.sides)
        for group, b, d in _compared_counts(before, during, scope, by_template=False):
            change = _Change.of(b, d, *totals.get(group, (0, 0)), split)
            if change.z >= config.min_z and change.fold >= config.min_fold:
                findings.append(_finding("level_surge", group, label, change, split, template_id=None,
                                         lines=during.select(scope, group), config=config))
    return findings


def _error_templates(split: _Split, scope: Scope, config: LogToolkitConfig) -> list[LogFinding]:
    serious = split.sides[1].with_levels(_SERIOUS_LEVELS)
    findings = []
    for (*group, template_id), count in serious.count(scope, by_template=True).items():
        change = _Change(before=0.0, during=float(count), z=math.sqrt(count), fold=math.nan)
        lines = serious.select(scope, group, template_id=template_id)
        findings.append(_finding("error_template", group, _main_level(lines), change, split,
                                 template_id=template_id, lines=lines, config=config))
    return findings


def _compared_counts(before: _Lines, during: _Lines, scope: Scope, *,
                     by_template: bool) -> list[tuple[tuple, float, int]]:
    """(key, count before `b`, count during `d`) for every key of either side, keys sorted.

    At pod scope only the window's pods are kept (the others count through their service), and a
    pod absent from the reference gets its service's reference count per reference pod.
    """
    reference: dict[tuple, float] = dict(before.count(scope, by_template=by_template))
    if scope == "pod":
        per_service = before.count("service", by_template=by_template)
        reference_pods: dict[str, set[str]] = {}
        for service, pod in zip(before.service, before.pod, strict=True):
            if service is not None and pod is not None:
                reference_pods.setdefault(service, set()).add(pod)
        window_pods = {(service, pod) for service, pod in zip(during.service, during.pod, strict=True)
                       if service is not None and pod is not None}
        window_pod_names = {pod for _, pod in window_pods}
        known_pods = {pod for pod in before.pod if pod is not None}
        reference = {key: count for key, count in reference.items() if key[1] in window_pod_names}
        for service, pod in window_pods:
            if pod in known_pods:
                continue
            share = max(len(reference_pods.get(service, ())), 1)
            for (group_service, *rest), count in per_service.items():
                if group_service == service:
                    reference[(service, pod, *rest)] = count / share
    counts = during.count(scope, by_template=by_template)
    return [(key, reference.get(key, 0.0), counts.get(key, 0)) for key in sorted(reference.keys() | counts.keys())]


def _totals(split: _Split, scope: Scope) -> dict[tuple, tuple[float, int]]:
    """Total lines before (`B`) and during (`D`) of each service or pod."""
    return {group: (b, d) for group, b, d in _compared_counts(*split.sides, scope, by_template=False)}


def _template_levels(lines: pd.DataFrame) -> dict[int, str]:
    # A template is one log statement, so in practice one level; ties go to the first seen.
    counts = Counter((int(template), level) for template, level in zip(lines["template_id"], _values(lines["level"]),
                                                                        strict=True) if level is not None)
    top: dict[int, tuple[int, str]] = {}
    for (template, level), n in counts.items():
        if template not in top or n > top[template][0]:
            top[template] = (n, str(level))
    return {template: level for template, (_, level) in top.items()}


def _main_level(lines: pd.DataFrame) -> str:
    return str(lines["level"].mode().iloc[0]) if not lines.empty else "UNKNOWN"


def _finding(kind: FindingKind, group: Sequence[str], level: str, change: _Change, split: _Split, *,
             template_id: int | None, lines: pd.DataFrame, config: LogToolkitConfig) -> LogFinding:
    strength = 1.0 - math.exp(-abs(change.z) / config.z_scale)
    decrease = kind == "disappeared_template" or (kind == "frequency_shift" and change.z < 0)
    weight = _LEVEL_WEIGHT.get(level, _LEVEL_WEIGHT["UNKNOWN"]) * (_DECREASE_WEIGHT if decrease else 1.0)
    evidence = LogEvidence(
        template_id=template_id,
        template=str(lines["template"].iloc[0]) if template_id is not None else f"{level} lines",
        count_before=round(change.before, 2), count_during=int(change.during),
        rate_before=round(change.before / split.minutes_before, 4) if split.minutes_before else 0.0,
        rate_during=round(change.during / split.minutes_during, 4),
        example=str(lines["message"].iloc[0])[: config.max_example_chars],
        pods={str(pod): int(n) for pod, n in lines["pod"].dropna().value_counts().items()})
    return LogFinding(kind=kind, service=str(group[0]), pod=str(group[1]) if len(group) > 1 else None,
                      level=level, score=round(weight * strength, 4), z=round(change.z, 3),
                      fold=round(change.fold, 3),
                      start=None if kind == "disappeared_template" else lines["timestamp"].min(),
                      evidence=evidence)


def _combine(findings: Sequence[LogFinding], names: Sequence[str], *, scope: Scope) -> dict[str, float]:
    """Noisy-OR of each name's strongest template findings at this scope; a level surge restates
    template findings already counted, so it enters as a floor (max), not as one more factor."""
    scores: dict[str, list[float]] = {name: [] for name in names}
    surge = dict.fromkeys(names, 0.0)
    for finding in findings:
        name = finding.pod if scope == "pod" else (finding.service if finding.pod is None else None)
        if name not in scores:
            continue
        if finding.kind == "level_surge":
            surge[name] = max(surge[name], finding.score)
        else:
            scores[name].append(finding.score)
    combined = {}
    for name in names:
        left = math.prod(1.0 - score for score in sorted(scores[name], reverse=True)[:_STRONGEST])
        combined[name] = round(max(1.0 - left, surge[name]), 4)
    return combined
