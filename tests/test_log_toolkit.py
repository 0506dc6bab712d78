"""The log toolkit: masking, template mining, parsing accuracy, `flipmoe logs templates`, and the
incident log analysis. Fixtures only (LogHub samples under tests/fixtures/loghub)."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest
from drain3 import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flipmoe.cli import EXIT_BAD_INPUT, main
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident, IncidentMeta, Telemetry, TimeWindow, normalise_table
from flipmoe.toolkits.logs import (
    COUNT_COLUMNS,
    MASK_RULES,
    LogParser,
    LogParserConfig,
    LogToolkitConfig,
    MaskCache,
    Masker,
    analyse_logs,
    grouping_accuracy,
    parsing_accuracy,
    template_accuracy,
    template_counts,
    with_templates,
)
from flipmoe.toolkits.logs.masking import _SOURCE_EXTENSIONS
from flipmoe.toolkits.logs.mining import _fits, _generalise
from flipmoe.toolkits.signals import log_signals

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
@given(st.lists(st.text(alphabet="ab1_-.:[]<>", min_size=1, max_size=8), min_size=2, max_size=5, unique=True))
def test_a_generalised_token_still_fits_every_token_it_covers(tokens: list[str]) -> None:
    template = _generalise(tokens)
    assert all(_fits(template, token) for token in tokens)


def test_a_variable_first_token_does_not_split_a_template() -> None:
    # Drain's prefix tree starts from the first token, which here is the variable.
    programs = ["chrome.exe", "firefox.exe", "Dropbox.exe", "WeChat.exe", "putty.exe"]
    lines = [f"{programs[i % 5]} - proxy{i % 3}.example.org:{5000 + i} open through proxy p.example.org:5070 HTTPS"
             for i in range(40)]
    parsed = LogParser().parse(lines)
    assert len({line.template_id for line in parsed}) == 1
    assert parsed[0].template == "<*>.exe - <*>:<*> open through proxy p.example.org:<*> HTTPS"


def test_one_rare_constant_word_keeps_its_own_template() -> None:
    lines = ["Session: 30546173_4261722401 initialized by client WindowsUpdateAgent."] * 50 + \
        ["Session: 11152_142416105 initialized by client SPP."]
    parsed = LogParser().parse(lines)
    assert parsed[0].template_id != parsed[-1].template_id
    assert parsed[-1].template == "Session: <*>_<*> initialized by client SPP."


def test_a_column_of_many_values_is_a_variable_and_few_repeated_words_enumerate() -> None:
    states = ["NEW", "SCHEDULED", "RUNNING"]
    lines = [f"task_{i} Task Transitioned from {states[i % 3]} to {states[(i + 1) % 3]}" for i in range(30)]
    users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"]
    lines += [f"Accepted password for {users[i % 12]} from 10.0.0.{i} port 22 ssh2" for i in range(36)]
    parsed = LogParser().parse(lines)
    assert len({line.template_id for line in parsed[:30]}) == 3
    assert {line.template for line in parsed[30:]} == {"Accepted password for <*> from <*> port <*> ssh2"}


def test_sizes_keep_their_unit_inside_the_variable() -> None:
    parsed = LogParser().parse([
        "Block rdd_2_2 stored as bytes in memory (estimated size 850.0 B, free 320.3 KB)",
        "Block broadcast_9 stored as bytes in memory (estimated size 5.2 KB, free 14.0 MB)",
        "Block rdd_7_1 stored as bytes in memory (estimated size 12 GB, free 1 GB)",
        "job 4 wrote to /data/a/b and /data/c/d", "job 5 wrote to /x/y/z /x/y/q and /u/v/w", "job 6 wrote to",
    ])
    assert len({line.template_id for line in parsed[:3]}) == 1
    assert parsed[0].template == "Block <*>_<*> stored as bytes in memory (estimated size <*>, free <*>)"
    # `<*> and <*>` and `<*> <*> and <*>`: a variable stretch of one or two tokens, one template.
    assert parsed[3].template_id == parsed[4].template_id != parsed[5].template_id


def test_values_of_a_field_are_templates_of_one_event() -> None:
    parser = LogParser()
    parsed = parser.parse([f"Retrieve train [TrainTypeName: {name}] in {i} ms"
                           for i, name in enumerate(["ZhiDa", "GaoTieOne"] * 10)])
    assert parsed[0].template_id != parsed[1].template_id
    first, second = parser.event(parsed[0].template_id), parser.event(parsed[1].template_id)
    assert first == second is not None
    assert first.template == "Retrieve train [TrainTypeName: <*> in <*> ms"
    assert parser.event(10_000) is None


def test_the_incident_analysis_counts_events() -> None:
    logs = normalise_table(pd.DataFrame({
        "timestamp": [START + pd.Timedelta(seconds=i) for i in range(40)],
        "service": "train", "pod": "train-1", "level": "INFO",
        "message": [f"Retrieve train [TrainTypeName: {'ZhiDa' if i < 20 else 'GaoTie'}]" for i in range(40)]}),
        "logs", source="test")
    labelled = with_templates(logs, LogParser())
    assert labelled["template_id"].nunique() == 1
    assert labelled["template"].iloc[0] == "Retrieve train [TrainTypeName: <*>"


def test_lines_that_fit_an_earlier_batch_keep_its_template() -> None:
    parser = LogParser()
    first = parser.parse([f"worker w{i}.pool started in {i} ms" for i in range(10)])
    later = parser.parse(["worker w77.pool started in 5 ms", "queue drained"])
    assert later[0] == first[0]
    assert first[0].template == "worker w<*>.pool started in <*> ms"
    assert later[1].template == "queue drained"


def test_the_number_of_templates_is_bounded() -> None:
    parser = LogParser(config=LogParserConfig(max_templates=10))
    for i in range(50):
        parser.parse([f"event{chr(97 + i % 26)}{chr(97 + i // 26)} happened"])
    assert len(parser.templates) <= 10
    assert parser.match("eventxb happened") is not None  # the most recent are kept


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


# ------------------------------------------------------------------------------------------- caches
# Masking is remembered per message shape and per piece of long shapes, and Drain is skipped for a
# masked message whose search cannot have changed. These must never change a result.

# Fragments that exercise every rule, its edges and the cache's shortcuts: hex ids and UUIDs
# (premasked), digits and `0x` (shapes), spaces, `, ` and quotes (pieces), clock times and dates
# across spaces, digits that are not ASCII, mask-like text, line breaks.
_FRAGMENTS = [
    "0", "7", "42", "0x1f", "0X", "deadbeef", "c0ffee12", "v", "v1.2", "1.2.3.4", "10.0.0.1", ".", ":", "::", "-",
    "_", "/", "/a/b", "\\", " ", "  ", "\n", "\t", "ms", "s", "m", "min", "µs", "Main.java:12", "#", "x#5", "Jan ",
    "Mon, ", "Dec", "12:30:45", " 9:05:07.123", "2023-01-02", " CST", ", 2023", "T", "Z", "+01:00", "<:IP:>", "<:",
    "[", "]", "(", ")", "), ", ", ", ";", "=", "k=", "a=b1", "\"", "'", "\" a 1\"", "@", "a@b.co", "http://x/y", "~",
    "blk_", "job_1_2", "-5", "+3", "web-07", "node3.dc", ":80", "٣", "é", "{", "}", "e", "F", "G1237", "Ticket(",
    "seatNo=", "TraceID: ", "12ab34cd-1234-5678-9abc-def012345678", "00:11:22:33:44:55", "fe80::1", "C:\\x",
]


def _vary(message: str, characters: str, rng: random.Random) -> str:
    return "".join(rng.choice(characters) if c in characters else c for c in message)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=25), st.integers(1, 30), st.randoms())
@example(["job_1_2", "0", "ms", "{", "2023-01-02", "Mon, ", "web-07", "[", "T", "0", "/a/b", "x#5", "{", "}"], 25,
         random.Random(0))  # ends in `5{}`: a kept digit, then braces
def test_the_mask_cache_masks_as_the_masker(parts: list[str], repeat: int, rng: random.Random) -> None:
    masker, cache = Masker(), MaskCache(Masker())
    message = " ".join(["".join(parts)] * repeat)  # long ones are cut into pieces
    # Other digits: the same shape. Other hex characters: the same quick key, maybe another shape.
    for variant in (message, _vary(message, "0123456789", rng), _vary(message, "0123456789abcdefABCDEF", rng),
                    message):
        assert cache.mask(variant) == masker.mask(variant)


@pytest.mark.parametrize("message", [
    # A quote pair holds one line break: QUOTED spans it, so no piece may end inside.
    "\"\n.java:1 abc 9 " * 30,
    # HOST takes a port in any digits, but only looks when an ASCII `:digit` is somewhere.
    "conn web7:\u0663\u0664 then " + "x" * 250 + " later port :5 ok",
    # TIMESTAMP goes across spaces (and `, `).
    "at Mon, Jan 12, 2023 10:00:01 CST 2023 and " * 12,
    "saved 2023-01-29 15:38:06, next " * 12,
    "took 5 at 10:00:01 CST 2024 then " * 12,
])
def test_the_mask_cache_keeps_pieces_whole_where_rules_reach_across(message: str) -> None:
    assert MaskCache(Masker()).mask(message) == Masker().mask(message)


def test_the_mask_cache_tells_hex_ids_from_hex_words_in_the_same_places() -> None:
    # Same hex characters at the same places (one quick key); only the first holds hex ids.
    tail = " [query][Query TripResponse] " + "x" * 120
    masker, cache = Masker(), MaskCache(Masker())
    for ids in ("c0e0d111a7e4 SpanID: 4458565ffe84", "deadbeefcafe SpanID: 445856512384",
                "c0e0d111a7e4 SpanID: 4458565ffe84"):
        message = f"TraceID: {ids}{tail}"
        assert cache.mask(message) == masker.mask(message)


# The rules written to start with their first character (so the regex engine skips to candidates),
# as they read plainly.
_PLAIN_RULES = {
    "NUM": r"(?<![A-Za-z0-9])(?<!\d\.)" + "".join(rf"(?<!\.{ext}:)" for ext in _SOURCE_EXTENSIONS)
           + r"(?<![A-Za-z]#)(?:[-+]|v(?=\d+\.\d))?\d+(?:\.\d+)*(?![0-9])",
    "IP": r"(?<![A-Za-z0-9])\d{1,3}(?:\.\d{1,3}){3}(?!\.?[A-Za-z0-9])",
    "HEX": r"(?<![A-Za-z0-9])(?:0[xX][0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,})"
           r"(?![A-Za-z0-9])",
    "PORT": r"(?:(?<=<:IP:>)|(?<=<:HOST:>)|(?<=<:IPV6:>\])):(?P<value>\d{1,5})(?![A-Za-z0-9])",
    "ID": r"(?<=[A-Za-z][_-])(?P<value>-?\d[\w-]*)",
}
_RULE_FRAGMENTS = [*_FRAGMENTS, "<:HOST:>", "<:IPV6:>]", ":5", "a_", "b-", "--7", "v9.1", "1.", ".c:", ".scala:",
                   "abcdef", "0x", "12345678", "9a"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_RULE_FRAGMENTS), max_size=12))
def test_fast_rules_match_as_written_plainly_and_their_prefilters_hold(parts: list[str]) -> None:
    text = "".join(parts)
    for rule in MASK_RULES:
        if rule.name in _PLAIN_RULES:
            plain = re.compile(_PLAIN_RULES[rule.name])
            assert [m.span() for m in rule.regex.finditer(text)] == [m.span() for m in plain.finditer(text)], rule
        if rule.regex.search(text):  # `may_match` is a necessary condition, never a filter
            assert rule.may_match is None or rule.may_match(text), rule


def _uuid(rng: random.Random) -> str:
    value = f"{rng.getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


def _java_lines(count: int, seed: int) -> list[str]:
    """Lines like those of the Java services of TrainTicket: trace ids, UUIDs, lists of records."""
    rng = random.Random(seed)
    stations = ["shanghai", "nanjing", "suzhou", "beijing"]
    lines = []
    for _ in range(count):
        ids = f"TraceID: {rng.getrandbits(128):032x} SpanID: {rng.getrandbits(64):016x}"
        kind = rng.randrange(4)
        if kind == 0:
            tickets = ", ".join(f"Ticket(seatNo={rng.randrange(10**9)}, startStation={rng.choice(stations)}, "
                                f"destStation={rng.choice(stations)})" for _ in range(rng.randrange(1, 25)))
            lines.append(f"s.s.SeatServiceImpl#166 {ids} [getLeftTicket][result is <200,Response(status=1, "
                         f"data=LeftTicketInfo{{soldTickets=[{tickets}]}}),[vary:\"Origin\", x-frame:\"DENY\"]>]")
        elif kind == 1:
            lines.append(f"o.c.OrderController#{rng.choice([39, 108])} {ids} [modifyOrder][OrderId: {_uuid(rng)}]")
        elif kind == 2:
            lines.append(f"t.s.TravelServiceImpl#372 {ids} [getTickets][calculate time: {rng.randrange(500)} "
                         f"time: Sat May 04 12:{rng.randrange(60):02d}:52 CST 2013]")
        else:
            lines.append(f"f.m.s.BasicServiceImpl#89 {ids} [queryForTravel][indexStart: {rng.randrange(3)} "
                         f"indexEnd: {rng.randrange(9)} train G{rng.randrange(1000, 9999)}]")
    return lines


@pytest.mark.parametrize("options", [{}, {"max_templates": 8}, {"cache_size": 5}])
@pytest.mark.parametrize("system", ["HDFS", "Zookeeper", "Hadoop", "java"])
def test_cached_and_uncached_parsing_assign_the_same_templates(system: str, options: dict) -> None:
    messages = _java_lines(300, seed=7) if system == "java" else _loghub(system)[0]
    messages = messages + messages[::-3]  # repeats, in another order
    cached, plain = LogParserConfig(**options), LogParserConfig(**{**options, "cache_size": 0})
    assert LogParser(config=cached).parse(messages) == LogParser(config=plain).parse(messages)
    streaming, plain_streaming = LogParser(config=cached), LogParser(config=plain)
    batches = [messages[start:start + 97] for start in range(0, len(messages), 97)]
    assert [streaming.parse(batch) for batch in batches] == [plain_streaming.parse(batch) for batch in batches]
    assert streaming.templates == plain_streaming.templates
    assert [streaming.match(line) for line in messages[:50]] == [plain_streaming.match(line) for line in messages[:50]]


def test_cache_size_must_not_be_negative() -> None:
    with pytest.raises(FlipmoeInputError, match="cache_size"):
        LogParserConfig(cache_size=-1)


# ------------------------------------------------------------------------------------------ scoring


def test_grouping_and_parsing_accuracy_on_a_hand_made_example() -> None:
    truth = ["A <*>", "A <*>", "B", "B", "C <*>"]
    # Lines 0-1 are grouped right; 2 is split from 3; 3 is merged with 4.
    assert grouping_accuracy(truth, [1, 1, 2, 3, 3]) == pytest.approx(2 / 5)
    assert grouping_accuracy(truth, ["x", "x", "y", "y", "z"]) == 1.0
    assert parsing_accuracy(truth, ["A  <*>", "A <*> ", "B", "b", "C"]) == pytest.approx(3 / 5)
    assert grouping_accuracy([], []) == parsing_accuracy([], []) == 0.0
    # FTA: "A <*>" is found with its text; "B" is split; "C <*>" is grouped right but written "C".
    assert template_accuracy(truth, [1, 1, 2, 3, 4], ["A <*>", "A <*>", "B", "B", "C"]) == \
        pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    assert template_accuracy(truth, [1, 1, 2, 2, 3], ["A <*>", "A <*>", "B", "B", "C <*>"]) == 1.0
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


def test_the_analysis_is_the_same_without_the_caches() -> None:
    baseline = _normal_minutes(START - pd.Timedelta(hours=1), 10)
    alert = START + pd.Timedelta(minutes=4)
    window = _normal_minutes(START, 10, cache=False) + _errors(alert, 20)
    plain = LogToolkitConfig(parser=LogParserConfig(cache_size=0))
    for incident in (_incident(window, baseline=baseline), _incident(window, alert=alert)):
        report = analyse_logs(incident)
        assert report.findings and report == analyse_logs(incident, config=plain)


def _calls(start: pd.Timestamp, count: int, *, priced: bool = True, first: int = 0) -> tuple[list, list]:
    """`count` calls of cart's CartController.get, one every 2 s, alternating pods: each logs that it loads the
    cart, one to three item lines (a loop), the price when `priced`; every eighth call a database timeout, and
    another eighth (when `priced`) a gift wrap line."""
    spans, lines = [], []
    for i in range(first, first + count):
        t, pod, span = start + pd.Timedelta(seconds=2 * (i - first)), f"cart-{i % 2 + 1}", f"s{i}"
        spans.append((f"t{i}", span, None, "cart", pod, "CartController.get", t, 12.0, "ok"))
        lines.append((t, "cart", pod, "INFO", f"loading cart {i}", span))
        lines += [(t, "cart", pod, "INFO", f"item {k} of cart {i} in stock", span) for k in range(i % 3 + 1)]
        if priced:
            lines.append((t, "cart", pod, "INFO", f"priced cart {i} total {i * 7 % 90}.50", span))
        if priced and i % 8 == 1:
            lines.append((t, "cart", pod, "INFO", f"gift wrap requested for cart {i}", span))
        if i % 8 == 0:
            lines.append((t, "cart", pod, "ERROR", f"db timeout after {i % 5 + 1} s", span))
    return spans, lines


def _traced(spans: list, lines: list) -> Telemetry:
    frame = pd.DataFrame(lines, columns=["timestamp", "service", "pod", "level", "message", "span_id"])
    span_frame = pd.DataFrame(spans, columns=["trace_id", "span_id", "parent_span_id", "service", "pod", "operation",
                                              "start", "duration", "status"])
    return Telemetry(logs=normalise_table(frame, "logs", source="test"),
                     spans=normalise_table(span_frame, "spans", source="test"))


def test_a_line_the_calls_stopped_writing_is_a_broken_pattern() -> None:
    alert = START + pd.Timedelta(minutes=5)
    before, after = _calls(START, 150), _calls(alert, 100, priced=False, first=150)
    meta = IncidentMeta(id="cart-price", alert="cart wrong totals", alert_time=alert,
                        window=TimeWindow(START, START + pd.Timedelta(minutes=10)))
    for baseline in (_traced(*_calls(START - pd.Timedelta(hours=1), 150, first=1000)), None):
        incident = Incident(meta=meta, telemetry=_traced(before[0] + after[0], before[1] + after[1]), baseline=baseline)
        report = analyse_logs(incident)
        assert report.reference == ("baseline" if baseline else "pre_alert")
        breaks = [f for f in report.findings if f.kind == "broken_pattern"]
        # The price line, at service scope and for both pods; not the loop's lines (fewer per call, still in every
        # call), not the cart loading line, not the database timeout (an error that stops is a recovery), and not
        # the gift wrap line (one call in eight wrote it: it depends on the request, not on the code path).
        assert {(f.service, f.pod) for f in breaks} == {("cart", None), ("cart", "cart-1"), ("cart", "cart-2")}
        service = next(f for f in breaks if f.pod is None)
        assert service.evidence.template == "priced cart <*> total <*>"
        assert service.evidence.operation == "CartController.get"
        evidence = service.evidence
        assert (evidence.count_before, evidence.calls_before) == (150, 150)
        assert (evidence.count_during, evidence.calls_during, evidence.rate_during) == (0, 100, 0)
        assert service.z <= -3 and service.score > 0.5 and service.level == "INFO"
        assert "written in 150 of 150 calls of CartController.get before, 0 of 100 now" in service.describe()
        assert "1 broken" not in report.notes[1] and "3 broken" in report.notes[1]
        signal = next(s for s in log_signals(report) if s.kind == "logs:broken_pattern:INFO")
        assert signal.role == "cause" and signal.service == "cart"
        assert (signal.evidence["operation"], signal.evidence["calls_before"], signal.evidence["calls_during"]) == (
            "CartController.get", 150, 100)


def test_patterns_need_log_lines_bound_to_calls() -> None:
    alert = START + pd.Timedelta(minutes=5)
    (spans, lines), (later_spans, later_lines) = _calls(START, 150), _calls(alert, 100, priced=False, first=150)
    unbound = [(*line[:5], None) for line in lines + later_lines]
    meta = IncidentMeta(id="cart-price", alert="cart wrong totals", alert_time=alert,
                        window=TimeWindow(START, START + pd.Timedelta(minutes=10)))
    report = analyse_logs(Incident(meta=meta, telemetry=_traced(spans + later_spans, unbound)))
    assert not [f for f in report.findings if f.kind == "broken_pattern"]
    assert "no span ids" in report.notes[1]
    # The same lines, bound: a service that keeps writing every line has no broken pattern.
    steady = _calls(START, 250)
    report = analyse_logs(Incident(meta=meta, telemetry=_traced(*steady)))
    assert not [f for f in report.findings if f.kind == "broken_pattern"] and "0 broken" in report.notes[1]


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


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["alpha", "beta", "gamma", "x1", "7", "ok", "error"]), min_size=1,
                         max_size=4).map(" ".join), min_size=1, max_size=30))
def test_every_event_fits_its_template(messages: list[str]) -> None:
    parser = LogParser()
    for line in set(parser.parse(messages)):
        event = parser.event(line.template_id)
        assert event is not None
        event_tokens, template_tokens = event.template.split(), line.template.split()
        assert len(event_tokens) <= len(template_tokens) or "<*>" in event.template
        if len(event_tokens) == len(template_tokens):
            assert all(e == t or e == "<*>" for e, t in zip(event_tokens, template_tokens, strict=True))
