"""The log toolkit: masking, template mining, parsing accuracy, `flipmoe logs templates`, and the
incident log analysis. Fixtures only (LogHub samples under tests/fixtures/loghub)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from drain3 import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig
from hypothesis import given, settings
from hypothesis import strategies as st

from director.toolkits.logs import (
    COUNT_COLUMNS,
    LogParser,
    LogParserConfig,
    Masker,
    analyse_logs,
    grouping_accuracy,
    parsing_accuracy,
    template_counts,
)
from director.toolkits.logs.mining import AffixDrain
from flipmoe.cli import EXIT_BAD_INPUT, main
from flipmoe.telemetry import Incident, IncidentMeta, Telemetry, TimeWindow, normalise_table

LOGHUB = Path(__file__).parent / "fixtures" / "loghub"
START = pd.Timestamp("2026-03-01T10:00:00Z")

# ------------------------------------------------------------------------------------------ masking


@pytest.mark.parametrize(("mask", "message", "rendered"), [
    ("NUM", "retried 42 times, load -0.5; eth0, v2.x stay", "retried <*> times, load <*>; eth0, v2.x stay"),
    ("NUM", "temperature 41C at core.2275", "temperature <*>C at core.<*>"),
    ("NUM", "addresses 0x7fed806eb5d and 33557fe4", "addresses <*> and <*>"),
    ("IP", "from 10.250.19.102 done", "from <*> done"),
    ("IPV6", "from fe80::1ff:fe23:4567:890a and ::1, not Store::Apply", "from <*> and <*>, not Store::Apply"),
    ("PORT", "src: /10.250.19.102:54106", "src: /<*>:<*>"),
    ("HOST", "connecting to web-07.dc1:8080", "connecting to <*>:<*>"),
    ("PATH", "open /var/log/x.log, C:\\Windows\\cbs.dll, not /health", "open <*>, <*>, not /health"),
    ("URL", "GET https://api.example.com/v1/users/42?page=2", "GET https://<*>"),
    ("UUID", "order 123e4567-e89b-12d3-a456-426614174000 paid", "order <*> paid"),
    ("KV", "session=s3cr3t99 status=FAILED", "session=<*> status=FAILED"),
    ("DURATION", "took 35ms, then 1.2s, then 1m30s", "took <*>ms, then <*>s, then <*>"),
    ("TIMESTAMP", "at 2026-03-01T10:00:00.123Z and Jan 12 10:00:01", "at <*> and <*>"),
    ("QUOTED", "said \"hello world\" and 'x1', but don't", "said \"<*>\" and '<*>', but don't"),
    ("EMAIL", "mail bob.smith@example.com now", "mail <*> now"),
    ("MAC", "DHCPDISCOVER from 00:11:43:e3:ba:c3", "DHCPDISCOVER from <*>"),
    ("ID", "block blk_-1608999687919862906 of job_1445144423722_0020", "block blk_<*> of job_<*>"),
])
def test_masking_of_each_token_kind(mask: str, message: str, rendered: str) -> None:
    masker = Masker()
    masked = masker.mask(message)
    assert f"<:{mask}:>" in masked
    assert masker.render(masked) == rendered


def test_source_locations_keep_their_line_number() -> None:
    masker = Masker()
    assert masker.render(masker.mask("at OrderService.java:123 and [ib_sm_sweep.c:1831]")) == \
        "at OrderService.java:123 and [ib_sm_sweep.c:1831]"


# ------------------------------------------------------------------------------------------- mining


def test_lines_differing_in_variables_share_a_template() -> None:
    lines = [
        "Connected to 10.0.0.1:5432 in 35ms as user_id=u17 (attempt 1)",
        "Connected to 10.0.0.9:6543 in 120ms as user_id=u2 (attempt 3)",
        "Connected to db-3.internal:5432 in 7ms as user_id=x99 (attempt 12)",
    ]
    parsed = LogParser().parse(lines)
    assert len({line.template_id for line in parsed}) == 1
    assert parsed[0].template == "Connected to <*>:<*> in <*>ms as user_id=<*> (attempt <*>)"


def test_words_that_differ_keep_templates_apart() -> None:
    parsed = LogParser().parse(["Link ok", "Link error", "Link ok"])
    assert parsed[0].template_id == parsed[2].template_id != parsed[1].template_id
    assert [line.template for line in parsed] == ["Link ok", "Link error", "Link ok"]


def test_wildcards_keep_the_punctuation_the_lines_share() -> None:
    parsed = LogParser().parse(["[node-a1] joined the storage cluster at ring alpha,",
                                "[node-b7] joined the storage cluster at ring beta,"])
    assert parsed[0].template == "[node-<*>] joined the storage cluster at ring <*>,"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab1_-.:[]<>", min_size=1, max_size=8), min_size=2, max_size=5))
def test_a_generalised_token_still_fits_every_token_it_covers(tokens: list[str]) -> None:
    drain = AffixDrain(param_str="<*>")
    template = tokens[0]
    for token in tokens[1:]:
        template = drain.create_template([token], [template])[0]
    assert all(drain.get_seq_distance([template], [token], True)[0] == 1.0 for token in tokens)


def test_template_ids_are_stable_within_a_run() -> None:
    parser = LogParser()
    first = parser.add("worker 3 started")
    parser.add("queue drained after 5 retries")
    later = parser.add("worker 12 started")
    assert later.template_id == first.template_id
    assert parser.templates[first.template_id] == "worker <*> started"
    assert parser.match("worker 99 started") == later
    assert parser.match("something never seen") is None


def test_parameters_are_extracted() -> None:
    parser = LogParser()
    line = parser.add("Received block blk_-42 of size 67108864 from /10.0.0.1")
    assert parser.parameters("Received block blk_-42 of size 67108864 from /10.0.0.1", line.template_id) == \
        ["-42", "67108864", "10.0.0.1"]


def test_long_messages_are_cut_before_mining() -> None:
    parser = LogParser(config=LogParserConfig(max_message_chars=32))
    line = parser.add("payload " + "x" * 10_000)
    assert len(line.template) <= 32


# ------------------------------------------------------------------------------------------ scoring


def test_grouping_and_parsing_accuracy_on_a_hand_made_example() -> None:
    truth = ["A <*>", "A <*>", "B", "B", "C <*>"]
    # Lines 0-1 are grouped right; 2 is split from 3; 3 is merged with 4.
    assert grouping_accuracy(truth, [1, 1, 2, 3, 3]) == pytest.approx(2 / 5)
    assert grouping_accuracy(truth, ["x", "x", "y", "y", "z"]) == 1.0
    assert parsing_accuracy(truth, ["A  <*>", "A <*> ", "B", "b", "C"]) == pytest.approx(3 / 5)
    assert grouping_accuracy([], []) == parsing_accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="lines"):
        grouping_accuracy(["a"], [1, 2])


def _loghub(system: str) -> tuple[list[str], list[str]]:
    table = pd.read_csv(LOGHUB / f"{system}_200.csv", dtype=str, keep_default_na=False)
    return table["Content"].tolist(), table["EventTemplate"].tolist()


def test_parser_beats_default_drain3_on_loghub_samples() -> None:
    ours, plain = [], []
    for system in ("HDFS", "Zookeeper", "Hadoop"):
        messages, truth = _loghub(system)
        parsed = LogParser().parse(messages)
        ours.append(parsing_accuracy(truth, [line.template for line in parsed]))
        miner = TemplateMiner(config=TemplateMinerConfig())
        clusters = [miner.add_log_message(message)["cluster_id"] for message in messages]
        plain.append(parsing_accuracy(truth, [miner.drain.id_to_cluster[c].get_template() for c in clusters]))
        if system != "Hadoop":
            assert grouping_accuracy(truth, [line.template_id for line in parsed]) == 1.0
    assert sum(ours) / 3 > sum(plain) / 3 + 0.3


# ---------------------------------------------------------------------------------------------- CLI


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_cli_reads_standard_input(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("user 1 logged in\nuser 22 logged in\r\ndisk full\n"))
    assert main(["logs", "templates", "-"]) == 0
    records = _lines(capsys.readouterr().out)
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[0]["template_id"] == records[1]["template_id"] != records[2]["template_id"]
    assert records[1]["template"] == "user <*> logged in"
    assert "file" not in records[0]


def test_cli_reads_files_and_writes_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second, out = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "templates.jsonl"
    first.write_text("job 1 done\njob 2 done\n")
    second.write_text("job 3 done")  # no final line break
    assert main(["logs", "templates", str(first), str(second), "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    records = _lines(out.read_text())
    assert [(r["file"], r["line"]) for r in records] == [(str(first), 1), (str(first), 2), (str(second), 1)]
    assert {r["template_id"] for r in records} == {records[0]["template_id"]}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging file left


def test_cli_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    assert main(["logs", "templates", str(tmp_path / "missing.log"), "--out", str(out)]) == EXIT_BAD_INPUT
    assert "file not found" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------- incident analysis


def _logs(rows: list[tuple[pd.Timestamp, str, str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["timestamp", "service", "pod", "level", "message"])
    return normalise_table(frame, "logs", source="test")


def _normal_minutes(start: pd.Timestamp, minutes: int, *, cache: bool = True) -> list:
    """Every 10 s: cart-1 and cart-2 serve a request, front answers; cart hits its cache."""
    rows = []
    for i in range(minutes * 6):
        t = start + pd.Timedelta(seconds=10 * i)
        for pod in ("cart-1", "cart-2"):
            rows.append((t, "cart", pod, "INFO", f"served request {i} in {i % 40 + 3}ms"))
        rows.append((t, "front", "front-1", "INFO", f"GET /api/items/{i} answered 200"))
        if cache:
            rows.append((t, "cart", "cart-1", "INFO", f"cache hit for key user_{i}"))
    return rows


def _errors(start: pd.Timestamp, count: int) -> list:
    return [(start + pd.Timedelta(seconds=15 * i), "cart", "cart-2", "ERROR",
             f"connection to db-{i % 3}:5432 refused after {i % 4 + 1} retries") for i in range(count)]


def _incident(rows: list, *, baseline: list | None = None, alert: pd.Timestamp | None = None) -> Incident:
    meta = IncidentMeta(id="cart-db", alert="cart errors", alert_time=alert,
                        window=TimeWindow(START, START + pd.Timedelta(minutes=10)))
    return Incident(meta=meta, telemetry=Telemetry(logs=_logs(rows) if rows else None),
                    baseline=Telemetry(logs=_logs(baseline)) if baseline else None)


def test_new_error_template_and_disappearing_template_against_the_baseline() -> None:
    baseline = _normal_minutes(START - pd.Timedelta(hours=1), 10)
    window = _normal_minutes(START, 10, cache=False) + _errors(START + pd.Timedelta(minutes=4), 20)
    incident = _incident(window, baseline=baseline)
    report = analyse_logs(incident)
    assert report.reference == "baseline"
    assert "baseline" in report.notes[0]

    new = [f for f in report.findings if f.kind == "new_template" and f.pod is None]
    assert [(f.service, f.level) for f in new] == [("cart", "ERROR")]
    evidence = new[0].evidence
    assert evidence.template == "connection to <*>:<*> refused after <*> retries"
    assert (evidence.count_before, evidence.count_during, dict(evidence.pods)) == (0, 20, {"cart-2": 20})
    assert evidence.example.startswith("connection to db-0:5432 refused")
    assert new[0].start == START + pd.Timedelta(minutes=4)
    assert any(f.kind == "new_template" and f.pod == "cart-2" for f in report.findings)

    gone = [f for f in report.findings if f.kind == "disappeared_template" and f.pod is None]
    assert [(f.service, f.evidence.template) for f in gone] == [("cart", "cache hit for key user_<*>")]
    assert (gone[0].evidence.count_before, gone[0].evidence.count_during) == (60, 0)
    assert gone[0].start is None

    assert not [f for f in report.findings if f.service == "front"]
    assert report.service_scores["front"] == 0.0 < report.service_scores["cart"]
    assert report.pod_scores["cart-2"] > report.pod_scores["cart-1"] > 0.0
    assert report.findings == tuple(sorted(report.findings, key=lambda f: -f.score))


def test_a_change_of_load_alone_is_no_finding() -> None:
    baseline = _normal_minutes(START - pd.Timedelta(hours=1), 10)
    busier = [(t + pd.Timedelta(seconds=5), *rest) for t, *rest in _normal_minutes(START, 10)]
    report = analyse_logs(_incident(_normal_minutes(START, 10) + busier, baseline=baseline))
    assert report.lines_during == 2 * len(baseline)
    assert report.findings == ()
    assert set(report.service_scores.values()) == {0.0}


def test_a_restarted_pod_is_compared_with_its_service() -> None:
    baseline = _normal_minutes(START - pd.Timedelta(hours=1), 10)
    renamed = [(t, service, "front-2" if pod == "front-1" else pod, level, message)
               for t, service, pod, level, message in _normal_minutes(START, 10)]
    report = analyse_logs(_incident(renamed, baseline=baseline))
    assert report.pod_scores["front-2"] == 0.0
    assert "front-1" not in report.pod_scores
    assert report.findings == ()


def test_without_baseline_the_window_before_the_alert_is_the_reference() -> None:
    alert = START + pd.Timedelta(minutes=5)
    rows = [r for r in _normal_minutes(START, 10) if not (r[0] >= alert and "cache" in r[4])]
    report = analyse_logs(_incident(rows + _errors(alert, 20), alert=alert))
    assert report.reference == "pre_alert"
    assert report.notes[0].startswith("no baseline")
    assert (report.minutes_before, report.minutes_during) == (5.0, 5.0)
    new = [f for f in report.findings if f.kind == "new_template" and f.pod is None]
    assert [(f.service, f.evidence.count_before, f.evidence.count_during) for f in new] == [("cart", 0, 20)]
    assert any(f.kind == "level_surge" and f.service == "cart" for f in report.findings)
    assert any(f.kind == "disappeared_template" and f.service == "cart" for f in report.findings)


def test_without_any_reference_the_error_templates_are_listed() -> None:
    report = analyse_logs(_incident(_normal_minutes(START, 10) + _errors(START, 20)))
    assert report.reference == "none"
    assert "could not be compared" in report.notes[0]
    assert {f.kind for f in report.findings} == {"error_template"}
    assert {(f.service, f.pod) for f in report.findings} == {("cart", None), ("cart", "cart-2")}
    assert report.service_scores["cart"] > report.service_scores["front"] == 0.0


def test_no_logs_gives_an_empty_report_with_a_reason() -> None:
    report = analyse_logs(_incident([]))
    assert (report.reference, report.findings, dict(report.service_scores)) == ("none", (), {})
    assert "no logs" in report.notes[0]
    outside = analyse_logs(_incident(_normal_minutes(START + pd.Timedelta(hours=2), 1)))
    assert outside.findings == () and "inside its window" in outside.notes[0]
    assert list(template_counts(_incident([])).columns) == list(COUNT_COLUMNS)


def test_template_counts_per_minute_service_and_pod() -> None:
    incident = _incident(_normal_minutes(START, 3) + _errors(START, 4))
    counts = template_counts(incident)
    assert list(counts.columns) == list(COUNT_COLUMNS)
    assert counts["count"].sum() == 3 * 6 * 4 + 4
    assert set(counts["window"]) == {START + pd.Timedelta(minutes=m) for m in range(3)}
    errors = counts[counts["level"] == "ERROR"]
    assert set(errors["pod"]) == {"cart-2"} and errors["count"].sum() == 4
    assert errors["template"].nunique() == 1
