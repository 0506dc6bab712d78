"""Alert-to-answer latency: real Prometheus and Alertmanager, Loki's local double, flipmoe under uvicorn.

The setup of tests/test_alert_to_answer_e2e.py (scrape, rule evaluation, group_wait and group_interval all
1 s). Each repetition waits out a clean baseline, makes checkout slow, and times the answer that reaches the
Slack receiver, then makes checkout normal again:

- receipt -> delivery: from flipmoe receiving Alertmanager's webhook to the receiver getting the message
  (Alertmanager's group wait and Prometheus's scrape and evaluation are excluded);
- onset -> delivery: from the anomaly's start, all of them included;
- `flipmoe rca` in-process: the baseline, the analysis alone, on the incidents the alerts pulled (run after
  the alerts, in the same process, so already warm).

The first alert pays for warming the analysis up; "warm" is the second and later ones.

    python benchmarks/bench_alert_to_answer.py --repetitions 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=5, help="alerts, the first of them cold (default 5)")
    args = parser.parse_args()
    if args.repetitions < 2:
        parser.error("--repetitions must be at least 2 (the first alert is cold)")

    from test_alert_to_answer_e2e import BASELINE_S, MISSING, alert_pipeline, wait_for_answer

    from flipmoe.cli import main as flipmoe
    from flipmoe.serve.services import DirectorAnalyzer

    if MISSING:
        sys.exit(f"needs {' and '.join(MISSING)} on PATH: run .ci/install-prometheus.sh")
    work = Path(tempfile.mkdtemp(prefix="bench-alert-"))
    from_receipt, from_onset, in_service, top = [], [], [], []
    with alert_pipeline(work, DirectorAnalyzer(bundle=None)) as pipeline:
        for repetition in range(args.repetitions):
            time.sleep(BASELINE_S)  # a window of normal telemetry before the anomaly (and after the last one)
            onset = pipeline.workload.inject("checkout")
            delivered, _, hook = wait_for_answer(pipeline, after=repetition)
            pipeline.workload.inject(None)
            received = next(at for at in pipeline.flipmoe.received if at >= onset)
            from_receipt.append(delivered - received)
            from_onset.append(delivered - onset)
            in_service.append(_job(pipeline.url, hook["job_id"])["summary"]["seconds"])
            top.append(hook["root_causes"][0]["service"] if hook["root_causes"] else "-")
            print(f"alert {repetition + 1}: receipt -> delivery {from_receipt[-1]:.2f} s, onset -> delivery "
                  f"{from_onset[-1]:.2f} s, top cause {top[-1]}", flush=True)
        incidents = sorted((pipeline.data_dir / "incidents").glob("*/incident"), key=lambda p: p.stat().st_mtime)

    rca = []
    for incident in incidents:
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            flipmoe(["rca", str(incident), "--local", "--no-model", "--out", str(work / "rca")])
        rca.append(time.perf_counter() - started)

    print(f"\n{args.repetitions} alerts, top cause checkout in {top.count('checkout')}/{len(top)}; seconds")
    print(f"{'':38s}{'first':>8s}{'warm p50':>10s}{'warm p95':>10s}")
    for name, values in (("receipt -> delivery (no group wait)", from_receipt), ("onset -> delivery", from_onset),
                         ("analysis inside the service", in_service), ("baseline: flipmoe rca in-process", rca)):
        print(f"{name:38s}{values[0]:8.2f}{statistics.median(values[1:]):10.2f}{_p95(values[1:]):10.2f}")


def _job(url: str, job_id: str) -> dict[str, Any]:
    """The job once finished (delivery is its last step, so it finishes just after the answer arrives)."""
    deadline = time.time() + 30
    while (job := httpx.get(f"{url}/v1/incidents/{job_id}", timeout=5).json())["state"] not in ("done", "failed"):
        if time.time() > deadline:
            sys.exit(f"job {job_id} did not finish: {job}")
        time.sleep(0.05)
    return job


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
