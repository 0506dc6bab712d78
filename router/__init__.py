"""The learned per-request router over frozen experts.

Experts do not share a tokenizer, so flipmoe routes whole requests: the router reads the raw text with
its own hashed n-gram encoder (`router.encoder`), scores the experts with a calibrated linear classifier
(`router.model`), and is trained on labels the frozen experts produce themselves (`router.oracle`,
`router.train`). Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EncoderConfig": "router.encoder",
    "HashedNgramEncoder": "router.encoder",
    "RouteDecision": "router.model",
    "Router": "router.model",
    "RouterConfig": "router.model",
    "OracleRecord": "router.oracle",
    "label_requests": "router.oracle",
    "RouterTrainConfig": "router.train",
    "fit_router": "router.train",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'router' has no attribute {name!r}")
