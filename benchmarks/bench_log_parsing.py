"""Log parsing accuracy and speed on the LogHub 2k samples: flipmoe's parser against plain drain3.

For each system the Content column is parsed by
- `flipmoe`: `flipmoe.toolkits.logs.LogParser` with its defaults (the same for every system),
- `drain3`: `drain3.TemplateMiner` with a default `TemplateMinerConfig` (no masking),
and scored against EventTemplate with Grouping Accuracy (GA: a line is right when its predicted
group holds exactly the lines of its true group) and Parsing Accuracy (PA: the predicted template
equals the true one up to whitespace). Speed is input lines per second of a batch `parse` (which
mines each distinct message once) and, for flipmoe, of streaming `add` calls on every line; each is
the best of `--repeat` runs (default 3), as one run on a busy machine can be twice as slow. Both
flipmoe runs use its caches (one masking per message shape, Drain skipped where it cannot change
anything), which give the results of `LogParserConfig(cache_size=0)`.

    .venv/bin/python benchmarks/bench_log_parsing.py [--data DIR] [--systems BGL HDFS ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from drain3 import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig

from flipmoe.toolkits.logs import LogParser, grouping_accuracy, parsing_accuracy

SYSTEMS = ("BGL", "HDFS", "HPC", "Hadoop", "Spark", "Thunderbird", "Windows", "Zookeeper")
DEFAULT_DATA = Path("/work/shared/data/loghub")

Parse = Callable[[Sequence[str]], tuple[list[int], list[str]]]


def parse_flipmoe(messages: Sequence[str]) -> tuple[list[int], list[str]]:
    parsed = LogParser().parse(messages)
    return [line.template_id for line in parsed], [line.template for line in parsed]


def stream_flipmoe(messages: Sequence[str]) -> tuple[list[int], list[str]]:
    parser = LogParser()
    parsed = [parser.add(message) for message in messages]
    return [line.template_id for line in parsed], [line.template for line in parsed]


def parse_drain3(messages: Sequence[str]) -> tuple[list[int], list[str]]:
    miner = TemplateMiner(config=TemplateMinerConfig())
    ids = [miner.add_log_message(message)["cluster_id"] for message in messages]
    final = {cluster.cluster_id: cluster.get_template() for cluster in miner.drain.clusters}
    return ids, [final[i] for i in ids]


def load(data: Path, system: str) -> pd.DataFrame | None:
    for name in (f"{system}_2k.log_structured.csv", f"{system}_2k.log_structured.csv.gz"):
        path = data / system / name
        if path.exists():
            return pd.read_csv(path, usecols=["Content", "EventTemplate"], dtype=str, keep_default_na=False)
    return None


def measure(parse: Parse, messages: list[str], truth: list[str], repeat: int) -> tuple[float, float, float]:
    """GA, PA, and lines per second of the fastest of `repeat` runs (each on a new parser)."""
    seconds = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        ids, templates = parse(messages)
        seconds = min(seconds, time.perf_counter() - start)
    return grouping_accuracy(truth, ids), parsing_accuracy(truth, templates), len(messages) / seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LogHub folder (default %(default)s)")
    args.add_argument("--systems", nargs="+", default=SYSTEMS, metavar="S", help="systems to run")
    args.add_argument("--repeat", type=int, default=3, metavar="N",
                      help="time each parser N times and keep the fastest (default %(default)s)")
    opts = args.parse_args(argv)
    if opts.repeat < 1:
        args.error("--repeat must be at least 1")
    if not opts.data.is_dir():
        print(f"skipped: no LogHub data at {opts.data}")
        return 0
    header = (f"{'system':<12} {'lines':>5} | {'flipmoe GA':>10} {'PA':>6} {'lines/s':>8} {'stream/s':>8} | "
              f"{'drain3 GA':>9} {'PA':>6} {'lines/s':>8}")
    print(header)
    print("-" * len(header))
    rows = []
    for system in opts.systems:
        table = load(opts.data, system)
        if table is None:
            print(f"{system:<12} skipped: no structured CSV")
            continue
        messages, truth = table["Content"].tolist(), table["EventTemplate"].tolist()
        ours = measure(parse_flipmoe, messages, truth, opts.repeat)
        streaming = measure(stream_flipmoe, messages, truth, opts.repeat)[2]
        plain = measure(parse_drain3, messages, truth, opts.repeat)
        rows.append((*ours, streaming, *plain))
        print(f"{system:<12} {len(messages):>5} | {ours[0]:>10.3f} {ours[1]:>6.3f} {ours[2]:>8.0f} "
              f"{streaming:>8.0f} | {plain[0]:>9.3f} {plain[1]:>6.3f} {plain[2]:>8.0f}")
    if rows:
        mean = [sum(column) / len(rows) for column in zip(*rows, strict=True)]
        print("-" * len(header))
        print(f"{'mean':<12} {'':>5} | {mean[0]:>10.3f} {mean[1]:>6.3f} {mean[2]:>8.0f} {mean[3]:>8.0f} | "
              f"{mean[4]:>9.3f} {mean[5]:>6.3f} {mean[6]:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
