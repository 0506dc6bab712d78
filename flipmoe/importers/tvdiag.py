"""TVDiag cases -> incident directories of alert events (`flipmoe import tvdiag`).

A TVDiag release (WHU-AISE; GAIA/MicroSS, SockShop, HotelReservation) holds, per system,
`label.csv` (one row per case: root-cause `instance`, `anomaly_type`, `data_type` train/test; GAIA
also `service` and the injector's own log line `message`) and `raw/{metrics,logs,traces,nodes,edges}.json`
(case id -> the alerts its detectors raised, and the case's call graph over instances). Each case
becomes `DIR/<system>-<index>/` with:

- `events.parquet`: one row per alert. `kind` is `metric` / `log` / `trace`; `pod` the instance,
  `service` its service (the instance without its replica suffix), `node` the host for metric alerts
  on a host; `reason` the KPI, the log template id or the operation; `message` the direction
  (`up` / `down`) or, for traces, the status (`PD`: performance degradation, or an HTTP status) and
  the caller. Alerts carry no timestamps in the source: every one is stamped at the case's synthetic
  alert time, and `incident.json`'s `source` says so.
- `topology.json`: the case's call graph, at service level.
- `label.json`: pod = the instance, its service, the fault type mapped into flipmoe's taxonomy
  (`DATASET_MAPPINGS["tvdiag"]`) and the original type. GAIA's injector message is ground truth and
  goes to the label only (`extra.message`), never into the telemetry.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident, IncidentMeta, Telemetry, TimeWindow, Topology, write_incident
from flipmoe.telemetry.json_input import JsonInputError, parse_json
from flipmoe.telemetry.label import Label
from flipmoe.telemetry.taxonomy import map_dataset_type
from flipmoe.telemetry.validate import normalise_table

SPLITS = ("train", "test", "all")
ALERT_TIME = pd.Timestamp("2020-01-01T00:00:00Z")
"""The synthetic alert time every case's alerts are stamped at (the source has none)."""
_WINDOW = pd.Timedelta(minutes=10)
_RAW = ("metrics", "logs", "traces", "nodes", "edges")
_REPLICA = re.compile(r"(?:-\d+|\d+)$")


@dataclass(frozen=True)
class Case:
    system: str
    index: str
    label: dict[str, str]
    metrics: list[list[str]]
    logs: list[list[str]]
    traces: list[list[str]]
    nodes: list[str]
    edges: list[list[int]]


def service_of(instance: str) -> str:
    """`orders-1` -> `orders`, `dbservice1` -> `dbservice`, `carts-db-0` -> `carts-db`."""
    return _REPLICA.sub("", instance) or instance


def systems_of(root: str | Path) -> list[str]:
    """The systems under `root`: the folders that hold a label.csv."""
    root = Path(root)
    systems = sorted(p.parent.name for p in root.glob("*/label.csv"))
    if not systems:
        raise FlipmoeInputError("no <system>/label.csv below", path=root,
                                hint="ROOT holds one folder per system, as in the TVDiag release's data/")
    return systems


def read_cases(root: str | Path, system: str, *, split: str = "all") -> Iterator[Case]:
    """Every case of `system` under `root` (its `label.csv` and `raw/*.json`) in `split`."""
    if split not in SPLITS:
        raise FlipmoeInputError(f"unknown split {split!r}", hint=f"choose one of {', '.join(SPLITS)}")
    root = Path(root)
    raw = {name: _read_json(root / system / "raw" / f"{name}.json") for name in _RAW}
    for row in _read_labels(root / system / "label.csv"):
        if split != "all" and row.get("data_type") != split:
            continue
        index = row["index"]
        entries = {name: _entries(raw[name], index, root / system / "raw" / f"{name}.json") for name in _RAW}
        yield Case(system=system, index=index, label=row, metrics=entries["metrics"], logs=entries["logs"],
                   traces=entries["traces"], nodes=entries["nodes"], edges=entries["edges"])


def _entries(raw: dict[str, Any], index: str, path: Path) -> list[Any]:
    """The list a raw file holds for case `index` (none: an empty list)."""
    entries = raw.get(index)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise FlipmoeInputError(f"case {index} must map to a list, not {type(entries).__name__}", path=path)
    return entries


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = parse_json(path.read_bytes())
    except FileNotFoundError:
        raise FlipmoeInputError("missing", path=path, hint="raw/ holds metrics, logs, traces, nodes and edges "
                                                           "JSON files") from None
    except JsonInputError as err:
        raise FlipmoeInputError(err.problem, path=path) from None
    if not isinstance(data, dict):
        raise FlipmoeInputError("expected an object of case id -> list", path=path)
    return {str(k): v for k, v in data.items()}


def _read_labels(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except UnicodeDecodeError:
        raise FlipmoeInputError("not UTF-8 text", path=path) from None
    except csv.Error as err:
        raise FlipmoeInputError(f"malformed CSV ({err})", path=path) from None
    missing = {"index", "instance", "anomaly_type"} - set(rows[0] if rows else {})
    if missing:
        raise FlipmoeInputError(f"missing column(s) {', '.join(sorted(missing))}", path=path)
    short = next((i for i, row in enumerate(rows, start=1) if any(v is None for v in row.values()) or None in row),
                 None)
    if short is not None:
        raise FlipmoeInputError("row has another number of fields than the header", path=path, row=short)
    return rows


def case_incident(case: Case) -> tuple[Incident, Label]:
    """One case as an events-only incident and its label; a malformed case is a `FlipmoeInputError`."""
    if not case.nodes:
        raise FlipmoeInputError(f"case {case.index} has no instances in raw/nodes.json")
    try:
        return _case_incident(case)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        if isinstance(err, FlipmoeInputError):
            raise
        raise FlipmoeInputError(f"case {case.index} is malformed ({type(err).__name__}: {err})",
                                hint="metric alerts are [instance, kpi, direction] or [instance, host, kpi, "
                                     "direction], log alerts [instance, template], trace alerts [caller, callee, "
                                     "operation, status]") from None


def _case_incident(case: Case) -> tuple[Incident, Label]:
    instances = set(case.nodes)
    rows: list[dict[str, Any]] = []
    for alert in case.metrics:
        if len(alert) == 4:  # GAIA: instance, host, kpi, direction
            instance, host, kpi, direction = alert
        else:
            (instance, kpi, direction), host = alert, None
        on_host = instance not in instances  # a machine, not a service instance: node-level evidence
        rows.append({"kind": "metric", "reason": kpi, "message": direction,
                     "service": None if on_host else service_of(instance), "pod": None if on_host else instance,
                     "node": instance if on_host else host})
    for instance, template in case.logs:
        rows.append({"kind": "log", "reason": f"template {template}", "message": "",
                     "service": service_of(instance), "pod": instance, "node": None})
    for caller, callee, operation, status in case.traces:
        source = "outside the system" if str(caller) == "-1" else caller
        rows.append({"kind": "trace", "reason": operation, "message": f"{status} (called by {source})",
                     "service": service_of(callee), "pod": callee, "node": None})
    events = pd.DataFrame(rows, columns=["kind", "reason", "message", "service", "pod", "node"])
    events.insert(0, "timestamp", ALERT_TIME)
    edges = sorted({(service_of(case.nodes[a]), service_of(case.nodes[b])) for a, b in case.edges
                    if a < len(case.nodes) and b < len(case.nodes) and service_of(case.nodes[a]) !=
                    service_of(case.nodes[b])})
    services = sorted({service_of(n) for n in case.nodes})
    incident_id = f"{case.system}-{case.index}"
    meta = IncidentMeta(id=incident_id, alert=f"{case.system}: alerts raised",
                        window=TimeWindow(ALERT_TIME - _WINDOW / 2, ALERT_TIME + _WINDOW / 2), alert_time=ALERT_TIME,
                        source=f"tvdiag:{case.system} case {case.index}; alert events only, without timestamps "
                               "in the source: every alert is stamped at the synthetic alert time "
                               f"{ALERT_TIME.isoformat()}")
    telemetry = Telemetry(events=normalise_table(events, "events", source=f"{incident_id}/events"))
    topology = Topology(services=services, edges=edges)
    instance = case.label["instance"]
    original = case.label["anomaly_type"].strip("[]")
    extra = {"system": case.system, "split": case.label.get("data_type", "")}
    if case.label.get("message"):
        extra["message"] = case.label["message"]
    label = Label(service=case.label.get("service") or service_of(instance), pod=instance,
                  fault_type=map_dataset_type("tvdiag", original), original_type=original, source="tvdiag",
                  extra=extra)
    return Incident(meta=meta, telemetry=telemetry, topology=topology), label


def import_tvdiag(root: str | Path, out: str | Path, *, split: str = "all", overwrite: bool = False,
                  progress: Callable[[str], None] | None = None, failures: list[str] | None = None,
                  per_system: bool = False) -> list[Path]:
    """Write every case of `split` as `out/<system>-<index>/` (`out/<system>/<system>-<index>/` with
    `per_system`, so each system's folder can be its own alert history); returns the directories written.

    A system or case that cannot be imported (an unreadable file, a malformed alert, an unmapped fault type,
    an existing directory) is appended to `failures` (raised when no list is given); the rest is written."""
    out = Path(out)
    written: list[Path] = []

    def failed(what: str, err: FlipmoeInputError) -> None:
        if failures is None:
            raise err
        failures.append(f"{what}: {err}")

    for system in systems_of(root):
        try:
            cases = list(read_cases(root, system, split=split))
        except FlipmoeInputError as err:
            failed(system, err)
            continue
        for case in cases:
            try:
                incident, label = case_incident(case)
                folder = out / case.system if per_system else out
                written.append(write_incident(incident, folder / incident.meta.id, label=label, overwrite=overwrite))
            except FlipmoeInputError as err:
                failed(f"{case.system} case {case.index}", err)
                continue
            if progress is not None and len(written) % 100 == 0:
                progress(f"{len(written)} cases written")
    return written
