"""The per-task evaluation harness: every model answers every task's held-out items, in one run.

`run_suite(tasks, models)` builds each task's items once, asks each model, and scores the answers
with the task's metric; `write_report(run, out_dir)` writes

- `results.json`: per task and model, every figure, item count, seconds and failures; per category
  and model the mean of its tasks' main figures; the data config; contamination per task when checked;
  for a routed bundle, which expert answered how many requests of each task;
- `predictions.jsonl`: one line per (task, model, item): id, prediction, references;
- `results.md`: the table by task and the table by category, models side by side;
- `radar.png`: one spider chart of the category means, one polygon per model.

A task without data here (a LogHub system that is not installed) is listed as skipped, not scored.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.models import EvalModel
from eval.tasks import CATEGORIES, EvalData, EvalItem, EvalTask

Progress = Callable[[str], None]


@dataclass
class TaskRun:
    task: str
    category: str
    metric: str
    items: int
    build_seconds: float
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    """model -> {"score": ..., other figures}."""
    seconds: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    skipped: str = ""


@dataclass
class SuiteRun:
    models: list[str]
    tasks: list[TaskRun]
    config: dict[str, Any]
    seconds: float = 0.0
    contamination: dict[str, dict[str, Any]] = field(default_factory=dict)
    routing: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """Routed models: model -> task -> expert -> requests it answered."""
    predictions: list[dict[str, Any]] = field(default_factory=list, repr=False)
    items: dict[str, list[EvalItem]] = field(default_factory=dict, repr=False)

    def category_scores(self) -> dict[str, dict[str, float]]:
        """category -> model -> mean main figure of its scored tasks."""
        out: dict[str, dict[str, float]] = {}
        for category in CATEGORIES:
            runs = [t for t in self.tasks if t.category == category and not t.skipped]
            if runs:
                out[category] = {m: sum(t.figures[m]["score"] for t in runs) / len(runs) for m in self.models}
        return out

    def to_json(self) -> dict[str, Any]:
        return {"models": self.models, "seconds": round(self.seconds, 1), "config": self.config,
                "tasks": [asdict(t) for t in self.tasks], "categories": self.category_scores(),
                "contamination": self.contamination, "routing": self.routing}


def run_suite(tasks: Sequence[EvalTask], models: Sequence[EvalModel], *, data: EvalData | None = None,
              progress: Progress | None = None) -> SuiteRun:
    data = data or EvalData()
    say = progress or (lambda _line: None)
    started = time.perf_counter()
    run = SuiteRun(models=[m.name for m in models], tasks=[], config=asdict(data.config))
    for task in tasks:
        t0 = time.perf_counter()
        items = task.build(data)
        task_run = TaskRun(task=task.name, category=task.category, metric=task.metric, items=len(items),
                           build_seconds=round(time.perf_counter() - t0, 2))
        run.tasks.append(task_run)
        run.items[task.name] = items
        if not items:
            task_run.skipped = "no held-out data here (see the task's source)"
            say(f"{task.name}: skipped ({task_run.skipped})")
            continue
        for model in models:
            before = model.failures
            t1 = time.perf_counter()
            predictions = model.answer(task, items)
            task_run.seconds[model.name] = round(time.perf_counter() - t1, 2)
            task_run.failures[model.name] = model.failures - before
            task_run.figures[model.name] = {k: round(float(v), 4) for k, v in task.score(predictions, items).items()}
            run.predictions += [{"task": task.name, "model": model.name, "id": item.id, "prediction": p,
                                 "references": list(item.references)} for item, p in zip(items, predictions,
                                                                                          strict=True)]
        say(f"{task.name} ({len(items)} items, {time.perf_counter() - t0:.1f}s): " + ", ".join(
            f"{m}={task_run.figures[m]['score']:.3f}" for m in run.models))
    run.routing = {m.name: routed for m in models if isinstance(routed := getattr(m, "routed", None), dict)}
    run.seconds = time.perf_counter() - started
    return run


def markdown(run: SuiteRun) -> str:
    header = "| task | category | metric | n | " + " | ".join(run.models) + " |"
    rule = "|" + "---|" * (4 + len(run.models))
    rows = []
    for t in run.tasks:
        cells = ["skipped"] * len(run.models) if t.skipped else [_cell(t.figures[m]) for m in run.models]
        rows.append(f"| {t.task} | {t.category} | {t.metric} | {t.items} | " + " | ".join(cells) + " |")
    categories = run.category_scores()
    cat_header = "| category | tasks | " + " | ".join(run.models) + " |"
    cat_rule = "|" + "---|" * (2 + len(run.models))
    cat_rows = [f"| {CATEGORIES[c]} | {sum(t.category == c and not t.skipped for t in run.tasks)} | "
                + " | ".join(f"{scores[m]:.3f}" for m in run.models) + " |" for c, scores in categories.items()]
    scored = [t for t in run.tasks if not t.skipped]
    mean = "| **mean over tasks** | " + str(len(scored)) + " | " + " | ".join(
        f"{sum(t.figures[m]['score'] for t in scored) / max(1, len(scored)):.3f}" for m in run.models) + " |"
    lines = ["## By task", "", header, rule, *rows, "", "## By category", "", cat_header, cat_rule, *cat_rows, mean,
             "", f"Harness run time: {run.seconds:.1f} s."]
    failed = {m: sum(t.failures.get(m, 0) for t in run.tasks) for m in run.models}
    if any(failed.values()):
        lines.append("Answers that failed (scored as empty): " + ", ".join(f"{m} {n}" for m, n in failed.items() if n)
                     + ".")
    if run.contamination:
        lines += ["", "## Contamination (items contained in training text)", "", "| task | items | contaminated |",
                  "|---|---|---|"]
        lines += [f"| {task} | {c['items']} | {c['contaminated']} ({c['share']:.0%}) |"
                  for task, c in run.contamination.items()]
    return "\n".join(lines) + "\n"


def _cell(figures: Mapping[str, float]) -> str:
    extra = [f"{k} {v:.2f}" for k, v in figures.items() if k.startswith(("A@3", "MRR"))]
    return f"{figures['score']:.3f}" + (f" ({', '.join(extra)})" if extra else "")


def radar_chart(run: SuiteRun, path: str | Path) -> Path:
    """A spider chart of the category means, one polygon per model (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = run.category_scores()
    names = list(categories)
    angles = [2 * math.pi * i / max(1, len(names)) for i in range(len(names))]
    figure = plt.figure(figsize=(8, 8))
    axes = figure.add_subplot(111, polar=True)
    for model in run.models:
        values = [categories[c][model] for c in names]
        axes.plot([*angles, angles[0]], [*values, values[0]], linewidth=1.5, label=model)
        axes.fill([*angles, angles[0]], [*values, values[0]], alpha=0.1)
    axes.set_xticks(angles)
    axes.set_xticklabels([CATEGORIES[c].replace(" ", "\n", 1) for c in names], fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_title("flipmoe evaluation by category (0-1)")
    axes.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1), fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(run: SuiteRun, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "predictions": out / "predictions.jsonl", "markdown": out / "results.md",
             "radar": out / "radar.png"}
    paths["json"].write_text(json.dumps(run.to_json(), indent=2) + "\n", encoding="utf-8")
    with paths["predictions"].open("w", encoding="utf-8") as handle:
        for record in run.predictions:
            handle.write(json.dumps(record) + "\n")
    paths["markdown"].write_text(markdown(run), encoding="utf-8")
    radar_chart(run, paths["radar"])
    return paths
