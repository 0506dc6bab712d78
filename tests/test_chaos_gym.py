import json

import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env

from data_pipeline.chaos.grader import GraderWeights, grade_submission
from data_pipeline.chaos.gym import GymConfig, RCAEnv
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import (
    Incident,
    IncidentMeta,
    Telemetry,
    TimeWindow,
    Topology,
    normalise_table,
    write_incident,
)
from flipmoe.telemetry.label import Label

T0 = pd.Timestamp("2026-03-01T10:00:00Z")
ALERT = T0 + pd.Timedelta(minutes=10)
PODS = {"front-0": ("front", "node-1"), "api-0": ("api", "node-1"), "db-0": ("db", "node-2")}
LABEL = Label(service="db", pod="db-0", node="node-2", fault_type="db_slow_query")


def _minute(i: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=i)


def _faulty_incident() -> Incident:
    """front -> api -> db; from the alert on, db-0 burns CPU, its queries fail slowly, it logs errors."""
    metrics = pd.DataFrame([
        {"timestamp": _minute(i), "service": svc, "pod": pod, "node": node, "metric": "cpu",
         "value": (80.0 if pod == "db-0" and i >= 10 else 10.0) + (i % 3) * 0.2}
        for i in range(-10, 20) for pod, (svc, node) in PODS.items()
    ])
    logs = pd.DataFrame([
        {"timestamp": _minute(i), "service": "api", "pod": "api-0", "level": "info",
         "message": f"served id={i}"}
        for i in range(20)
    ] + [
        {"timestamp": _minute(i) + pd.Timedelta(seconds=s), "service": "db", "pod": "db-0", "level": "error",
         "message": f"query timeout after {5000 + s} ms"}
        for i in range(10, 20) for s in (1, 2)
    ])
    spans = pd.DataFrame([row for i in range(20) for row in _trace(i, slow=i >= 10)])
    baseline_spans = pd.DataFrame([row for i in range(5) for row in _trace(i, slow=False)])
    baseline_spans["start"] -= pd.Timedelta(days=1)
    meta = IncidentMeta(id="gym", alert="p95 latency of front above 1s",
                        window=TimeWindow(T0, _minute(20)), alert_time=ALERT)
    return Incident(
        meta=meta,
        telemetry=Telemetry(metrics=normalise_table(metrics, "metrics", source="m"),
                            logs=normalise_table(logs, "logs", source="l"),
                            spans=normalise_table(spans, "spans", source="s")),
        baseline=Telemetry(spans=normalise_table(baseline_spans, "spans", source="b")),
        topology=Topology(edges=[("front", "api"), ("api", "db")]),
    )


def _trace(i: int, *, slow: bool) -> list[dict]:
    start = _minute(i)
    db_ms = 500.0 if slow else 5.0
    calls = [(f"f{i}", None, "front", "GET /", db_ms + 20, "ok"),
             (f"a{i}", f"f{i}", "api", "getItem", db_ms + 10, "ok"),
             (f"d{i}", f"a{i}", "db", "SELECT", db_ms, "error" if slow else "ok")]
    return [{"trace_id": f"t{i}", "span_id": span, "parent_span_id": parent, "service": svc,
             "pod": f"{svc}-0", "operation": op, "start": start, "duration": ms, "status": status}
            for span, parent, svc, op, ms, status in calls]


@pytest.fixture(scope="module")
def incident() -> Incident:
    return _faulty_incident()


@pytest.fixture
def env(incident) -> RCAEnv:
    env = RCAEnv(incident, LABEL, config=GymConfig(max_steps=6, max_rows=5))
    env.reset(seed=0)
    return env


def call(tool: str, **args) -> dict:
    return {"tool": tool, "args": args}


GOOD_ANSWER = [{"service": "db", "pod": "db-0", "node": "node-2"}, {"service": "api"}, {"service": "front"}]


# --- the gym -----------------------------------------------------------------------------------------

def test_reset_shows_the_alert_and_nothing_of_the_answer(incident):
    env = RCAEnv(incident, LABEL)
    obs, info = env.reset(seed=1)
    assert obs.startswith("ALERT: p95 latency of front above 1s")
    assert "2026-03-01T10:10:00.000Z" in obs, "the alert time is given"
    assert "db_slow_query" not in obs and "node-2" not in obs
    assert env.observation_space.contains(obs)
    assert info["data"]["services"] == ["api", "db", "front"]


def test_passes_gymnasium_env_checker(incident):
    check_env(RCAEnv(incident, LABEL), skip_render_check=True)


def test_traces_walk_from_sampled_roots_to_the_slow_leaf(env):
    obs, reward, terminated, truncated, info = env.step(call("search_traces", parent_span_id="root"))
    assert reward == 0 and not terminated and not truncated
    roots = info["data"]
    assert len(roots) == 5 and "5 of 10 root spans" in obs, "only roots after the alert, capped at max_rows"
    assert all(r["service"] == "front" and r["start"] >= "2026-03-01T10:10" for r in roots)
    root = roots[0]["span_id"]
    _, _, _, _, info = env.step(json.dumps(call("search_traces", parent_span_id=root)))
    api = info["data"][0]
    assert api["service"] == "api" and api["children"] == 1
    obs, _, _, _, info = env.step(call("search_traces", parent_span_id=api["span_id"]))
    db = info["data"][0]
    assert (db["pod"], db["duration_ms"], db["status"]) == ("db-0", 500.0, "error")
    assert db["baseline_p50_ms"] == 5.0
    assert "db | db-0 | SELECT | 500.0 | error | 0 | 5" in obs
    obs, reward, *_ = env.step(call("search_traces", parent_span_id=db["span_id"]))
    assert reward == 0 and "leaf" in obs


def test_root_sample_follows_the_reset_seed(incident):
    def first_roots(seed: int) -> list[str]:
        env = RCAEnv(incident, LABEL, config=GymConfig(max_rows=3))
        env.reset(seed=seed)
        return [r["span_id"] for r in env.step(call("search_traces", parent_span_id=None))[4]["data"]]

    assert first_roots(7) == first_roots(7)


def test_fluctuating_metrics_rank_the_faulty_pod_first(env):
    obs, reward, _, _, info = env.step(call("search_fluctuating_metrics", service="db",
                                            timestamp=int(ALERT.timestamp() * 1000)))
    assert reward == 0
    [row] = info["data"]
    assert (row["metric"], row["pod"], row["node"]) == ("cpu", "db-0", "node-2")
    assert row["rel_change"] > 5 and row["z"] > 3
    assert "cpu | db-0 | node-2" in obs
    # ThinkFL's call format; the timestamp defaults to the alert time.
    thinkfl_call = {"name": "search_fluctuating_metrics", "arguments": '{"service_name": "api"}'}
    _, _, _, _, info = env.step(thinkfl_call)
    assert info["ok"] and info["data"] == [], "a healthy service shows no fluctuation"


def test_logs_are_grouped_counted_and_capped(env):
    obs, _, _, _, info = env.step(call("search_logs", service="db", query="TIMEOUT"))
    assert info["data"]["counts"] == {"ERROR": 20}
    [group] = info["data"]["groups"]
    assert group["count"] == 20 and group["message"] == "query timeout after 5001 ms"
    _, _, _, _, info = env.step(call("search_logs", service="api",
                                     window=["2026-03-01T10:00:00Z", "2026-03-01T10:07:00Z"]))
    assert info["data"]["counts"] == {"INFO": 7} and len(info["data"]["groups"]) == 1
    obs, *_ = env.step(call("search_logs", service="api", query="nothing like this"))
    assert "0 lines" in obs


@pytest.mark.parametrize("action, message", [
    (call("restart_pod", pod="db-0"), "unknown tool"),
    ("not json", "not valid JSON"),
    ('["a list"]', "JSON object"),
    (call("search_logs", service="dbb"), "unknown service 'dbb' (did you mean db?)"),
    (call("search_logs", service="db", window=["yesterday"]), "window"),
    (call("search_logs", service="db", window=["2026-03-01 10:00", "2026-03-01 10:05"]), "no timezone"),
    (call("search_fluctuating_metrics", service="db", timestamp=[1]), "timestamp"),
    (call("search_traces", parent_span_id="nope"), "no span 'nope'"),
    (call("search_traces", span="f1"), "unknown argument"),
    ({"tool": "search_logs", "args": "{broken"}, "not valid JSON"),
    (call("submit", root_causes=[{"service": "db"}, {"service": "api"}]), "at least 3"),
    (call("submit", root_causes="db"), "at least 3"),
])
def test_malformed_calls_are_penalised_not_raised(env, action, message):
    obs, reward, terminated, truncated, info = env.step(action)
    assert obs.startswith("error:") and message in obs
    assert reward == -env.config.malformed_penalty
    assert not terminated and not truncated and not info["ok"]


def test_submit_ends_the_episode_with_the_grade(env):
    env.step(call("search_traces", parent_span_id="root"))
    env.step(call("search_logs", service="nope"))
    thinkfl_call = json.dumps({"name": "print_results", "arguments": {"root_causes": GOOD_ANSWER}})
    obs, reward, terminated, truncated, info = env.step(f"<tool_call>{thinkfl_call}</tool_call>")
    assert terminated and not truncated
    expected, _ = grade_submission(GOOD_ANSWER, LABEL, steps=3, max_steps=6, malformed_calls=1)
    assert reward == pytest.approx(expected) == pytest.approx(info["grade"]["total"])
    assert info["grade"]["service_rank"] == 1 and "reward" in obs
    obs, reward, terminated, _, info = env.step(call("submit", root_causes=GOOD_ANSWER))
    assert "episode is over" in obs and reward == 0 and terminated


def test_truncated_at_max_steps_and_reset_starts_over(env):
    for _ in range(5):
        *_, truncated, _ = env.step(call("search_logs", service="db"))
        assert not truncated
    obs, _, terminated, truncated, _ = env.step(call("search_logs", service="db"))
    assert truncated and not terminated and "truncated" in obs
    env.reset()
    _, reward, terminated, _, _ = env.step(call("submit", root_causes=GOOD_ANSWER))
    assert terminated and reward == pytest.approx(1.0), "a perfect first-step answer after reset scores 1"


def test_observations_stay_in_the_text_space(incident):
    env = RCAEnv(incident, LABEL, config=GymConfig(max_observation_chars=300))
    env.reset(seed=0)
    obs, *_ = env.step(call("search_logs", service="db", query="t\u00e9st \x00"))
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(call("search_traces", parent_span_id="root"))
    assert len(obs) <= 300 and obs.endswith("[truncated]")


def test_from_dir_reads_the_label(tmp_path, incident):
    write_incident(incident, tmp_path / "gym", label=LABEL)
    env = RCAEnv.from_dir(tmp_path / "gym")
    env.reset(seed=0)
    assert env.step(call("submit", root_causes=GOOD_ANSWER))[1] == pytest.approx(1.0)
    write_incident(incident, tmp_path / "unlabelled")
    with pytest.raises(FlipmoeInputError, match="no label.json"):
        RCAEnv.from_dir(tmp_path / "unlabelled")


def test_config_is_validated():
    with pytest.raises(FlipmoeInputError, match="max_steps"):
        GymConfig(max_steps=0)


# --- the grader --------------------------------------------------------------------------------------

def grade(entries: list, label: Label = LABEL, **kwargs) -> dict:
    kwargs.setdefault("steps", 1)
    kwargs.setdefault("max_steps", 10)
    total, breakdown = grade_submission(entries, label, **kwargs)
    assert breakdown["total"] == total and 0.0 <= total <= 1.0
    return breakdown


OTHERS = [{"service": "api", "pod": "api-0", "node": "node-1"}, {"service": "front", "pod": "front-0"}]


def test_grade_correct_top1_is_one():
    g = grade(GOOD_ANSWER)
    assert (g["correctness"], g["format"], g["efficiency"], g["total"]) == (1.0, 1.0, 1.0, 1.0)
    assert (g["service_rank"], g["pod_rank"], g["node_rank"]) == (1, 1, 1)


def test_grade_correct_at_rank_three_earns_a_third():
    g = grade([*OTHERS, GOOD_ANSWER[0]])
    assert g["service_rank"] == 3 and g["service"] == pytest.approx(1 / 3)
    assert g["pod_rank"] == 3, "only entries that name a pod rank at the pod level"
    assert g["node_rank"] == 2, "node-1 is the only other node named"
    assert g["correctness"] == pytest.approx((0.5 / 3 + 0.3 / 3 + 0.2 / 2) / 1.0)


def test_grade_wrong_answer_earns_only_format():
    g = grade([*OTHERS, {"service": "cache"}])
    assert g["correctness"] == 0 and g["total"] == pytest.approx(0.1), "no speed bonus for a wrong answer"


def test_grade_service_right_pod_wrong():
    g = grade([{"service": "db", "pod": "db-1", "node": "node-9"}, *OTHERS])
    assert (g["service"], g["pod"], g["node"]) == (1.0, 0.0, 0.0)
    assert g["correctness"] == pytest.approx(0.5)


def test_grade_levels_may_sit_in_separate_entries_as_thinkfl_writes_them():
    g = grade([{"service": "DB"}, {"pod": "db-0"}, {"node": "node-2"}])
    assert g["correctness"] == 1.0, "levels rank independently; names compare case-insensitively"


def test_grade_duplicates_do_not_push_the_answer_down_but_cost_format():
    g = grade([OTHERS[0], OTHERS[0], OTHERS[0], GOOD_ANSWER[0]])
    assert g["service_rank"] == 2
    assert g["format"] == pytest.approx(2 / 4)


def test_grade_malformed_entries_are_skipped_and_cost_format():
    g = grade(["db", {"service": ""}, {"service": 3}, {"host": "x"}, {"service": "api", "reason": 1},
               *GOOD_ANSWER])
    assert g["service_rank"] == 1
    assert g["format"] == pytest.approx(3 / 8)
    assert grade([GOOD_ANSWER[0]])["format"] == pytest.approx(1 / 3), "fewer than three entries"


def test_grade_label_without_pod_or_node_scores_the_service_alone():
    g = grade([{"service": "api"}, {"service": "db"}, {"service": "front"}],
              label=Label(service="db", fault_type="bad_config"))
    assert g["pod"] is None and g["node"] is None and g["correctness"] == pytest.approx(0.5)


def test_grade_ranks_beyond_top_k_earn_nothing():
    many = [{"service": f"s{i}"} for i in range(5)] + [GOOD_ANSWER[0]]
    g = grade(many)
    assert g["service_rank"] == 6 and g["service"] == 0.0
    assert grade(many, weights=GraderWeights(top_k=6))["service"] == pytest.approx(1 / 6)


def test_grade_efficiency_and_call_format():
    g = grade(GOOD_ANSWER, steps=6, max_steps=10, malformed_calls=3)
    assert g["efficiency"] == pytest.approx(0.5) and g["format"] == pytest.approx(0.5)
    assert g["total"] == pytest.approx(0.8 + 0.1 * 0.5 + 0.1 * 0.5)
    assert grade(GOOD_ANSWER, steps=20, max_steps=10)["efficiency"] == 0.0


def test_grade_inputs_are_validated():
    with pytest.raises(FlipmoeInputError, match="sum to 1"):
        GraderWeights(format=0.5)
    with pytest.raises(FlipmoeInputError, match="steps"):
        grade_submission(GOOD_ANSWER, LABEL, steps=0, max_steps=5)


def test_from_chaos_simulates_an_incident_to_investigate():
    env = RCAEnv.from_chaos("webshop", seed=3)
    obs, _ = env.reset(seed=0)
    assert obs.startswith("ALERT:") and env.label.fault_type not in obs
    _, _, _, _, info = env.step(call("search_traces", parent_span_id="root"))
    assert info["ok"] and info["data"]
    truth = {"service": env.label.service, "pod": env.label.pod, "node": env.label.node}
    answer = [{k: v for k, v in truth.items() if v}, {"service": "nowhere"}, {"service": "nobody"}]
    _, reward, terminated, _, _ = env.step(call("submit", root_causes=answer))
    assert terminated and reward > 0.9
