"""The model bundle: the experts, the router, and a card, in one directory (DESIGN.md, "Model bundle").

```
<bundle>/
  bundle.json        name, preset, experts {name: {kind, path | endpoint...}}, router path, created,
                     the data it was built from, and the commands that rebuild it
  experts/<name>/    one self-describing expert checkpoint each (`Expert.from_checkpoint`)
  router/            the router checkpoint (`Router.load`)
  card.json          what is inside: parameters, data, expert scores, routing figures, build time
  CARD.md            the same for people
```

`build_bundle` runs the whole chain on the project's own data — task data from the chaos gym and the
shared data sets, each expert's tokenizer and decoder, the router on the experts' held-out answers, the
evaluation — and `ensure_bundle` finds the bundle a command should use, building the default one on
first use. A remote expert is an entry `{"kind": "remote", "base_url": ..., "model": ...}` in
`bundle.json`; it is routed to like the local ones once a router is trained with it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipmoe.config import cache_home
from flipmoe.errors import FlipmoeInputError

if TYPE_CHECKING:
    from experts.sources import Sources

BUNDLE_FILE, CARD_JSON, CARD_MD = "bundle.json", "card.json", "CARD.md"
ROUTER_DIR, EXPERTS_DIR, DETECTORS_DIR = "router", "experts", "detectors"
BUNDLE_ENV = "FLIPMOE_BUNDLE"
"""Environment variable naming the bundle commands use when none is given."""
FORMAT = 1
# The nano bundle ships as package data of `flipmoe` (flipmoe/bundles/), found without importing it.
_PACKAGED = Path(str(importlib.util.find_spec("flipmoe").origin)).parent / "bundles"  # type: ignore[union-attr]
Progress = Callable[[str], None]


@dataclass(kw_only=True, frozen=True)
class BundleConfig:
    """How much a bundle build does; the defaults are the nano bundle (at most 20 minutes on 2 cores)."""

    preset: str = "nano"
    """Decoder preset of every expert (`experts.config.MODEL_PRESETS`)."""
    expert_steps: int | None = None
    """Optimizer steps per expert; None keeps each family's default for the preset."""
    detector_steps: int = 800
    """Optimizer steps of the metrics expert's value model (`experts.metrics.detector`)."""
    router_requests_per_task: int = 48
    """Held-out requests per task that every expert answers for the oracle labels (half train the router,
    half evaluate it)."""
    test_fraction: float = 0.5
    """Share of the labelled requests kept for evaluation, never seen by the router's fit."""
    max_new_tokens: int = 96
    """Longest answer generated for the oracle labels and the evaluation."""
    train_incidents: int | None = None
    """Chaos incidents of the training split (None: the `experts.sources.Sources` default)."""
    heldout_incidents: int | None = None
    """Chaos incidents of the held-out split (None: the `experts.sources.Sources` default)."""

    def __post_init__(self) -> None:
        if self.expert_steps is not None and self.expert_steps < 1:
            raise FlipmoeInputError("expert_steps must be at least 1")
        if self.router_requests_per_task < 2 or not 0 < self.test_fraction < 1:
            raise FlipmoeInputError("router_requests_per_task must be >= 2 and test_fraction in (0, 1)")

    def command(self, out: str | Path) -> str:
        """The `flipmoe bundle build` line that rebuilds a bundle with this config."""
        flags = [f"--preset {self.preset}", f"--out {out}"]
        defaults = BundleConfig(preset=self.preset)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "preset" and value != getattr(defaults, f.name):
                flags.append(f"--{f.name.replace('_', '-')} {value}")
        return "flipmoe bundle build " + " ".join(flags)


# -- finding a bundle ----------------------------------------------------------------------------


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()


def packaged_bundle(preset: str = "nano") -> Path | None:
    """The bundle shipped inside the package, if this installation has one."""
    path = _PACKAGED / preset
    return path if is_bundle(path) else None


def cache_dir() -> Path:
    """Where bundles built on first use go: `$XDG_CACHE_HOME/flipmoe/bundles` (default `~/.cache`)."""
    return cache_home() / "bundles"


def ensure_bundle(path: str | Path | None = None, *, preset: str = "nano", progress: bool = True) -> Path:
    """The bundle to use: `path`, else `$FLIPMOE_BUNDLE`, else the packaged one, else the user cache's,
    which is built there on first use (and says so)."""
    explicit = path if path is not None else os.environ.get(BUNDLE_ENV) or None
    if explicit is not None:
        explicit = Path(explicit).expanduser()
        if not is_bundle(explicit):
            source = "" if path is not None else f" (from ${BUNDLE_ENV})"
            raise FlipmoeInputError(f"not a model bundle{source}: no {BUNDLE_FILE}", path=explicit,
                                    hint=f"build one with 'flipmoe bundle build --preset {preset} --out {explicit}'")
        return explicit
    shipped = packaged_bundle(preset)
    if shipped is not None:
        return shipped
    cached = cache_dir() / preset
    if is_bundle(cached):
        return cached
    _say(progress, f"flipmoe: no model bundle found; building the {preset} bundle into {cached} "
                   f"(once; about 15 minutes on 2 idle CPU cores, longer on a busy machine; "
                   f"set ${BUNDLE_ENV} or pass --bundle to use another)")
    return build_bundle(cached, config=BundleConfig(preset=preset), progress=progress)


# -- reading -------------------------------------------------------------------------------------


def read_manifest(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    try:
        manifest = json.loads((directory / BUNDLE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlipmoeInputError(f"not a model bundle: no {BUNDLE_FILE}", path=directory,
                                hint="build one with 'flipmoe bundle build'") from None
    except json.JSONDecodeError as err:
        raise FlipmoeInputError(f"{BUNDLE_FILE} is not valid JSON: {err}", path=directory) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("experts"), dict) or not manifest["experts"]:
        raise FlipmoeInputError(f"{BUNDLE_FILE} names no experts", path=directory)
    return manifest


def load_experts(directory: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """The bundle's experts by name: local checkpoints loaded, remote entries wrapped."""
    manifest = read_manifest(directory)
    return {name: load_expert(directory, name, manifest=manifest, device=device) for name in manifest["experts"]}


def load_expert(directory: str | Path, name: str, *, manifest: Mapping[str, Any] | None = None,
                device: str = "cpu") -> Any:
    """One of the bundle's experts: its checkpoint loaded, or its remote entry wrapped.

    Serving loads experts one at a time, on first use, through this (`manifest` spares re-reading bundle.json).
    """
    directory = Path(directory)
    entries = (manifest if manifest is not None else read_manifest(directory))["experts"]
    if name not in entries:
        raise FlipmoeInputError(f"the bundle has no expert {name!r}", path=directory / BUNDLE_FILE,
                                hint=f"choose one of {', '.join(entries)}")
    entry = entries[name]
    kind = entry.get("kind", "local")
    if kind == "local":
        from experts.expert import Expert

        return Expert.from_checkpoint(directory / entry["path"], device=device)
    if kind == "remote":
        return _remote_expert(name, entry)
    raise FlipmoeInputError(f"expert {name!r} has unknown kind {kind!r}", path=directory / BUNDLE_FILE,
                            hint="use 'local' or 'remote'")


def load_router(directory: str | Path, *, manifest: Mapping[str, Any] | None = None) -> Any:
    """The bundle's router (`router.model.Router`)."""
    from router.model import Router

    directory = Path(directory)
    manifest = manifest if manifest is not None else read_manifest(directory)
    return Router.load(directory / manifest.get("router", ROUTER_DIR))


def load_bundle(directory: str | Path, *, device: str = "cpu") -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """(experts, router, manifest) of a bundle."""
    manifest = read_manifest(directory)
    return load_experts(directory, device=device), load_router(directory, manifest=manifest), manifest


def _remote_expert(name: str, entry: Mapping[str, Any]) -> Any:
    from experts.remote import RemoteExpert

    options = {k: v for k, v in entry.items() if k not in ("kind", "path")}
    try:
        return RemoteExpert(name=name, **options)
    except TypeError as err:
        raise FlipmoeInputError(f"remote expert {name!r}: {err}", hint="see experts.remote.RemoteExpert") from None


# -- building ------------------------------------------------------------------------------------


def build_bundle(out_dir: str | Path, *, preset: str = "nano", config: BundleConfig | None = None,
                 sources: Sources | None = None, progress: bool = True, overwrite: bool = False) -> Path:
    """Build a bundle from scratch into `out_dir`: data, experts, router, evaluation, card.

    It is assembled in a sibling `.partial` directory and renamed into place at the end, so an
    interrupted build never leaves something that looks like a bundle.
    """
    from experts.sources import Sources

    config = config or BundleConfig(preset=preset)
    given = Path(out_dir)  # as the user wrote it: the card's rebuild commands stay valid where the bundle moves
    out_dir = given.expanduser().resolve()
    if out_dir.exists() and not overwrite:
        raise FlipmoeInputError("output directory exists", path=out_dir,
                                hint="remove it or pass --overwrite")
    say = _printer(progress)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if sources is None:
        counts: dict[str, Any] = {"train_incidents": config.train_incidents,
                                  "heldout_incidents": config.heldout_incidents}
        sources = Sources(**{k: v for k, v in counts.items() if v is not None})
    work = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    say(f"[1/4] experts ({config.preset}): data, tokenizers, decoders")
    experts = _build_experts(work / EXPERTS_DIR, config=config, sources=sources, progress=progress)
    _drop_resume_state(work / EXPERTS_DIR)
    timings["experts_s"] = time.perf_counter() - started

    say("      metrics detector: the value model on the chaos series")
    t0 = time.perf_counter()
    detectors = {"metrics": train_metrics_detector(work / DETECTORS_DIR / "metrics", sources=sources,
                                                   steps=config.detector_steps, preset=config.preset)}
    timings["detectors_s"] = time.perf_counter() - t0

    say("[2/4] held-out requests for the router")
    t0 = time.perf_counter()
    examples = heldout_requests(sources, per_task=config.router_requests_per_task)
    references = training_answers(sources)
    timings["heldout_data_s"] = time.perf_counter() - t0
    say(f"      {len(examples)} requests over {len({e.task for e in examples})} tasks")

    say("[3/4] router: oracle labels from the frozen experts, then the classifier")
    t0 = time.perf_counter()
    router, test_records = _train_router(experts, examples, references, config=config, say=say)
    router.save(work / ROUTER_DIR)
    timings["router_s"] = time.perf_counter() - t0

    say("[4/4] evaluation on the router's held-out half")
    t0 = time.perf_counter()
    evaluation = evaluate(experts, router, test_records, references=references,
                          max_new_tokens=config.max_new_tokens)
    timings["evaluation_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    manifest = {
        "format": FORMAT,
        "name": f"flipmoe-{config.preset}",
        "preset": config.preset,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "experts": {name: {"kind": "local", "path": f"{EXPERTS_DIR}/{name}", "family": e.config.family,
                           "tasks": list(e.config.tasks), "parameters": e.num_parameters()}
                    for name, e in experts.items()},
        "router": ROUTER_DIR,
        "detectors": detectors,
        "config": asdict(config),
        "data": sources.describe(),
        "commands": {"build": config.command(given), "router": f"flipmoe train router --bundle {given}"},
    }
    card = _card(manifest, experts, router, evaluation, timings)
    _write_json(work / BUNDLE_FILE, manifest)
    _write_json(work / CARD_JSON, card)
    (work / CARD_MD).write_text(render_card(card), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work.rename(out_dir)
    say(f"bundle ready: {out_dir} ({timings['total_s'] / 60:.1f} min)")
    return out_dir


def retrain_router(directory: str | Path, *, config: BundleConfig | None = None, progress: bool = True) -> Path:
    """Train the router of an existing bundle again from its (frozen) experts, and refresh its card."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    config = config or BundleConfig(**{k: v for k, v in manifest.get("config", {}).items()
                                       if k in {f.name for f in fields(BundleConfig)}})
    say = _printer(progress)
    experts = load_experts(directory)
    sources = sources_of(manifest)
    started = time.perf_counter()
    examples = heldout_requests(sources, per_task=config.router_requests_per_task)
    references = training_answers(sources)
    router, test_records = _train_router(experts, examples, references, config=config, say=say)
    shutil.rmtree(directory / ROUTER_DIR, ignore_errors=True)
    router.save(directory / ROUTER_DIR)
    evaluation = evaluate(experts, router, test_records, references=references,
                          max_new_tokens=config.max_new_tokens)
    previous = json.loads((directory / CARD_JSON).read_text()) if (directory / CARD_JSON).is_file() else {}
    timings = {**previous.get("timings", {}), "router_s": time.perf_counter() - started}
    card = _card(manifest, experts, router, evaluation, timings)
    _write_json(directory / CARD_JSON, card)
    (directory / CARD_MD).write_text(render_card(card), encoding="utf-8")
    say(f"router retrained: {directory / ROUTER_DIR}")
    return directory / ROUTER_DIR


DETECTOR_SYSTEMS = ("webshop", "random", "ticketing")
"""Chaos systems the metrics detector learns from: every naming scheme and scale of the simulator."""


def train_metrics_detector(out: Path, *, sources: Sources, steps: int, preset: str = "nano",
                           incidents: int = 48) -> dict[str, Any]:
    """Train the metrics expert's value model on every series of `incidents` chaos training incidents (the
    training seeds of `sources`, over `DETECTOR_SYSTEMS`) and save it to `out`; its manifest entry."""
    import dataclasses

    from experts.metrics.corpus import value_series
    from experts.metrics.detector import MetricsDetector

    data = dataclasses.replace(sources, train_incidents=incidents, systems=DETECTOR_SYSTEMS)
    series = value_series(data)
    detector = MetricsDetector.fresh(preset=preset)
    run = detector.train(series, steps=steps, seed=sources.seed)
    detector.card = {"model": "value-token causal decoder (experts.metrics.detector)", "preset": preset,
                     "parameters": detector.parameters, "training": run,
                     "data": {"chaos_systems": list(DETECTOR_SYSTEMS), "chaos_train_incidents": incidents,
                              "first_seed": sources.seed}}
    detector.save(out)
    return {"path": f"{DETECTORS_DIR}/{out.name}", "parameters": detector.parameters}


def add_metrics_detector(directory: str | Path, *, steps: int = BundleConfig().detector_steps,
                         incidents: int = 48) -> Path:
    """Train the metrics detector into an existing bundle (replacing one it has) and record it in bundle.json."""
    from experts.config import MODEL_PRESETS

    directory = Path(directory)
    manifest = read_manifest(directory)
    preset = str(manifest.get("preset", "nano"))
    entry = train_metrics_detector(directory / DETECTORS_DIR / "metrics", sources=sources_of(manifest),
                                   steps=steps, preset=preset if preset in MODEL_PRESETS else "nano",
                                   incidents=incidents)
    manifest["detectors"] = {**manifest.get("detectors", {}), "metrics": entry}
    _write_json(directory / BUNDLE_FILE, manifest)
    return directory / entry["path"]


def detector_path(directory: str | Path, modality: str) -> Path:
    """The checkpoint directory of the bundle's detector for `modality`."""
    manifest = read_manifest(directory)
    detectors = manifest.get("detectors")
    entry = detectors.get(modality) if isinstance(detectors, dict) else None
    if not isinstance(entry, dict) or "path" not in entry:
        raise FlipmoeInputError(f"the bundle has no {modality} detector", path=directory,
                                hint=f"add one with 'flipmoe train detector --bundle {directory}'")
    root = Path(directory).resolve()
    path = (root / str(entry["path"])).resolve()
    if not path.is_relative_to(root):
        raise FlipmoeInputError(f"bundle.json puts the {modality} detector outside the bundle", path=directory)
    return path


def sources_of(manifest: Mapping[str, Any]) -> Sources:
    """The `experts.sources.Sources` a bundle was built from (its recorded settings; shared data found as usual)."""
    from experts.sources import Sources

    names = {f.name for f in fields(Sources)} - {"shared_data", "loghub"}
    recorded: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                for k, v in manifest.get("data", {}).items() if k in names}
    return Sources(**recorded)


def _build_experts(directory: Path, *, config: BundleConfig, sources: Sources, progress: bool) -> dict[str, Any]:
    from experts.build import build_default_experts

    train = {"steps": config.expert_steps} if config.expert_steps is not None else None
    return dict(build_default_experts(directory, preset=config.preset, sources=sources, train=train,
                                      progress=progress))


def _drop_resume_state(experts_dir: Path) -> None:
    """A bundle is a finished artifact: the optimizer state kept to resume training (3x the weights) goes."""
    from experts.trainer import STATE_DIR

    for state in experts_dir.glob(f"*/{STATE_DIR}"):
        shutil.rmtree(state)


def heldout_requests(sources: Any, *, per_task: int, families: Sequence[str] | None = None) -> list[Any]:
    """Up to `per_task` held-out examples of every task of every family (spread over each task's list)."""
    from experts.registry import EXPERT_FAMILIES, get_spec

    examples = []
    for family in families or tuple(EXPERT_FAMILIES):
        for _task, items in sorted(get_spec(family).task_data(sources, "heldout").items()):
            step = max(1, len(items) // per_task)
            examples.extend(items[::step][:per_task])
    return examples


def training_answers(sources: Any, *, families: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Task -> the answers of its training split (they size each task's answer budget)."""
    from experts.registry import EXPERT_FAMILIES, get_spec

    return {task: [e.target for e in items]
            for family in families or tuple(EXPERT_FAMILIES)
            for task, items in get_spec(family).task_data(sources, "train").items()}


def _train_router(experts: Mapping[str, Any], examples: Sequence[Any], references: Mapping[str, Sequence[str]], *,
                  config: BundleConfig, say: Progress) -> tuple[Any, list[Any]]:
    from router.oracle import label_requests, split_records
    from router.train import fit_router

    records = label_requests(experts, examples, references=references, max_new_tokens=config.max_new_tokens,
                             progress=say)
    train, test = split_records(records, test_fraction=config.test_fraction)
    router = fit_router(train, tuple(experts), progress=say)
    router.card["test_requests"] = len(test)
    return router, test


def evaluate(experts: Mapping[str, Any], router: Any, records: Sequence[Any], *,
             references: Mapping[str, Sequence[str]], max_new_tokens: int) -> dict[str, Any]:
    """Routing figures and per-task scores of FlipMoE (end to end), each expert, and each routing policy."""
    from router.moe import FlipMoE
    from router.oracle import default_scorer
    from router.train import per_task_scores, routing_figures, task_owners

    if not records:
        return {}
    scorer = default_scorer()
    figures = routing_figures(router, records, owners=task_owners(experts), scorer=scorer)
    moe = FlipMoE(experts, router)
    outputs = moe_answers(moe, records, references=references, max_new_tokens=max_new_tokens)
    figures["task_scores"]["flipmoe"] = per_task_scores(records, [o.text for o in outputs], scorer)
    figures["flipmoe_ensembled"] = sum(bool(o.candidates) for o in outputs)
    return figures


def moe_answers(moe: Any, records: Sequence[Any], *, references: Mapping[str, Sequence[str]],
                max_new_tokens: int, ensemble: bool = True) -> list[Any]:
    """FlipMoE's answers to `records`, one call per task with that task's answer budget."""
    from router.oracle import task_budgets

    budgets = task_budgets(moe.experts, references, cap=max_new_tokens)
    outputs: list[Any] = [None] * len(records)
    by_task: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_task.setdefault(record.example.task, []).append(i)
    for task, indices in by_task.items():
        budget = budgets.get(task, max_new_tokens)
        outs = moe.generate_batch([records[i].example.input for i in indices], [task] * len(indices),
                                  max_new_tokens=budget, ensemble=ensemble)
        for i, out in zip(indices, outs, strict=True):
            outputs[i] = out
    return outputs


# -- card ----------------------------------------------------------------------------------------


def _card(manifest: Mapping[str, Any], experts: Mapping[str, Any], router: Any, evaluation: Mapping[str, Any],
          timings: Mapping[str, float]) -> dict[str, Any]:
    return {
        "name": manifest["name"],
        "preset": manifest["preset"],
        "created": manifest["created"],
        "parameters": {name: e.num_parameters() for name, e in experts.items() if hasattr(e, "num_parameters")},
        "experts": {name: _expert_summary(getattr(e, "card", {})) for name, e in experts.items()},
        "router": {k: router.card[k] for k in ("requests", "label_counts", "chosen_C", "temperature",
                                               "cross_validated", "test_requests") if k in router.card},
        "evaluation": dict(evaluation),
        "data": manifest.get("data", {}),
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "commands": manifest.get("commands", {}),
    }


def _expert_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an expert's training card the bundle card repeats."""
    training, scores = card.get("training", {}), card.get("scores", {})
    return {"objective": card.get("objective"), "vocab_size": card.get("vocab_size"),
            "steps": training.get("steps"), "tokens_seen": training.get("tokens_seen"),
            "final_loss": training.get("final_loss"), "heldout_loss": training.get("heldout_loss"),
            "wall_s": card.get("wall_s"), "scores": scores}


def render_card(card: Mapping[str, Any]) -> str:
    """CARD.md: the bundle card for people."""
    lines = [f"# {card['name']}", "", f"Built {card['created']} (preset `{card['preset']}`).", "", "## Experts", "",
             "| expert | parameters | steps | tokens seen | final loss | build (s) |", "|---|---:|---:|---:|---:|---:|"]
    for name, n_params in card["parameters"].items():
        info = card["experts"].get(name, {})
        loss = info.get("final_loss")
        lines.append(f"| {name} | {n_params:,} | {info.get('steps') or ''} | {info.get('tokens_seen') or ''} | "
                     f"{f'{loss:.3f}' if isinstance(loss, (int, float)) else ''} | {info.get('wall_s') or ''} |")
    router = card.get("router", {})
    cv = router.get("cross_validated", {})
    lines += ["", "## Router", "",
              f"Trained on {router.get('requests', 0)} held-out requests labelled by the experts "
              f"({router.get('label_counts', {})}); temperature {router.get('temperature', 1):.3f}; "
              f"cross-validated accuracy {cv.get('accuracy', 0):.3f}, ECE {cv.get('ece', 0):.3f}."]
    evaluation = card.get("evaluation", {})
    if evaluation:
        acc = evaluation["accuracy"]
        lines += ["", f"## Evaluation ({evaluation['requests']} held-out requests the router never saw)", "",
                  "Routing accuracy against the oracle: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
                  + f"; ECE {evaluation['ece']:.3f}.", ""]
        scores = evaluation["task_scores"]
        columns = ["flipmoe", "router", "task_label", "random", "oracle",
                   *[c for c in scores if c.startswith("expert:")]]
        tasks = sorted(scores["oracle"])
        lines += ["| task | " + " | ".join(columns) + " |", "|---" + "|---:" * len(columns) + "|"]
        for task in tasks:
            lines.append(f"| {task} | " + " | ".join(f"{scores[c].get(task, 0):.3f}" for c in columns) + " |")
    lines += ["", "## Data", "", "```", json.dumps(card.get("data", {}), indent=2), "```", "",
              "## Rebuild", ""]
    lines += [f"    {command}" for command in card.get("commands", {}).values()]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in card.get("timings", {}).items()), ""]
    return "\n".join(lines)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def _printer(progress: bool) -> Progress:
    started = time.perf_counter()

    def say(line: str) -> None:
        if progress:
            elapsed = time.perf_counter() - started
            print(f"[{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {line}", file=sys.stderr, flush=True)

    return say


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)


__all__ = ["BundleConfig", "build_bundle", "ensure_bundle", "load_bundle", "load_expert", "load_experts",
           "load_router", "read_manifest", "retrain_router"]


@functools.lru_cache(maxsize=16)
def _reading_limits(expert_dir: str, _mtime_ns: int) -> tuple[tuple[str, ...], int, Any]:
    """(tasks, context length, tokenizer) of a local expert checkpoint. Cached by path and modification time:
    `rca` asks for every incident, and re-reading the sentencepiece model each time is the slow part."""
    import yaml

    from data_pipeline.tokenizer import TOKENIZER_FILE, Tokenizer

    config = yaml.safe_load((Path(expert_dir) / "config.yaml").read_text(encoding="utf-8"))
    return (tuple(config.get("tasks", [])), int(config["model"]["max_seq_len"]),
            Tokenizer.load(Path(expert_dir) / TOKENIZER_FILE))


def context_shortfall(directory: str | Path, text: str, *, new_tokens: int, expert: str | None = None,
                      task: str | None = None) -> str | None:
    """Why a bundle's local expert cannot read `text` and write `new_tokens` more, or None when one can.

    The expert is `expert`, else every local expert whose config lists `task`; the check reads only their
    config and tokenizer (no weights, no torch), so a model whose context would truncate the prompt is
    never loaded for it. A remote expert is assumed to fit when no local one answers."""
    directory = Path(directory)
    entries = read_manifest(directory)["experts"]
    names = [expert] if expert is not None else list(entries)
    reasons = []
    remote = False
    for name in names:
        entry = entries.get(name)
        if entry is None:
            continue
        if entry.get("kind", "local") != "local":
            remote = True  # a remote model's context is its server's business; its tasks are unknown here
            continue
        tasks, context, tokenizer = _reading_limits(str(directory / entry["path"]),
                                                    (directory / entry["path"] / "config.yaml").stat().st_mtime_ns)
        if task is not None and expert is None and task not in tasks:
            continue
        needed = len(tokenizer.encode(text)) + new_tokens
        if needed <= context:
            return None
        reasons.append(f"the {name} expert reads {context} tokens; this needs {needed}")
    if reasons:
        return "; ".join(reasons)
    return None if remote else f"no expert of the bundle answers {task or expert}"
