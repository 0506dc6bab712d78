"""flipmoe: root-cause analysis of production incidents with a mixture of modality experts.

The public surface is kept small; everything else is reachable through its submodule.
"""

__version__ = "0.1.0"

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident, IncidentMeta, TimeWindow, read_incident, write_incident

__all__ = [
    "FlipmoeInputError",
    "Incident",
    "IncidentMeta",
    "TimeWindow",
    "__version__",
    "read_incident",
    "write_incident",
]
