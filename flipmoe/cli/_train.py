"""`flipmoe train ...`: train the platform's models from its own data.

`train diagnosis` regenerates the chaos-gym training corpus in memory, extracts the diagnosis
features through the analysis path and fits the fault-type model shipped as
`director/toolkits/diagnosis_model.json`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train models (fault-type diagnosis, ...)",
                                   description="Train flipmoe's models from data the platform generates or curates.")
    commands = parser.add_subparsers(dest="train_command", metavar="SUBCOMMAND", required=True)
    diagnosis = commands.add_parser(
        "diagnosis", help="fit the learned fault-type diagnosis on chaos-gym incidents",
        description="Simulate chaos-gym incidents of the given systems (fault types round-robin over the 16 of the "
                    "taxonomy), run the analysis path on each, read the diagnosis features at its top suspect and "
                    "fit a multinomial logistic regression (C and the weight of the hand-written prototypes chosen "
                    "by cross-validation on the training incidents). Writes the weights and a training card as "
                    "JSON. Incident i of the k-th system uses seed S + 10000 k + i; seeds from 600000 on are "
                    "reserved for evaluation and refused.")
    # Defaults live in DiagnosisTrainingConfig (imported only when the command runs, to keep --help fast).
    diagnosis.add_argument("--per-system", metavar="N[,N...]",
                           help="incidents per system, one number for all or one per system in --systems order "
                                "(default 160,96,48: 10, 6 and 3 of each fault type)")
    diagnosis.add_argument("--systems", metavar="LIST",
                           help="comma-separated chaos systems (default webshop,ticketing,random)")
    diagnosis.add_argument("--seed", type=int, metavar="S", help="first training seed (default 100000)")
    diagnosis.add_argument("--workers", type=int, metavar="W", help="parallel processes (default 2)")
    diagnosis.add_argument("--out", metavar="PATH",
                           help="where to write the model (default: the shipped "
                                "director/toolkits/diagnosis_model.json)")
    diagnosis.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    diagnosis.set_defaults(handler=_diagnosis)


def _diagnosis(args: argparse.Namespace) -> int:
    from director.toolkits.diagnose import MODEL_PATH
    from eval.train_diagnosis import DiagnosisTrainingConfig, train_diagnosis

    overrides = {"per_system": _counts(args.per_system) if args.per_system else None, "seed": args.seed,
                 "workers": args.workers,
                 "systems": tuple(s.strip() for s in args.systems.split(",") if s.strip()) if args.systems else None}
    config = DiagnosisTrainingConfig(**{k: v for k, v in overrides.items() if v is not None})
    out = args.out or MODEL_PATH
    command = "flipmoe train diagnosis " + " ".join(
        shlex.quote(a) for a in ("--per-system", ",".join(map(str, config.per_system)),
                                 "--systems", ",".join(config.systems),
                                 "--seed", str(config.seed)))
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.perf_counter()
    model = train_diagnosis(config, out=out, command=command, progress=progress)
    cv = model.card["cross_validation"]
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s: {model.card['incidents']} incidents, "
          f"{len(model.classes)} fault types, C={cv['chosen_C']:g}, prior weight {cv['chosen_prior_weight']:g}")
    for name in ("prototypes", "learned", "combined"):
        print(f"  cross-validated {name:<10} accuracy {cv[name]['accuracy']:.3f}  macro-F1 {cv[name]['macro_f1']:.3f}")
    return 0


def _counts(text: str) -> tuple[int, ...]:
    from flipmoe.errors import FlipmoeInputError

    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise FlipmoeInputError(f"--per-system {text!r} is not a number or a comma-separated list of numbers",
                                hint="e.g. --per-system 64 or --per-system 160,96,48") from None
