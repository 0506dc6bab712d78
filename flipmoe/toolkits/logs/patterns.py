"""Log lines bound to the calls that write them: how often each call of an operation writes a template.

Nezha (Yu et al., FSE 2023) finds code faults by the *event patterns* that a fault breaks: a log
statement that every call of `PriceController.query` reached in fault-free operation and that stops
being reached when an exception is thrown before it, or when a wrong return value sends the code down
another branch. Counted per call, such a line does not move with load or with the request mix the way
its share of a service's lines does, so a break stands out where a plain template count drowns in noise.

A log line is bound to a call through its `span_id` (OpenTelemetry log/trace correlation); the call's
operation and service come from the span. For one side (reference or compared) this module counts, per
(service[, pod], operation): the calls, and for each template the calls that wrote it at least once
(presence, not lines: a statement in a loop writes a number of lines that depends on the payload, but
whether the loop ran at all does not). `compare.analyse_logs` tests those counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

_CALL_COLUMNS = ("span_id", "service", "pod", "operation")


@dataclass(frozen=True)
class CallPattern:
    """How many calls of one operation wrote one template, on each side."""

    service: str
    pod: str | None
    """None at service scope."""
    operation: str
    template_id: int
    calls_before: int
    """Calls of the operation in the reference (of the whole service, also at pod scope)."""
    calls_during: int
    with_before: int
    """Of those, the calls that wrote the template at least once."""
    with_during: int


def bound(logs: pd.DataFrame | None, spans: pd.DataFrame | None) -> bool:
    """Whether log lines can be bound to calls: both tables exist and the logs carry span ids."""
    return (logs is not None and spans is not None and "span_id" in logs.columns
            and all(column in spans.columns for column in _CALL_COLUMNS) and bool(logs["span_id"].notna().any()))


def call_patterns(before_logs: pd.DataFrame, before_spans: pd.DataFrame, during_logs: pd.DataFrame,
                  during_spans: pd.DataFrame) -> list[CallPattern]:
    """Per (service, operation, template), and per pod too: calls and calls that wrote it, on both sides.

    Logs need `span_id`, `service` and `template_id`; spans `span_id`, `service`, `pod`, `operation`.
    Only templates written in the reference by an operation that is still called are returned (a
    template that appears only during the incident is a new template, found elsewhere). At pod scope
    a pod's calls during the incident are compared with its service's calls in the reference, since
    pods are renamed when they restart.
    """
    calls_before, with_before = _side(before_logs, before_spans, by_pod=False)
    patterns = []
    for by_pod in (False, True):
        calls_during, with_during = _side(during_logs, during_spans, by_pod=by_pod)
        for (service, operation, template_id), written_before in with_before.items():
            for pod, calls in calls_during.get((service, operation), {}).items():
                written = with_during.get((service, operation, template_id, pod) if by_pod
                                          else (service, operation, template_id), 0)
                patterns.append(CallPattern(
                    service=service, pod=pod, operation=operation, template_id=template_id,
                    calls_before=calls_before[(service, operation)][None], calls_during=calls,
                    with_before=written_before, with_during=written))
    return patterns


def _side(logs: pd.DataFrame, spans: pd.DataFrame, *, by_pod: bool
          ) -> tuple[dict[tuple[str, str], dict[str | None, int]], dict[tuple, int]]:
    """Calls per (service, operation) and pod (None at service scope), and calls that wrote each template:
    keys (service, operation, template_id[, pod])."""
    usable = spans["span_id"].notna() & spans["service"].notna() & spans["operation"].notna()
    if by_pod:
        usable &= spans["pod"].notna()
    calls = spans.loc[usable, list(_CALL_COLUMNS)].drop_duplicates("span_id")
    if not by_pod:
        calls = calls.assign(pod="")
    per_call: dict[tuple[str, str], dict[str | None, int]] = {}
    counted = calls.groupby(["service", "operation", "pod"], sort=False, observed=True).size()
    for (service, operation, pod), n in zip(counted.index.tolist(), counted.tolist(), strict=True):
        per_call.setdefault((str(service), str(operation)), {})[str(pod) if by_pod else None] = int(n)
    lines = logs.loc[logs["span_id"].notna(), ["span_id", "service", "template_id"]]
    # A line belongs to a call of its own service (span ids are unique: cheap insurance); a call counts once
    # per template however many of its lines it wrote.
    joined = lines.merge(calls, on=["span_id", "service"], how="inner").drop_duplicates(["span_id", "template_id"])
    written = joined.groupby(["service", "operation", "template_id", "pod"], sort=False, observed=True).size()
    with_template: dict[tuple, int] = {}
    for (service, operation, template_id, pod), n in zip(written.index.tolist(), written.tolist(), strict=True):
        key = (str(service), str(operation), int(template_id))
        with_template[(*key, str(pod)) if by_pod else key] = int(n)
    return per_call, with_template
