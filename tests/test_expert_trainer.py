"""The expert trainer on a tiny decoder (2 layers, width 32) and synthetic data: seconds on a CPU."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch

from data_pipeline.examples import IGNORE_INDEX, TrainingSequence
from experts.config import ModelConfig, TrainConfig
from experts.model import build_decoder
from experts.trainer import REPLAY_EVERY, STATE_DIR, STATE_FILE, Trainer, lr_factor, stage_steps
from flipmoe.errors import FlipmoeInputError

VOCAB = 40
TINY = ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                   max_seq_len=64)


def counting_rows(n: int, *, seed: int = 0, min_len: int = 8, max_len: int = 24) -> list[TrainingSequence]:
    """Rows that count upwards from a random start (mod the vocabulary, avoiding the 4 special ids):
    each token is a function of the previous one, so a tiny model learns them in a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        start, length = rng.randrange(VOCAB - 4), rng.randint(min_len, max_len)
        ids = tuple(4 + (start + k) % (VOCAB - 4) for k in range(length))
        rows.append(TrainingSequence(input_ids=ids, labels=ids, difficulty=rng.random()))
    return rows


def answer_rows(n: int, *, seed: int = 1) -> list[TrainingSequence]:
    """Task-like rows: a prompt without loss, then a two-token answer."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a = rng.randrange(4, VOCAB)
        prompt, answer = (a, a, a), (a, 3)
        rows.append(TrainingSequence(input_ids=prompt + answer, labels=(IGNORE_INDEX,) * 3 + answer, difficulty=1.0))
    return rows


def config(**overrides: object) -> TrainConfig:
    base = dict(steps=40, batch_size=8, seq_len=32, lr=1e-2, warmup_steps=4, task_fraction=0.0, eval_every=0,
                checkpoint_every=0, seed=0)
    return TrainConfig(**{**base, **overrides})  # type: ignore[arg-type]


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_loss_falls_on_tiny_model() -> None:
    trainer = Trainer(build_decoder(TINY, seed=0), config=config(), pretrain=counting_rows(64),
                      heldout={"pretrain": counting_rows(16, seed=9)}, progress=False)
    result = trainer.fit()
    before = result.evals[0].losses["pretrain"]
    assert result.steps == 40 and len(result.curve) == 40
    assert result.final_loss < 0.5 * result.curve[0].loss
    assert result.heldout_loss["pretrain"] < 0.5 * before
    assert result.tokens_seen == result.curve[-1].tokens_seen > 40 * 8 * 8
    assert result.tokens_per_s > 0 and result.precision == "fp32" and result.device == "cpu"


def test_lr_schedule_warms_up_then_decays_to_min_ratio() -> None:
    cfg = config(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    factors = [lr_factor(step, cfg) for step in range(cfg.steps)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))  # monotone cosine decay
    assert factors[-1] == pytest.approx(0.1)
    assert factors[9 + 45] == pytest.approx(0.55, abs=0.02)  # half-way down the cosine
    # A shortened run still reaches its peak: the warm-up is capped at a fifth of the steps.
    short = config(steps=20, warmup_steps=30)
    assert max(lr_factor(s, short) for s in range(20)) == pytest.approx(1.0)


def test_grad_accumulation_matches_one_large_batch() -> None:
    # Rows of different lengths, so that padding differs between the two splits.
    data = counting_rows(48, min_len=5, max_len=30)
    one = Trainer(build_decoder(TINY, seed=3), config=config(steps=3, batch_size=8), pretrain=data, progress=False)
    two = Trainer(build_decoder(TINY, seed=3), config=config(steps=3, batch_size=4, grad_accum=2), pretrain=data,
                  progress=False)
    one.fit()
    two.fit()
    for name, value in params(one.model).items():
        torch.testing.assert_close(params(two.model)[name], value, atol=2e-5, rtol=1e-4)
    assert [r.loss for r in one.curve] == pytest.approx([r.loss for r in two.curve], rel=1e-4)


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path) -> None:
    # Attention dropout on, so that resuming must also restore the RNG.
    model_config = ModelConfig(**{**TINY.__dict__, "dropout": 0.1})
    cfg = config(steps=10, task_fraction=0.3)
    data, tasks = counting_rows(40), answer_rows(24)
    straight = Trainer(build_decoder(model_config, seed=1), config=cfg, pretrain=data, tasks=tasks, progress=False)
    straight.fit()

    interrupted = Trainer(build_decoder(model_config, seed=1), config=cfg, pretrain=data, tasks=tasks,
                          out_dir=tmp_path, progress=False)
    for _ in range(4):
        interrupted.train_step()
    interrupted.save_checkpoint()
    del interrupted  # as if the process had died after its checkpoint

    resumed = Trainer(build_decoder(model_config, seed=1), config=cfg, pretrain=data, tasks=tasks, out_dir=tmp_path,
                      progress=False)
    result = resumed.fit(resume=True)
    assert result.steps == 10 and [r.step for r in result.curve] == list(range(1, 11))
    for name, value in params(straight.model).items():
        assert torch.equal(params(resumed.model)[name], value), name
    assert [r.loss for r in result.curve] == [r.loss for r in straight.curve]

    with pytest.raises(FlipmoeInputError, match="different training config"):
        Trainer(build_decoder(model_config), config=config(steps=12, task_fraction=0.3), pretrain=data, tasks=tasks,
                out_dir=tmp_path, progress=False).fit(resume=True)
    with pytest.raises(FlipmoeInputError, match="nothing to resume"):
        Trainer(build_decoder(model_config), config=cfg, pretrain=data, out_dir=tmp_path / "empty",
                progress=False).fit(resume=True)


def test_stage_plan_ends_on_tasks_with_some_pretraining_replay() -> None:
    cfg = config(steps=40, task_fraction=0.5)
    assert stage_steps(cfg, has_pretrain=True, has_tasks=True) == {"pretrain": 20, "tasks": 20}
    assert stage_steps(cfg, has_pretrain=True, has_tasks=False) == {"pretrain": 40, "tasks": 0}
    assert stage_steps(cfg, has_pretrain=False, has_tasks=True) == {"pretrain": 0, "tasks": 40}
    trainer = Trainer(build_decoder(TINY), config=cfg, pretrain=counting_rows(30), tasks=answer_rows(30),
                      progress=False)
    sources = [source for source, _ in trainer.plan]
    assert sources[:20] == [0] * 20
    assert sources[20:].count(0) == 20 // REPLAY_EVERY
    result = trainer.fit()
    assert {r.stage for r in result.curve[:20]} == {"pretrain"} and {r.stage for r in result.curve[20:]} == {"tasks"}


def test_loss_curve_and_checkpoint_files_are_written(tmp_path) -> None:
    cfg = config(steps=12, eval_every=5, checkpoint_every=5, task_fraction=0.25)
    trainer = Trainer(build_decoder(TINY), config=cfg, pretrain=counting_rows(32), tasks=answer_rows(16),
                      heldout={"pretrain": counting_rows(8, seed=5), "tasks": answer_rows(8, seed=6)},
                      out_dir=tmp_path, progress=False)
    result = trainer.fit()
    assert [e.step for e in result.evals] == [0, 5, 10, 12]
    rows = list(csv.DictReader((tmp_path / "loss_curve.csv").open()))
    assert len(rows) == 12 and rows[-1]["step"] == "12"
    assert rows[4]["heldout_tasks"] != "" and rows[5]["heldout_tasks"] == ""  # measured at step 5, not 6
    data = json.loads((tmp_path / "loss_curve.json").read_text())
    assert data["steps"] == 12 and len(data["curve"]) == 12 and set(data["heldout_loss"]) == {"pretrain", "tasks"}
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(tmp_path / STATE_DIR / STATE_FILE, weights_only=True)
    assert state["step"] == 12 and state["data_position"] == 12
