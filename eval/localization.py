"""Localisation evaluation: run the shipped RCA path (the Director) over incident directories and score it.

Ground truth is read here, through the evaluation accessor `load_label`, *after* the analysis has
produced its answer; the analysis itself never sees it. Scores follow the RCA literature: A@k is the
share of labelled incidents whose root cause is among the top k (services ranked by their best
entry, pods by entry), MRR the mean reciprocal rank, fault-type accuracy the share diagnosed right.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np

from flipmoe.config import TelemetryConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import read_incident
from flipmoe.telemetry.incident import Incident
from flipmoe.telemetry.label import Label, load_label

Ranking = list[dict[str, Any]]
"""Root-cause entries, most likely first: {"service", "pod", "node", "score"}."""
Ranker = Callable[[Incident], tuple[Ranking, str | None]]
"""An incident -> (ranking, fault type or None)."""

KS = (1, 3, 5)


@dataclass
class Scores:
    """Accumulated scores of one ranker over labelled incidents."""

    service_ranks: list[int | None] = field(default_factory=list)
    pod_ranks: list[int | None] = field(default_factory=list)
    fault_hits: list[bool] = field(default_factory=list)
    fault_pairs: list[tuple[str, str | None]] = field(default_factory=list)
    """(labelled, diagnosed) fault type of each incident."""
    seconds: list[float] = field(default_factory=list)
    failures: int = 0

    def add(self, ranking: Ranking, fault_type: str | None, label: Label, seconds: float) -> None:
        self.service_ranks.append(rank_of(label.service, _distinct([e["service"] for e in ranking])))
        if label.pod:
            self.pod_ranks.append(rank_of(label.pod, [e.get("pod") for e in ranking]))
        self.fault_hits.append(fault_type == label.fault_type)
        self.fault_pairs.append((label.fault_type, fault_type))
        self.seconds.append(seconds)

    def extend(self, other: Scores) -> None:
        """Add another run's scores (e.g. the next cross-validation fold's)."""
        self.service_ranks += other.service_ranks
        self.pod_ranks += other.pod_ranks
        self.fault_hits += other.fault_hits
        self.fault_pairs += other.fault_pairs
        self.seconds += other.seconds
        self.failures += other.failures

    def summary(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {"incidents": len(self.service_ranks), "failures": self.failures}
        for level, ranks in (("service", self.service_ranks), ("pod", self.pod_ranks)):
            for k in KS:
                out[f"{level}_A@{k}"] = accuracy_at(ranks, k)
            out[f"{level}_MRR"] = mean_reciprocal_rank(ranks)
        out["fault_type_accuracy"] = float(np.mean(self.fault_hits)) if self.fault_hits else None
        out["fault_type_macro_f1"] = macro_f1(self.fault_pairs)
        out["seconds_p50"] = float(np.percentile(self.seconds, 50)) if self.seconds else None
        out["seconds_p95"] = float(np.percentile(self.seconds, 95)) if self.seconds else None
        return out


def macro_f1(pairs: Sequence[tuple[str, str | None]]) -> float | None:
    """F1 of each fault type that occurs in the labels, averaged (a wrong guess of a type that never
    occurs still lowers the recall of the true type); None when the ranker diagnoses nothing."""
    if not pairs or all(predicted is None for _, predicted in pairs):
        return None
    from sklearn.metrics import f1_score

    truth = [t for t, _ in pairs]
    predicted = [p or "" for _, p in pairs]
    return float(f1_score(truth, predicted, labels=sorted(set(truth)), average="macro", zero_division=0))


def _distinct(items: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def rank_of(target: str, ranked: Sequence[Any]) -> int | None:
    """1-based rank of `target` in `ranked`, None when absent."""
    for position, item in enumerate(ranked, start=1):
        if item == target:
            return position
    return None


def accuracy_at(ranks: Sequence[int | None], k: int) -> float | None:
    if not ranks:
        return None
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float | None:
    if not ranks:
        return None
    return sum(1.0 / r for r in ranks if r is not None) / len(ranks)


def evaluate(
    incident_dirs: Sequence[Path],
    rankers: Mapping[str, Ranker],
    *,
    out: TextIO | None = None,
    progress: Callable[[str], None] | None = None,
    config: TelemetryConfig | None = None,
) -> dict[str, Scores]:
    """Run every ranker on every incident; write one JSON line per incident for the first ranker. Each label
    is read after every ranker has answered for its incident; `config` reads the incidents as `rca` does."""
    scores = {name: Scores() for name in rankers}
    primary = next(iter(rankers))
    for position, directory in enumerate(incident_dirs, start=1):
        record: dict[str, Any] = {"incident": directory.name}
        try:
            incident = read_incident(directory, config=config)
        except FlipmoeInputError as err:
            record["error"] = str(err)
            for s in scores.values():
                s.failures += 1
            _emit(out, record)
            continue
        answers = {}
        for name, ranker in rankers.items():
            start = time.perf_counter()
            ranking, fault_type = ranker(incident)
            answers[name] = (ranking, fault_type, time.perf_counter() - start)
        label = load_label(directory)
        for name, (ranking, fault_type, seconds) in answers.items():
            if label is not None:
                scores[name].add(ranking, fault_type, label, seconds)
            if name == primary:
                record.update({"root_causes": ranking, "fault_type": fault_type, "seconds": round(seconds, 3)})
        if label is not None:
            record["label"] = label.to_json()
        _emit(out, record)
        if progress is not None:
            progress(f"[{position}/{len(incident_dirs)}] {directory.name}")
    return scores


def _emit(out: TextIO | None, record: dict[str, Any]) -> None:
    if out is not None:
        out.write(json.dumps(record) + "\n")
        out.flush()


def iter_rows(scores: Mapping[str, Scores]) -> Iterator[tuple[str, dict[str, float | int | None]]]:
    for name, s in scores.items():
        yield name, s.summary()


def format_table(scores: Mapping[str, Scores]) -> str:
    """A fixed-width table: one row per ranker."""
    columns = ["incidents", *(f"service_A@{k}" for k in KS), "service_MRR", *(f"pod_A@{k}" for k in KS),
               "fault_type_accuracy", "fault_type_macro_f1", "seconds_p50", "seconds_p95"]
    header = ["ranker", "n", "svc@1", "svc@3", "svc@5", "svcMRR", "pod@1", "pod@3", "pod@5", "type", "type F1",
              "p50 s", "p95 s"]
    lines = ["  ".join(f"{h:>7}" if i else f"{h:<26}" for i, h in enumerate(header))]
    for name, summary in iter_rows(scores):
        cells = [name] + [_cell(summary[c]) for c in columns]
        lines.append("  ".join(f"{c:>7}" if i else f"{c:<26}" for i, c in enumerate(cells)))
    return "\n".join(lines)


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}"


def director_ranker(*, settings: Any = None, runbook: str | None = None, top: int = 20) -> Ranker:
    """The shipped path as a ranker: the Director runs its runbook in this process (`flipmoe rca`'s steps,
    actors and report) and the report's root causes are the ranking.

    `settings` is a `director.actors.base.RunSettings` (model bundle, modalities for an ablation);
    `runbook` forces a template instead of retrieval.
    """
    from dataclasses import replace

    from director.actors.base import RunSettings
    from director.director import local_director

    settings = replace(settings or RunSettings(), top=top)
    director = local_director(settings=settings, runbook=runbook)

    def rank(incident: Incident) -> tuple[Ranking, str | None]:
        return report_ranking(director.analyse(incident))

    return rank


def report_ranking(report: Any) -> tuple[Ranking, str | None]:
    """(root-cause entries, fault type) of an `RcaReport`: the JSON `flipmoe eval localization` writes."""
    ranking = [{"service": c.service, "pod": c.pod, "node": c.node, "score": round(c.score, 4)}
               for c in report.root_causes]
    fault = report.root_causes[0].fault_type if report.root_causes else None
    return ranking, fault


def ablation_rankers(modality_sets: Mapping[str, Sequence[str]], *, settings: Any = None) -> dict[str, Ranker]:
    """The shipped path restricted to modality subsets (`RunSettings.modalities`), one Director run each."""
    from dataclasses import replace

    from director.actors.base import RunSettings

    base = settings or RunSettings()
    return {name: director_ranker(settings=replace(base, modalities=tuple(mods)))
            for name, mods in modality_sets.items()}


def random_ranker(seed: int = 0) -> Ranker:
    """Services and their pods in a random order (seeded per incident): the floor any method must beat."""
    def rank(incident: Incident) -> tuple[Ranking, str | None]:
        rng = np.random.default_rng([seed, zlib.crc32(incident.id.encode())])  # hash() varies per process
        pods = _pods_by_service(incident)
        services = sorted(pods)
        rng.shuffle(services)
        return [{"service": s, "pod": p, "node": None, "score": 0.0} for s in services for p in pods[s]], None
    return rank


def zscore_ranker() -> Ranker:
    """A naive metric ranking: each pod's largest |z| of any metric in the window against its own history.

    The history is everything before the alert time (or the window start); no propagation reasoning,
    no pattern analysis — what a dashboard sorted by "most unusual" would show.
    """
    def rank(incident: Incident) -> tuple[Ranking, str | None]:
        metrics = incident.metrics
        if metrics is None:
            return [], None
        split = incident.meta.alert_time or incident.meta.window.start
        keys = ["service", "pod", "metric"]
        frame = metrics.fillna({"pod": ""})
        before = frame[frame["timestamp"] < split].groupby(keys)["value"].agg(["mean", "std"])
        during = frame[(frame["timestamp"] >= split) & (frame["timestamp"] < incident.meta.window.end)]
        joined = during.join(before, on=keys)
        z = ((joined["value"] - joined["mean"]).abs() / joined["std"].where(joined["std"] > 0)).fillna(0.0)
        joined = joined.assign(z=z.replace([np.inf, -np.inf], 0.0))
        per_pod = joined.groupby(["service", "pod"])["z"].max().sort_values(ascending=False)
        pods = cast(list[tuple[str, str]], per_pod.index.to_list())  # (service, pod), "" standing for no pod
        ranking = [{"service": s, "pod": p or None, "node": None, "score": float(v)}
                   for (s, p), v in zip(pods, per_pod, strict=True)]
        return ranking, None
    return rank


def baro_ranker() -> Ranker:
    """BARO's root-cause scoring (Pham et al., FSE 2024), as its authors' RCAEval code does it.

    Every metric series (per service, pod and metric name) is scaled with a `RobustScaler` (median
    and inter-quartile range) fitted on the normal period before the anomaly's onset; its score is the
    largest scaled value after the onset (signed, as in the original: a rise counts). Pods rank by
    their best series. BARO finds the onset with multivariate Bayesian online change-point detection;
    like the RCAEval benchmark runs, this takes the onset as given: the incident's alert time (or
    its window start).
    """
    from sklearn.preprocessing import RobustScaler

    def rank(incident: Incident) -> tuple[Ranking, str | None]:
        metrics = incident.metrics
        if metrics is None:
            return [], None
        onset = incident.meta.alert_time or incident.meta.window.start
        frame = metrics[metrics["timestamp"] < incident.meta.window.end].fillna({"pod": ""})
        best: dict[tuple[str, str], float] = {}
        for (service, pod, _), series in frame.groupby(["service", "pod", "metric"], sort=False):
            values = series.sort_values("timestamp")
            normal = values.loc[values["timestamp"] < onset, "value"].to_numpy(dtype=float)
            anomalous = values.loc[values["timestamp"] >= onset, "value"].to_numpy(dtype=float)
            normal, anomalous = normal[np.isfinite(normal)], anomalous[np.isfinite(anomalous)]
            if len(normal) < 2 or len(anomalous) == 0:
                continue
            scaler = RobustScaler().fit(normal.reshape(-1, 1))
            score = float(scaler.transform(anomalous.reshape(-1, 1)).max())
            key = (str(service), str(pod))
            best[key] = max(best.get(key, -np.inf), score)
        ordered = sorted(best.items(), key=lambda item: (-item[1], item[0]))
        return [{"service": s, "pod": p or None, "node": None, "score": v} for (s, p), v in ordered], None
    return rank


def _pods_by_service(incident: Incident) -> dict[str, list[str | None]]:
    from flipmoe.toolkits.index import build_index

    index = build_index(incident)
    return {s: list(index.pods_of_service.get(s, ())) or [None] for s in index.services}


def alert_count_ranker() -> Ranker:
    """Pods ranked by how many alert events (kind metric / log / trace) name them: what a pager sorted by
    "most alerts" shows. Pods without alerts are not ranked."""
    def rank(incident: Incident) -> tuple[Ranking, str | None]:
        events = incident.events
        if events is None:
            return [], None
        alerts = events[events["kind"].astype(str).str.lower().isin(("metric", "log", "trace"))]
        counts = alerts.dropna(subset=["service"]).fillna({"pod": ""}).groupby(["service", "pod"]).size()
        ranked = counts.reset_index(name="n").sort_values(["n", "service", "pod"], ascending=[False, True, True])
        return [{"service": s, "pod": p or None, "node": None, "score": float(n)}
                for s, p, n in ranked.itertuples(index=False)], None
    return rank


CHANGE_KINDS = ("deploy", "config_change", "rollout", "release", "change")


def last_change_ranker() -> Ranker:
    """Services ranked by their most recent change (deploy, config change) up to the alert, latest first:
    the "what changed last?" heuristic on-call engineers start with. Services without a change are not ranked."""
    def rank(incident: Incident) -> tuple[Ranking, str | None]:
        events = incident.events
        if events is None:
            return [], None
        until = incident.meta.alert_time or incident.meta.window.end
        changes = events[events["kind"].astype(str).str.lower().isin(CHANGE_KINDS) & (events["timestamp"] <= until)]
        latest = changes.dropna(subset=["service"]).groupby("service")["timestamp"].max().sort_values(ascending=False)
        return [{"service": str(s), "pod": None, "node": None, "score": float(t.timestamp())}
                for s, t in latest.items()], None
    return rank
