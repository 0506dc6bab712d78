"""Fault-type diagnosis: the shipped model, the prototype fallback, reasons, and training on toy features."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from eval.train_diagnosis import (
    DiagnosisTrainingConfig,
    Sample,
    fit_diagnosis_model,
    training_plan,
)
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import Topology
from flipmoe.telemetry.taxonomy import FAULT_TYPES
from flipmoe.toolkits.diagnose import (
    FEATURE_NAMES,
    MODEL_PATH,
    DiagnosisModel,
    classify,
    diagnose,
    diagnosis_features,
    load_model,
)
from flipmoe.toolkits.rootcause import RootCause

OOM_EVIDENCE = {"m_memory": 0.9, "m_memory_rising": 0.85, "m_restarts": 0.8, "e_oom": 0.95, "any_e_oom": 0.95,
                "l_oom": 0.7, "any_l_oom": 0.7, "any_m_memory_rising": 0.85, "any_m_restarts": 0.8}


def suspect(service: str = "cart-cache") -> RootCause:
    return RootCause(rank=1, service=service, pod=f"{service}-0", node="node-1", score=1.0)


def toy_model(prior_weight: float = 0.0) -> DiagnosisModel:
    """Two classes over three features: memory evidence says memory_leak, TLS evidence certificate_expiry."""
    return DiagnosisModel(classes=("certificate_expiry", "memory_leak"), feature_names=("e_oom", "l_tls", "m_cpu"),
                          coef_KF=np.array([[-1.0, 2.0, 0.1], [1.5, -2.0, 0.2]]), intercept_K=np.array([0.0, -0.2]),
                          prior_weight=prior_weight)


def test_shipped_model_loads_and_diagnoses_a_hand_built_feature_dict():
    model = load_model()
    assert model is not None, f"{MODEL_PATH} is missing: run 'flipmoe train diagnosis'"
    assert set(model.classes) == set(FAULT_TYPES)
    assert model.feature_names == FEATURE_NAMES, "features changed since training: run 'flipmoe train diagnosis'"
    card = model.card
    assert card["command"].startswith("flipmoe train diagnosis")
    assert all(last < 600_000 for _, last in card["training_seeds"].values())
    assert {"accuracy", "macro_f1"} <= set(card["cross_validation"]["learned"])
    diagnosis = classify(OOM_EVIDENCE, model)
    assert diagnosis.fault_type == "memory_leak"
    assert diagnosis.confidence == pytest.approx(max(diagnosis.scores.values()), abs=1e-4)
    assert sum(diagnosis.scores.values()) == pytest.approx(1.0, abs=1e-3)
    assert diagnosis.reasons


def test_missing_model_file_falls_back_to_the_prototypes(tmp_path):
    absent = tmp_path / "absent.json"
    assert load_model(absent) is None
    diagnosis = diagnose(suspect("cart-cache"), model_path=absent)
    assert diagnosis is not None
    assert diagnosis.fault_type == "cache_outage"  # the name says cache; nothing else is known
    assert diagnosis.reasons == ("is_cache=1.00",)
    assert diagnose(None, model_path=absent) is None


def test_unreadable_model_file_falls_back_with_a_warning(tmp_path, caplog):
    broken = tmp_path / "model.json"
    broken.write_text("{not json", encoding="utf-8")
    assert load_model(broken) is None
    assert "flipmoe train diagnosis" in caplog.text
    assert diagnose(suspect("cart-cache"), model_path=broken).fault_type == "cache_outage"


def test_saved_model_round_trips_and_is_reloaded_when_rewritten(tmp_path):
    path = toy_model().save(tmp_path / "model.json")
    loaded = load_model(path)
    assert loaded is not None and loaded.classes == ("certificate_expiry", "memory_leak")
    np.testing.assert_allclose(loaded.coef_KF, toy_model().coef_KF)
    data = json.loads(path.read_text())
    data["prior_weight"] = 0.5
    path.write_text(json.dumps(data))
    assert load_model(path).prior_weight == 0.5  # type: ignore[union-attr]


def test_reasons_are_the_winners_positive_weight_times_feature_terms():
    model = toy_model()
    features = {"e_oom": 0.8, "l_tls": 0.1, "m_cpu": 0.5, "is_cache": 1.0}
    diagnosis = classify(features, model)
    assert diagnosis.fault_type == "memory_leak"
    # memory_leak terms: e_oom 1.5 x 0.8 = 1.2, m_cpu 0.2 x 0.5 = 0.1, l_tls -2 x 0.1 = -0.2 (against: not listed)
    assert diagnosis.reasons == ("e_oom=0.80 (+1.20)", "m_cpu=0.50 (+0.10)")
    logits = model.coef_KF @ np.array([0.8, 0.1, 0.5]) + model.intercept_K
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert diagnosis.confidence == pytest.approx(p[1])


def test_prototype_prior_is_pooled_with_the_model():
    features = {"e_oom": 0.8, "l_tls": 0.1, "callers_l_tls": 1.0}
    alone = classify(features, toy_model(prior_weight=0.0))
    pooled = classify(features, toy_model(prior_weight=1.0))
    assert alone.fault_type == "memory_leak"
    assert pooled.fault_type == "certificate_expiry"  # the TLS prototype outweighs the toy model


def test_features_are_named_and_bounded():
    topology = Topology(edges=[("front", "orders-db")], kinds={"orders-db": "database"}, placement={})
    features = diagnosis_features(suspect("orders-db"), topology=topology, callers=["front"])
    assert features == {"is_database": 1.0}
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def toy_samples(n_per_class: int = 12, seed: int = 0) -> list[Sample]:
    """Three fault types, each with its own noisy signature over real feature names."""
    rng = np.random.default_rng(seed)
    signatures = {"memory_leak": ("m_memory", "e_oom"), "dns_failure": ("l_dns", "callers_l_error"),
                  "cpu_hog": ("m_cpu", "t_self")}
    samples = []
    for fault, names in signatures.items():
        for i in range(n_per_class):
            features = {name: float(rng.uniform(0.5, 1.0)) for name in names}
            features["m_latency"] = float(rng.uniform(0, 1))  # a symptom every type shows
            samples.append(Sample(features=features, fault_type=fault, system=("a", "b")[i % 2], seed=i))
    return samples


def test_training_fits_toy_features_end_to_end(tmp_path):
    model = fit_diagnosis_model(toy_samples(), c_grid=(0.3, 3.0), prior_weights=(0.0, 0.1), folds=3,
                                card={"command": "test"})
    assert set(model.classes) == {"memory_leak", "dns_failure", "cpu_hog"}
    card = model.card
    assert card["counts_per_class"] == {"cpu_hog": 12, "dns_failure": 12, "memory_leak": 12}
    assert card["cross_validation"]["learned"]["accuracy"] > 0.9
    assert set(card["cross_validation"]["leave_one_system_out"]) == {"a", "b"}
    assert card["cross_validation"]["chosen_C"] in (0.3, 3.0)
    loaded = load_model(model.save(tmp_path / "model.json"))
    assert loaded is not None
    assert classify({"l_dns": 0.9, "callers_l_error": 0.8}, loaded).fault_type == "dns_failure"
    assert classify({"m_cpu": 0.9, "t_self": 0.7}, loaded).reasons[0].startswith(("m_cpu", "t_self"))


def test_training_needs_two_examples_of_each_type():
    samples = toy_samples(n_per_class=2)[:5]  # dns_failure has one
    with pytest.raises(FlipmoeInputError, match="at least 2"):
        fit_diagnosis_model(samples, folds=3)


def test_training_plan_is_round_robin_in_documented_seed_ranges():
    config = DiagnosisTrainingConfig(systems=("webshop", "random"), per_system=(3, 2), seed=100_000)
    assert training_plan(config) == [("webshop", "cpu_contention", 100_000), ("webshop", "cpu_hog", 100_001),
                                     ("webshop", "memory_leak", 100_002), ("random", "cpu_contention", 110_000),
                                     ("random", "cpu_hog", 110_001)]


@pytest.mark.parametrize("kwargs", [{"seed": 650_000}, {"seed": 595_000, "per_system": (10_000,)},
                                    {"per_system": (1, 2)}, {"per_system": (0,)}])
def test_training_config_refuses_held_out_seeds_and_bad_counts(kwargs):
    with pytest.raises(FlipmoeInputError):
        DiagnosisTrainingConfig(**kwargs)


def test_analysis_path_scores_without_scikit_learn():
    code = ("import sys; from flipmoe.toolkits.diagnose import classify, load_model; "
            "classify({'e_oom': 1.0}, load_model()); print('sklearn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_cli_parses_train_diagnosis():
    from flipmoe.cli import build_parser

    args = build_parser().parse_args(["train", "diagnosis", "--per-system", "4,2", "--systems", "webshop,random",
                                      "--out", "m.json"])
    assert (args.per_system, args.systems, args.out) == ("4,2", "webshop,random", "m.json")


def _alert_incident(rows):
    import pandas as pd
    from conftest import tiny_incident

    from flipmoe.telemetry import normalise_table

    incident = tiny_incident()
    incident.telemetry.events = normalise_table(pd.DataFrame(
        {"timestamp": pd.Timestamp("2026-03-01T10:02:00Z"), "kind": [r[0] for r in rows],
         "service": [r[1] for r in rows], "pod": [f"{r[1]}-0" for r in rows], "reason": [r[2] for r in rows],
         "message": [r[3] for r in rows]}), "events", source="test")
    return incident


def test_alerts_from_other_detectors_read_as_the_anomalies_they_report():
    from flipmoe.toolkits.events import analyse_events

    incident = _alert_incident([
        ("metric", "db", "container_memory_usage_bytes", "up"), ("metric", "db", "memory_rss", "up"),
        ("metric", "api", "cpu_usage", "down"), ("trace", "api", "GET /orders", "PD (called by front-0)"),
        ("trace", "front", "GET /", "EC (called by outside the system)"), ("log", "front", "template 3", "nan")])
    events = analyse_events(incident)
    db = diagnosis_features(suspect("db"), events=events)
    assert db["m_memory"] > 0 and db["m_memory_rising"] > 0 and "m_cpu" not in db
    api = diagnosis_features(suspect("api"), events=events)
    assert api["m_resource_down"] > 0 and api["t_self"] > 0 and "t_errors" not in api
    front = diagnosis_features(suspect("front"), events=events)
    assert front["t_errors"] > 0 and front["l_error"] > 0
