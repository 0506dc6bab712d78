"""Constrained decoding on an untrained expert: whatever the weights, the output is in the language."""

from __future__ import annotations

import json
import random
import re

import jsonschema
import lark
import pytest
import torch

from data_pipeline.tokenizer import Tokenizer, train_tokenizer
from experts.config import ExpertConfig, ModelConfig, TokenizerConfig, TrainConfig
from experts.constrained import GrammarConstraint, JsonSchemaConstraint, RegexConstraint, piece_bytes
from experts.expert import Expert
from flipmoe.errors import FlipmoeInputError

SEEDS = (0, 1, 2, 3, 4)
BUDGET = 256
"""Every language below is bounded well inside this many tokens, even spelled one byte piece at a time."""


def _corpus(n: int = 300) -> list[str]:
    rng = random.Random(0)
    services = ["checkout", "cart", "payment", "frontend", "redis-cart", "café-api"]
    lines = []
    for i in range(n):
        service = rng.choice(services)
        lines.append(f"2026-03-01T10:{i % 60:02d}:00Z {service} ERROR request id={rng.randint(0, 99999)} "
                     f"failed after {rng.randint(1, 999)}ms  (retry {i % 3})")
        lines.append(json.dumps({"service": service, "fault_type": rng.choice(["cpu_hog", "memory_leak"]),
                                 "score": round(rng.random(), 3), "ok": rng.random() < 0.5}))
    return lines


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(_corpus(), TokenizerConfig(vocab_size=400))


@pytest.fixture(scope="module")
def expert(tokenizer: Tokenizer) -> Expert:
    torch.set_num_threads(1)
    tokenizer_config = TokenizerConfig(vocab_size=tokenizer.vocab_size)
    model = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_layers=2,
                        num_heads=2, num_kv_heads=1, max_seq_len=512)
    config = ExpertConfig(name="tiny", family="logs", tokenizer=tokenizer_config, model=model,
                          train=TrainConfig(seed=3))
    return Expert.create(config, tokenizer)


def _generations(expert: Expert, constraint: object) -> list[str]:
    """Greedy, then sampled at temperature 1 (full and nucleus) with several seeds."""
    settings = [{"temperature": 0.0}] + [{"temperature": 1.0, "top_p": 1.0 if s % 2 else 0.9, "seed": s}
                                         for s in SEEDS]
    texts = []
    for setting in settings:
        out = expert.generate("checkout ERROR request failed", task="rca", max_new_tokens=BUDGET,
                              constraint=constraint, **setting)  # type: ignore[arg-type]
        assert out.finish_reason == "stop", (setting, out)
        texts.append(out.text)
    return texts


def test_piece_bytes_spell_what_the_tokenizer_decodes(tokenizer: Tokenizer) -> None:
    surfaces = piece_bytes(tokenizer)
    assert surfaces[tokenizer.eos_id].startswith(b"\xff") and surfaces[tokenizer.sentinel_ids[0]].startswith(b"\xff")
    assert surfaces[tokenizer.piece_id("<0xE4>")] == b"\xe4"
    for text in ("checkout  ERROR\tid=42", " leading space", "café 中文 ▁x", '{"ok": true}\n'):
        ids = tokenizer.encode(text)
        assert b"".join(surfaces[i] for i in ids).decode("utf-8") == tokenizer.decode(ids)
    assert any(b" " in s for s in surfaces), "pieces with '▁' spell spaces"


def test_json_schema_outputs_parse_and_validate(expert: Expert) -> None:
    schema = {
        "type": "object",
        "properties": {
            "service": {"type": "string", "enum": ["checkout", "cart", "redis-cart"]},
            "score": {"type": "integer", "minimum": 0, "maximum": 100},
            "summary": {"type": "string", "maxLength": 12},
            "evidence": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
            "confirmed": {"type": "boolean"},
        },
        "required": ["service", "score", "summary", "confirmed"],
        "additionalProperties": False,
    }
    for text in _generations(expert, JsonSchemaConstraint(schema)):
        jsonschema.validate(json.loads(text), schema)


def test_regex_outputs_match_fully_including_byte_fallback_characters(expert: Expert) -> None:
    # "中文" is not in the tokenizer's corpus: it can only be spelled with byte pieces.
    pattern = r"(checkout|cart)-[0-9]{2,4} (café|中文|ok) [a-z]{1,8}"
    texts = _generations(expert, RegexConstraint(pattern))
    assert all(re.fullmatch(pattern, t) for t in texts), texts


def test_lark_grammar_outputs_parse(expert: Expert) -> None:
    runbook = r"""
start: step (";" step)~0..2
step: "check " SERVICE " " SIGNAL | "compare " SERVICE " baseline"
SERVICE: "checkout" | "cart" | "payment"
SIGNAL: "cpu" | "latency" | "errors"
"""
    parser = lark.Lark(runbook)
    for text in _generations(expert, GrammarConstraint(runbook)):
        parser.parse(text)


def test_eos_is_allowed_only_once_the_output_is_complete(tokenizer: Tokenizer) -> None:
    processor = RegexConstraint(r"ca(rt)?").logits_processor(tokenizer)
    prompt = torch.tensor([tokenizer.encode("x", bos=True)])
    scores = torch.zeros((1, tokenizer.vocab_size))
    allowed = processor(prompt, scores.clone())
    assert torch.isinf(allowed[0, tokenizer.eos_id]) and torch.isfinite(allowed[0, tokenizer.piece_id("c")])
    after_c = torch.cat([prompt, torch.tensor([[tokenizer.piece_id("c")]])], dim=1)
    allowed = processor(after_c, scores.clone())
    assert torch.isinf(allowed[0, tokenizer.eos_id])
    after_ca = torch.cat([after_c, torch.tensor([[tokenizer.piece_id("a")]])], dim=1)
    allowed = processor(after_ca, scores.clone())
    assert torch.isfinite(allowed[0, tokenizer.eos_id]) and torch.isfinite(allowed[0, tokenizer.piece_id("r")])
    assert torch.isinf(allowed[0, tokenizer.piece_id("c")])


def test_constrained_generation_is_reproducible_per_seed(expert: Expert) -> None:
    constraint = RegexConstraint(r"[a-z]{3,10}")
    first, again = (expert.generate("x", constraint=constraint, temperature=1.0, seed=7, max_new_tokens=40)
                    for _ in range(2))
    assert first.text == again.text


@pytest.mark.parametrize("make, message", [
    (lambda: RegexConstraint(r"(?=a)b"), "look-around"),
    (lambda: GrammarConstraint("start: missing_rule"), "missing_rule"),
    (lambda: JsonSchemaConstraint([{"type": "object"}]), "must be a dict"),  # type: ignore[arg-type]
])
def test_invalid_constraints_say_what_is_wrong(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FlipmoeInputError, match=message):
        make()


def test_constraint_with_a_bigger_model_vocabulary(tokenizer: Tokenizer) -> None:
    """Rows of the logits past the tokenizer's vocabulary (padded embedding tables) are never sampled."""
    processor = RegexConstraint(r"[a-z]+").logits_processor(tokenizer)
    scores = torch.zeros((1, tokenizer.vocab_size + 8))
    masked = processor(torch.tensor([[tokenizer.bos_id]]), scores)
    assert torch.isinf(masked[0, tokenizer.vocab_size:]).all()
    assert torch.isfinite(masked[0, tokenizer.piece_id("c")])
