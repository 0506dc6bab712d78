"""Actors that write: the summary (template, or FlipMoE behind the guardrails), queries, the report draft."""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from typing import Any

from pydantic import Field

from director.actors.analysis import DiagnoseOutput, VerifyOutput
from director.actors.base import ActorContext, ActorInput, ActorOutput, Trials, actor
from director.actors.schemas import EventsOutput, LocalizeOutput, LogsOutput, MetricsOutput, TracesOutput
from director.report import Finding, Gap, RootCause
from flipmoe.toolkits.untrusted import is_suspicious, neutralise

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ summary


class SummariseInput(ActorInput):
    rank: LocalizeOutput | None = None
    trials: Trials[RootCause] | None = None
    diagnosis: DiagnoseOutput | None = None
    logs: LogsOutput | None = None
    use_model: bool = Field(default=True, description="let FlipMoE add a sentence when a bundle is set")


class SummaryOutput(ActorOutput):
    text: str
    reasoning: list[str] = Field(default_factory=list)
    source: str = "template"
    """'template', or 'flipmoe:<expert>' when a model sentence passed the guardrails."""

    def brief(self) -> str:
        return f"{self.source}: {self.text[:80]}"


@actor("summarise", SummariseInput, SummaryOutput,
       "a summary of the conclusion and the reasoning behind it (template; FlipMoE adds to it when available)")
def summarise(ctx: ActorContext, args: SummariseInput) -> SummaryOutput:
    suspects = args.rank.suspects if args.rank is not None else []
    top = _best(args.trials, suspects)
    if top is None:
        return SummaryOutput(text="No root cause could be ranked: no anomaly was found in the telemetry.",
                             reasoning=["no modality produced a signal"])
    reasoning = _reasoning(top, args.trials, args.diagnosis, suspects)
    text = _template_summary(top, args.diagnosis, args.trials)
    gaps: list[Gap] = []
    decisions: list[tuple[str, str]] = []
    source = "template"
    if args.use_model and ctx.settings.bundle is not None and args.logs is not None and args.logs.report is not None:
        sentence, source, guardrail, failure = _model_sentence(ctx, top, args.logs)
        if sentence:
            text = f"{text} {sentence}"
        if guardrail:
            decisions.append(("guardrail", guardrail))
        if failure:
            gaps.append(Gap(what="model summary", reason=failure))
    return SummaryOutput(text=text, reasoning=reasoning, source=source, gaps=gaps, decisions=decisions)


def _best(trials: Trials[RootCause] | None, suspects: list[RootCause]) -> RootCause | None:
    if trials is not None and trials.accepted is not None:
        return trials.accepted
    return suspects[0] if suspects else None


def _template_summary(top: RootCause, diagnosis: DiagnoseOutput | None, trials: Trials[RootCause] | None) -> str:
    where = top.service + (f" (pod {top.pod}" + (f" on node {top.node}" if top.node else "") + ")" if top.pod else "")
    text = f"The most likely root cause is {where}"
    if diagnosis is not None and diagnosis.fault_type and diagnosis.service == top.service:
        text += f", a {diagnosis.fault_type.replace('_', ' ')} fault (confidence {diagnosis.confidence:.2f})"
    text += "."
    if top.evidence:
        text += f" Strongest evidence: {top.evidence[0].summary.rstrip('.')}."
    if trials is not None and trials.rejected:
        text += (f" Rejected for lack of supporting evidence: "
                 f"{', '.join(s.label for s in trials.rejected)}.")
    return text


def _reasoning(top: RootCause, trials: Trials[RootCause] | None, diagnosis: DiagnoseOutput | None,
               suspects: list[RootCause]) -> list[str]:
    lines = [f"{s.label}: score {s.score:.2f} from {', '.join(sorted(s.modality_scores)) or 'the call graph'}"
             for s in suspects[:3]]
    if trials is not None:
        lines += [f"hypothesis {s.label}: no supporting evidence of its own, back-tracked" for s in trials.rejected]
        if trials.accepted is not None:
            lines.append(f"hypothesis {trials.accepted.label}: verified by its own evidence")
    lines += [f"{e.modality}: {e.summary}" for e in top.evidence[:4]]
    if diagnosis is not None and diagnosis.fault_type:
        lines.append(f"fault type {diagnosis.fault_type}: {'; '.join(diagnosis.reasons[:4])}")
    return lines


@lru_cache(maxsize=2)
def _load_model(bundle: str) -> Any:
    from router.moe import FlipMoE

    return FlipMoE.from_bundle(bundle)


_SUMMARY_TOKENS = 64
"""Room for the model's sentence."""


def _model_sentence(ctx: ActorContext, top: RootCause, logs: LogsOutput) -> tuple[str, str, str, str]:
    """(sentence, source, guardrail note, failure): FlipMoE's log-change sentence for the suspect.

    The sentence is decoded under a grammar made from the findings the model is shown (`change_grammar`), so
    it can only name the suspect's service and the rows of its table with their own counts; it is checked
    again afterwards (`ungrounded`: every number, time and name must come from the findings, and it must be a
    sentence). An answer that fails is dropped whole and recorded, never appended."""
    report = logs.report
    assert report is not None
    # Names and templates are telemetry: a row whose template could steer the model is left out, so it is
    # neither read by the model nor one of the sentences the grammar lets it write.
    rows = [f for f in report.findings if f.service == top.service and f.evidence.template_id is not None
            and not is_suspicious(str(f.evidence.template))][:6]
    if not rows:
        return "", "template", "", ""
    table = [(float(f.evidence.count_before), float(f.evidence.count_during), str(f.level), str(f.evidence.template))
             for f in rows]
    prompt = neutralise("\n".join([
        f"service {top.service}: log lines in the {round(report.minutes_during)} min before and during the incident",
        "before during level template", *(f"{b:g} {d:g} {level} {template}" for b, d, level, template in table)]))
    try:
        from router.bundle import context_shortfall

        too_small = context_shortfall(str(ctx.settings.bundle), prompt, new_tokens=_SUMMARY_TOKENS,
                                      task="log_change_summary")
        if too_small:  # a truncated prompt gives a stray word, not a sentence
            return "", "template", "", f"FlipMoE was not asked: {too_small}"
        model = _load_model(str(ctx.settings.bundle))
        from director.agents.guardrails import IncidentVocabulary, check
        from experts.constrained import GrammarConstraint

        vocabulary = ctx.cached("vocabulary", lambda: IncidentVocabulary.from_incident(
            ctx.incident, log_templates=list(report.templates.values())))
        answer = model.generate(prompt, task="log_change_summary", max_new_tokens=_SUMMARY_TOKENS,
                                constraint=GrammarConstraint(change_grammar(top.service, table)))
    except Exception as err:  # the model is optional: the template summary stands without it
        log.warning("model summary failed: %s", err)
        return "", "template", "", f"FlipMoE could not be used: {type(err).__name__}: {err}"
    text = " ".join(str(answer.text).split())
    # Cut by the token limit, an answer can stop inside the grammar (even after a full stop in a template).
    problem = "cut off at the token limit" if getattr(answer, "finish_reason", "stop") == "length" \
        else ungrounded(text, prompt)
    if not problem:
        unknown = check(text, vocabulary).unknown_entities
        if unknown:
            problem = f"it names {', '.join(sorted({e.text for e in unknown}))}, not in the incident"
    if problem:
        return "", "template", f"dropped the model's sentence {text[:80]!r}: {problem}", ""
    return text, f"flipmoe:{answer.expert}", "", ""


def change_grammar(service: str, rows: list[tuple[float, float, str, str]]) -> str:
    """A Lark grammar of the log-change sentences true of `rows` (before, during, level, template; counts as
    the findings give them, possibly pro-rated): the service, then one or two of the rows, each with the clause
    its own counts make."""
    clauses = []
    for before, during, level, template in rows:
        if before == 0:
            clause = f"appeared ({during:g} lines, none before)"
        elif during == 0:
            clause = f"stopped ({before:g} lines before)"
        elif during == before:
            clause = f"stayed at {during:g} lines"
        else:
            clause = f"{'rose' if during > before else 'fell'} from {before:g} to {during:g} lines"
        clauses.append(json.dumps(f"{level} '{template}' {clause}"))
    return "\n".join([f'start: {json.dumps(service)} ": " change ("; " change)? "."',
                      "change: " + " | ".join(clauses)])


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_CLOCK = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b")


def ungrounded(text: str, findings: str) -> str:
    """Why `text` is not a grounded sentence about `findings` ("" when it is): it must be a sentence (at least
    four words, ending with a full stop), and every time and number it states must occur in the findings."""
    if len(text.split()) < 4 or not text.endswith("."):
        return "not a sentence"
    for clock in _CLOCK.findall(text):
        if clock not in findings:
            return f"the time {clock} is not in the findings"
    known = set(_NUMBER.findall(findings))
    for number in _NUMBER.findall(_CLOCK.sub(" ", text)):
        if number not in known:
            return f"the number {number} is not in the findings"
    return ""


# ------------------------------------------------------------------------------------------ queries


class QueriesInput(ActorInput):
    rank: LocalizeOutput | None = None
    top: int = Field(default=3, ge=1)


class QueriesOutput(ActorOutput):
    promql: list[str] = Field(default_factory=list)
    logql: list[str] = Field(default_factory=list)

    def brief(self) -> str:
        return f"{len(self.promql)} PromQL, {len(self.logql)} LogQL"


@actor("queries", QueriesInput, QueriesOutput, "follow-up PromQL and LogQL for the top suspects")
def queries(ctx: ActorContext, args: QueriesInput) -> QueriesOutput:
    from director.agents.queries import queries_for

    suspects = args.rank.suspects[: args.top] if args.rank is not None else []
    targets = [s.model_copy(update={"metric": _reference(s, "metrics", "metric"),
                                    "log_pattern": _reference(s, "logs", "template")}) for s in suspects]
    found = queries_for(targets, window=ctx.incident.meta.window)
    return QueriesOutput(promql=found.promql, logql=found.logql)


def _reference(suspect: RootCause, modality: str, key: str) -> str | None:
    for evidence in suspect.evidence:
        if evidence.modality == modality and isinstance(evidence.reference.get(key), str):
            return str(evidence.reference[key])
    return None


# ------------------------------------------------------------------------------------ report draft


class AssembleInput(ActorInput):
    rank: LocalizeOutput | None = None
    trials: Trials[RootCause] | None = None
    check: VerifyOutput | None = None
    diagnosis: DiagnoseOutput | None = None
    summary: SummaryOutput | None = None
    queries: QueriesOutput | None = None
    metrics: MetricsOutput | None = None
    traces: TracesOutput | None = None
    logs: LogsOutput | None = None
    events: EventsOutput | None = None
    top: int = Field(default=5, ge=1)


class ReportDraft(ActorOutput):
    """The report's content; the Director adds the runbook, its execution trace, gaps and timings."""

    root_causes: list[RootCause] = Field(default_factory=list)
    summary: str = ""
    reasoning: list[str] = Field(default_factory=list)
    findings: dict[str, list[Finding]] = Field(default_factory=dict)
    modalities_used: list[str] = Field(default_factory=list)
    queries: dict[str, list[str]] = Field(default_factory=dict)

    def has_evidence(self) -> bool:
        return bool(self.root_causes)

    def brief(self) -> str:
        return f"{len(self.root_causes)} root causes"


@actor("assemble", AssembleInput, ReportDraft,
       "ranked root causes with evidence, fault type and verification, findings, summary, queries")
def assemble(ctx: ActorContext, args: AssembleInput) -> ReportDraft:
    suspects = order_by_verdict(args.rank.suspects if args.rank is not None else [], args.trials)
    verdicts = _verdicts(args.trials, args.check)
    causes = []
    for rank, s in enumerate(suspects[: ctx.settings.top or args.top], start=1):
        diagnosed = args.diagnosis is not None and args.diagnosis.service == s.service and rank == 1
        causes.append(s.model_copy(update={
            "rank": rank, "metric": _reference(s, "metrics", "metric"),
            "log_pattern": _reference(s, "logs", "template"),
            "fault_type": args.diagnosis.fault_type if diagnosed and args.diagnosis else None,
            "fault_type_confidence": args.diagnosis.confidence if diagnosed and args.diagnosis else None,
            "verified": verdicts.get((s.service, s.pod))}))
    findings = {o.modality: o.findings for o in (args.metrics, args.traces, args.logs, args.events)
                if o is not None and o.available}
    used = args.rank.modalities if args.rank is not None else []
    summary = args.summary.text if args.summary is not None else ""
    reasoning = args.summary.reasoning if args.summary is not None else []
    queries = {"promql": args.queries.promql, "logql": args.queries.logql} if args.queries is not None else {}
    gaps = [Gap(what="root causes", reason="no suspect could be ranked")] if not causes else []
    return ReportDraft(root_causes=causes, summary=summary, reasoning=reasoning, findings=findings,
                       modalities_used=list(used), queries=queries, gaps=gaps)


def order_by_verdict(suspects: list[RootCause], trials: Trials[RootCause] | None) -> list[RootCause]:
    """The accepted hypothesis first and the rejected ones last; with none accepted, the ranking's order
    stands (the report's `verified` flags say what the checks found)."""
    if trials is None or trials.accepted is None:
        return list(suspects)
    key = (trials.accepted.service, trials.accepted.pod)
    rejected = {(s.service, s.pod) for s in trials.rejected}
    return ([s for s in suspects if (s.service, s.pod) == key]
            + [s for s in suspects if (s.service, s.pod) != key and (s.service, s.pod) not in rejected]
            + [s for s in suspects if (s.service, s.pod) in rejected])


def _verdicts(trials: Trials[RootCause] | None, check: VerifyOutput | None) -> dict[tuple[str, str | None], bool]:
    verdicts: dict[tuple[str, str | None], bool] = {}
    if trials is not None:
        verdicts.update({(s.service, s.pod): False for s in trials.rejected})
        if trials.accepted is not None:
            verdicts[(trials.accepted.service, trials.accepted.pod)] = True
    if check is not None:
        verdicts[(check.suspect.service, check.suspect.pod)] = check.verified
    return verdicts

