"""Tiny experts, labelled routing records and bundles built in memory, for the router, FlipMoE and bundle tests.

The experts are untrained (width 32, one layer) around small sentencepiece tokenizers: they answer
nonsense, quickly and deterministically, which is all the plumbing needs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from data_pipeline.examples import TaskExample
from data_pipeline.tokenizer import train_tokenizer
from experts.config import ExpertConfig, ModelConfig, TokenizerConfig
from experts.expert import Expert
from router.oracle import OracleRecord

EXPERT_TASKS = {"logs": ("log_template",), "metrics": ("metric_pattern",), "traces": ("trace_slow_path",),
                "code": ("config_key",)}
TASK_EXPERT = {task: name for name, tasks in EXPERT_TASKS.items() for task in tasks}


def request(expert: str, i: int, rng: random.Random) -> str:
    """A request that looks like the modality `expert` reads."""
    if expert == "logs":
        level = rng.choice(["ERROR", "WARN", "INFO"])
        return f"2026-03-01 10:{i % 60:02d}:07 {level} [pool-{i}] connection to db-{i % 3} refused after {i}ms"
    if expert == "metrics":
        return "cpu_usage_percent " + " ".join(f"{rng.uniform(0, 100):.1f}" for _ in range(16))
    if expert == "traces":
        return f"frontend GET /cart {i}ms -> cartservice GetCart {i // 2}ms -> redis HGET {i % 7}ms status=error"
    return f"payments:\n  timeout_ms: {i}\n  retries: {i % 4}\nclient error: deadline exceeded calling payments"


def records(n: int, *, seed: int = 0, noise: float = 0.0) -> list[OracleRecord]:
    """`n` labelled requests whose oracle expert is the one of their modality (with `noise` mislabelled)."""
    rng = random.Random(seed)
    names = list(EXPERT_TASKS)
    out = []
    for i in range(n):
        expert = names[i % len(names)]
        example = TaskExample(task=EXPERT_TASKS[expert][0], input=request(expert, i, rng), target="ok")
        label = rng.choice(names) if rng.random() < noise else expert
        out.append(OracleRecord(example=example, predictions={e: "ok" if e == label else "no" for e in names},
                                scores={e: float(e == label) for e in names}, label=label, nll_per_byte={}))
    return out


def tiny_expert(name: str, *, seed: int = 0) -> Expert:
    rng = random.Random(seed)
    corpus = [request(name, i, rng) for i in range(200)]
    tokenizer = train_tokenizer(corpus, TokenizerConfig(vocab_size=400), seed=seed)
    model = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_layers=1,
                        num_heads=2, num_kv_heads=1, max_seq_len=256)
    tok_config = TokenizerConfig(vocab_size=tokenizer.vocab_size)
    config = ExpertConfig(name=name, family=name, tasks=EXPERT_TASKS[name], tokenizer=tok_config, model=model)
    return Expert.create(config, tokenizer)


def tiny_experts(names: tuple[str, ...] = tuple(EXPERT_TASKS)) -> dict[str, Expert]:
    return {name: tiny_expert(name, seed=i) for i, name in enumerate(names)}


def write_bundle(directory: Path, experts: dict[str, Expert], router: object) -> Path:
    """A bundle directory as `build_bundle` lays it out, from experts and a router already in memory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, expert in experts.items():
        expert.save(directory / "experts" / name)
    router.save(directory / "router")  # type: ignore[attr-defined]
    manifest = {"format": 1, "name": "flipmoe-tiny", "preset": "tiny", "created": "2026-03-01T00:00:00+00:00",
                "experts": {name: {"kind": "local", "path": f"experts/{name}"} for name in experts},
                "router": "router", "commands": {}}
    (directory / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory
