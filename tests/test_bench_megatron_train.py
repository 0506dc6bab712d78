"""The GPU training benchmark's arithmetic on a CPU: FLOPs per token, the GPU peaks, MFU, and its dry run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from experts.config import MODEL_PRESETS

REPO = Path(__file__).resolve().parent.parent
# megatron-core announces its fallbacks (no Apex, no Transformer Engine) and its own deprecations.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:megatron"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:megatron"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit")]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_megatron_train",
                                                  REPO / "benchmarks" / "bench_megatron_train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("preset", ["125m", "1b"])
def test_flops_per_token_are_six_n_plus_twelve_l_h_s(bench, preset):
    model = MODEL_PRESETS[preset]
    d, kv, f, layers = model.hidden_size, model.num_kv_heads * model.head_dim, model.intermediate_size, model.num_layers
    # Every matmul weight, written out: q and o (d x d), k and v (d x kv), gate, up and down (d x f) per
    # layer, and the output projection (the tied embedding too: a lookup on input, a matmul on output).
    n = layers * (2 * d * d + 2 * d * kv + 3 * d * f) + model.vocab_size * d
    flops = bench.flop_accounting(model, seq_len=2048)
    assert flops.matmul_parameters == n
    assert flops.dense_term == 6 * n
    assert flops.attention_term == 12 * layers * d * 2048
    assert flops.per_token == pytest.approx(6 * n + 12 * layers * d * 2048)
    norms = (2 * layers + 1) * d
    embedding_lookup = 0 if model.tie_embeddings else model.vocab_size * d
    assert n == model.num_parameters() - norms - embedding_lookup


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0),
    ("NVIDIA GH200 480GB", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("Tesla T4", None),
])
def test_peak_bf16_flops_by_device_name(bench, name, peak):
    assert bench.peak_tflops(name) == peak


def test_mfu_is_model_flops_per_second_over_the_peak(bench):
    flops = bench.flop_accounting(MODEL_PRESETS["125m"], seq_len=2048)
    tokens_per_second = 0.4 * 989e12 / flops.per_token
    assert bench.mfu(tokens_per_second, flops.per_token, 989.0) == pytest.approx(0.4)
    assert bench.mfu(tokens_per_second, flops.per_token, None) is None


def test_dry_run_prints_the_accounting_and_trains_the_tiny_stand_in(bench, tmp_path, capsys):
    assert bench.main(["--dry-run", "--preset", "125m", "--json", str(tmp_path / "f.json"),
                       "--markdown", str(tmp_path / "f.md")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("DRY RUN") and "12·L·h·s" in printed and "NVIDIA H200" in printed
    figures = json.loads((tmp_path / "f.json").read_text())
    assert figures["dry_run"] and figures["tiny_parameters"]["megatron"] == figures["tiny_parameters"]["hf"]
    megatron, hf = figures["results"]
    assert "needs CUDA" in megatron["error"] and hf["tokens_per_second"] > 0
    assert "DRY RUN" in (tmp_path / "f.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(bench, capsys):
    assert bench.main(["--preset", "125m"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0]
