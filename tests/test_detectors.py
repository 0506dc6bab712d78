"""Streaming anomaly detectors: the metrics expert's value model, the logs expert's line score, the
classic baselines, and `flipmoe detect`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experts.config import ModelConfig
from experts.metrics.detector import DetectorConfig, MetricsDetector
from experts.metrics.values import BOS_ID, NAN_ID, ValueTokenizer
from flipmoe.cli import main
from flipmoe.toolkits.streaming import TemplateNovelty, rolling_zscore, windowed_gaussian


def tiny_detector() -> MetricsDetector:
    tokens = ValueTokenizer()
    model = ModelConfig(vocab_size=tokens.vocab_size, hidden_size=32, intermediate_size=64, num_layers=2,
                        num_heads=2, num_kv_heads=1, max_seq_len=256)
    return MetricsDetector(DetectorConfig(tokenizer=tokens.config, model=model))


def normal_series(rng: np.random.Generator, n: int = 120) -> np.ndarray:
    level = rng.uniform(1, 100)
    return level * (1 + 0.02 * rng.standard_normal(n) + 0.05 * np.sin(np.arange(n) / rng.uniform(3, 9)))


# -- value tokenizer -----------------------------------------------------------------------------------------

def test_values_round_trip_within_their_bin_and_nan_has_its_own_token() -> None:
    tokens = ValueTokenizer()
    values = np.array([10.0, 10.5, 9.0, 400.0, -3.0, np.nan])
    centre, spread = tokens.scale(values[:3])
    ids = tokens.encode(values, centre, spread)
    assert ids[-1] == NAN_ID and (ids[:-1] >= tokens.first_bin).all() and (ids < tokens.vocab_size).all()
    back = tokens.decode(ids, centre, spread)
    # Bins are uniform in asinh(z): ordinary deviations come back to a small fraction of the spread.
    assert abs(back[0] - 10.0) < 0.1 * spread and abs(back[1] - 10.5) < 0.1 * spread
    assert np.argsort(ids[:5]).tolist() == np.argsort(values[:5]).tolist()  # order is kept
    sequence = tokens.sequence("http_server_request_duration_seconds:p95", values, centre, spread)
    assert sequence[0] == BOS_ID and sequence[1] == tokens.category_id("latency_ms")


def test_a_flat_history_still_has_a_scale() -> None:
    tokens = ValueTokenizer()
    assert tokens.scale(np.full(20, 5.0)) == (5.0, 0.05)
    assert tokens.scale(np.zeros(20))[1] == pytest.approx(1e-6)
    assert tokens.scale(np.array([np.nan, np.nan])) == (0.0, 1.0)
    # Any change out of a flat series lands far from the centre bin.
    centre, spread = tokens.scale(np.full(20, 5.0))
    assert abs(int(tokens.encode(np.array([6.0]), centre, spread)[0]) - int(tokens.encode(np.array([5.0]), centre,
                                                                                         spread)[0])) > 30


# -- the metrics detector ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained() -> MetricsDetector:
    rng = np.random.default_rng(0)
    detector = tiny_detector()
    run = detector.train([("cpu_usage", normal_series(rng)) for _ in range(64)], steps=120, batch_size=16, lr=3e-3)
    assert run["final_loss"] < run["first_loss"] - 1.0, run
    return detector


def test_scores_are_streaming_in_range_and_zero_before_enough_history(trained: MetricsDetector) -> None:
    series = normal_series(np.random.default_rng(1), 100)
    scores = trained.score(series, "cpu_usage")
    assert scores.shape == (100,) and ((scores >= 0) & (scores <= 1)).all()
    assert (scores[:trained.config.tokenizer.min_history] == 0).all()
    # The score of sample t never depends on samples after t.
    changed = series.copy()
    changed[60:] *= 50
    assert np.array_equal(trained.score(changed, "cpu_usage")[:60], scores[:60])
    with_gap = series.copy()
    with_gap[40] = np.nan
    assert trained.score(with_gap, "cpu_usage")[40] == 0.0
    # A series that starts with a gap is judged only once 16 real values came before: no history, no score.
    late = np.r_[np.full(40, np.nan), series[:60]]
    late_scores = trained.score(late, "cpu_usage")
    assert (late_scores[:56] == 0).all() and late_scores[56:].any()


def test_a_trained_detector_flags_a_spike_and_a_level_shift(trained: MetricsDetector) -> None:
    rng = np.random.default_rng(2)
    series = normal_series(rng, 100)
    series[70] *= 8          # spike
    series[85:] *= 3         # level shift
    scores = trained.score(series, "cpu_usage")
    normal = np.r_[scores[16:70], scores[71:85]]
    assert scores[70] > np.quantile(normal, 0.95) and scores[85] > np.quantile(normal, 0.95)


def test_checkpoint_round_trip(trained: MetricsDetector, tmp_path: Path) -> None:
    trained.card = {"training": {"steps": 120}}
    loaded = MetricsDetector.load(trained.save(tmp_path / "det"))
    series = normal_series(np.random.default_rng(3), 60)
    assert np.allclose(loaded.score(series, "x"), trained.score(series, "x"))
    assert loaded.card == {"training": {"steps": 120}}
    (tmp_path / "det" / "detector.json").write_text("{")
    with pytest.raises(Exception, match="unreadable detector.json"):
        MetricsDetector.load(tmp_path / "det")


# -- classic baselines -------------------------------------------------------------------------------------

def test_baselines_are_streaming_and_rank_a_spike_first() -> None:
    series = normal_series(np.random.default_rng(4), 200)
    series[150] *= 5
    for detect in (rolling_zscore, windowed_gaussian):
        scores = detect(series)
        assert ((scores >= 0) & (scores <= 1)).all() and (scores[:16] == 0).all()
        assert int(np.argmax(scores)) == 150
        later = series.copy()
        later[160:] = 0
        assert np.array_equal(detect(later)[:160], scores[:160])


def test_template_novelty_is_one_for_new_templates_and_keeps_state_across_batches() -> None:
    novelty = TemplateNovelty()
    first = novelty.score(["connected to 10.0.0.1", "connected to 10.0.0.2"])
    second = novelty.score(["connected to 10.0.0.3", "disk full on /dev/sda"])
    assert first.tolist() == [1.0, 0.5] and second.tolist() == [pytest.approx(1 / 3), 1.0]


# -- flipmoe detect ----------------------------------------------------------------------------------------

def test_detect_metrics_writes_one_line_per_row_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    series = normal_series(np.random.default_rng(5), 40)
    series[30] *= 10
    csv = tmp_path / "cpu.csv"
    csv.write_text("timestamp,value\n" + "".join(f"{1700000000 + 15 * i},{v}\n" for i, v in enumerate(series)))
    for method in ("zscore", "gaussian", "model"):
        out = tmp_path / f"{method}.jsonl"
        assert main(["detect", "metrics", str(csv), "--method", method, "--metric", "cpu_usage",
                     "--out", str(out)]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["timestamp"] for r in rows] == [1700000000 + 15 * i for i in range(40)]
        scores = np.array([r["score"] for r in rows])
        assert ((scores >= 0) & (scores <= 1)).all() and int(np.argmax(scores)) == 30, method


@pytest.mark.parametrize(("body", "message"), [
    ("time,v\n1,2\n", "needs columns timestamp,value"),
    ("timestamp,value\n1,2\n2,abc\n", "line 3: value 'abc' is not a number"),
    ("timestamp,value\n5,1\n4,1\n", "line 3: timestamp goes back in time"),
    ("timestamp,value\nyesterday,1\n", "timestamps must all be numbers"),
    ("timestamp,value\n1,2\n2,inf\n", "line 3: value 'inf' is not a finite number"),
    ("timestamp,value\n1,2\n\n2,abc\n", "line 4: value 'abc' is not a number"),  # blank lines still count
])
def test_detect_metrics_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         body: str, message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(body)
    out = tmp_path / "out.jsonl"
    assert main(["detect", "metrics", str(csv), "--method", "zscore", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()
    assert main(["detect", "metrics", str(tmp_path / "missing.csv")]) == 2
    assert main(["detect", "metrics", str(tmp_path)]) == 2  # a folder
    good = tmp_path / "good.csv"
    good.write_text("timestamp,value\n1,2\n")
    assert main(["detect", "metrics", str(good), "--method", "zscore", "--out", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_detect_logs_scores_every_line_and_learns_the_routine(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    routine = [f"GET /api/v1/orders/{rng.integers(1e6)} served in {rng.integers(2, 40)} ms by worker-{i % 4}"
               for i in range(600)]
    log = tmp_path / "app.log"
    log.write_text("\n".join(routine) + "\nkernel panic: unable to mount root fs on unknown-block(0,0)\n")
    for method in ("novelty", "model"):
        out = tmp_path / f"{method}.jsonl"
        assert main(["detect", "logs", str(log), "--method", method, "--out", str(out)]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["line"] for r in rows] == list(range(1, 602))
        scores = np.array([r["score"] for r in rows])
        assert ((scores >= 0) & (scores <= 1)).all()
        assert scores[-1] > np.quantile(scores[512:600], 0.95), method
    # The expert adapts as it reads: the routine surprises it less after two blocks than at the start.
    model = np.array([json.loads(line)["score"] for line in (tmp_path / "model.jsonl").read_text().splitlines()])
    assert model[512:600].mean() < model[:256].mean() - 0.05
