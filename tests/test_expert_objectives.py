"""Objectives: packing, UL2 denoisers, significance masking, task rows and the curriculum, on a tiny tokenizer."""

from __future__ import annotations

import keyword
import random

import pytest

from data_pipeline.examples import IGNORE_INDEX, TaskExample
from data_pipeline.objectives import (
    UL2_MIXTURE,
    Denoiser,
    causal_sequences,
    curriculum,
    objective_sequences,
    significance_sequences,
    significant_spans,
    task_sequences,
    ul2_sequences,
)
from data_pipeline.tokenizer import Tokenizer, train_tokenizer
from experts.config import ANSWER_OPEN, DENOISER_MODES, TokenizerConfig, format_prompt
from flipmoe.errors import FlipmoeInputError

PYTHON = '''import os


def load_config(path: str, retries: int = 3) -> dict:
    """Read a config file."""
    # a comment with words that are not code
    for attempt in range(retries):
        if os.path.exists(path):
            return {"path": path, "attempt": attempt, "timeout_ms": 250}
    raise FileNotFoundError(path)


class CartService:
    def add_item(self, user_id, product_id, quantity=1):
        total = self.prices[product_id] * quantity
        return self.store.append(user_id, product_id, total)
'''
YAML = '''apiVersion: apps/v1
kind: Deployment
metadata:
  name: cartservice
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: cartservice
          env:
            - name: REDIS_ADDR
              value: "redis-cart:6379"
            - name: CART_TIMEOUT_MS
              value: "800"
'''
GO = '''func (s *server) GetCart(ctx context.Context, req *pb.GetCartRequest) (*pb.Cart, error) {
	// look the cart up in redis
	cart, err := s.store.Get(ctx, req.GetUserId())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "failed to get cart: %v", err)
	}
	return cart, nil
}
'''
LOGS = [f"2024-01-0{i % 9 + 1} INFO cartservice GetCart user={i * 7919 % 1000} took {i % 50}ms" for i in range(60)]
DOCUMENTS = [PYTHON, YAML, GO, *LOGS]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(DOCUMENTS * 3, TokenizerConfig(vocab_size=400))


def _split_at_eos(ids: list[int], eos: int) -> list[list[int]]:
    out: list[list[int]] = [[]]
    for token in ids:
        if token == eos:
            out.append([])
        else:
            out[-1].append(token)
    return [doc for doc in out if doc]


def _answer_start(ids: tuple[int, ...], tokenizer: Tokenizer) -> int:
    return ids.index(tokenizer.symbol_ids[ANSWER_OPEN]) + 1


def _restore(prompt: list[int], answer: list[int], tokenizer: Tokenizer) -> list[int]:
    """Put each sentinel's span from the answer back in place of the sentinel in the prompt."""
    sentinels = set(tokenizer.sentinel_ids)
    spans: dict[int, list[int]] = {}
    current = None
    for token in answer:
        if token in sentinels:
            current = token
            spans[current] = []
        elif current is not None:
            spans[current].append(token)
    restored: list[int] = []
    for token in prompt:
        restored += spans[token] if token in sentinels else [token]
    return restored


def test_causal_rows_pack_every_document_once_with_labels_equal_to_ids(tokenizer):
    rows = causal_sequences(DOCUMENTS, tokenizer, seq_len=64, rng=random.Random(0))
    assert all(row.labels == row.input_ids for row in rows)
    assert all(len(row.input_ids) == 64 for row in rows[:-1]) and len(rows[-1].input_ids) <= 64
    stream = [token for row in rows for token in row.input_ids]
    documents = sorted(tokenizer.decode(doc) for doc in _split_at_eos(stream, tokenizer.eos_id))
    assert documents == sorted(DOCUMENTS)
    assert all(0 < row.difficulty < 1 for row in rows)


def test_ul2_rows_fit_and_restore_the_original_stream(tokenizer):
    rows = ul2_sequences(DOCUMENTS * 4, tokenizer, seq_len=96, rng=random.Random(1))
    modes = {tokenizer.symbol_ids[m]: m for m in DENOISER_MODES}
    seen, stream = set(), []
    for row in rows:
        assert len(row.input_ids) <= 96
        start = _answer_start(row.input_ids, tokenizer)
        # No loss on the mode, the corrupted input and <answer>; loss on every answer token and eos.
        assert row.labels[:start] == (IGNORE_INDEX,) * start
        assert row.labels[start:] == row.input_ids[start:] and row.input_ids[-1] == tokenizer.eos_id
        mode = modes[row.input_ids[0]]
        seen.add(mode)
        prompt, answer = list(row.input_ids[1:start - 1]), list(row.input_ids[start:-1])
        if mode == "[S]":
            assert not set(prompt) & set(tokenizer.sentinel_ids)
            restored = prompt + answer
        else:
            used = [t for t in prompt if t in tokenizer.sentinel_ids]
            assert used == list(tokenizer.sentinel_ids[:len(used)]) and len(used) >= 1
            restored = _restore(prompt, answer, tokenizer)
        stream += restored
    assert seen == set(DENOISER_MODES)
    # The chunks, restored and put end to end, are the packed documents token for token.
    documents = sorted(tokenizer.decode(doc) for doc in _split_at_eos(stream, tokenizer.eos_id))
    assert documents == sorted(DOCUMENTS * 4)


def test_regular_denoiser_masks_about_fifteen_percent_in_short_spans(tokenizer):
    regular = [d for d in UL2_MIXTURE if d.mode == "[R]"]
    rows = ul2_sequences(DOCUMENTS * 6, tokenizer, seq_len=128, rng=random.Random(2), mixture=regular)
    masked = sum(row.loss_tokens - 1 - sum(t in tokenizer.sentinel_ids for t in row.input_ids) // 2 for row in rows)
    total = sum(len(_restore(list(row.input_ids[1:_answer_start(row.input_ids, tokenizer) - 1]),
                             list(row.input_ids[_answer_start(row.input_ids, tokenizer):-1]), tokenizer))
                for row in rows)
    assert 0.12 < masked / total < 0.18


def test_extreme_denoiser_on_long_rows_stays_within_the_sentinel_alphabet(tokenizer):
    dense = Denoiser(mode="[X]", corruption=0.5, mean_span=3, weight=1.0)
    rows = ul2_sequences(DOCUMENTS * 8, tokenizer, seq_len=1024, rng=random.Random(3), mixture=[dense])
    assert len(rows) > 2
    for row in rows:
        assert len(row.input_ids) <= 1024
        assert sum(t in tokenizer.sentinel_ids for t in row.input_ids) <= 2 * 32


def test_significant_spans_are_identifiers_literals_and_keys_never_keywords_or_comments():
    python = {PYTHON[a:b] for a, b in significant_spans(PYTHON)}
    assert {"load_config", "path", "retries", "os", "exists", "FileNotFoundError", "3", '"timeout_ms"',
            "250", "CartService", "add_item", "quantity"} <= python
    assert not python & set(keyword.kwlist)
    assert not python & {"a", "comment", "with", "words", "that", "are", "not", "code"}  # the comment

    yaml = {YAML[a:b] for a, b in significant_spans(YAML)}
    assert {"replicas", "2", "cartservice", "REDIS_ADDR", '"redis-cart:6379"', "CART_TIMEOUT_MS", '"800"'} <= yaml
    go = {GO[a:b] for a, b in significant_spans(GO)}
    assert {"GetCart", "ctx", "GetUserId", "Errorf", '"failed to get cart: %v"'} <= go
    assert not go & {"func", "return", "if", "nil", "look", "redis"}  # keywords; the comment's words


def test_significance_rows_mask_only_significant_tokens_and_restore_losslessly(tokenizer):
    texts = [PYTHON, YAML, GO]
    lexemes = {text[a:b] for text in texts for a, b in significant_spans(text)}
    rows = significance_sequences(texts, tokenizer, seq_len=128, rng=random.Random(4))
    assert rows
    for row in rows:
        assert len(row.input_ids) <= 128
        start = _answer_start(row.input_ids, tokenizer)
        assert row.labels[:start] == (IGNORE_INDEX,) * start
        prompt, answer = list(row.input_ids[:start - 1]), list(row.input_ids[start:-1])
        spans: list[list[int]] = []
        for token in answer:
            if token in tokenizer.sentinel_ids:
                spans.append([])
            else:
                spans[-1].append(token)
        # Each masked span is exactly one lexeme of the source: not a random stretch of characters.
        assert spans and all(tokenizer.decode(span) in lexemes for span in spans)
        # Putting the spans back gives the chunk of source, character for character.
        assert tokenizer.decode(_restore(prompt, answer, tokenizer)) in "".join(texts)


def test_task_rows_carry_loss_on_target_only_and_keep_the_end_of_long_inputs(tokenizer):
    short = TaskExample(task="log_level", input="GetCart took 12ms", target="INFO")
    row = task_sequences([short], tokenizer, seq_len=64)[0]
    prompt_ids = tokenizer.encode(format_prompt(short.task, short.input))
    # Encoding the prompt in pieces gives the ids inference gets from the whole prompt.
    assert list(row.input_ids[:len(prompt_ids)]) == prompt_ids
    answer = [t for t, label in zip(row.input_ids, row.labels, strict=True) if label != IGNORE_INDEX]
    assert answer[-1] == tokenizer.eos_id and tokenizer.decode(answer) == "INFO"
    assert row.labels[:len(prompt_ids)] == (IGNORE_INDEX,) * len(prompt_ids)

    long = TaskExample(task="log_template", input=" ".join(LOGS) + " THE-END", target="GetCart took <*>ms")
    row = task_sequences([long], tokenizer, seq_len=48)[0]
    assert len(row.input_ids) == 48
    text = tokenizer.decode(row.input_ids)
    assert text.endswith(f"THE-END{ANSWER_OPEN}GetCart took <*>ms") and text.startswith("<task>log_template<input>")
    assert tokenizer.decode([t for t, lab in zip(row.input_ids, row.labels, strict=True)
                             if lab != IGNORE_INDEX]) == long.target


def test_curriculum_puts_easy_denoising_first_and_tasks_last(tokenizer):
    rng = random.Random(5)
    rows = (task_sequences([TaskExample(task="t", input="x", target="y")], tokenizer, seq_len=32)
            + ul2_sequences(DOCUMENTS, tokenizer, seq_len=64, rng=rng))
    ordered = curriculum(rows)
    difficulties = [row.difficulty for row in ordered]
    assert difficulties == sorted(difficulties) and ordered[-1].difficulty >= 1
    regular = [r.difficulty for r in ordered if r.input_ids[0] == tokenizer.symbol_ids["[R]"]]
    extreme = [r.difficulty for r in ordered if r.input_ids[0] == tokenizer.symbol_ids["[X]"]]
    assert sum(regular) / len(regular) < sum(extreme) / len(extreme)


def test_objective_dispatch_and_bad_input(tokenizer):
    for name in ("causal", "ul2", "significance"):
        assert objective_sequences(name, [PYTHON, YAML], tokenizer, seq_len=64, rng=random.Random(0))
    with pytest.raises(FlipmoeInputError, match="unknown objective"):
        objective_sequences("mlm", [PYTHON], tokenizer, seq_len=64, rng=random.Random(0))
    with pytest.raises(FlipmoeInputError, match="seq_len"):
        causal_sequences([PYTHON], tokenizer, seq_len=4, rng=random.Random(0))
