"""Contamination of evaluation items by training data, per task.

An item is contaminated when its input is (mostly) contained in a training text: for inputs of at
least `data_pipeline.contamination.MIN_SHINGLES` word 6-grams, MinHash containment (the data
pipeline's sketches, queried in a `MinHashLSHEnsemble`, confirmed on the signatures) of at least
`threshold`; shorter inputs (one log line, a question) are contaminated when every line of the input
occurs verbatim, whitespace-normalised, as a line of a training text — MinHash cannot tell a short
line's leakage from a shared template, an exact line match can. MinHash candidates are confirmed on
the exact shingle sets: the containment estimated from a Jaccard estimate and the set sizes blows up
for a short item against a document thousands of times larger (one chance signature collision reads
as full containment), so the estimate only proposes candidates.

Training texts are what the experts learn from: each family's pretraining corpus
(`get_spec(family).corpus(sources)`) and its training task data (inputs and targets).

This is the harness's report (`flipmoe eval run --contamination`): near-duplicates count, so shared
boilerplate shows. The gate that every expert and bundle build passes is stricter about what a leak is
and fails the build on one (`data_pipeline.contamination.check_training_data`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eval.tasks import EvalItem


@dataclass(frozen=True)
class TaskContamination:
    items: int
    contaminated: int
    by_minhash: int
    by_exact_line: int

    @property
    def share(self) -> float:
        return self.contaminated / self.items if self.items else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {"items": self.items, "contaminated": self.contaminated, "share": round(self.share, 4),
                "by_minhash": self.by_minhash, "by_exact_line": self.by_exact_line}


def training_texts(families: Sequence[str] | None = None, *, sources: object = None) -> list[str]:
    """Every family's pretraining corpus and training task data (inputs, then targets)."""
    from experts.registry import EXPERT_FAMILIES, get_spec
    from experts.sources import Sources

    sources = sources or Sources()
    texts: list[str] = []
    for family in families or tuple(EXPERT_FAMILIES):
        spec = get_spec(family)
        texts += list(spec.corpus(sources))
        for examples in spec.task_data(sources, "train").values():
            texts += [f"{e.input}\n{e.target}" for e in examples]
    return texts


def contamination(items_by_task: Mapping[str, Sequence[EvalItem]], train_texts: Sequence[str], *,
                  threshold: float = 0.5, seed: int = 1) -> dict[str, TaskContamination]:
    """Per task: how many items a training text contains."""
    from datasketch import MinHashLSHEnsemble

    from data_pipeline import dedup
    from data_pipeline.contamination import MIN_SHINGLES, SHINGLES, sketch

    lines = {_normal(line) for text in train_texts for line in text.split("\n") if line.strip()}
    train = sketch(list(train_texts), seed=seed)
    usable = np.flatnonzero(train.sizes > 0)
    ensemble = None
    if len(usable):
        ensemble = MinHashLSHEnsemble(threshold=threshold, num_perm=train.signatures.shape[1], num_part=8)
        ensemble.index((int(i), dedup.lean_minhash(train.signatures[i], seed), int(train.sizes[i])) for i in usable)

    shingles: dict[int, set[int]] = {}

    def shingle_set(index: int, text: str) -> set[int]:
        if index not in shingles:
            hashes, _ = dedup.shingle_hashes([text], ["prose"], SHINGLES)
            shingles[index] = set(hashes.tolist())
        return shingles[index]

    report = {}
    for task, items in items_by_task.items():
        inputs = [item.input for item in items]
        queries = sketch(inputs, seed=seed) if inputs else None
        minhash = exact = 0
        for q, text in enumerate(inputs):
            assert queries is not None
            size = int(queries.sizes[q])
            if size >= MIN_SHINGLES:
                candidates = (_candidates(ensemble, train, queries.signatures[q], size, threshold, seed)
                              if ensemble is not None else [])
                query = set(dedup.shingle_hashes([text], ["prose"], SHINGLES)[0].tolist())
                if any(len(query & shingle_set(int(c), train_texts[int(c)])) >= threshold * len(query)
                       for c in candidates):
                    minhash += 1
            elif all(_normal(line) in lines for line in text.split("\n") if line.strip()):
                exact += 1
        report[task] = TaskContamination(items=len(items), contaminated=minhash + exact, by_minhash=minhash,
                                         by_exact_line=exact)
    return report


def _candidates(ensemble: object, train: object, signature: np.ndarray, size: int, threshold: float,
                seed: int) -> list[int]:
    """Training texts whose estimated containment of the query reaches `threshold`, likeliest first."""
    from data_pipeline import dedup

    candidates = np.fromiter(ensemble.query(dedup.lean_minhash(signature, seed), size),  # type: ignore[attr-defined]
                             dtype=np.int64)
    if not len(candidates):
        return []
    jaccard = (train.signatures[candidates] == signature).mean(axis=1)  # type: ignore[attr-defined]
    # |Q ∩ X| = J (|Q| + |X|) / (1 + J); containment of Q in X is that over |Q|.
    containment = jaccard * (size + train.sizes[candidates]) / (1.0 + jaccard) / size  # type: ignore[attr-defined]
    keep = containment >= threshold
    return [int(c) for c in candidates[keep][np.argsort(-containment[keep], kind="stable")]]


def _normal(line: str) -> str:
    return " ".join(line.split()).lower()
