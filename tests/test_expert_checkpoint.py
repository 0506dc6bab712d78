"""Parity of expert checkpoints: what is saved is what is loaded, logits and tokens alike.

The tokenizers are trained on the LogHub samples in `tests/fixtures/loghub/` (HDFS, Hadoop, Zookeeper).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from data_pipeline.examples import TaskExample
from data_pipeline.objectives import task_sequences
from data_pipeline.tokenizer import Tokenizer, train_tokenizer
from experts.config import ExpertConfig, ModelConfig, TokenizerConfig, TrainConfig, format_prompt
from experts.expert import Expert
from experts.trainer import Trainer

LOGHUB = Path(__file__).parent / "fixtures" / "loghub"


def loghub_lines(system: str) -> list[str]:
    with (LOGHUB / f"{system}_200.csv").open(newline="", encoding="utf-8") as handle:
        return [row["Content"] for row in csv.DictReader(handle)]


def loghub_templates(system: str) -> list[tuple[str, str]]:
    with (LOGHUB / f"{system}_200.csv").open(newline="", encoding="utf-8") as handle:
        return [(row["Content"], row["EventTemplate"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def hdfs_tokenizer() -> Tokenizer:
    """Trained on HDFS only, so Hadoop and Zookeeper lines are text it has never seen."""
    return train_tokenizer(loghub_lines("HDFS"), TokenizerConfig(vocab_size=400))


@pytest.mark.parametrize("system", ["HDFS", "Hadoop", "Zookeeper"])
def test_tokenizer_round_trip_is_lossless_on_loghub_lines(hdfs_tokenizer: Tokenizer, system: str) -> None:
    lines = loghub_lines(system)
    assert len(lines) == 200
    for line in lines:
        assert hdfs_tokenizer.decode(hdfs_tokenizer.encode(line)) == line
    assert [hdfs_tokenizer.decode(ids) for ids in hdfs_tokenizer.encode_batch(lines)] == lines


def test_tokenizer_round_trip_keeps_whitespace_bytes_and_symbols(hdfs_tokenizer: Tokenizer) -> None:
    odd = ["  two leading spaces", "tab\tseparated\tfields  ", "ünïcödé 日志 🚨", "nul\x00and\x07bell",
           "line\nbreak\r\n", format_prompt("log_template", "PacketResponder 1 terminating") + "<*>", ""]
    for text in odd:
        assert hdfs_tokenizer.decode(hdfs_tokenizer.encode(text)) == text
    # The prompt markers are single pieces, whatever the corpus.
    ids = hdfs_tokenizer.encode(format_prompt("t", "x"))
    assert {hdfs_tokenizer.symbol_ids["<task>"], hdfs_tokenizer.symbol_ids["<input>"],
            hdfs_tokenizer.symbol_ids["<answer>"]} <= set(ids)


def test_tokenizer_save_and_load_give_the_same_ids(hdfs_tokenizer: Tokenizer, tmp_path: Path) -> None:
    hdfs_tokenizer.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    assert loaded.pieces() == hdfs_tokenizer.pieces()
    lines = loghub_lines("Zookeeper")
    assert loaded.encode_batch(lines) == hdfs_tokenizer.encode_batch(lines)


def test_logits_are_identical_after_save_and_load(hdfs_tokenizer: Tokenizer, tmp_path: Path) -> None:
    model = ModelConfig(vocab_size=hdfs_tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_layers=2,
                        num_heads=2, num_kv_heads=1, max_seq_len=128)
    config = ExpertConfig(name="logs", family="logs", tasks=("log_template",),
                          tokenizer=TokenizerConfig(vocab_size=hdfs_tokenizer.vocab_size), model=model,
                          train=TrainConfig(steps=6, batch_size=8, seq_len=128, warmup_steps=1, eval_every=0,
                                            checkpoint_every=0))
    expert = Expert.create(config, hdfs_tokenizer)
    # A few real updates first, so the weights (tied embeddings included) are no longer the initial ones.
    examples = [TaskExample(task="log_template", input=c, target=t) for c, t in loghub_templates("HDFS")[:48]]
    Trainer(expert.model, config=config.train, pretrain=(), device="cpu", progress=False,
            tasks=task_sequences(examples, hdfs_tokenizer, seq_len=128)).fit()
    expert.card = {"training": {"steps": 6}}
    expert.save(tmp_path)
    loaded = Expert.from_checkpoint(tmp_path)

    assert loaded.config == expert.config and loaded.card == expert.card
    assert loaded.tokenizer.pieces() == expert.tokenizer.pieces()
    saved, restored = expert.model.state_dict(), loaded.model.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)

    lines = loghub_lines("Hadoop")[:8]
    rows = [hdfs_tokenizer.encode(line, bos=True)[:64] for line in lines]
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [hdfs_tokenizer.pad_id] * (width - len(r)) for r in rows])
    attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    expert.model.eval()
    with torch.no_grad():
        before = expert.model(input_ids=input_ids, attention_mask=attention_mask).logits
        after = loaded.model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(before, after)
    prompt = loghub_lines("HDFS")[0]
    assert (loaded.generate(prompt, task="log_template", max_new_tokens=12).text
            == expert.generate(prompt, task="log_template", max_new_tokens=12).text)
