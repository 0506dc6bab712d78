"""`flipmoe data build CONFIG`: build the experts' training data (see `data_pipeline.pipeline`)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build training corpora, shards and instruction data",
                                   description="Curate corpora into the experts' training data.")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    build = commands.add_parser(
        "build", help="run the data pipeline described by a YAML config",
        description="Read the sources, normalise and tag modalities, filter (binary, garbage, length, repetition, "
                    "relevance, quality), remove exact and MinHash near-duplicates and evaluation-set overlap, "
                    "balance the modality mixture, and write tokenized shards per expert with manifest.json, "
                    "instructions.jsonl and report.json. Example: data_pipeline/configs/example.yaml.")
    build.add_argument("build_config", metavar="CONFIG", help="YAML file of data_pipeline.config.DataBuildConfig")
    build.add_argument("--out", metavar="DIR", help="output directory (overrides the config's out)")
    build.add_argument("--runner", choices=("local", "ray"), help="override execution.runner")
    build.add_argument("--workers", type=int, metavar="W", help="override execution.workers")
    build.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    build.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from data_pipeline.config import DataBuildConfig
    from data_pipeline.pipeline import build, summary
    from experts.registry import catalog

    config = DataBuildConfig.load(args.build_config)
    if args.out:
        config = replace(config, out=args.out)
    if args.runner or args.workers:
        config = replace(config, execution=replace(config.execution, runner=args.runner or config.execution.runner,
                                                   workers=args.workers or config.execution.workers))
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = build(config, progress=progress, families=catalog())
    print(summary(result))
    print(f"wrote {result.out}/manifest.json and {result.out}/report.json")
    return 0
