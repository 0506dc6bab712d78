"""The gate of the mixture: how much each modality's evidence counts in one incident's ranking.

The localisation (`flipmoe.toolkits.localize`) combines, per service, what each modality's analysis found
(metrics, traces, logs, events; the experts' scores are not among them yet) and by default weighs a modality
by a fixed prior times how much it singles services out (`entropy_rule`). The gate learns a correction of
that weighting from labelled incidents of several systems: for each modality of an incident it reads
features that mean the same thing in every system (how focused the modality's evidence is, how strong and
how clear its favourite, how many services it flags, whether the other modalities agree with it) and
weighs the modality

    w_m = rule_m * 2 * sigmoid(bias_m + coef . features_m)

with a bias per modality and one coefficient per feature shared by all modalities: ten numbers in all, so
that a few hundred incidents can fit them, and all of them 0 give the rule exactly. It is trained by
`flipmoe train gate` (`eval.train_gate`), validated leave-one-system-out, and used by `flipmoe rca --gate
FILE`; the rule stays the default until a gate beats it on systems it has not seen (none has yet: README,
"The gate of the mixture"). `fixed_gate` gives the baselines (uniform weights, one modality alone).

Inference is numpy; the fit (`fit`) uses torch for its gradients.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flipmoe.errors import FlipmoeInputError
from flipmoe.toolkits.localize import entropy_rule

GATE_FILE = Path(__file__).with_name("gate.json")
"""The shipped gate, if there is one (there is none while no gate beats the entropy rule held out)."""
MODALITIES = ("metrics", "traces", "logs", "events")
FEATURES = ("focus", "top", "margin", "breadth", "coverage", "agreement")
"""Per modality, over every service of the incident: 1 - normalised entropy of its scores; its highest score;
the gap between its first and second service; the share of services it scores >= 0.5; the share it scores at
all; its score of the other modalities' favourite relative to its own highest (1 without other modalities)."""
TEMPERATURE = 0.1
"""The fit's softmax over services is of log(score) / TEMPERATURE, i.e. score^10: fixed, not tuned."""
L2 = 1.0
"""The fit's penalty on the parameters (per incident, every system weighing the same); fixed, not tuned."""


def modality_features(per_modality: Mapping[str, Mapping[str, float]], n_services: int
                      ) -> dict[str, np.ndarray]:
    """{modality: its features (`FEATURES`)} for every modality with evidence in `per_modality`."""
    modalities = sorted({m for scores in per_modality.values() for m in scores})
    services = sorted(per_modality)
    n = max(n_services, len(services), 1)
    if not modalities:
        return {}
    # Services without evidence are rows of zeros: they count in the shares but not in the sums.
    table_SM = np.zeros((n, len(modalities)))
    for i, service in enumerate(services):
        for j, modality in enumerate(modalities):
            table_SM[i, j] = per_modality[service].get(modality, 0.0)
    features = {}
    for j, modality in enumerate(modalities):
        col_S = table_SM[:, j]
        top = float(col_S.max())
        ordered = np.sort(col_S)[::-1]
        p = col_S[col_S > 0] / max(float(col_S.sum()), 1e-12)
        entropy = float(-(p * np.log(p)).sum()) / math.log(n) if n > 1 else 0.0
        others_S = np.delete(table_SM, j, axis=1).sum(axis=1)
        if others_S.max() > 0:
            agreement = float(col_S[int(np.argmax(others_S))]) / top if top > 0 else 0.0
        else:
            agreement = 1.0
        features[modality] = np.array([
            1.0 - entropy, top, top - float(ordered[1] if n > 1 else 0.0), float((col_S >= 0.5).mean()),
            float((col_S > 0).mean()), agreement])
    return features


@dataclass(frozen=True, kw_only=True)
class ModalityGate:
    """A learned gate: a bias per modality, one coefficient per feature; callable as `localize.ModalityGate`."""

    features: tuple[str, ...]
    bias: Mapping[str, float]
    coef: tuple[float, ...]
    relative: bool = True
    """True: the weight is the entropy rule's times 2·sigmoid(...), a correction of the rule (all parameters 0
    give the rule exactly); False: the weight is sigmoid(...) itself (the fixed baselines of `fixed_gate`)."""
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features != FEATURES or len(self.coef) != len(FEATURES):
            raise ValueError("the gate was fitted on other features; retrain it (flipmoe train gate)")
        if set(self.bias) != set(MODALITIES):
            raise ValueError(f"the gate needs a bias for each of {', '.join(MODALITIES)}")

    def __call__(self, per_modality: Mapping[str, Mapping[str, float]], n_services: int) -> dict[str, float]:
        coef_F = np.array(self.coef)
        # A modality the gate was not fitted on gets the mean bias.
        default = float(np.mean(list(self.bias.values())))
        rule = entropy_rule(per_modality, n_services) if self.relative else {}
        return {m: (2.0 * rule[m] if self.relative else 1.0)
                / (1.0 + math.exp(-(self.bias.get(m, default) + float(f_F @ coef_F))))
                for m, f_F in modality_features(per_modality, n_services).items()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        data = {"features": list(self.features), "bias": dict(self.bias), "coef": list(self.coef),
                "relative": self.relative, "card": self.card}
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModalityGate:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(features=tuple(data["features"]), bias={str(k): float(v) for k, v in data["bias"].items()},
                   coef=tuple(float(c) for c in data["coef"]), relative=bool(data.get("relative", True)),
                   card=dict(data.get("card", {})))


def fixed_gate(only: str | None = None) -> ModalityGate:
    """A gate that ignores the features: every modality weighs 1 (uniform), or `only` weighs 1 and the others
    0 (one modality alone). The baselines the learned gate is compared with, as files `rca --gate` reads."""
    if only is not None and only not in MODALITIES:
        raise ValueError(f"unknown modality {only!r}")
    # sigmoid(+-30) is 1 or 0 to 13 digits.
    return ModalityGate(features=FEATURES, bias={m: -30.0 if only not in (None, m) else 30.0 for m in MODALITIES},
                        coef=(0.0,) * len(FEATURES), relative=False, card={"fixed": only or "uniform"})


def read_gate(path: str | Path) -> ModalityGate:
    """The gate at a path a user named: a missing or unusable file is an error, not a silent fallback."""
    try:
        return _load_cached(str(path), Path(path).stat().st_mtime_ns)
    except OSError as err:
        raise FlipmoeInputError(f"cannot read the gate ({err.strerror or err})", path=Path(path)) from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise FlipmoeInputError(f"not a usable gate ({type(err).__name__}: {err})", path=Path(path),
                                hint="write one with 'flipmoe train gate --out FILE'") from None


def default_gate(path: str | Path | None = None) -> tuple[ModalityGate | None, str | None]:
    """(the gate at `path`, by default the shipped one; None when there is none or it cannot be used; why
    it cannot, if so)."""
    path = Path(path) if path is not None else GATE_FILE
    if not path.is_file():
        return (None, None) if path == GATE_FILE else (None, f"{path} is not a file")
    try:
        return _load_cached(str(path), path.stat().st_mtime_ns), None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return None, f"{path.name} cannot be used ({type(err).__name__}: {err}); retrain it with flipmoe train gate"


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, _mtime_ns: int) -> ModalityGate:
    """Read once per file version, not once per incident (keyed by modification time)."""
    return ModalityGate.load(path)


# ------------------------------------------------------------------------------------------------ fitting


@dataclass(frozen=True)
class GateCase:
    """One labelled incident, reduced to what the gate changes: per service and modality the evidence, the
    propagation and onset factors the fusion multiplies it with, and which service is the root cause."""

    system: str
    incident: str
    services: tuple[str, ...]
    evidence_SM: np.ndarray
    """(services, MODALITIES) `modality_evidence` scores, 0 where a modality has none."""
    features_MF: np.ndarray
    """(MODALITIES, FEATURES) `modality_features`, 0 for a modality without evidence."""
    present_M: np.ndarray
    rule_M: np.ndarray
    """The entropy rule's weights (`flipmoe.toolkits.localize.entropy_rule`), which the gate corrects."""
    propagation_S: np.ndarray
    """Under the entropy rule's weights (the fit holds it fixed; the evaluation reruns the whole fusion)."""
    onset_S: np.ndarray
    label: int
    """Index of the root-cause service in `services`, -1 when it is not among them."""


def case_from_parts(parts: Any, *, system: str, incident: str, label_service: str) -> GateCase:
    """A `GateCase` from `flipmoe.toolkits.localize.fusion_parts` (under the entropy rule) and the label."""
    services = tuple(parts.services)
    evidence_SM = np.array([[parts.per_modality.get(s, {}).get(m, 0.0) for m in MODALITIES] for s in services])
    feats = modality_features(parts.per_modality, len(services))
    features_MF = np.array([feats.get(m, np.zeros(len(FEATURES))) for m in MODALITIES])
    return GateCase(system=system, incident=incident, services=services, evidence_SM=evidence_SM,
                    features_MF=features_MF, present_M=np.array([m in feats for m in MODALITIES], dtype=float),
                    rule_M=np.array([parts.weights.get(m, 0.0) for m in MODALITIES]),
                    propagation_S=np.array([parts.propagation[s] for s in services]),
                    onset_S=np.array([parts.onset.get(s, 1.0) for s in services]),
                    label=services.index(label_service) if label_service in services else -1)


def fit(cases: Sequence[GateCase], *, card: dict[str, Any] | None = None, steps: int = 300) -> ModalityGate:
    """Fit the gate: per incident, a softmax over services of the fused score (as `rank_root_causes` computes
    it, with the propagation held at the entropy rule's) should put its mass on the root cause; every system
    weighs the same, and an L2 penalty keeps the parameters small. Only incidents with two or more modalities
    teach the gate anything (with one, a weight does not change the order), so only they are used. Written
    with torch's L-BFGS because scikit-learn has no model of this shape."""
    import torch

    usable = [c for c in cases if c.label >= 0 and c.present_M.sum() >= 2]
    if not usable:
        raise FlipmoeInputError("no labelled incident with two or more modalities to fit the gate on",
                                hint="give incidents with metrics, traces or logs as well as events")
    counts: dict[str, int] = {}
    for c in usable:
        counts[c.system] = counts.get(c.system, 0) + 1
    weight_C = [1.0 / (counts[c.system] * len(counts)) for c in usable]
    tensors = [(torch.tensor(c.evidence_SM), torch.tensor(c.features_MF), torch.tensor(c.rule_M),
                torch.tensor(c.propagation_S), torch.tensor(c.onset_S)) for c in usable]
    bias_M = torch.zeros(len(MODALITIES), dtype=torch.float64, requires_grad=True)
    coef_F = torch.zeros(len(FEATURES), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([bias_M, coef_F], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.zeros((), dtype=torch.float64)
        for weight, c, (e_SM, f_MF, rule_M, prop_S, onset_S) in zip(weight_C, usable, tensors, strict=True):
            w_M = 2.0 * torch.sigmoid(bias_M + f_MF @ coef_F) * rule_M
            fused_S = 1.0 - torch.prod(1.0 - (e_SM * w_M).clamp(max=1.0), dim=1)
            score_S = torch.sqrt(fused_S * prop_S + 1e-12) * onset_S
            logits_S = torch.log(score_S + 1e-9) / TEMPERATURE
            loss = loss - weight * torch.log_softmax(logits_S, dim=0)[c.label]
        loss = loss + L2 / len(usable) * (bias_M.square().sum() + coef_F.square().sum())
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return ModalityGate(features=FEATURES, bias={m: round(float(b), 6) for m, b in zip(MODALITIES, bias_M.tolist(),
                                                                                            strict=True)},
                        coef=tuple(round(float(c), 6) for c in coef_F.tolist()),
                        card={**(card or {}), "incidents": len(usable), "systems": counts})
