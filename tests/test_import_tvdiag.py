"""`flipmoe import tvdiag`: TVDiag-shaped cases (a small fixture in the release's layout) -> events-only
incidents that `flipmoe rca` and `flipmoe eval localization` analyse."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flipmoe.cli import main
from flipmoe.importers.tvdiag import ALERT_TIME, import_tvdiag, service_of
from flipmoe.telemetry import read_incident
from flipmoe.telemetry.label import load_label


def write_release(root: Path) -> Path:
    """Two systems as the TVDiag release lays them out: a SockShop-like one and a GAIA-like one (4-field metric
    alerts with a host, an injector message in label.csv)."""
    shop = root / "shop"
    (shop / "raw").mkdir(parents=True)
    (shop / "label.csv").write_text(",index,instance,anomaly_type,data_type\n0,7,orders-1,memory,train\n"
                                    "1,9,carts-0,pod-kill,test\n", encoding="utf-8")
    nodes = ["front-end-0", "orders-0", "orders-1", "carts-0", "carts-db-0"]
    raw = {
        "metrics": {"7": [["orders-1", "mem_usage", "up"], ["orders-1", "cpu_usage", "up"],
                          ["front-end-0", "dest_p50", "up"], ["node-a", "node_cpu_usage", "down"]],
                    "9": [["carts-0", "restarts", "up"]]},
        "logs": {"7": [["orders-1", "orders-1-3"], ["front-end-0", "front-end-0-1"]], "9": []},
        "traces": {"7": [["front-end-0", "orders-1", "POST /orders", "PD"], ["-1", "front-end-0", "HTTP/POST", "500"]],
                   "9": [["front-end-0", "carts-0", "GET /cart", "503"]]},
        "nodes": {"7": nodes, "9": nodes},
        "edges": {"7": [[0, 1], [0, 2], [0, 3], [3, 4]], "9": [[0, 3], [3, 4]]},
    }
    for name, data in raw.items():
        (shop / "raw" / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")
    gaia = root / "gaia"
    (gaia / "raw").mkdir(parents=True)
    (gaia / "label.csv").write_text(
        "index,service,instance,message,anomaly_type,data_type\n"
        '3,webservice,webservice2,"trigger the file moving program, start with 2021-07-04",'
        "[file moving program],train\n",
        encoding="utf-8")
    raw = {"metrics": {"3": [["webservice2", "0.0.0.3", "docker_diskio_write_rate", "up"]]},
           "logs": {"3": [["webservice2", "12"]]}, "traces": {"3": []},
           "nodes": {"3": ["webservice1", "webservice2", "dbservice1"]}, "edges": {"3": [[0, 2], [1, 2]]}}
    for name, data in raw.items():
        (gaia / "raw" / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")
    return root


@pytest.mark.parametrize(("instance", "service"), [("orders-1", "orders"), ("dbservice1", "dbservice"),
                                                    ("carts-db-0", "carts-db"), ("frontend", "frontend")])
def test_service_of_an_instance(instance, service):
    assert service_of(instance) == service


def test_cases_become_events_only_incidents_with_labels(tmp_path):
    written = import_tvdiag(write_release(tmp_path / "release"), tmp_path / "out")
    assert sorted(p.name for p in written) == ["gaia-3", "shop-7", "shop-9"]
    incident = read_incident(tmp_path / "out" / "shop-7")
    assert incident.modalities == ["events"] and "synthetic alert time" in incident.meta.source
    events = incident.events
    assert (events["timestamp"] == ALERT_TIME).all() and set(events["kind"]) == {"metric", "log", "trace"}
    orders = events[events["pod"] == "orders-1"]
    assert set(orders["reason"]) == {"mem_usage", "cpu_usage", "template orders-1-3", "POST /orders"}
    host = events[events["reason"] == "node_cpu_usage"].iloc[0]
    assert pd.isna(host["pod"]) and host["node"] == "node-a"  # a machine, not an instance: node evidence
    assert ("front-end", "orders") in incident.topology.edges
    label = load_label(tmp_path / "out" / "shop-7")
    assert (label.service, label.pod, label.fault_type, label.original_type) == ("orders", "orders-1",
                                                                                  "memory_leak", "memory")
    gaia = load_label(tmp_path / "out" / "gaia-3")
    assert gaia.fault_type == "disk_io" and "file moving" in gaia.extra["message"]
    gaia_events = read_incident(tmp_path / "out" / "gaia-3").events
    assert "file moving" not in gaia_events.to_string()  # ground truth stays in the label


def test_split_selects_cases(tmp_path):
    written = import_tvdiag(write_release(tmp_path / "release"), tmp_path / "out", split="test")
    assert [p.name for p in written] == ["shop-9"]


def test_per_system_folders_each_hold_one_system(tmp_path):
    written = import_tvdiag(write_release(tmp_path / "release"), tmp_path / "out", per_system=True)
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in written) == sorted(
        f"{p.name.rsplit('-', 1)[0]}/{p.name}" for p in written)
    assert {p.parent.name for p in written} == {"gaia", "shop"}


def test_rca_and_eval_localization_work_on_alert_events(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["import", "tvdiag", str(write_release(tmp_path / "release")), "--out", str(out)]) == 0
    assert main(["rca", str(out / "shop-7"), "--no-model", "--json", "--out", str(tmp_path / "reports")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["root_causes"][0]["pod"] == "orders-1"
    assert report["root_causes"][0]["evidence"][0]["modality"] == "events"
    assert main(["eval", "localization", "--path", str(out), "--no-model", "--quiet",
                 "--out", str(tmp_path / "eval.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["root_causes"] and r["label"] for r in rows)


def test_bad_release_is_one_clear_error(tmp_path, capsys):
    assert main(["import", "tvdiag", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "label.csv" in capsys.readouterr().err
    release = write_release(tmp_path / "release")
    (release / "shop" / "raw" / "metrics.json").write_text("{not json", encoding="utf-8")
    assert main(["import", "tvdiag", str(release), "--out", str(tmp_path / "out")]) == 2
    assert "metrics.json: not valid JSON" in capsys.readouterr().err


def test_alerts_are_causes_or_symptoms_by_what_they_measure(tmp_path):
    from flipmoe.toolkits.events import analyse_events

    import_tvdiag(write_release(tmp_path / "release"), tmp_path / "out")
    report = analyse_events(read_incident(tmp_path / "out" / "shop-7"))
    roles = {(f.pod, f.kind, f.role) for f in report.findings}
    assert ("orders-1", "metric alert", "cause") in roles       # mem_usage, cpu_usage: resources
    assert ("front-end-0", "metric alert", "symptom") in roles  # dest_p50: latency shows at callers too
    assert ("orders-1", "trace alert", "symptom") in roles
    orders = next(f for f in report.findings if f.pod == "orders-1" and f.role == "cause" and f.kind == "metric alert")
    assert orders.count == 2 and orders.strength == pytest.approx(0.75)  # two alerts: 1 - 0.5^2


def test_a_malformed_case_is_reported_and_the_others_are_written(tmp_path, capsys):
    release = write_release(tmp_path / "release")
    metrics = json.loads((release / "shop" / "raw" / "metrics.json").read_text())
    metrics["9"] = [["carts-0", "restarts"]]  # two fields: no direction
    (release / "shop" / "raw" / "metrics.json").write_text(json.dumps(metrics))
    nodes = json.loads((release / "gaia" / "raw" / "nodes.json").read_text())
    del nodes["3"]
    (release / "gaia" / "raw" / "nodes.json").write_text(json.dumps(nodes))
    assert main(["import", "tvdiag", str(release), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "shop case 9: case 9 is malformed" in err and "gaia case 3: case 3 has no instances" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shop-7"]
