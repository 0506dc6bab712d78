"""The data pipeline end to end: documents per second and what each stage kept and removed.

Corpus: chaos-gym incidents (webshop and random systems), the director's runbooks, and, when
../shared/data is present, the eight LogHub 2k logs and the shared data's README; the test fixtures
and every expert family's held-out task data are the evaluation sets of the contamination check.
Classifiers are trained at the start of the build, as `flipmoe data build` does without saved
models; that training time is reported apart from the pipeline's own.

The machine is shared (2 cores, other jobs running): absolute figures are pessimistic.

    .venv/bin/python benchmarks/bench_data_pipeline.py [--incidents N] [--runner local|ray] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from data_pipeline.config import (
    ContaminationConfig,
    DataBuildConfig,
    ExecutionConfig,
    ExpertShardConfig,
    ShardConfig,
    SourceConfig,
)
from data_pipeline.documents import modality_accuracy
from data_pipeline.pipeline import build, summary
from experts.registry import catalog

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def config(incidents: int, runner: str, workers: int, out: str) -> DataBuildConfig:
    sources = [SourceConfig(name="chaos-webshop", kind="chaos", system="webshop", incidents=incidents, seed=3000,
                            window_minutes=8),
               SourceConfig(name="chaos-random", kind="chaos", system="random", incidents=max(1, incidents // 2),
                            seed=4000, window_minutes=8),
               SourceConfig(name="runbooks", kind="directory", path=str(REPO / "director" / "knowledge"),
                            include=("*.md",))]
    if SHARED.is_dir():
        sources += [SourceConfig(name="loghub", kind="loghub", path=str(SHARED / "loghub"), include=("*/*_2k.log",)),
                    SourceConfig(name="shared-docs", kind="directory", path=str(SHARED), include=("*.md",),
                                 modality="prose")]
    experts = (ExpertShardConfig(name="logs", family="logs", modalities=("log", "prose"), objective="causal"),
               ExpertShardConfig(name="metrics", family="metrics", modalities=("metric",), objective="causal"),
               ExpertShardConfig(name="traces", family="traces", modalities=("trace",), objective="causal"),
               ExpertShardConfig(name="code", family="code", modalities=("code", "config"), objective="significance"))
    return DataBuildConfig(out=out, sources=tuple(sources),
                           contamination=ContaminationConfig(eval_paths=(str(REPO / "tests" / "fixtures"),)),
                           shards=ShardConfig(experts=experts),
                           execution=ExecutionConfig(runner=runner, workers=workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=8, help="webshop incidents (random: half as many)")
    parser.add_argument("--runner", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="output directory (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="flipmoe-data-bench-")
    started, cpu_started = time.perf_counter(), time.process_time()
    result = build(config(args.incidents, args.runner, args.workers, out), families=catalog())
    total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(summary(result))
    setup = sum(s.seconds for s in result.stages if s.stage in ("classifiers", "eval_sets"))
    read = result.report["documents_read"]
    print(f"\nend to end: {read} documents in {total:.1f} s ({read / total:.1f} documents/s); without the one-off "
          f"classifier training and evaluation-set loading ({setup:.1f} s): {read / (total - setup):.1f} documents/s "
          f"on {args.runner} ({args.workers} workers, 2 shared cores); this process used {cpu:.1f} s of CPU "
          f"({read / cpu:.1f} documents per CPU-second; Ray workers not counted)")
    for stage in result.stages:
        if stage.removed_sources:
            print(f"  {stage.stage} removed by source: {stage.removed_sources}")
    # Modality tagging from content alone, against the modality the sources state (chaos tables, LogHub,
    # runbooks, file extensions) on the kept documents.
    kept = result.documents.drop_duplicates("id")
    tagging = modality_accuracy(kept["text"].tolist(), kept["modality"].tolist())
    print(f"modality tagging from content alone on {len(kept)} kept documents: accuracy {tagging['accuracy']:.3f}; "
          + ", ".join(f"{m} P {v['precision']:.2f} R {v['recall']:.2f}" for m, v in tagging["per_modality"].items()))
    for name, scores in result.report["classifiers"].items():
        heldout = scores.get("heldout", {})
        if heldout:
            print(f"{name} classifier, held-out: precision {heldout['precision']:.3f} recall {heldout['recall']:.3f} "
                  f"({heldout['positives']} positive, {heldout['negatives']} negative samples)")
    balance = result.report["balance"]
    if balance.get("after"):
        print("modality mixture (chars) before -> after balancing: " + ", ".join(
            f"{m} {balance['before'].get(m, 0):.2f}->{balance['after'].get(m, 0):.2f}" for m in balance["after"]))
    print(f"contamination: {result.report['contamination']}")
    print(f"instructions: {result.report['instructions']}")
    print(f"output: {out}")


if __name__ == "__main__":
    main()
