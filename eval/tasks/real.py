"""Tasks whose references are independent labels of real data sets (`ground_truth="real"`).

No baseline here computes its references: the labels come from the data sets' own annotators and
fault injectors, and the rule reads the same input as the models.

- `log_level_loghub`: a LogHub message (held-out hash split, the header cut off) -> the level its
  system logged it at (LogHub's `Level` column), balanced over levels. Macro-F1. Rule: severity
  keywords (`experts.logs.tasks.level_baseline`).
- `tvdiag_root_cause`: the alerts of a TVDiag case (GAIA, SockShop, HotelReservation), per instance
  -> services ranked as the root cause; the reference is the case label's service. A@1 (A@3, A@5,
  MRR). Rule: services ranked by how many alerts their instances raised.
- `tvdiag_fault_type`: the same input -> the labelled fault type, mapped into flipmoe's taxonomy.
  Macro-F1. Rule: the KPIs and alert kinds of the instance with the most alerts.
- `trainticket_root_cause`: the evidence digest of a Nezha TrainTicket fault (the same digest the
  chaos incident tasks use, from its raw telemetry) -> services ranked. Rule: the digest ranking.
- `trainticket_summary`: the same digest -> an RCA summary; the three references are written from the
  label alone (service and pod, fault type, Nezha's fine-grained cause, onset). Normalised ROUGE-2 with
  the hallucination gate. Rule: the digest template.

The TVDiag input lists instances alphabetically (not by alert count, which would hand every model the
rule's ranking); a nano expert's 128-token context sees its start only, like any long input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from eval.tasks._core import EvalItem, EvalTask, macro_f1_scorer, ranking_scorer, summary_scorer
from eval.tasks._data import EvalData
from eval.tasks.incidents import (
    _digest_of,
    _rank_rule,
    _summary_rule,
    digest_ranking,
    digest_summary_rule,
    label_summaries,
)
from experts.sources import balanced, digest
from flipmoe.telemetry import Incident
from flipmoe.telemetry.label import Label

LOGHUB = "LogHub structured CSVs (--loghub, or <data>/loghub)"
TVDIAG = "a TVDiag release (--tvdiag, or <data>/tvdiag)"
NEZHA = "the Nezha TrainTicket data set (--nezha, or <data>/nezha-trainticket)"


def real_tasks() -> list[EvalTask]:
    tvdiag_input = "a TVDiag case's alerts per instance (metric KPIs up/down, log template count, trace anomalies)"
    digest_input = "evidence digest of a TrainTicket fault: alert, top metric changes, log/trace changes"
    return [
        EvalTask(name="log_level_loghub", category="log_understanding", source="loghub", ground_truth="real",
                 description="LogHub message -> the level its system logged it at (LogHub's Level column)",
                 input_format="one LogHub message without its header", metric="macro_f1", build=_level_items,
                 rule=_level_rule, score=macro_f1_scorer(), max_new_tokens=4, size=200, requires=LOGHUB),
        EvalTask(name="tvdiag_root_cause", category="localisation", source="tvdiag", ground_truth="real",
                 description="alerts of a labelled TVDiag case -> services ranked as root cause, comma-separated",
                 input_format=tvdiag_input, metric="A@1 (A@3, A@5, MRR)", build=_tvdiag_builder("service"),
                 rule=_tvdiag_rank_rule, score=ranking_scorer(), max_new_tokens=48, size=200, requires=TVDIAG),
        EvalTask(name="tvdiag_fault_type", category="diagnosis", source="tvdiag", ground_truth="real",
                 description="alerts of a labelled TVDiag case -> fault type (flipmoe taxonomy)",
                 input_format=tvdiag_input, metric="macro_f1", build=_tvdiag_builder("fault_type"),
                 rule=_tvdiag_fault_rule, score=macro_f1_scorer(), max_new_tokens=8, size=200, requires=TVDIAG),
        EvalTask(name="trainticket_root_cause", category="localisation", source="nezha", ground_truth="real",
                 description="evidence of a labelled TrainTicket fault -> services ranked as root cause",
                 input_format=digest_input, metric="A@1 (A@3, A@5, MRR)", build=_trainticket_builder(False),
                 rule=_digest_rank, toolkit=_rank_rule("service"), score=ranking_scorer(), max_new_tokens=48,
                 size=28, requires=NEZHA, notes="28 faults: all the data set has"),
        EvalTask(name="trainticket_summary", category="log_metric_summarisation", source="nezha", ground_truth="real",
                 description="evidence of a labelled TrainTicket fault -> RCA summary (references from the label)",
                 input_format=digest_input, metric="normalised_rouge2+gate", build=_trainticket_builder(True),
                 rule=digest_summary_rule, toolkit=_summary_rule, score=summary_scorer(), max_new_tokens=96,
                 size=28, requires=NEZHA, notes="3 references per item, from the label alone"),
    ]


# --- LogHub levels --------------------------------------------------------------------------------


def _level_items(data: EvalData) -> list[EvalItem]:
    from experts.logs.tasks import LEVELS, normalise_level

    lines = data.loghub[data.loghub["level"] != ""]
    items = [EvalItem(id=f"lvl-{digest(system, content)[:10]}", input=content, references=(normalise_level(level),),
                      meta={"source": f"loghub:{system}", "split": "heldout", "level": level})
             for system, content, level in zip(lines["system"], lines["content"], lines["level"], strict=True)
             if normalise_level(level) in LEVELS]
    return balanced(items, lambda item: item.references[0], data.config.max_items)


def _level_rule(items: Sequence[EvalItem]) -> list[str]:
    from experts.logs.tasks import level_baseline

    return level_baseline([item.input for item in items])


# --- TVDiag ---------------------------------------------------------------------------------------


def alerts_text(incident: Incident) -> str:
    """A case's alerts as the models and the rule read them: one line per instance (hosts marked), the
    counts of its metric, log and trace alerts with the KPIs, in alphabetical order."""
    events = incident.telemetry.events
    assert events is not None  # a TVDiag case is its alerts
    lines = [f"system: {incident.meta.id.rsplit('-', 1)[0]}", "alerts per instance:"]
    where = pd.Series([p if isinstance(p, str) and p else str(n) for p, n in zip(events["pod"], events["node"],
                                                                                strict=True)], index=events.index)
    for name in sorted(set(where)):
        rows = events[where == name]
        metric = rows[rows["kind"] == "metric"]
        trace = rows[rows["kind"] == "trace"]
        parts = []
        if len(metric):
            kpis = ", ".join(f"{r} {m}" for r, m in sorted(set(zip(metric["reason"], metric["message"], strict=True))))
            parts.append(f"{len(metric)} metric ({kpis})")
        if (logs := int((rows["kind"] == "log").sum())):
            parts.append(f"{logs} log")
        if len(trace):
            statuses = trace["message"].astype(str).str.split(" ", n=1).str[0].value_counts().sort_index()
            parts.append(f"{len(trace)} trace ({', '.join(f'{s} {n}' for s, n in statuses.items())})")
        host = "" if any(isinstance(p, str) and p for p in rows["pod"]) else "host "
        lines.append(f"{host}{name}: " + "; ".join(parts))
    return "\n".join(lines)


def _tvdiag_builder(target: str):  # type: ignore[no-untyped-def]
    def build(data: EvalData) -> list[EvalItem]:
        items = [_tvdiag_item(case_id, incident, label, target) for case_id, incident, label in data.tvdiag]
        return balanced(items, lambda item: str(item.meta["system"]), data.config.max_items)
    return build


def _tvdiag_item(case_id: str, incident: Incident, label: Label, target: str) -> EvalItem:
    return EvalItem(id=f"tvdiag-{case_id}", input=alerts_text(incident), references=(str(getattr(label, target)),),
                    meta={"source": f"tvdiag:{case_id}", "system": label.extra.get("system", ""),
                          "original_type": label.original_type or ""})


_ALERT_LINE = re.compile(r"^(host )?(\S+): (.*)$", re.MULTILINE)
_COUNT = re.compile(r"(\d+) (metric|log|trace)")


def _alert_counts(text: str) -> list[tuple[str, int, str]]:
    """(instance, alerts, the rest of its line) for every instance line of `alerts_text`, hosts left out."""
    out = []
    for host, name, rest in _ALERT_LINE.findall(text.split("alerts per instance:", 1)[-1].strip()):
        if not host:
            out.append((name, sum(int(n) for n, _ in _COUNT.findall(rest)), rest))
    return out


def _service(instance: str) -> str:
    from flipmoe.importers.tvdiag import service_of

    return service_of(instance)


def _tvdiag_rank_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        totals: dict[str, int] = {}
        for instance, count, _ in _alert_counts(item.input):
            totals[_service(instance)] = totals.get(_service(instance), 0) + count
        answers.append(", ".join(sorted(totals, key=lambda s: (-totals[s], s))[:10]))
    return answers


_KPI_RULES = (
    ("memory_leak", re.compile(r"mem", re.IGNORECASE)),
    ("cpu_hog", re.compile(r"cpu", re.IGNORECASE)),
    ("disk_io", re.compile(r"fs_|disk|io_", re.IGNORECASE)),
    ("packet_loss", re.compile(r"loss|drop|retrans", re.IGNORECASE)),
    ("network_delay", re.compile(r"net|tcp|trans|receive", re.IGNORECASE)),
)


def _tvdiag_fault_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        counts = sorted(_alert_counts(item.input), key=lambda c: (-c[1], c[0]))
        rest = counts[0][2] if counts else ""
        kpis = rest.split(" metric (", 1)[1].split(")", 1)[0] if " metric (" in rest else ""
        fault = next((f for f, rule in _KPI_RULES if rule.search(kpis)), "")
        if not fault:
            fault = ("pod_crash_loop" if re.search(r"trace \([^)]*\b[45]\d\d\b", rest)
                     else "code_exception" if " log" in rest else "network_delay")
        answers.append(fault)
    return answers


# --- TrainTicket ----------------------------------------------------------------------------------


def _trainticket_builder(summary: bool):  # type: ignore[no-untyped-def]
    def build(data: EvalData) -> list[EvalItem]:
        items = []
        for sample in data.trainticket:
            references = label_summaries(sample.label) if summary else (sample.label.service,)
            items.append(EvalItem(id=f"tt-{sample.seed}", input=_digest_of(sample),
                                  references=references, payload=sample,
                                  meta={"source": f"nezha:{sample.seed}", "fault": sample.label.original_type or ""}))
        return items[: data.config.max_items]
    return build


def _digest_rank(items: Sequence[EvalItem]) -> list[str]:
    return [", ".join(digest_ranking(item.input, "service")[:10]) for item in items]
