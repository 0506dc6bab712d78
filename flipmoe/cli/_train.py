"""`flipmoe train ...`: train the platform's models from its own data.

`train diagnosis` regenerates the chaos-gym training corpus in memory, extracts the diagnosis
features through the analysis path and fits the fault-type model shipped as
`flipmoe/toolkits/diagnosis_model.json`. `train tokenizer` and `train expert` build a modality
expert's own tokenizer, and the whole expert, from its family's data (`experts.build`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from experts.megatron.cli import add_megatron_arguments  # argparse only: neither torch nor megatron
from router.cli import register_train_detector, register_train_router

_T = TypeVar("_T")

DEFAULT_EXPERTS_DIR = Path("build") / "experts"
"""Where `train tokenizer` and `train expert` write when no --out is given (one folder per expert)."""
_BACKENDS = ("hf", "megatron")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train models (fault-type diagnosis, ...)",
                                   description="Train flipmoe's models from data the platform generates or curates.")
    commands = parser.add_subparsers(dest="train_command", metavar="SUBCOMMAND", required=True)
    register_train_router(commands)
    register_train_detector(commands)
    diagnosis = commands.add_parser(
        "diagnosis", help="fit the learned fault-type diagnosis on chaos-gym and labelled real incidents",
        description="Simulate chaos-gym incidents of the given systems (fault types round-robin over the 16 of the "
                    "taxonomy), run the analysis path on each, read the diagnosis features at its top suspect and "
                    "fit a multinomial logistic regression (C and the weight of the hand-written prototypes chosen "
                    "by cross-validation on the training incidents). Writes the weights and a training card as "
                    "JSON. Incident i of the k-th system uses seed S + 10000 k + i; seeds from 600000 on are "
                    "reserved for evaluation and refused. Labelled incident folders (--incidents) are analysed as "
                    "'flipmoe rca' does and pooled with the chaos incidents; each incident weighs 1 / (incidents of "
                    "its system x incidents of its fault type).")
    # Defaults live in DiagnosisTrainingConfig (imported only when the command runs, to keep --help fast).
    diagnosis.add_argument("--per-system", metavar="N[,N...]",
                           help="incidents per system, one number for all or one per system in --systems order "
                                "(default 160,96,48: 10, 6 and 3 of each fault type)")
    diagnosis.add_argument("--systems", metavar="LIST",
                           help="comma-separated chaos systems (default webshop,ticketing,random)")
    diagnosis.add_argument("--seed", type=int, metavar="S", help="first training seed (default 100000)")
    diagnosis.add_argument("--workers", type=int, metavar="W", help="parallel processes (default 2)")
    diagnosis.add_argument("--no-chaos", action="store_true",
                           help="simulate no chaos incidents: train on the --incidents alone")
    _add_incident_arguments(diagnosis)
    diagnosis.add_argument("--save-samples", metavar="FILE",
                           help="also write the collected features and labels as JSON lines")
    diagnosis.add_argument("--from-samples", metavar="FILE",
                           help="fit samples written by --save-samples, without simulating or analysing anything")
    diagnosis.add_argument("--out", metavar="PATH",
                           help="where to write the model (default: the shipped "
                                "flipmoe/toolkits/diagnosis_model.json)")
    diagnosis.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    diagnosis.set_defaults(handler=_diagnosis)

    ranking = commands.add_parser(
        "ranking", help="fit the learned ranking of root-cause candidates on labelled incidents of several systems",
        description="Run the shipped RCA path (learned ranking off) on labelled incidents, read the localize step's "
                    "candidates and features, fit a logistic regression (one configuration for all systems), report "
                    "leave-one-system-out A@1 next to the fusion's own order, and write the model.")
    _add_labelled_arguments(ranking, chaos_per_system=40)
    ranking.add_argument("--out", metavar="PATH", help="where the model goes (default: the shipped "
                                                       "flipmoe/toolkits/ranking_model.json)")
    ranking.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    ranking.set_defaults(handler=_ranking)

    gate = commands.add_parser(
        "gate", help="fit the gate of the mixture: how much each modality's evidence counts, per incident",
        description="Run the shipped RCA path (gate off) on labelled incidents, keep every modality's signals, fit "
                    "the gate (per modality a weight from features of its evidence, one configuration for all "
                    "systems), report leave-one-system-out A@1 next to the entropy rule, uniform weights, the best "
                    "single modality and the oracle, and write the gate.")
    _add_labelled_arguments(gate, chaos_per_system=30)
    gate.add_argument("--out", metavar="PATH", required=True,
                      help="where the gate goes; use it with 'flipmoe rca --gate PATH'")
    gate.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    gate.set_defaults(handler=_gate)

    tokenizer = commands.add_parser(
        "tokenizer", help="train an expert's own sentencepiece tokenizer",
        description="Build the expert family's corpus (chaos gym, and the real data in ../shared/data when present) "
                    "and train its sentencepiece tokenizer with the family's settings. Writes DIR/tokenizer.model.")
    tokenizer.add_argument("--expert", required=True, metavar="NAME",
                           help="expert family (logs, metrics, traces, code)")
    tokenizer.add_argument("--out", metavar="DIR", help=f"output folder (default {DEFAULT_EXPERTS_DIR}/NAME)")
    tokenizer.add_argument("--vocab-size", type=int, metavar="N", help="vocabulary size (default: the family's)")
    tokenizer.set_defaults(handler=_tokenizer)

    expert = commands.add_parser(
        "expert", help="train a modality expert (tokenizer, decoder, task fine-tuning, scores)",
        description="Train the expert family's tokenizer and decoder on its own data: pretraining with the family's "
                    "objective, then task fine-tuning; scores it on held-out tasks against the untrained model and "
                    "the rule baseline, and writes a self-describing checkpoint (config.yaml, tokenizer.model, "
                    "model.safetensors, card.json, loss curve). '--expert all' builds the four default experts into "
                    "OUT/<name>/ (nano: at most 15 minutes on two CPU cores).")
    expert.add_argument("--expert", required=True, metavar="NAME",
                        help="expert family (logs, metrics, traces, code) or 'all'")
    expert.add_argument("--preset", default="nano", metavar="NAME", help="model and training preset (default nano)")
    expert.add_argument("--out", metavar="DIR",
                        help=f"checkpoint folder (default {DEFAULT_EXPERTS_DIR}/NAME; with 'all', the parent folder, "
                             f"default {DEFAULT_EXPERTS_DIR})")
    expert.add_argument("--steps", type=int, metavar="N", help="optimizer steps (default: the preset's)")
    expert.add_argument("--resume", action="store_true", help="continue from OUT/trainer_state/ of an interrupted run")
    expert.add_argument("--backend", default="hf", metavar="NAME",
                        help="training backend: hf (default; single process, transformers model) or megatron "
                             "(megatron-core on CUDA GPUs: tensor/pipeline/data parallelism; infra/README.md)")
    add_megatron_arguments(expert)
    expert.add_argument("--quiet", action="store_true", help="no progress bar")
    expert.set_defaults(handler=_expert)


def _diagnosis(args: argparse.Namespace) -> int:
    from eval.train_diagnosis import DiagnosisTrainingConfig, train_diagnosis
    from flipmoe.errors import FlipmoeInputError
    from flipmoe.telemetry import find_incidents
    from flipmoe.toolkits.diagnose import MODEL_PATH

    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip()) if args.systems else None
    overrides = {"per_system": _counts(args.per_system) if args.per_system else None, "seed": args.seed,
                 "workers": args.workers, "systems": () if args.no_chaos else systems,
                 "incidents": tuple(Path(d) for d in args.incidents) or None,
                 "history_from_folder": args.history_from_folder or None}
    if args.no_chaos:
        overrides["per_system"] = ()
    for folder in args.incidents:  # a bad folder fails here, before minutes of simulation
        find_incidents(folder)
    if args.from_samples and (args.incidents or args.save_samples):
        raise FlipmoeInputError("--from-samples fits saved samples; it takes no --incidents or --save-samples")
    config = DiagnosisTrainingConfig(**{k: v for k, v in overrides.items() if v is not None})
    out = args.out or MODEL_PATH
    words = ["--from-samples", args.from_samples] if args.from_samples else [
        *(["--no-chaos"] if args.no_chaos else ["--per-system", ",".join(map(str, config.per_system)),
                                                "--systems", ",".join(config.systems), "--seed", str(config.seed)]),
        *(w for d in args.incidents for w in ("--incidents", d)),
        *(["--history-from-folder"] if args.history_from_folder else [])]
    command = "flipmoe train diagnosis " + " ".join(shlex.quote(w) for w in words)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.perf_counter()
    model = train_diagnosis(config, out=out, command=command, progress=progress, samples_out=args.save_samples,
                            samples_in=args.from_samples)
    cv = model.card["cross_validation"]
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s: {model.card['incidents']} incidents, "
          f"{len(model.classes)} fault types, C={cv['chosen_C']:g}, prior weight {cv['chosen_prior_weight']:g}")
    for name in ("prototypes", "learned", "combined"):
        print(f"  cross-validated {name:<10} accuracy {cv[name]['accuracy']:.3f}  macro-F1 {cv[name]['macro_f1']:.3f}")
    for system, row in cv.get("leave_one_system_out", {}).items():
        print(f"  trained without {system:<12} accuracy {row['combined']['accuracy']:.3f}  "
              f"macro-F1 {row['combined']['macro_f1']:.3f} on it")
    return 0


def _ranking(args: argparse.Namespace) -> int:
    from eval.train_ranking import train_ranking
    from flipmoe.toolkits.ranking import MODEL_FILE

    out = Path(args.out or MODEL_FILE)
    model, seconds = _train_on_labelled(args, "ranking", train_ranking, out)
    print(f"wrote {out} in {seconds:.0f} s from {model.card['incidents']} incidents "
          f"({', '.join(f'{k} {v}' for k, v in model.card['systems'].items())})")
    print(f"{'held-out system':<18} {'n':>5} {'fusion A@1':>11} {'learned A@1':>12}")
    for system, row in model.card["leave_one_system_out"].items():
        print(f"{system:<18} {row['incidents']:>5} {row['fusion_A@1']:>11.3f} {row['learned_A@1']:>12.3f}")
    cv = model.card["cross_validated"]
    if cv:
        name = f"{cv['folds']}-fold, all"
        print(f"{name:<18} {model.card['incidents']:>5} {cv['fusion_A@1']:>11.3f} {cv['learned_A@1']:>12.3f}")
    return 0


def _add_incident_arguments(parser: argparse.ArgumentParser) -> None:
    """The labelled folders `train diagnosis|ranking|gate` learn from, and how their alert history is read."""
    parser.add_argument("--incidents", action="append", default=[], metavar="DIR",
                        help="labelled incidents, or folders of them (repeatable): imported real incidents "
                             "(flipmoe import nezha|tvdiag) or your own post-mortems with a label.json each")
    parser.add_argument("--history-from-folder", action="store_true",
                        help="analyse each labelled incident with its parent folder as its alert history, as "
                             "'flipmoe rca --history FOLDER' does")


def _add_labelled_arguments(parser: argparse.ArgumentParser, *, chaos_per_system: int) -> None:
    """What `train ranking` and `train gate` learn from: labelled folders and chaos incidents."""
    _add_incident_arguments(parser)
    parser.add_argument("--chaos-per-system", type=int, default=chaos_per_system, metavar="N",
                        help=f"chaos-gym incidents per system (webshop, ticketing) to add (default {chaos_per_system}; "
                             "0: none)")
    parser.add_argument("--chaos-seed", type=int, default=100_000, metavar="S",
                        help="first chaos training seed (default 100000; benchmarks use 700000 and above)")


def _train_on_labelled(args: argparse.Namespace, what: str, train: Callable[..., _T], out: Path,
                       extra: Sequence[str] = ()) -> tuple[_T, float]:
    """`train ranking|gate`: run `train` on the labelled folders and chaos incidents `_add_labelled_arguments`
    named; (what it returned, seconds taken)."""
    import tempfile

    from eval.train_ranking import incident_dirs

    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    command = f"flipmoe train {what} " + " ".join(
        [*(f"--incidents {shlex.quote(d)}" for d in args.incidents), f"--chaos-per-system {args.chaos_per_system}",
         f"--chaos-seed {args.chaos_seed}", *(["--history-from-folder"] if args.history_from_folder else []), *extra])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        directories = incident_dirs(args.incidents) if args.incidents else []
        if args.chaos_per_system:
            directories += _chaos_dirs(Path(tmp), args.chaos_per_system, args.chaos_seed)
        result = train(directories, out=out, command=command, progress=progress,
                       history_from_folder=args.history_from_folder)
    return result, time.perf_counter() - started


def _chaos_dirs(tmp: Path, per_system: int, seed: int) -> list[Path]:
    """`per_system` chaos-gym incidents of each of webshop and ticketing, written under `tmp`."""
    from data_pipeline.chaos import generate_corpus
    from eval.train_ranking import incident_dirs

    directories: list[Path] = []
    for offset, system in enumerate(("webshop", "ticketing")):
        generate_corpus(system, per_system, seed=seed + 1000 * offset, out=tmp / system, workers=1)
        directories += incident_dirs([tmp / system])
    return directories


def _gate(args: argparse.Namespace) -> int:
    from eval.train_gate import train_gate
    from flipmoe.errors import FlipmoeInputError

    out = Path(args.out)
    if not out.parent.is_dir():
        raise FlipmoeInputError("the folder for --out does not exist", path=out.parent)
    gate, seconds = _train_on_labelled(args, "gate", train_gate, out, [f"--out {shlex.quote(args.out)}"])
    print(f"wrote {out} in {seconds:.0f} s from {gate.card['incidents']} incidents with two or "
          f"more modalities ({', '.join(f'{k} {v}' for k, v in gate.card['systems'].items())})")
    print("weights: " + ", ".join(f"bias[{m}] {b:+.2f}" for m, b in gate.bias.items()) + "; "
          + ", ".join(f"{f} {c:+.2f}" for f, c in zip(gate.features, gate.coef, strict=True)))
    cv = gate.card["cross_validated"]
    rows = {**{f"held out: {k}": v for k, v in gate.card["leave_one_system_out"].items()},
            **({f"{cv['folds']}-fold, all": cv} if cv else {}),
            "all (in-sample)": {"incidents": gate.card["incidents"], **gate.card["in_sample"]}}
    for name, row in rows.items():
        print(f"{name} ({row['incidents']} incidents), service A@1: "
              + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("incidents", "folds")))
    return 0


def _counts(text: str) -> tuple[int, ...]:
    from flipmoe.errors import FlipmoeInputError

    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise FlipmoeInputError(f"--per-system {text!r} is not a number or a comma-separated list of numbers",
                                hint="e.g. --per-system 64 or --per-system 160,96,48") from None


def _tokenizer(args: argparse.Namespace) -> int:
    from experts.build import build_tokenizer
    from experts.registry import get_spec
    from flipmoe.errors import FlipmoeInputError

    spec = get_spec(args.expert)
    if args.vocab_size is not None and args.vocab_size < 300:
        raise FlipmoeInputError(f"--vocab-size {args.vocab_size} is too small", hint="use at least 300")
    out = Path(args.out) if args.out else DEFAULT_EXPERTS_DIR / spec.family
    started = time.perf_counter()
    tokenizer = build_tokenizer(spec.family, vocab_size=args.vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    path = tokenizer.save(out)
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s: {tokenizer.vocab_size} pieces "
          f"({spec.tokenizer.model_type}, digits {'split' if spec.tokenizer.split_digits else 'kept whole'})")
    return 0


def _expert(args: argparse.Namespace) -> int:
    from flipmoe.errors import FlipmoeInputError

    if args.backend not in _BACKENDS:
        raise FlipmoeInputError(f"unknown --backend {args.backend!r}", hint=f"available: {', '.join(_BACKENDS)}")
    if args.steps is not None and args.steps < 1:
        raise FlipmoeInputError(f"--steps must be at least 1, got {args.steps}")
    if args.backend == "megatron":
        from experts.megatron.cli import train_expert_megatron

        return int(train_expert_megatron(args))
    from experts.build import build_default_experts, build_expert, train_config
    from experts.registry import EXPERT_FAMILIES, get_spec

    train = {"steps": args.steps} if args.steps is not None else None
    train_config(args.preset, train)  # a bad preset fails before any data is built
    started = time.perf_counter()
    if args.expert == "all":
        out = Path(args.out) if args.out else DEFAULT_EXPERTS_DIR
        experts = build_default_experts(out, preset=args.preset, train=train, resume=args.resume,
                                        progress=not args.quiet)
        dirs = {name: out / name for name in EXPERT_FAMILIES}
    else:
        family = get_spec(args.expert).family
        out = Path(args.out) if args.out else DEFAULT_EXPERTS_DIR / family
        experts = {family: build_expert(family, out_dir=out, preset=args.preset, train=train, resume=args.resume,
                                        progress=not args.quiet)}
        dirs = {family: out}
    for name, expert in experts.items():
        card = expert.card
        scores = card["scores"]
        print(f"wrote {dirs[name]} in {card['wall_s']:.0f} s: {card['parameters']:,} parameters, "
              f"{card['training']['steps']} steps, {card['training']['tokens_seen']:,} tokens "
              f"({card['training']['tokens_per_s']:,} tok/s), final loss {card['training']['final_loss']:.3f}")
        for task, value in scores["expert"].items():
            print(f"  {task:<22} expert {value:.3f}  untrained {scores['untrained'].get(task, float('nan')):.3f}  "
                  f"rule {scores['rule'].get(task, float('nan')):.3f}")
    if len(experts) > 1:
        print(f"built {len(experts)} experts in {time.perf_counter() - started:.0f} s")
    return 0
