"""Ground truth of an incident (`label.json`) and the evaluation accessor that reads it.

The analysis path must never see the answer. `read_incident` does not open `label.json`; only
`load_label` does, and only evaluation code imports this module (a test enforces that the
`director/` analysis path does not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.taxonomy import FAULT_TYPES

LABEL_FILE = "label.json"


@dataclass(kw_only=True)
class Label:
    """The injected root cause of an incident."""

    service: str
    pod: str | None = None
    node: str | None = None
    fault_type: str
    """A name from flipmoe's taxonomy (`flipmoe.telemetry.taxonomy.FAULT_TYPES`)."""
    original_type: str | None = None
    """The data set's own name for the fault type, when imported."""
    fine_grained: str | None = None
    """The precise cause: a metric name, a code location, a config key."""
    propagation_path: list[str] = field(default_factory=list)
    """Services the fault propagated through, root cause first."""
    inject_time: str | None = None
    """UTC ISO-8601 time of the injection."""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fault_type not in FAULT_TYPES:
            raise FlipmoeInputError(f"label fault_type {self.fault_type!r} is not in the taxonomy",
                                    hint=f"valid: {', '.join(FAULT_TYPES)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service, "pod": self.pod, "node": self.node, "fault_type": self.fault_type,
            "original_type": self.original_type, "fine_grained": self.fine_grained,
            "propagation_path": self.propagation_path, "inject_time": self.inject_time,
            "source": self.source, "extra": self.extra,
        }


def load_label(incident_dir: str | Path) -> Label | None:
    """Evaluation accessor: the incident's ground truth, or None when it has no label."""
    path = Path(incident_dir) / LABEL_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise FlipmoeInputError(f"not valid JSON: {err}", path=path) from None
    if not isinstance(data, dict) or "service" not in data or "fault_type" not in data:
        raise FlipmoeInputError("a label needs at least 'service' and 'fault_type'", path=path)
    known = set(Label.__dataclass_fields__)
    extra = {k: v for k, v in data.items() if k not in known}
    fields = {k: v for k, v in data.items() if k in known}
    fields.setdefault("extra", {}).update(extra)
    try:
        return Label(**fields)
    except (TypeError, FlipmoeInputError) as err:
        raise FlipmoeInputError(str(err), path=path) from None
