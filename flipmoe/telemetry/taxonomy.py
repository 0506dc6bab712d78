"""flipmoe's fault taxonomy, shared by importers, the chaos gym, diagnosis and evaluation.

Each fault type has a level (where it lives: infrastructure, network, orchestration, code,
dependency) and a description. Public data sets use their own names; `DATASET_MAPPINGS` maps
them onto this taxonomy, and importers keep the original name next to the mapped one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from flipmoe.errors import FlipmoeInputError


class FaultLevel(str, Enum):
    INFRASTRUCTURE = "infrastructure"
    NETWORK = "network"
    ORCHESTRATION = "orchestration"
    CODE = "code"
    DEPENDENCY = "dependency"


@dataclass(frozen=True, kw_only=True)
class FaultType:
    name: str
    level: FaultLevel
    description: str


FAULT_TYPES: dict[str, FaultType] = {
    ft.name: ft
    for ft in (
        FaultType(name="cpu_contention", level=FaultLevel.INFRASTRUCTURE,
                  description="another workload on the node competes for CPU; the victim pod is throttled"),
        FaultType(name="cpu_hog", level=FaultLevel.INFRASTRUCTURE,
                  description="the service itself burns CPU (busy loop, runaway computation)"),
        FaultType(name="memory_leak", level=FaultLevel.INFRASTRUCTURE,
                  description="memory grows until the container is OOM-killed and restarts"),
        FaultType(name="disk_io", level=FaultLevel.INFRASTRUCTURE,
                  description="disk full or IO saturation; writes fail or stall"),
        FaultType(name="network_delay", level=FaultLevel.NETWORK,
                  description="added latency on the pod's network interface"),
        FaultType(name="packet_loss", level=FaultLevel.NETWORK,
                  description="packets to or from the pod are dropped; retransmits and timeouts"),
        FaultType(name="dns_failure", level=FaultLevel.NETWORK,
                  description="name resolution fails for the service's outgoing calls"),
        FaultType(name="pod_crash_loop", level=FaultLevel.ORCHESTRATION,
                  description="the pod keeps crashing on start (CrashLoopBackOff)"),
        FaultType(name="node_failure", level=FaultLevel.ORCHESTRATION,
                  description="a node becomes NotReady; all its pods fail or are evicted"),
        FaultType(name="bad_config", level=FaultLevel.ORCHESTRATION,
                  description="a wrong environment variable, port or setting after a config change"),
        FaultType(name="code_exception", level=FaultLevel.CODE,
                  description="a faulty deploy raises exceptions in a code path"),
        FaultType(name="code_wrong_result", level=FaultLevel.CODE,
                  description="a faulty deploy returns wrong results or error codes without crashing"),
        FaultType(name="db_slow_query", level=FaultLevel.DEPENDENCY,
                  description="slow database queries or an exhausted connection pool"),
        FaultType(name="cache_outage", level=FaultLevel.DEPENDENCY,
                  description="the cache is down or evicting; callers fall back to slower paths"),
        FaultType(name="certificate_expiry", level=FaultLevel.DEPENDENCY,
                  description="a TLS certificate expired; handshakes to the service fail"),
        FaultType(name="retry_storm", level=FaultLevel.DEPENDENCY,
                  description="a downstream timeout triggers retries that amplify load upstream"),
    )
}

# Original fault-type names of public data sets -> flipmoe's taxonomy.
DATASET_MAPPINGS: dict[str, dict[str, str]] = {
    "nezha": {
        "cpu_contention": "cpu_contention",
        "cpu_consumed": "cpu_hog",
        "network_delay": "network_delay",
        "return": "code_wrong_result",
        "exception": "code_exception",
    },
    # RCAEval RE1/RE2 (stress-ng and tc injections). `mem` is memory exhaustion, whose closest type
    # is memory_leak; RE2's `socket` has no equivalent and stays unmapped.
    "rcaeval": {
        "cpu": "cpu_hog",
        "mem": "memory_leak",
        "disk": "disk_io",
        "delay": "network_delay",
        "loss": "packet_loss",
    },
    # TVDiag (GAIA, SockShop, HotelReservation). The taxonomy has no type of its own yet for a killed or
    # failed pod/container (closest: pod_crash_loop, a restarting pod), packet corruption (closest:
    # packet_loss, which corruption turns into) or GAIA's application faults (a login failure is an
    # error on a code path; a permission denial a wrong setting); the original name is kept in the label.
    "tvdiag": {
        "cpu": "cpu_hog",
        "memory": "memory_leak",
        "network-delay": "network_delay",
        "network-loss": "packet_loss",
        "network-corrupt": "packet_loss",
        "pod-kill": "pod_crash_loop",
        "pod-failure": "pod_crash_loop",
        "container-kill": "pod_crash_loop",
        "memory_anomalies": "memory_leak",
        "normal memory freed": "memory_leak",
        "normal memory freed label": "memory_leak",
        "file moving program": "disk_io",
        "login failure": "code_exception",
        "access permission denied": "bad_config",
    },
}


def fault_type(name: str) -> FaultType:
    """Look up a fault type by name; the error lists the valid names."""
    try:
        return FAULT_TYPES[name]
    except KeyError:
        raise FlipmoeInputError(f"unknown fault type {name!r}",
                                hint=f"valid: {', '.join(FAULT_TYPES)}") from None


def map_dataset_type(dataset: str, original: str) -> str:
    """Map a data set's fault-type name onto flipmoe's taxonomy."""
    mapping = DATASET_MAPPINGS.get(dataset)
    if mapping is None:
        raise FlipmoeInputError(f"no fault-type mapping for data set {dataset!r}",
                                hint=f"known: {', '.join(DATASET_MAPPINGS)}")
    if original not in mapping:
        raise FlipmoeInputError(f"{dataset} fault type {original!r} has no flipmoe equivalent",
                                hint=f"known {dataset} types: {', '.join(mapping)}")
    return mapping[original]
