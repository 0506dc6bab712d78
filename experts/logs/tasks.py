"""Task data of the logs expert, and the rule baselines of its tasks.

- `log_template`: a LogHub line -> its ground-truth template (`EventTemplate`, variables `<*>`).
  Split by a hash of (system, line): one line in ten is held out, and identical lines share a split.
  Baseline: Drain (`flipmoe.toolkits.logs.LogParser`) mining the whole batch of lines it is given.
- `log_level`: a message without its header -> its severity. Chaos lines of the split's incidents
  (split by chaos seed, and by line hash too: health checks read the same in every incident) and
  LogHub lines of systems that log a level (split by line hash), balanced over levels. Baseline:
  keyword rules.
- `log_change_summary`: a service's template counts in the minutes after the fault started and in
  as many minutes of the fault-free baseline -> one sentence on what changed (the two largest
  changes, and whether this service is where the fault was injected, from the chaos label). Split
  by chaos seed. Baseline: the same sentence for the single largest change, with no root cause.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

import pandas as pd

from data_pipeline.examples import TaskExample
from experts.sources import ChaosSample, Sources, balanced, check_split, digest, hash_split, without_heldout

TASK_NAMES = ("log_template", "log_level", "log_change_summary")
LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")
_LEVEL_ALIASES = {"WARNING": "WARN", "SEVERE": "ERROR", "CRITICAL": "FATAL", "TRACE": "DEBUG"}
CHAOS_INFO_LINES = 300
"""INFO messages drawn per chaos incident for `log_level` (the other levels are all kept)."""
TOP_CHANGES = 6
"""Templates listed in a change-summary input (largest changes first)."""


def task_data(sources: Sources, split: str) -> dict[str, list[TaskExample]]:
    """{task: examples} of `split`; no training input is also a held-out input."""
    check_split(split)
    data = _split_data(sources, split)
    return data if split == "heldout" else without_heldout(data, _split_data(sources, "heldout"))


def _split_data(sources: Sources, split: str) -> dict[str, list[TaskExample]]:
    n = sources.examples(split)
    loghub = sources.loghub_table().drop_duplicates("content")
    loghub = loghub[[hash_split(s, c) == split for s, c in zip(loghub["system"], loghub["content"], strict=True)]]
    loghub = loghub.assign(order=[digest(c) for c in loghub["content"]]).sort_values("order")
    chaos = sources.chaos(split)
    return {"log_template": _template_examples(loghub, split, n),
            "log_level": _level_examples(loghub, chaos, split, n),
            "log_change_summary": _change_examples(chaos, split, n)}


def _template_examples(loghub: pd.DataFrame, split: str, n: int) -> list[TaskExample]:
    examples = [TaskExample(task="log_template", input=content, target=template,
                            meta={"source": f"loghub:{system}", "split": split})
                for system, content, template in zip(loghub["system"], loghub["content"], loghub["template"],
                                                     strict=True)]
    return balanced(examples, lambda e: e.meta["source"], n)


def _level_examples(loghub: pd.DataFrame, chaos: Sequence[ChaosSample], split: str, n: int) -> list[TaskExample]:
    candidates: list[tuple[str, TaskExample]] = []
    for system, content, level in zip(loghub["system"], loghub["content"], loghub["level"], strict=True):
        if normalise_level(level) in LEVELS:
            candidates.append((digest(content), TaskExample(task="log_level", input=content,
                                                            target=normalise_level(level),
                                                            meta={"source": f"loghub:{system}", "split": split})))
    for sample in chaos:
        # Levels are rare beyond INFO: keep every distinct non-INFO message and a sample of INFO ones.
        logs = sample.table("logs").drop_duplicates("message")
        logs = pd.concat([logs[logs["level"] != "INFO"], logs[logs["level"] == "INFO"].head(CHAOS_INFO_LINES)])
        for message, level in zip(logs["message"], logs["level"], strict=True):
            if hash_split("chaos", message) != split:
                continue
            candidates.append((digest(message), TaskExample(task="log_level", input=message,
                                                            target=normalise_level(level),
                                                            meta={"source": f"chaos:{sample.seed}", "split": split})))
    candidates.sort(key=lambda pair: pair[0])
    return balanced([e for _, e in candidates], lambda e: e.target, n)


def normalise_level(level: str) -> str:
    upper = str(level).strip().upper()
    return _LEVEL_ALIASES.get(upper, upper)


_LEVEL_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("FATAL", re.compile(r"\b(fatal|panic|kernel panic|out of memory|oomkilled)\b", re.IGNORECASE)),
    ("ERROR", re.compile(r"exception|error|fail|refused|denied|unavailable|timed? ?out|traceback|cannot|"
                         r"could not|invalid|\b5\d\d\b", re.IGNORECASE)),
    ("WARN", re.compile(r"warn|retr(y|ying|ies)|slow|deprecated|fallback|degraded|high|pressure", re.IGNORECASE)),
    ("DEBUG", re.compile(r"\bdebug\b|\btrace\b|cache (hit|miss)", re.IGNORECASE)),
)


def level_baseline(inputs: Sequence[str]) -> list[str]:
    """First matching keyword rule (fatal, error, warning, debug words), else INFO."""
    return [next((level for level, rule in _LEVEL_RULES if rule.search(text)), "INFO") for text in inputs]


def template_baseline(inputs: Sequence[str]) -> list[str]:
    """Drain with the toolkit's masking, mining the whole batch."""
    from flipmoe.toolkits.logs import LogParser

    return [line.template for line in LogParser().parse(list(inputs))]


# --- what changed ---------------------------------------------------------------------------------

# RE2 patterns (pyarrow's vectorised replace): ids, hex, numbers with units, assigned values.
_VARIABLE = (r"\b(?:[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|0x[0-9a-fA-F]+|"
             r"[0-9a-fA-F]*[0-9][0-9a-fA-F]{7,}|[0-9]+(?:[.:,][0-9]+)*(?:ms|s|B|%|Mi)?)\b")
_ASSIGNED = r"(\w=)[^\s,;)\]]+"


def log_templates(messages: pd.Series) -> pd.Series:
    """A cheap template per message: its first line with ids, numbers and assigned values as `<*>`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    first = pc.replace_substring_regex(pa.array(messages.astype(str).tolist()), r"\n(?s:.*)", "")
    assigned = pc.replace_substring_regex(first, _ASSIGNED, r"\1<*>")
    masked = pc.replace_substring_regex(assigned, _VARIABLE, "<*>")
    return pd.Series(masked.to_pylist(), index=messages.index, dtype=object)


def _change_examples(chaos: Sequence[ChaosSample], split: str, n: int) -> list[TaskExample]:
    examples = []
    for sample in chaos:
        if sample.label.inject_time is None:
            continue
        onset = pd.Timestamp(sample.label.inject_time)
        length = sample.incident.meta.window.end - onset
        during, before = sample.table("logs"), sample.table("logs", baseline=True)
        counts = (_counts(before[before["timestamp"] >= before["timestamp"].max() - length]),
                  _counts(during[during["timestamp"] >= onset]))
        minutes = max(1, round(length.total_seconds() / 60))
        for service in sorted(set(counts[0]) | set(counts[1])):
            rows = _count_rows(counts[0].get(service, {}), counts[1].get(service, {}))
            target = _summary(service, rows, limit=2)
            if service == sample.label.service:
                target += f" {service} is where the {sample.label.fault_type.replace('_', ' ')} fault was injected."
            examples.append(TaskExample(task="log_change_summary", input=_render_counts(service, minutes, rows),
                                        target=target, meta={"source": f"chaos:{sample.seed}", "split": split,
                                                             "changed": bool(_changes(rows))}))
    examples.sort(key=lambda e: digest(e.input))
    return balanced(examples, lambda e: str(e.meta["changed"]), n)


def _counts(logs: pd.DataFrame) -> dict[str, dict[tuple[str, str], int]]:
    """service -> (level, template) -> lines."""
    frame = pd.DataFrame({"service": logs["service"].astype(str), "level": logs["level"].astype(str),
                          "template": log_templates(logs["message"])})
    out: dict[str, dict[tuple[str, str], int]] = {}
    for key, count in frame.groupby(["service", "level", "template"]).size().items():
        service, level, template = cast(tuple[str, str, str], key)  # the frame's three text columns
        out.setdefault(service, {})[(level, template)] = int(count)
    return out


def _count_rows(before: dict[tuple[str, str], int],
                during: dict[tuple[str, str], int]) -> list[tuple[int, int, str, str]]:
    """(before, during, level, template) for the templates that changed most, largest first."""
    keys = set(before) | set(during)
    ranked = sorted(keys, key=lambda k: (-abs(during.get(k, 0) - before.get(k, 0)), -during.get(k, 0), k))
    return [(before.get(k, 0), during.get(k, 0), *k) for k in ranked[:TOP_CHANGES]]


def _render_counts(service: str, minutes: int, rows: Sequence[tuple[int, int, str, str]]) -> str:
    header = (f"service {service}: log lines per template, {minutes} min of the fault-free baseline (before) "
              f"and the last {minutes} min of the incident (during)\nbefore during level template")
    return "\n".join([header, *(f"{b} {d} {level} {template}" for b, d, level, template in rows)])


def _changes(rows: Sequence[tuple[int, int, str, str]]) -> list[tuple[int, int, str, str]]:
    """Rows whose count moved by at least 5 lines and by half of what it was."""
    return [r for r in rows if abs(r[1] - r[0]) >= max(5, 0.5 * r[0])]


def _summary(service: str, rows: Sequence[tuple[int, int, str, str]], *, limit: int) -> str:
    changes = _changes(rows)[:limit]
    if not changes:
        return f"No notable change in the logs of {service}."
    parts = []
    for before, during, level, template in changes:
        if before == 0:
            parts.append(f"{level} '{template}' appeared ({during} lines, none before)")
        elif during == 0:
            parts.append(f"{level} '{template}' stopped ({before} lines before)")
        else:
            verb = "rose" if during > before else "fell"
            parts.append(f"{level} '{template}' {verb} from {before} to {during} lines")
    return f"{service}: " + "; ".join(parts) + "."


def change_baseline(inputs: Sequence[str]) -> list[str]:
    """The summary sentence of the single largest change in the table."""
    answers = []
    for text in inputs:
        header, *lines = text.split("\n")
        service = header.removeprefix("service ").split(":", 1)[0]
        rows = []
        for line in lines[1:]:
            fields = line.split(" ", 3)
            if len(fields) == 4 and fields[0].isdigit() and fields[1].isdigit():
                rows.append((int(fields[0]), int(fields[1]), fields[2], fields[3]))
        answers.append(_summary(service, rows, limit=1))
    return answers
