"""The incident model, its on-disk form, and the fault taxonomy."""

from flipmoe.telemetry.incident import MODALITIES, Incident, IncidentMeta, Telemetry, TimeWindow, Topology
from flipmoe.telemetry.store import read_incident, read_table_file, write_incident
from flipmoe.telemetry.validate import empty_table, normalise_table

__all__ = [
    "MODALITIES",
    "Incident",
    "IncidentMeta",
    "Telemetry",
    "TimeWindow",
    "Topology",
    "empty_table",
    "normalise_table",
    "read_incident",
    "read_table_file",
    "write_incident",
]
