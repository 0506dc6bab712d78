"""The contamination gate of every expert (and so every bundle) build: no evaluation source or generator in
a training corpus, and a held-out item that leaks into the training data fails the build."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from data_pipeline.contamination import (
    ContaminationError,
    check_training_data,
    evaluation_source_texts,
    leaked,
    without_evaluation_sources,
)
from data_pipeline.examples import TaskExample
from experts.sources import Sources

REPO = Path(__file__).resolve().parents[1]
HELDOUT = "payment-svc-7f9c ERROR charge declined for order 4411 because the card expired yesterday"


def test_evaluation_sources_and_generators_are_dropped_from_a_corpus() -> None:
    sources = evaluation_source_texts()
    harness = (REPO / "eval" / "harness.py").read_text(encoding="utf-8")
    generator = (REPO / "data_pipeline" / "chaos" / "__init__.py").read_text(encoding="utf-8")
    kept, dropped = without_evaluation_sources(["real code\n", harness, generator], sources=sources)
    assert kept == ["real code\n"] and dropped == 2


def test_the_code_corpus_holds_no_evaluation_source_after_the_gate() -> None:
    from experts.registry import get_spec

    corpus = get_spec("code").corpus(Sources(shared_data=None))
    kept, check = check_training_data("code", corpus, [], {})
    sources = evaluation_source_texts()
    assert check.evaluation_sources_dropped > 0  # the chaos gym's templates were in it
    assert not any(" ".join(d.split()).lower() in sources for d in kept)


def test_leaks_are_verbatim_word_bounded_and_long_enough_to_mean_something() -> None:
    texts = ["INFO started\n" + HELDOUT.upper() + "\nINFO stopped", "Got assigned task 1180 of 2"]
    assert leaked([HELDOUT, "Got assigned task 118", "Got assigned task 118 of 2 now", "unrelated words " * 4],
                  texts) == [0]


def test_the_gate_drops_contaminated_pretraining_text_and_fails_on_leaked_examples() -> None:
    heldout = {"log_level": [HELDOUT]}
    corpus, check = check_training_data("logs", ["clean document", f"before\n{HELDOUT}\nafter"], [], heldout)
    assert corpus == ["clean document"] and check.documents_dropped == 1 and not check.leaks
    with pytest.raises(ContaminationError, match="logs: held-out evaluation items occur in the training data"):
        check_training_data("logs", ["clean document"], [f"{HELDOUT}\nERROR"], heldout)


def test_a_bundle_build_fails_when_an_item_leaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import experts.build
    from experts.registry import get_spec
    from router.bundle import build_bundle

    real = get_spec("logs")
    leak = TaskExample(task="log_level", input=HELDOUT, target="ERROR")
    fake = replace(real, family="logs", corpus=lambda sources: ["a clean pretraining document"],
                   task_data=lambda sources, split: {"log_level": [leak]})
    monkeypatch.setattr(experts.build, "get_spec", lambda family: fake)
    monkeypatch.setattr(experts.build, "EXPERT_FAMILIES", {"logs": "experts.logs"})
    with pytest.raises(ContaminationError, match="log_level 1"):
        build_bundle(tmp_path / "bundle", sources=Sources(shared_data=None), progress=False)
    assert not (tmp_path / "bundle").exists()


def test_a_leak_next_to_punctuation_or_quotes_is_found() -> None:
    from data_pipeline.contamination import leaked

    query = ["the quick brown fox jumps over the lazy dog"]
    assert leaked(query, ['he said "The quick  brown fox jumps over the lazy dog."']) == [0]
    assert leaked(query, ["xthe quick brown fox jumps over the lazy dogs"]) == []  # inside other words: not a leak
