import json
import math

import pandas as pd
import pytest
from conftest import START, tiny_incident

from director.actors.base import RunSettings
from director.director import analyse_incident
from flipmoe.cli import main
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import write_incident
from flipmoe.toolkits.events import analyse_events
from flipmoe.toolkits.localize import Signal, rank_root_causes, squash
from flipmoe.toolkits.vocabulary import metric_category, text_classes


def _signal(service, strength, role="cause", kind="metrics:cpu", modality="metrics", pod=None):
    return Signal(modality=modality, service=service, pod=pod, strength=strength, role=role, kind=kind,
                  summary=f"{service} {kind}")


CHAIN = [("front", "api"), ("api", "db"), ("front", "other")]


def test_root_cause_explains_its_callers_symptoms():
    signals = [_signal("db", 0.9), _signal("api", 0.8, "symptom", "metrics:latency"),
               _signal("front", 0.85, "symptom", "metrics:latency"), _signal("other", 0.3)]
    ranked = rank_root_causes(signals, call_edges=CHAIN)
    assert [r.service for r in ranked.root_causes][:1] == ["db"]
    assert ranked.root_causes[0].evidence[0].summary == "db metrics:cpu"


def test_caller_whose_latency_is_downstream_is_not_blamed():
    # api shows the same latency as db, but db is at least as anomalous and api calls it.
    signals = [_signal("api", 0.7, "symptom", "traces:latency", "traces"), _signal("db", 0.7, "cause", "traces:self")]
    scores = rank_root_causes(signals, call_edges=CHAIN).service_scores
    assert scores["db"] > scores["api"]


def test_evidence_every_service_shows_is_discounted():
    common = [_signal(s, 0.9, "cause", "metrics:network") for s in ("front", "api", "db", "other", "x", "y")]
    ranked = rank_root_causes([*common, _signal("api", 0.6, "cause", "metrics:memory")], call_edges=CHAIN)
    assert ranked.root_causes[0].service == "api"


def test_pods_are_ranked_inside_their_service():
    signals = [_signal("api", 0.9, pod="api-2"), _signal("api", 0.2, pod="api-1")]
    ranked = rank_root_causes(signals, pods_of_service={"api": ["api-1", "api-2", "api-3"]},
                              placement={"api-2": "node-b"})
    assert [(r.pod, r.node) for r in ranked.root_causes[:2]] == [("api-2", "node-b"), ("api-1", None)]



def _timed(service, strength, at, *, pod=None, modality="metrics", kind="metrics:saturation", **evidence):
    return Signal(modality=modality, service=service, pod=pod, strength=strength, role="cause", kind=kind,
                  start=pd.Timestamp(START) + pd.Timedelta(seconds=at), summary=f"{service} {kind}",
                  evidence=evidence)


def test_a_pod_the_rollout_replaced_ranks_below_its_replacement():
    # api is deployed at t=0: its old pod stops reporting 20 s later (the rollout's footprint, the loudest
    # evidence there is) and the new pod, which runs the change, shows a modest error rise.
    deploy = _timed("api", 0.35, 0, modality="events", kind="events:Deployed", change=True)
    old_gone = _timed("api", 0.95, 20, pod="api-old", pattern="missing_data")
    new_errors = _timed("api", 0.4, 60, pod="api-new", kind="metrics:errors")
    pods = {"api": ["api-new", "api-old"]}
    ranked = rank_root_causes([deploy, old_gone, new_errors], pods_of_service=pods)
    assert [r.pod for r in ranked.root_causes] == ["api-new", "api-old"]
    # The same stop without a change of the service may be the fault itself (a killed pod): it keeps its place.
    killed = rank_root_causes([old_gone, new_errors], pods_of_service=pods)
    assert [r.pod for r in killed.root_causes] == ["api-old", "api-new"]
    # ...and so does a stop long after the change, outside the rollout.
    late = _timed("api", 0.95, 3600, pod="api-old", pattern="missing_data")
    assert rank_root_causes([deploy, late, new_errors], pods_of_service=pods).root_causes[0].pod == "api-old"
    # A Killing event right after the change marks the old pod the same way.
    killing = _timed("api", 0.5, 15, pod="api-old", modality="events", kind="events:Killing", reason="Killing")
    ranked = rank_root_causes([deploy, killing, new_errors], pods_of_service=pods)
    assert ranked.root_causes[0].pod == "api-new"

def test_no_signals_and_no_services_degrade_gracefully():
    empty = rank_root_causes([])
    assert empty.root_causes == () and "nothing to rank" in empty.notes[0]
    quiet = rank_root_causes([], services=["a", "b"])
    assert len(quiet.root_causes) == 2 and any("no anomaly" in n for n in quiet.notes)


def test_squash_is_monotone_and_bounded():
    values = [squash(x) for x in (0, 1, 3, 10, 100, 1e6)]
    assert values == sorted(values) and values[0] == 0 and values[-1] < 1 and squash(3) == 0.5
    assert squash(float("nan")) == 0.0


@pytest.mark.parametrize("name, category", [
    ("CpuUsageRate(%)", "cpu"), ("container_memory_working_set_bytes", "memory"), ("jvm_gc_pause_seconds", "memory"),
    ("http_server_duration_ms_p95", "latency"), ("PodSuccessRate(%)", "errors"),
    ("http_requests_total{code=500}", "errors"),
    ("node_network_receive_bytes_total", "network"), ("kube_pod_container_status_restarts_total", "restarts"),
    ("hikaricp_connections_active", "saturation"), ("frobnication_index", "other"),
    # read/write system calls are mostly socket I/O: they move with traffic, not with the disk
    ("SyscallRead", "traffic"), ("process_syscalls_write_total:rate1m", "traffic"),
    ("container_fs_writes_bytes_total", "disk")])
def test_metric_categories(name, category):
    assert metric_category(name) == category


def test_text_classes():
    assert "dns" in text_classes("java.net.UnknownHostException: payment: no such host")
    assert "tls" in text_classes("x509: certificate has expired or is not yet valid")
    assert "oom" in text_classes("java.lang.OutOfMemoryError: Java heap space")
    assert text_classes("GET /cart 200 in 12ms") == frozenset()


def test_events_toolkit_scores_failures_above_changes():
    incident = tiny_incident()
    events = pd.DataFrame({"timestamp": [START + pd.Timedelta(minutes=m) for m in (1, 2, 2)],
                           "kind": ["k8s", "deploy", "k8s"], "reason": ["OOMKilled", "Deployed", "Scheduled"],
                           "service": ["db", "api", "front"], "pod": ["db-0", None, None], "node": None,
                           "message": ["container exceeded memory limit", "v2", "assigned"]})
    from flipmoe.telemetry import normalise_table

    incident.telemetry.events = normalise_table(events, "events", source="e")
    report = analyse_events(incident)
    assert report.findings[0].reason == "OOMKilled" and "oom" in report.findings[0].classes
    assert {f.reason for f in report.findings if f.is_change} == {"Deployed"}


def test_changes_count_by_their_recency_before_the_alert():
    from flipmoe.telemetry import normalise_table

    incident = tiny_incident()  # alert at 10:05
    minutes = {"front": 1, "db": 3, "api": 4, "cache": 7}
    events = pd.DataFrame({"timestamp": [START + pd.Timedelta(minutes=m) for m in minutes.values()],
                           "kind": "deploy", "reason": "Deployed", "service": list(minutes), "pod": None,
                           "node": None, "message": "new version"})
    incident.telemetry.events = normalise_table(events, "events", source="e")
    strength = {f.service: f.strength for f in analyse_events(incident).findings}
    # The latest change before the alert leads, earlier ones count as 1 / their recency rank, and a change
    # after the alert (a rollback, a fix) is a response, not a cause.
    assert strength == pytest.approx({"api": 0.5, "db": 0.25, "front": 0.5 / 3, "cache": 0.1})


def test_analysis_works_with_any_subset_of_modalities():
    incident = tiny_incident()
    for modalities in [("metrics",), ("traces",), ("logs",), ("events",), ("metrics", "traces", "logs", "events")]:
        report = analyse_incident(incident, settings=RunSettings(modalities=modalities))
        assert {c.service for c in report.root_causes} <= {"front", "api", "db"}
        assert set(report.modalities_used) <= set(modalities)
        left_out = {"metrics", "traces", "logs", "events"} - set(modalities)
        assert all(f"{m} are left out" in " ".join(g.reason for g in report.gaps) for m in left_out)


def test_missing_modalities_are_stated_not_fatal():
    incident = tiny_incident()
    incident.telemetry.logs = None
    incident.telemetry.spans = None
    incident.baseline = None
    report = analyse_incident(incident)
    reasons = " ".join(g.reason for g in report.gaps)
    assert "the incident has no logs" in reasons and "the incident has no traces" in reasons
    assert report.root_causes


def test_unknown_modality_is_rejected():
    with pytest.raises(FlipmoeInputError, match="unknown modality"):
        RunSettings(modalities=("metrics", "vibes"))


@pytest.fixture(scope="module")
def chaos_corpus(tmp_path_factory):
    from data_pipeline.chaos import generate_incident

    root = tmp_path_factory.mktemp("corpus")
    for seed, fault in ((11, "cpu_hog"), (12, "code_exception")):
        incident, label = generate_incident("webshop", fault, seed=seed, window_minutes=12)
        write_incident(incident, root / f"inc-{seed}", label=label)
    return root


def test_analysis_finds_injected_root_cause_on_chaos_incidents(chaos_corpus):
    from flipmoe.telemetry import read_incident
    from flipmoe.telemetry.label import load_label

    for directory in sorted(chaos_corpus.iterdir()):
        report = analyse_incident(read_incident(directory), settings=RunSettings(top=20))
        services = [c.service for c in report.root_causes]
        assert load_label(directory).service in list(dict.fromkeys(services))[:3], directory.name


def test_eval_localization_command(chaos_corpus, tmp_path, capsys):
    out = tmp_path / "eval.jsonl"
    assert main(["eval", "localization", "--path", str(chaos_corpus), "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["incident"] for r in rows] == ["inc-11", "inc-12"]
    assert all(r["root_causes"] and "label" in r and r["fault_type"] for r in rows)
    assert {"service", "pod", "node", "score"} <= set(rows[0]["root_causes"][0])
    table = capsys.readouterr().out
    assert "svc@1" in table and "flipmoe" in table


def test_eval_without_labels_says_so(tmp_path, capsys):
    write_incident(tiny_incident(), tmp_path / "one")
    assert main(["eval", "localization", "--path", str(tmp_path), "--quiet", "--out", str(tmp_path / "o.jsonl")]) == 0
    assert "none has a label.json" in capsys.readouterr().out


def test_eval_on_missing_path_is_bad_input(tmp_path):
    assert main(["eval", "localization", "--path", str(tmp_path / "nope")]) == 2


def test_rca_command_prints_and_writes_reports(chaos_corpus, tmp_path, capsys):
    assert main(["rca", str(chaos_corpus / "inc-11"), "--local", "--json", "--out", str(tmp_path / "reports")]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "reports" / printed["incident"] / "report.json").read_text())
    assert printed == written
    top = written["root_causes"][0]
    assert {"service", "pod", "node", "score", "evidence"} <= set(top) and top["evidence"]
    assert all({"modality", "summary", "reference"} <= set(e) for e in top["evidence"])
    assert top["fault_type"] and "timings_s" in written


def test_rca_never_reads_the_label(chaos_corpus, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(chaos_corpus / "inc-12", copy)
    main(["rca", str(copy), "--local", "--json", "--out", str(tmp_path / "reports")])
    with_label = json.loads(capsys.readouterr().out)
    (copy / "label.json").write_text('{"service": "frontend", "fault_type": "cpu_hog"}')
    main(["rca", str(copy), "--local", "--json", "--out", str(tmp_path / "reports")])
    assert json.loads(capsys.readouterr().out)["root_causes"] == with_label["root_causes"]


def test_a_modality_that_blames_everyone_counts_less_than_one_that_singles_out():
    services = ["a", "b", "c", "d", "e", "f"]
    noisy = [_signal(s, 0.9, "cause", f"metrics:x{i}") for i, s in enumerate(services)]  # all equally anomalous
    focused = [_signal("e", 0.6, "cause", "logs:new_template:ERROR", modality="logs")]
    ranked = rank_root_causes([*noisy, *focused], services=services)
    assert ranked.root_causes[0].service == "e"


def test_rca_reports_a_bad_path_and_still_analyses_the_others(chaos_corpus, tmp_path, capsys):
    code = main(["rca", str(chaos_corpus / "inc-11"), str(tmp_path / "nope"), "--no-model", "--json",
                 "--out", str(tmp_path / "reports")])
    captured = capsys.readouterr()
    assert code == 2 and "no such directory" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["root_causes"]


def test_a_bad_runbook_is_reported_before_any_analysis(chaos_corpus, tmp_path, capsys):
    assert main(["rca", str(chaos_corpus / "inc-11"), "--no-model", "--runbook", "nonsense",
                 "--out", str(tmp_path / "reports")]) == 2
    captured = capsys.readouterr()
    assert "no runbook template or file 'nonsense'" in captured.err and "analysing" not in captured.err


def test_an_installed_ranking_model_reranks_and_a_broken_one_is_a_gap(chaos_corpus, tmp_path, monkeypatch):
    import numpy as np

    from flipmoe.telemetry import read_incident
    from flipmoe.toolkits import ranking

    incident = read_incident(chaos_corpus / "inc-11")
    weights = np.zeros(len(ranking.FEATURES))
    weights[ranking.FEATURES.index("fusion_score")] = 3.0
    model_file = tmp_path / "ranking_model.json"
    ranking.RankingModel(features=ranking.FEATURES, weights=tuple(weights), bias=0.0).save(model_file)
    monkeypatch.setattr(ranking, "MODEL_FILE", model_file)
    report = analyse_incident(incident, settings=RunSettings(top=20))
    scores = [c.score for c in report.root_causes]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert any("learned ranking over the top" in d.detail for d in report.runbook.decisions)
    model_file.write_text("{not json")
    report = analyse_incident(incident)
    assert report.root_causes and any(g.what == "learned ranking" for g in report.gaps)


def test_last_change_ranker_orders_services_by_their_latest_change_before_the_alert():
    from eval.localization import last_change_ranker
    from flipmoe.telemetry import normalise_table

    incident = tiny_incident()
    events = pd.DataFrame({"timestamp": pd.to_datetime(["2026-03-01T10:01:00Z", "2026-03-01T10:03:00Z",
                                                        "2026-03-01T10:02:00Z", "2026-03-01T11:59:00Z"]),
                           "kind": ["deploy", "config_change", "deploy", "deploy"], "reason": ["Deployed"] * 4,
                           "service": ["db", "api", "front", "late"]})
    incident.telemetry.events = normalise_table(events, "events", source="e")
    incident.meta.alert_time = pd.Timestamp("2026-03-01T10:05:00Z")
    ranking, _ = last_change_ranker()(incident)
    assert [r["service"] for r in ranking] == ["api", "front", "db"]


def test_alert_volume_keeps_its_order_in_event_findings():
    from flipmoe.telemetry import normalise_table

    incident = tiny_incident()
    rows = [("api", f"cpu_core_{i}_pct") for i in range(20)] + [("db", f"cpu_core_{i}_pct") for i in range(3)]
    events = pd.DataFrame({"timestamp": pd.Timestamp("2026-03-01T10:02:00Z"), "kind": "metric",
                           "service": [s for s, _ in rows], "reason": [r for _, r in rows]})
    incident.telemetry.events = normalise_table(events, "events", source="e")
    findings = {f.service: f for f in analyse_events(incident).findings if f.kind == "metric alert"}
    # 3 distinct alerts alone would score 0.875 and 20 would score ~1: saturated, nearly a tie.
    assert findings["api"].strength == pytest.approx(1.0)
    assert findings["db"].strength == pytest.approx(0.875 * math.log(4) / math.log(21))
    assert (findings["api"].distinct, findings["db"].distinct) == (20, 3)


def test_baro_ranks_the_pod_whose_metric_rises_after_the_onset():
    from eval.localization import baro_ranker
    from flipmoe.telemetry import normalise_table

    incident = tiny_incident()
    times = pd.date_range("2026-03-01T09:50:00Z", periods=40, freq="30s")
    onset = times[20]
    frames = []
    for service, jump in (("api", 0.0), ("db", 50.0), ("front", 5.0)):
        values = [10.0 + (i % 3) + (jump if t >= onset else 0.0) for i, t in enumerate(times)]
        frames.append(pd.DataFrame({"timestamp": times, "service": service, "pod": f"{service}-1",
                                    "metric": "cpu", "value": values}))
    incident.telemetry.metrics = normalise_table(pd.concat(frames), "metrics", source="m")
    incident.meta.alert_time = onset
    ranking, _ = baro_ranker()(incident)
    assert [r["service"] for r in ranking] == ["db", "front", "api"]


def test_a_call_graph_without_direction_is_not_walked():
    # Every edge has its reverse: the walk would favour the hub, which has the weaker evidence.
    kind = "events:metric alert:cause"
    signals = [_signal("a", 0.9, kind=kind, modality="events"), _signal("hub", 0.8, kind=kind, modality="events"),
               *(_signal(leaf, 0.4, kind=kind, modality="events") for leaf in "bcd")]
    edges = [edge for leaf in "abcd" for edge in (("hub", leaf), (leaf, "hub"))]
    ranked = rank_root_causes(signals, call_edges=edges)
    assert [r.service for r in ranked.root_causes][:2] == ["a", "hub"]
    assert any("no direction" in note for note in ranked.notes)
    # The same graph walked (one direction of each edge missing): the hub collects the others' evidence.
    walked = rank_root_causes(signals, call_edges=edges[:-1])
    assert [r.service for r in walked.root_causes][0] == "hub"
    assert not any("no direction" in note for note in walked.notes)
