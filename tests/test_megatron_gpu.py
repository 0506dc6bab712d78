"""The megatron-core backend's distributed checkpoints on a GPU: save -> load, and back to a flipmoe expert.

`test_megatron.py` holds the other GPU tests (HF vs megatron logits, a short torchrun training whose loss
falls and whose run converts into an expert). These two pin what that one only samples: a checkpoint
loads back bit for bit, and the expert converted from it computes the megatron model's logits. They
need CUDA because megatron-core's checkpoint writer synchronises the device (`-m gpu`; skipped without).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from experts.config import ExpertConfig, ModelConfig, TokenizerConfig, TrainConfig

TINY = ModelConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=8, num_kv_heads=2,
                   max_seq_len=64)
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.filterwarnings("ignore::UserWarning:megatron"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:megatron"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit")]


@pytest.fixture(scope="module")
def world():
    """One process (gloo for the CPU side, NCCL for the GPU) with every parallel size 1."""
    from experts.megatron import parallel

    with parallel.single_process():
        yield


def _expert_config(model: ModelConfig) -> ExpertConfig:
    return ExpertConfig(name="tiny", family="logs", tokenizer=TokenizerConfig(vocab_size=model.vocab_size), model=model,
                        train=TrainConfig(steps=1, batch_size=2, seq_len=32, precision="fp32", checkpoint_every=0))


def _logits(gpt: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    with torch.no_grad():
        return gpt(ids, positions, None)


@pytest.mark.parametrize("tied", [True, False])
def test_gpu_distributed_checkpoint_loads_back_identical_logits(world, tmp_path, tied):
    from experts.megatron import checkpoint
    from experts.megatron.config import MegatronConfig
    from experts.megatron.model import build_gpt_model

    model = dataclasses.replace(TINY, tie_embeddings=tied)
    saved = build_gpt_model(model, seed=1).cuda().eval()
    ids = torch.randint(4, model.vocab_size, (2, 40), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    expected = _logits(saved, ids)
    checkpoint.save(tmp_path / "run", iteration=7, model=[saved], expert=_expert_config(model),
                    megatron=MegatronConfig())
    assert checkpoint.latest_iteration(tmp_path / "run") == 7

    fresh = build_gpt_model(model, seed=2).cuda().eval()
    assert not torch.equal(_logits(fresh, ids), expected)  # a different init, so the load is what matters
    assert checkpoint.load(tmp_path / "run", model=[fresh]) == 7
    assert torch.equal(_logits(fresh, ids), expected)


def test_gpu_checkpoint_converts_to_an_expert_with_the_same_logits(world, tmp_path):
    from data_pipeline.tokenizer import train_tokenizer
    from experts.expert import Expert
    from experts.megatron import checkpoint
    from experts.megatron.config import MegatronConfig
    from experts.megatron.convert import megatron_to_expert
    from experts.megatron.model import build_gpt_model

    tokenizer = train_tokenizer([f"GET /api/v{i % 3}/items/{i} 200 in {i % 17} ms" for i in range(300)],
                                TokenizerConfig(vocab_size=400))
    model = dataclasses.replace(TINY, vocab_size=tokenizer.vocab_size, tie_embeddings=False)
    gpt = build_gpt_model(model, seed=5).cuda().eval()
    checkpoint.save(tmp_path / "run", iteration=3, model=[gpt], expert=_expert_config(model),
                    megatron=MegatronConfig(), tokenizer=tokenizer._proto, card={"bf16": False})

    out = megatron_to_expert(tmp_path / "run", tmp_path / "expert")
    expert = Expert.from_checkpoint(out, device="cuda")
    assert expert.card["megatron_iteration"] == 3 and expert.tokenizer.vocab_size == model.vocab_size
    ids = torch.randint(4, model.vocab_size, (2, 40), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.no_grad():
        hf_logits = expert.model(ids).logits
    torch.testing.assert_close(hf_logits, _logits(gpt, ids), atol=2e-4, rtol=2e-4)
