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

The gate every expert build (and so every bundle build) passes, `check_training_data`, is stricter about
what it calls a leak and never silent about it:
- the source files of the evaluation harness and of the chaos gym (whose templates generate the
  evaluation items) are no training text: `without_evaluation_sources` drops them from a corpus;
- pretraining documents that contain a held-out item's input verbatim (whitespace-normalised, on word
  boundaries) are dropped, as this module drops them from the data pipeline's shards;
- a held-out item whose input still occurs verbatim in the training data — in a supervised example above
  all, which is never altered here — fails the build with `ContaminationError`.
Inputs shorter than `LEAK_MIN_WORDS` words (a health-check line) are left out: they recur across seeds
and systems by construction, and their presence says nothing about leakage.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from datasketch import MinHashLSHEnsemble

from data_pipeline import dedup
from flipmoe.errors import FlipmoeInputError

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


# --- the build gate --------------------------------------------------------------------------------

EVALUATION_PACKAGES = ("eval", "data_pipeline.chaos")
"""Packages whose source scores or generates evaluation items: the harness (its references, its
generators) and the chaos gym (the templates of the held-out incidents' logs, stacks and events)."""
LEAK_MIN_WORDS = 6
"""Held-out inputs shorter than this (in words) are not checked: too generic to be evidence of a leak."""


class ContaminationError(FlipmoeInputError):
    """Training data that contains evaluation items: the build stops."""


@dataclass
class TrainingDataCheck:
    """What the gate did to one training set: what it dropped, and the leaks it found (none when it passed)."""

    evaluation_sources_dropped: int = 0
    documents_dropped: int = 0
    checked: int = 0
    leaks: dict[str, list[str]] = field(default_factory=dict)
    """task -> held-out inputs found verbatim in the training data."""

    def to_json(self) -> dict[str, object]:
        return {"evaluation_sources_dropped": self.evaluation_sources_dropped,
                "documents_dropped": self.documents_dropped, "heldout_checked": self.checked,
                "leaks": {task: len(inputs) for task, inputs in self.leaks.items()}}


def evaluation_source_texts(packages: Sequence[str] = EVALUATION_PACKAGES) -> set[str]:
    """The normalised text of every Python and YAML file of `packages` (found without importing them)."""
    texts: set[str] = set()
    for package in packages:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for pattern in ("*.py", "*.yaml", "*.yml"):
                texts.update(_normal(p.read_text(encoding="utf-8", errors="replace"))
                             for p in Path(folder).rglob(pattern) if "__pycache__" not in p.parts)
    return texts - {""}


def without_evaluation_sources(documents: Sequence[str], *, sources: set[str] | None = None) -> tuple[list[str], int]:
    """(`documents` without the evaluation packages' files, how many were dropped)."""
    sources = evaluation_source_texts() if sources is None else sources
    kept = [d for d in documents if _normal(d) not in sources]
    return kept, len(documents) - len(kept)


def leaked(queries: Sequence[str], texts: Sequence[str]) -> list[int]:
    """Indices of the queries (of at least `LEAK_MIN_WORDS` words) that occur verbatim, whitespace-normalised
    and case-folded, on word boundaries (punctuation and quotes next to them count as boundaries), in one
    of `texts`."""
    haystack = "\0".join(_normal(t) for t in texts)
    return [i for i, q in enumerate(queries) if len(q.split()) >= LEAK_MIN_WORDS and _occurs(_normal(q), haystack)]


def _occurs(query: str, haystack: str) -> bool:
    # A plain substring test first (fast, and false for almost every query); the boundary check only then.
    if query not in haystack:
        return False
    return re.search(rf"(?<!\w){re.escape(query)}(?!\w)", haystack) is not None


def decontaminate(documents: Sequence[str], queries: Sequence[str]) -> tuple[list[str], int]:
    """(`documents` without those that contain a query verbatim, how many were dropped)."""
    hits = [_normal(queries[i]) for i in leaked(queries, documents)]
    if not hits:
        return list(documents), 0
    kept = [d for d in documents if not any(_occurs(h, _normal(d)) for h in hits)]
    return kept, len(documents) - len(kept)


def check_training_data(name: str, corpus: Sequence[str], examples: Sequence[str],
                        heldout: Mapping[str, Sequence[str]], *,
                        sources: set[str] | None = None) -> tuple[list[str], TrainingDataCheck]:
    """The gate of one expert's training data: (the corpus to train on, what was done).

    Drops the evaluation packages' files and the documents holding a held-out input from `corpus`, then
    raises `ContaminationError` when a held-out input (`heldout`: task -> inputs) still occurs verbatim in
    the corpus or in the supervised `examples` (their inputs and targets as text)."""
    check = TrainingDataCheck()
    corpus, check.evaluation_sources_dropped = without_evaluation_sources(corpus, sources=sources)
    queries = [q for inputs in heldout.values() for q in inputs]
    corpus, check.documents_dropped = decontaminate(corpus, queries)
    training = [*corpus, *examples]
    for task, inputs in heldout.items():
        check.checked += len(inputs)
        found = [inputs[i] for i in leaked(inputs, training)]
        if found:
            check.leaks[task] = found
    if check.leaks:
        counts = ", ".join(f"{task} {len(found)}" for task, found in check.leaks.items())
        example = next(iter(check.leaks.values()))[0].split("\n", 1)[0][:120]
        raise ContaminationError(f"{name}: held-out evaluation items occur in the training data ({counts}; "
                                 f"e.g. {example!r})",
                                 hint="the training split must not hold evaluation inputs: check the data "
                                      "sources' split (chaos seeds, hashed lines) and the task generators")
    return corpus, check


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()
