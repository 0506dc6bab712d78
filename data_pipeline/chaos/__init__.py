"""The chaos gym ("Otrashi"): simulated microservice systems, injected faults, incidents with ground truth.

    from data_pipeline.chaos import generate_incident, generate_corpus
    incident, label = generate_incident("webshop", "memory_leak", seed=7)
    paths = generate_corpus("ticketing", 32, seed=0, out="corpus/", workers=2)

Systems: `webshop` (11 services), `ticketing` (46 services: 42 application services and four data
stores), `random-N` and `random` (random DAGs). Faults: the 16 types of
`flipmoe.telemetry.taxonomy.FAULT_TYPES` (`FAULTS` maps each to its injector). See `generate`
for the incident layout and the data-set mapping, `faults` for where each label points.
"""

from data_pipeline.chaos.config import ChaosConfig
from data_pipeline.chaos.faults import FAULTS, ONSETS
from data_pipeline.chaos.generate import generate_corpus, generate_incident
from data_pipeline.chaos.systems import (
    Call,
    Operation,
    RequestType,
    Service,
    System,
    get_system,
    random_dag,
    summarise_systems,
    system_names,
)

__all__ = [
    "FAULTS",
    "ONSETS",
    "Call",
    "ChaosConfig",
    "Operation",
    "RequestType",
    "Service",
    "System",
    "generate_corpus",
    "generate_incident",
    "get_system",
    "random_dag",
    "summarise_systems",
    "system_names",
]
