"""The per-task evaluation harness: every model answers every task's held-out items, in one run.

`run_suite(tasks, models)` builds each task's items once, asks each model, and scores the answers
with the task's metric; `write_report(run, out_dir)` writes

- `results.json`: per task and model, every figure, its bootstrap 95% interval, item count, seconds
  and failures; the task's ground truth (real / chaos), input, and chance level (the best input-blind
  answer's score); paired differences with their intervals (every model against the rule, the bundle
  against the dense baseline), per task and on the mean over tasks (all, real, chaos); per category and
  model the mean of its tasks' main figures with its interval; the data config; contamination per task
  when checked; for a routed bundle, which expert answered how many requests of each task;
- `predictions.jsonl`: one line per (task, model, item): id, prediction, references;
- `results.md`: the table by task and the table by category, models side by side with their intervals,
  and the paired differences;
- `radar.png`: one spider chart of the category means, one polygon per model.

Intervals are percentile bootstraps over the task's items (`eval.stats`), every model on the same
resamples, so differences are paired; a category's interval resamples each of its tasks independently.
A task without data here (a LogHub system that is not installed, no TVDiag) is listed as skipped, with
the reason, not scored.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval import stats
from eval.models import EvalModel
from eval.tasks import CATEGORIES, EvalData, EvalItem, EvalTask
from eval.tasks._core import chance_level

Progress = Callable[[str], None]


@dataclass
class TaskRun:
    task: str
    category: str
    metric: str
    items: int
    build_seconds: float
    ground_truth: str = "chaos"
    input: str = ""
    chance: float = 0.0
    """The best score of one answer given to every item (`eval.tasks._core.chance_level`)."""
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    """model -> {"score": ..., other figures}."""
    intervals: dict[str, list[float]] = field(default_factory=dict)
    """model -> [low, high] of the main figure's bootstrap 95% interval."""
    differences: list[dict[str, Any]] = field(default_factory=list)
    """Paired comparisons: {"a", "b", "difference" (a - b), "interval" [low, high]}."""
    seconds: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    skipped: str = ""
    resampled: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """model -> (B,) main figure over the bootstrap resamples; in memory only."""


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
        return {c: {m: i.value for m, i in by_model.items()} for c, by_model in self.category_intervals().items()}

    def category_intervals(self) -> dict[str, dict[str, stats.Interval]]:
        """category -> model -> mean main figure of its scored tasks, with its interval."""
        out = {}
        for category in CATEGORIES:
            runs = [t for t in self.tasks if t.category == category and not t.skipped]
            if runs:
                out[category] = {m: _mean_interval(runs, m) for m in self.models}
        return out

    def overall(self, ground_truth: str | None = None) -> dict[str, stats.Interval]:
        """model -> mean main figure over the scored tasks (of one ground truth, or all), with its interval."""
        runs = [t for t in self.tasks if not t.skipped and ground_truth in (None, t.ground_truth)]
        return {m: _mean_interval(runs, m) for m in self.models} if runs else {}

    def overall_differences(self, ground_truth: str | None = None) -> list[dict[str, Any]]:
        """The paired comparisons on the mean main figure over the scored tasks (of one ground truth, or all)."""
        runs = [t for t in self.tasks if not t.skipped and ground_truth in (None, t.ground_truth)]
        return [_mean_difference(runs, a, b) for a, b in comparisons(self.models)] if runs else []

    def to_json(self) -> dict[str, Any]:
        def interval_json(i: stats.Interval) -> dict[str, Any]:
            return {"score": round(i.value, 4), "interval": i.to_json()}

        tasks = [{k: v for k, v in asdict(t).items() if k != "resampled"} for t in self.tasks]
        return {"models": self.models, "seconds": round(self.seconds, 1), "config": self.config,
                "tasks": tasks,
                "categories": {c: {m: interval_json(i) for m, i in by_model.items()}
                               for c, by_model in self.category_intervals().items()},
                "mean": {scope or "all": {m: interval_json(i) for m, i in self.overall(scope).items()}
                         for scope in (None, "real", "chaos")},
                "mean_differences": {scope or "all": self.overall_differences(scope)
                                     for scope in (None, "real", "chaos")},
                "contamination": self.contamination, "routing": self.routing}


def run_suite(tasks: Sequence[EvalTask], models: Sequence[EvalModel], *, data: EvalData | None = None,
              progress: Progress | None = None, resamples: int = stats.RESAMPLES) -> SuiteRun:
    """Every model answers every task's items; each score gets its bootstrap interval (one resample matrix
    per task, shared by the models), each task its chance level and paired differences."""
    data = data or EvalData()
    say = progress or (lambda _line: None)
    started = time.perf_counter()
    run = SuiteRun(models=[m.name for m in models], tasks=[], config=asdict(data.config))
    for task in tasks:
        t0 = time.perf_counter()
        items = task.build(data)
        task_run = TaskRun(task=task.name, category=task.category, metric=task.metric, items=len(items),
                           build_seconds=round(time.perf_counter() - t0, 2), ground_truth=task.ground_truth,
                           input=task.input_format)
        run.tasks.append(task_run)
        run.items[task.name] = items
        if not items:
            task_run.skipped = "no data here" + (f": needs {task.requires}" if task.requires else "")
            say(f"{task.name}: skipped ({task_run.skipped})")
            continue
        # Seeded by the items, not the task: tasks asked on the same items (TVDiag's root cause and fault type)
        # draw the same resamples, so the means over tasks keep their correlation.
        clusters, seed = getattr(task.score, "clusters", None), _seed("\0".join(item.id for item in items))
        indices = stats.resample_clusters(clusters(items), resamples=resamples, seed=seed) \
            if callable(clusters) else stats.resample_indices(len(items), resamples=resamples, seed=seed)
        task_run.chance = round(chance_level(task, items), 4)
        for model in models:
            before = model.failures
            t1 = time.perf_counter()
            predictions = model.answer(task, items)
            task_run.seconds[model.name] = round(time.perf_counter() - t1, 2)
            task_run.failures[model.name] = model.failures - before
            task_run.figures[model.name] = {k: round(float(v), 4) for k, v in task.score(predictions, items).items()}
            task_run.resampled[model.name] = _resampled(task, predictions, items, indices)
            task_run.intervals[model.name] = stats.interval(task_run.figures[model.name]["score"],
                                                            task_run.resampled[model.name]).to_json()
            run.predictions += [{"task": task.name, "model": model.name, "id": item.id, "prediction": p,
                                 "references": list(item.references)} for item, p in zip(items, predictions,
                                                                                          strict=True)]
        task_run.differences = [_difference(task_run, a, b) for a, b in comparisons(run.models)]
        say(f"{task.name} ({len(items)} items, {task.ground_truth}, {time.perf_counter() - t0:.1f}s): " + ", ".join(
            f"{m}={task_run.figures[m]['score']:.3f}" for m in run.models))
    run.routing = {m.name: routed for m in models if isinstance(routed := getattr(m, "routed", None), dict)}
    run.seconds = time.perf_counter() - started
    return run


def comparisons(models: Sequence[str]) -> list[tuple[str, str]]:
    """The paired comparisons a run reports: every model against the rule, and the bundle (MoE)
    against the dense baseline of equal size."""
    pairs = [(m, "rule") for m in models if m != "rule" and "rule" in models]
    pairs += [(m, d) for m in models if m.startswith("bundle:") for d in models if d == "dense"]
    return pairs


def _resampled(task: EvalTask, predictions: Sequence[str], items: Sequence[EvalItem],
               indices_BN: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(B,) main figure over the resamples: item scores averaged when the scorer has them, else the
    whole-set metric recomputed on each resample."""
    values = getattr(task.score, "values", None)
    if callable(values) and isinstance(indices_BN, np.ndarray):  # item resamples; clusters vary in size
        return stats.bootstrap_means(values(predictions, items), indices_BN)
    return stats.bootstrap_statistic(
        lambda rows: task.score([predictions[i] for i in rows], [items[i] for i in rows])["score"], indices_BN)


def _difference(task_run: TaskRun, a: str, b: str) -> dict[str, Any]:
    value = task_run.figures[a]["score"] - task_run.figures[b]["score"]
    spread = stats.interval(value, task_run.resampled[a] - task_run.resampled[b])
    return {"a": a, "b": b, "difference": round(value, 4), "interval": spread.to_json()}


def _mean_interval(runs: Sequence[TaskRun], model: str) -> stats.Interval:
    """The mean main figure over `runs`, its interval from their resamples (independent across tasks)."""
    value = sum(t.figures[model]["score"] for t in runs) / len(runs)
    return stats.interval(value, np.mean([t.resampled[model] for t in runs], axis=0))


def _mean_difference(runs: Sequence[TaskRun], a: str, b: str) -> dict[str, Any]:
    """a - b on the mean main figure over `runs`, its interval from the paired resamples of every task."""
    value = sum(t.figures[a]["score"] - t.figures[b]["score"] for t in runs) / len(runs)
    spread = stats.interval(value, np.mean([t.resampled[a] - t.resampled[b] for t in runs], axis=0))
    return {"a": a, "b": b, "difference": round(value, 4), "interval": spread.to_json()}


def _seed(name: str) -> int:
    """A seed from a text that does not depend on the process (unlike `hash`)."""
    return zlib.crc32(name.encode("utf-8"))


def markdown(run: SuiteRun) -> str:
    header = "| task | source | input | metric | n | chance | " + " | ".join(run.models) + " |"
    rule = "|" + "---|" * (6 + len(run.models))
    rows = []
    for t in run.tasks:
        cells = ([f"skipped ({t.skipped})"] + [""] * (len(run.models) - 1) if t.skipped
                 else [_cell(t.figures[m], t.intervals[m]) for m in run.models])
        chance = "" if t.skipped else f"{t.chance:.3f}"
        rows.append(f"| {t.task} | {t.ground_truth} | {t.input} | {t.metric} | {t.items} | {chance} | "
                    + " | ".join(cells) + " |")
    cat_header = "| category | tasks | " + " | ".join(run.models) + " |"
    cat_rule = "|" + "---|" * (2 + len(run.models))
    cat_rows = [f"| {CATEGORIES[c]} | {sum(t.category == c and not t.skipped for t in run.tasks)} | "
                + " | ".join(_interval_cell(by_model[m]) for m in run.models) + " |"
                for c, by_model in run.category_intervals().items()]
    for scope, title in ((None, "**mean over tasks**"), ("real", "mean over real-reference tasks"),
                         ("chaos", "mean over chaos-reference tasks")):
        overall = run.overall(scope)
        if overall:
            count = sum(not t.skipped and scope in (None, t.ground_truth) for t in run.tasks)
            cat_rows.append(f"| {title} | {count} | " + " | ".join(_interval_cell(overall[m]) for m in run.models)
                            + " |")
    lines = ["## By task", "",
             "Cells: main figure [bootstrap 95% interval]. source: real = references from independent labels "
             "of real data; chaos = the chaos gym's or a generator's ground truth. chance: the best score of one "
             "answer given to every item.", "", header, rule, *rows, "",
             "## By category", "", cat_header, cat_rule, *cat_rows]
    differences = [(t.task, d) for t in run.tasks if not t.skipped for d in t.differences]
    differences += [(title, d) for scope, title in ((None, "**mean over tasks**"), ("real", "mean over real tasks"),
                                                    ("chaos", "mean over chaos tasks"))
                    for d in run.overall_differences(scope)]
    if differences:
        lines += ["", "## Paired differences (a - b, same items, bootstrap 95% interval)", "",
                  "| task | a | b | a - b | interval | |", "|---|---|---|---|---|---|"]
        lines += [f"| {task} | {d['a']} | {d['b']} | {d['difference']:+.3f} | "
                  f"[{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}] | "
                  f"{'' if d['interval'][0] <= 0 <= d['interval'][1] else 'differs'} |" for task, d in differences]
    lines += ["", f"Harness run time: {run.seconds:.1f} s."]
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


def _cell(figures: Mapping[str, float], spread: Sequence[float]) -> str:
    extra = [f"{k} {v:.2f}" for k, v in figures.items() if k.startswith(("A@3", "MRR"))]
    return (f"{figures['score']:.3f} [{spread[0]:.2f}, {spread[1]:.2f}]"
            + (f" ({', '.join(extra)})" if extra else ""))


def _interval_cell(value: stats.Interval) -> str:
    return f"{value.value:.3f} [{value.low:.2f}, {value.high:.2f}]"


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
