"""Spans of the traced requests, and the trace and span ids every modality shares.

A call between services is two spans: the client span in the caller (OpenTelemetry Java names it
`HTTP GET`; gRPC clients use the method name) and the server span in the callee, its child. Spring
(Java) services add an internal span for the controller method under each server span, and their
outgoing calls hang from it. A data-store call is a client span in the caller only
(`SELECT ts.orders`, `GET`), as database drivers instrument it; in a Spring service a database call
hangs from a Spring Data repository span (`OrdersRepository.findAll`), as in the real TrainTicket's
traces (Redis clients are called directly). A request that no pod could serve
has no span. Ids are hashes of the record and sample numbers salted per incident, so they are
unique, stable for a seed and cheap to make.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_pipeline.chaos import simulate as sim
from data_pipeline.chaos.code import java_controller, java_repository
from data_pipeline.chaos.simulate import Simulation, strings
from flipmoe.telemetry.schema import STRING

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of 64-bit integers."""
    z = x.astype(np.uint64) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _hex(words: list[np.ndarray]) -> np.ndarray:
    """Concatenate 64-bit words per row as lowercase hex strings."""
    stacked = np.stack([w.astype(">u8") for w in words], axis=1)
    width = 16 * len(words)
    text = stacked.tobytes().hex().encode("ascii")
    return np.frombuffer(text, dtype=f"S{width}").astype(f"U{width}")


class Ids:
    """Span ids from record ids, trace ids from sample numbers, salted per incident."""

    def __init__(self, salt: int) -> None:
        mask = 0xFFFFFFFFFFFFFFFF
        self.span_salt = np.uint64(salt & mask)
        self.internal_salt = np.uint64((salt * 5 + 3) & mask)
        self.repository_salt = np.uint64((salt * 11 + 7) & mask)
        self.trace_salts = (np.uint64((salt * 3 + 1) & mask), np.uint64((salt * 7 + 5) & mask))

    def span(self, rid: np.ndarray) -> np.ndarray:
        return _hex([_mix(rid.astype(np.uint64) ^ self.span_salt)])

    def internal(self, rid: np.ndarray) -> np.ndarray:
        """Id of the internal (controller) span under server record `rid`."""
        return _hex([_mix(rid.astype(np.uint64) ^ self.internal_salt)])

    def repository(self, rid: np.ndarray) -> np.ndarray:
        """Id of the repository span above the database call of client record `rid`."""
        return _hex([_mix(rid.astype(np.uint64) ^ self.repository_salt)])

    def trace(self, sample: np.ndarray) -> np.ndarray:
        s = sample.astype(np.uint64)
        return _hex([_mix(s ^ self.trace_salts[0]), _mix(s ^ self.trace_salts[1])])


def client_span_names(s: Simulation) -> np.ndarray:
    """(O,) client span name of a call to each operation."""
    names = []
    for (service, _), name in zip(s.compiled.op_keys, s.compiled.span_names, strict=True):
        verb, _, path = name.partition(" ")
        rest = verb in ("GET", "POST", "PUT", "DELETE") and path.startswith("/")
        names.append(f"HTTP {verb}" if rest and s.system.service(service).kind == "service" else name)
    return np.array(names, dtype=object)


def spans_table(s: Simulation, ids: Ids) -> pd.DataFrame:
    r = s.result.records
    keep = s.result.samples.traced[r.sample] & (r.role != sim.STORE) & (r.pod >= 0)
    idx = np.flatnonzero(keep)
    role, op = r.role[idx], r.op[idx]
    spring = np.array([svc.runtime == "java" for svc in s.system.services])             # (S,)
    pos = np.full(int(r.rid.max()) + 1, -1, dtype=np.int64)
    pos[r.rid] = np.arange(r.rid.size)
    # A call made by a Spring handler hangs from its controller span, not from the server span.
    parent = r.parent[idx]
    parent_row = pos[np.maximum(parent, 0)]
    under_controller = (parent >= 0) & (r.role[parent_row] == sim.SERVER) & spring[r.service[parent_row]]
    parent_ids = ids.span(np.maximum(parent, 0)).astype(object)
    parent_ids[under_controller] = ids.internal(parent[under_controller])
    parent_ids[parent < 0] = None
    server_names = np.array(s.compiled.span_names, dtype=object)
    columns = {
        "trace_id": ids.trace(r.sample[idx]), "span_id": ids.span(r.rid[idx]), "parent_span_id": parent_ids,
        "service": r.service[idx], "pod": r.pod[idx],
        "operation": np.where(role == sim.SERVER, server_names[op], client_span_names(s)[op]),
        "start": r.start[idx], "duration": r.dur[idx], "error": r.code[idx] >= 10,
    }
    internal = _controller_spans(s, ids, idx[(role == sim.SERVER) & spring[r.service[idx]]])
    database = s.compiled.kind[s.compiled.op_service[op]] == 1
    repository_calls = (role == sim.CLIENT) & database & spring[r.service[idx]]
    repository = _repository_spans(s, ids, idx[repository_calls], parent_ids[repository_calls])
    columns["parent_span_id"][repository_calls] = repository["span_id"]
    merged = {k: np.concatenate([columns[k], internal[k], repository[k]]) for k in columns}
    frame = pd.DataFrame({
        "trace_id": pd.array(merged["trace_id"], dtype=STRING),
        "span_id": pd.array(merged["span_id"], dtype=STRING),
        "parent_span_id": pd.array(merged["parent_span_id"], dtype=STRING),
        "service": strings(merged["service"], s.system.service_names),
        "pod": strings(merged["pod"], [p.name for p in s.cluster.pods]),
        "operation": pd.array(merged["operation"], dtype=STRING),
        "start": s.timeline.timestamps(merged["start"]),
        "duration": np.round(merged["duration"], 3),
        "status": pd.array(np.where(merged["error"], "error", "ok").astype(object), dtype=STRING),
    })
    return frame.sort_values(["start"], kind="stable").reset_index(drop=True)


def _controller_spans(s: Simulation, ids: Ids, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The internal `XController.method` span inside each Spring server span (`rows` index the records)."""
    r = s.result.records
    names = np.array([f"{java_controller(service)}.{method}" for service, method in s.compiled.op_keys], dtype=object)
    lead = np.minimum(s.rng.uniform(0.05, 0.4, rows.size), 0.2 * r.dur[rows])         # ms of dispatch before it
    return {
        "trace_id": ids.trace(r.sample[rows]), "span_id": ids.internal(r.rid[rows]),
        "parent_span_id": ids.span(r.rid[rows]).astype(object), "service": r.service[rows], "pod": r.pod[rows],
        "operation": names[r.op[rows]], "start": r.start[rows] + lead / 1000,
        "duration": r.dur[rows] - lead * 1.5, "error": r.code[rows] >= 10,
    }


def _repository_spans(s: Simulation, ids: Ids, rows: np.ndarray, parents: np.ndarray) -> dict[str, np.ndarray]:
    """The Spring Data span (`TripRepository.findAll`, `OrdersRepository.save`) around each database call."""
    r = s.result.records
    names = np.array([f"{java_repository(method.partition('.')[0])}."
                      f"{'findAll' if method.endswith(('.select', '.find')) else 'save'}"
                      for _, method in s.compiled.op_keys], dtype=object)
    lead = s.rng.uniform(0.02, 0.2, rows.size)                                          # ms of mapping on each side
    return {
        "trace_id": ids.trace(r.sample[rows]), "span_id": ids.repository(r.rid[rows]), "parent_span_id": parents,
        "service": r.service[rows], "pod": r.pod[rows], "operation": names[r.op[rows]],
        "start": r.start[rows] - lead / 1000, "duration": r.dur[rows] + 2 * lead, "error": r.code[rows] >= 10,
    }
