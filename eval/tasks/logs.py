"""Log understanding beyond the logs expert's own tasks.

- `log_anomaly_bgl`: a BGL line -> `anomaly` or `normal`, from LogHub's own alert label (`Label` not
  `-`); balanced over the two. Baseline: failure keywords.
- `log_ner`: a chaos log line -> its entities, `kind:value` joined by `; `, kinds pod, node, service
  and ip. Pods, nodes and services are the incident's own inventory (so the reference is the truth,
  not a regex's opinion); IPs are dotted quads. Baseline: shape regexes that know no inventory.
- `log_parsing_ga_<system>`: held-out lines of one LogHub system -> templates, scored by grouping
  accuracy (the log-parsing literature's GA: a line counts when the lines given its template are
  exactly the lines of its true template). Baseline: Drain over the batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from eval.tasks._core import EvalItem, EvalTask, grouping_scorer, macro_f1_scorer, set_f1_scorer
from eval.tasks._data import EvalData
from experts.sources import balanced, digest

GA_SYSTEMS = ("HDFS", "BGL", "Hadoop", "HPC", "Spark", "Thunderbird", "Windows", "Zookeeper")
LOGHUB = "LogHub structured CSVs (--loghub, or <data>/loghub)"
LINES_PER_INCIDENT = 300
"""Distinct messages naming an entity kept per incident for `log_ner`."""


def log_tasks() -> list[EvalTask]:
    tasks = [
        EvalTask(name="log_anomaly_bgl", category="log_understanding", source="loghub", ground_truth="real",
                 description="BGL log line -> anomaly or normal (LogHub's alert label)",
                 input_format="one BGL message", metric="macro_f1", build=_anomaly_items, rule=_anomaly_rule,
                 score=macro_f1_scorer(), max_new_tokens=4, size=200, requires=LOGHUB),
        EvalTask(name="log_ner", category="log_understanding",
                 description="log line -> entities (pod, node, service, ip) as 'kind:value; ...'",
                 input_format="one chaos log message", metric="set_f1", build=_ner_items, rule=_ner_rule,
                 score=set_f1_scorer(";"), max_new_tokens=48),
    ]
    for system in GA_SYSTEMS:
        tasks.append(EvalTask(
            name=f"log_parsing_ga_{system.lower()}", category="log_understanding", source="loghub",
            ground_truth="real",
            description=f"held-out {system} lines -> templates; grouping accuracy over the set",
            input_format=f"one {system} message", metric="grouping_accuracy", build=_ga_builder(system),
            rule=_drain_rule, score=grouping_scorer(), max_new_tokens=48, size=200, requires=LOGHUB))
    return tasks


# --- anomaly --------------------------------------------------------------------------------------

_FAILURE = re.compile(r"fatal|error|fail|exception|interrupt|corrupt|panic|severe|critical|abort|"
                      r"timeout|denied|unable|cannot|lost", re.IGNORECASE)


def _anomaly_items(data: EvalData) -> list[EvalItem]:
    lines = data.loghub[(data.loghub["system"] == "BGL") & (data.loghub["label"] != "")]
    items = [EvalItem(id=f"bgl-{digest(c)[:10]}", input=c, references=("normal" if label == "-" else "anomaly",),
                      meta={"source": "loghub:BGL", "split": "heldout", "alert": label})
             for c, label in zip(lines["content"], lines["label"], strict=True)]
    return balanced(items, lambda item: item.references[0], data.config.max_items)


def _anomaly_rule(items: Sequence[EvalItem]) -> list[str]:
    return ["anomaly" if _FAILURE.search(item.input) else "normal" for item in items]


# --- entities -------------------------------------------------------------------------------------

_IP = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_WORD = r"(?<![\w.-]){}(?![\w-])"


def entities_of(message: str, *, pods: Sequence[str], nodes: Sequence[str], services: Sequence[str]) -> list[str]:
    """`kind:value` for every inventory name and IP in the message (a service counts only outside its pods' names)."""
    def named(names: Sequence[str]) -> list[str]:
        return [n for n in names if n in message and re.search(_WORD.format(re.escape(n)), message)]

    found = [f"pod:{p}" for p in named(pods)] + [f"node:{n}" for n in named(nodes)]
    found += [f"service:{s}" for s in named(services)]
    found += [f"ip:{ip}" for ip in _IP.findall(message) if not any(ip in n for n in nodes)]
    return sorted(dict.fromkeys(found))


def _ner_items(data: EvalData) -> list[EvalItem]:
    candidates = []
    for sample in data.chaos():
        logs = sample.table("logs").drop_duplicates("message")
        metrics = sample.table("metrics")
        pods = sorted(set(metrics["pod"].dropna().astype(str)))
        nodes = sorted(set(metrics["node"].dropna().astype(str)))
        services = sorted(set(metrics["service"].dropna().astype(str)))
        firsts = sorted({m.split("\n", 1)[0][:400] for m in logs["message"].astype(str)}, key=digest)
        names = (*pods, *nodes, *services)
        firsts = [f for f in firsts if _IP.search(f) or any(n in f for n in names)]
        for first in firsts[:LINES_PER_INCIDENT]:
            found = entities_of(first, pods=pods, nodes=nodes, services=services)
            if found:
                candidates.append(EvalItem(id=f"ner-{digest(first)[:10]}", input=first, references=("; ".join(found),),
                                           meta={"source": f"chaos:{sample.seed}", "split": "heldout"}))
    candidates = sorted(dict((c.id, c) for c in candidates).values(), key=lambda c: c.id)
    kinds = lambda item: ",".join(sorted({e.split(":")[0] for e in item.references[0].split("; ")}))  # noqa: E731
    return balanced(candidates, kinds, data.config.max_items)


_POD = re.compile(r"(?<![\w.-])[a-z][a-z0-9-]*-[a-z0-9]{8,10}-[a-z0-9]{5}(?![\w-])")
_NODE = re.compile(r"(?<![\w.-])(?:gke-[\w-]+|ip-\d+-\d+-\d+-\d+\.[\w.]+|node-?\d+)(?![\w-])")
_SERVICE = re.compile(r"(?<![\w.-])[a-z][a-z0-9]*(?:-?(?:service|svc|db|cache|redis|mysql|mongo))(?![\w-])")


def _ner_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        text = item.input
        pods = _POD.findall(text)
        nodes = _NODE.findall(text)
        services = [s for s in _SERVICE.findall(text) if not any(s in p for p in pods)]
        ips = [ip for ip in _IP.findall(text) if not any(ip in n for n in nodes)]
        found = [f"pod:{p}" for p in pods] + [f"node:{n}" for n in nodes]
        found += [f"service:{s}" for s in services] + [f"ip:{ip}" for ip in ips]
        answers.append("; ".join(sorted(dict.fromkeys(found))))
    return answers


# --- parsing --------------------------------------------------------------------------------------


def _ga_builder(system: str):  # type: ignore[no-untyped-def]
    def build(data: EvalData) -> list[EvalItem]:
        lines: pd.DataFrame = data.loghub[data.loghub["system"] == system].head(2 * data.config.max_items)
        return [EvalItem(id=f"{system.lower()}-{digest(c)[:10]}", input=c, references=(t,),
                         meta={"source": f"loghub:{system}", "split": "heldout"})
                for c, t in zip(lines["content"], lines["template"], strict=True)]
    return build


def _drain_rule(items: Sequence[EvalItem]) -> list[str]:
    from experts.logs.tasks import template_baseline

    return template_baseline([item.input for item in items])
