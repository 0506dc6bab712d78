"""`flipmoe bundle build|show`: the model bundle (experts + router + card)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bundle", help="build or inspect a model bundle (experts, router, card)",
                                   description="Build or inspect a model bundle: the experts, the router trained "
                                               "on their answers, and a card with their scores.")
    commands = parser.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND", required=True)
    build = commands.add_parser(
        "build", help="build a bundle from the project's own data",
        description="Run the whole chain: task data from the chaos gym and the shared data sets, each expert's "
                    "tokenizer and decoder, oracle labels from the frozen experts on held-out requests, the "
                    "router, and the evaluation. The nano preset takes at most 20 minutes on 2 CPU cores.")
    build.add_argument("--preset", default="nano", help="decoder preset of the experts (default nano)")
    build.add_argument("--out", metavar="DIR",
                       help="where to write the bundle (default: the user cache, ~/.cache/flipmoe/bundles/PRESET)")
    # Defaults live in BundleConfig (imported only when the command runs, to keep --help fast).
    build.add_argument("--expert-steps", type=int, metavar="N",
                       help="optimizer steps per expert (default: each family's for the preset)")
    build.add_argument("--detector-steps", type=int, metavar="N",
                       help="optimizer steps of the metrics detector's value model (default 800)")
    build.add_argument("--router-requests-per-task", type=int, metavar="N",
                       help="held-out requests per task answered by every expert for the router (default 48)")
    build.add_argument("--test-fraction", type=float, metavar="F",
                       help="share of those requests kept to evaluate the router (default 0.5)")
    build.add_argument("--max-new-tokens", type=int, metavar="N", help="longest generated answer (default 96)")
    build.add_argument("--train-incidents", type=int, metavar="N", help="chaos incidents of the training split")
    build.add_argument("--heldout-incidents", type=int, metavar="N", help="chaos incidents of the held-out split")
    build.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    build.add_argument("--quiet", action="store_true", help="no progress on standard error")
    build.set_defaults(handler=_build)

    show = commands.add_parser("show", help="summarise a bundle",
                               description="Print what a bundle holds: experts, router, evaluation, and the "
                                           "commands that rebuild it.")
    show.add_argument("bundle", metavar="DIR", nargs="?",
                      help="the bundle (default: $FLIPMOE_BUNDLE, else the packaged or cached nano bundle)")
    show.add_argument("--json", action="store_true", help="print bundle.json and card.json as one JSON object")
    show.set_defaults(handler=_show)


def _build(args: argparse.Namespace) -> int:
    from router.bundle import BundleConfig, build_bundle, cache_dir

    options = {"expert_steps": args.expert_steps, "detector_steps": args.detector_steps,
               "router_requests_per_task": args.router_requests_per_task,
               "test_fraction": args.test_fraction, "max_new_tokens": args.max_new_tokens,
               "train_incidents": args.train_incidents, "heldout_incidents": args.heldout_incidents}
    config = BundleConfig(preset=args.preset, **{k: v for k, v in options.items() if v is not None})
    out = args.out or cache_dir() / args.preset
    path = build_bundle(out, config=config, progress=not args.quiet, overwrite=args.overwrite)
    print(path)
    return 0


def _show(args: argparse.Namespace) -> int:
    from router.bundle import CARD_JSON, CARD_MD, ensure_bundle, read_manifest

    path = ensure_bundle(args.bundle, progress=True)
    manifest = read_manifest(path)
    card_path = path / CARD_JSON
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    if args.json:
        print(json.dumps({"path": str(path), "bundle": manifest, "card": card}, indent=2))
        return 0
    print(f"bundle {path}")
    markdown = path / CARD_MD
    if markdown.is_file():
        print(markdown.read_text(encoding="utf-8"))
    else:
        for name, entry in manifest["experts"].items():
            print(f"  expert {name}: {entry.get('kind', 'local')} {entry.get('path', entry.get('base_url', ''))}")
        print(f"  router {manifest.get('router', 'router')}")
    return 0
