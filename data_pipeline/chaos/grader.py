"""Multi-factor grader of a root-cause submission, in the spirit of ThinkFL's failure-localisation grader.

A submission is a ranked list of candidate root causes, each a dict naming a `service`, `pod` and/or
`node` (ThinkFL's `print_results` entries; an optional free-text `reason` is allowed). The reward is

    total = W_correct * correctness + W_format * format + W_efficiency * efficiency * correctness

with, by default, W_correct = 0.8, W_format = 0.1, W_efficiency = 0.1, so total lies in [0, 1]:

- correctness = sum over levels L in {service, pod, node} of w_L * 1 / rank_L, divided by the sum of
  w_L over the levels the label defines (a label without a pod or node does not penalise them).
  Default w_service = 0.5, w_pod = 0.3, w_node = 0.2. rank_L is the 1-based position of the first
  entry whose L equals the label's L (case-insensitive), counted among the distinct well-formed
  entries that name an L; ranks beyond `top_k` (default 5) earn nothing, so listing every service
  does not pay. Ranking per level lets an answer name the service, the pod and the node in separate
  entries, as ThinkFL's examples do.
- format = (well-formed calls / all calls of the episode)
           * (distinct well-formed entries / max(entries submitted, `min_entries`)).
  An entry is well-formed when it is a dict with only the keys service, pod, node, reason and a
  non-empty string for at least one of service, pod, node. A repeated entry counts as malformed,
  and a list shorter than `min_entries` (3) cannot score full format.
- efficiency = 1 - (steps - 1) / max_steps, clipped to [0, 1]: answering on the first step scores 1.
  It is multiplied by correctness so that a quick wrong answer earns no speed bonus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.label import Label
from flipmoe.toolkits.explore import ENTRY_LEVELS, is_wellformed_entry

LEVELS = ENTRY_LEVELS


@dataclass(frozen=True, kw_only=True)
class GraderWeights:
    """Weights and limits of the grader's formula (see the module docstring)."""

    correctness: float = 0.8
    """Share of the total earned by naming the right root cause."""
    format: float = 0.1
    """Share earned by well-formed calls and entries."""
    efficiency: float = 0.1
    """Share earned by answering (correctly) in few steps."""
    service: float = 0.5
    """Relative weight of the service level inside correctness."""
    pod: float = 0.3
    """Relative weight of the pod level inside correctness."""
    node: float = 0.2
    """Relative weight of the node level inside correctness."""
    top_k: int = 5
    """Entries ranked below this (per level) earn no correctness."""
    min_entries: int = 3
    """A submission must list at least this many entries (ThinkFL asks for three)."""

    def __post_init__(self) -> None:
        weights = (self.correctness, self.format, self.efficiency, self.service, self.pod, self.node)
        if any(w < 0 for w in weights):
            raise FlipmoeInputError("grader weights must be >= 0")
        if abs(self.correctness + self.format + self.efficiency - 1.0) > 1e-9:
            raise FlipmoeInputError("grader weights correctness + format + efficiency must sum to 1")
        if self.service <= 0:
            raise FlipmoeInputError("grader weight service must be > 0: every label names a service")
        if self.top_k < 1 or self.min_entries < 1:
            raise FlipmoeInputError("grader top_k and min_entries must be >= 1")


def _entry_key(entry: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(_norm(entry.get(level)) for level in LEVELS)


def _norm(value: object) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def distinct_entries(root_causes: Sequence[object]) -> list[Mapping[str, Any]]:
    """The well-formed entries in order, each repeat of an earlier (service, pod, node) dropped."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for entry in root_causes:
        if not is_wellformed_entry(entry):
            continue
        key = _entry_key(entry)
        if key not in seen:
            seen.add(key)
            kept.append(entry)
    return kept


def rank_at_level(entries: Sequence[Mapping[str, Any]], level: str, truth: str) -> int | None:
    """1-based rank of the first entry naming `truth` at `level`, among distinct values named there."""
    values: list[str] = []
    for entry in entries:
        value = _norm(entry.get(level))
        if value and value not in values:
            values.append(value)
    target = _norm(truth)
    return values.index(target) + 1 if target in values else None


def _level_credit(rank: int | None, top_k: int) -> float:
    return 1.0 / rank if rank is not None and rank <= top_k else 0.0


def correctness(entries: Sequence[Mapping[str, Any]], label: Label, weights: GraderWeights
                ) -> tuple[float, dict[str, Any]]:
    """Weighted reciprocal-rank credit over the levels the label defines, in [0, 1]."""
    credit_sum = weight_sum = 0.0
    detail: dict[str, Any] = {}
    for level in LEVELS:
        truth = getattr(label, level)
        if not truth:
            detail[level], detail[f"{level}_rank"] = None, None
            continue
        rank = rank_at_level(entries, level, truth)
        credit = _level_credit(rank, weights.top_k)
        detail[level], detail[f"{level}_rank"] = credit, rank
        credit_sum += getattr(weights, level) * credit
        weight_sum += getattr(weights, level)
    return credit_sum / weight_sum, detail


def format_score(root_causes: Sequence[object], *, calls: int, malformed_calls: int,
                 min_entries: int) -> float:
    """Share of well-formed calls times share of distinct well-formed entries (see module docstring)."""
    call_share = (calls - malformed_calls) / calls if calls > 0 else 1.0
    entry_share = len(distinct_entries(root_causes)) / max(len(root_causes), min_entries)
    return max(0.0, call_share) * entry_share


def efficiency_score(steps: int, max_steps: int) -> float:
    """1 for an answer on the first step, falling linearly to 0 at `max_steps + 1` steps."""
    return min(1.0, max(0.0, 1.0 - (steps - 1) / max_steps))


def grade_submission(
    root_causes: Sequence[object],
    label: Label,
    *,
    steps: int,
    max_steps: int,
    calls: int | None = None,
    malformed_calls: int = 0,
    weights: GraderWeights | None = None,
) -> tuple[float, dict[str, Any]]:
    """Grade one submission; returns (total, breakdown).

    `steps` counts the episode's calls up to and including the submission; `calls` (default
    `steps`) and `malformed_calls` feed the format factor. The breakdown has the per-level credit
    and rank (None where the label has no such level), `correctness`, `format`, `efficiency` and
    `total`.
    """
    weights = weights or GraderWeights()
    if steps < 1 or max_steps < 1:
        raise FlipmoeInputError(f"steps ({steps}) and max_steps ({max_steps}) must be >= 1")
    entries = distinct_entries(root_causes)
    correct, breakdown = correctness(entries, label, weights)
    fmt = format_score(root_causes, calls=steps if calls is None else calls,
                       malformed_calls=malformed_calls, min_entries=weights.min_entries)
    efficiency = efficiency_score(steps, max_steps)
    total = (weights.correctness * correct + weights.format * fmt
             + weights.efficiency * efficiency * correct)
    breakdown.update(correctness=correct, format=fmt, efficiency=efficiency, total=total)
    return total, breakdown
