"""The dense baseline is sized to the experts' total parameters and trained for their compute."""

from __future__ import annotations

from data_pipeline.examples import TrainingSequence
from eval.dense_baseline import DenseConfig, _planned_tokens, dense_shape
from experts.config import MODEL_PRESETS


def test_dense_shape_matches_the_experts_total_parameters() -> None:
    target = 4 * MODEL_PRESETS["nano"].num_parameters()
    shape = dense_shape(target, vocab_size=4096, config=DenseConfig(), template=MODEL_PRESETS["nano"])
    assert abs(shape.num_parameters() - target) / target < 0.05
    assert shape.vocab_size == 4096 and shape.hidden_size % shape.num_heads == 0
    assert shape.num_heads % shape.num_kv_heads == 0


def test_planned_tokens_count_every_row_of_the_plan_once_per_use() -> None:
    class Plan:
        plan = [(0, (0, 1)), (1, (0,)), (0, (1,))]

    pretrain = [TrainingSequence(input_ids=(1,) * 5, labels=(1,) * 5), TrainingSequence(input_ids=(1,) * 9,
                                                                                        labels=(1,) * 9)]
    tasks = [TrainingSequence(input_ids=(1,) * 3, labels=(1,) * 3)]
    assert _planned_tokens(Plan(), pretrain, tasks, max_len=8) == 5 + 8 + 3 + 8
