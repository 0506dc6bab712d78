"""Token shards: the on-disk format round-trips and the megatron backend reads it as written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipeline.examples import IGNORE_INDEX, TrainingSequence
from data_pipeline.shards import read_manifest, read_shards, write_manifest, write_shards


def _rows() -> list[TrainingSequence]:
    return [TrainingSequence(input_ids=(5, 6, 7, 8), labels=(5, 6, 7, 8), difficulty=0.1),
            TrainingSequence(input_ids=(9, 10, 11), labels=(IGNORE_INDEX, IGNORE_INDEX, 11), difficulty=0.5),
            TrainingSequence(input_ids=(12,) * 8, labels=(12,) * 8, difficulty=0.9)]


def test_round_trip_across_several_shard_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    entry = write_shards(tmp_path, _rows(), seq_len=8, vocab_size=1000, sequences_per_shard=2)
    assert [f["rows"] for f in entry["files"]] == [2, 1]
    assert entry["rows"] == 3 and entry["tokens"] == 15 and entry["loss_tokens"] == 13
    assert entry["input_dtype"] == "uint16"
    assert read_shards(tmp_path) == _rows()
    inputs = np.load(tmp_path / "part-00000.input_ids.npy")
    assert inputs.shape == (2, 8) and inputs[1, 3:].tolist() == [0] * 5


def test_large_vocabularies_use_int32(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [TrainingSequence(input_ids=(70_000, 1), labels=(70_000, 1))]
    assert write_shards(tmp_path, rows, seq_len=4, vocab_size=80_000, sequences_per_shard=8)["input_dtype"] == "int32"
    assert read_shards(tmp_path) == rows


def test_too_long_sequence_is_an_input_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flipmoe.errors import FlipmoeInputError

    with pytest.raises(FlipmoeInputError, match="exceeds seq_len"):
        write_shards(tmp_path, _rows(), seq_len=4, vocab_size=100, sequences_per_shard=8)


def test_megatron_backend_reads_the_shards(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    from experts.megatron.data import TokenShards

    write_shards(tmp_path, _rows(), seq_len=8, vocab_size=1000, sequences_per_shard=2)
    shards = TokenShards(tmp_path, objective="ul2")
    assert shards.num_rows == 3 and shards.row_length == 8
    inputs, labels = shards.rows([1, 2])
    assert inputs[0, :3].tolist() == [9, 10, 11] and labels[0, :3].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 11]
    assert labels[0, 3:].tolist() == [IGNORE_INDEX] * 5


def test_manifest_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_manifest(tmp_path, {"documents": 3})
    manifest = read_manifest(tmp_path)
    assert manifest["documents"] == 3 and manifest["format"].startswith("flipmoe-token-shards")
    assert json.loads((tmp_path / "manifest.json").read_text())["documents"] == 3
