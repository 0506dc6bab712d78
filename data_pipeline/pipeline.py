"""`flipmoe data build`: sources -> documents -> filters -> dedup -> contamination -> balance -> shards.

```
read (per task)        sources.read_task / load_incident      documents, and grounded instructions
prepare (per batch)    tag modality, filters, relevance,      a reason per removed document; content
                       quality, MinHash signatures            hash and signatures of the rest
exact dedup            first occurrence of each hash          global, over hashes only
near dedup             MinHash LSH (datasketch)               global, over signatures only
contamination          containment in any evaluation text     global, over signatures only
balance                modality mixture weights               global, over lengths only
shards (per expert)    tokenizer + objective + curriculum     .npy shards, manifest.json
```

The per-task and per-batch stages are pure functions of their input (`read_rows`, `prepare_batch`), so
the same code runs in one process (`runner: local`, the tests) and on Ray Data (`runner: ray`:
`flat_map` over read tasks and `map_batches` over documents, on a local Ray or a cluster). The global
stages only see hashes, signatures and lengths, a few hundred bytes per document; at cluster scale
the next step is LSH banding as a shuffle (group by band key) instead of one index on the driver.
Every stage records what it kept and why it removed the rest (`report.json`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_pipeline import contamination as contam
from data_pipeline import dedup
from data_pipeline.balance import balance
from data_pipeline.classifiers import TextClassifier
from data_pipeline.config import DataBuildConfig
from data_pipeline.documents import tag_modality
from data_pipeline.examples import TaskExample
from data_pipeline.filters import rejection_reason
from data_pipeline.instruct import TASK_EXPERT, example_text, synthesise, to_record
from data_pipeline.shards import write_manifest
from data_pipeline.sources import ReadTask, incident_documents, load_incident, read_task, source_tasks
from data_pipeline.transform import FamilyCatalog, build_expert

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
REPORT = "report.json"
FILTER_REASONS = frozenset({"binary", "garbage", "too_short", "too_long", "repetition"})


@dataclass
class StageRecord:
    """What one stage saw, kept and removed (by reason), and how long it took. Units are documents, except
    read+prepare (read tasks in, documents out), eval_sets (texts in, texts long enough to check) and
    shards:<expert> (documents with balancing copies in, token rows out)."""

    stage: str
    input: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    removed_modalities: dict[str, int] = field(default_factory=dict)
    """Removed documents per modality."""
    removed_sources: dict[str, int] = field(default_factory=dict)
    """Removed documents per source."""
    seconds: float = 0.0


@dataclass
class BuildResult:
    """The outcome of a build: the per-stage records and everything `report.json` holds."""

    out: Path
    stages: list[StageRecord]
    report: dict[str, Any]
    documents: pd.DataFrame
    """The kept documents (id, source, modality, copies, text)."""
    examples: list[TaskExample]


@dataclass(frozen=True)
class PrepareContext:
    """What `prepare_batch` needs, shipped to every worker."""

    config: DataBuildConfig
    relevance: TextClassifier | None
    quality: TextClassifier | None


# --- per-task and per-batch stages (pure; run in workers) ----------------------------------------------


def read_rows(task: ReadTask, config: DataBuildConfig) -> list[dict[str, Any]]:
    """Rows of one read task: `kind` "doc" (a document) or "example" (a grounded instruction, as JSON)."""
    if task.source.kind in ("chaos", "incidents"):
        incident, label = load_incident(task)
        docs = list(incident_documents(incident, task.source))
        examples = (synthesise(incident, label, config.instruct, key=f"{task.source.name}:{incident.meta.id}")
                    if config.instruct.enabled else [])
    else:
        docs, examples = read_task(task), []
    rows = [{"kind": "doc", "id": d.id, "text": d.text, "source": d.source, "hint": d.meta.get("hint", ""),
             "meta": json.dumps(d.meta, default=str)} for d in docs]
    rows += [{"kind": "example", "id": f"{task.source.name}:{e.task}:{i}", "text": json.dumps(to_record(e)),
              "source": task.source.name, "hint": "", "meta": "{}"} for i, e in enumerate(examples)]
    return rows


def prepare_batch(batch: pd.DataFrame, context: PrepareContext) -> pd.DataFrame:
    """Tag, filter, classify and sketch a batch of documents; adds modality, reason, hash, signatures.

    `reason` is empty for documents that pass; removed documents keep their row (so every stage can
    be counted) but get no signatures.
    """
    config = context.config
    texts = batch["text"].tolist()
    modalities = [tag_modality(t, hint=h or None) for t, h in zip(texts, batch["hint"].tolist(), strict=True)]
    reasons = [rejection_reason(t, m, config.filters) or "" for t, m in zip(texts, modalities, strict=True)]
    for name, classifier, settings in (("off_domain", context.relevance, config.relevance),
                                       ("low_quality", context.quality, config.quality)):
        alive = [i for i, r in enumerate(reasons) if not r and modalities[i] in settings.modalities]
        if classifier is None or not settings.enabled or not alive:
            continue
        scores = classifier.scores([texts[i] for i in alive])
        for i, score in zip(alive, scores, strict=True):
            if score < settings.threshold:
                reasons[i] = name
    alive = [i for i, r in enumerate(reasons) if not r]
    num_perm = config.dedup.num_perm
    shingles = dedup.ShingleConfig(char_ngram=config.dedup.char_ngram, word_ngram=config.dedup.word_ngram)
    signatures = np.zeros((len(texts), num_perm), dtype=np.uint32)
    sketch_signatures = np.zeros((len(texts), num_perm), dtype=np.uint32)
    sketch_sizes = np.zeros(len(texts), dtype=np.int64)
    if alive:
        signatures[alive] = dedup.signatures([texts[i] for i in alive], [modalities[i] for i in alive],
                                             num_perm=num_perm, seed=config.dedup.seed, config=shingles)
        if config.contamination.enabled:
            sketches = contam.sketch([texts[i] for i in alive], num_perm=num_perm, seed=config.dedup.seed)
            sketch_signatures[alive] = sketches.signatures
            sketch_sizes[alive] = sketches.sizes
    out = batch.copy()
    out["modality"] = modalities
    out["reason"] = reasons
    out["content_hash"] = [dedup.content_hash(t) for t in texts]
    out["chars"] = [len(t) for t in texts]
    # One uint32 array per row, in an object column.
    out["signature"] = pd.Series(list(signatures), index=out.index, dtype=object)
    out["sketch"] = pd.Series(list(sketch_signatures), index=out.index, dtype=object)
    out["sketch_size"] = sketch_sizes
    return out


# --- runners ------------------------------------------------------------------------------------------


def _batches(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]


def _run_local(tasks: Sequence[ReadTask], config: DataBuildConfig, context: PrepareContext,
               progress: Progress) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows: list[dict[str, Any]] = []
    for i, task in enumerate(tasks, start=1):
        rows += read_rows(task, config)
        if i % 10 == 0 or i == len(tasks):
            progress(f"read {i}/{len(tasks)} tasks ({len(rows)} rows)")
    frame = pd.DataFrame(rows, columns=["kind", "id", "text", "source", "hint", "meta"])
    docs, examples = frame[frame["kind"] == "doc"], frame[frame["kind"] == "example"]
    parts = []
    for i, batch in enumerate(_batches(docs, config.execution.batch_size), start=1):
        parts.append(prepare_batch(batch, context))
        progress(f"prepared {min(i * config.execution.batch_size, len(docs))}/{len(docs)} documents")
    prepared = pd.concat(parts, ignore_index=True) if parts else prepare_batch(docs, context)
    return _in_order(prepared), _in_order(examples)


def _in_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in one deterministic order (id, then text), whatever order they were read in: the global stages
    keep the first of duplicates, so both runners must hand them over in the same order."""
    return frame.sort_values(["id", "text"], kind="stable").reset_index(drop=True)


def _run_ray(tasks: Sequence[ReadTask], config: DataBuildConfig, context: PrepareContext,
             progress: Progress) -> tuple[pd.DataFrame, pd.DataFrame]:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=config.execution.workers, include_dashboard=False, log_to_driver=False)
    workers = config.execution.workers
    rows = ray.data.from_items([{"task": task} for task in tasks]).flat_map(
        lambda row: read_rows(row["task"], config), concurrency=workers).materialize()
    progress(f"read {len(tasks)} tasks ({rows.count()} rows) on Ray")
    from ray.data.expressions import col

    docs = rows.filter(expr=col("kind") == "doc")
    examples = rows.filter(expr=col("kind") == "example").to_pandas()
    prepared = docs.map_batches(prepare_batch, fn_kwargs={"context": context}, batch_format="pandas",
                                batch_size=config.execution.batch_size, concurrency=workers).to_pandas()
    progress(f"prepared {len(prepared)} documents on Ray")
    if examples.empty:
        examples = pd.DataFrame(columns=["kind", "id", "text", "source", "hint", "meta"])
    return _in_order(prepared), _in_order(examples)  # Ray does not keep row order across blocks


# --- the build ----------------------------------------------------------------------------------------


def train_classifiers(config: DataBuildConfig, out: Path, progress: Progress
                      ) -> tuple[TextClassifier | None, TextClassifier | None, dict[str, Any]]:
    """Load the configured classifiers, or train them on the built-in labelled samples (and report
    their held-out precision and recall)."""
    from data_pipeline import classifiers as clf

    models: dict[str, TextClassifier | None] = {"relevance": None, "quality": None}
    scores: dict[str, Any] = {}
    wanted = {name: settings for name, settings in (("relevance", config.relevance), ("quality", config.quality))
              if settings.enabled}
    if any(not s.model for s in wanted.values()):
        progress("training classifiers on the built-in labelled samples")
        devops, offdomain = clf.devops_texts(), clf.offdomain_texts()
    for name, settings in wanted.items():
        if settings.model:
            models[name] = TextClassifier.load(settings.model)
            scores[name] = {"model": settings.model}
            continue
        samples = (clf.relevance_samples(devops, offdomain) if name == "relevance"
                   else clf.quality_samples([*devops, *offdomain], seed=config.balance.seed))
        model, heldout = clf.train_and_evaluate(samples)
        (out / "classifiers").mkdir(parents=True, exist_ok=True)
        model.save(out / "classifiers" / f"{name}.npz")
        models[name] = model
        scores[name] = {"model": str(out / "classifiers" / f"{name}.npz"), "heldout": heldout}
        progress(f"{name} classifier: held-out precision {heldout['precision']:.3f} recall {heldout['recall']:.3f}")
    return models["relevance"], models["quality"], scores


def build(config: DataBuildConfig, *, progress: Progress | None = None, families: FamilyCatalog | None = None
          ) -> BuildResult:
    """Run the whole pipeline and write shards, instructions, manifest.json and report.json under `config.out`.

    `families` supplies expert families' defaults and held-out task data (`experts.registry.catalog()`);
    without it every expert's objective must be in the config and held-out task data is not checked.
    """
    say: Progress = progress or (lambda line: log.info("%s", line))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages: list[StageRecord] = []

    tasks = [task for source in config.sources for task in source_tasks(source)]
    t0 = time.perf_counter()
    relevance, quality, classifier_report = train_classifiers(config, out, say)
    stages.append(StageRecord("classifiers", seconds=time.perf_counter() - t0))
    context = PrepareContext(config=config, relevance=relevance, quality=quality)

    t0 = time.perf_counter()
    runner = _run_ray if config.execution.runner == "ray" else _run_local
    prepared, example_rows = runner(tasks, config, context, say)
    read_seconds = time.perf_counter() - t0
    stages.append(StageRecord("read+prepare", input=len(tasks), kept=len(prepared), seconds=read_seconds))
    modality_counts = dict(Counter(prepared["modality"]))

    alive = prepared["reason"] == ""
    entering = len(prepared)
    for stage, reasons in (("filters", FILTER_REASONS), ("relevance", {"off_domain"}), ("quality", {"low_quality"})):
        removed = prepared["reason"].isin(reasons)
        stages.append(StageRecord(stage, input=entering, kept=entering - int(removed.sum()),
                                  removed=dict(Counter(prepared.loc[removed, "reason"])),
                                  removed_modalities=dict(Counter(prepared.loc[removed, "modality"])),
                                  removed_sources=dict(Counter(prepared.loc[removed, "source"]))))
        entering -= int(removed.sum())
    docs = prepared[alive].reset_index(drop=True)

    if config.dedup.exact:
        keep = dedup.exact_duplicates(docs["content_hash"])
        stages.append(StageRecord("exact_dedup", input=len(docs), kept=int(keep.sum()),
                                  removed={"exact_duplicate": int((~keep).sum())},
                                  removed_modalities=dict(Counter(docs.loc[~keep, "modality"])),
                                  removed_sources=dict(Counter(docs.loc[~keep, "source"]))))
        docs = docs[keep].reset_index(drop=True)
    bands, rows = dedup.lsh_params(config.dedup.threshold, config.dedup.num_perm)
    if config.dedup.near and len(docs):
        t0 = time.perf_counter()
        eligible = np.flatnonzero(docs["modality"].isin(config.dedup.near_modalities).to_numpy())
        found = dedup.find_near_duplicates(np.stack(list(docs["signature"].to_numpy()[eligible])) if len(eligible)
                                           else np.zeros((0, config.dedup.num_perm), np.uint32),
                                           threshold=config.dedup.threshold, seed=config.dedup.seed,
                                           bands_rows=(bands, rows))
        keep = np.ones(len(docs), dtype=bool)
        keep[eligible] = found.keep
        stages.append(StageRecord("near_dedup", input=len(docs), kept=int(keep.sum()),
                                  removed={"near_duplicate": int((~keep).sum())},
                                  removed_modalities=dict(Counter(docs.loc[~keep, "modality"])),
                                  removed_sources=dict(Counter(docs.loc[~keep, "source"])),
                                  seconds=time.perf_counter() - t0))
        docs = docs[keep].reset_index(drop=True)

    examples = [_example(json.loads(text)) for text in example_rows["text"]]
    contamination_report: dict[str, Any] = {"enabled": config.contamination.enabled}
    if config.contamination.enabled:
        t0 = time.perf_counter()
        eval_texts, notes = _eval_texts(config, families)
        eval_sketch = contam.sketch(eval_texts, num_perm=config.dedup.num_perm, seed=config.dedup.seed)
        checked = int((eval_sketch.sizes >= contam.MIN_SHINGLES).sum())
        stages.append(StageRecord("eval_sets", input=len(eval_texts), kept=checked, seconds=time.perf_counter() - t0))
        t0 = time.perf_counter()
        train_sketch = contam.Sketches(np.stack(list(docs["sketch"].to_numpy())) if len(docs)
                                       else np.zeros((0, config.dedup.num_perm), np.uint32),
                                       docs["sketch_size"].to_numpy())
        hit, _ = contam.contaminated(train_sketch, eval_sketch, threshold=config.contamination.threshold,
                                     seed=config.dedup.seed)
        stages.append(StageRecord("contamination", input=len(docs), kept=int((~hit).sum()),
                                  removed={"contains_eval_text": int(hit.sum())},
                                  removed_modalities=dict(Counter(docs.loc[hit, "modality"])),
                                  removed_sources=dict(Counter(docs.loc[hit, "source"])),
                                  seconds=time.perf_counter() - t0))
        docs = docs[~hit].reset_index(drop=True)
        example_hit = np.zeros(len(examples), dtype=bool)
        if examples:
            example_sketch = contam.sketch([example_text(e) for e in examples], num_perm=config.dedup.num_perm,
                                           seed=config.dedup.seed)
            example_hit, _ = contam.contaminated(example_sketch, eval_sketch,
                                                 threshold=config.contamination.threshold, seed=config.dedup.seed)
        stages.append(StageRecord("instruction_contamination", input=len(examples), kept=int((~example_hit).sum()),
                                  removed={"contains_eval_text": int(example_hit.sum())}))
        examples = [e for e, bad in zip(examples, example_hit, strict=True) if not bad]
        contamination_report.update({"eval_texts": len(eval_texts), "eval_texts_checked": checked,
                                     "notes": notes, "threshold": config.contamination.threshold})

    copies = np.ones(len(docs), dtype=np.int64)
    balance_report: dict[str, Any] = {"enabled": config.balance.enabled}
    if config.balance.enabled and len(docs):
        plan = balance(docs["modality"].tolist(), docs["chars"].tolist(), config.balance.weights,
                       max_repeat=config.balance.max_repeat, seed=config.balance.seed, keys=docs["id"].tolist())
        copies = plan.copies
        balance_report.update({"before": plan.before, "after": plan.after, "target": plan.target})
        stages.append(StageRecord("balance", input=len(docs), kept=int((copies > 0).sum()),
                                  removed={"downsampled": int((copies == 0).sum())},
                                  removed_modalities=dict(Counter(docs.loc[copies == 0, "modality"])),
                                  removed_sources=dict(Counter(docs.loc[copies == 0, "source"]))))
        balance_report["repeated_documents"] = int((copies > 1).sum())
    docs = docs.assign(copies=copies)
    docs = docs[docs["copies"] > 0].reset_index(drop=True)

    _write_documents(out, docs)
    _write_instructions(out, examples)
    manifest: dict[str, Any] = {"documents": int(len(docs)), "document_copies": int(docs["copies"].sum()),
                                "instructions": len(examples),
                                "modalities": {m: int(c) for m, c in Counter(docs["modality"]).items()},
                                "experts": {}}
    if config.shards.enabled:
        for expert in config.shards.experts:
            t0 = time.perf_counter()
            chosen = docs[docs["modality"].isin(expert.modalities)]
            expert_docs = [(doc_id, text) for doc_id, text, n in
                           zip(chosen["id"], chosen["text"], chosen["copies"], strict=True) for _ in range(n)]
            expert_examples = [e for e in examples if TASK_EXPERT.get(e.task.removesuffix("_inverted"))
                               == (expert.family or expert.name)]
            if not expert_docs:
                say(f"expert {expert.name}: no documents, no shards")
                continue
            manifest["experts"][expert.name] = build_expert(expert, expert_docs, expert_examples, config.shards, out,
                                                           families=families)
            stages.append(StageRecord(f"shards:{expert.name}", input=len(expert_docs),
                                      kept=sum(s["rows"] for s in manifest["experts"][expert.name]["splits"].values()),
                                      seconds=time.perf_counter() - t0))
            say(f"expert {expert.name}: {manifest['experts'][expert.name]['splits'].get('train', {}).get('rows', 0)} "
                "training rows")
    write_manifest(out, manifest)
    total = time.perf_counter() - started
    report = {
        "documents_read": int(len(prepared)), "documents_kept": int(len(docs)),
        "documents_per_second": len(prepared) / total if total else 0.0, "seconds": total,
        "runner": config.execution.runner, "stages": [asdict(s) for s in stages],
        "modalities_tagged": modality_counts, "classifiers": classifier_report,
        "dedup": {"threshold": config.dedup.threshold, "num_perm": config.dedup.num_perm, "bands": bands,
                  "rows": rows, "collision_probability": {
                      str(j): round(float(dedup.collision_probability(j, bands, rows)), 4)
                      for j in (0.5, 0.6, 0.7, 0.8, 0.9)}},
        "contamination": contamination_report, "balance": balance_report,
        "instructions": dict(Counter(e.task for e in examples)),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return BuildResult(out=out, stages=stages, report=report,
                       documents=docs[["id", "source", "modality", "copies", "text"]], examples=examples)


def _example(record: dict[str, Any]) -> TaskExample:
    return TaskExample(task=record["task"], input=record["input"], target=record["target"],
                       meta=record.get("meta", {}))


def _eval_texts(config: DataBuildConfig, families: FamilyCatalog | None) -> tuple[list[str], list[str]]:
    texts = contam.read_eval_texts(config.contamination.eval_paths)
    notes: list[str] = []
    if config.contamination.expert_heldout:
        if families is None:
            return texts, ["expert held-out task data not checked: no expert family catalog was given"]
        heldout, notes = families.heldout_texts(sorted({e.family for e in config.shards.experts if e.family}))
        texts += heldout
    return texts, notes


def _write_documents(out: Path, docs: pd.DataFrame) -> None:
    """The kept corpus as Parquet (text, provenance, modality, copies): the input of the shard stage."""
    docs[["id", "source", "modality", "copies", "chars", "text", "meta"]].to_parquet(out / "documents.parquet",
                                                                                  index=False)


def _write_instructions(out: Path, examples: Sequence[TaskExample]) -> None:
    with (out / "instructions.jsonl").open("w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(to_record(example), default=str) + "\n")


def summary(result: BuildResult) -> str:
    """The per-stage table printed at the end of a build."""
    lines = [f"{'stage':<26}{'in':>7}{'kept':>7}{'s':>7}  removed (by modality)", "-" * 90]
    for s in result.stages:
        removed = ", ".join(f"{k}={v}" for k, v in sorted(s.removed.items())) or "-"
        if s.removed_modalities:
            removed += " (" + ", ".join(f"{k} {v}" for k, v in sorted(s.removed_modalities.items())) + ")"
        lines.append(f"{s.stage:<26}{s.input:>7}{s.kept:>7}{s.seconds:>7.1f}  {removed}")
    report = result.report
    lines.append(f"{report['documents_read']} documents read, {report['documents_kept']} kept, "
                 f"{len(result.examples)} instructions; {report['documents_per_second']:.1f} documents/s "
                 f"({report['seconds']:.1f} s, runner {report['runner']})")
    return "\n".join(lines)
