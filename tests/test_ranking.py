"""The learned ranking: features from the shipped path's candidates, a listwise fit that learns what marks
the root cause, re-ranking, and the model file round trip."""

from __future__ import annotations

import numpy as np
import pytest

from eval.train_ranking import Group, fit, leave_one_system_out, service_accuracy
from flipmoe.toolkits.index import IncidentIndex
from flipmoe.toolkits.localize import Signal
from flipmoe.toolkits.ranking import FEATURES, RankingModel, candidate_features
from flipmoe.toolkits.rootcause import RootCause


def causes() -> list[RootCause]:
    return [RootCause(rank=1, service="front", pod="front-0", score=0.9, modality_scores={"metrics": 0.9}),
            RootCause(rank=2, service="db", pod="db-0", score=0.5, modality_scores={"metrics": 0.5})]


def signals() -> list[Signal]:
    return [Signal(modality="metrics", service="front", pod="front-0", strength=0.9, role="symptom",
                   kind="metrics:latency", summary="latency up"),
            Signal(modality="metrics", service="db", pod="db-0", strength=0.6, role="cause", kind="metrics:cpu",
                   summary="cpu up")]


INDEX = IncidentIndex(services=("db", "front"), call_edges=(("front", "db"),))


def test_features_are_normalised_per_incident_and_name_their_regime():
    x_CF = candidate_features(causes(), signals(), INDEX)
    assert x_CF.shape == (2, len(FEATURES)) and (x_CF >= 0).all() and (x_CF <= 1).all()
    assert not x_CF[:, len(FEATURES) // 2:].any(), "raw telemetry: the events-only copies are zero"
    cause = FEATURES.index("pod_cause")
    assert x_CF[1, cause] == 1.0 and x_CF[0, cause] == 0.0


def synthetic_groups(system: str, n: int, seed: int) -> list[Group]:
    """Incidents where the root cause is the candidate with cause evidence, never the fusion's favourite."""
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(n):
        x_CF = rng.uniform(0, 0.3, size=(4, len(FEATURES)))
        x_CF[0, FEATURES.index("fusion_score")] = 1.0
        x_CF[2, FEATURES.index("pod_cause")] = 1.0
        groups.append(Group(system=system, incident=f"{system}-{i}", x_CF=x_CF, y_C=np.array([0, 0, 1, 0.0]),
                            services=("a", "b", "c", "d"), label_service="c"))
    return groups


def test_a_listwise_fit_learns_what_marks_the_root_cause_across_systems():
    groups = synthetic_groups("one", 30, 0) + synthetic_groups("two", 30, 1)
    model = fit(groups)
    assert service_accuracy(groups, None) == 0.0 and service_accuracy(groups, model) == 1.0
    table = leave_one_system_out(groups)
    assert table["one"]["learned_A@1"] == table["two"]["learned_A@1"] == 1.0


def test_rerank_orders_by_the_model_and_the_file_round_trips(tmp_path):
    weights = np.zeros(len(FEATURES))
    weights[FEATURES.index("pod_cause")] = 5.0
    model = RankingModel(features=FEATURES, weights=tuple(weights), bias=0.0)
    ranked = model.rerank(causes(), signals(), INDEX)
    assert [c.service for c in ranked] == ["db", "front"] and [c.rank for c in ranked] == [1, 2]
    assert ranked[0].score > ranked[1].score and abs(ranked[0].score + ranked[1].score - 1) < 1e-3
    assert RankingModel.load(model.save(tmp_path / "m.json")) == model


def test_a_model_fitted_on_other_features_is_refused():
    with pytest.raises(ValueError, match="other features"):
        RankingModel(features=("x",), weights=(1.0,), bias=0.0)
