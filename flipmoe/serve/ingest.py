"""Incidents posted as JSON: the incident directory's content, row by row.

```
{"incident": {"id": ..., "alert": ..., "window": {"start": ..., "end": ...}},
 "metrics": [{"timestamp": ..., "service": ..., "metric": ..., "value": ...}, ...],
 "logs": [...], "spans": [...], "events": [...], "topology": {...}}
```
Every table goes through the same validation as files on disk (`normalise_table`), so a bad row
gets the same message naming the table, the column and the row; cells must be JSON scalars. The body
itself is parsed by `flipmoe.telemetry.json_input.parse_json` (depth, UTF-8 and Unicode checked). `JsonBody`
is the base of the service's pydantic request bodies, with the same checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, model_validator

from flipmoe.config import TelemetryConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import MODALITIES, Incident, IncidentMeta, Telemetry, Topology, normalise_table, write_incident
from flipmoe.telemetry.json_input import check_json_value


class JsonBody(BaseModel):
    """A JSON request body: nested at most 64 levels deep, its text valid Unicode (no lone surrogates)."""

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, data: Any) -> Any:
        try:
            check_json_value(data)
        except FlipmoeInputError as err:
            raise ValueError(err.problem) from None
        return data


def incident_from_json(body: Any, *, config: TelemetryConfig | None = None) -> Incident:
    if not isinstance(body, dict):
        raise FlipmoeInputError("the request body must be a JSON object")
    unknown = sorted(set(body) - {"incident", "topology", *MODALITIES})
    if unknown:
        raise FlipmoeInputError(f"unknown field(s) {', '.join(unknown)}",
                                hint=f"expected incident, topology and tables {', '.join(MODALITIES)}")
    if "incident" not in body:
        raise FlipmoeInputError("missing field 'incident' (id, alert, window {start, end})")
    warnings: list[str] = []
    meta = IncidentMeta.from_json(body["incident"], path="incident", warnings=warnings)
    tables: dict[str, pd.DataFrame | None] = {}
    for name in MODALITIES:
        rows = body.get(name)
        if rows is None:
            tables[name] = None
            continue
        _check_rows(rows, name)
        tables[name] = normalise_table(pd.DataFrame(rows), name, source=name, config=config, warnings=warnings)
    topology = Topology.from_json(body["topology"], path="topology") if body.get("topology") is not None else None
    return Incident(meta=meta, telemetry=Telemetry(**tables), topology=topology, warnings=warnings)


def _check_rows(rows: Any, name: str) -> None:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise FlipmoeInputError(f"'{name}' must be a list of row objects")
    for number, row in enumerate(rows, start=1):
        for column, value in row.items():
            # A nested value would become its Python repr in a text column: refuse it instead.
            if isinstance(value, dict | list):
                raise FlipmoeInputError(f"'{name}' row {number}: '{column}' must be a string, number, boolean or "
                                        f"null, not {'an object' if isinstance(value, dict) else 'an array'}")


def write_json_incident(body: Any, directory: Path, *, config: TelemetryConfig | None = None) -> Path:
    incident = incident_from_json(body, config=config)
    write_incident(incident, directory)
    return directory
