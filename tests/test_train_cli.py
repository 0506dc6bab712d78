"""`flipmoe train tokenizer` and `flipmoe train expert` on a reduced budget: a handful of chaos incidents,
the LogHub fixture instead of ../shared/data, a few optimizer steps."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import experts.build
from experts.expert import Expert
from experts.sources import Sources
from flipmoe.cli import main

LOGHUB = Path(__file__).parent / "fixtures" / "loghub"


@pytest.fixture
def small_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands build `Sources()`; here it is a small one (the data volume is not what is tested)."""
    monkeypatch.setattr(experts.build, "Sources", functools.partial(
        Sources, shared_data=None, loghub=LOGHUB, train_incidents=2, heldout_incidents=1, systems=("webshop",),
        window_minutes=6.0, train_examples=24, heldout_examples=6, loghub_lines=200))


def test_train_expert_writes_a_checkpoint_that_loads(small_sources: None, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "logs"
    assert main(["train", "expert", "--expert", "logs", "--steps", "6", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "log_template" in printed
    for name in ("config.yaml", "tokenizer.model", "model.safetensors", "card.json", "loss_curve.csv",
                 "loss_curve.json", "loss_curve.png", "trainer_state/state.pt"):
        assert (out / name).is_file(), name
    expert = Expert.from_checkpoint(out)
    card = json.loads((out / "card.json").read_text())
    assert card == expert.card
    assert card["training"]["steps"] == 6 and card["training"]["tokens_seen"] > 0
    assert set(card["scores"]) == {"expert", "untrained", "rule"}
    assert set(card["scores"]["expert"]) == set(expert.config.tasks) == set(card["scores"]["rule"])
    # a card holds no machine path: an --out outside the working directory keeps its last two parts
    expected = f"flipmoe train expert --expert logs --preset nano --out {out.parent.name}/{out.name} --steps 6"
    assert card["command"] == expected
    assert card["data"]["task_examples"]["heldout"]["log_template"] > 0
    # The card names data sets, not where this machine keeps them.
    assert (card["data"]["sources"]["shared_data"], card["data"]["sources"]["loghub"]) == ([], "loghub")
    assert expert.config.model.vocab_size == expert.tokenizer.vocab_size


def test_train_tokenizer_writes_the_model(small_sources: None, tmp_path: Path) -> None:
    from data_pipeline.tokenizer import Tokenizer

    assert main(["train", "tokenizer", "--expert", "logs", "--out", str(tmp_path), "--vocab-size", "400"]) == 0
    tokenizer = Tokenizer.load(tmp_path / "tokenizer.model")
    assert tokenizer.vocab_size <= 400
    line = "PacketResponder 1 for block blk_38865049064139660 terminating"
    assert tokenizer.decode(tokenizer.encode(line)) == line


@pytest.mark.parametrize("argv, message", [
    (["train", "expert", "--expert", "nope"], "unknown expert family 'nope'"),
    (["train", "expert", "--expert", "logs", "--backend", "megatron"], "--backend megatron needs --expert-config"),
    (["train", "expert", "--expert", "logs", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "expert", "--expert", "logs", "--steps", "0"], "--steps must be at least 1"),
    (["train", "tokenizer", "--expert", "logs", "--vocab-size", "10"], "--vocab-size 10 is too small"),
])
def test_bad_options_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_resume_without_a_checkpoint_is_an_input_error(small_sources: None, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "expert", "--expert", "logs", "--steps", "2", "--out", str(tmp_path), "--quiet",
                 "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
