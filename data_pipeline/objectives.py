"""Objectives: pure transforms from text (or task examples) to `TrainingSequence`s for one expert.

- `causal_sequences`: documents joined with end-of-sequence and packed into rows of `seq_len`; every
  token carries loss (`LlamaForCausalLM` shifts the labels itself).
- `ul2_sequences`: UL2's mixture of denoisers in decoder-only form. A row reads
  `[mode] input-with-sentinels <answer> <extra_id_0> span <extra_id_1> span ... eos`, and only the
  part after `<answer>` carries loss. `[R]` corrupts 15% in spans of 3 tokens, `[X]` corrupts either
  50% in spans of 3 or 15% in spans of 32, `[S]` is a prefix LM (`[S] prefix <answer> suffix eos`).
- `significance_sequences`: the same sentinel form, but the masked spans are the informative tokens
  of code and configuration — identifiers, calls, literals, keys and values — found by a lexer
  (Python's `tokenize` for Python, a regular-expression lexer for other languages, YAML, JSON, ini),
  never random spans and never keywords, punctuation or comments.
- `task_sequences`: `format_prompt(task, input)` + target + eos, with loss on target and eos only;
  inputs that do not fit lose their beginning, so the answer (and the end of the input, usually the
  freshest evidence) always fits.
- `curriculum`: rows ordered by `difficulty`. Pretraining rows score in [0, 1) (the share of the row
  the model must produce, or how varied its tokens are), task rows in [1, 2), so a stable sort runs
  easy denoising first, then harder denoising, then tasks.

Everything here is deterministic given the `random.Random` passed in, and touches no files.
"""

from __future__ import annotations

import io
import keyword
import math
import random
import re
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from data_pipeline.examples import IGNORE_INDEX, TaskExample, TrainingSequence
from data_pipeline.tokenizer import Tokenizer
from data_pipeline.tokens import ANSWER_OPEN, INPUT_OPEN, N_SENTINELS, OBJECTIVES, TASK_OPEN
from flipmoe.errors import FlipmoeInputError

# Each row spends 3 tokens outside the text: the mode (or nothing), `<answer>` and eos.
_FRAME_TOKENS = 3


# --- causal LM -------------------------------------------------------------------------------------

def causal_sequences(texts: Sequence[str], tokenizer: Tokenizer, *, seq_len: int,
                     rng: random.Random) -> list[TrainingSequence]:
    """Documents in a shuffled order, joined with eos, cut into rows of `seq_len` (the last may be shorter)."""
    _check_seq_len(seq_len)
    stream = _token_stream(texts, tokenizer, rng)
    rows = [stream[start:start + seq_len] for start in range(0, len(stream), seq_len)]
    return [TrainingSequence(input_ids=tuple(row), labels=tuple(row), difficulty=_variety(row))
            for row in rows if len(row) >= 2]


def _token_stream(texts: Sequence[str], tokenizer: Tokenizer, rng: random.Random) -> list[int]:
    order = list(range(len(texts)))
    rng.shuffle(order)
    stream: list[int] = []
    for i in order:
        if texts[i]:
            stream += tokenizer.encode(texts[i], eos=True)
    return stream


def _variety(row: Sequence[int]) -> float:
    """Share of distinct tokens in a row: repetitive rows (one log template many times) are easy."""
    return len(set(row)) / len(row) * 0.999


# --- UL2 mixture of denoisers ----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Denoiser:
    """One denoiser of the mixture."""

    mode: str
    """Mode token that opens the row ("[R]", "[X]", "[S]")."""
    corruption: float
    """Share of the input tokens masked (span corruption); unused by the prefix LM."""
    mean_span: float
    """Mean masked span length in tokens; 0 means prefix LM."""
    weight: float
    """Relative frequency in the mixture."""


UL2_MIXTURE: tuple[Denoiser, ...] = (
    Denoiser(mode="[R]", corruption=0.15, mean_span=3, weight=0.4),
    Denoiser(mode="[X]", corruption=0.5, mean_span=3, weight=0.2),
    Denoiser(mode="[X]", corruption=0.15, mean_span=32, weight=0.2),
    Denoiser(mode="[S]", corruption=0.0, mean_span=0, weight=0.2),
)
"""The UL2 paper's R / X / S mixture: regular, extreme (dense or long spans), sequential."""


def ul2_sequences(texts: Sequence[str], tokenizer: Tokenizer, *, seq_len: int, rng: random.Random,
                  mixture: Sequence[Denoiser] = UL2_MIXTURE) -> list[TrainingSequence]:
    """Documents packed into one eos-separated stream, cut into chunks, each chunk corrupted by a denoiser
    drawn from `mixture`; every row fits in `seq_len`."""
    _check_seq_len(seq_len)
    stream = _token_stream(texts, tokenizer, rng)
    weights = [d.weight for d in mixture]
    rows: list[TrainingSequence] = []
    position = 0
    while position < len(stream):
        denoiser = rng.choices(mixture, weights=weights)[0]
        length = _chunk_length(denoiser, seq_len)
        chunk = stream[position:position + length]
        position += length
        if len(chunk) < 2:
            break
        if denoiser.mean_span == 0:
            rows.append(_prefix_lm(chunk, tokenizer, denoiser.mode, rng))
        else:
            spans = _random_spans(len(chunk), denoiser, rng)
            rows.append(_corrupt(chunk, spans, tokenizer, mode=denoiser.mode))
    return rows


def _chunk_length(denoiser: Denoiser, seq_len: int) -> int:
    """Input tokens a row of `seq_len` holds: corruption adds two sentinels per span and the frame."""
    budget = seq_len - _FRAME_TOKENS
    if denoiser.mean_span == 0:
        return budget
    return int(budget / (1 + 2 * denoiser.corruption / denoiser.mean_span)) - 2


def _random_spans(length: int, denoiser: Denoiser, rng: random.Random) -> list[tuple[int, int]]:
    """(start, end) of the masked spans of a `length`-token chunk, T5's way: the masked and the kept tokens
    are each cut into `n` random positive runs and interleaved, kept run first."""
    masked = min(length - 1, max(1, round(length * denoiser.corruption)))
    # Sentinels are a fixed alphabet: long chunks get longer spans rather than more of them.
    n = max(1, min(N_SENTINELS, masked, length - masked, round(masked / denoiser.mean_span)))
    masked_runs = _partition(masked, n, rng)
    kept_runs = _partition(length - masked, n, rng)
    spans, position = [], 0
    for kept, run in zip(kept_runs, masked_runs, strict=True):
        position += kept
        spans.append((position, position + run))
        position += run
    return spans


def _partition(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` split into `parts` positive integers at random cut points."""
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def _corrupt(tokens: Sequence[int], spans: Sequence[tuple[int, int]], tokenizer: Tokenizer, *,
             mode: str | None) -> TrainingSequence:
    """`[mode] kept <s0> kept <s1> ... <answer> <s0> masked <s1> masked ... eos`, loss after `<answer>`.

    `spans` are sorted, disjoint (start, end) token ranges, at most `N_SENTINELS` of them.
    """
    prompt = [tokenizer.symbol_ids[mode]] if mode else []
    answer: list[int] = []
    position = 0
    for sentinel, (start, end) in zip(tokenizer.sentinel_ids, spans, strict=False):
        prompt += [*tokens[position:start], sentinel]
        answer += [sentinel, *tokens[start:end]]
        position = end
    prompt += [*tokens[position:], tokenizer.symbol_ids[ANSWER_OPEN]]
    answer.append(tokenizer.eos_id)
    masked = sum(end - start for start, end in spans)
    return TrainingSequence(input_ids=tuple(prompt + answer),
                            labels=(IGNORE_INDEX,) * len(prompt) + tuple(answer),
                            difficulty=min(0.999, masked / len(tokens)))


def _prefix_lm(tokens: Sequence[int], tokenizer: Tokenizer, mode: str, rng: random.Random) -> TrainingSequence:
    """`[S] prefix <answer> suffix eos`: the split point is uniform over the chunk's middle."""
    split = rng.randint(max(1, len(tokens) // 4), max(1, 3 * len(tokens) // 4))
    prompt = [tokenizer.symbol_ids[mode], *tokens[:split], tokenizer.symbol_ids[ANSWER_OPEN]]
    answer = [*tokens[split:], tokenizer.eos_id]
    return TrainingSequence(input_ids=tuple(prompt + answer),
                            labels=(IGNORE_INDEX,) * len(prompt) + tuple(answer),
                            difficulty=min(0.999, (len(tokens) - split) / len(tokens)))


# --- significance masking --------------------------------------------------------------------------

SIGNIFICANT_SHARE = 0.35
"""Share of a chunk's significant tokens (identifiers, calls, literals, keys, values) that are masked."""
MAX_LITERAL_CHARS = 48
"""Longer string literals (docstrings, messages) are prose, not the informative part; they stay."""

# Words of the common languages that carry structure, not meaning; never masked.
_KEYWORDS = frozenset("""
abstract async await bool boolean break byte case catch char class const continue def default defer
do double else enum export extends false final finally float for foreach func function go if implements
import in instanceof int interface let long map namespace new nil none null override package private
protected public range return select short static string struct super switch synchronized this throw
throws true try type typeof using var void volatile while yield apiversion kind metadata spec
""".split())
_LEXEME = re.compile(r"""
    (?P<comment>//[^\n]*|/\*.*?\*/|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<number>(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z%]*(?![\w.]))
  | (?P<word>[A-Za-z_$][\w$]*)
""", re.VERBOSE | re.DOTALL)


def significant_spans(text: str) -> list[tuple[int, int]]:
    """Character (start, end) of every informative token of a code or configuration text, in order.

    Text that looks like Python (a `def`, `class` or `import` line) and that `tokenize` accepts is lexed
    exactly; other text goes through a regular-expression lexer that skips comments and keywords.
    """
    spans = _python_spans(text)
    return spans if spans is not None else _regex_spans(text)


def _python_spans(text: str) -> list[tuple[int, int]] | None:
    """Names (not keywords), numbers and strings by `tokenize`; None when the text is not Python."""
    if not re.search(r"^\s*(def|class|import|from)\s", text, re.MULTILINE):
        return None
    line_starts = [0]
    for line in io.StringIO(text):  # the lines `tokenize` reads: split at "\n" only, unlike splitlines()
        line_starts.append(line_starts[-1] + len(line))
    spans = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.NAME and keyword.iskeyword(token.string):
                continue
            if token.type in (tokenize.NAME, tokenize.NUMBER, tokenize.STRING):
                (row, col), (end_row, end_col) = token.start, token.end
                span = (line_starts[row - 1] + col, line_starts[end_row - 1] + end_col)
                if span[1] - span[0] <= MAX_LITERAL_CHARS:
                    spans.append(span)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return spans


def _regex_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in _LEXEME.finditer(text):
        kind = match.lastgroup
        if kind == "comment" or (kind == "word" and match.group().lower() in _KEYWORDS):
            continue
        if len(match.group()) > MAX_LITERAL_CHARS:
            continue
        spans.append(match.span())
    return spans


def significance_sequences(texts: Sequence[str], tokenizer: Tokenizer, *, seq_len: int, rng: random.Random,
                           share: float = SIGNIFICANT_SHARE) -> list[TrainingSequence]:
    """Each document cut at line boundaries into chunks that fit `seq_len`; in each, a `share` of the
    significant tokens (at most `N_SENTINELS`) is replaced by sentinels and asked for after `<answer>`."""
    _check_seq_len(seq_len)
    # Two tokens per sentinel (one in the input, one in the answer); short rows get fewer sentinels.
    max_spans = min(N_SENTINELS, (seq_len - _FRAME_TOKENS) // 8)
    budget = seq_len - _FRAME_TOKENS - 2 * max_spans
    order = list(range(len(texts)))
    rng.shuffle(order)
    rows = []
    for i in order:
        spans = significant_spans(texts[i])
        for start, end in _line_chunks(texts[i], tokenizer, budget):
            inside = [(a - start, b - start) for a, b in spans if start <= a and b <= end]
            row = _mask_chunk(texts[i][start:end], inside, tokenizer, rng, share=share, max_spans=max_spans)
            if row is not None and len(row.input_ids) <= seq_len:
                rows.append(row)
    return rows


def _line_chunks(text: str, tokenizer: Tokenizer, budget: int) -> list[tuple[int, int]]:
    """Character ranges of consecutive whole lines whose token count stays within `budget`; a longer
    line is cut into pieces of `budget` characters (a token covers at least one character)."""
    chunks: list[tuple[int, int]] = []
    start = position = used = 0
    for line in text.splitlines(keepends=True):
        pieces = [line[k:k + budget] for k in range(0, len(line), budget)]
        for piece in pieces:
            cost = len(tokenizer.encode(piece))
            if used + cost > budget and position > start:
                chunks.append((start, position))
                start, used = position, 0
            position += len(piece)
            used += cost
    if position > start:
        chunks.append((start, position))
    return chunks


def _mask_chunk(text: str, spans: Sequence[tuple[int, int]], tokenizer: Tokenizer, rng: random.Random, *,
                share: float, max_spans: int) -> TrainingSequence | None:
    """Mask a random `share` of `spans` (character ranges): text between and inside them is encoded
    piece by piece, so each masked span is exactly a run of whole tokens."""
    if not spans:
        return None
    count = max(1, min(max_spans, math.ceil(len(spans) * share)))
    chosen = sorted(rng.sample(list(spans), count))
    tokens: list[int] = []
    token_spans = []
    position = 0
    for start, end in chosen:
        tokens += tokenizer.encode(text[position:start])
        piece = tokenizer.encode(text[start:end])
        token_spans.append((len(tokens), len(tokens) + len(piece)))
        tokens += piece
        position = end
    tokens += tokenizer.encode(text[position:])
    return _corrupt(tokens, token_spans, tokenizer, mode=None)


# --- task fine-tuning ------------------------------------------------------------------------------

def task_sequences(examples: Sequence[TaskExample], tokenizer: Tokenizer, *, seq_len: int) -> list[TrainingSequence]:
    """`<task>name<input>text<answer>target eos` with loss on target and eos.

    The prompt is encoded in three pieces (header, input, `<answer>`), which gives the same ids as
    encoding it whole because the markers are user-defined symbols; an input too long for `seq_len`
    loses tokens from its start. A target that alone does not fit is cut at its end.
    """
    _check_seq_len(seq_len)
    rows = []
    for example in examples:
        header = tokenizer.encode(f"{TASK_OPEN}{example.task}{INPUT_OPEN}")
        body = tokenizer.encode(example.input)
        tail = [tokenizer.symbol_ids[ANSWER_OPEN]]
        answer = [*tokenizer.encode(example.target), tokenizer.eos_id]
        answer = answer[:max(1, seq_len - len(header) - len(tail))]
        room = seq_len - len(header) - len(tail) - len(answer)
        body = body[len(body) - room:] if room > 0 else []
        prompt = header + body + tail
        rows.append(TrainingSequence(input_ids=tuple(prompt + answer),
                                     labels=(IGNORE_INDEX,) * len(prompt) + tuple(answer),
                                     difficulty=1.0 + min(0.999, len(answer) / seq_len)))
    return rows


# --- curriculum and dispatch -----------------------------------------------------------------------

def curriculum(sequences: Sequence[TrainingSequence]) -> list[TrainingSequence]:
    """Rows from easy to hard (stable: equal difficulty keeps the given, shuffled, order)."""
    return sorted(sequences, key=lambda row: row.difficulty)


_OBJECTIVES: dict[str, Callable[..., list[TrainingSequence]]] = {
    "causal": causal_sequences,
    "ul2": ul2_sequences,
    "significance": significance_sequences,
}
assert tuple(_OBJECTIVES) == OBJECTIVES, "every objective in experts.config needs a transform here"


def objective_sequences(objective: str, texts: Sequence[str], tokenizer: Tokenizer, *, seq_len: int,
                        rng: random.Random) -> list[TrainingSequence]:
    """Pretraining rows of `texts` under the named objective (`experts.config.OBJECTIVES`)."""
    if objective not in _OBJECTIVES:
        raise FlipmoeInputError(f"unknown objective {objective!r}", hint=f"choose one of {', '.join(OBJECTIVES)}")
    return _OBJECTIVES[objective](texts, tokenizer, seq_len=seq_len, rng=rng)


def _check_seq_len(seq_len: int) -> None:
    # The same floor as `TrainConfig.seq_len`: below it a row holds little more than its frame.
    if seq_len < 16:
        raise FlipmoeInputError(f"seq_len must be at least 16, got {seq_len}")
