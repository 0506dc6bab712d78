"""The gate of the mixture (`router.gate`): how much each modality's evidence counts in the fusion, learned from
labelled incidents (`flipmoe train gate`), used by `rca --gate`; the entropy rule stays the default."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.train_gate import GateRecord, accuracy_table, first_service, leave_one_system_out, strategies
from flipmoe.errors import FlipmoeInputError
from flipmoe.toolkits.localize import Signal, entropy_rule, fusion_parts, modality_evidence, rank_root_causes
from router.gate import (
    FEATURES,
    MODALITIES,
    ModalityGate,
    case_from_parts,
    fit,
    fixed_gate,
    modality_features,
    read_gate,
)

SERVICES = ("a", "b", "c", "d")


def signal(modality: str, service: str, strength: float) -> Signal:
    return Signal(modality=modality, service=service, strength=strength, role="cause", kind=f"{modality}:x",
                  summary="")


def test_features_of_a_modality_are_computed_over_every_service():
    per_modality = {"a": {"logs": 0.8, "traces": 0.1}, "b": {"logs": 0.2}, "c": {"traces": 0.9}}
    features = modality_features(per_modality, 4)
    logs = dict(zip(FEATURES, features["logs"], strict=True))
    p = np.array([0.8, 0.2])
    assert logs["focus"] == pytest.approx(1 - float(-(p * np.log(p)).sum()) / math.log(4))
    assert (logs["top"], logs["margin"]) == (pytest.approx(0.8), pytest.approx(0.6))
    assert (logs["breadth"], logs["coverage"]) == (0.25, 0.5)
    assert logs["agreement"] == 0.0  # traces' favourite is c, which logs does not flag at all
    traces = dict(zip(FEATURES, features["traces"], strict=True))
    assert traces["agreement"] == pytest.approx(0.1 / 0.9)  # logs' favourite a, scored 0.1 by traces
    assert modality_features({"a": {"logs": 0.5}}, 3)["logs"][-1] == 1.0  # alone: nothing to disagree with


def test_a_gate_with_zero_parameters_is_the_entropy_rule():
    signals = [signal("logs", "a", 0.9), signal("traces", "b", 0.7), signal("metrics", "b", 0.4),
               signal("metrics", "c", 0.6)]
    zero = ModalityGate(features=FEATURES, bias=dict.fromkeys(MODALITIES, 0.0), coef=(0.0,) * len(FEATURES))
    rule = rank_root_causes(signals, services=SERVICES)
    gated = rank_root_causes(signals, services=SERVICES, gate=zero)
    assert [c.label for c in gated.root_causes] == [c.label for c in rule.root_causes]
    assert gated.service_scores == pytest.approx(rule.service_scores)
    per_modality = modality_evidence(signals, len(SERVICES))
    assert rule.modality_weights == pytest.approx(entropy_rule(per_modality, len(SERVICES)), abs=1e-4)


def test_fixed_gates_weigh_one_modality_alone_or_all_alike():
    signals = [signal("logs", "a", 0.6), signal("traces", "b", 0.9)]
    assert rank_root_causes(signals, services=SERVICES, gate=fixed_gate(only="logs")).root_causes[0].service == "a"
    assert rank_root_causes(signals, services=SERVICES, gate=fixed_gate(only="traces")).root_causes[0].service == "b"
    assert fixed_gate()({"a": {"logs": 0.6, "traces": 0.2}}, 4) == pytest.approx({"logs": 1.0, "traces": 1.0})
    with pytest.raises(ValueError, match="unknown modality"):
        fixed_gate(only="smell")


def record(system: str, i: int, *, right: str, wrong: str, noisy_focus: bool) -> GateRecord:
    """An incident whose root cause `right` points at with weak evidence, while `wrong` points elsewhere
    strongly; the wrong modality's evidence is spread (low focus) when `noisy_focus`."""
    label = SERVICES[i % 4]
    decoy = SERVICES[(i + 1) % 4]
    signals = [signal(right, label, 0.5), signal(wrong, decoy, 0.95)]
    if noisy_focus:
        signals += [signal(wrong, s, 0.6) for s in SERVICES if s not in (label, decoy)]
    edges = ()
    parts = fusion_parts(signals, call_edges=edges, services=SERVICES)
    return GateRecord(case=case_from_parts(parts, system=system, incident=f"{system}-{i}", label_service=label),
                      signals=tuple(signals), edges=edges, services=SERVICES, label_service=label)


def test_the_fit_learns_which_modality_to_trust_and_generalises_to_another_system():
    # In every system logs point at the root cause and traces at a decoy; the entropy rule trusts traces
    # (a prior of 1 against 0.8, and a clearer favourite), the gate learns not to.
    records = [record(system, i, right="logs", wrong="traces", noisy_focus=False)
               for system in ("s1", "s2", "s3") for i in range(8)]
    assert sum(first_service(r, None) == r.label_service for r in records) == 0
    gate = fit([r.case for r in records])
    weights = gate(modality_evidence(list(records[0].signals), 4), 4)
    assert weights["logs"] > weights["traces"]
    table = leave_one_system_out(records)
    for row in table.values():
        assert row["entropy rule (shipped)"] == 0.0 and row["learned gate"] == 1.0
        assert row["best single (logs)"] == 1.0 and row["oracle (best of these per incident)"] == 1.0
    assert gate.card["incidents"] == 24 and gate.card["systems"] == {"s1": 8, "s2": 8, "s3": 8}


def test_incidents_with_one_modality_teach_the_gate_nothing():
    lone = [GateRecord(case=case_from_parts(fusion_parts([signal("events", "a", 0.9)], services=SERVICES),
                                            system="s", incident="x", label_service="a"),
                       signals=(signal("events", "a", 0.9),), edges=(), services=SERVICES, label_service="a")]
    with pytest.raises(FlipmoeInputError, match="two or more modalities"):
        fit([r.case for r in lone])
    assert accuracy_table(lone, strategies(lone, None))["entropy rule (shipped)"] == 1.0


def test_a_gate_file_round_trips_and_a_bad_one_is_named(tmp_path):
    gate = ModalityGate(features=FEATURES, bias={"metrics": 0.1, "traces": -1.0, "logs": 0.5, "events": 0.0},
                        coef=(0.1, -0.2, 0.3, 0.0, 0.0, 1.0), card={"incidents": 3})
    path = gate.save(tmp_path / "gate.json")
    assert read_gate(path) == gate
    path.write_text('{"features": ["focus"], "bias": {}, "coef": [1.0]}')
    with pytest.raises(FlipmoeInputError, match="not a usable gate"):
        read_gate(path)
    with pytest.raises(FlipmoeInputError, match="cannot read the gate"):
        read_gate(tmp_path / "missing.json")


@pytest.fixture(scope="module")
def two_systems(tmp_path_factory):
    """Small labelled chaos incidents of two systems, on disk as an importer would leave them."""
    from data_pipeline.chaos import ChaosConfig, generate_corpus

    out = tmp_path_factory.mktemp("gate")
    for seed, system in ((51, "webshop"), (52, "ticketing")):
        generate_corpus(system, 4, seed=seed, out=out / system, faults=["cpu_hog", "code_exception"],
                        window_minutes=4, config=ChaosConfig(samples_per_minute=60, load_probes=1))
    return out


def test_train_a_gate_then_rca_weighs_the_modalities_with_it(two_systems, tmp_path, capsys):
    from director.actors.base import RunSettings
    from director.director import local_director
    from flipmoe.cli import main
    from flipmoe.telemetry import read_incident

    out = tmp_path / "gate.json"
    assert main(["train", "gate", "--chaos-per-system", "0", "--incidents", str(two_systems / "webshop"),
                 "--incidents", str(two_systems / "ticketing"), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "held out: webshop (4 incidents)" in printed and "held out: ticketing (4 incidents)" in printed
    assert "5-fold, all (8 incidents), service A@1: entropy rule (shipped)" in printed
    gate = read_gate(out)
    assert set(gate.card["leave_one_system_out"]) == {"webshop", "ticketing"}
    assert gate.card["cross_validated"]["folds"] == 5
    assert gate.card["command"].startswith("flipmoe train gate --incidents")

    incident = read_incident(sorted(p for p in (two_systems / "webshop").iterdir() if p.is_dir())[0])
    _, outputs = local_director(settings=RunSettings(gate=out)).analyse_with_outputs(incident, ["rank"])
    weights = outputs["rank"].localization.modality_weights
    assert any(text.startswith("modality weights (learned gate)") for _, text in outputs["rank"].decisions)
    _, plain = local_director(settings=RunSettings()).analyse_with_outputs(incident, ["rank"])
    assert any(text.startswith("modality weights (entropy rule)") for _, text in plain["rank"].decisions)
    assert weights != plain["rank"].localization.modality_weights


def test_a_gate_that_breaks_during_a_run_is_a_gap_and_the_rule_stands(two_systems, tmp_path):
    from director.actors.base import RunSettings
    from director.director import local_director
    from flipmoe.telemetry import read_incident

    path = fixed_gate(only="logs").save(tmp_path / "g.json")
    director = local_director(settings=RunSettings(gate=path))
    path.write_text("{")
    incident = read_incident(sorted(p for p in (two_systems / "ticketing").iterdir() if p.is_dir())[0])
    _, outputs = director.analyse_with_outputs(incident, ["rank"])
    assert any(g.what == "learned gate" for g in outputs["rank"].gaps)
    assert any(text.startswith("modality weights (entropy rule)") for _, text in outputs["rank"].decisions)


def test_train_gate_refuses_an_out_folder_that_does_not_exist(tmp_path, capsys):
    from flipmoe.cli import main

    assert main(["train", "gate", "--chaos-per-system", "0", "--out", str(tmp_path / "no" / "g.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
