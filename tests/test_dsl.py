"""The runbook DSL: parsing, the canonical printer, static validation against the actors' schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from director.dsl import RunbookError, load_plan, parse
from director.dsl.syntax import (
    And,
    Arg,
    Budget,
    Compare,
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
    Step,
)

RUNBOOKS = sorted((Path(__file__).resolve().parents[1] / "director" / "runbooks").glob("*.flow"))

MESSY = """runbook   demo "a runbook, written carelessly"   budget time=30s steps=12
# comments and layout do not matter
step triage = triage( )
parallel { step metrics = analyse_metrics()   step logs = analyse_logs() timeout 5s
}
step rank = localize(metrics=metrics, logs=logs, top=5) retries 1
hypotheses h in rank.suspects limit 2 {
  step check = verify(suspect=h, logs=logs, min_strength=0.5) on no_evidence: backtrack }
if "logs" in triage.modalities and not (rank.modalities == [] or metrics.anomalies < 1) {
  step d = diagnose(suspect=h.best) }
else { step d = diagnose(suspect=h.best, rank=rank) }
finally { step report = assemble(rank=rank, trials=h, diagnosis=d, logs=logs, metrics=metrics, top=3) }
"""


def test_knowledge_base_runbooks_are_canonical_and_valid():
    assert len(RUNBOOKS) >= 4
    for path in RUNBOOKS:
        text = path.read_text()
        plan = load_plan(text, source=str(path))
        without_comments = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
        assert str(plan.runbook) == without_comments, path.name
        assert {"localize", "verify", "assemble"} <= {spec.name for spec in plan.actors.values()}


def test_round_trip_of_a_messy_runbook():
    tree = parse(MESSY)
    canonical = str(tree)
    assert parse(canonical) == tree
    assert str(parse(canonical)) == canonical
    assert canonical.startswith('runbook demo "a runbook, written carelessly"\nbudget steps=12 time=30s\n\n')
    assert "  step check = verify(suspect=h, logs=logs, min_strength=0.5) on no_evidence: backtrack" in canonical
    assert tree.budget == Budget(steps=12, time=Duration(30, "s"))
    load_plan(MESSY)


def test_syntax_tree_shape():
    tree = parse(MESSY)
    assert [type(s).__name__ for s in tree.body] == ["Step", "Parallel", "Step", "Hypotheses", "If"]
    hypotheses = tree.body[3]
    assert isinstance(hypotheses, Hypotheses) and hypotheses.limit == 2
    assert hypotheses.source == Ref(("rank", "suspects"))
    check = hypotheses.body[0]
    assert isinstance(check, Step) and check.on_no_evidence == "backtrack"
    condition = tree.body[4].condition
    assert isinstance(condition, And) and isinstance(condition.operands[1], Not)
    assert tree.body[1].steps[1].timeout == Duration(5, "s") and tree.body[2].retries == 1


@pytest.mark.parametrize(("text", "line", "column", "words"), [
    ('runbook a "b"\nstep x = triage(', 2, 17, "ends too early"),
    ('runbook a "b"\nstep x = triage()\n  step y = verify(suspect=)', 3, 27, "unexpected ')'"),
    ('runbook a "b"\nstep x = triage() on no_evidence: explode', 2, 35, "backtrack, stop or continue"),
    ('runbook a "b" budget memory=3', 1, 22, "expected 'steps', 'time'"),
    ('runbook a "b"\nstep x = triage(top=1, top=2)', 2, 24, "given twice"),
    ('runbook a "b"\nstep x = triage() timeout 5', 2, 28, "ends too early"),
    ('runbook a "b"\nstep x = triage() $', 2, 19, "unexpected character"),
])
def test_syntax_errors_have_line_and_column(text, line, column, words):
    with pytest.raises(RunbookError) as caught:
        parse(text)
    assert (caught.value.line, caught.value.column) == (line, column), str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize(("body", "line", "column", "words"), [
    ("step x = triage()\nstep y = wizard()", 3, 1, "unknown actor 'wizard'"),
    ("step x = triage(depth=3)", 2, 17, "no argument 'depth'"),
    ('step x = localize(top="five")', 2, 23, "does not fit int"),
    ("step x = localize(top=0)", 2, 23, "greater than or equal to 1"),
    ("step r = localize(metrics=nothing)", 2, 27, "'nothing' is not a step defined before"),
    ("step r = localize(metrics=m)\nstep m = analyse_metrics()", 2, 27, "not a step defined before"),
    ("step l = analyse_logs()\nstep r = localize(metrics=l)", 3, 27, "wants MetricsOutput | none, but l is LogsOutput"),
    ("step m = analyse_metrics()\nstep r = localize(metrics=m.report)", 3, 27, "but m.report is MetricReport"),
    ("step t = triage()\nstep r = localize(top=t.depth)", 3, 23, "has no field 'depth'"),
    ("step t = triage()\nstep v = verify(min_strength=0.5)", 3, 1, "needs suspect"),
    ("step t = triage() on no_evidence: backtrack", 2, 1, "only works inside a hypotheses block"),
    ("step t = triage()\nstep t = triage()", 3, 1, "used twice"),
    ("parallel {\n  step m = analyse_metrics()\n  step r = localize(metrics=m)\n}", 4, 29, "same parallel block"),
    ("step t = triage()\nhypotheses h in t.symptoms {\n  step v = verify(suspect=h)\n}", 4, 27,
     "wants RootCause, but h is str"),
    ("step m = analyse_metrics()\nhypotheses h in m.anomalies {\n}", 3, 17, "hypotheses need a list"),
    ("step true = triage()", 2, 1, "keyword"),
])
def test_type_errors_have_line_and_column(body, line, column, words):
    with pytest.raises(RunbookError) as caught:
        load_plan(f'runbook a "b"\n{body}\n')
    assert words in str(caught.value)
    assert (caught.value.line, caught.value.column) == (line, column), str(caught.value)


def test_a_step_may_be_defined_in_both_branches_and_is_optional_after_one():
    plan = load_plan('runbook a "b"\nstep t = triage()\nif t.symptoms { step m = analyse_metrics() } '
                     'else { step m = analyse_metrics() }\nstep r = localize(metrics=m)\n')
    assert plan.actors["m"].name == "analyse_metrics"
    with pytest.raises(RunbookError, match="used twice"):
        load_plan('runbook a "b"\nstep t = triage()\nif t.symptoms { step m = analyse_metrics() } '
                  'else { step m = analyse_logs() }\n')
    with pytest.raises(RunbookError, match="needs suspect|RootCause, but"):  # only defined when a hypothesis holds
        load_plan('runbook a "b"\nstep t = triage()\nstep r = localize()\nhypotheses h in r.suspects {\n'
                  '  step v = verify(suspect=h) on no_evidence: backtrack\n}\nstep w = verify(suspect=v.suspect)\n')


def test_literals_are_validated_and_kept():
    plan = load_plan('runbook a "b"\nstep t = queries(top=3)\nstep r = localize(top=7, hint_weight=0.1)\n')
    assert plan.literals[("t", "top")] == 3 and plan.literals[("r", "hint_weight")] == 0.1


def test_grammar_works_as_a_decoding_constraint():
    constrained = pytest.importorskip("experts.constrained")
    from director.dsl import grammar_text

    constrained.GrammarConstraint(lark=grammar_text())


# ------------------------------------------------------------------- property: print -> parse is identity

_names = st.sampled_from(["a", "b1", "rank", "check_2", "x_y"])
_literals = st.one_of(
    st.integers(-5, 500).map(Literal), st.floats(0, 100, allow_nan=False).map(lambda f: Literal(round(f, 3))),
    st.text("ab c\"\\é", max_size=6).map(Literal), st.sampled_from([True, False, None]).map(Literal),
    st.tuples(st.sampled_from([0.5, 2.0, 30.0]), st.sampled_from(["ms", "s", "m", "h"])).map(
        lambda t: Literal(Duration(*t))))
_refs = st.lists(_names, min_size=1, max_size=3).map(lambda p: Ref(tuple(p)))
_values = st.recursive(st.one_of(_literals, _refs), lambda inner: st.lists(inner, max_size=3).map(
    lambda items: ListValue(tuple(items))), max_leaves=5)
_steps = st.builds(
    lambda name, actor, args, timeout, retries, action: Step(name, actor, tuple(
        Arg(k, v) for k, v in dict(args).items()), timeout, retries, action),
    _names, _names, st.lists(st.tuples(_names, _values), max_size=4),
    st.none() | st.just(Duration(5, "s")), st.none() | st.integers(0, 3),
    st.none() | st.sampled_from(["backtrack", "stop", "continue"]))
_compares = st.one_of(
    st.builds(lambda v: Compare(v, "truthy"), _values),
    st.builds(lambda a, op, b: Compare(a, op, b), _values, st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in"]),
              _values))
_conditions = st.recursive(_compares, lambda inner: st.one_of(
    inner.map(Not), st.lists(inner, min_size=2, max_size=3).map(lambda c: And(tuple(c))),
    st.lists(inner, min_size=2, max_size=3).map(lambda c: Or(tuple(c)))), max_leaves=5)
_statements = st.recursive(
    st.one_of(_steps, st.lists(_steps, max_size=3).map(lambda s: Parallel(tuple(s)))),
    lambda inner: st.one_of(
        st.builds(lambda c, t, e: If(c, tuple(t), tuple(e)), _conditions, st.lists(inner, max_size=2),
                  st.lists(inner, max_size=2)),
        st.builds(lambda v, s, b, n: Hypotheses(v, s, tuple(b), n), _names, _refs, st.lists(inner, max_size=2),
                  st.none() | st.integers(1, 5))),
    max_leaves=6)
_runbooks = st.builds(lambda n, d, b, body, final: Runbook(n, d, tuple(body), b, tuple(final)),
                      _names, st.text("runbook \"x\"", max_size=12),
                      st.none() | st.builds(Budget, st.none() | st.integers(0, 99),
                                            st.none() | st.just(Duration(1.5, "m"))),
                      st.lists(_statements, max_size=4), st.lists(_steps, max_size=2))


@settings(max_examples=100, deadline=None)
@given(_runbooks)
def test_printing_then_parsing_gives_the_same_tree(tree):
    if tree.budget == Budget():
        return  # 'budget' with no items is not a sentence of the grammar
    text = str(tree)
    assert parse(text) == tree
    assert str(parse(text)) == text
