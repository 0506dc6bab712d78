"""Contamination check: training text that contains an evaluation example is removed.

Overlap is measured as *containment* — the share of an evaluation text's shingles that also occur in
a training text — because evaluation examples (a log window, a trace, a code snippet) are usually
much shorter than the documents that could leak them, and Jaccard similarity would hide a short
example inside a long document. Training texts are indexed in a `datasketch.MinHashLSHEnsemble` with
their MinHash and shingle-set size; each evaluation text queries it, and candidates are confirmed on
the signatures (containment estimated from the Jaccard estimate and both set sizes).

Shingles are word 6-grams of the raw (lower-cased, unmasked) text for every modality: numbers and ids
stay, so two incidents that merely share log templates do not count as contaminated, and evaluation
texts with fewer than `MIN_SHINGLES` distinct shingles (one log line, a metric name) are skipped as too
generic to tell leakage from a shared template.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from datasketch import MinHashLSHEnsemble

from data_pipeline import dedup

SHINGLES = dedup.ShingleConfig(word_ngram=6)
MIN_SHINGLES = 20
_MODALITY = "prose"  # word shingles of unmasked text, whatever the text is


@dataclass(frozen=True)
class Sketches:
    """MinHash signatures (n, num_perm) and distinct-shingle counts (n,) of a batch of texts."""

    signatures: np.ndarray
    sizes: np.ndarray


def sketch(texts: Sequence[str], *, num_perm: int = 128, seed: int = 1) -> Sketches:
    hashes, counts = dedup.shingle_hashes(texts, [_MODALITY] * len(texts), SHINGLES)
    sizes = np.zeros(len(texts), dtype=np.int64)
    if len(hashes):
        doc = np.repeat(np.arange(len(texts), dtype=np.uint64), counts)
        pairs = np.sort((doc << np.uint64(32)) | hashes.astype(np.uint64))
        distinct = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]
        sizes = np.bincount((distinct >> np.uint64(32)).astype(np.int64), minlength=len(texts))
    perms = dedup.permutations(num_perm, seed)
    return Sketches(dedup.signatures_from_hashes(hashes, counts, perms), sizes)


def contaminated(train: Sketches, evaluation: Sketches, *, threshold: float = 0.5, seed: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(mask over training texts that contain an evaluation text, index of the evaluation text or -1)."""
    n_train = len(train.sizes)
    hit = np.full(n_train, -1, dtype=np.int64)
    usable = np.flatnonzero(train.sizes > 0)
    queries = np.flatnonzero(evaluation.sizes >= MIN_SHINGLES)
    if not len(usable) or not len(queries):
        return hit >= 0, hit
    num_perm = train.signatures.shape[1]
    ensemble = MinHashLSHEnsemble(threshold=threshold, num_perm=num_perm, num_part=8)
    ensemble.index((int(i), dedup.lean_minhash(train.signatures[i], seed), int(train.sizes[i])) for i in usable)
    for q in queries:
        size_q = int(evaluation.sizes[q])
        candidates = np.fromiter(ensemble.query(dedup.lean_minhash(evaluation.signatures[q], seed), size_q),
                                 dtype=np.int64)
        if not len(candidates):
            continue
        jaccard = (train.signatures[candidates] == evaluation.signatures[q]).mean(axis=1)
        # |Q ∩ X| = J (|Q| + |X|) / (1 + J); containment of Q in X is that over |Q|.
        containment = jaccard * (size_q + train.sizes[candidates]) / (1.0 + jaccard) / size_q
        confirmed = candidates[containment >= threshold]
        hit[confirmed[hit[confirmed] < 0]] = q
    return hit >= 0, hit


def read_eval_texts(paths: Sequence[str | Path], *, lines_per_text: int = 10) -> list[str]:
    """Evaluation texts of every file under the given files or directories, `lines_per_text` lines (or
    CSV rows, their string cells joined) at a time: an evaluation example is a few lines, and
    containment is measured per example, not per file."""
    from data_pipeline.sources import read_text_file

    texts = []
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            name = path.name.removesuffix(".gz")
            if name.endswith(".csv"):
                frame = pd.read_csv(path, dtype=str, on_bad_lines="skip").fillna("")
                if "Content" in frame.columns:  # LogHub structured logs: the log line is the example
                    frame = frame[["Content"]]
                lines = [" ".join(cell for cell in row if cell) for row in frame.itertuples(index=False)]
            elif path.suffix == ".gz":
                lines = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace").split("\n")
            else:
                lines = read_text_file(path).split("\n")
            texts += ["\n".join(lines[i:i + lines_per_text]) for i in range(0, len(lines), lines_per_text)]
    return texts
