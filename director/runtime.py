"""Running a plan: the interpreter (conditions, hypotheses, back-tracking, budget, decisions) and executors.

The interpreter walks the validated runbook on the driver. Steps go to an executor:

- `LocalExecutor` runs them in this process, one after another (unit tests, `flipmoe rca --local`);
- `RayExecutor` runs each step as a Ray task. The incident (with its index) is put in the object
  store once per run and each worker keeps the deserialised copy for the run's later steps; a step's
  output stays in the object store and goes straight to the steps that use it, so the driver only
  fetches what a condition, a hypothesis list or the report needs. A worker that dies is replaced and
  the step re-run (Ray's `max_retries`); a step past its timeout is cancelled.

The runbook's structure is the schedule: a statement starts after the one before it ends, the steps of
a `parallel` block run at the same time, an `if` runs only the branch its condition picks, and
`hypotheses` runs its body per candidate until one is accepted (back-tracking on no evidence).

Whatever happens to a step — an exception in the actor, a timeout, a dead worker after its retries —
becomes its record's status and a `Gap`; the run goes on and its `finally` steps always run.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from director.actors.base import ActorContext, ActorOutput, RunSettings, Trials, registry
from director.dsl.plan import Plan
from director.dsl.syntax import (
    And,
    Compare,
    Condition,
    Duration,
    Hypotheses,
    If,
    ListValue,
    Literal,
    Not,
    Or,
    Parallel,
    Ref,
    Statement,
    Step,
    Value,
)
from director.report import Decision, Gap, StepRecord
from flipmoe.telemetry.incident import Incident
from flipmoe.toolkits.index import IncidentIndex, build_index

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 2
"""Re-runs of a step whose worker died (not of a step whose actor raised: that would fail again)."""


# ------------------------------------------------------------------------------- step execution


@dataclass(frozen=True)
class Slot:
    """A placeholder in a step's argument template for (a field of) an upstream step's output."""

    index: int
    path: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class StepMeta:
    """What the driver learns about a finished step (its output stays with the executor)."""

    status: str
    started: float
    """Wall-clock time.time() the actor started (comparable across machines within a run)."""
    duration_s: float
    brief: str = ""
    error: str | None = None
    gaps: tuple[Gap, ...] = ()
    decisions: tuple[tuple[str, str], ...] = ()
    attempts: int = 1


def fill(template: Any, upstream: Sequence[Any]) -> Any:
    """The template with every `Slot` replaced by (a field of) the upstream output it points at."""
    if isinstance(template, Slot):
        value = upstream[template.index]
        for part in template.path:
            value = getattr(value, part, None) if value is not None else None
        return value
    if isinstance(template, dict):
        return {k: fill(v, upstream) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, upstream) for v in template]
    return template


def execute_step(actor_name: str, ctx: ActorContext, template: dict[str, Any], upstream: Sequence[Any]
                 ) -> tuple[StepMeta, ActorOutput | None]:
    """Run one actor call; an exception becomes a 'failed' meta (the output is then None)."""
    started = time.time()
    clock = time.perf_counter()
    try:
        spec = registry()[actor_name]
        arguments = {k: v for k, v in fill(template, upstream).items() if v is not None}
        output = spec.run(ctx, arguments)
    except Exception as err:  # an actor's failure is recorded as a gap; the run goes on
        log.debug("actor %s failed", actor_name, exc_info=True)
        detail = traceback.format_exception_only(type(err), err)[-1].strip()
        return StepMeta(status="failed", started=started, duration_s=time.perf_counter() - clock,
                        error=detail[:500]), None
    status = "ok" if output.has_evidence() else "no-evidence"
    return StepMeta(status=status, started=started, duration_s=time.perf_counter() - clock, brief=output.brief(),
                    gaps=tuple(output.gaps), decisions=tuple(output.decisions)), output


class Executor(Protocol):
    """Runs steps for one incident at a time; handles are opaque to the interpreter."""

    def begin(self, incident: Incident, settings: RunSettings, index: IncidentIndex | None = None) -> None:
        """Start a run: every step of it sees `incident` and its `index` (built here when not given)."""
        ...

    def submit(self, actor_name: str, template: dict[str, Any], upstream: list[Any], *, retries: int) -> Any:
        """Start a step; `upstream` holds output handles of steps that may still be running."""
        ...

    def output(self, ticket: Any) -> Any:
        """The handle of a submitted step's output, usable as another step's upstream before it ends."""
        ...

    def wait(self, tickets: list[Any], timeouts_s: list[float]) -> list[tuple[StepMeta, Any]]:
        """(meta, output handle or None) per ticket; a step not done `timeout` seconds after its
        submission is cancelled and reported as a timeout."""
        ...

    def fetch(self, handle: Any) -> Any: ...

    def end(self) -> None: ...


class LocalExecutor:
    """Steps run in this process, in submission order; a step past its timeout is recorded as such."""

    def __init__(self, *, cache: dict[str, Any] | None = None) -> None:
        self._ctx: ActorContext | None = None
        self._extra_cache = cache or {}

    def begin(self, incident: Incident, settings: RunSettings, index: IncidentIndex | None = None) -> None:
        self._ctx = ActorContext(incident=incident, settings=settings, index=index,  # type: ignore[arg-type]
                                 cache=dict(self._extra_cache))

    def submit(self, actor_name: str, template: dict[str, Any], upstream: list[Any], *, retries: int) -> Any:
        assert self._ctx is not None, "begin() first"
        return execute_step(actor_name, self._ctx, template, upstream)

    def output(self, ticket: Any) -> Any:
        return ticket[1]

    def wait(self, tickets: list[Any], timeouts_s: list[float]) -> list[tuple[StepMeta, Any]]:
        done = []
        for (meta, output), timeout in zip(tickets, timeouts_s, strict=True):
            if meta.duration_s > timeout:
                meta = StepMeta(status="timeout", started=meta.started, duration_s=meta.duration_s,
                                error=f"took {meta.duration_s:.1f} s, over its {timeout:.1f} s limit")
                output = None
            done.append((meta, output))
        return done

    def fetch(self, handle: Any) -> Any:
        return handle

    def end(self) -> None:
        self._ctx = None


# --------------------------------------------------------------------------------------- the run


@dataclass
class RunResult:
    """What the interpreter did: per-step records, decisions, and the outputs of the steps."""

    steps: list[StepRecord] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    """Step name (or hypotheses variable) -> output handle (None when the step did not produce one)."""
    backtracks: int = 0
    stopped: str | None = None
    """Why the main body stopped early (a stop action, the budget), if it did."""
    seconds: float = 0.0


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Backtrack(Exception):
    def __init__(self, step: str) -> None:
        self.step = step


@dataclass(frozen=True)
class _Known:
    """A value the driver already holds (a hypothesis, a Trials record)."""

    value: Any


class Interpreter:
    """Runs one plan for one incident on an executor."""

    def __init__(self, plan: Plan, executor: Executor, *, settings: RunSettings | None = None,
                 default_step_timeout_s: float = 60.0, precomputed: dict[str, tuple[StepMeta, Any]] | None = None,
                 clock: Callable[[], float] = time.perf_counter, progress: Callable[[str], None] | None = None
                 ) -> None:
        self.plan = plan
        self.progress = progress or (lambda stage: None)
        """Told which steps the run waits for, and how many have ended (a service shows it as the job's progress)."""
        self.executor = executor
        self.settings = settings or RunSettings()
        self.default_step_timeout_s = default_step_timeout_s
        self.precomputed = dict(precomputed or {})
        self.clock = clock
        budget = plan.runbook.budget
        self.max_steps = budget.steps if budget is not None and budget.steps is not None else None
        self.max_seconds = budget.time.seconds if budget is not None and budget.time is not None else None

    def run(self) -> RunResult:
        """Run the plan on the executor's current incident (`executor.begin` was called)."""
        self.result = RunResult()
        self.env: dict[str, Any] = {}
        self.pending: dict[str, tuple[Step, Any, float]] = {}
        """Submitted steps not yet recorded: name -> (step, ticket, timeout)."""
        self.statuses: dict[str, str] = {}
        self.t0 = self.clock()
        self.wall0 = time.time()
        try:
            try:
                self._block(self.plan.runbook.body)
            except _Stop as stop:
                self.result.stopped = stop.reason
            for step in self.plan.runbook.final:
                self._steps([step], final=True)
                self._settle([step.name])
            self._settle()
        finally:
            self.result.steps.sort(key=lambda record: record.started_s)
            self.result.outputs = dict(self.env)
            self.result.seconds = self.clock() - self.t0
        return self.result

    def fetch(self, name: str) -> Any:
        """The output of a step after the run (None when it produced none)."""
        binding = self.result.outputs.get(name)
        if binding is None:
            return None
        return binding.value if isinstance(binding, _Known) else self.executor.fetch(binding)

    # ---------------------------------------------------------------------------------- statements

    def decide(self, kind: str, detail: str) -> None:
        self.result.decisions.append(Decision(at_s=round(self.clock() - self.t0, 4), kind=kind,  # type: ignore[arg-type]
                                              detail=detail))

    def _block(self, statements: Sequence[Statement]) -> None:
        for statement in statements:
            if isinstance(statement, Step):
                self._steps([statement], final=False)
                self._settle([statement.name])
            elif isinstance(statement, Parallel):
                self._steps(list(statement.steps), final=False)
                self._settle([s.name for s in statement.steps])
            elif isinstance(statement, If):
                self._settle(_condition_roots(statement.condition))
                taken = self._condition(statement.condition)
                self.decide("plan", f"condition `{statement.condition}` is {str(taken).lower()}: "
                                    f"{'then' if taken else 'else'} branch")
                self._block(statement.then if taken else statement.otherwise)
            else:
                self._hypotheses(statement)

    def _hypotheses(self, node: Hypotheses) -> None:
        self._settle([node.source.root])
        candidates = list(self._value(node.source) or [])
        if node.limit is not None:
            candidates = candidates[: node.limit]
        trials: Trials[Any] = self.plan.types.get(node.var, Trials[Any])(tried=0)
        body_steps = {s.name for s in _steps_in(node.body)}
        first_bindings: dict[str, Any] | None = None
        for position, candidate in enumerate(candidates, start=1):
            label = getattr(candidate, "label", None) or str(candidate)
            self.env[node.var] = _Known(candidate)
            trials.tried += 1
            self.decide("hypothesis", f"hypothesis {position}/{len(candidates)}: {label}")
            try:
                self._block(node.body)
                self._settle(list(body_steps))  # an iteration's steps end before the next one rebinds them
            except _Backtrack as back:
                self._settle(list(body_steps))
                self.result.backtracks += 1
                trials.rejected.append(candidate)
                more = "trying the next hypothesis" if position < len(candidates) else "none left"
                self.decide("backtrack", f"{label}: step {back.step} found no supporting evidence; {more}")
                if first_bindings is None:
                    first_bindings = {n: self.env.get(n) for n in body_steps}
                continue
            trials.accepted = candidate
            self.decide("accept", f"{label}: supported by evidence")
            break
        else:
            if candidates:
                self.decide("stop", f"no hypothesis of {node.source} was verified; the ranking stands as it is")
            for name in body_steps:  # later steps see the favourite's results, as with no checks at all
                self.env[name] = (first_bindings or {}).get(name)
        trials.best = trials.accepted if trials.accepted is not None else (candidates[0] if candidates else None)
        self.env[node.var] = _Known(trials)

    # --------------------------------------------------------------------------------------- steps

    def _steps(self, steps: list[Step], *, final: bool) -> None:
        """Submit `steps` (a parallel block, or one step); the caller waits for them (`_settle`), which is
        what makes the runbook's structure its schedule (see the module docstring)."""
        for step in steps:
            if step.name in self.precomputed and not final:
                meta, output = self.precomputed.pop(step.name)
                self._record(step, meta, output, note="(from planning)")
                continue
            if not final:
                self._check_budget(step)
            template, upstream, missing = self._arguments(step)
            if missing:
                self._record(step, StepMeta(status="skipped", started=time.time(), duration_s=0.0,
                                            error=f"needs {', '.join(missing)}, which did not run or failed"), None)
                continue
            retries = step.retries if step.retries is not None else DEFAULT_RETRIES
            ticket = self.executor.submit(self.plan.actors[step.name].name, template, upstream, retries=retries)
            self.env[step.name] = self.executor.output(ticket)
            self.pending[step.name] = (step, ticket, self._timeout(step))
        decisive = [s.name for s in steps if s.on_no_evidence in ("backtrack", "stop") and not final]
        if decisive:
            self._settle(decisive)
            for name in decisive:
                step = next(s for s in steps if s.name == name)
                if self.statuses.get(name) != "no-evidence":
                    continue
                if step.on_no_evidence == "backtrack":
                    raise _Backtrack(name)
                self.decide("stop", f"step {name} found no evidence and says stop")
                raise _Stop(f"step {name} found no evidence")

    def _settle(self, names: Sequence[str] | None = None) -> None:
        """Wait for pending steps (all of them, or those of `names`) and record how they ended."""
        chosen = [n for n in dict.fromkeys(self.pending if names is None else names) if n in self.pending]
        if not chosen:
            return
        waiting = [self.pending.pop(n) for n in chosen]
        self.progress(f"step {', '.join(chosen)} ({len(self.result.steps)} step(s) done)")
        results = self.executor.wait([ticket for _, ticket, _ in waiting], [timeout for _, _, timeout in waiting])
        for (step, _, _), (meta, handle) in zip(waiting, results, strict=True):
            self._record(step, meta, handle)

    def _record(self, step: Step, meta: StepMeta, handle: Any, note: str = "") -> None:
        self.env[step.name] = handle if meta.status in ("ok", "no-evidence") else None
        self.statuses[step.name] = meta.status
        actor = self.plan.actors[step.name].name
        self.result.steps.append(StepRecord(
            name=step.name, actor=actor, status=meta.status,  # type: ignore[arg-type]
            started_s=round(max(meta.started - self.wall0, 0.0), 4), duration_s=round(meta.duration_s, 4),
            attempts=meta.attempts, summary=f"{meta.brief} {note}".strip(), error=meta.error))
        self.result.gaps.extend(meta.gaps)
        for kind, detail in meta.decisions:
            self.decide(kind, f"{step.name}: {detail}")
        if meta.status in ("failed", "timeout"):
            self.result.gaps.append(Gap(what=f"step {step.name} ({actor})", reason=f"{meta.status}: {meta.error}"))

    def _check_budget(self, step: Step) -> None:
        executed = sum(1 for s in self.result.steps if s.status != "skipped") + len(self.pending)
        if self.max_steps is not None and executed >= self.max_steps:
            self.decide("stop", f"step budget of {self.max_steps} spent before step {step.name}")
            raise _Stop("step budget spent")
        if self.max_seconds is not None and self.clock() - self.t0 >= self.max_seconds:
            self.decide("stop", f"time budget of {self.max_seconds:g} s spent before step {step.name}")
            raise _Stop("time budget spent")

    def _timeout(self, step: Step) -> float:
        timeout = step.timeout.seconds if step.timeout is not None else self.default_step_timeout_s
        if self.max_seconds is not None:
            # a step may not outlive the run's budget, but always gets a moment to finish
            timeout = min(timeout, max(self.max_seconds - (self.clock() - self.t0), 1.0))
        return timeout

    def _arguments(self, step: Step) -> tuple[dict[str, Any], list[Any], list[str]]:
        """The argument template (literals inline, Slots for step outputs), the upstream handles, and
        the required arguments whose step produced nothing."""
        upstream: list[Any] = []
        missing: list[str] = []
        fields = self.plan.actors[step.name].input.model_fields

        def convert(value: Value) -> Any:
            if isinstance(value, Ref):
                binding = self.env.get(value.root)
                if isinstance(binding, _Known):
                    current = binding.value
                    for part in value.path[1:]:
                        current = getattr(current, part, None) if current is not None else None
                    return current
                if binding is None:
                    return None
                upstream.append(binding)
                return Slot(len(upstream) - 1, value.path[1:])
            if isinstance(value, ListValue):
                return [convert(i) for i in value.items]
            assert isinstance(value, Literal)
            return value.value.seconds if isinstance(value.value, Duration) else value.value

        template: dict[str, Any] = {}
        for arg in step.args:
            literal_key = (step.name, arg.name)
            value = self.plan.literals[literal_key] if literal_key in self.plan.literals else convert(arg.value)
            if value is None and fields[arg.name].is_required() and isinstance(arg.value, Ref):
                missing.append(str(arg.value))
            template[arg.name] = value
        return template, upstream, missing

    # ---------------------------------------------------------------------------------- conditions

    def _value(self, value: Value | None) -> Any:
        if value is None:
            return None
        if isinstance(value, Literal):
            return value.value
        if isinstance(value, ListValue):
            return [self._value(i) for i in value.items]
        binding = self.env.get(value.root)
        current = binding.value if isinstance(binding, _Known) else (
            self.executor.fetch(binding) if binding is not None else None)
        for part in value.path[1:]:
            current = getattr(current, part, None) if current is not None else None
        return current

    def _condition(self, condition: Condition) -> bool:
        if isinstance(condition, And):
            return all(self._condition(c) for c in condition.operands)
        if isinstance(condition, Or):
            return any(self._condition(c) for c in condition.operands)
        if isinstance(condition, Not):
            return not self._condition(condition.operand)
        assert isinstance(condition, Compare)
        left = self._value(condition.left)
        if condition.op == "truthy":
            if isinstance(left, ActorOutput):
                return left.has_evidence()
            return bool(left)
        right = self._value(condition.right)
        if condition.op == "in":
            return right is not None and left in right
        if condition.op in ("==", "!="):
            return (left == right) == (condition.op == "==")
        if left is None or right is None:
            return False
        try:
            return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[condition.op]
        except TypeError:
            return False


def _condition_roots(condition: Condition) -> list[str]:
    if isinstance(condition, (And, Or)):
        return [r for c in condition.operands for r in _condition_roots(c)]
    if isinstance(condition, Not):
        return _condition_roots(condition.operand)
    return [r.root for v in (condition.left, condition.right) for r in _value_roots(v)]


def _value_roots(value: Value | None) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, ListValue):
        return [r for i in value.items for r in _value_roots(i)]
    return []


def _steps_in(statements: Sequence[Statement]) -> list[Step]:
    out: list[Step] = []
    for s in statements:
        if isinstance(s, Step):
            out.append(s)
        elif isinstance(s, Parallel):
            out += s.steps
        elif isinstance(s, If):
            out += _steps_in(s.then) + _steps_in(s.otherwise)
        elif isinstance(s, Hypotheses):
            out += _steps_in(s.body)
    return out


# ------------------------------------------------------------------------------------------- Ray


_WORKER_INCIDENTS: dict[str, ActorContext] = {}
"""Per worker process: incident object id -> its context, so a run's steps deserialise it once."""


def _worker_context(box: list[Any], settings: RunSettings) -> ActorContext:
    import ray

    key = box[0].hex()
    ctx = _WORKER_INCIDENTS.get(key)
    if ctx is None:
        while len(_WORKER_INCIDENTS) >= 2:  # a warm worker serves incident after incident
            _WORKER_INCIDENTS.pop(next(iter(_WORKER_INCIDENTS)))
        incident, index = ray.get(box[0])
        ctx = _WORKER_INCIDENTS[key] = ActorContext(incident=incident, settings=settings, index=index)
    return ctx


def _ray_step(actor_name: str, box: list[Any], settings: RunSettings, modules: tuple[str, ...],
              template: dict[str, Any], *upstream: Any) -> tuple[StepMeta, Any]:
    """The body of every step task. `box` wraps the incident's ObjectRef so Ray does not resolve it
    per call: the worker resolves it once per run (see `_worker_context`)."""
    import importlib

    for module in modules:  # extra actors (plugins, tests) register themselves on import
        importlib.import_module(module)
    return execute_step(actor_name, _worker_context(box, settings), template, upstream)


class RayExecutor:
    """Steps as Ray tasks on the cluster `ray.init` connected to (see `start_ray`)."""

    def __init__(self, *, num_cpus_per_step: float = 1.0, actor_modules: tuple[str, ...] = ()) -> None:
        """`actor_modules`: modules the workers import so that the actors they register can run there."""
        import ray

        if not ray.is_initialized():
            raise RuntimeError("RayExecutor needs a running Ray: call director.runtime.start_ray() first")
        self._remote = ray.remote(_ray_step)
        self._num_cpus = num_cpus_per_step
        self._modules = tuple(actor_modules)
        self._box: list[Any] | None = None
        self._settings = RunSettings()

    def begin(self, incident: Incident, settings: RunSettings, index: IncidentIndex | None = None) -> None:
        import ray

        self._box = [ray.put((incident, index or build_index(incident)))]
        self._settings = settings

    def submit(self, actor_name: str, template: dict[str, Any], upstream: list[Any], *, retries: int) -> Any:
        assert self._box is not None, "begin() first"
        meta_ref, output_ref = self._remote.options(num_returns=2, num_cpus=self._num_cpus, max_retries=retries).remote(
            actor_name, self._box, self._settings, self._modules, template, *upstream)
        return meta_ref, output_ref, time.perf_counter()

    def output(self, ticket: Any) -> Any:
        return ticket[1]

    def wait(self, tickets: list[Any], timeouts_s: list[float]) -> list[tuple[StepMeta, Any]]:
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        results: list[tuple[StepMeta, Any]] = []
        for (meta_ref, output_ref, submitted), timeout in zip(tickets, timeouts_s, strict=True):
            remaining = max(timeout - (time.perf_counter() - submitted), 0.01)
            started = time.time() - (time.perf_counter() - submitted)
            try:
                meta = ray.get(meta_ref, timeout=remaining)
            except GetTimeoutError:
                ray.cancel(meta_ref, force=True)
                results.append((StepMeta(status="timeout", started=started, duration_s=time.time() - started,
                                         error=f"no result within its {timeout:.1f} s limit; cancelled"), None))
                continue
            except RayError as err:  # its worker died more often than it may be retried, or an input failed
                results.append((StepMeta(status="failed", started=started, duration_s=time.time() - started,
                                         error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"), None))
                continue
            results.append((meta, output_ref if meta.status in ("ok", "no-evidence") else None))
        return results

    def fetch(self, handle: Any) -> Any:
        import ray

        return ray.get(handle)

    def end(self) -> None:
        self._box = None


def start_ray(*, address: str | None = None, num_cpus: int | None = None, loopback_only: bool = False) -> None:
    """Connect to the cluster at `address`, or start a local Ray (no dashboard) with `num_cpus` workers.

    `loopback_only`: a local Ray listens on 127.0.0.1 only (for a service bound to localhost). Ray
    otherwise resolves its node address to the machine's external one and its ports answer there; its
    single-machine mode, chosen by this environment variable, keeps them on the loopback. The variable is
    read when `ray` is first imported, so it must be set before that (start-up code imports Ray here).
    """
    import os

    if loopback_only and not address:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        # Ray starts workers at niceness 15 so they yield to its own daemons; on a machine shared with
        # other work that makes every step several times slower than the same code in the driver.
        # The steps *are* the job here, so they run at the driver's priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=num_cpus or max(os.cpu_count() or 1, 2), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
