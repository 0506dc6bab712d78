"""The runbook syntax tree, its parser (lark, LALR) and its canonical pretty-printer.

`parse(text)` gives a `Runbook`; `str(runbook)` (or `format_runbook`) prints it in the canonical
layout, so `str(parse(text))` is the canonical form of `text` and `parse(str(r)) == r`. Source
positions ride along on the nodes for error messages but take no part in equality.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from flipmoe.errors import FlipmoeInputError

GRAMMAR_PATH = Path(__file__).with_name("grammar.lark")
ACTIONS = ("backtrack", "stop", "continue")
"""What a step that finds no evidence makes the runtime do (continue is the default)."""
KEYWORDS = frozenset({"runbook", "budget", "steps", "time", "step", "parallel", "if", "else", "hypotheses", "in",
                      "limit", "finally", "timeout", "retries", "on", "no_evidence", "and", "or", "not", "true",
                      "false", "none", *ACTIONS})
"""Words that cannot name a step or a hypothesis variable."""
_WRAP_AT = 100
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class RunbookError(FlipmoeInputError):
    """A syntax or type error in a runbook, at a line and column (1-based; 0 when unknown)."""

    def __init__(self, message: str, line: int = 0, column: int = 0, *, source: str | None = None) -> None:
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(f"{where}{message}", path=source)
        self.message, self.line = message, line
        self.column = column  # type: ignore[assignment]  # a source column here, not a table's


# ----------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Duration:
    amount: float
    unit: str

    @property
    def seconds(self) -> float:
        return self.amount * _UNIT_SECONDS[self.unit]

    def __str__(self) -> str:
        amount = int(self.amount) if float(self.amount).is_integer() else self.amount
        return f"{amount}{self.unit}"


@dataclass(frozen=True)
class Literal:
    """A constant: str, int, float, bool, None, a Duration, or a list of literals and references."""

    value: str | int | float | bool | Duration | None
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        v = self.value
        if v is None:
            return "none"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, Duration):
            return str(v)
        return _number(v)


@dataclass(frozen=True)
class ListValue:
    items: tuple[Value, ...]
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return "[" + ", ".join(str(i) for i in self.items) + "]"


@dataclass(frozen=True)
class Ref:
    """`step`, `step.field.subfield`, or a hypothesis variable."""

    path: tuple[str, ...]
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    @property
    def root(self) -> str:
        return self.path[0]

    def __str__(self) -> str:
        return ".".join(self.path)


Value = Literal | ListValue | Ref


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else repr(float(x))


# ------------------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Compare:
    left: Value
    op: str
    """One of == != < <= > >= in; 'truthy' for a bare operand (then `right` is None)."""
    right: Value | None = None

    def __str__(self) -> str:
        if self.op == "truthy":
            return str(self.left)
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True)
class Not:
    operand: Condition

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"not ({inner})" if isinstance(self.operand, (And, Or)) else f"not {inner}"


@dataclass(frozen=True)
class And:
    operands: tuple[Condition, ...]

    def __str__(self) -> str:
        return " and ".join(f"({o})" if isinstance(o, (And, Or)) else str(o) for o in self.operands)


@dataclass(frozen=True)
class Or:
    operands: tuple[Condition, ...]

    def __str__(self) -> str:
        return " or ".join(f"({o})" if isinstance(o, Or) else str(o) for o in self.operands)


Condition = Compare | Not | And | Or


# ------------------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Arg:
    name: str
    value: Value
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


@dataclass(frozen=True)
class Step:
    """`step NAME = ACTOR(args) [timeout D] [retries N] [on no_evidence: ACTION]`."""

    name: str
    actor: str
    args: tuple[Arg, ...] = ()
    timeout: Duration | None = None
    retries: int | None = None
    on_no_evidence: str | None = None
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)

    def lines(self, indent: str) -> list[str]:
        options = ""
        if self.timeout is not None:
            options += f" timeout {self.timeout}"
        if self.retries is not None:
            options += f" retries {self.retries}"
        if self.on_no_evidence is not None:
            options += f" on no_evidence: {self.on_no_evidence}"
        one_line = f"{indent}step {self.name} = {self.actor}({', '.join(str(a) for a in self.args)}){options}"
        if len(one_line) <= _WRAP_AT or not self.args:
            return [one_line]
        inner = [f"{indent}  {a}," for a in self.args]
        inner[-1] = inner[-1][:-1]
        return [f"{indent}step {self.name} = {self.actor}(", *inner, f"{indent}){options}"]


@dataclass(frozen=True)
class Parallel:
    steps: tuple[Step, ...]
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    def lines(self, indent: str) -> list[str]:
        return [f"{indent}parallel {{", *(x for s in self.steps for x in s.lines(indent + "  ")), f"{indent}}}"]


@dataclass(frozen=True)
class If:
    condition: Condition
    then: tuple[Statement, ...]
    otherwise: tuple[Statement, ...] = ()
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    def lines(self, indent: str) -> list[str]:
        out = [f"{indent}if {self.condition} {{", *_body(self.then, indent + "  ")]
        if len(self.otherwise) == 1 and isinstance(self.otherwise[0], If):
            nested = self.otherwise[0].lines(indent)
            out.append(f"{indent}}} else {nested[0].lstrip()}")
            return out + nested[1:]
        if self.otherwise:
            out += [f"{indent}}} else {{", *_body(self.otherwise, indent + "  ")]
        return out + [f"{indent}}}"]


@dataclass(frozen=True)
class Hypotheses:
    """Try each element of `source` in order as `var`; a backtrack in the body moves to the next."""

    var: str
    source: Ref
    body: tuple[Statement, ...]
    limit: int | None = None
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    def lines(self, indent: str) -> list[str]:
        limit = f" limit {self.limit}" if self.limit is not None else ""
        return [f"{indent}hypotheses {self.var} in {self.source}{limit} {{", *_body(self.body, indent + "  "),
                f"{indent}}}"]


Statement = Step | Parallel | If | Hypotheses


@dataclass(frozen=True)
class Budget:
    steps: int | None = None
    time: Duration | None = None

    def __str__(self) -> str:
        items = ([f"steps={self.steps}"] if self.steps is not None else []) + \
                ([f"time={self.time}"] if self.time is not None else [])
        return "budget " + " ".join(items)


@dataclass(frozen=True)
class Runbook:
    name: str
    description: str
    body: tuple[Statement, ...]
    budget: Budget | None = None
    final: tuple[Step, ...] = ()
    """Steps that always run, even after a stop or an exhausted budget (report assembly)."""

    def __str__(self) -> str:
        return format_runbook(self)

    def steps(self) -> list[Step]:
        """Every step, in document order (hypothesis bodies and both branches of conditions included)."""
        return [*_walk(self.body), *self.final]


def _body(statements: tuple[Statement, ...], indent: str) -> list[str]:
    return [line for s in statements for line in s.lines(indent)]


def _walk(statements: tuple[Statement, ...]) -> list[Step]:
    out: list[Step] = []
    for s in statements:
        if isinstance(s, Step):
            out.append(s)
        elif isinstance(s, Parallel):
            out.extend(s.steps)
        elif isinstance(s, If):
            out += _walk(s.then) + _walk(s.otherwise)
        else:
            out += _walk(s.body)
    return out


def format_runbook(runbook: Runbook) -> str:
    """The canonical text: header, budget, a blank line, one statement per line, 2-space indents."""
    lines = [f"runbook {runbook.name} {json.dumps(runbook.description)}"]
    if runbook.budget is not None:
        lines.append(str(runbook.budget))
    lines.append("")
    lines += _body(runbook.body, "")
    if runbook.final:
        lines += ["finally {", *(x for s in runbook.final for x in s.lines("  ")), "}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- parser


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                maybe_placeholders=True)


def grammar_text() -> str:
    """The lark grammar, e.g. for grammar-constrained decoding."""
    return GRAMMAR_PATH.read_text(encoding="utf-8")


def _pos(meta_or_token: object) -> dict[str, int]:
    return {"line": getattr(meta_or_token, "line", 0) or 0, "column": getattr(meta_or_token, "column", 0) or 0}


def _int(token: Token, what: str) -> int:
    text = str(token)
    if not text.lstrip("-").isdigit() or int(text) < 0:
        raise RunbookError(f"{what} must be a whole number >= 0, got {text}", token.line or 0, token.column or 0)
    return int(text)


@v_args(meta=True)
class _ToTree(Transformer):  # type: ignore[type-arg]
    def start(self, meta, items):  # type: ignore[no-untyped-def]
        name, description, *rest = items
        budget = rest.pop(0) if rest and isinstance(rest[0], Budget) else None
        final: tuple[Step, ...] = ()
        if rest and isinstance(rest[-1], tuple):
            final = rest.pop()
        return Runbook(name=str(name), description=json.loads(description), budget=budget, body=tuple(rest),
                       final=final)

    def budget(self, meta, items):  # type: ignore[no-untyped-def]
        values: dict[str, object] = {}
        for key, value, line, column in items:
            if key in values:
                raise RunbookError(f"budget {key} is given twice", line, column)
            values[key] = value
        return Budget(**values)  # type: ignore[arg-type]

    def budget_steps(self, meta, items):  # type: ignore[no-untyped-def]
        return "steps", _int(items[0], "budget steps"), items[0].line, items[0].column

    def budget_time(self, meta, items):  # type: ignore[no-untyped-def]
        return "time", items[0].value, items[0].line, items[0].column

    def step(self, meta, items):  # type: ignore[no-untyped-def]
        name, actor, *rest = items
        args = tuple(a for a in rest if isinstance(a, Arg))
        options: dict[str, object] = {}
        for option in rest:
            if isinstance(option, tuple):
                key, value, token = option
                if key in options:
                    raise RunbookError(f"step {name}: '{key}' is given twice", token.line, token.column)
                options[key] = value
        seen: set[str] = set()
        for a in args:
            if a.name in seen:
                raise RunbookError(f"step {name}: argument {a.name!r} is given twice", a.line, a.column)
            seen.add(a.name)
        return Step(name=str(name), actor=str(actor), args=args, **options, **_pos(meta))  # type: ignore[arg-type]

    def arg(self, meta, items):  # type: ignore[no-untyped-def]
        return Arg(str(items[0]), items[1], **_pos(meta))

    def timeout(self, meta, items):  # type: ignore[no-untyped-def]
        return "timeout", items[0].value, items[0]

    def retries(self, meta, items):  # type: ignore[no-untyped-def]
        return "retries", _int(items[0], "retries"), items[0]

    def on_no_evidence(self, meta, items):  # type: ignore[no-untyped-def]
        return "on_no_evidence", str(items[0]), items[0]

    def parallel(self, meta, items):  # type: ignore[no-untyped-def]
        return Parallel(tuple(items), **_pos(meta))

    def block(self, meta, items):  # type: ignore[no-untyped-def]
        return list(items)

    def final(self, meta, items):  # type: ignore[no-untyped-def]
        return tuple(items)

    def if_stmt(self, meta, items):  # type: ignore[no-untyped-def]
        condition, then, otherwise = items
        if isinstance(otherwise, If):
            otherwise = [otherwise]
        return If(condition, tuple(then), tuple(otherwise or ()), **_pos(meta))

    def hypotheses(self, meta, items):  # type: ignore[no-untyped-def]
        var, source, limit, body = items
        return Hypotheses(str(var), source, tuple(body), None if limit is None else _int(limit, "limit"),
                          **_pos(meta))

    def or_(self, meta, items):  # type: ignore[no-untyped-def]
        return Or(tuple(items)) if len(items) > 1 else items[0]

    def and_(self, meta, items):  # type: ignore[no-untyped-def]
        return And(tuple(items)) if len(items) > 1 else items[0]

    def not_(self, meta, items):  # type: ignore[no-untyped-def]
        return Not(items[0])

    def compare(self, meta, items):  # type: ignore[no-untyped-def]
        return Compare(items[0], str(items[1]), items[2])

    def contains(self, meta, items):  # type: ignore[no-untyped-def]
        return Compare(items[0], "in", items[1])

    def truthy(self, meta, items):  # type: ignore[no-untyped-def]
        return Compare(items[0], "truthy")

    def string(self, meta, items):  # type: ignore[no-untyped-def]
        return Literal(json.loads(items[0]), **_pos(meta))

    def number(self, meta, items):  # type: ignore[no-untyped-def]
        text = str(items[0])
        return Literal(float(text) if "." in text else int(text), **_pos(meta))

    def span(self, meta, items):  # type: ignore[no-untyped-def]
        amount, unit = items
        if str(amount).startswith("-"):
            raise RunbookError(f"a duration cannot be negative: {amount}{unit}", amount.line, amount.column)
        return Literal(Duration(float(amount), str(unit)), **_pos(meta))

    def true(self, meta, items):  # type: ignore[no-untyped-def]
        return Literal(True, **_pos(meta))

    def false(self, meta, items):  # type: ignore[no-untyped-def]
        return Literal(False, **_pos(meta))

    def none(self, meta, items):  # type: ignore[no-untyped-def]
        return Literal(None, **_pos(meta))

    def list(self, meta, items):  # type: ignore[no-untyped-def]
        return ListValue(tuple(i for i in items if i is not None), **_pos(meta))

    def reference(self, meta, items):  # type: ignore[no-untyped-def]
        return Ref(tuple(str(i) for i in items), **_pos(meta))


def parse(text: str, *, source: str | None = None) -> Runbook:
    """The syntax tree of a runbook; a `RunbookError` with line and column when it is not one."""
    try:
        tree = _parser().parse(text)
        return _ToTree().transform(tree)  # type: ignore[no-any-return]
    except VisitError as err:
        if isinstance(err.orig_exc, RunbookError):
            raise RunbookError(err.orig_exc.message, err.orig_exc.line, int(err.orig_exc.column or 0),
                               source=source) from None
        raise
    except UnexpectedInput as err:
        line, column = int(err.line or 0), int(err.column or 0)
        if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
            lines = text.rstrip().split("\n")
            line, column = len(lines), len(lines[-1]) + 1  # just past the last character
        raise RunbookError(_syntax_message(err, text), line, column, source=source) from None


def _syntax_message(err: UnexpectedInput, text: str) -> str:
    if isinstance(err, UnexpectedEOF):
        return "the runbook ends too early (an unclosed '{' or '(' ?)"
    if isinstance(err, UnexpectedToken):
        expected = ", ".join(sorted(_readable(t) for t in err.expected)[:8])
        if err.token.type == "$END":
            return f"the runbook ends too early; expected {expected}"
        return f"unexpected {err.token.value!r}; expected {expected}"
    if isinstance(err, UnexpectedCharacters):
        return f"unexpected character {text[err.pos_in_stream or 0]!r}"
    return str(err).splitlines()[0]


_TERMINAL_WORDS = {"LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['", "RSQB": "']'",
                   "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "DOT": "'.'", "NAME": "a name",
                   "STRING": "a string", "NUMBER": "a number", "UNIT": "a unit (ms, s, m, h)",
                   "COMPARATOR": "a comparison", "ACTION": "backtrack, stop or continue"}


def _readable(terminal: str) -> str:
    if terminal in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[terminal]
    return f"'{terminal.lower()}'" if terminal.isupper() else terminal
