"""flipmoe: root-cause analysis of production incidents with a mixture of modality experts.

The public surface is kept small; everything else is reachable through its submodule. Names are
imported on first use so that `import flipmoe` (and `flipmoe --help`) does not load pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FlipMoE": "router.moe",
    "FlipmoeInputError": "flipmoe.errors",
    "Incident": "flipmoe.telemetry",
    "IncidentMeta": "flipmoe.telemetry",
    "TimeWindow": "flipmoe.telemetry",
    "read_incident": "flipmoe.telemetry",
    "write_incident": "flipmoe.telemetry",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flipmoe' has no attribute {name!r}")
