"""The incident model, its on-disk form, and the fault taxonomy."""

from flipmoe.telemetry.incident import MODALITIES, Incident, IncidentMeta, Telemetry, TimeWindow, Topology
from flipmoe.telemetry.store import find_incidents, read_incident, read_table_file, write_incident
from flipmoe.telemetry.validate import empty_table, normalise_table

__all__ = [
    "MODALITIES",
    "Incident",
    "IncidentMeta",
    "Telemetry",
    "TimeWindow",
    "Topology",
    "empty_table",
    "find_incidents",
    "normalise_table",
    "read_incident",
    "read_table_file",
    "write_incident",
]
