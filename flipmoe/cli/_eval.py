"""`flipmoe eval ...`: evaluation commands."""

from __future__ import annotations

import argparse
import sys

from flipmoe.cli._rca import add_model_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate the analysis path and models",
                                   description="Evaluate flipmoe on labelled incidents and tasks.")
    commands = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    loc = commands.add_parser(
        "localization", help="root-cause localisation and fault-type accuracy over incident directories",
        description="Run the Director over every incident directory under --path exactly as 'flipmoe rca' "
                    "does (same runbooks, actors and report; steps in this process), write one JSON line per "
                    "incident ({incident, root_causes, fault_type, label}) and print A@1/3/5 at service and pod "
                    "level, MRR and fault-type accuracy for the incidents that have a label.json. Labels are "
                    "read only after each analysis.")
    loc.add_argument("--path", required=True, help="an incident directory or a directory of them")
    loc.add_argument("--out", help="JSON Lines output file (default: standard output)")
    loc.add_argument("--modalities", default="metrics,traces,logs,events",
                     help="comma-separated modalities to use, for ablations (default: all)")
    loc.add_argument("--bundle", help="FlipMoE model bundle, as for 'flipmoe rca' (default: the same one rca uses)")
    loc.add_argument("--no-model", action="store_true", help="use no model: template summaries only")
    loc.add_argument("--runbook", help="a runbook template name or a .flow file, instead of retrieval")
    loc.add_argument("--history", metavar="DIR",
                     help="past incidents of the same system, as for 'flipmoe rca' (it may be --path itself: an "
                          "incident never counts in its own history)")
    add_model_arguments(loc)
    loc.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    loc.set_defaults(handler=_localization)

    listing = commands.add_parser("list", help="the evaluation tasks: category, metric, size, source, input",
                                  description="List the per-task harness's tasks with their category, metric, "
                                              "largest held-out size, where their references come from (real: "
                                              "independent labels of real data; chaos: the chaos gym's or a "
                                              "generator's) and the input every model and the rule read.")
    listing.add_argument("--json", action="store_true", help="one JSON object per task")
    listing.set_defaults(handler=_list)

    run = commands.add_parser(
        "run", help="run a task suite for one or more models; write JSON, Markdown and a radar chart",
        description="Every model answers every task of the suite on its held-out items (chaos seeds >= 600000, "
                    "LogHub lines of the held-out hash split, the labelled TVDiag cases and TrainTicket faults), "
                    "the rule reading the same input as the models. Scores come with bootstrap 95%% intervals, "
                    "and paired differences (each model against the rule, the bundle against the dense "
                    "baseline) with theirs. Writes results.json, predictions.jsonl, results.md and radar.png "
                    "under --out, and prints the table and the run time. Tasks whose data is absent are "
                    "reported as skipped, with what they need.")
    run.add_argument("--suite", default="all",
                     help="all, real, chaos, experts, quick, a category, or comma-separated task names "
                          "(default: all)")
    run.add_argument("--model", action="append", dest="models", metavar="SPEC",
                     help="rule | toolkit | constant:TEXT | expert:DIR | bundle:DIR | dense:DIR | "
                          "remote:URL#MODEL (repeatable; default: rule)")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("--incidents", type=int, default=20, help="held-out chaos incidents (default: 20)")
    run.add_argument("--max-items", type=int, default=200, help="items per task at most (default: 200)")
    run.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per task (default: 1000)")
    run.add_argument("--data", help="root of the real data sets: loghub/, tvdiag/, nezha-trainticket/ "
                                    "(default: $FLIPMOE_SHARED_DATA, else ../shared/data when present)")
    run.add_argument("--loghub", help="folder of LogHub structured CSVs (default: <data>/loghub)")
    run.add_argument("--tvdiag", help="folder of a TVDiag release (default: <data>/tvdiag)")
    run.add_argument("--nezha", help="root of the Nezha TrainTicket data set (default: <data>/nezha-trainticket)")
    run.add_argument("--contamination", action="store_true",
                     help="also measure each task's overlap with the experts' training data (MinHash)")
    run.add_argument("--prometheus", metavar="URL",
                     help="Prometheus holding the held-out incidents' metrics: PromQL answers are executed there "
                          "(default: $FLIPMOE_EVAL_PROMETHEUS; unset: parse check and canonical match only)")
    run.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    run.set_defaults(handler=_run)

    dense = commands.add_parser(
        "dense", help="train the dense baseline of a bundle (one decoder as large as its experts together)",
        description="Train one decoder with as many parameters as the bundle's experts together, one tokenizer "
                    "on the union of their corpora, on the union of their data (the data the bundle was built "
                    "from), for the experts' training compute (6ND) unless --steps fixes the step count. The "
                    "result is an expert checkpoint named 'dense': evaluate it with 'flipmoe eval run --model "
                    "dense:DIR'. Its card.json records the parameters and the share of the experts' FLOPs.")
    dense.add_argument("--bundle", required=True, help="the bundle whose local experts it is matched to")
    dense.add_argument("--out", required=True, help="directory the checkpoint is written to")
    dense.add_argument("--steps", type=int,
                       help="optimizer steps (default: as many as match the experts' compute; on two CPU cores "
                            "that is hours for the nano bundle)")
    dense.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    dense.set_defaults(handler=_dense)


def _localization(args: argparse.Namespace) -> int:
    from director.actors.base import RunSettings
    from eval.localization import director_ranker, evaluate, format_table
    from flipmoe.cli._rca import find_bundle, history_path, model_paths
    from flipmoe.telemetry import find_incidents

    incidents = find_incidents(args.path)
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    settings = RunSettings(bundle=find_bundle(args, build=False), modalities=modalities, history=history_path(args),
                           **model_paths(args))
    ranker = director_ranker(settings=settings, runbook=args.runbook)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            scores = evaluate(incidents, {"flipmoe": ranker}, out=out, progress=progress,
                              config=args.config_obj.telemetry)
    else:
        scores = evaluate(incidents, {"flipmoe": ranker}, out=sys.stdout, progress=progress,
                          config=args.config_obj.telemetry)
    summary = scores["flipmoe"].summary()
    stream = sys.stderr if not args.out else sys.stdout
    if summary["incidents"]:
        print(format_table(scores), file=stream)
    else:
        print(f"{len(incidents)} incident(s) analysed; none has a label.json, so there is nothing to score",
              file=stream)
    return 0


def _list(args: argparse.Namespace) -> int:
    import json

    from eval.tasks import CATEGORIES, tasks

    every = tasks()
    if args.json:
        for t in every:
            print(json.dumps({"task": t.name, "category": t.category, "metric": t.metric, "size": t.size,
                              "ground_truth": t.ground_truth, "source": t.source, "input": t.input_format,
                              "toolkit": t.toolkit is not None, "description": t.description}))
        return 0
    width = max(len(t.name) for t in every)
    for category, title in CATEGORIES.items():
        members = [t for t in every if t.category == category]
        print(f"{title} ({len(members)})")
        for t in members:
            print(f"  {t.name:<{width}}  {t.ground_truth:<5} {t.metric:<28} <={t.size:<3} {t.source:<16} "
                  f"{t.description}\n  {'':<{width}}  input: {t.input_format}")
    real = sum(t.ground_truth == "real" for t in every)
    print(f"{len(every)} tasks in {len(CATEGORIES)} categories ({real} with real references, "
          f"{len(every) - real} chaos)")
    return 0


def _run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from eval.harness import markdown, run_suite, write_report
    from eval.models import load_model
    from eval.tasks import EvalConfig, EvalData, suite
    from flipmoe.errors import FlipmoeInputError

    if args.prometheus:
        import os

        from eval.tasks.queries import PROMETHEUS_ENV

        os.environ[PROMETHEUS_ENV] = args.prometheus
    started = time.perf_counter()
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if args.resamples < 1:
        raise FlipmoeInputError(f"--resamples must be at least 1, not {args.resamples}")
    for flag in ("data", "loghub", "tvdiag", "nezha"):
        if getattr(args, flag) and not Path(getattr(args, flag)).is_dir():
            raise FlipmoeInputError(f"--{flag}: no such directory", path=getattr(args, flag))
    tasks = suite(args.suite)
    models = [load_model(spec) for spec in (args.models or ["rule"])]
    if len({m.name for m in models}) < len(models):
        raise FlipmoeInputError("the same model is named twice", hint="give each --model once")
    data = EvalData(EvalConfig(incidents=args.incidents, max_items=args.max_items, data=args.data,
                               loghub=args.loghub, tvdiag=args.tvdiag, nezha=args.nezha))
    run = run_suite(tasks, models, data=data, progress=say, resamples=args.resamples)
    if args.contamination:
        from eval.contamination import contamination, training_texts

        say("contamination: building the experts' training texts")
        report = contamination(run.items, training_texts())
        run.contamination = {task: c.to_json() for task, c in report.items()}
    run.seconds = time.perf_counter() - started
    paths = write_report(run, args.out)
    print(markdown(run))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _dense(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eval.dense_baseline import DenseConfig, build_dense_baseline
    from experts.expert import Expert
    from flipmoe.errors import FlipmoeInputError
    from router import bundle as bundles

    if args.steps is not None and args.steps < 1:
        raise FlipmoeInputError(f"--steps must be at least 1, not {args.steps}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FlipmoeInputError("--out is a file, not a directory", path=out)
    manifest = bundles.read_manifest(args.bundle)
    experts = bundles.load_experts(args.bundle)
    remote = sorted(name for name, e in experts.items() if not isinstance(e, Expert))
    if remote:
        raise FlipmoeInputError(f"the bundle's expert(s) {', '.join(remote)} are remote: a dense baseline is "
                                "matched to local checkpoints only", path=args.bundle)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    dense = build_dense_baseline(experts, out, sources=bundles.sources_of(manifest),
                                 config=DenseConfig(steps=args.steps), progress=not args.quiet, say=say)
    training = dense.card["training"]
    print(f"wrote {out}: {dense.card['parameters']:,} parameters (experts: "
          f"{dense.card['matched_to']['parameters']:,}), {training['steps']} steps, {training['tokens_seen']:,} "
          f"tokens, {training['flops_vs_experts']:.2f}x the experts' FLOPs, final loss {training['final_loss']}")
    return 0
