"""Normalisation, modality tagging, heuristic filters, relevance/quality classifiers and balancing."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline import classifiers as clf
from data_pipeline.balance import balance
from data_pipeline.config import FilterConfig
from data_pipeline.documents import modality_accuracy, normalise_text, tag_modality
from data_pipeline.filters import rejection_reason

LOG = "\n".join(f"2024-03-01 10:00:{i:02d},123 ERROR [pool-{i}] Connection refused to db-{i % 3}:5432"
                for i in range(20))
TRACE = ("trace_id=ab12\nfrontend GET /cart duration=12.000ms status=ok\n"
         "  cartservice GetCart duration=9.500ms status=ok\n    redis GET duration=8.000ms status=error")
METRIC = "\n".join(f'container_cpu_usage_seconds_total{{service="cart",pod="cart-0"}} 0.{i}5 17040672{i}0000'
                   for i in range(10))
CODE = ("import os\n\n\ndef handler(request):\n    user = load(request)\n    return user.name\n\n\n"
        "class Cart:\n    pass\n")
CONFIG = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: cart\nspec:\n  replicas: 2\n  template:\n"
PROSE = ("When the cache is cold, the service reads from the database, which is slower. The runbook says to "
         "check the hit ratio first and then the latency of the slowest query before restarting anything.")


def test_normalisation_is_nfc_with_unix_lines_and_no_invisible_characters() -> None:
    text = "\ufeffcafe\u0301 \r\nline two   \r\n\n\n\n\n\nend\u200b"
    assert normalise_text(text) == "caf\u00e9\nline two\n\n\nend"
    assert normalise_text("  indented\tkept") == "  indented\tkept"


@pytest.mark.parametrize(("text", "modality"), [(LOG, "log"), (TRACE, "trace"), (METRIC, "metric"), (CODE, "code"),
                                                (CONFIG, "config"), (PROSE, "prose")])
def test_tag_modality_from_content(text: str, modality: str) -> None:
    assert tag_modality(text) == modality
    assert tag_modality(text, hint="log") == "log"


def test_modality_accuracy_reports_confusion() -> None:
    report = modality_accuracy([LOG, PROSE, CODE], ["log", "prose", "config"])
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["confusion"]["config->code"] == 1


@pytest.mark.parametrize(("text", "modality", "reason"), [
    ("ELF\x00\x01\x02" + "x" * 100, "prose", "binary"),
    ("short", "prose", "too_short"),
    ("\x1b\x1b\x07\ufffd\ufffd" * 30, "prose", "garbage"),
    ("#$%^&*()!@ " * 20, "prose", "garbage"),
    ("the same line again here\n" * 20, "log", "repetition"),
    ("buy now cheap " * 40, "prose", "repetition"),
    (LOG, "log", None),
    (PROSE, "prose", None),
    (CODE, "code", None),
])
def test_filters(text: str, modality: str, reason: str | None) -> None:
    assert rejection_reason(text, modality, FilterConfig()) == reason


def test_relevance_classifier_separates_devops_from_off_domain_text() -> None:
    devops = clf.devops_texts(incidents=1)
    offdomain = clf.offdomain_texts()
    model, scores = clf.train_and_evaluate(clf.relevance_samples(devops, offdomain))
    assert scores["heldout_samples"] > 50
    assert scores["precision"] >= 0.85 and scores["recall"] >= 0.85, scores
    assert model.scores([LOG])[0] > 0.5 > model.scores(["The integral of a polynomial over the unit interval "
                                                        "equals the sum of its coefficients divided by"
                                                        " their degrees plus one, a classical identity."])[0]


def test_quality_classifier_flags_corrupted_text(tmp_path) -> None:  # type: ignore[no-untyped-def]
    texts = clf.offdomain_texts()[:300] + [(f"log{i}", LOG.replace("10:00", f"1{i % 10}:0{i % 6}")) for i in range(40)]
    model, scores = clf.train_and_evaluate(clf.quality_samples(texts, seed=1))
    assert scores["precision"] >= 0.85 and scores["recall"] >= 0.85, scores
    model.save(tmp_path / "q.npz")
    np.testing.assert_allclose(clf.TextClassifier.load(tmp_path / "q.npz").scores([PROSE]), model.scores([PROSE]),
                               rtol=1e-5)


def test_balance_moves_the_mixture_towards_the_weights() -> None:
    modalities = ["log"] * 90 + ["code"] * 10
    plan = balance(modalities, [100] * 100, {"log": 0.5, "code": 0.5}, max_repeat=3.0, seed=0,
                   keys=[str(i) for i in range(100)])
    assert plan.before["log"] == pytest.approx(0.9)
    assert plan.after["log"] == pytest.approx(0.5, abs=0.02)
    assert plan.copies[90:].tolist() == [3] * 10  # code repeated up to max_repeat
    assert (plan.copies[:90] == 0).sum() == 60


def test_balance_drops_zero_weight_and_keeps_unweighted_modalities() -> None:
    plan = balance(["log", "prose", "trace"], [10, 10, 10], {"log": 1.0, "prose": 0.0}, max_repeat=2.0, seed=0)
    assert plan.copies.tolist() == [1, 0, 1]
