"""State-dict adapter between a flipmoe expert (HF `LlamaForCausalLM`) and a megatron-core `GPTModel`.

Both directions work on whole-model state dicts (tensor and pipeline parallel size 1).
`shard_for_rank` cuts one rank's share out of them for a run that starts from an HF expert; a run's
distributed checkpoint loads into a one-process model whatever layout wrote it, which is how
`megatron_to_expert` brings a run back as an HF expert.

Per layer `i` (megatron names of the local layer spec; "transformer_engine" fuses the norms into the
following linear layers, noted on the right):

| Hugging Face `model.layers.{i}.` | megatron-core `decoder.layers.{i}.`                                      |
|----------------------------------|--------------------------------------------------------------------------|
| `input_layernorm`                | `input_layernorm` (TE: `self_attention.linear_qkv.layer_norm_weight`)     |
| `self_attn.{q,k,v}_proj`         | `self_attention.linear_qkv`: one block per query group, holding the      |
|                                  | group's query heads, then its key head, then its value head              |
| `self_attn.o_proj`               | `self_attention.linear_proj`                                             |
| `post_attention_layernorm`       | `pre_mlp_layernorm` (TE: `mlp.linear_fc1.layer_norm_weight`)              |
| `mlp.{gate,up}_proj`             | `mlp.linear_fc1` = [gate; up] (SwiGLU reads the first half as the gate)  |
| `mlp.down_proj`                  | `mlp.linear_fc2`                                                         |

(all `.weight`), plus `model.embed_tokens` <-> `embedding.word_embeddings`, `model.norm` <->
`decoder.final_layernorm` and, untied only, `lm_head` <-> `output_layer`. Both models rotate
query/key halves the same way (`rotary_interleaved=False`), so no head permutation is needed.

MoE layers have no Llama counterpart: a dense expert can be *upcycled* into an MoE one (every
feed-forward expert starts as a copy of the dense MLP, the router from a small random init), but an
MoE model does not convert back to a Llama expert.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from experts.config import ExpertConfig, ModelConfig
from experts.megatron.config import INIT_STD, MegatronConfig
from flipmoe.errors import FlipmoeInputError

if TYPE_CHECKING:
    from megatron.core.models.gpt import GPTModel

Layout = Literal["local", "transformer_engine"]
StateDict = dict[str, torch.Tensor]

_TE_NAMES = {  # local spec name -> transformer-engine spec name (dense layers)
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}


def hf_to_megatron(hf: Mapping[str, torch.Tensor], model: ModelConfig, megatron: MegatronConfig | None = None,
                   *, seed: int = 0) -> StateDict:
    """Megatron-core `GPTModel` weights (whole model) from an HF Llama expert's state dict."""
    megatron = megatron or MegatronConfig()
    _check_keys(hf, _hf_keys(model), "Hugging Face")
    out: StateDict = {"embedding.word_embeddings.weight": hf["model.embed_tokens.weight"],
                      "decoder.final_layernorm.weight": hf["model.norm.weight"]}
    if not model.tie_embeddings:
        out["output_layer.weight"] = hf["lm_head.weight"]
    generator = torch.Generator().manual_seed(seed)
    for i in range(model.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        layer = {
            "input_layernorm.weight": hf[src + "input_layernorm.weight"],
            "self_attention.linear_qkv.weight": _fuse_qkv(hf[src + "self_attn.q_proj.weight"],
                                                          hf[src + "self_attn.k_proj.weight"],
                                                          hf[src + "self_attn.v_proj.weight"], model),
            "self_attention.linear_proj.weight": hf[src + "self_attn.o_proj.weight"],
            "pre_mlp_layernorm.weight": hf[src + "post_attention_layernorm.weight"],
        }
        fc1 = torch.cat([hf[src + "mlp.gate_proj.weight"], hf[src + "mlp.up_proj.weight"]], dim=0)
        fc2 = hf[src + "mlp.down_proj.weight"]
        if _is_moe_layer(i, megatron):
            layer.update(_upcycle(fc1, fc2, model, megatron, generator))
        else:
            layer.update({"mlp.linear_fc1.weight": fc1, "mlp.linear_fc2.weight": fc2})
        out.update({dst + name: tensor for name, tensor in layer.items()})
    return {name: tensor.contiguous() for name, tensor in out.items()}


def megatron_to_hf(state: Mapping[str, torch.Tensor], model: ModelConfig, *, layout: Layout = "local") -> StateDict:
    """An HF Llama expert's state dict from whole-model megatron-core `GPTModel` weights (dense only)."""
    if any(".mlp.router." in name for name in state):
        raise FlipmoeInputError("this megatron model has MoE layers, which a Llama expert cannot hold",
                                hint="keep it as a megatron checkpoint, or train it with moe.num_experts = 0")
    state = {name: tensor for name, tensor in state.items() if not name.endswith("_extra_state")}
    state = {_local_name(name): tensor for name, tensor in state.items()} if layout == "transformer_engine" else state
    _check_keys(state, _megatron_keys(model), "megatron")
    out: StateDict = {"model.embed_tokens.weight": state["embedding.word_embeddings.weight"],
                      "model.norm.weight": state["decoder.final_layernorm.weight"]}
    if not model.tie_embeddings:
        out["lm_head.weight"] = state["output_layer.weight"]
    for i in range(model.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."

        def get(name: str, src: str = src) -> torch.Tensor:
            return state[src + name]

        q, k, v = _split_qkv(get("self_attention.linear_qkv.weight"), model)
        gate, up = get("mlp.linear_fc1.weight").chunk(2, dim=0)
        out.update({
            dst + "input_layernorm.weight": get("input_layernorm.weight"),
            dst + "self_attn.q_proj.weight": q,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.o_proj.weight": get("self_attention.linear_proj.weight"),
            dst + "post_attention_layernorm.weight": get("pre_mlp_layernorm.weight"),
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": get("mlp.linear_fc2.weight"),
        })
    return {name: tensor.contiguous() for name, tensor in out.items()}


def load_into(gpt: GPTModel, state: Mapping[str, torch.Tensor]) -> None:
    """Load a rank's weights (`shard_for_rank`; the whole model when every parallel size is 1) into its
    `GPTModel`, every weight accounted for: only `_extra_state` entries (kernel metadata) may be missing.
    """
    result = gpt.load_state_dict(dict(state), strict=False)
    missing = [name for name in result.missing_keys if not name.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise FlipmoeInputError(f"weights do not fit the megatron model: missing {missing[:5]}, "
                                f"unexpected {list(result.unexpected_keys)[:5]}",
                                hint="build the model from the same ModelConfig and MegatronConfig")


def weights_of(gpt: GPTModel) -> StateDict:
    """Whole-model weights of a `GPTModel` built with parallel sizes 1 (no `_extra_state`)."""
    return {name: tensor for name, tensor in gpt.state_dict().items()
            if isinstance(tensor, torch.Tensor) and not name.endswith("_extra_state")}


# -- checkpoint directories ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RankLayout:
    """Where one rank sits in the parallel layout (what megatron's `parallel_state` says about it)."""

    tp_rank: int = 0
    tp_size: int = 1
    pp_rank: int = 0
    pp_size: int = 1
    ep_rank: int = 0
    ep_size: int = 1

    @classmethod
    def current(cls) -> RankLayout:
        from megatron.core import parallel_state as ps

        return cls(tp_rank=ps.get_tensor_model_parallel_rank(), tp_size=ps.get_tensor_model_parallel_world_size(),
                   pp_rank=ps.get_pipeline_model_parallel_rank(),
                   pp_size=ps.get_pipeline_model_parallel_world_size(),
                   ep_rank=ps.get_expert_model_parallel_rank(), ep_size=ps.get_expert_model_parallel_world_size())


def shard_for_rank(whole: Mapping[str, torch.Tensor], model: ModelConfig, megatron: MegatronConfig,
                   rank: RankLayout) -> StateDict:
    """This rank's share of whole-model megatron weights (local layer spec names), as its `GPTModel` holds it.

    Column-parallel weights (QKV, fc1, embedding and output rows) split along their rows — fc1 splits
    its gate and up halves separately, since each rank computes its own SwiGLU columns — and
    row-parallel weights (attention output, fc2) along their columns; norms and routers are whole.
    A pipeline stage holds its own layers, renumbered from 0; an expert-parallel rank its own experts.
    """
    layers_per_stage = model.num_layers // rank.pp_size
    first_layer = rank.pp_rank * layers_per_stage
    experts_per_rank = megatron.moe.num_experts // rank.ep_size
    first_stage, last_stage = rank.pp_rank == 0, rank.pp_rank == rank.pp_size - 1

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.chunk(rank.tp_size, dim=0)[rank.tp_rank]

    def columns(t: torch.Tensor) -> torch.Tensor:
        return t.chunk(rank.tp_size, dim=1)[rank.tp_rank]

    def fc1(t: torch.Tensor) -> torch.Tensor:
        gate, up = t.chunk(2, dim=0)
        return torch.cat([rows(gate), rows(up)], dim=0)

    out: StateDict = {}
    for name, tensor in whole.items():
        if name.startswith("embedding."):
            # A tied last stage keeps its own copy of the embedding as the output weight.
            if first_stage:
                out[name] = rows(tensor)
            if last_stage and not first_stage and model.tie_embeddings:
                out["output_layer.weight"] = rows(tensor)
            continue
        if name.startswith(("output_layer.", "decoder.final_layernorm.")):
            if last_stage:
                out[name] = rows(tensor) if name.startswith("output_layer.") else tensor
            continue
        _, _, index, rest = name.split(".", 3)
        layer = int(index) - first_layer
        if not 0 <= layer < layers_per_stage:
            continue
        if rest.startswith("mlp.experts.local_experts."):
            _, _, _, expert, rest = rest.split(".", 4)
            local_expert = int(expert) - rank.ep_rank * experts_per_rank
            if not 0 <= local_expert < experts_per_rank:
                continue
            rest = f"mlp.experts.local_experts.{local_expert}.{rest}"
        if rest.endswith("linear_qkv.weight"):
            tensor = rows(tensor)
        elif rest.endswith("linear_fc1.weight"):
            tensor = fc1(tensor)
        elif rest.endswith(("linear_proj.weight", "linear_fc2.weight")):
            tensor = columns(tensor)
        out[f"decoder.layers.{layer}.{rest}"] = tensor
    return {name: tensor.contiguous() for name, tensor in out.items()}


def init_from_expert(gpt: GPTModel, expert_dir: str | Path, model: ModelConfig,
                     megatron: MegatronConfig) -> ExpertConfig:
    """Load a flipmoe expert's HF weights into this rank's `GPTModel` (any parallel layout); returns its config."""
    from experts.expert import Expert

    expert = Expert.from_checkpoint(expert_dir)
    if expert.config.model != model:
        raise FlipmoeInputError(f"the expert's decoder {expert.config.model} differs from the one to train {model}",
                                path=expert_dir, hint="train with the expert's own config.yaml (model section)")
    whole = hf_to_megatron(expert.model.state_dict(), expert.config.model, megatron, seed=expert.config.train.seed)
    whole = {_layout_name(name, megatron): tensor for name, tensor in whole.items()}
    local = shard_for_rank(whole, expert.config.model, megatron, RankLayout.current())
    device = next(gpt.parameters()).device
    dtype = next(gpt.parameters()).dtype
    load_into(gpt, {name: tensor.to(device=device, dtype=dtype) for name, tensor in local.items()})
    return expert.config


def megatron_to_expert(megatron_dir: str | Path, out_dir: str | Path, *, iteration: int | None = None,
                       card: Mapping[str, object] | None = None) -> Path:
    """A flipmoe expert checkpoint (HF weights, tokenizer, config, card) from a megatron checkpoint.

    Loads the checkpoint into a one-process model whatever parallel layout it was written with.
    """
    from data_pipeline.tokenizer import Tokenizer
    from experts.expert import Expert
    from experts.megatron import checkpoint, parallel
    from experts.megatron.model import build_gpt_model
    from experts.model import build_decoder

    meta = checkpoint.read_metadata(megatron_dir)
    # Checkpoint keys do not depend on the layer implementation, so the local one reads TE runs too.
    megatron = MegatronConfig(moe=meta.megatron.moe)
    if megatron.moe.enabled:
        raise FlipmoeInputError("this megatron checkpoint has MoE layers, which a Llama expert cannot hold",
                                path=megatron_dir)
    with parallel.single_process():
        # Read the weights in the precision they were saved in; the HF decoder casts them to fp32.
        gpt = build_gpt_model(meta.expert.model, megatron, bf16=bool(meta.card.get("bf16")))
        step = checkpoint.load(megatron_dir, model=[gpt], iteration=iteration)
        hf_state = megatron_to_hf(weights_of(gpt), meta.expert.model)
    decoder = build_decoder(meta.expert.model)
    decoder.load_state_dict(hf_state, strict=not meta.expert.model.tie_embeddings)
    decoder.tie_weights()
    expert = Expert(config=meta.expert, tokenizer=Tokenizer.from_proto(meta.tokenizer), model=decoder.eval(),
                    card={**meta.card, **(card or {}), "megatron_iteration": step})
    return expert.save(out_dir)


# -- helpers ---------------------------------------------------------------------------------------


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, model: ModelConfig) -> torch.Tensor:
    groups, head_dim, d = model.num_kv_heads, model.head_dim, model.hidden_size
    q_GQHD = q.reshape(groups, model.num_heads // groups, head_dim, d)
    k_G1HD = k.reshape(groups, 1, head_dim, d)
    v_G1HD = v.reshape(groups, 1, head_dim, d)
    return torch.cat([q_GQHD, k_G1HD, v_G1HD], dim=1).reshape(-1, d)


def _split_qkv(qkv: torch.Tensor, model: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    groups, head_dim, d = model.num_kv_heads, model.head_dim, model.hidden_size
    per_group = model.num_heads // groups
    qkv_GXHD = qkv.reshape(groups, per_group + 2, head_dim, d)
    q, k, v = qkv_GXHD.split([per_group, 1, 1], dim=1)
    return q.reshape(-1, d), k.reshape(-1, d), v.reshape(-1, d)


def _upcycle(fc1: torch.Tensor, fc2: torch.Tensor, model: ModelConfig, megatron: MegatronConfig,
             generator: torch.Generator) -> StateDict:
    moe = megatron.moe
    if (moe.ffn_hidden_size or model.intermediate_size) != model.intermediate_size:
        raise FlipmoeInputError("upcycling a dense expert needs moe.ffn_hidden_size = model.intermediate_size")
    router = torch.randn(moe.num_experts, model.hidden_size, generator=generator, dtype=fc1.dtype) * INIT_STD
    layer = {"mlp.router.weight": router}
    for e in range(moe.num_experts):
        layer[f"mlp.experts.local_experts.{e}.linear_fc1.weight"] = fc1.clone()
        layer[f"mlp.experts.local_experts.{e}.linear_fc2.weight"] = fc2.clone()
    return layer


def _is_moe_layer(i: int, megatron: MegatronConfig) -> bool:
    return megatron.moe.enabled and i % megatron.moe.layer_freq == 0


def _layout_name(name: str, megatron: MegatronConfig) -> str:
    """The name of a local-spec weight in `megatron.layer_impl`'s spec (whole-model, global layer numbers)."""
    if megatron.layer_impl != "transformer_engine" or not name.startswith("decoder.layers."):
        return name
    _, _, index, rest = name.split(".", 3)
    if rest not in _TE_NAMES or (rest == "pre_mlp_layernorm.weight" and _is_moe_layer(int(index), megatron)):
        return name  # an MoE layer keeps its own norm before the router
    return f"decoder.layers.{index}.{_TE_NAMES[rest]}"


def _local_name(name: str) -> str:
    for local, te in _TE_NAMES.items():
        if name.endswith("." + te):
            return name[: -len(te)] + local
    return name


def _hf_keys(model: ModelConfig) -> set[str]:
    keys = {"model.embed_tokens.weight", "model.norm.weight"} | ({"lm_head.weight"} if not model.tie_embeddings
                                                                  else set())
    for i in range(model.num_layers):
        keys |= {f"model.layers.{i}.{name}.weight" for name in (
            "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    return keys


def _megatron_keys(model: ModelConfig) -> set[str]:
    keys = {"embedding.word_embeddings.weight", "decoder.final_layernorm.weight"}
    keys |= {"output_layer.weight"} if not model.tie_embeddings else set()
    for i in range(model.num_layers):
        keys |= {f"decoder.layers.{i}.{name}" for name in (
            "input_layernorm.weight", "self_attention.linear_qkv.weight", "self_attention.linear_proj.weight",
            "pre_mlp_layernorm.weight", "mlp.linear_fc1.weight", "mlp.linear_fc2.weight")}
    return keys


def _check_keys(state: Mapping[str, torch.Tensor], expected: set[str], what: str) -> None:
    # A tied HF model also lists lm_head.weight (the same tensor as the embedding): not an error.
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected - {"lm_head.weight"})
    if missing or unexpected:
        raise FlipmoeInputError(f"{what} weights do not match the expert's ModelConfig: missing {missing[:4]}, "
                                f"unexpected {unexpected[:4]}",
                                hint="convert with the config.yaml the weights were trained with")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experts.megatron.convert",
        description="Turn a megatron distributed checkpoint of a dense expert into a flipmoe expert checkpoint "
                    "(HF Llama weights, tokenizer, config, card). Runs where the checkpoint was written (a GPU "
                    "host); the reverse direction is 'python -m experts.megatron.train --init-expert DIR'.")
    parser.add_argument("megatron_dir", help="the --save directory of a megatron run")
    parser.add_argument("out_dir", help="where to write the expert checkpoint")
    parser.add_argument("--iteration", type=int, help="which saved iteration (default: the latest)")
    args = parser.parse_args(argv)
    try:
        print(megatron_to_expert(args.megatron_dir, args.out_dir, iteration=args.iteration))
    except FlipmoeInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
