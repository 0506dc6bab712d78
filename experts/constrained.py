"""Constrained decoding: an expert's output restricted to a JSON schema, a regular expression or a grammar.

    from experts.constrained import JsonSchemaConstraint, RegexConstraint, GrammarConstraint
    expert.generate(prompt, constraint=JsonSchemaConstraint({"type": "object", ...}), max_new_tokens=200)

At each step a logits processor masks every token that cannot continue a valid output; end-of-sequence
is allowed only once the output is complete. The output is then valid whenever decoding ends on
end-of-sequence (`finish_reason == "stop"`); a `max_new_tokens` budget can still cut it short, so bound
the language (`maxLength`, `maxItems`, integer ranges, bounded repetition) when a cut-off output is no use.

Why llguidance. It was chosen over lm-format-enforcer, outlines-core and a hand-written automaton over
the logits (which would have to re-implement JSON Schema and Lark compilation) because it is the only
one of them that fits these tokenizers *and* the director's needs:
- It works on token *bytes*. The experts' sentencepiece models use byte fallback (`<0xE4>` pieces spell
  UTF-8 one byte at a time) and write spaces as `▁`; the vocabulary is handed over as the exact bytes each
  piece decodes to, so a character split across byte pieces is checked correctly. lm-format-enforcer
  works on decoded strings and cannot represent a lone non-ASCII byte piece.
- It takes Lark grammars as well as JSON schemas and regular expressions, so the director's runbook DSL
  (a Lark grammar) is constrained by the same code. outlines-core compiles regular languages only.
- It computes masks lazily over a token trie, with no index over the vocabulary to build per schema.
  Measured on these tokenizers (400 and 2048 pieces, 2 shared CPU cores): 3-25 µs per mask in the
  library, against 100-130 µs for lm-format-enforcer at 400 pieces; outlines-core is faster (~3 µs)
  but regular-only.
  The processor around the mask (unpacking the bitmask, masking the logits) adds ~50 µs; both are
  small next to a nano decoder step (`benchmarks/bench_constrained.py` prints the figures side by side).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import llguidance
import numpy as np
import torch
from transformers import LogitsProcessor

from data_pipeline.tokenizer import Tokenizer
from flipmoe.errors import FlipmoeInputError

__all__ = ["GrammarConstraint", "JsonSchemaConstraint", "RegexConstraint", "piece_bytes"]

_SPACE_MARK = "\u2581"  # sentencepiece writes a space as "▁" inside pieces
_SPECIAL_MARK = b"\xff"  # llguidance: a token whose bytes start with 0xFF is special, never text


def piece_bytes(tokenizer: Tokenizer) -> list[bytes]:
    """The bytes each piece adds to the decoded text, indexed by id.

    Control pieces (pad, bos, eos, unknown), the prompt and denoiser symbols and the sentinels are
    structure, not answer text: they get the special-token marker, so no constraint ever emits them.
    """
    sp = tokenizer.sp
    structure = {*tokenizer.sentinel_ids, *tokenizer.symbol_ids.values()}
    surfaces = []
    for token_id, piece in enumerate(tokenizer.pieces()):
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id) or token_id in structure:
            surfaces.append(_SPECIAL_MARK + piece.encode("utf-8"))
        elif sp.is_byte(token_id):
            surfaces.append(bytes([int(piece[3:5], 16)]))  # "<0xE4>"
        else:
            # Identity normalisation and no dummy prefix: a piece is its text with "▁" for each space.
            surfaces.append(piece.replace(_SPACE_MARK, " ").encode("utf-8"))
    return surfaces


class _SentencepieceVocabulary:
    """The tokenizer as llguidance's `TokenizerWrapper` expects it (bytes per token, eos, a tokenize call)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_id
        self.bos_token_id = tokenizer.bos_id
        self.tokens = piece_bytes(tokenizer)

    def __call__(self, text: bytes) -> list[int]:
        return self._tokenizer.encode(text.decode("utf-8", errors="replace"))


# Building the token trie takes milliseconds per thousand pieces; do it once per loaded tokenizer.
_LL_TOKENIZERS: weakref.WeakKeyDictionary[Tokenizer, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()


def _ll_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    if tokenizer not in _LL_TOKENIZERS:
        wrapper = llguidance.TokenizerWrapper(_SentencepieceVocabulary(tokenizer))
        _LL_TOKENIZERS[tokenizer] = llguidance.LLTokenizer(wrapper, n_vocab=tokenizer.vocab_size)
    return _LL_TOKENIZERS[tokenizer]


def _checked(grammar: str, what: str) -> str:
    """The grammar, or a `FlipmoeInputError` that says what is wrong with it."""
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem and not problem.startswith("WARNING"):
        raise FlipmoeInputError(f"invalid {what} constraint: {problem.strip()}")
    return grammar


@dataclass(frozen=True)
class JsonSchemaConstraint:
    """Output is one JSON value matching `schema` (JSON Schema: types, properties, required, enum, const,
    anyOf/oneOf, $ref, min/max, minLength/maxLength, pattern, items/minItems/maxItems)."""

    schema: dict[str, Any]
    compact: bool = True
    """No whitespace between tokens (`{"a":1,"b":[2,3]}`): a small model cannot wander off into
    indentation. With False, any JSON whitespace is allowed there."""
    grammar: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.schema, dict):
            raise FlipmoeInputError(f"a JSON schema must be a dict, got {type(self.schema).__name__}")
        options: dict[str, Any] = {"whitespace_flexible": not self.compact}
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(self.schema, overrides=options)  # type: ignore[arg-type]
        except ValueError as err:
            raise FlipmoeInputError(f"invalid JSON schema constraint: {err}") from None
        object.__setattr__(self, "grammar", _checked(grammar, "JSON schema"))

    def logits_processor(self, tokenizer: Tokenizer) -> LogitsProcessor:
        return GrammarMaskProcessor(tokenizer, self.grammar, description=f"JSON schema {json.dumps(self.schema)[:80]}")


@dataclass(frozen=True)
class RegexConstraint:
    """Output fully matches `pattern` (Rust `regex` syntax: classes, groups, alternation, bounded and
    unbounded repetition, Unicode; no look-around or back-references)."""

    pattern: str
    grammar: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grammar", _checked(llguidance.LLMatcher.grammar_from_regex(self.pattern), "regex"))

    def logits_processor(self, tokenizer: Tokenizer) -> LogitsProcessor:
        return GrammarMaskProcessor(tokenizer, self.grammar, description=f"regex {self.pattern!r}")


@dataclass(frozen=True)
class GrammarConstraint:
    """Output is a sentence of a context-free grammar in Lark syntax (rule `start`), such as the
    director's runbook DSL. llguidance reads Lark's grammar syntax with its own lexer: terminals are
    strings and regular expressions, `%import common.X` works, `%ignore` is applied between tokens."""

    lark: str
    grammar: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grammar", _checked(llguidance.LLMatcher.grammar_from_lark(self.lark), "grammar"))

    def logits_processor(self, tokenizer: Tokenizer) -> LogitsProcessor:
        return GrammarMaskProcessor(tokenizer, self.grammar, description="Lark grammar")


class GrammarMaskProcessor(LogitsProcessor):
    """Masks the logits of tokens that cannot continue a valid output, one grammar matcher per row.

    Stateful: it is made for one `generate` call. The first call sees the prompt; every later call
    feeds each row's newest token to that row's matcher before computing the next mask.
    """

    def __init__(self, tokenizer: Tokenizer, grammar: str, *, description: str) -> None:
        self._ll_tokenizer = _ll_tokenizer(tokenizer)
        self._grammar = grammar
        self._description = description
        self._vocab_size = tokenizer.vocab_size
        self._eos_id = tokenizer.eos_id
        self._matchers: list[llguidance.LLMatcher] = []
        self._finished: list[bool] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, width = scores.shape  # scores_BV
        if not self._matchers:
            self._matchers = [llguidance.LLMatcher(self._ll_tokenizer, self._grammar, log_level=0)
                              for _ in range(batch)]
            self._finished = [False] * batch
        else:
            self._consume(input_ids[:, -1].tolist())
        allowed_BV = np.zeros((batch, width), dtype=bool)
        for row, matcher in enumerate(self._matchers):
            if self._finished[row]:
                allowed_BV[row, self._eos_id] = True  # the row is padded from here on; keep its scores finite
            else:
                allowed_BV[row, : self._vocab_size] = self._allowed(matcher)
        forbidden_BV = torch.from_numpy(~allowed_BV).to(scores.device)
        return scores.masked_fill(forbidden_BV, float("-inf"))  # type: ignore[return-value]

    def _consume(self, last_tokens: Sequence[int]) -> None:
        for row, token in enumerate(last_tokens):
            if self._finished[row]:
                continue
            if token == self._eos_id:
                self._finished[row] = True
            elif not self._matchers[row].consume_token(token):
                raise RuntimeError(f"constrained decoding ({self._description}): token {token} was sampled "
                                   f"although the mask forbade it: {self._matchers[row].get_error()}")

    def _allowed(self, matcher: llguidance.LLMatcher) -> np.ndarray:
        bitmask = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        if matcher.is_error():
            raise RuntimeError(f"constrained decoding ({self._description}) failed: {matcher.get_error()}")
        allowed_V = np.unpackbits(bitmask, bitorder="little")[: self._vocab_size].astype(bool)
        if not allowed_V.any():
            raise FlipmoeInputError(f"constrained decoding ({self._description}): no piece of the expert's "
                                    "vocabulary can continue the output",
                                    hint="train the tokenizer with byte_fallback=True so every byte has a piece")
        return allowed_V
