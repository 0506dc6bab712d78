"""`flipmoe train router --bundle DIR`: train a bundle's router again from its frozen experts.

`register_train_router(commands)` adds the subcommand to the `flipmoe train` group.
"""

from __future__ import annotations

import argparse


def register_train_router(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "router", help="train a bundle's router on labels from its frozen experts",
        description="Every expert of the bundle answers the held-out requests of every task; the expert with the "
                    "best task score (ties: the likeliest reference per byte) is each request's label. Half the "
                    "requests fit the router (hashed character n-grams + task name, logistic regression, "
                    "temperature-calibrated), the other half evaluate it. Replaces DIR/router and refreshes the "
                    "bundle card.")
    parser.add_argument("--bundle", metavar="DIR", help="the bundle (default: $FLIPMOE_BUNDLE, the packaged or the "
                                                        "cached nano bundle)")
    parser.add_argument("--requests-per-task", type=int, metavar="N",
                        help="held-out requests per task (default: what the bundle was built with)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    parser.set_defaults(handler=train_router_command)


def train_router_command(args: argparse.Namespace) -> int:
    import json
    from dataclasses import fields, replace

    from router.bundle import BundleConfig, ensure_bundle, read_manifest, retrain_router

    bundle = ensure_bundle(args.bundle, progress=not args.quiet)
    saved = read_manifest(bundle).get("config", {})
    config = BundleConfig(**{k: v for k, v in saved.items() if k in {f.name for f in fields(BundleConfig)}})
    if args.requests_per_task:
        config = replace(config, router_requests_per_task=args.requests_per_task)
    router_dir = retrain_router(bundle, config=config, progress=not args.quiet)
    card = json.loads((router_dir / "card.json").read_text(encoding="utf-8"))
    cv = card.get("cross_validated", {})
    print(f"wrote {router_dir}: {card.get('requests', 0)} labelled requests {card.get('label_counts', {})}, "
          f"cross-validated accuracy {cv.get('accuracy', 0):.3f}, ECE {cv.get('ece', 0):.3f}")
    return 0


def register_train_detector(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "detector", help="train a bundle's metrics detector (the metrics expert's value model)",
        description="Train the value-token model that 'flipmoe detect metrics' and the analysis use to score "
                    "how surprising a metric sample is, on every series of 48 chaos training incidents "
                    "(webshop, random, ticketing), and record it in the bundle (DIR/detectors/metrics).")
    parser.add_argument("--bundle", metavar="DIR", required=True,
                        help="the bundle to add it to (named explicitly: the packaged one is part of the installation)")
    parser.add_argument("--steps", type=int, metavar="N", help="optimizer steps (default 800)")
    parser.add_argument("--incidents", type=int, default=48, metavar="N",
                        help="chaos training incidents whose fault-free baselines it learns from (default 48)")
    parser.set_defaults(handler=train_detector_command)


def train_detector_command(args: argparse.Namespace) -> int:
    import json

    from flipmoe.errors import FlipmoeInputError
    from router.bundle import BundleConfig, add_metrics_detector, ensure_bundle

    if args.steps is not None and args.steps < 1:
        raise FlipmoeInputError(f"--steps must be at least 1, got {args.steps}")
    if args.incidents < 1:
        raise FlipmoeInputError(f"--incidents must be at least 1, got {args.incidents}")
    bundle = ensure_bundle(args.bundle)
    path = add_metrics_detector(bundle, steps=args.steps or BundleConfig().detector_steps, incidents=args.incidents)
    run = json.loads((path / "card.json").read_text(encoding="utf-8"))["training"]
    print(f"wrote {path}: {run['steps']} steps on {run['series']} series, loss {run['first_loss']} -> "
          f"{run['final_loss']} in {run['seconds']} s")
    return 0
