"""What the generic importers share: writing imported telemetry as an incident directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident, IncidentMeta, Telemetry, TimeWindow, Topology, write_incident


def write_imported(out: str | Path, telemetry: Telemetry, *, baseline: Telemetry | None,
                   placement: dict[str, str], incident_id: str | None, alert: str, window: TimeWindow | None,
                   source: str, overwrite: bool) -> Path:
    """Write imported telemetry as the incident directory `out`, with the importers' defaults.

    The id defaults to `out`'s name, the window to the time span of the data; the topology is
    derived from the spans of the window and the baseline, when there are any.
    """
    out = Path(out)
    if not telemetry.modalities:
        raise FlipmoeInputError("no metrics, logs, spans or events to import", path=out)
    meta = IncidentMeta(id=incident_id or out.absolute().name, alert=alert,
                        window=window or _data_window(telemetry), source=source)
    all_spans = [t.spans for t in (telemetry, baseline) if t is not None and t.spans is not None]
    topology = Topology.from_spans(pd.concat(all_spans), placement=placement) if all_spans else None
    incident = Incident(meta=meta, telemetry=telemetry, baseline=baseline, topology=topology)
    return write_incident(incident, out, overwrite=overwrite)


def _data_window(telemetry: Telemetry) -> TimeWindow:
    """Whole seconds around every timestamp of the data, span ends included."""
    starts, ends = [], []
    try:
        for name in telemetry.modalities:
            table = telemetry.table(name)
            assert table is not None
            if name == "spans":
                starts.append(table["start"].min())
                ends.append((table["start"] + pd.to_timedelta(table["duration"], unit="ms")).max())
            else:
                starts.append(table["timestamp"].min())
                ends.append(table["timestamp"].max())
        # Half-open window: the end is pushed past the last timestamp so that it stays inside.
        return TimeWindow(min(starts).floor("s"), (max(ends) + pd.Timedelta(1, "ns")).ceil("s"))
    except (OverflowError, pd.errors.OutOfBoundsDatetime, pd.errors.OutOfBoundsTimedelta):
        raise FlipmoeInputError("the data's time span reaches beyond the timestamps pandas can hold (2262)",
                                hint="check the timestamps and durations, or give the window explicitly") from None
