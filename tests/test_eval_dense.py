"""`flipmoe eval dense`: the dense baseline of a bundle, trained for a few steps on a small data set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tiny_experts import tiny_experts, write_bundle

import router.bundle
from experts.expert import Expert
from experts.sources import Sources
from flipmoe.cli import main

LOGHUB = Path(__file__).parent / "fixtures" / "loghub"


class _NoRouter:
    """The dense command reads the experts only; the bundle still needs a router folder."""

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)


def _bundle(directory: Path, *, trained: bool = True) -> Path:
    experts = tiny_experts(("logs", "code"))
    if trained:
        for expert in experts.values():
            expert.card = {"training": {"tokens_seen": 2000}}
    return write_bundle(directory, experts, _NoRouter())


@pytest.fixture
def small_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundle's recorded data settings give a small data set (the volume is not what is tested)."""
    def sources_of(manifest: Any) -> Sources:
        return Sources(shared_data=None, loghub=LOGHUB, train_incidents=1, heldout_incidents=1,
                       systems=("webshop",), window_minutes=4.0, train_examples=8, heldout_examples=4,
                       loghub_lines=100)

    monkeypatch.setattr(router.bundle, "sources_of", sources_of)


def test_eval_dense_trains_a_checkpoint_the_harness_loads(small_sources: None, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from eval.models import load_model
    from eval.tasks import EvalItem, get_task

    bundle = _bundle(tmp_path / "bundle")
    out = tmp_path / "dense"
    assert main(["eval", "dense", "--bundle", str(bundle), "--out", str(out), "--steps", "2", "--quiet"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    dense = Expert.from_checkpoint(out)
    card = json.loads((out / "card.json").read_text())
    assert dense.config.name == "dense" and card["training"]["steps"] == 2
    assert set(card["matched_to"]["experts"]) == {"logs", "code"}
    assert 0 < card["training"]["flops_vs_experts"]
    model = load_model(f"dense:{out}")
    item = EvalItem(id="i", input="2026-03-01 10:00:07 ERROR connection refused", references=("ERROR",))
    assert model.name == "dense" and len(model.answer(get_task("log_level"), [item])) == 1


def test_eval_dense_rejects_bad_input_in_one_line(small_sources: None, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    untrained = _bundle(tmp_path / "untrained", trained=False)
    cases = [["--bundle", str(tmp_path / "missing"), "--out", str(tmp_path / "a")],
             ["--bundle", str(untrained), "--out", str(tmp_path / "b")],
             ["--bundle", str(untrained), "--out", str(tmp_path / "c"), "--steps", "0"]]
    for args in cases:
        assert main(["eval", "dense", *args, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("flipmoe: error:") and "\n" not in err, err
    assert not (tmp_path / "b" / "model.safetensors").exists()
