"""Exact and MinHash near-duplicate removal: datasketch parity, planted duplicates, LSH parameters."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from data_pipeline import dedup
from data_pipeline.dedup_eval import exact_pairs, plant_near_duplicates, precision_recall

LOG = "\n".join(f"2024-01-01T10:00:{i:02d}Z INFO cartservice request {i} took {i * 7 % 50}ms user=u{i * 31}"
                for i in range(30))
CODE = "def handler(request):\n    user = load_user(request.user_id)\n    if user is None:\n        return 404\n" * 3


def _corpus(n: int = 60, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    # Letters only: log shingling masks digits, and words differing only in digits would all collide.
    words = ["".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(3, 8))) for _ in range(400)]
    texts, modalities = [], []
    for i in range(n):
        body = " ".join(rng.choice(words) for _ in range(120))
        if i % 2:
            texts.append(body)
            modalities.append("prose")
        else:
            texts.append("\n".join(f"ts INFO {body[k:k + 60]}" for k in range(0, len(body), 60)))
            modalities.append("log")
    return texts, modalities


def test_signatures_equal_datasketch_minhash_of_the_same_shingle_hashes() -> None:
    texts = [LOG, CODE, "short", "", "x" * 3]
    modalities = ["log", "code", "prose", "prose", "log"]
    hashes, counts = dedup.shingle_hashes(texts, modalities)
    signatures = dedup.signatures_from_hashes(hashes, counts, dedup.permutations(128, seed=3))
    offsets = np.concatenate(([0], np.cumsum(counts)))
    for i in range(len(texts)):
        reference = MinHash(num_perm=128, seed=3, hashfunc=lambda value: value, scheme=dedup.SCHEME)
        reference.update_batch([int(h) for h in hashes[offsets[i]:offsets[i + 1]]])
        np.testing.assert_array_equal(signatures[i], reference.hashvalues)


def test_shingle_counts_match_the_string_shingles() -> None:
    texts = [LOG, CODE, "one two", "a"]
    modalities = ["log", "code", "prose", "trace"]
    hashes, counts = dedup.shingle_hashes(texts, modalities)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    for i, (text, modality) in enumerate(zip(texts, modalities, strict=True)):
        assert len(set(hashes[offsets[i]:offsets[i + 1]].tolist())) == len(dedup.shingle_set(text, modality))


def test_batching_does_not_change_signatures() -> None:
    texts, modalities = _corpus(20)
    whole = dedup.signatures(texts, modalities)
    parts = np.concatenate([dedup.signatures(texts[i:i + 7], modalities[i:i + 7]) for i in range(0, 20, 7)])
    np.testing.assert_array_equal(whole, parts)


def test_signatures_work_in_datasketch_lsh() -> None:
    texts, modalities = _corpus(10)
    signatures = dedup.signatures([*texts, texts[3]], [*modalities, modalities[3]])
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for i in range(10):
        lsh.insert(i, dedup.lean_minhash(signatures[i]))
    assert lsh.query(dedup.lean_minhash(signatures[10])) == [3]


def test_masking_makes_log_windows_that_differ_in_numbers_duplicates() -> None:
    other = LOG.replace("10:00:", "11:17:").replace("user=u", "user=u9")
    signatures = dedup.signatures([LOG, other], ["log", "log"])
    assert (signatures[0] == signatures[1]).mean() == 1.0
    # Metrics keep their numbers: different values are different documents.
    metrics = dedup.signatures(["cpu 0.5 1\nmem 10 1", "cpu 0.9 2\nmem 80 2"], ["metric", "metric"])
    assert (metrics[0] == metrics[1]).mean() < 0.5


def test_planted_near_duplicates_are_found_and_dissimilar_pairs_are_not() -> None:
    # Pairs near the threshold flip either way with the estimator's noise (sd ~0.035 at 128
    # permutations); clear cases must not: J >= 0.9 is found, J < 0.7 never reported.
    texts, modalities = _corpus(60)
    planted, planted_modalities = plant_near_duplicates(texts, modalities, copies=120, seed=2, max_rate=0.12)
    predicted = dedup.near_duplicate_pairs(dedup.signatures(planted, planted_modalities), threshold=0.8)
    clear = exact_pairs(planted, planted_modalities, 0.9)
    loose = exact_pairs(planted, planted_modalities, 0.7)
    assert len(clear) >= 25
    assert precision_recall(predicted, clear)["recall"] >= 0.97
    assert predicted <= loose
    at_threshold = precision_recall(predicted, exact_pairs(planted, planted_modalities, 0.8))
    assert at_threshold["precision"] >= 0.75 and at_threshold["recall"] >= 0.75, at_threshold


def test_find_near_duplicates_keeps_the_first_of_each_cluster() -> None:
    texts, modalities = _corpus(8)
    texts = [*texts, texts[2], texts[2] + " extra"]
    modalities = [*modalities, modalities[2], modalities[2]]
    found = dedup.find_near_duplicates(dedup.signatures(texts, modalities), threshold=0.8)
    assert found.keep.tolist() == [True] * 8 + [False, False]
    assert found.duplicate_of[8:].tolist() == [2, 2]


def test_exact_duplicates_keep_first_occurrence() -> None:
    keys = [dedup.content_hash(t) for t in ["a", "b", "a", "c", "b"]]
    assert dedup.exact_duplicates(keys).tolist() == [True, True, False, True, False]


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
def test_lsh_params_put_the_s_curve_around_the_threshold(threshold: float) -> None:
    bands, rows = dedup.lsh_params(threshold, 128)
    assert bands * rows <= 128
    assert dedup.collision_probability(threshold + 0.1, bands, rows) > 0.9
    assert dedup.collision_probability(threshold - 0.2, bands, rows) < 0.3


def test_empty_documents_get_the_empty_signature() -> None:
    signatures = dedup.signatures(["", "some words here"], ["prose", "prose"])
    assert (signatures[0] == np.iinfo(np.uint32).max).all()
    assert not (signatures[1] == np.iinfo(np.uint32).max).all()


def test_vectorised_masking_matches_the_regex() -> None:
    texts = ["id=6f605825-e5e8 took 35ms md5 cafe1 CAFE deadbeef 0xdeadbeef x9", "ab", "9", "", "e1 ok"]
    modalities = ["log", "log", "log", "log", "log"]
    hashes, counts = dedup.shingle_hashes(texts, modalities)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    for i, (text, modality) in enumerate(zip(texts, modalities, strict=True)):
        assert len(set(hashes[offsets[i]:offsets[i + 1]].tolist())) == len(dedup.shingle_set(text, modality))
