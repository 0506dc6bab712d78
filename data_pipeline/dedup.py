"""Exact and near-duplicate removal: content hashes, and MinHash + LSH over per-modality shingles.

Near-duplicate detection follows datasketch's MinHash (scheme "affine32": each 32-bit shingle hash is
mixed with the MurmurHash3 finalizer, then permuted as `a_k * h + b_k mod 2^32`), computed for a
whole batch of documents at once:

1. shingles are hashed without a Python loop: the batch becomes one array of code points, a prefix
   polynomial hash over it gives the hash of any substring in O(1) (`_substring_hashes`), so char
   n-grams and token n-grams are a few array operations;
2. the (shingles x permutations) matrix is computed in cache-sized blocks and reduced per document
   with `np.minimum.reduceat`.

The signatures are bit-identical to `datasketch.MinHash(scheme="affine32")` fed the same 32-bit shingle
hashes (tests check this), so they go straight into `datasketch.MinHashLSH` as `LeanMinHash`es. Band and
row counts come from datasketch's own optimiser for the target Jaccard threshold (`lsh_params`).

Shingling suits the modality: logs are char 5-grams after masking numbers and hex ids (two windows of
the same log stream that differ only in timestamps and ids are duplicates; this collapses heavily
templated logs: of LogHub's 250 windows of 40 lines, 105 survive at 0.8), metrics and traces are char
5-grams with their numbers kept (values and durations are the content), code, configuration and
prose are word 3-grams (tokens are runs of letters/digits/underscore, or one punctuation mark).

Bands and rows come from datasketch's optimiser with false negatives weighted 0.9 (`lsh_params`):
for 128 permutations at 0.8 that is 14 bands of 9 rows, which catches a pair at Jaccard 0.8 with
probability 0.87 and at 0.9 with 0.999; the even weighting (9 x 13) would catch only 0.40 at 0.8.
Every LSH candidate is confirmed on the full signature, so the extra candidates cost time, not
precision.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

SCHEME = "affine32"
CHAR_SHINGLE_MODALITIES = frozenset({"log", "metric", "trace"})
"""Modalities shingled as char n-grams; the rest use word n-grams."""
MASKED_MODALITIES = frozenset({"log"})
"""Modalities whose numbers and hex ids are masked before shingling. Not metrics and traces: their
numbers (values, durations) are their content, and masked traces of one shape would all collide."""

# Numbers and hex ids (any run of hex digits holding a decimal digit) become "0"; applied to
# lower-cased text. One character-class pattern: alternations made masking the slowest step.
_MASK = re.compile(r"[0-9a-f]*[0-9][0-9a-f]*")
_TOKEN = re.compile(r"[0-9A-Za-z_\x80-\U0010ffff]+|[^ \t\n\r\f\v0-9A-Za-z_\x80-\U0010ffff]")
_U64 = np.uint64
# Odd base of the polynomial hash and its inverse mod 2^64 (so substring hashes are position-free).
_BASE = _U64(0x100000001B3)
_BASE_INV = _U64(pow(0x100000001B3, -1, 1 << 64))
_BASE32 = np.uint32(0x01000193)  # FNV-1a's 32-bit prime, odd: char n-grams hash mod 2^32
_BLOCK_CELLS = 1 << 17  # shingles x permutations per block: 512 KB of uint32, stays in L2
_WORD, _PUNCT, _SPACE = 1, 2, 0


@dataclass(frozen=True, kw_only=True)
class ShingleConfig:
    """How documents are cut into shingles before MinHash."""

    char_ngram: int = 5
    """Characters per shingle for logs, metrics and traces (after masking numbers and ids)."""
    word_ngram: int = 3
    """Tokens per shingle for code, configuration and prose."""
    lowercase: bool = True
    """Fold case before shingling."""


DEFAULT_SHINGLES = ShingleConfig()


def content_hash(text: str) -> str:
    """Exact-duplicate key: SHA-1 of the normalised text (collisions are not a practical concern)."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def lsh_params(threshold: float, num_perm: int, *, false_positive_weight: float = 0.1,
               false_negative_weight: float = 0.9) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive/negative areas under the LSH S-curve."""
    return _optimal_param(threshold, num_perm, false_positive_weight, false_negative_weight)


def collision_probability(jaccard: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that two sets of Jaccard similarity `jaccard` share at least one band: 1-(1-s^r)^b."""
    return 1.0 - (1.0 - np.power(jaccard, rows)) ** bands


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a odd, b) for `seed`, each shape (num_perm,) uint32."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch pre-mixes every input hash with it)."""
    h = h.astype(np.uint32, copy=True)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def prepare_text(text: str, modality: str, config: ShingleConfig) -> str:
    """The text actually shingled: lower-cased, and for telemetry with numbers and ids masked."""
    if modality in MASKED_MODALITIES:
        return _MASK.sub("0", text.lower())
    if config.lowercase:
        text = text.lower()
    return text


class _PrefixHash:
    """Prefix sums G[i] = sum_{j<i} c_j * B^-j (mod 2^64) over a code point array, so that
    hash(c[a:b]) = (G[b] - G[a]) * B^a is the polynomial hash of c[a:b] wherever it occurs."""

    def __init__(self, codes: np.ndarray) -> None:
        n = len(codes)
        with np.errstate(over="ignore"):
            inv_powers = np.empty(n, dtype=_U64)
            powers = np.empty(n + 1, dtype=_U64)
            if n:
                inv_powers[0] = 1
                inv_powers[1:] = _BASE_INV
                np.cumprod(inv_powers, out=inv_powers)
            powers[0] = 1
            powers[1:] = _BASE
            np.cumprod(powers, out=powers)
            self.prefix = np.zeros(n + 1, dtype=_U64)
            np.cumsum((codes.astype(_U64) + _U64(1)) * inv_powers, out=self.prefix[1:])
        self.powers = powers

    def substring(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (self.prefix[ends] - self.prefix[starts]) * self.powers[starts]


def _codes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All texts as one uint32 code point array, and the start offset of each text (len(texts)+1)."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    joined = "".join(texts).encode("utf-32-le", "surrogatepass")
    return np.frombuffer(joined, dtype=np.uint32), offsets


def _mask_codes(codes: np.ndarray, offsets: np.ndarray, masked_docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_MASK.sub("0", text)` on lower-cased code points, for the documents flagged in `masked_docs`:
    every maximal run of hex digits that holds a decimal digit becomes one "0"."""
    is_digit = (codes >= 48) & (codes <= 57)
    is_hex = is_digit | ((codes >= 97) & (codes <= 102))
    is_hex &= np.repeat(masked_docs, np.diff(offsets))
    if not is_hex.any():
        return codes, offsets
    starts = is_hex.copy()
    starts[1:] &= ~is_hex[:-1]
    starts[offsets[:-1][offsets[:-1] < len(codes)]] = is_hex[offsets[:-1][offsets[:-1] < len(codes)]]
    run = np.cumsum(starts, dtype=np.int32) - 1  # run id of each hex character
    run_has_digit = np.bincount(run[is_digit & is_hex], minlength=int(run[-1]) + 1) > 0
    in_masked_run = is_hex & run_has_digit[np.maximum(run, 0)]
    keep = ~in_masked_run | starts
    codes = np.where(in_masked_run, np.uint32(48), codes)[keep]
    kept_before = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    return codes, kept_before[offsets]


def _char_ngram_hashes(codes: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every char n-gram inside one document (a shorter document is one shingle):
    a polynomial hash mod 2^32 computed in n shifted passes, no prefix arrays."""
    lengths = np.diff(offsets)
    counts = np.maximum(lengths - n + 1, np.minimum(lengths, 1))
    total = len(codes)
    with np.errstate(over="ignore"):
        rolled = np.zeros(total, dtype=np.uint32)
        padded = np.concatenate((codes.astype(np.uint32) + np.uint32(1), np.zeros(n, dtype=np.uint32)))
        for k in range(n):
            rolled *= _BASE32
            rolled += padded[k:k + total]
    doc = np.repeat(np.arange(len(lengths)), counts)
    starts = offsets[doc] + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    hashes = rolled[starts]
    first = np.cumsum(counts) - counts
    for d in np.flatnonzero((lengths < n) & (lengths > 0)):
        # A whole-document shingle must not read into the next document: hash it alone.
        value = np.uint32(0)
        with np.errstate(over="ignore"):
            for c in codes[offsets[d]:offsets[d + 1]]:
                value = value * _BASE32 + np.uint32(c) + np.uint32(1)
        hashes[first[d]] = value
    return hashes, counts


def _token_spans(codes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token (start, end, document) arrays: runs of word characters, or single punctuation marks."""
    table = np.full(129, _PUNCT, dtype=np.int8)
    for ch in " \t\n\r\f\v":
        table[ord(ch)] = _SPACE
    for lo, hi in (("0", "9"), ("a", "z"), ("A", "Z")):
        table[ord(lo):ord(hi) + 1] = _WORD
    table[ord("_")] = _WORD
    table[128] = _WORD  # any non-ASCII character counts as a letter
    kind = table[np.minimum(codes, 128)]
    is_word = kind == _WORD
    boundary = np.zeros(len(codes) + 1, dtype=bool)
    boundary[offsets] = True  # tokens never span two documents
    prev_word = np.concatenate(([False], is_word[:-1])) & ~boundary[:-1]
    next_word = np.concatenate((is_word[1:], [False])) & ~boundary[1:]
    word_starts = np.flatnonzero(is_word & ~prev_word)
    word_ends = np.flatnonzero(is_word & ~next_word) + 1
    punct = np.flatnonzero(kind == _PUNCT)
    starts = np.concatenate((word_starts, punct))
    ends = np.concatenate((word_ends, punct + 1))
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    docs = np.searchsorted(offsets, starts, side="right") - 1
    return starts, ends, docs


def _word_ngram_hashes(codes: np.ndarray, prefix: _PrefixHash, offsets: np.ndarray,
                       n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every token n-gram inside one document; a document with fewer tokens is one shingle."""
    starts, ends, docs = _token_spans(codes, offsets)
    n_docs = len(offsets) - 1
    token_hashes = _fmix64(prefix.substring(starts, ends))
    tokens_per_doc = np.bincount(docs, minlength=n_docs)
    counts = np.maximum(tokens_per_doc - n + 1, np.minimum(tokens_per_doc, 1))
    first_token = np.cumsum(tokens_per_doc) - tokens_per_doc
    doc = np.repeat(np.arange(n_docs), counts)
    position = first_token[doc] + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    last = first_token[doc] + tokens_per_doc[doc]
    combined = np.zeros(len(position), dtype=_U64)
    with np.errstate(over="ignore"):
        for k in range(n):
            index = position + k
            present = index < last
            step = np.where(present, token_hashes[np.minimum(index, len(token_hashes) - 1)], _U64(0))
            combined = combined * _BASE + step
    return combined, counts


def shingle_hashes(texts: Sequence[str], modalities: Sequence[str],
                   config: ShingleConfig = DEFAULT_SHINGLES) -> tuple[np.ndarray, np.ndarray]:
    """32-bit shingle hashes of a batch (one flat uint32 array) and the number of shingles per document.

    Documents keep their order; empty documents get zero shingles.
    """
    char_mode = np.fromiter((m in CHAR_SHINGLE_MODALITIES for m in modalities), dtype=bool, count=len(texts))
    masked = np.fromiter((m in MASKED_MODALITIES for m in modalities), dtype=bool, count=len(texts))
    hashes = np.empty(0, dtype=np.uint32)
    counts = np.zeros(len(texts), dtype=np.int64)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for mode in (True, False):
        index = np.flatnonzero(char_mode == mode)
        if not len(index):
            continue
        group = [texts[i].lower() if config.lowercase or masked[i] else texts[i] for i in index.tolist()]
        codes, offsets = _codes(group)
        if mode:
            codes, offsets = _mask_codes(codes, offsets, masked[index])
            group_hashes, group_counts = _char_ngram_hashes(codes, offsets, config.char_ngram)
        else:
            group_hashes, group_counts = _word_ngram_hashes(codes, _PrefixHash(codes), offsets, config.word_ngram)
            group_hashes = (_fmix64(group_hashes) >> _U64(32)).astype(np.uint32)
        parts.append((index, group_hashes, group_counts))
    if len(parts) == 1:
        index, hashes, group_counts = parts[0]
        counts[index] = group_counts
    elif parts:
        # Reassemble in document order: sort the per-shingle document ids of both groups.
        doc_ids = np.concatenate([np.repeat(index, c) for index, _, c in parts])
        order = np.argsort(doc_ids, kind="stable")
        hashes = np.concatenate([h for _, h, _ in parts])[order]
        for index, _, group_counts in parts:
            counts[index] = group_counts
    return hashes, counts


def signatures_from_hashes(hashes: np.ndarray, counts: np.ndarray, perms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """MinHash signatures, shape (documents, num_perm) uint32, of the documents' shingle hashes.

    `hashes` holds every document's 32-bit shingle hashes back to back, `counts[i]` of them for
    document i. A document without shingles keeps datasketch's empty value (all 2^32 - 1).
    """
    a_P, b_P = perms
    num_perm = len(a_P)
    out_DP = np.full((len(counts), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    # A repeated shingle cannot change a minimum: keep each (document, hash) pair once. Telemetry
    # repeats itself a lot once numbers are masked, so this often halves the work below.
    doc_S = np.repeat(np.arange(len(counts), dtype=np.uint64), counts)
    pairs_S = np.sort((doc_S << _U64(32)) | hashes.astype(_U64))
    pairs_S = pairs_S[np.concatenate(([True], pairs_S[1:] != pairs_S[:-1]))]  # np.unique is 50x slower
    doc_S = (pairs_S >> _U64(32)).astype(np.int64)
    mixed_S = fmix32((pairs_S & _U64(0xFFFFFFFF)).astype(np.uint32))
    block = max(1, _BLOCK_CELLS // num_perm)
    buffer_SP = np.empty((block, num_perm), dtype=np.uint32)
    for start in range(0, len(mixed_S), block):
        stop = min(start + block, len(mixed_S))
        permuted_SP = buffer_SP[:stop - start]
        np.multiply(mixed_S[start:stop, None], a_P[None, :], out=permuted_SP)  # uint32 wraps: mod 2^32
        np.add(permuted_SP, b_P[None, :], out=permuted_SP)
        docs = doc_S[start:stop]
        segment_starts = np.flatnonzero(np.concatenate(([True], docs[1:] != docs[:-1])))
        minima = np.minimum.reduceat(permuted_SP, segment_starts, axis=0)
        seg_docs = docs[segment_starts]
        out_DP[seg_docs] = np.minimum(out_DP[seg_docs], minima)
    return out_DP


def signatures(texts: Sequence[str], modalities: Sequence[str], *, num_perm: int = 128, seed: int = 1,
               config: ShingleConfig = DEFAULT_SHINGLES) -> np.ndarray:
    """MinHash signatures (documents, num_perm) uint32 of a batch of documents."""
    hashes, counts = shingle_hashes(texts, modalities, config)
    return signatures_from_hashes(hashes, counts, permutations(num_perm, seed))


def lean_minhash(signature: np.ndarray, seed: int = 1) -> LeanMinHash:
    """A datasketch `LeanMinHash` with this signature, ready for `MinHashLSH.insert`/`query`."""
    return LeanMinHash(seed=seed, hashvalues=signature, scheme=SCHEME)


@dataclass(frozen=True)
class NearDuplicates:
    """Outcome of near-duplicate detection over documents 0..n-1."""

    keep: np.ndarray
    """Boolean mask: the first document of each near-duplicate cluster is kept."""
    duplicate_of: np.ndarray
    """Index of the kept document a removed one matched (-1 for kept documents)."""


def find_near_duplicates(signatures_DP: np.ndarray, *, threshold: float = 0.8, seed: int = 1,
                         bands_rows: tuple[int, int] | None = None) -> NearDuplicates:
    """Mark documents whose estimated Jaccard with an earlier kept document reaches `threshold`.

    Candidates come from a `datasketch.MinHashLSH` index of the kept documents; each candidate is
    confirmed on the full signature (the fraction of equal values estimates Jaccard), which removes
    most of the band collisions below the threshold.
    """
    n, num_perm = signatures_DP.shape
    bands, rows = bands_rows or lsh_params(threshold, num_perm)
    lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
    keep = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        minhash = lean_minhash(signatures_DP[i], seed)
        candidates = lsh.query(minhash)
        if candidates:
            cand = np.asarray(candidates, dtype=np.int64)
            similarity = (signatures_DP[cand] == signatures_DP[i]).mean(axis=1)
            best = int(np.argmax(similarity))
            if similarity[best] >= threshold:
                keep[i] = False
                duplicate_of[i] = cand[best]
                continue
        lsh.insert(i, minhash, check_duplication=False)
    return NearDuplicates(keep=keep, duplicate_of=duplicate_of)


def near_duplicate_pairs(signatures_DP: np.ndarray, *, threshold: float = 0.8, seed: int = 1,
                         bands_rows: tuple[int, int] | None = None) -> set[tuple[int, int]]:
    """Every pair (i < j) that LSH proposes and the signatures confirm at `threshold` (for evaluation)."""
    n, num_perm = signatures_DP.shape
    lsh = MinHashLSH(num_perm=num_perm, params=bands_rows or lsh_params(threshold, num_perm))
    pairs: set[tuple[int, int]] = set()
    for j in range(n):
        minhash = lean_minhash(signatures_DP[j], seed)
        candidates = np.asarray(lsh.query(minhash), dtype=np.int64)
        if len(candidates):
            similarity = (signatures_DP[candidates] == signatures_DP[j]).mean(axis=1)
            pairs.update((int(i), j) for i in candidates[similarity >= threshold])
        lsh.insert(j, minhash, check_duplication=False)
    return pairs


def exact_duplicates(keys: Iterable[str]) -> np.ndarray:
    """Boolean mask keeping the first occurrence of each content hash."""
    seen: set[str] = set()
    keep = []
    for key in keys:
        keep.append(key not in seen)
        seen.add(key)
    return np.asarray(keep, dtype=bool)


def shingle_set(text: str, modality: str, config: ShingleConfig = DEFAULT_SHINGLES) -> set[str]:
    """The shingles of one document as strings, for exact Jaccard (evaluation and the baseline)."""
    prepared = prepare_text(text, modality, config)
    if modality in CHAR_SHINGLE_MODALITIES:
        n = config.char_ngram
        return {prepared[i:i + n] for i in range(max(len(prepared) - n + 1, min(len(prepared), 1)))}
    tokens = _TOKEN.findall(prepared)
    n = config.word_ngram
    return {"\x00".join(tokens[i:i + n]) for i in range(max(len(tokens) - n + 1, min(len(tokens), 1)))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0
