"""Static validation of a runbook against the actors' schemas, giving an executable `Plan`.

Checked before anything runs, each error with the line and column of the offending node:
unknown actors; unknown, missing or mistyped arguments (literals are validated by the input
field's pydantic type, references by the type of the output field they name); references to steps
not defined earlier or to output fields that do not exist; a step name used twice (except in the
two branches of a condition, for the same actor); `backtrack` outside a hypotheses block; a
hypothesis source that is not a list.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from director.actors.base import ActorSpec, Trials
from director.dsl.syntax import (
    KEYWORDS,
    And,
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
    Runbook,
    RunbookError,
    Statement,
    Step,
    Value,
)


@dataclass(frozen=True)
class Plan:
    """A validated runbook: its syntax tree plus the actor of every step and the type of every name."""

    runbook: Runbook
    actors: dict[str, ActorSpec]
    """Step name -> the actor it calls."""
    types: dict[str, Any]
    """Step name or hypothesis variable -> its type (an output model, `Trials[...]`, an element type)."""
    literals: dict[tuple[str, str], Any]
    """(step, argument) -> the literal's value, already validated (durations as seconds)."""

    @property
    def text(self) -> str:
        return str(self.runbook)


def compile_runbook(runbook: Runbook, actors: dict[str, ActorSpec], *, source: str | None = None) -> Plan:
    """Validate `runbook` against the `actors` registry; a `RunbookError` names the first problem."""
    checker = _Checker(actors, source)
    checker.block(runbook.body, scope={}, in_hypotheses=False, branch=None)
    checker.block(tuple(runbook.final), scope=dict(checker.defined), in_hypotheses=False, branch=None)
    return Plan(runbook=runbook, actors=checker.step_actors, types=checker.defined, literals=checker.literals)


class _Checker:
    def __init__(self, actors: dict[str, ActorSpec], source: str | None) -> None:
        self.actors = actors
        self.source = source
        self.defined: dict[str, Any] = {}
        self.step_actors: dict[str, ActorSpec] = {}
        self.branch_of: dict[str, tuple[int, int]] = {}
        self.literals: dict[tuple[str, str], Any] = {}
        self._branches = 0

    def error(self, message: str, node: Any) -> RunbookError:
        return RunbookError(message, getattr(node, "line", 0), getattr(node, "column", 0), source=self.source)

    def block(self, statements: tuple[Statement, ...], *, scope: dict[str, Any], in_hypotheses: bool,
              branch: tuple[int, int] | None) -> None:
        for statement in statements:
            if isinstance(statement, Step):
                self.step(statement, scope, in_hypotheses, branch)
            elif isinstance(statement, Parallel):
                names = {s.name for s in statement.steps}
                for step in statement.steps:
                    for ref in _refs(step):
                        if ref.root in names:
                            raise self.error(f"step {step.name} uses {ref.root}, which runs in the same "
                                             "parallel block; move it after the block", ref)
                    self.step(step, scope, in_hypotheses, branch)
            elif isinstance(statement, If):
                self.condition(statement.condition, scope)
                self._branches += 1
                then_scope, else_scope = dict(scope), dict(scope)
                self.block(statement.then, scope=then_scope, in_hypotheses=in_hypotheses,
                           branch=(self._branches, 0))
                self.block(statement.otherwise, scope=else_scope, in_hypotheses=in_hypotheses,
                           branch=(self._branches, 1))
                for name in (set(then_scope) | set(else_scope)) - set(scope):
                    # defined in one branch only: later steps may see it missing (None)
                    both = name in then_scope and name in else_scope
                    scope[name] = then_scope[name] if both else _optional(then_scope.get(name, else_scope.get(name)))
            else:
                self.hypotheses(statement, scope, branch)

    def hypotheses(self, node: Hypotheses, scope: dict[str, Any], branch: tuple[int, int] | None) -> None:
        if node.var in KEYWORDS or node.var in scope:
            raise self.error(f"hypothesis variable {node.var!r} is a keyword or already names a step", node)
        source_type = self.ref_type(node.source, scope)
        element = _list_element(source_type)
        if element is None:
            raise self.error(f"hypotheses need a list to iterate over; {node.source} is {_show(source_type)}",
                             node.source)
        inner = dict(scope)
        inner[node.var] = element
        self.block(node.body, scope=inner, in_hypotheses=True, branch=branch)
        for name in set(inner) - set(scope) - {node.var}:
            scope[name] = _optional(inner[name])  # no hypothesis may be accepted
        scope[node.var] = Trials[element]  # type: ignore[valid-type]
        self.defined[node.var] = Trials[element]  # type: ignore[valid-type]

    def step(self, step: Step, scope: dict[str, Any], in_hypotheses: bool, branch: tuple[int, int] | None) -> None:
        if step.name in KEYWORDS:
            raise self.error(f"{step.name!r} is a keyword and cannot name a step", step)
        spec = self.actors.get(step.actor)
        if spec is None:
            raise self.error(f"unknown actor {step.actor!r}; actors: {', '.join(sorted(self.actors))}", step)
        if step.name in self.step_actors:
            earlier = self.branch_of.get(step.name)
            exclusive = branch is not None and earlier is not None and earlier[0] == branch[0] != 0 \
                and earlier[1] != branch[1]
            if not exclusive or self.step_actors[step.name].name != spec.name:
                raise self.error(f"step name {step.name!r} is used twice", step)
        if step.on_no_evidence == "backtrack" and not in_hypotheses:
            raise self.error(f"step {step.name}: 'backtrack' only works inside a hypotheses block", step)
        fields = spec.input.model_fields
        for arg in step.args:
            field = fields.get(arg.name)
            if field is None:
                raise self.error(f"actor {spec.name} has no argument {arg.name!r}; arguments: "
                                 f"{', '.join(fields) or 'none'}", arg)
            self.argument(step, arg.name, arg.value, field.annotation, scope, constraints=field.metadata)
        given = {a.name for a in step.args}
        missing = [name for name, f in fields.items() if f.is_required() and name not in given]
        if missing:
            raise self.error(f"step {step.name}: actor {spec.name} needs {', '.join(missing)}", step)
        self.step_actors[step.name] = spec
        self.branch_of[step.name] = branch or (0, 0)
        scope[step.name] = spec.output
        self.defined[step.name] = spec.output

    def argument(self, step: Step, name: str, value: Value, annotation: Any, scope: dict[str, Any],
                 constraints: list[Any] | None = None) -> None:
        if isinstance(value, Ref):
            found = self.ref_type(value, scope)
            if not assignable(found, annotation):
                raise self.error(f"step {step.name}: argument {name} wants {_show(annotation)}, but {value} is "
                                 f"{_show(found)}", value)
            return
        if isinstance(value, ListValue) and any(isinstance(i, Ref) for i in value.items):
            element = _list_element(annotation)
            if element is None:
                raise self.error(f"step {step.name}: argument {name} wants {_show(annotation)}, not a list", value)
            for item in value.items:
                self.argument(step, name, item, element, scope)
            return
        try:
            checked: Any = typing.Annotated[(annotation, *constraints)] if constraints else annotation  # ge=, le=
            self.literals[(step.name, name)] = TypeAdapter(checked).validate_python(_python(value), strict=True)
        except ValidationError as err:
            problem = err.errors()[0]["msg"]
            raise self.error(f"step {step.name}: argument {name}={value} does not fit {_show(annotation)} "
                             f"({problem})", value) from None

    def ref_type(self, ref: Ref, scope: dict[str, Any]) -> Any:
        if ref.root not in scope:
            raise self.error(f"{ref.root!r} is not a step defined before this point", ref)
        current = scope[ref.root]
        optional = False
        for part in ref.path[1:]:
            alternatives = [a for a in _alternatives(current) if a is not type(None)]
            optional = optional or len(alternatives) < len(_alternatives(current))
            model = alternatives[0] if len(alternatives) == 1 else None
            if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
                fields = ", ".join(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) \
                    else "none"
                raise self.error(f"{ref} : {_show(current)} has no field {part!r} (fields: {fields})", ref)
            current = model.model_fields[part].annotation
        return _optional(current) if optional else current

    def condition(self, condition: Condition, scope: dict[str, Any]) -> None:
        if isinstance(condition, (And, Or)):
            for operand in condition.operands:
                self.condition(operand, scope)
        elif isinstance(condition, Not):
            self.condition(condition.operand, scope)
        else:
            for value in (condition.left, condition.right):
                for ref in _value_refs(value):
                    self.ref_type(ref, scope)


def _refs(step: Step) -> list[Ref]:
    return [r for a in step.args for r in _value_refs(a.value)]


def _value_refs(value: Value | None) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, ListValue):
        return [r for i in value.items for r in _value_refs(i)]
    return []


def _python(value: Value) -> Any:
    if isinstance(value, ListValue):
        return [_python(i) for i in value.items]
    assert isinstance(value, Literal)
    return value.value.seconds if isinstance(value.value, Duration) else value.value


# ------------------------------------------------------------------------------------------- types


def _optional(tp: Any) -> Any:
    return tp if tp is Any else typing.Optional[tp]  # noqa: UP045  (tp is a runtime value)


def _alternatives(tp: Any) -> list[Any]:
    tp = _strip_annotated(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [a for arg in get_args(tp) for a in _alternatives(arg)]
    return [tp]


def _strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    return tp


def _list_element(tp: Any) -> Any:
    options = [a for a in _alternatives(tp) if a is not type(None)]
    if len(options) == 1 and get_origin(options[0]) in (list, tuple):
        return _strip_annotated(get_args(options[0])[0]) if get_args(options[0]) else Any
    return None


def assignable(source: Any, target: Any) -> bool:
    """Whether a value of type `source` may be passed where `target` is declared (None included)."""
    if target is Any or source is Any:
        return True
    targets = _alternatives(target)
    return all(any(_assignable_one(s, t) for t in targets) for s in _alternatives(source))


def _assignable_one(source: Any, target: Any) -> bool:
    if target is Any or source is Any or source == target:
        return True
    if get_origin(source) is None and get_origin(target) is None:
        if isinstance(source, type) and isinstance(target, type):
            return issubclass(source, target) or (source is int and target is float)
        return False
    if get_origin(target) is typing.Literal:
        return get_origin(source) is typing.Literal and set(get_args(source)) <= set(get_args(target))
    if get_origin(source) == get_origin(target) and get_origin(source) in (list, tuple, dict):
        return all(assignable(a, b) for a, b in zip(get_args(source), get_args(target), strict=False))
    return False


def _show(tp: Any) -> str:
    names = []
    for a in _alternatives(tp):
        if a is type(None):
            names.append("none")
        elif get_origin(a) is not None:
            names.append(repr(a).replace("typing.", ""))
        else:
            names.append(getattr(a, "__name__", repr(a)))
    return " | ".join(names)
