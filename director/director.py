"""The Director: choose (or write) a runbook for an incident, run it, and assemble the RCA report.

1. Triage runs first: the modalities present and symptom tags from a fixed vocabulary.
2. The runbook: a template of the knowledge base (`director/runbooks/*.flow`) retrieved by TF-IDF
   similarity between its description and the alert plus the symptom tags — or, with a generator,
   text an expert wrote under the DSL's grammar. Generated text is validated; a text that fails is
   repaired by dropping the offending statement (a few times at most) or rejected for the template.
3. The runbook runs on an executor (in-process or Ray) within its budget, back-tracking between
   hypotheses; every choice is a `Decision` in the report.
4. The report: the `assemble` step's draft plus the runbook, its execution trace, gaps and timings.
   When that step fails the Director assembles the draft itself from what the run produced, so a
   report always comes out.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from director.actors.base import ActorContext, RunSettings, registry
from director.actors.writing import ReportDraft
from director.dsl import Plan, RunbookError, load_plan
from director.report import Decision, Gap, RcaReport, RunbookRecord, StepRecord
from director.runtime import DEFAULT_RETRIES, Executor, Interpreter, StepMeta
from flipmoe.telemetry.incident import Incident
from flipmoe.toolkits.index import IncidentIndex, build_index
from flipmoe.toolkits.untrusted import neutralise

log = logging.getLogger(__name__)

RUNBOOK_DIR = Path(__file__).with_name("runbooks")
_REPAIRS = 5
_REQUIRED_ACTORS = ("localize", "assemble")
"""A runbook without these cannot produce a ranked report; generated text must call both."""

RunbookGenerator = Callable[[str, str], str]
"""(prompt, lark grammar) -> runbook text, e.g. an expert decoding under `GrammarConstraint`."""


@dataclass(frozen=True)
class Template:
    name: str
    plan: Plan
    path: Path


class RunbookLibrary:
    """The knowledge base of runbook templates, retrieved by TF-IDF over their descriptions."""

    def __init__(self, templates: list[Template], *, default: str = "generic") -> None:
        if not templates:
            raise ValueError("a runbook library needs at least one template")
        self.templates = {t.name: t for t in templates}
        self.default = default if default in self.templates else templates[0].name
        self._names = [t.name for t in templates]
        self._index = _TfIdf([f"{t.name} {t.plan.runbook.description}" for t in templates])

    @classmethod
    def from_directory(cls, directory: Path = RUNBOOK_DIR) -> RunbookLibrary:
        """Every `*.flow` file; a template that does not validate is an error naming its line."""
        return cls([Template(p.stem, load_plan(p.read_text(encoding="utf-8"), source=str(p)), p)
                    for p in sorted(directory.glob("*.flow"))])

    def retrieve(self, query: str) -> tuple[Template, float]:
        """The template most similar to `query`; the default one when nothing matches."""
        scores = self._index.similarity(query)
        best = int(scores.argmax())
        if scores[best] <= 0:
            return self.templates[self.default], 0.0
        return self.templates[self._names[best]], float(scores[best])


class _TfIdf:
    """Cosine similarity of a query to a few documents under scikit-learn's `TfidfVectorizer(sublinear_tf=True)`
    weighting (smooth idf, 1 + log tf, l2 norm; `tests/test_director.py` checks the scores match).

    Written out because importing scikit-learn costs about a second of a cold `flipmoe rca`, for five
    documents of twenty words."""

    _TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

    def __init__(self, documents: Sequence[str]) -> None:
        counts = [Counter(self._TOKEN.findall(d.lower())) for d in documents]
        self.vocabulary = {w: i for i, w in enumerate(sorted({w for c in counts for w in c}))}
        df = np.zeros(len(self.vocabulary))
        for c in counts:
            df[[self.vocabulary[w] for w in c]] += 1
        self.idf = np.log((1 + len(documents)) / (1 + df)) + 1.0
        self.matrix_DV = np.stack([self._vector(c) for c in counts])

    def _vector(self, counts: Counter[str]) -> np.ndarray:
        vector = np.zeros(len(self.vocabulary))
        for word, n in counts.items():
            if word in self.vocabulary:
                vector[self.vocabulary[word]] = (1.0 + math.log(n)) * self.idf[self.vocabulary[word]]
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else vector

    def similarity(self, query: str) -> np.ndarray:
        """(documents,) cosine similarities to `query`."""
        return self.matrix_DV @ self._vector(Counter(self._TOKEN.findall(query.lower())))


@lru_cache(maxsize=1)
def default_library() -> RunbookLibrary:
    return RunbookLibrary.from_directory()


class Director:
    """Plans, runs and reports one incident at a time on an executor (warm across incidents)."""

    def __init__(self, executor: Executor, *, settings: RunSettings | None = None,
                 library: RunbookLibrary | None = None, generator: RunbookGenerator | None = None,
                 runbook: str | None = None) -> None:
        self.executor = executor
        self.settings = settings or RunSettings()
        self.library = library or default_library()
        self.generator = generator
        self.forced = runbook
        """A template name or runbook file that overrides retrieval."""
        self.forced_plan = forced_plan(runbook, self.library) if runbook else None
        """Its plan, loaded and validated here: a bad name or file is an error before any incident is read."""

    def analyse(self, incident: Incident, *, progress: Callable[[str], None] | None = None) -> RcaReport:
        """The report; `progress` is told each stage (triage, the runbook chosen, each step waited for)."""
        return self.analyse_with_outputs(incident, progress=progress)[0]

    def analyse_with_outputs(self, incident: Incident, steps: Sequence[str] = (), *,
                             progress: Callable[[str], None] | None = None) -> tuple[RcaReport, dict[str, Any]]:
        """The report, and the outputs of the named runbook steps (e.g. "diagnosis": the features the
        diagnosis model read, for training it on exactly what `rca` computes); a step that did not run
        or failed maps to None."""
        start = time.perf_counter()
        index = build_index(incident)
        self.executor.begin(incident, self.settings, index)
        try:
            report, interpreter = self._analyse(incident, index, start, progress or (lambda stage: None))
            return report, {name: interpreter.fetch(name) for name in steps}
        finally:
            self.executor.end()

    def _analyse(self, incident: Incident, index: IncidentIndex, start: float,
                 progress: Callable[[str], None]) -> tuple[RcaReport, Interpreter]:
        decisions: list[Decision] = []

        def decide(kind: str, detail: str) -> None:
            decisions.append(Decision(at_s=round(time.perf_counter() - start, 4), kind=kind,  # type: ignore[arg-type]
                                      detail=detail))

        progress("triage")
        triage_meta, triage_handle, triage = self._triage()
        plan, source = self._plan(incident, triage, decide)
        progress(f"runbook {plan.runbook.name}")
        planning_s = time.perf_counter() - start
        interpreter = Interpreter(plan, self.executor, settings=self.settings,
                                  precomputed={"triage": (triage_meta, triage_handle)} if triage_handle else None,
                                  progress=lambda stage: progress(f"runbook {plan.runbook.name}: {stage}"))
        result = interpreter.run()
        progress("drafting the report")
        draft = self._draft(incident, index, interpreter, result.gaps, decide)
        steps = result.steps
        if triage_handle is None:  # triage failed: record it as the plan's first step
            steps = [StepRecord(name="triage", actor="triage", status=triage_meta.status,  # type: ignore[arg-type]
                                started_s=0.0, duration_s=round(triage_meta.duration_s, 4),
                                error=triage_meta.error), *steps]
            result.gaps.append(Gap(what="triage", reason=f"{triage_meta.status}: {triage_meta.error}"))
        record = RunbookRecord(name=plan.runbook.name, source=source, text=plan.text, steps=steps,
                               decisions=[*decisions, *result.decisions], backtracks=result.backtracks)
        timings = {"planning": round(planning_s, 4)}
        for step in steps:
            timings[step.name] = round(timings.get(step.name, 0.0) + step.duration_s, 4)
        timings["total"] = round(time.perf_counter() - start, 4)
        gaps = [*(Gap(what="missing telemetry", reason=m) for m in incident.meta.missing),
                *(Gap(what="incident data", reason=w) for w in incident.warnings), *_unique(result.gaps)]
        if result.stopped:
            gaps.append(Gap(what="runbook", reason=f"stopped early: {result.stopped}"))
        model = {"bundle": str(self.settings.bundle), "remote": self.settings.remote_url} \
            if self.settings.bundle or self.settings.remote_url else None
        report = RcaReport(incident=incident.id, alert=incident.meta.alert, window=incident.meta.window.to_json(),
                           root_causes=draft.root_causes, summary=draft.summary, reasoning=draft.reasoning,
                           findings=draft.findings, modalities_used=draft.modalities_used, runbook=record, gaps=gaps,
                           queries=draft.queries, call_graph=[list(e) for e in index.call_edges], model=model,
                           timings_s=timings)
        return report, interpreter

    # ------------------------------------------------------------------------------------ planning

    def _triage(self) -> tuple[StepMeta, Any, Any]:
        ticket = self.executor.submit("triage", {}, [], retries=DEFAULT_RETRIES)
        meta, handle = self.executor.wait([ticket], [30.0])[0]
        return meta, handle, self.executor.fetch(handle) if handle is not None else None

    def _plan(self, incident: Incident, triage: Any, decide: Callable[[str, str], None]) -> tuple[Plan, str]:
        symptoms = list(triage.symptoms) if triage is not None else []
        if self.forced_plan is not None:
            plan = self.forced_plan
            decide("plan", f"runbook {plan.runbook.name} was chosen by the user")
            return plan, f"user:{self.forced}"
        if self.generator is not None:
            generated = self._generate(incident, symptoms, decide)
            if generated is not None:
                return generated, "generated:expert"
        query = f"{incident.meta.alert} {' '.join(symptoms)}"
        template, score = self.library.retrieve(query)
        decide("plan", f"runbook template {template.name} (similarity {score:.2f} to the alert and symptoms: "
                       f"{', '.join(symptoms) or 'none'})")
        return template.plan, f"knowledge-base:{template.name}"

    def _generate(self, incident: Incident, symptoms: list[str], decide: Callable[[str, str], None]) -> Plan | None:
        from director.dsl import grammar_text

        assert self.generator is not None
        actors = "\n".join(f"- {s.name}: {s.description}" for s in registry().values())
        example = self.library.templates[self.library.default].plan.text
        # The alert is telemetry: a line of it that could steer the model is redacted before the model reads it.
        alert = neutralise(incident.meta.alert).replace("\n", " ")
        prompt = (f"Write a runbook for this incident.\nAlert: {alert}\nSymptoms: "
                  f"{', '.join(symptoms) or 'none'}\nActors:\n{actors}\nExample:\n{example}\nRunbook:\n")
        try:
            text = self.generator(prompt, grammar_text())
        except Exception as err:  # a generator is optional: the knowledge base always has a plan
            decide("plan", f"runbook generation failed ({type(err).__name__}: {err}); using the knowledge base")
            return None
        plan = repair_runbook(text, decide)
        if plan is None:
            decide("plan", "the generated runbook was rejected; using the knowledge base")
        else:
            decide("plan", f"generated runbook {plan.runbook.name} validated")
        return plan

    # -------------------------------------------------------------------------------------- report

    def _draft(self, incident: Incident, index: IncidentIndex, interpreter: Interpreter, gaps: list[Gap],
               decide: Callable[[str, str], None]) -> ReportDraft:
        """The assemble step's draft, or one the Director assembles from the run's outputs."""
        report_steps = [s.name for s in interpreter.plan.runbook.final if interpreter.plan.actors[s.name].name
                        == "assemble"]
        for name in report_steps:
            draft = interpreter.fetch(name)
            if isinstance(draft, ReportDraft):
                gaps.extend(draft.gaps)
                return draft
        decide("repair", "the report step produced nothing; the Director assembled the report from the "
                         "steps that did run")
        arguments: dict[str, Any] = {}
        fields = registry()["assemble"].input.model_fields
        for name in interpreter.plan.actors:
            value = interpreter.fetch(name)
            if value is None:
                continue
            for field_name, field in fields.items():
                if field_name not in arguments and _fits(value, field.annotation):
                    arguments[field_name] = value
        for binding in interpreter.result.outputs.values():  # hypotheses' Trials are held on the driver
            value = getattr(binding, "value", None)
            if value is not None and "trials" not in arguments and _fits(value, fields["trials"].annotation):
                arguments["trials"] = value
        try:
            return registry()["assemble"].run(ActorContext(incident=incident, settings=self.settings, index=index),
                                              arguments)  # type: ignore[return-value]
        except Exception as err:  # the last resort: an empty report that says why
            gaps.append(Gap(what="report", reason=f"could not be assembled: {type(err).__name__}: {err}"))
            return ReportDraft(summary="The analysis failed before it could rank root causes.")


def expert_runbook_generator(bundle: Path, *, expert: str = "code", max_new_tokens: int = 800) -> RunbookGenerator:
    """A generator that decodes with a bundle's expert under the DSL's grammar (`GrammarConstraint`):
    its text always parses, and validation then checks actors, arguments and references."""
    loaded: dict[str, Any] = {}

    def generate(prompt: str, grammar: str) -> str:
        from experts.constrained import GrammarConstraint
        from router.bundle import load_experts

        if not loaded:
            experts = load_experts(bundle)
            loaded["expert"] = experts.get(expert) or next(iter(experts.values()))
        answer = loaded["expert"].generate(prompt, constraint=GrammarConstraint(lark=grammar),
                                           max_new_tokens=max_new_tokens)
        return str(answer.text)

    return generate


def repair_runbook(text: str, decide: Callable[[str, str], None]) -> Plan | None:
    """Validate generated runbook text; drop the statement at each error (a few times) and re-validate."""
    lines = text.splitlines()
    for _ in range(_REPAIRS + 1):
        candidate = "\n".join(lines)
        try:
            plan = load_plan(candidate, source="generated runbook")
        except RunbookError as err:
            if not err.line or err.line > len(lines) or err.line == 1:
                decide("repair", f"generated runbook rejected: {err.message} (line {err.line})")
                return None
            decide("repair", f"dropped line {err.line} of the generated runbook: {err.message}")
            del lines[err.line - 1]
            continue
        called = {spec.name for spec in plan.actors.values()}
        missing = [a for a in _REQUIRED_ACTORS if a not in called]
        if missing:
            decide("repair", f"generated runbook rejected: it never calls {', '.join(missing)}")
            return None
        return plan
    decide("repair", f"generated runbook rejected: still invalid after {_REPAIRS} repairs")
    return None


def _fits(value: Any, annotation: Any) -> bool:
    from typing import get_args

    options = get_args(annotation) or (annotation,)
    return any(isinstance(option, type) and isinstance(value, option) for option in options)


def _unique(gaps: list[Gap]) -> list[Gap]:
    return list({(g.what, g.reason): g for g in gaps}.values())


def forced_plan(runbook: str, library: RunbookLibrary | None = None) -> Plan:
    """The plan of a runbook the user names: a template of the library, or a `.flow` file."""
    library = library or default_library()
    if runbook in library.templates:
        return library.templates[runbook].plan
    path = Path(runbook)
    if not path.is_file():
        from flipmoe.errors import FlipmoeInputError

        raise FlipmoeInputError(f"no runbook template or file {runbook!r}",
                                hint=f"templates: {', '.join(sorted(library.templates))}")
    return load_plan(path.read_text(encoding="utf-8"), source=str(path))


def local_director(*, settings: RunSettings | None = None, runbook: str | None = None) -> Director:
    """A Director whose steps run in this process (`LocalExecutor`): the same runbooks, actors and report
    as on Ray, for one incident at a time without a cluster (evaluation, tests, `flipmoe rca` on one incident)."""
    from director.runtime import LocalExecutor

    return Director(LocalExecutor(), settings=settings, runbook=runbook)


def analyse_incident(incident: Incident, *, settings: RunSettings | None = None, runbook: str | None = None
                     ) -> RcaReport:
    """One incident through the Director in this process: the report `flipmoe rca` writes for it."""
    return local_director(settings=settings, runbook=runbook).analyse(incident)
