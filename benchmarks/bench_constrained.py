"""What does constrained decoding cost per token? Prints ms per generated token with and without a constraint.

A nano expert (untrained: speed does not depend on the weights) with a 2k-piece tokenizer trained on the
shared LogHub lines generates sampled answers unconstrained (the baseline) and under a JSON schema, a
regular expression and a Lark grammar, in the same run. The time spent in the mask itself (the logits
processor) is printed separately from the decoder step.

    .venv/bin/python benchmarks/bench_constrained.py --repeat 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor

from data_pipeline.tokenizer import Tokenizer, train_tokenizer
from experts.config import ExpertConfig, TokenizerConfig, model_preset
from experts.constrained import GrammarConstraint, JsonSchemaConstraint, RegexConstraint
from experts.expert import Expert

LOGHUB = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub"
SCHEMA = {
    "type": "object",
    "properties": {
        "service": {"type": "string", "maxLength": 24},
        "fault_type": {"enum": ["cpu_hog", "memory_leak", "network_delay", "bad_config"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "evidence": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 3},
    },
    "required": ["service", "fault_type", "score", "evidence"],
    "additionalProperties": False,
}
CONSTRAINTS = {
    "JSON schema": JsonSchemaConstraint(SCHEMA),
    "regex": RegexConstraint(r"([a-z]+-[0-9]{1,4} (cpu|latency|errors)=[0-9]{1,3}\.[0-9] ){1,12}"),
    "Lark grammar": GrammarConstraint('start: step (";" step)*\nstep: "check " CNAME " " CNAME\n%import common.CNAME'),
}


class _Timed(LogitsProcessor):
    """Wraps a processor and adds up the seconds spent in it."""

    def __init__(self, inner: LogitsProcessor) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        started = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - started
        return out


class _TimedConstraint:
    def __init__(self, inner: object) -> None:
        self.inner, self.processors = inner, []  # type: ignore[var-annotated]

    def logits_processor(self, tokenizer: Tokenizer) -> LogitsProcessor:
        processor = _Timed(self.inner.logits_processor(tokenizer))  # type: ignore[attr-defined]
        self.processors.append(processor)
        return processor


def nano_expert() -> Expert:
    lines = [line for f in sorted(LOGHUB.glob("*/*_2k.log")) for line in f.read_text(errors="replace").splitlines()]
    tokenizer = train_tokenizer(lines, TokenizerConfig(vocab_size=2048))
    model = model_preset("nano", vocab_size=tokenizer.vocab_size)
    config = ExpertConfig(name="bench", family="logs", tokenizer=TokenizerConfig(vocab_size=tokenizer.vocab_size),
                          model=model)
    return Expert.create(config, tokenizer)


def run(expert: Expert, constraint: object | None, *, repeat: int, max_new_tokens: int) -> tuple[float, float]:
    """(ms per generated token, of which ms in the mask)."""
    timed = _TimedConstraint(constraint) if constraint is not None else None
    seconds, tokens = 0.0, 0
    for seed in range(repeat):
        started = time.perf_counter()
        out = expert.generate("081109 203615 148 INFO dfs.DataNode$PacketResponder: Received block", task="rca",
                              max_new_tokens=max_new_tokens, temperature=1.0, seed=seed,
                              constraint=timed)  # type: ignore[arg-type]
        seconds += time.perf_counter() - started
        tokens += out.completion_tokens
    in_mask = sum(p.seconds for p in timed.processors) if timed else 0.0
    return 1e3 * seconds / tokens, 1e3 * in_mask / tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="generations per setting (seeds 0..repeat-1)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    expert = nano_expert()
    print(f"nano expert: {expert.num_parameters() / 1e6:.2f}M parameters, {expert.tokenizer.vocab_size} pieces, "
          f"{args.threads} thread(s), {args.repeat} sampled generations of <= {args.max_new_tokens} tokens each")
    run(expert, None, repeat=1, max_new_tokens=8)  # warm-up
    baseline, _ = run(expert, None, repeat=args.repeat, max_new_tokens=args.max_new_tokens)
    # "mask" is what the constraint costs per token; whole-generation ms/token also moves with answer length.
    print(f"{'setting':<16}{'ms/token':>10}{'mask ms':>10}{'mask / unconstrained token':>28}")
    print(f"{'unconstrained':<16}{baseline:>10.2f}{'-':>10}{'-':>28}")
    for name, constraint in CONSTRAINTS.items():
        per_token, in_mask = run(expert, constraint, repeat=args.repeat, max_new_tokens=args.max_new_tokens)
        print(f"{name:<16}{per_token:>10.2f}{in_mask:>10.3f}{100 * in_mask / baseline:>27.1f}%")


if __name__ == "__main__":
    main()
