"""`flipmoe rca INCIDENT_DIR...`: the Director, one RCA report per incident.

Several incidents (or `--address`, or `--ray`) run on Ray: it starts once (locally, or `--address` joins a
cluster) and stays warm for every incident of the call. A single incident runs the same Director, runbooks
and actors in this process (`use_ray`), because a local Ray takes longer to start than the analysis. Each
incident gets `<out>/<id>/report.json`, `report.md` and `report.html`, and a short text summary on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

DEFAULT_OUT = "flipmoe-reports"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rca", help="analyse incidents: ranked root causes, evidence, fault type, RCA report",
        description="Analyse one or more incident directories (or directories of them) with the Director: it "
                    "picks a runbook, runs its steps as Ray tasks, back-tracks between hypotheses and writes "
                    "report.json, report.md and report.html per incident. label.json is never read.")
    parser.add_argument("incidents", nargs="+", metavar="INCIDENT_DIR",
                        help="incident directories, or directories holding incident directories")
    add_runtime_arguments(parser)
    parser.add_argument("--top", type=int, default=5, help="root causes to show (default 5)")
    parser.add_argument("--json", action="store_true", help="print each report as one JSON line")
    parser.set_defaults(handler=_run)


def add_runtime_arguments(parser: argparse.ArgumentParser, *, default_out: str = DEFAULT_OUT) -> None:
    """Options `rca` and `demo` share."""
    parser.add_argument("--out", default=default_out, help=f"reports go to OUT/<incident id>/ (default {default_out})")
    parser.add_argument("--address", help="join the Ray cluster at ADDR instead of starting a local Ray")
    parser.add_argument("--workers", type=int, default=None, help="CPUs of the local Ray (default: all cores)")
    parser.add_argument("--local", action="store_true", help="run the steps in this process, without Ray (the "
                                                             "default for a single incident)")
    parser.add_argument("--ray", action="store_true", help="run the steps as Ray tasks even for a single incident "
                                                           "(the default for several incidents and with --address)")
    parser.add_argument("--bundle", help="FlipMoE model bundle directory (default: $FLIPMOE_BUNDLE, the packaged "
                                         "or the cached one, if any)")
    parser.add_argument("--no-model", action="store_true", help="use no model: template summaries only")
    parser.add_argument("--remote", metavar="URL", help="OpenAI-compatible endpoint that drives the explorer")
    parser.add_argument("--remote-model", default="default", help="model name for --remote")
    parser.add_argument("--runbook", help="a runbook template name or a .flow file, instead of retrieval")
    add_history_argument(parser)
    add_model_arguments(parser)
    parser.add_argument("--generate-runbook", action="store_true",
                        help="let the bundle's code expert write the runbook under the DSL grammar (validated; the "
                             "knowledge base's template when it fails)")


def add_history_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--history", metavar="DIR",
                        help="past incidents of the same system (alert events read, labels never): alerts that fire "
                             "in many of them count for less than rare ones")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--diagnosis-model, --ranking-model and --gate: models fitted to a system's own labelled incidents."""
    parser.add_argument("--diagnosis-model", metavar="FILE",
                        help="a fault-type model written by 'flipmoe train diagnosis --out FILE', e.g. one fitted "
                             "to your system's labelled incidents (default: the shipped one)")
    parser.add_argument("--ranking-model", metavar="FILE",
                        help="a ranking of root-cause candidates written by 'flipmoe train ranking --out FILE', "
                             "e.g. one fitted to your system's labelled incidents (default: the fusion's order)")
    parser.add_argument("--gate", metavar="FILE",
                        help="weights of each modality's evidence in the ranking, written by 'flipmoe train gate "
                             "--out FILE', e.g. fitted to your system's labelled incidents (default: the entropy "
                             "rule)")


class ModelPaths(TypedDict):
    """The `RunSettings` fields of --diagnosis-model, --ranking-model and --gate."""

    diagnosis_model: Path | None
    ranking_model: Path | None
    gate: Path | None


def model_paths(args: argparse.Namespace) -> ModelPaths:
    """--diagnosis-model, --ranking-model and --gate, each file checked before anything slow starts (a bad one is
    one line and exit 2) and resolved (the steps may run in Ray workers with another working directory)."""
    from flipmoe.toolkits import diagnose, ranking
    from router.gate import read_gate

    def checked(given: str | None, read: Any) -> Path | None:
        if given is None:
            return None
        read(given)
        return Path(given).resolve()

    return ModelPaths(diagnosis_model=checked(getattr(args, "diagnosis_model", None), diagnose.read_model),
                      ranking_model=checked(getattr(args, "ranking_model", None), ranking.read_model),
                      gate=checked(getattr(args, "gate", None), read_gate))


def history_path(args: argparse.Namespace) -> Path | None:
    """`--history` checked before anything slow starts (a bad folder is one line and exit 2)."""
    from flipmoe.toolkits.events import load_alert_history

    if getattr(args, "history", None) is None:
        return None
    load_alert_history(args.history)
    return Path(args.history).resolve()  # the steps may run in Ray workers with another working directory


def _run(args: argparse.Namespace) -> int:
    from flipmoe.errors import FlipmoeInputError
    from flipmoe.telemetry import find_incidents

    directories: list[Path] = []
    code = 0
    for path in args.incidents:  # a bad path is reported; the others are still analysed
        try:
            directories += find_incidents(path)
        except FlipmoeInputError as err:
            print(f"flipmoe: error: {err}", file=sys.stderr)
            code = 2
    if not directories:
        return code or 2
    bundle = find_bundle(args, build=False)
    return max(code, run_director(directories, args, bundle=bundle))


def find_bundle(args: argparse.Namespace, *, build: bool) -> Path | None:
    """The bundle the run may use: --bundle, else the default one; with `build`, build it when missing."""
    if args.no_model:
        return None
    try:
        from router import bundle as bundles
    except ImportError:
        return None
    if args.bundle:
        return bundles.ensure_bundle(args.bundle, progress=True)
    present = os.environ.get(bundles.BUNDLE_ENV) or bundles.packaged_bundle() or \
        bundles.is_bundle(bundles.cache_dir() / "nano")
    if not present and not build:
        return None
    try:
        return bundles.ensure_bundle(progress=True)
    except Exception as err:  # the model is optional: the report is written without it
        print(f"flipmoe: no model bundle ({type(err).__name__}: {err}); continuing without the model",
              file=sys.stderr)
        return None


def run_director(directories: list[Path], args: argparse.Namespace, *, bundle: Path | None) -> int:
    """Analyse every directory in one runtime; returns the exit code (2 when an incident was unreadable)."""
    from director.actors.base import RunSettings
    from director.director import Director
    from director.runtime import LocalExecutor, RayExecutor, start_ray
    from flipmoe.errors import FlipmoeInputError
    from flipmoe.telemetry import read_incident
    from flipmoe.telemetry.incident import Incident

    settings = RunSettings(bundle=bundle, remote_url=args.remote, remote_model=args.remote_model, top=args.top,
                           history=history_path(args), **model_paths(args))
    # Read (and so validate) the first incident before anything slow starts: a bad file is reported at once.
    first: Incident | None = None
    code = 0
    while directories and first is None:
        try:
            first = read_incident(directories[0], config=args.config_obj.telemetry)
        except FlipmoeInputError as err:
            print(f"flipmoe: error: {err}", file=sys.stderr)
            code = 2
            directories = directories[1:]
    if first is None:
        return code
    if args.runbook:  # a bad --runbook is reported before Ray starts
        from director.director import forced_plan

        forced_plan(args.runbook)
    started_ray = False
    if use_ray(args, len(directories)):
        import ray

        if not ray.is_initialized():
            _progress(f"starting Ray ({'cluster ' + args.address if args.address else 'local'})...")
            start = time.perf_counter()
            start_ray(address=args.address, num_cpus=args.workers)
            started_ray = True
            _progress(f"Ray ready in {time.perf_counter() - start:.1f} s")
        executor: Any = RayExecutor()
    else:
        executor = LocalExecutor()
    generator = None
    if args.generate_runbook and bundle is not None:
        from director.director import expert_runbook_generator

        generator = expert_runbook_generator(bundle)
    director = Director(executor, settings=settings, runbook=args.runbook, generator=generator)
    try:
        for position, directory in enumerate(directories, start=1):
            prefix = f"[{position}/{len(directories)}] {directory.name}"
            try:
                incident = first if position == 1 else read_incident(directory, config=args.config_obj.telemetry)
            except FlipmoeInputError as err:
                print(f"flipmoe: error: {err}", file=sys.stderr)
                code = 2
                continue
            _progress(f"{prefix}: analysing ({', '.join(incident.modalities) or 'no telemetry'})...")
            result = director.analyse(incident)
            paths = write(result, incident, Path(args.out) / incident.id)
            if args.json:
                print(result.model_dump_json())
            else:
                print_summary(result)
            _progress(f"{prefix}: {result.timings_s.get('total', 0.0):.1f} s, runbook {result.runbook.name}; "
                      f"report: {paths.get('html', paths['json'])}")
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    return code


def use_ray(args: argparse.Namespace, incidents: int) -> bool:
    """Where the steps run. Starting a local Ray costs more than analysing one incident (cold, 10.9 s with
    --ray vs 3.5 s in-process on two cores, benchmarks/bench_rca.py),
    so one incident runs in this process (the same runbook, actors and report) unless --ray or --address
    asks for Ray; several incidents share one warm Ray."""
    if args.local:
        return False
    return bool(args.ray or args.address or incidents > 1)


def write(result: Any, incident: Any, out_dir: Path) -> dict[str, Path]:
    """report.json, .md and .html (the renderers); report.json alone when the renderers fail."""
    try:
        from director.render import write_report

        return write_report(result, incident, out_dir)
    except Exception as err:  # a broken renderer must not lose the analysis
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "report.json"
        path.write_text(result.to_json() + "\n", encoding="utf-8")
        print(f"flipmoe: could not render report.md/.html ({type(err).__name__}: {err}); wrote {path}",
              file=sys.stderr)
        return {"json": path}


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def print_summary(result: Any) -> None:
    print(f"incident {result.incident}: {result.alert}")
    for cause in result.root_causes:
        where = " / ".join(x for x in (cause.service, cause.pod, cause.node) if x)
        verified = {True: ", verified", False: ", no supporting evidence", None: ""}[cause.verified]
        print(f"  {cause.rank}. {where}  (score {cause.score:.2f}{verified})")
        for item in cause.evidence[:3]:
            print(f"       - [{item.modality}] {item.summary}")
    top = result.root_causes[0] if result.root_causes else None
    if top is not None and top.fault_type:
        print(f"  fault type: {top.fault_type} (confidence {top.fault_type_confidence:.2f})")
    print(f"  summary: {result.summary}")
    for gap in result.gaps[:6]:
        print(f"  gap: {gap.what}: {gap.reason}")
    print(f"  analysed in {result.timings_s.get('total', 0.0):.2f} s with runbook {result.runbook.name} "
          f"({result.runbook.backtracks} back-tracks) using {', '.join(result.modalities_used) or 'nothing'}")

