"""Query generation and database debugging on held-out chaos incidents.

- `sql_generation`: the schema of an incident's telemetry in SQLite (tables `logs` and `metrics`, a
  sample of the incident's rows) and a question -> SQL. Scored by execution: the query runs on the
  item's database and must return the reference query's rows (`eval.metrics.sql_execution_match`).
  Baseline: question templates -> SQL.
- `promql_generation`: a question naming a metric and a service of the incident -> PromQL. With a
  Prometheus server holding the held-out incidents' metrics (`$FLIPMOE_EVAL_PROMETHEUS`, or
  `flipmoe eval run --prometheus URL`; `promql_openmetrics(items)` writes the data to backfill with
  `promtool tsdb create-blocks-from openmetrics`), the query is executed at the end of its incident's
  window and must return the reference's series and values. Without one the check is a parse check
  plus the canonical form (whitespace removed outside strings) equal to the reference's, which
  under-credits equivalent queries; the task's figures say which check ran. Baseline: question templates.
- `db_error_cause`: an error a database client logs, or a database's own slow-query line (the chaos
  gym's catalogues, filled with the held-out systems' stores) -> the cause: timeout, connection
  refused, unreachable, dns, tls, pool exhausted or slow query. Macro-F1. Baseline: keywords.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Sequence

import httpx

from eval import metrics
from eval.tasks._core import EvalItem, EvalTask, first_rule_match, macro_f1_scorer, per_item
from eval.tasks._data import EvalData
from experts.sources import ChaosSample, balanced, digest

SQL_ROWS = 400
"""Rows of each table put in an item's database."""
_SCHEMA = ("CREATE TABLE logs (timestamp TEXT, service TEXT, pod TEXT, level TEXT, message TEXT);\n"
           "CREATE TABLE metrics (timestamp TEXT, service TEXT, pod TEXT, metric TEXT, value REAL);")


def query_tasks() -> list[EvalTask]:
    return [
        EvalTask(name="sql_generation", category="database_debugging", metric="execution_match (SQLite)",
                 description="incident tables schema + question -> SQL returning the right rows",
                 input_format="SQLite schema, then a question", build=_sql_items, rule=_sql_rule,
                 score=per_item(_sql_score), max_new_tokens=96),
        EvalTask(name="promql_generation", category="cloud_devops", metric="parse_check+canonical_match",
                 description="question on a metric and a service -> PromQL",
                 input_format="a question naming the metric, the service", build=_promql_items, rule=_promql_rule,
                 score=_promql_scorer, max_new_tokens=64,
                 notes="executed on Prometheus when $FLIPMOE_EVAL_PROMETHEUS is set; else parse + canonical match"),
        EvalTask(name="db_error_cause", category="database_debugging", metric="macro_f1",
                 description="database client error or slow-query line -> cause", source="chaos-catalogues",
                 input_format="one log message", build=_db_items, rule=_db_rule, score=macro_f1_scorer(),
                 max_new_tokens=6),
    ]


# --- SQL ------------------------------------------------------------------------------------------

_SQL_QUESTIONS = (
    ("Which service logged the most ERROR lines?",
     "SELECT service FROM logs WHERE level = 'ERROR' GROUP BY service ORDER BY COUNT(*) DESC, service LIMIT 1"),
    ("How many WARN lines did {service} log?",
     "SELECT COUNT(*) FROM logs WHERE level = 'WARN' AND service = '{service}'"),
    ("Which pod of {service} has the highest maximum {metric}?",
     "SELECT pod FROM metrics WHERE service = '{service}' AND metric = '{metric}' GROUP BY pod "
     "ORDER BY MAX(value) DESC, pod LIMIT 1"),
    ("List the services that logged at least one ERROR line.",
     "SELECT DISTINCT service FROM logs WHERE level = 'ERROR'"),
    ("What is the average {metric} of {service}?",
     "SELECT AVG(value) FROM metrics WHERE service = '{service}' AND metric = '{metric}'"),
)


def database_script(sample: ChaosSample) -> str:
    """CREATE and INSERT statements of an incident's sampled logs and metrics."""
    logs = sample.table("logs")
    logs = logs.iloc[sorted(range(len(logs)), key=lambda i: digest(str(sample.seed), str(i)))[:SQL_ROWS]]
    frame = sample.table("metrics")
    wanted = sorted(set(frame["metric"].astype(str)), key=lambda m: digest(str(sample.seed), m))[:3]
    frame = frame[frame["metric"].isin(wanted)]
    frame = frame.iloc[sorted(range(len(frame)), key=lambda i: digest(str(sample.seed), "m", str(i)))[:SQL_ROWS]]
    with sqlite3.connect(":memory:") as db:
        db.executescript(_SCHEMA)
        db.executemany("INSERT INTO logs VALUES (?, ?, ?, ?, ?)",
                       [(str(t), str(s), str(p), str(lv), str(m).split("\n", 1)[0][:200])
                        for t, s, p, lv, m in zip(logs["timestamp"], logs["service"], logs["pod"], logs["level"],
                                                  logs["message"], strict=True)])
        db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                       [(str(t), str(s), str(p), str(m), float(v))
                        for t, s, p, m, v in zip(frame["timestamp"], frame["service"], frame["pod"], frame["metric"],
                                                 frame["value"], strict=True)])
        return "\n".join(db.iterdump())


def _sql_items(data: EvalData) -> list[EvalItem]:
    items = []
    for sample in data.chaos():
        script = database_script(sample)
        with sqlite3.connect(":memory:") as db:
            db.executescript(script)
            services = [r[0] for r in db.execute("SELECT DISTINCT service FROM metrics ORDER BY service")]
            metric_names = [r[0] for r in db.execute("SELECT DISTINCT metric FROM metrics ORDER BY metric")]
        if not services or not metric_names:
            continue
        for k in range(2):
            question, sql = _SQL_QUESTIONS[int(digest(str(sample.seed), str(k))[:4], 16) % len(_SQL_QUESTIONS)]
            service = sorted(services, key=lambda s: digest(str(sample.seed), str(k), s))[0]
            metric = sorted(metric_names, key=lambda m: digest(str(sample.seed), str(k), m))[0]
            fields = {"service": service, "metric": metric}
            text = f"{_SCHEMA}\nQuestion: {question.format(**fields)}"
            items.append(EvalItem(id=f"sql-{sample.seed}-{k}", input=text, references=(sql.format(**fields),),
                                  meta={"source": f"chaos:{sample.seed}", "split": "heldout"}, payload=script))
    return items[: data.config.max_items]


def _sql_score(prediction: str, item: EvalItem) -> float:
    query = prediction.strip().strip("`").removeprefix("sql").strip()
    return metrics.sql_execution_match(query, item.references[0], item.payload)


def _sql_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        question = item.input.rsplit("Question: ", 1)[-1].strip()
        answer = ""
        for template, sql in _SQL_QUESTIONS:
            pattern = "^" + re.escape(template).replace(r"\{service\}", "(?P<service>.+?)").replace(
                r"\{metric\}", "(?P<metric>.+?)") + "$"
            match = re.match(pattern, question)
            if match:
                answer = sql.format(**match.groupdict())
                break
        answers.append(answer)
    return answers


# --- PromQL ---------------------------------------------------------------------------------------

_PROMQL_QUESTIONS = (
    (("What is the total {metric} of {service}, summed over its pods?", "Sum {metric} over all pods of {service}."),
     'sum({metric}{{service="{service}"}})'),
    (("Show the maximum {metric} per pod of {service}.", "Per pod of {service}, the max of {metric}."),
     'max by (pod) ({metric}{{service="{service}"}})'),
    (("Which 3 series of {metric} are highest?", "Top 3 series by {metric}."), "topk(3, {metric})"),
    (("Average {metric} of {service} over the last 5 minutes.", "5-minute average of {metric} for {service}."),
     'avg_over_time({metric}{{service="{service}"}}[5m])'),
    (("How much did {metric} of {service} change in the last 10 minutes?",
      "Change of {metric} for {service} over 10 minutes."), 'delta({metric}{{service="{service}"}}[10m])'),
)
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _promql_items(data: EvalData) -> list[EvalItem]:
    items = []
    for sample in data.chaos():
        frame = sample.table("metrics")
        pairs = sorted({(str(m), str(s)) for m, s in zip(frame["metric"], frame["service"], strict=True)
                        if _METRIC_NAME.fullmatch(str(m)) and isinstance(s, str)},
                       key=lambda p: digest(str(sample.seed), *p))
        for k, (metric, service) in enumerate(pairs[:2]):
            h = int(digest(str(sample.seed), "promql", str(k))[:4], 16)
            phrasings, query = _PROMQL_QUESTIONS[h % len(_PROMQL_QUESTIONS)]
            question = phrasings[(h // 7) % len(phrasings)].format(metric=metric, service=service)
            at = sample.incident.meta.window.end.timestamp()
            items.append(EvalItem(id=f"promql-{sample.seed}-{k}", input=question,
                                  references=(query.format(metric=metric, service=service),),
                                  meta={"source": f"chaos:{sample.seed}", "split": "heldout", "time": at,
                                        "metric": metric}, payload=sample))
    return items[: data.config.max_items]


def promql_parses(query: str) -> bool:
    """A light syntactic check: balanced brackets outside strings, label matchers well formed, range
    durations valid, only PromQL's characters. Not a full parser."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query.strip())
    if not text or re.search(r"[^\w\s:(){}\[\],.=!~\"+\-*/^%<>]", text):
        return False
    depth = {"(": 0, "{": 0, "[": 0}
    pairs = {")": "(", "}": "{", "]": "["}
    for ch in text:
        if ch in depth:
            depth[ch] += 1
        elif ch in pairs:
            depth[pairs[ch]] -= 1
            if depth[pairs[ch]] < 0:
                return False
    if any(depth.values()):
        return False
    for body in re.findall(r"\{([^}]*)\}", text):
        for matcher in filter(None, (m.strip() for m in body.split(","))):
            if not re.fullmatch(r'[a-zA-Z_]\w*\s*(=~|!~|!=|=)\s*""', matcher):
                return False
    return all(re.fullmatch(r"\d+[smhdwy]", d.strip()) for d in re.findall(r"\[([^\]]*)\]", text))


def canonical_promql(query: str) -> str:
    parts = re.split(r'("(?:[^"\\]|\\.)*")', query.strip())
    return "".join(p if p.startswith('"') else re.sub(r"\s+", "", p) for p in parts)


PROMETHEUS_ENV = "FLIPMOE_EVAL_PROMETHEUS"
"""Base URL of a Prometheus server holding the held-out incidents' metrics; unset: no execution check."""


def _promql_score(prediction: str, item: EvalItem) -> float:
    query = prediction.strip().strip("`")
    return float(promql_parses(query) and canonical_promql(query) == canonical_promql(item.references[0]))


def _promql_scorer(predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
    parsed = per_item(_promql_score)(predictions, items)["score"]
    url = os.environ.get(PROMETHEUS_ENV)
    if not url:
        return {"score": parsed, "executed": 0.0}
    with httpx.Client(timeout=30.0) as client:
        values = [promql_execution_match(p.strip().strip("`"), item.references[0], at=item.meta["time"],
                                         url=url, client=client) for p, item in zip(predictions, items, strict=True)]
    return {"score": sum(values) / max(1, len(values)), "canonical_match": parsed, "executed": 1.0}


def promql_execution_match(query: str, reference: str, *, at: float, url: str,
                           client: httpx.Client | None = None) -> float:
    """1 when `query` runs on the server at time `at` and returns the reference's series and values."""
    def run(text: str) -> list[tuple[tuple[tuple[str, str], ...], float]] | None:
        response = (client or httpx).get(f"{url.rstrip('/')}/api/v1/query", params={"query": text, "time": at})
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            return None
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [((), round(float(result[1]), 6))]
        return sorted((tuple(sorted(r["metric"].items())), round(float(r["value"][1]), 6)) for r in result)

    expected = run(reference)
    if expected is None:
        raise ValueError(f"reference PromQL failed on {url}: {reference}")
    got = run(query) if query else None
    return float(got == expected)


def promql_openmetrics(items: Sequence[EvalItem]) -> str:
    """OpenMetrics text of the metrics the items ask about (every series of those metrics in the items'
    incidents), to backfill a Prometheus server for the execution check."""
    lines: list[str] = []
    wanted: dict[str, set[str]] = {}
    samples = {}
    for item in items:
        wanted.setdefault(item.meta["metric"], set()).add(item.meta["source"])
        samples[item.meta["source"]] = item.payload
    for metric, sources in sorted(wanted.items()):
        family = metric.removesuffix("_total")
        lines.append(f"# TYPE {family} {'counter' if metric.endswith('_total') else 'gauge'}")
        for source in sorted(sources):
            frame = samples[source].table("metrics")
            frame = frame[frame["metric"] == metric].sort_values("timestamp")
            for (service, pod, node), group in frame.groupby(["service", "pod", "node"], dropna=False, sort=True):
                # The incident label keeps two incidents' series apart when they share pod names.
                labels = ",".join(f'{k}="{v}"' for k, v in (("service", service), ("pod", pod), ("node", node),
                                                           ("incident", source)) if isinstance(v, str))
                lines.extend(f"{metric}{{{labels}}} {float(v)!r} {t.timestamp():.3f}"
                             for t, v in zip(group["timestamp"], group["value"], strict=True))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _promql_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        answer = ""
        for phrasings, query in _PROMQL_QUESTIONS:
            for phrasing in phrasings:
                pattern = "^" + re.escape(phrasing).replace(r"\{metric\}", r"(?P<metric>\S+)").replace(
                    r"\{service\}", r"(?P<service>\S+?)") + "$"
                match = re.match(pattern, item.input)
                if match:
                    fields = {"metric": "", "service": "", **match.groupdict()}
                    answer = query.format(**fields)
                    break
            if answer:
                break
        answers.append(answer)
    return answers


# --- database errors ------------------------------------------------------------------------------

_CAUSES = {20: "timeout", 21: "connection_refused", 22: "unreachable", 23: "connection_refused", 24: "dns",
           25: "tls", 26: "pool_exhausted"}


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return {"verb": "find", "statement": "SELECT * FROM orders WHERE user_id = ?", "collection": "orders",
                "namespace": "shop.orders", "redis_time": "06 Jan 2026 10:00:00.000"}.get(key, "0")


def _db_items(data: EvalData) -> list[EvalItem]:
    from data_pipeline.chaos import catalogues as cat
    from data_pipeline.chaos.systems import get_system

    items: dict[str, EvalItem] = {}
    for sample in data.chaos():
        system = get_system(sample.system, seed=sample.seed) if sample.system.startswith("random") else None
        stores = [s for s in (system.services if system else []) if s.kind != "service"]
        for store in stores:
            fields = _Fields(peer=store.name, port=str(3000 + int(digest(store.name)[:3], 16) % 6000),
                             ms=str(200 + int(digest(store.name, "ms")[:3], 16) % 5000),
                             ms_int=str(1000 + int(digest(store.name, "mi")[:3], 16) % 5000),
                             secs=f"{0.2 + int(digest(store.name, 's')[:3], 16) % 900 / 100:.2f}",
                             peer_ip=f"10.0.{int(digest(store.name)[:2], 16)}.{int(digest(store.name)[2:4], 16)}")
            lines = [(t, _CAUSES[k]) for k, t in cat.STORE_CLIENT_ERRORS.get(store.runtime, {}).items() if k in _CAUSES]
            if store.runtime in cat.SLOW_QUERY:
                lines.append((cat.SLOW_QUERY[store.runtime], "slow_query"))
            for template, cause in lines:
                text = template.format_map(fields).split("\n", 1)[0]
                items.setdefault(text, EvalItem(id=f"db-{digest(text)[:10]}", input=text, references=(cause,),
                                                meta={"source": f"chaos:{sample.seed}:{store.runtime}",
                                                      "split": "heldout"}))
    ordered = sorted(items.values(), key=lambda item: item.id)
    return balanced(ordered, lambda item: item.references[0], data.config.max_items)


_DB_RULES = (
    ("slow_query", re.compile(r"slow (query|command)|Query_time|duration: [\d.]+ ms", re.IGNORECASE)),
    ("pool_exhausted", re.compile(r"pool|not available", re.IGNORECASE)),
    ("dns", re.compile(r"UnknownHost|no such host|ENOTFOUND|Name or service not known|getaddrinfo", re.IGNORECASE)),
    ("tls", re.compile(r"SSL|TLS|x509|certificate|PKIX", re.IGNORECASE)),
    ("timeout", re.compile(r"timeout|timed out|deadline", re.IGNORECASE)),
    ("connection_refused", re.compile(r"refused|link failure|ECONNREFUSED", re.IGNORECASE)),
    ("unreachable", re.compile(r"unreachable|no route|EHOSTUNREACH", re.IGNORECASE)),
)


def _db_rule(items: Sequence[EvalItem]) -> list[str]:
    return first_rule_match(_DB_RULES, items, "connection_refused")


