"""`flipmoe detect` against classic detectors, in one run, on every labelled set this project has.

Metrics (`flipmoe detect metrics`: the metrics expert's value model vs rolling z-score and windowed
Gaussian; every method through `flipmoe.cli._detect.metric_scores`, the function the command runs):
- chaos, unseen seeds: the injected fault's own series (its `fine_grained` metric on the root-cause pod),
  baseline and incident window joined; samples from the injection on are anomalous;
- TrainTicket day (../shared/data, when present; a system the detector never trained on): the
  `CpuUsageRate(%)` series of the pod of each `cpu_contention` fault (the fine-grained label of
  `root_cause_ts.json`), the whole day at one sample a minute; samples from the injection's minute to
  3 minutes after the injection are anomalous (3 or 4 per fault, by the injection's second).
Logs (`flipmoe detect logs`: the logs expert vs template novelty, through `log_scorer`):
- BGL_2k (../shared/data): LogHub's per-line alert labels. The bundle's logs expert pretrained on the
  lines of LogHub's training split (unlabelled), which holds most of BGL_2k, so the figure is also given
  on the lines it never read, and `--logs-expert` scores with an expert trained without BGL at all.

Scores: average precision (AUC-PR) over all samples pooled, ROC AUC, and the mean per-series AP.

    python benchmarks/bench_detectors.py [--chaos 40] [--bundle DIR] [--logs-expert DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from flipmoe.cli._detect import LOG_BATCH, METRIC_METHODS, log_scorer, metric_scores

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
Labelled = tuple[str, np.ndarray, np.ndarray]  # metric name, values, 0/1 labels


def chaos_series(count: int) -> list[Labelled]:
    from experts.sources import Sources
    from router.bundle import DETECTOR_SYSTEMS

    sets = []
    for sample in Sources(shared_data=None, heldout_incidents=count, systems=DETECTOR_SYSTEMS).chaos("heldout"):
        label = sample.label
        joined = pd.concat([sample.table("metrics", baseline=True), sample.table("metrics")], ignore_index=True)
        own = joined[(joined["metric"] == label.fine_grained) & (joined["pod"] == label.pod)]
        if own.empty or label.inject_time is None:  # a fault whose fine-grained cause is not a pod metric
            continue
        own = own.sort_values("timestamp")
        y = (own["timestamp"] >= pd.Timestamp(label.inject_time)).to_numpy().astype(int)
        sets.append((str(label.fine_grained), own["value"].to_numpy(dtype=float), y))
    return sets


def trainticket_series() -> list[Labelled]:
    day = SHARED / "nezha-trainticket" / "rca_data" / "2023-01-29"
    if not day.is_dir():
        return []
    faults = json.loads((day / "2023-01-29-fault_list.json").read_text())
    fine = json.loads((SHARED / "nezha-trainticket" / "construct_data" / "root_cause_ts.json").read_text())
    sets = []
    for fault in (f for hour in faults.values() for f in hour):
        metric = fine.get(fault["inject_pod"].rsplit("-", 2)[0], {}).get(fault["inject_type"], "")
        path = day / "metric" / f"{fault['inject_pod']}_metric.csv.gz"
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        if metric not in frame.columns:  # code-region labels (return, exception) are not a series
            continue
        t = pd.to_datetime(frame["TimeStamp"], unit="s", utc=True)
        inject = pd.Timestamp(fault["inject_time"], tz="UTC")
        y = ((t >= inject.floor("min")) & (t <= inject + pd.Timedelta(minutes=3))).to_numpy().astype(int)
        sets.append((metric, frame[metric].to_numpy(dtype=float), y))
    return sets


def score_metrics(name: str, sets: list[Labelled], bundle: str | None) -> list[dict[str, Any]]:
    rows = []
    for method in METRIC_METHODS:
        started = time.perf_counter()
        scores = [np.asarray(metric_scores(list(v), method=method, metric=m, bundle=bundle)) for m, v, _ in sets]
        seconds = time.perf_counter() - started
        rows.append(_row(name, method, [y for _, _, y in sets], scores, seconds))
    return rows


def bgl_lines() -> tuple[list[str], np.ndarray, np.ndarray] | None:
    from experts.sources import hash_split

    path = SHARED / "loghub" / "BGL" / "BGL_2k.log_structured.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    lines = frame["Content"].tolist()
    labels = (frame["Label"] != "-").to_numpy().astype(int)
    unseen = np.array([hash_split("BGL", line) != "train" for line in lines])
    return lines, labels, unseen


def score_logs(bundle: str | None, expert: str | None) -> list[dict[str, Any]]:
    data = bgl_lines()
    if data is None:
        return []
    lines, labels, unseen = data
    whose = "leave-BGL-out expert" if expert else "bundle's expert"
    variants = [("model", {}), ("model, no adaptation", {"adapt": False}), ("novelty", {})]
    rows = []
    for name, options in variants:
        method = name.split(",")[0]
        started = time.perf_counter()
        scorer = log_scorer(method, bundle=bundle, expert=expert, **options)
        # Fed as `flipmoe detect logs` feeds it: in order, batch by batch.
        scores = np.concatenate([scorer(lines[i:i + LOG_BATCH]) for i in range(0, len(lines), LOG_BATCH)])
        seconds = time.perf_counter() - started
        rows.append(_row(f"BGL_2k ({whose}), all lines", name, [labels], [scores], seconds))
        if not expert:
            rows.append(_row("BGL_2k, lines the expert never read", name, [labels[unseen]], [scores[unseen]], 0.0))
    return rows


def _row(data: str, method: str, labels: list[np.ndarray], scores: list[np.ndarray], seconds: float) -> dict[str, Any]:
    y, s = np.concatenate(labels), np.concatenate(scores)
    per = [average_precision_score(a, b) for a, b in zip(labels, scores, strict=True) if 0 < a.sum() < len(a)]
    return {"data": data, "method": method, "series": len(labels), "samples": int(len(y)), "anomalous": int(y.sum()),
            "ap": float(average_precision_score(y, s)), "roc_auc": float(roc_auc_score(y, s)),
            "mean_series_ap": float(np.mean(per)) if per else float("nan"), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chaos", type=int, default=40, help="held-out chaos incidents (default 40)")
    parser.add_argument("--bundle", help="model bundle (default: the packaged one)")
    parser.add_argument("--logs-expert", help="also score BGL with this logs expert checkpoint (e.g. one trained "
                                              "without BGL: FLIPMOE_SHARED_DATA=<copy without loghub/BGL> "
                                              "flipmoe train expert --expert logs --out DIR)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = score_metrics("chaos, unseen seeds", chaos_series(args.chaos), args.bundle)
    tt = trainticket_series()
    if tt:
        rows += score_metrics("TrainTicket day (unseen system)", tt, args.bundle)
    rows += score_logs(args.bundle, None)
    if args.logs_expert:
        rows += score_logs(args.bundle, args.logs_expert)
    print(f"{'data':46s} {'method':20s} {'series':>6s} {'samples':>7s} {'anom':>5s} {'AP':>6s} {'ROC':>6s} "
          f"{'AP/ser':>6s} {'s':>6s}")
    for r in rows:
        print(f"{r['data']:46s} {r['method']:20s} {r['series']:6d} {r['samples']:7d} {r['anomalous']:5d} "
              f"{r['ap']:6.3f} {r['roc_auc']:6.3f} {r['mean_series_ap']:6.3f} {r['seconds']:6.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
