"""Models fitted to a system's own labelled incidents: fault-type diagnosis (sample files, weights,
held-out folds, `flipmoe train diagnosis --incidents`, `rca --diagnosis-model`) and the learned ranking
(`flipmoe train ranking --chaos-per-system 0 --incidents`, `rca --ranking-model`); bad files of all three
model flags (`--gate` too, see test_gate.py)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from data_pipeline.chaos import ChaosConfig, generate_corpus
from eval.localization import Scores, macro_f1
from eval.train_diagnosis import (
    Sample,
    collect_labelled_samples,
    held_out_model,
    load_samples,
    sample_weights,
    save_samples,
    stratified_folds,
)
from flipmoe.errors import FlipmoeInputError
from flipmoe.toolkits.diagnose import read_model

FAULTS = ["cpu_hog", "dns_failure"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Six small labelled chaos incidents on disk, two fault types, as an importer would leave them."""
    out = tmp_path_factory.mktemp("labelled")
    generate_corpus("webshop", 6, seed=41, out=out, faults=FAULTS, window_minutes=4,
                    config=ChaosConfig(samples_per_minute=60, load_probes=1))
    return out


def samples_of(counts: dict[tuple[str, str], int]) -> list[Sample]:
    return [Sample(features={"m_cpu": 1.0} if fault == "cpu_hog" else {"l_dns": 1.0}, fault_type=fault,
                   system=system, incident=f"{system}-{fault}-{i}")
            for (system, fault), n in counts.items() for i in range(n)]


def test_sample_weights_balance_systems_and_types_when_their_mixes_agree():
    samples = samples_of({("sim", "cpu_hog"): 30, ("sim", "dns_failure"): 10, ("real", "cpu_hog"): 3,
                          ("real", "dns_failure"): 1})
    w_N = sample_weights(samples)
    assert w_N.mean() == pytest.approx(1.0)
    by_system, by_type = Counter(), Counter()
    for sample, w in zip(samples, w_N, strict=True):
        by_system[sample.system] += w
        by_type[sample.fault_type] += w
    assert by_system["sim"] == pytest.approx(by_system["real"])
    assert by_type["cpu_hog"] == pytest.approx(by_type["dns_failure"])
    # With different mixes each sample still weighs 1 / (its system's incidents x its type's incidents).
    mixed = samples_of({("sim", "cpu_hog"): 30, ("sim", "dns_failure"): 10, ("real", "cpu_hog"): 1,
                        ("real", "dns_failure"): 3})
    w_N = sample_weights(mixed)
    assert w_N[0] / w_N[-1] == pytest.approx((4 * 13) / (40 * 31))  # sim cpu_hog against real dns_failure


def test_samples_round_trip_and_a_bad_line_is_named(tmp_path):
    samples = samples_of({("a", "cpu_hog"): 2, ("b", "dns_failure"): 1})
    path = save_samples(samples, tmp_path / "s.jsonl")
    assert load_samples(path) == samples
    path.write_text(path.read_text() + '{"features": {}, "fault_type": "gremlins"}\n')
    with pytest.raises(FlipmoeInputError, match="line 4: fault type 'gremlins'"):
        load_samples(path)
    path.write_text("not json\n")
    with pytest.raises(FlipmoeInputError, match="line 1 is not a diagnosis sample"):
        load_samples(path)


def test_folds_cover_each_incident_once_and_held_out_models_never_see_them():
    samples = samples_of({("real", "cpu_hog"): 8, ("real", "dns_failure"): 4, ("sim", "cpu_hog"): 6,
                          ("sim", "dns_failure"): 6})
    own = [s for s in samples if s.system == "real"]
    folds = stratified_folds(own, 5)
    assert len(folds) == 4  # the rarer type has 4 incidents, so at most 4 folds keep it in each
    assert sorted(i for fold in folds for i in fold) == sorted(s.incident for s in own)
    assert all(Counter(i.split("-")[1] for i in fold) == {"cpu_hog": 2, "dns_failure": 1} for fold in folds)
    model = held_out_model(samples, lambda s: s.system == "real" and s.incident in folds[0], c_grid=(1.0,), folds=2)
    assert model.card["excluded"] == 3
    assert model.card["incidents"] == len(samples) - 3


def test_macro_f1_averages_over_the_labelled_types_and_folds_add_up():
    assert macro_f1([("a", "a"), ("b", "a"), ("b", "b")]) == pytest.approx(np.mean([2 / 3, 2 / 3]))
    assert macro_f1([("a", None)]) is None
    first, second = Scores(fault_hits=[True], fault_pairs=[("a", "a")]), Scores(fault_hits=[False],
                                                                                 fault_pairs=[("b", "a")])
    first.extend(second)
    assert first.fault_pairs == [("a", "a"), ("b", "a")]
    assert first.summary()["fault_type_macro_f1"] == pytest.approx(np.mean([2 / 3, 0.0]))


def test_labelled_folders_are_analysed_as_rca_does(labelled):
    samples, failures = collect_labelled_samples([labelled])
    assert failures == []
    assert sorted(s.fault_type for s in samples) == sorted(FAULTS * 3)
    assert {s.system for s in samples} == {"webshop"}
    assert all(s.features and s.incident for s in samples)


def test_train_on_own_incidents_then_rca_uses_that_model(labelled, tmp_path, capsys):
    from flipmoe.cli import main

    model_file, samples_file = tmp_path / "mine.json", tmp_path / "samples.jsonl"
    code = main(["train", "diagnosis", "--no-chaos", "--incidents", str(labelled), "--out", str(model_file),
                 "--save-samples", str(samples_file), "--quiet"])
    assert code == 0
    model = read_model(model_file)
    assert set(model.classes) == set(FAULTS)
    assert model.card["command"] == f"flipmoe train diagnosis --no-chaos --incidents {labelled}"
    assert len(load_samples(samples_file)) == 6
    refit = tmp_path / "refit.json"
    assert main(["train", "diagnosis", "--from-samples", str(samples_file), "--out", str(refit), "--quiet"]) == 0
    assert read_model(refit).coef_KF == pytest.approx(model.coef_KF)
    capsys.readouterr()

    # rca reaches the named model: one that says dns_failure whatever it reads, on a CPU-hog incident.
    incident = cpu_hog_incident(labelled)
    out = tmp_path / "report"
    assert main(["rca", str(incident), "--no-model", "--local", "--diagnosis-model",
                 str(always(model, "dns_failure").save(tmp_path / "always-dns.json")), "--out", str(out)]) == 0
    report = json.loads(next(out.rglob("report.json")).read_text())
    assert report["root_causes"][0]["fault_type"] == "dns_failure"


def cpu_hog_incident(labelled):
    return next(p for p in sorted(labelled.iterdir()) if p.is_dir()
                and json.loads((p / "label.json").read_text())["fault_type"] == "cpu_hog")


def always(model, fault_type):
    """`model` rewritten to name `fault_type` whatever the evidence."""
    return type(model)(classes=model.classes, feature_names=model.feature_names, coef_KF=model.coef_KF * 0,
                       intercept_K=np.array([50.0 if c == fault_type else -50.0 for c in model.classes]))


def test_a_named_model_that_breaks_during_a_run_is_a_gap_in_the_report(labelled, tmp_path):
    from director.actors.base import RunSettings
    from director.director import local_director
    from flipmoe.telemetry import read_incident

    samples, _ = collect_labelled_samples([labelled])
    path = always(held_out_model(samples, lambda s: False, c_grid=(1.0,), folds=2), "dns_failure").save(
        tmp_path / "m.json")
    director = local_director(settings=RunSettings(diagnosis_model=path))
    path.write_text("{")  # after the start-up check
    _, outputs = director.analyse_with_outputs(read_incident(sorted(labelled.iterdir())[0]), ["diagnosis"])
    assert any(g.what == "diagnosis model" for g in outputs["diagnosis"].gaps)


@pytest.mark.parametrize(("flag", "what", "content"), [
    ("--diagnosis-model", "diagnosis model", None), ("--diagnosis-model", "diagnosis model", "{"),
    ("--diagnosis-model", "diagnosis model", '{"classes": ["gremlins"]}'),
    ("--ranking-model", "ranking model", None), ("--ranking-model", "ranking model", "[]"),
    ("--ranking-model", "ranking model", '{"features": ["x"], "weights": [1.0], "bias": 0}'),
    ("--gate", "gate", None), ("--gate", "gate", "{"),
    ("--gate", "gate", '{"features": ["x"], "bias": {}, "coef": []}')])
def test_a_bad_model_file_is_one_line_and_exit_2(labelled, tmp_path, capsys, flag, what, content):
    from flipmoe.cli import main

    path = tmp_path / "model.json"
    if content is not None:
        path.write_text(content)
    incident = sorted(p for p in labelled.iterdir() if p.is_dir())[0]
    for command in (["rca", str(incident), "--local", "--out", str(tmp_path / "out")],
                    ["eval", "localization", "--path", str(incident), "--quiet"]):
        assert main([*command, "--no-model", flag, str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


def test_training_refuses_incidents_with_saved_samples(tmp_path, labelled, capsys):
    from flipmoe.cli import main

    assert main(["train", "diagnosis", "--from-samples", str(tmp_path / "s.jsonl"), "--incidents",
                 str(labelled)]) == 2
    assert "--from-samples" in capsys.readouterr().err


@pytest.mark.parametrize("types", [("a", "b"), ("a", "b", "c")])
def test_written_weights_score_like_the_fitted_pipeline(types):
    from eval.train_diagnosis import _fit, _raw_weights

    rng = np.random.default_rng(0)
    x_NF = rng.random((60, 5)) * np.array([1.0, 0.1, 0.0, 1.0, 0.5])  # one constant feature
    y_N = np.array(types)[rng.integers(0, len(types), 60)]
    pipeline = _fit(1.0, x_NF, y_N, np.ones(60))
    coef_KF, intercept_K = _raw_weights(pipeline)
    z_NK = x_NF @ coef_KF.T + intercept_K
    log_p_NK = z_NK - np.log(np.exp(z_NK).sum(1, keepdims=True))
    assert log_p_NK == pytest.approx(pipeline.predict_log_proba(x_NF), abs=1e-9)


def test_the_served_analyzer_uses_the_diagnosis_model_it_was_started_with(labelled, tmp_path):
    from flipmoe.serve.services import DirectorAnalyzer

    samples, _ = collect_labelled_samples([labelled])
    path = always(held_out_model(samples, lambda s: False, c_grid=(1.0,), folds=2), "dns_failure").save(
        tmp_path / "always-dns.json")
    incident = cpu_hog_incident(labelled)
    summary = DirectorAnalyzer(bundle=None, diagnosis_model=path)(incident, tmp_path / "served", lambda stage: None)
    assert summary["root_causes"][0]["fault_type"] == "dns_failure"


def test_serve_refuses_a_bad_diagnosis_model_before_starting(tmp_path, capsys):
    from flipmoe.cli import main

    assert main(["serve", "--diagnosis-model", str(tmp_path / "missing.json"), "--no-model",
                 "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diagnosis model" in err[0]


def test_train_a_ranking_on_own_incidents_then_rca_reranks_with_it(labelled, tmp_path, capsys):
    from director.actors.base import RunSettings
    from director.director import local_director
    from flipmoe.cli import main
    from flipmoe.telemetry import read_incident
    from flipmoe.toolkits.ranking import read_model as read_ranking

    model_file = tmp_path / "ranking.json"
    assert main(["train", "ranking", "--chaos-per-system", "0", "--incidents", str(labelled), "--history-from-folder",
                 "--out", str(model_file), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "5-fold, all" in printed  # one system: no leave-one-system-out rows, a cross-validated one
    model = read_ranking(model_file)
    assert model.card["leave_one_system_out"] == {} and model.card["cross_validated"]["folds"] == 5
    assert model.card["command"].endswith("--history-from-folder")

    incident = read_incident(sorted(p for p in labelled.iterdir() if p.is_dir())[0])
    director = local_director(settings=RunSettings(ranking_model=model_file))
    _, outputs = director.analyse_with_outputs(incident, ["rank"])
    assert any("learned ranking" in text for _, text in outputs["rank"].decisions)
    _, plain = local_director(settings=RunSettings()).analyse_with_outputs(incident, ["rank"])
    assert not any("learned ranking" in text for _, text in plain["rank"].decisions)  # none ships
