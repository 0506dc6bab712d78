"""The README's Python examples run as written, on the packaged nano bundle."""

from __future__ import annotations

from pathlib import Path

import flipmoe
from experts.expert import Expert
from flipmoe import FlipMoE
from router.bundle import read_manifest

PACKAGED = Path(flipmoe.__file__).parent / "bundles" / "nano"


def test_packaged_bundle_is_complete() -> None:
    manifest = read_manifest(PACKAGED)
    assert set(manifest["experts"]) == {"logs", "metrics", "traces", "code"}
    for entry in manifest["experts"].values():
        assert (PACKAGED / entry["path"] / "model.safetensors").is_file()


def test_flipmoe_example(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("FLIPMOE_BUNDLE", raising=False)
    moe = FlipMoE.from_bundle()
    out = moe.generate("ERROR [pool-3] connection to db-1 refused", task="log_level")
    assert out.expert == "logs" and isinstance(out.text, str)
    assert abs(sum(out.router_scores.values()) - 1.0) < 1e-5


def test_expert_example() -> None:
    expert = Expert.from_checkpoint(PACKAGED / "experts" / "logs")
    answer = expert.generate("ERROR [pool-3] connection to db-1 refused after 30ms", task="log_level",
                             max_new_tokens=8)
    assert answer.expert == "logs" and answer.completion_tokens <= 8
