"""The alert history: alerts that fire in most past incidents of a system count for less than rare ones
(`flipmoe.toolkits.events.AlertHistory`, `flipmoe rca --history`)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from director.actors.base import RunSettings
from eval.localization import director_ranker
from flipmoe.cli import main
from flipmoe.telemetry import normalise_table, read_incident, write_incident
from flipmoe.telemetry.incident import Incident, IncidentMeta, Telemetry, TimeWindow, Topology
from flipmoe.telemetry.label import Label
from flipmoe.toolkits.events import MIN_HISTORY, AlertHistory, analyse_events, load_alert_history

AT = pd.Timestamp("2026-03-01T10:05:00Z")
CULPRITS = ["api", "cart", "pay", "ship", "user", "auth", "search", "stock"]


def _incident(number: int, culprit: str) -> tuple[Incident, Label]:
    """db-0 raises the same three log alerts in every incident (a chronic noise source); the culprit raises
    one CPU alert of its own, which no other incident shows."""
    rows = [("db", "db-0", "log", f"template {t}", "") for t in (3, 5, 7)]
    rows.append((culprit, f"{culprit}-0", "metric", "cpu_usage", "up"))
    events = pd.DataFrame({"timestamp": AT, "kind": [r[2] for r in rows], "reason": [r[3] for r in rows],
                           "service": [r[0] for r in rows], "pod": [r[1] for r in rows], "node": None,
                           "message": [r[4] for r in rows]})
    meta = IncidentMeta(id=f"shop-{number}", alert="shop: alerts raised",
                        window=TimeWindow(AT - pd.Timedelta(minutes=5), AT + pd.Timedelta(minutes=5)), alert_time=AT)
    incident = Incident(meta=meta, telemetry=Telemetry(events=normalise_table(events, "events", source="e")),
                        topology=Topology(edges=[("front", s) for s in [*CULPRITS, "db"]]))
    return incident, Label(service=culprit, pod=f"{culprit}-0", fault_type="cpu_hog")


@pytest.fixture
def history_dir(tmp_path):
    for number, culprit in enumerate(CULPRITS):
        incident, label = _incident(number, culprit)
        write_incident(incident, tmp_path / "shop" / incident.meta.id, label=label)
    return tmp_path / "shop"


def test_weights_are_rarity_across_the_other_incidents(history_dir):
    history = load_alert_history(history_dir)
    assert len(history.incidents) == len(CULPRITS)
    chronic = ("db-0", "log", "template 3", "")
    rare = ("api-0", "metric", "cpu_usage", "up")
    # Seen in all 7 other incidents: no news at all. Seen only in its own incident: full weight (an
    # incident never counts in its own history).
    assert history.weight(chronic, "shop-0") == pytest.approx(0.0)
    assert history.weight(rare, "shop-0") == pytest.approx(1.0)
    # From another incident: 1 of its 7 others raised it, log(8 / 2) / log(8).
    assert history.weight(rare, "shop-1") == pytest.approx(math.log(4) / math.log(8))
    # An incident outside the history gets the full history as its own.
    assert history.others("elsewhere") == len(CULPRITS)


def test_a_short_history_weighs_nothing_and_says_so():
    incidents = [_incident(i, c)[0] for i, c in enumerate(CULPRITS[:MIN_HISTORY])]
    history = AlertHistory.from_incidents(incidents)
    assert history.weight(("db-0", "log", "template 3", ""), "shop-0") == 1.0  # 4 others < MIN_HISTORY
    report = analyse_events(incidents[0], history=history)
    assert any("fewer than" in note for note in report.notes)


def test_chronic_alerts_no_longer_outrank_the_culprit(history_dir):
    incident = read_incident(history_dir / "shop-2")
    plain = {f.pod: f.strength for f in analyse_events(incident).findings}
    weighed_report = analyse_events(incident, history=load_alert_history(history_dir))
    weighed = {f.pod: f.strength for f in weighed_report.findings}
    assert plain["db-0"] > plain["pay-0"]          # three alerts beat one
    assert weighed["pay-0"] > weighed["db-0"]      # but they fire every time
    assert any("3 of 4 fire in at least half" in note for note in weighed_report.notes)
    # Through the shipped path: the Director's events step reads the history from the settings.
    assert director_ranker(settings=RunSettings())(incident)[0][0]["service"] == "db"
    ranking, _ = director_ranker(settings=RunSettings(history=history_dir))(incident)
    assert ranking[0]["service"] == "pay" and ranking[0]["pod"] == "pay-0"


def test_rca_and_eval_take_a_history_and_refuse_a_bad_one(history_dir, tmp_path, capsys):
    out = tmp_path / "reports"
    assert main(["rca", str(history_dir / "shop-4"), "--history", str(history_dir), "--no-model", "--json",
                 "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[0])
    assert report["root_causes"][0]["service"] == "user"
    events_step = next(s for s in report["runbook"]["steps"] if s["name"] == "events")
    assert "alert history" in events_step["summary"]
    assert main(["eval", "localization", "--path", str(history_dir), "--history", str(history_dir), "--no-model",
                 "--quiet", "--out", str(tmp_path / "eval.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert all(line["root_causes"][0]["service"] == line["label"]["service"] for line in lines)
    capsys.readouterr()
    assert main(["rca", str(history_dir / "shop-4"), "--history", str(tmp_path / "nowhere"), "--no-model",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and "Traceback" not in err[0]


def test_only_the_events_table_is_read_for_a_history(history_dir):
    incident = read_incident(history_dir / "shop-0", tables=("events",))
    assert incident.telemetry.modalities == ["events"] and incident.baseline is None


def test_the_served_analyzer_uses_the_history_it_was_started_with(history_dir, tmp_path):
    from flipmoe.serve.services import DirectorAnalyzer

    stages: list[str] = []
    plain = DirectorAnalyzer(bundle=None)(history_dir / "shop-5", tmp_path / "plain", stages.append)
    weighed = DirectorAnalyzer(bundle=None, history=history_dir)(history_dir / "shop-5", tmp_path / "weighed",
                                                                  stages.append)
    assert plain["root_causes"][0]["service"] == "db"
    assert weighed["root_causes"][0]["service"] == "auth"
    assert (tmp_path / "weighed" / "report.json").is_file()
