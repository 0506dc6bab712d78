"""A learned re-ranking of the localisation's candidates (learning to rank, pointwise).

The fusion in `localize` weighs evidence by hand-set rules. This model reads, per candidate (service, pod),
features that mean the same thing in every system — the fusion's score and rank, the service's anomaly per
modality, the pod's own cause and symptom evidence, how much and how varied it is, where the service sits
in the call graph, whether its anomalies started first — each normalised within the incident, and
scores how likely the candidate is the root cause. It is a linear scorer fitted listwise on labelled
incidents of several systems (`flipmoe train ranking`, `eval.train_ranking`, validated leave-one-system-out);
inference is numpy, and the probabilities are a softmax over the incident's candidates.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flipmoe.errors import FlipmoeInputError
from flipmoe.toolkits.index import IncidentIndex
from flipmoe.toolkits.localize import Signal
from flipmoe.toolkits.rootcause import RootCause

MODEL_FILE = Path(__file__).with_name("ranking_model.json")
CANDIDATES = 30
"""Only the fusion's top candidates are re-ranked; the rest keep their order below them."""
MODALITIES = ("metrics", "traces", "logs", "events")
_BASE: tuple[str, ...] = (
    "fusion_score", "fusion_rank", *(f"service_{m}" for m in MODALITIES), "pod_cause", "pod_symptom",
    "pod_signals", "pod_kinds", "pod_alerts", "callers", "callees", "is_leaf", "first_onset",
)
FEATURES: tuple[str, ...] = (*_BASE, *(f"{name}|events_only" for name in _BASE))
"""Each base feature, and again when the incident's only evidence is events (alerts from other detectors, no
raw metrics, traces or logs): the same feature can mean something else there (a count of alerts is the
evidence itself), so the model gets a second weight for that regime."""


def candidate_features(causes: Sequence[RootCause], signals: Sequence[Signal], index: IncidentIndex) -> np.ndarray:
    """(candidates, features) in [0, 1], normalised within the incident so that systems compare."""
    by_pod: dict[tuple[str, str | None], list[Signal]] = defaultdict(list)
    onset: dict[str, float] = {}
    for s in signals:
        by_pod[(s.service, s.pod)].append(s)
        if s.pod is not None:
            by_pod[(s.service, None)].append(s)
        if s.start is not None and s.strength >= 0.5:
            t = s.start.timestamp()
            onset[s.service] = min(onset.get(s.service, t), t)
    first = min(onset.values()) if onset else None
    callers = {s: len(index.callers(s)) for s in {c.service for c in causes}}
    callees = {s: len(index.callees(s)) for s in {c.service for c in causes}}
    rows = []
    for c in causes:
        own = by_pod.get((c.service, c.pod), []) if c.pod is not None else by_pod.get((c.service, None), [])
        if c.pod is not None:
            own = own + [s for s in by_pod.get((c.service, None), []) if s.pod is None]
        alerts = sum(int(s.evidence.get("count", 1)) for s in own if str(s.kind).endswith(" alert"))
        rows.append([
            c.score, 1.0 / c.rank, *(c.modality_scores.get(m, 0.0) for m in MODALITIES),
            max((s.strength for s in own if s.role == "cause"), default=0.0),
            max((s.strength for s in own if s.role == "symptom"), default=0.0),
            float(len(own)), float(len({s.kind for s in own})), float(alerts),
            math.log1p(callers[c.service]), math.log1p(callees[c.service]), float(callees[c.service] == 0),
            float(first is not None and onset.get(c.service) == first),
        ])
    x_CF = np.array(rows, dtype=float).reshape(len(rows), len(_BASE))
    scale = x_CF.max(axis=0)
    x_CF = x_CF / np.where(scale > 0, scale, 1.0)
    events_only = float(bool(signals) and all(s.modality == "events" for s in signals))
    return np.concatenate([x_CF, x_CF * events_only], axis=1)


@dataclass(frozen=True, kw_only=True)
class RankingModel:
    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features != FEATURES or len(self.weights) != len(FEATURES):
            raise ValueError("the ranking model was fitted on other features; retrain it (eval.train_ranking)")

    def score(self, x_CF: np.ndarray) -> np.ndarray:
        """(candidates,) probabilities that each is the root cause (a softmax over the incident's candidates)."""
        s_C = x_CF @ np.array(self.weights) + self.bias
        p_C = np.exp(s_C - s_C.max())
        return np.asarray(p_C / p_C.sum())

    def rerank(self, causes: Sequence[RootCause], signals: Sequence[Signal], index: IncidentIndex
               ) -> list[RootCause]:
        """The top candidates in the model's order (their score: its probability), then the rest as they were."""
        head, tail = list(causes[:CANDIDATES]), list(causes[CANDIDATES:])
        if not head:
            return []
        p_C = self.score(candidate_features(head, signals, index))
        order = sorted(range(len(head)), key=lambda i: (-p_C[i], head[i].rank))
        ranked = [head[i].model_copy(update={"score": round(float(p_C[i]), 6)}) for i in order]
        # The tail keeps its order under the head, its fusion scores rescaled below the head's lowest
        # probability, so that scores still fall with the rank.
        floor, top = float(p_C.min()), max((c.score for c in tail), default=0.0)
        tail = [c.model_copy(update={"score": round(floor * 0.99 * c.score / top, 6) if top > 0 else 0.0})
                for c in tail]
        return [c.model_copy(update={"rank": r}) for r, c in enumerate(ranked + tail, start=1)]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({"features": list(self.features), "weights": list(self.weights),
                                    "bias": self.bias, "card": self.card}, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path = MODEL_FILE) -> RankingModel:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(features=tuple(data["features"]), weights=tuple(float(w) for w in data["weights"]),
                   bias=float(data["bias"]), card=dict(data.get("card", {})))


def default_model(path: str | Path | None = None) -> tuple[RankingModel | None, str | None]:
    """(the model at `path`, by default the installed one, or None when there is none or it cannot be used;
    why it cannot, if so)."""
    path = Path(path) if path is not None else MODEL_FILE
    if not path.is_file():
        return (None, None) if path == MODEL_FILE else (None, f"{path} is not a file")
    return _load_cached(str(path), path.stat().st_mtime_ns)


def read_model(path: str | Path) -> RankingModel:
    """The model at a path a user named: a missing or unusable file is an error, not a silent fallback."""
    try:
        return RankingModel.load(path)
    except OSError as err:
        raise FlipmoeInputError(f"cannot read the ranking model ({err.strerror or err})", path=Path(path)) from None
    except (ValueError, KeyError, TypeError) as err:
        raise FlipmoeInputError(f"not a usable ranking model ({type(err).__name__}: {err})", path=Path(path),
                                hint="write one with 'flipmoe train ranking --out FILE'") from None


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, _mtime_ns: int) -> tuple[RankingModel | None, str | None]:
    """Read once per file version, not once per incident (keyed by modification time, so a retrained model
    is picked up)."""
    try:
        return RankingModel.load(path), None
    except (OSError, ValueError, KeyError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        return None, f"{Path(path).name} cannot be used ({type(err).__name__}: {err}); retrain it with " \
                     "flipmoe train ranking"
