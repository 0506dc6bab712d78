"""Fit the gate of the mixture (`router.gate`) on labelled incidents of several systems.

Every incident goes through the shipped path (`flipmoe rca`'s Director, in this process, with the gate and
the learned ranking off) and the modality steps' signals are kept; the fusion (`rank_root_causes`, the
function the localize step calls) is then re-run on them under each way of weighing the modalities:

- the entropy rule (shipped): a fixed prior per modality times how much it singles services out;
- uniform: every modality with evidence weighs 1;
- one modality alone (the others weigh 0), and the best of these on the training systems;
- the learned gate;
- the oracle: the incident counts as found when any of the above puts its root cause first.

Before the final fit on everything, each system is held out in turn (leave-one-system-out): fitted on the
others, scored on it; and every incident is scored by a gate fitted on the other folds (5-fold, shuffled), the
figure that counts for a gate fitted on one system's own incidents. The benchmark
(`benchmarks/bench_localization.py`) measures the same rows through `flipmoe rca --gate`, where the report's
first suspect is also checked by the verify steps.

    flipmoe train gate --incidents DIR [--incidents DIR ...] [--chaos-per-system 30] [--out PATH]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.train_ranking import analysed, shuffled_folds, system_of
from flipmoe.toolkits.localize import ModalityGate as GateFunction
from flipmoe.toolkits.localize import Signal, fusion_parts, rank_root_causes
from router.gate import MODALITIES, GateCase, ModalityGate, case_from_parts, fit, fixed_gate

STEPS = ("metrics", "traces", "logs", "events")


@dataclass(frozen=True)
class GateRecord:
    """One labelled incident: the fusion's inputs as the localize step had them, and its `GateCase`."""

    case: GateCase
    signals: tuple[Signal, ...]
    edges: tuple[tuple[str, str], ...]
    services: tuple[str, ...]
    label_service: str


def collect(directories: Sequence[Path], *, progress: Callable[[str], None] | None = None,
            history_from_folder: bool = False) -> list[GateRecord]:
    """Each labelled incident's signals, as `rca` computes them with the gate and the learned ranking off; with
    `history_from_folder`, each incident's parent folder is its alert history (`rca --history`)."""
    from flipmoe.toolkits.index import build_index

    records = []
    for directory, label, incident, outputs in analysed(directories, STEPS, progress=progress, every=25,
                                                        history_from_folder=history_from_folder,
                                                        learned_ranking=False, learned_gate=False):
        analyses = [o for o in outputs.values() if o is not None and o.available]
        modalities = {o.modality for o in analyses}
        signals = tuple(s for o in analyses for s in o.signals if s.modality in modalities)
        index = build_index(incident)
        edges = tuple(index.edges(traces="traces" in modalities))
        services = tuple(index.services)
        parts = fusion_parts(signals, call_edges=edges, services=services)
        if parts is not None:
            case = case_from_parts(parts, system=system_of(directory, label), incident=directory.name,
                                   label_service=label.service)
            records.append(GateRecord(case=case, signals=signals, edges=edges, services=services,
                                      label_service=label.service))
    return records


def first_service(record: GateRecord, gate: GateFunction | None) -> str | None:
    """The fusion's first service under `gate` (None: the entropy rule)."""
    localization = rank_root_causes(record.signals, call_edges=record.edges, services=record.services, gate=gate)
    return localization.root_causes[0].service if localization.root_causes else None


def strategies(train: Sequence[GateRecord], learned: ModalityGate | None) -> dict[str, GateFunction | None]:
    """The ways of weighing the modalities that the tables compare; the best single modality is chosen on
    `train` (the systems the gate was fitted on), never on the incidents it is scored on."""
    singles = {m: fixed_gate(only=m) for m in MODALITIES}
    chosen: dict[str, GateFunction | None] = {"entropy rule (shipped)": None, "uniform": fixed_gate()}
    if train:
        best = max(MODALITIES, key=lambda m: (hits(train, singles[m]), -MODALITIES.index(m)))
        chosen[f"best single ({best})"] = singles[best]
    if learned is not None:
        chosen["learned gate"] = learned
    return chosen


def hits(records: Sequence[GateRecord], gate: GateFunction | None) -> int:
    return sum(first_service(r, gate) == r.label_service for r in records)


def accuracy_table(records: Sequence[GateRecord], chosen: Mapping[str, GateFunction | None]) -> dict[str, float]:
    """Service A@1 of the fusion's first suspect under each way of weighing, and the oracle over them."""
    if not records:
        return {}
    found = {name: [first_service(r, gate) == r.label_service for r in records] for name, gate in chosen.items()}
    table = {name: round(sum(row) / len(records), 4) for name, row in found.items()}
    table["oracle (best of these per incident)"] = round(
        sum(any(row[i] for row in found.values()) for i in range(len(records))) / len(records), 4)
    return table


def leave_one_system_out(records: Sequence[GateRecord]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for held_out in sorted({r.case.system for r in records}):
        train = [r for r in records if r.case.system != held_out]
        test = [r for r in records if r.case.system == held_out]
        learned = fit([r.case for r in train]) if any(r.case.present_M.sum() >= 2 for r in train) else None
        table[held_out] = {"incidents": len(test), **accuracy_table(test, strategies(train, learned))}
    return table


def cross_validated(records: Sequence[GateRecord], folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Service A@1 of the entropy rule and of gates fitted on the other folds (incidents shuffled with `seed`,
    not stratified by system): does a gate help on incidents like its training ones, e.g. a system's own?"""
    k = min(folds, len(records))
    if k < 2:
        return {}
    rule = learned = 0
    for fold in shuffled_folds(len(records), k, seed=seed):
        held = set(fold.tolist())
        train = [r.case for i, r in enumerate(records) if i not in held]
        test = [records[i] for i in fold]
        gate = fit(train) if any(c.label >= 0 and c.present_M.sum() >= 2 for c in train) else None
        rule += hits(test, None)
        learned += hits(test, gate)
    return {"incidents": len(records), "folds": k, "entropy rule (shipped)": round(rule / len(records), 4),
            "learned gate": round(learned / len(records), 4)}


def train_gate(directories: Sequence[Path], *, out: Path, command: str = "",
               progress: Callable[[str], None] | None = None, history_from_folder: bool = False) -> ModalityGate:
    records = collect(directories, progress=progress, history_from_folder=history_from_folder)
    if not records:
        from flipmoe.errors import FlipmoeInputError

        raise FlipmoeInputError("no labelled incidents to learn from",
                                hint="give directories of incidents that have a label.json")
    loso = leave_one_system_out(records) if len({r.case.system for r in records}) > 1 else {}
    gate = fit([r.case for r in records], card={"command": command, "leave_one_system_out": loso,
                                                "cross_validated": cross_validated(records)})
    gate.card["in_sample"] = accuracy_table(records, strategies(records, gate))
    gate.save(out)
    return gate
