"""The megatron-core backend: config mapping, model construction, HF <-> megatron weight conversion.

CPU tests build megatron-core models in a one-process gloo world (module-scoped, torn down after);
megatron's full forward pass needs CUDA, so on a CPU parity is checked tensor by tensor and on the
submodules that run natively there (fused QKV projection, SwiGLU MLP, RMSNorm). The GPU tests
(`-m gpu`) compare whole-model logits and train a few steps under torchrun.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.examples import IGNORE_INDEX, TrainingSequence
from experts.config import MODEL_PRESETS, ExpertConfig, ModelConfig, TokenizerConfig, TrainConfig
from experts.megatron.config import MegatronConfig, MoEConfig, ParallelConfig, transformer_config
from experts.model import build_decoder, hf_config
from flipmoe.config import load_yaml
from flipmoe.errors import FlipmoeInputError

REPO = Path(__file__).resolve().parent.parent
TINY = ModelConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   max_seq_len=64)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# megatron-core announces its fallbacks (no Apex, no Transformer Engine) and its own deprecations.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:megatron"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:megatron"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit")]


@pytest.fixture(scope="module")
def world():
    """One gloo process with every parallel size 1 (megatron-core reads its groups when building models)."""
    from experts.megatron import parallel

    with parallel.single_process():
        yield


# -- config mapping (no process group needed) -----------------------------------------------------


@pytest.mark.parametrize("preset", ["nano", "125m", "1b"])
def test_transformer_config_mirrors_the_hf_decoder(preset):
    model = MODEL_PRESETS[preset]
    config = transformer_config(model, use_cpu_initialization=True)
    llama = hf_config(model)
    assert (config.num_layers, config.hidden_size, config.ffn_hidden_size) == (
        llama.num_hidden_layers, llama.hidden_size, llama.intermediate_size)
    assert (config.num_attention_heads, config.num_query_groups, config.kv_channels) == (
        llama.num_attention_heads, llama.num_key_value_heads, llama.head_dim)
    assert config.normalization == "RMSNorm" and config.layernorm_epsilon == llama.rms_norm_eps
    assert config.gated_linear_unit and config.activation_func is torch.nn.functional.silu
    assert not config.add_bias_linear and not config.add_qkv_bias
    assert config.init_method_std == llama.initializer_range
    assert config.num_moe_experts is None


def test_moe_and_parallel_settings_reach_the_transformer_config():
    megatron = MegatronConfig(parallel=ParallelConfig(expert_parallel=2),
                              moe=MoEConfig(num_experts=4, top_k=1, layer_freq=2))
    config = transformer_config(MODEL_PRESETS["nano"], megatron, use_cpu_initialization=True)
    assert (config.num_moe_experts, config.moe_router_topk, config.moe_layer_freq) == (4, 1, 2)
    assert config.expert_model_parallel_size == 2 and config.moe_ffn_hidden_size == 384


@pytest.mark.parametrize("megatron, message", [
    (MegatronConfig(parallel=ParallelConfig(tensor_parallel=3)), "tensor_parallel 3 must divide num_heads"),
    (MegatronConfig(parallel=ParallelConfig(pipeline_parallel=3)), "pipeline_parallel 3 must divide num_layers"),
])
def test_parallel_layouts_the_model_cannot_split_are_refused(megatron, message):
    with pytest.raises(FlipmoeInputError, match=message):
        transformer_config(TINY, megatron)


def test_megatron_config_validation():
    with pytest.raises(FlipmoeInputError, match="expert_parallel > 1 needs MoE"):
        MegatronConfig(parallel=ParallelConfig(expert_parallel=2))
    with pytest.raises(FlipmoeInputError, match="sequence_parallel needs"):
        ParallelConfig(sequence_parallel=True)
    with pytest.raises(FlipmoeInputError, match="top_k"):
        MoEConfig(num_experts=2, top_k=3)


@pytest.mark.parametrize("name, preset", [("expert-125m", "125m"), ("expert-1b", "1b")])
def test_infra_expert_configs_load(name, preset):
    config = load_yaml(ExpertConfig, REPO / "infra" / "configs" / f"{name}.yaml")
    assert config.preset == preset and config.model == MODEL_PRESETS[preset]
    assert config.model.vocab_size == config.tokenizer.vocab_size
    transformer_config(config.model, use_cpu_initialization=True)


@pytest.mark.parametrize("name", ["megatron-1b", "megatron-moe"])
def test_infra_megatron_configs_load_and_fit_the_1b_expert(name):
    megatron = load_yaml(MegatronConfig, REPO / "infra" / "configs" / f"{name}.yaml")
    megatron.check(MODEL_PRESETS["1b"])


def test_model_flops_per_token_is_about_six_times_the_parameters():
    from experts.megatron.model import num_flops_per_token

    model = MODEL_PRESETS["1b"]
    embedding = model.vocab_size * model.hidden_size  # a lookup: no FLOPs
    per_token = num_flops_per_token(model, seq_len=1)
    assert per_token == pytest.approx(6 * (model.num_parameters() - embedding), rel=0.01)


# -- model construction and conversion (one-process world) ----------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_gpt_model_has_the_experts_parameter_count(world, tied):
    from experts.megatron.model import build_gpt_model

    model = dataclasses.replace(TINY, tie_embeddings=tied)
    gpt = build_gpt_model(model)
    assert sum(p.numel() for p in gpt.parameters()) == model.num_parameters()
    assert gpt.share_embeddings_and_output_weights is tied


def test_moe_model_builds_with_experts_every_other_layer(world):
    from experts.megatron.model import build_gpt_model

    gpt = build_gpt_model(TINY, MegatronConfig(moe=MoEConfig(num_experts=4, layer_freq=2)))
    names = {name for name, _ in gpt.named_parameters()}
    assert "decoder.layers.0.mlp.router.weight" in names and "decoder.layers.1.mlp.linear_fc1.weight" in names
    assert sum(".local_experts." in name and "linear_fc1" in name for name in names) == 4


@pytest.mark.parametrize("shape", [
    dict(tie_embeddings=True),
    dict(tie_embeddings=False),
    dict(num_kv_heads=4),  # multi-head attention: one query head per group
    dict(num_kv_heads=1, hidden_size=64, num_heads=8),  # multi-query attention
])
def test_hf_megatron_hf_round_trip_is_exact(world, shape):
    from experts.megatron import convert
    from experts.megatron.model import build_gpt_model

    model = dataclasses.replace(TINY, **shape)
    hf = build_decoder(model, seed=3).eval()
    gpt = build_gpt_model(model)
    convert.load_into(gpt, convert.hf_to_megatron(hf.state_dict(), model))
    back = convert.megatron_to_hf(convert.weights_of(gpt), model)

    original = {k: v for k, v in hf.state_dict().items() if not (model.tie_embeddings and k == "lm_head.weight")}
    assert set(back) == set(original)
    for name, tensor in original.items():
        assert torch.equal(back[name], tensor), name

    restored = build_decoder(model, seed=99).eval()
    restored.load_state_dict(back, strict=not model.tie_embeddings)
    restored.tie_weights()
    ids = torch.randint(4, model.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(restored(ids).logits, hf(ids).logits)


def test_megatron_submodules_compute_what_the_hf_layer_computes(world):
    """Fused QKV (per query group), fused SwiGLU fc1, RMSNorm and the rotary frequencies agree with Llama.

    These run natively on a CPU; rotary application and core attention need CUDA (GPU test below).
    """
    from experts.megatron import convert
    from experts.megatron.model import build_gpt_model

    model = dataclasses.replace(TINY, rope_theta=500_000.0)
    hf = build_decoder(model, seed=4).eval()
    gpt = build_gpt_model(model).eval()
    convert.load_into(gpt, convert.hf_to_megatron(hf.state_dict(), model))
    x_SBD = torch.randn(7, 2, model.hidden_size)
    layer, hf_layer = gpt.decoder.layers[1], hf.model.layers[1]
    with torch.no_grad():
        q, k, v = layer.self_attention.get_query_key_value_tensors(x_SBD)[:3]
        d = model.head_dim
        torch.testing.assert_close(q, hf_layer.self_attn.q_proj(x_SBD).view(7, 2, model.num_heads, d))
        torch.testing.assert_close(k, hf_layer.self_attn.k_proj(x_SBD).view(7, 2, model.num_kv_heads, d))
        torch.testing.assert_close(v, hf_layer.self_attn.v_proj(x_SBD).view(7, 2, model.num_kv_heads, d))
        torch.testing.assert_close(layer.mlp(x_SBD)[0], hf_layer.mlp(x_SBD))
        torch.testing.assert_close(layer.input_layernorm(x_SBD), hf_layer.input_layernorm(x_SBD))
        assert torch.equal(gpt.rotary_pos_emb.inv_freq, hf.model.rotary_emb.inv_freq)


def test_dense_expert_upcycles_into_moe_layers(world):
    from experts.megatron import convert
    from experts.megatron.model import build_gpt_model

    megatron = MegatronConfig(moe=MoEConfig(num_experts=2, layer_freq=2))
    hf = build_decoder(TINY, seed=5)
    state = convert.hf_to_megatron(hf.state_dict(), TINY, megatron)
    convert.load_into(build_gpt_model(TINY, megatron), state)
    fc1 = torch.cat([hf.model.layers[0].mlp.gate_proj.weight, hf.model.layers[0].mlp.up_proj.weight])
    for e in range(2):
        assert torch.equal(state[f"decoder.layers.0.mlp.experts.local_experts.{e}.linear_fc1.weight"], fc1)
    with pytest.raises(FlipmoeInputError, match="MoE layers"):
        convert.megatron_to_hf(state, TINY)


def test_transformer_engine_names_round_trip():
    from experts.megatron import convert

    hf = build_decoder(TINY, seed=6)
    te = MegatronConfig(layer_impl="transformer_engine")
    whole = {convert._layout_name(k, te): v for k, v in convert.hf_to_megatron(hf.state_dict(), TINY).items()}
    assert "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight" in whole
    assert "decoder.layers.1.mlp.linear_fc1.layer_norm_weight" in whole
    back = convert.megatron_to_hf(whole, TINY, layout="transformer_engine")
    assert all(torch.equal(back[k], v) for k, v in hf.state_dict().items() if k != "lm_head.weight")


def test_wrong_weights_are_refused_with_the_names():
    from experts.megatron import convert

    state = build_decoder(TINY).state_dict()
    del state["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(FlipmoeInputError, match="missing.*up_proj"):
        convert.hf_to_megatron(state, TINY)


def test_training_can_start_from_an_expert_checkpoint(world, tmp_path):
    from data_pipeline.tokenizer import train_tokenizer
    from experts.expert import Expert
    from experts.megatron import convert
    from experts.megatron.model import build_gpt_model

    tokenizer = train_tokenizer([f"pod api-{i} restarted after {i % 9} OOM kills" for i in range(300)],
                                TokenizerConfig(vocab_size=400))
    model = dataclasses.replace(TINY, vocab_size=tokenizer.vocab_size)
    config = ExpertConfig(name="tiny", family="logs", tokenizer=TokenizerConfig(vocab_size=tokenizer.vocab_size),
                          model=model)
    expert = Expert.create(config, tokenizer)
    expert.save(tmp_path / "expert")

    gpt = build_gpt_model(model, seed=11)
    convert.init_from_expert(gpt, tmp_path / "expert", model, MegatronConfig())
    expected = convert.hf_to_megatron(expert.model.state_dict(), model)
    assert all(torch.equal(tensor, expected[name]) for name, tensor in convert.weights_of(gpt).items())
    with pytest.raises(FlipmoeInputError, match="differs from the one to train"):
        convert.init_from_expert(gpt, tmp_path / "expert", dataclasses.replace(model, rope_theta=1.0),
                                 MegatronConfig())


def test_rank_shards_reassemble_the_whole_model():
    from experts.megatron.convert import RankLayout, hf_to_megatron, shard_for_rank

    model = dataclasses.replace(TINY, num_layers=4)
    megatron = MegatronConfig()
    whole = hf_to_megatron(build_decoder(model, seed=7).state_dict(), model)
    assert shard_for_rank(whole, model, megatron, RankLayout()).keys() == whole.keys()

    shards = [shard_for_rank(whole, model, megatron, RankLayout(tp_rank=r, tp_size=2, pp_rank=p, pp_size=2))
              for p in range(2) for r in range(2)]
    stage1_tp0, stage1_tp1 = shards[2], shards[3]
    # Layer 2 is the second stage's first layer; row-parallel weights split columns, column-parallel rows.
    qkv = whole["decoder.layers.2.self_attention.linear_qkv.weight"]
    assert torch.equal(torch.cat([stage1_tp0["decoder.layers.0.self_attention.linear_qkv.weight"],
                                  stage1_tp1["decoder.layers.0.self_attention.linear_qkv.weight"]]), qkv)
    proj = whole["decoder.layers.2.self_attention.linear_proj.weight"]
    assert torch.equal(torch.cat([stage1_tp0["decoder.layers.0.self_attention.linear_proj.weight"],
                                  stage1_tp1["decoder.layers.0.self_attention.linear_proj.weight"]], dim=1), proj)
    gate, up = whole["decoder.layers.2.mlp.linear_fc1.weight"].chunk(2)
    gate0, up0 = stage1_tp0["decoder.layers.0.mlp.linear_fc1.weight"].chunk(2)
    assert torch.equal(gate0, gate.chunk(2)[0]) and torch.equal(up0, up.chunk(2)[0])
    # Tied embeddings: the first stage holds the embedding, the last its copy as the output layer.
    assert "embedding.word_embeddings.weight" in shards[0] and "output_layer.weight" not in shards[0]
    assert torch.equal(stage1_tp1["output_layer.weight"], whole["embedding.word_embeddings.weight"].chunk(2)[1])
    assert "decoder.final_layernorm.weight" in stage1_tp0 and "decoder.layers.2.input_layernorm.weight" not in shards[2]


# -- token shards ---------------------------------------------------------------------------------


def test_shards_shift_labels_and_split_the_global_batch(tmp_path):
    from experts.megatron.data import TokenShards, write_shard

    sequences = [TrainingSequence(input_ids=(2, 10 + i, 11 + i, 3), labels=(IGNORE_INDEX, IGNORE_INDEX, 11 + i, 3))
                 for i in range(6)]
    write_shard(tmp_path, "a", sequences[:4], row_length=5)
    write_shard(tmp_path, "b", sequences[4:], row_length=5)
    shards = TokenShards(tmp_path, objective="ul2")
    assert (shards.num_rows, shards.seq_length) == (6, 4)

    batch = next(shards.micro_batches(micro_batch=2, num_micro_batches=1, data_parallel_rank=0,
                                      data_parallel_size=1))
    assert batch.tokens_BS.tolist() == [[2, 10, 11, 3], [2, 11, 12, 3]]
    assert batch.loss_mask_BS.tolist() == [[0, 1, 1, 0], [0, 1, 1, 0]]  # targets: ., 11, 3, pad
    assert batch.labels_BS[0, 1:3].tolist() == [11, 3]

    def first_tokens(rank: int, step: int) -> list[int]:
        it = shards.micro_batches(micro_batch=1, num_micro_batches=2, data_parallel_rank=rank,
                                  data_parallel_size=2, start_step=step)
        return [int(next(it).tokens_BS[0, 1]) for _ in range(2)]

    # Step 0: rank 0 reads rows 0-1, rank 1 rows 2-3; step 1 goes on at row 4 and wraps around.
    assert first_tokens(0, 0) + first_tokens(1, 0) == [10, 11, 12, 13]
    assert first_tokens(0, 1) + first_tokens(1, 1) == [14, 15, 10, 11]


def test_causal_shards_need_no_labels_but_other_objectives_do(tmp_path):
    from experts.megatron.data import TokenShards

    np.save(tmp_path / "x.input_ids.npy", np.array([[2, 5, 6, 0, 0]], dtype=np.int32))
    batch = next(TokenShards(tmp_path).micro_batches(micro_batch=1, num_micro_batches=1, data_parallel_rank=0,
                                                     data_parallel_size=1))
    assert batch.loss_mask_BS.tolist() == [[1, 1, 0, 0]]
    with pytest.raises(FlipmoeInputError, match="no labels"):
        TokenShards(tmp_path, objective="significance")
    with pytest.raises(FlipmoeInputError, match="no token shards"):
        TokenShards(tmp_path / "missing")


def test_data_build_shards_feed_the_megatron_reader(tmp_path):
    from data_pipeline.shards import write_shards
    from experts.megatron.data import TokenShards

    sequences = [TrainingSequence(input_ids=(2, 7, 8, 9, 3), labels=(2, 7, 8, 9, 3)),
                 TrainingSequence(input_ids=(2, 5, 3), labels=(IGNORE_INDEX, 5, 3))]
    write_shards(tmp_path / "logs" / "train", sequences, seq_len=6, vocab_size=400, sequences_per_shard=1)
    shards = TokenShards(tmp_path / "logs", objective="ul2")  # an expert's build directory: its train split
    assert (shards.num_rows, shards.seq_length) == (2, 5)
    batch = next(shards.micro_batches(micro_batch=2, num_micro_batches=1, data_parallel_rank=0,
                                      data_parallel_size=1))
    assert batch.tokens_BS.tolist() == [[2, 7, 8, 9, 3], [2, 5, 3, 0, 0]]
    assert batch.loss_mask_BS.tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]


# -- command line ---------------------------------------------------------------------------------


def test_cli_handler_passes_the_flags_on_and_refuses_without_cuda(tmp_path):
    import argparse

    from experts.megatron.cli import _train_argv, add_megatron_arguments, train_expert_megatron

    parser = argparse.ArgumentParser()  # the flags `flipmoe train expert` has of its own
    parser.add_argument("--expert")
    parser.add_argument("--out")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--resume", action="store_true")
    add_megatron_arguments(parser)
    args = parser.parse_args(["--expert", "logs", "--expert-config", "e.yaml", "--data", "d", "--tp", "2",
                              "--steps", "5", "--distributed-optimizer"])
    assert _train_argv(args) == ["--expert-config", "e.yaml", "--data", "d", "--tp", "2", "--steps", "5",
                                 "--distributed-optimizer"]
    if not torch.cuda.is_available():
        with pytest.raises(FlipmoeInputError, match="CUDA"):
            train_expert_megatron(args)


# -- GPU ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
def test_gpu_megatron_logits_match_hf(world):
    from experts.megatron import convert
    from experts.megatron.model import build_gpt_model

    model = dataclasses.replace(TINY, hidden_size=64, num_heads=8, num_kv_heads=2, tie_embeddings=False)
    hf = build_decoder(model, seed=8).cuda().eval()
    gpt = build_gpt_model(model).cuda().eval()
    convert.load_into(gpt, {k: v.cuda() for k, v in convert.hf_to_megatron(hf.state_dict(), model).items()})
    ids = torch.randint(4, model.vocab_size, (2, 48), device="cuda")
    positions = torch.arange(48, device="cuda").expand(2, 48)
    with torch.no_grad():
        megatron_logits = gpt(ids, positions, None)
        torch.testing.assert_close(megatron_logits, hf(ids).logits, atol=2e-4, rtol=2e-4)


@pytest.mark.gpu
@cuda
def test_gpu_training_lowers_the_loss_and_exports_an_expert(tmp_path):
    from data_pipeline.tokenizer import train_tokenizer
    from experts.expert import Expert
    from flipmoe.config import save_yaml

    tokenizer = train_tokenizer([f"GET /api/v{i % 3}/items/{i} 200 in {i % 17} ms" for i in range(400)],
                                TokenizerConfig(vocab_size=400))
    vocab = tokenizer.vocab_size
    model = dataclasses.replace(TINY, vocab_size=vocab, hidden_size=64, num_heads=4, num_kv_heads=2)
    expert = ExpertConfig(name="tiny", family="logs", tokenizer=TokenizerConfig(vocab_size=vocab), model=model,
                          train=TrainConfig(steps=30, batch_size=8, grad_accum=2, seq_len=32, lr=3e-3,
                                            warmup_steps=3, precision="bf16", checkpoint_every=0))
    save_yaml(expert, tmp_path / "expert.yaml")
    tokenizer.save(tmp_path)
    stream = np.array(sum((tokenizer.encode(f"GET /api/v{i % 3}/items/{i} 200 in {i % 17} ms", bos=True, eos=True)
                           for i in range(2000)), []), dtype=np.int32)
    rows = stream[: len(stream) // 33 * 33].reshape(-1, 33)
    (tmp_path / "shards").mkdir()
    np.save(tmp_path / "shards" / "000.input_ids.npy", rows)

    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
         "-m", "experts.megatron.train", "--expert-config", str(tmp_path / "expert.yaml"),
         "--data", str(tmp_path / "shards"), "--save", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    losses = [float(line.split()[3]) for line in run.stdout.splitlines() if line.startswith("step ")]
    print(run.stdout)
    assert losses[-1] < 0.6 * losses[0]

    export = subprocess.run([sys.executable, "-m", "experts.megatron.convert", str(tmp_path / "run"),
                             str(tmp_path / "expert")], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    trained = Expert.from_checkpoint(tmp_path / "expert")
    assert trained.answer_loss("GET /api/v1/items/7 200 in", " 7 ms") < 0.6 * losses[0]


def test_kuberay_job_entrypoint_parses_with_the_launchers_flags():
    import shlex

    import yaml

    from experts.megatron.ray_launch import parser

    job = yaml.safe_load((REPO / "infra" / "kuberay" / "rayjob-pretrain.yaml").read_text())
    cluster = yaml.safe_load((REPO / "infra" / "kuberay" / "raycluster.yaml").read_text())
    assert (job["kind"], cluster["kind"]) == ("RayJob", "RayCluster")
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:3] == ["python", "-m", "experts.megatron.ray_launch"]
    args = parser().parse_args(command[3:])
    assert args.num_workers == 16 and args.expert_config.endswith("infra/configs/expert-1b.yaml")
