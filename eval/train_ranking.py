"""Fit the learned ranking (`flipmoe.toolkits.ranking`) on labelled incidents of several systems.

Every incident goes through the shipped path (`flipmoe rca`'s Director, in this process, with the learned
ranking switched off) and the localize step's candidates and features are read from its output; a
candidate is positive when it is the labelled root cause (its service, and its pod when both are known).
One configuration for every system: a linear scorer fitted listwise (softmax over each incident's
candidates), every system weighing the same, with a fixed L2 penalty. Before
the final fit on everything, each system is held out in turn (leave-one-system-out): fitted on the others,
scored on it, next to the fusion's own order, so the card says how the model does on a system it has
never seen.

    flipmoe train ranking --incidents DIR[,DIR...] [--chaos-per-system 40] [--out PATH]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flipmoe.telemetry import Incident, find_incidents, read_incident
from flipmoe.telemetry.label import Label, load_label
from flipmoe.toolkits.ranking import FEATURES, RankingModel

C = 1.0
"""Inverse regularisation; fixed, not tuned per data set."""


@dataclass(frozen=True)
class Group:
    """One incident's candidates: features, which one is the root cause, its system."""

    system: str
    incident: str
    x_CF: np.ndarray
    y_C: np.ndarray
    services: tuple[str, ...]
    label_service: str


def system_of(directory: Path, label: Label) -> str:
    """The system an incident comes from: the chaos gym's, the data set's, or the importer's prefix."""
    extra = label.extra or {}
    if extra.get("system"):
        return str(extra["system"])
    return label.source or directory.parent.name


def analysed(directories: Sequence[Path], steps: Sequence[str], *, progress: Callable[[str], None] | None = None,
             history_from_folder: bool = False, every: int = 50, **settings: Any
             ) -> Iterator[tuple[Path, Label, Incident, dict[str, Any]]]:
    """Each labelled incident of `directories` (unlabelled ones are skipped) run through the shipped path (`rca`'s
    Director in this process, with `RunSettings(**settings)`): its folder, label, incident and the outputs of the
    runbook steps `steps`. With `history_from_folder`, each incident's parent folder is its alert history (`rca
    --history`)."""
    from director.actors.base import RunSettings
    from director.director import Director, local_director

    directors: dict[Path | None, Director] = {}
    for position, directory in enumerate(directories, start=1):
        label = load_label(directory)
        if label is not None:
            history = Path(directory).resolve().parent if history_from_folder else None
            if history not in directors:
                directors[history] = local_director(settings=RunSettings(history=history, **settings))
            incident = read_incident(directory)
            _, outputs = directors[history].analyse_with_outputs(incident, steps)
            yield directory, label, incident, outputs
        if progress is not None and position % every == 0:
            progress(f"[{position}/{len(directories)}] incidents analysed")


def collect(directories: Sequence[Path], *, progress: Callable[[str], None] | None = None,
            history_from_folder: bool = False) -> list[Group]:
    """Each labelled incident's candidates and features, as `rca` computes them with the learned ranking off;
    with `history_from_folder`, each incident's parent folder is its alert history (`rca --history`)."""
    groups = []
    for directory, label, _, outputs in analysed(directories, ["rank"], progress=progress,
                                                 history_from_folder=history_from_folder, learned_ranking=False):
        rank = outputs["rank"]
        if rank is None or not rank.features:
            continue
        y = [s == label.service and (label.pod is None or p is None or p == label.pod) for s, p in rank.candidates]
        groups.append(Group(system=system_of(directory, label), incident=directory.name,
                            x_CF=np.array(rank.features, dtype=float), y_C=np.array(y, dtype=float),
                            services=tuple(s for s, _ in rank.candidates), label_service=label.service))
    return groups


def fit(groups: Sequence[Group], *, card: dict[str, Any] | None = None) -> RankingModel:
    """Listwise fit: per incident, the softmax over its candidates' scores should put its mass on the root
    cause (ListNet-style cross-entropy), with every system weighing the same in the loss so that the largest
    data set does not decide alone, and an L2 penalty (1 / C). Written with scipy's L-BFGS because
    scikit-learn has no listwise objective."""
    from scipy.optimize import minimize

    usable = [g for g in groups if g.y_C.any()]
    counts: dict[str, int] = {}
    for g in usable:
        counts[g.system] = counts.get(g.system, 0) + 1
    weights_G = np.array([1.0 / (counts[g.system] * len(counts)) for g in usable])
    n_features = len(FEATURES)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w_F, total, grad_F = theta[:n_features], 0.0, np.zeros(n_features)
        for weight, g in zip(weights_G, usable, strict=True):
            s_C = g.x_CF @ w_F
            p_C = np.exp(s_C - s_C.max())
            p_C /= p_C.sum()
            target_C = g.y_C / g.y_C.sum()
            total -= weight * float(target_C @ np.log(p_C + 1e-12))
            grad_F -= weight * (g.x_CF.T @ (target_C - p_C))
        total += 0.5 / C * float(w_F @ w_F) / max(len(usable), 1)
        grad_F += w_F / C / max(len(usable), 1)
        return total, np.concatenate([grad_F, [0.0]])

    theta = minimize(loss, np.zeros(n_features + 1), jac=True, method="L-BFGS-B").x
    # A softmax over one incident's candidates is blind to a constant: the bias only sets the scale of the
    # probabilities the report shows, so it is fixed at 0.
    return RankingModel(features=FEATURES, weights=tuple(float(w) for w in theta[:n_features]), bias=0.0,
                        card=dict(card or {}))


def service_accuracy(groups: Sequence[Group], model: RankingModel | None) -> float:
    """Service-level A@1 among the candidates: the model's first, or the fusion's first without a model."""
    hits = 0
    for g in groups:
        first = int(np.argmax(model.score(g.x_CF))) if model is not None else 0
        hits += g.services[first] == g.label_service
    return hits / len(groups) if groups else float("nan")


def leave_one_system_out(groups: Sequence[Group]) -> dict[str, dict[str, float]]:
    systems = sorted({g.system for g in groups})
    table = {}
    for held_out in systems:
        train = [g for g in groups if g.system != held_out]
        test = [g for g in groups if g.system == held_out]
        model = fit(train)
        table[held_out] = {"incidents": len(test), "fusion_A@1": round(service_accuracy(test, None), 4),
                           "learned_A@1": round(service_accuracy(test, model), 4)}
    return table


def shuffled_folds(n: int, k: int, *, seed: int = 0) -> list[np.ndarray]:
    """Indices 0..n-1 shuffled with `seed` and cut into k nearly equal folds."""
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def cross_validated(groups: Sequence[Group], folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Service A@1 of the fusion and of models fitted on the other folds (incidents shuffled with `seed`,
    not stratified by system): does the ranking help on incidents like the training ones?"""
    k = min(folds, len(groups))
    if k < 2:
        return {}
    hits = 0.0
    for fold in shuffled_folds(len(groups), k, seed=seed):
        held = set(fold.tolist())
        model = fit([g for i, g in enumerate(groups) if i not in held])
        hits += service_accuracy([groups[i] for i in fold], model) * len(fold)
    return {"folds": k, "fusion_A@1": round(service_accuracy(groups, None), 4),
            "learned_A@1": round(hits / len(groups), 4)}


def train_ranking(directories: Sequence[Path], *, out: Path, command: str = "",
                  progress: Callable[[str], None] | None = None, history_from_folder: bool = False) -> RankingModel:
    groups = collect(directories, progress=progress, history_from_folder=history_from_folder)
    if not groups:
        from flipmoe.errors import FlipmoeInputError

        raise FlipmoeInputError("no labelled incidents with candidates to learn from",
                                hint="give directories of incidents that have a label.json")
    systems = {s: sum(1 for g in groups if g.system == s) for s in sorted({g.system for g in groups})}
    loso = leave_one_system_out(groups) if len(systems) > 1 else {}
    model = fit(groups, card={"incidents": len(groups), "systems": systems, "C": C,
                              "leave_one_system_out": loso, "cross_validated": cross_validated(groups),
                              "command": command})
    model.save(out)
    return model


def incident_dirs(paths: Sequence[str | Path]) -> list[Path]:
    return [d for p in paths for d in find_incidents(p)]
