"""Models the harness judges, behind one interface: `answer(task, items) -> list[str]`.

| spec | model |
|---|---|
| `rule` | each task's rule/template baseline, reading the same input as the models |
| `toolkit` | the analysis path on the whole incident where a task has one (reads more than the models) |
| `constant:TEXT` | the same answer to every item: a deliberately broken model, which must score at chance |
| `expert:DIR` | one expert checkpoint (`experts.expert.Expert`) |
| `bundle:DIR` | the routed bundle (`router.moe.FlipMoE`) |
| `dense:DIR` | the dense baseline, an expert checkpoint trained on every family's data |
| `remote:URL#MODEL` | an OpenAI-compatible endpoint (`experts.remote.RemoteExpert`) |

Generative models are prompted with the task name and the item's input, greedy, with the task's
answer budget; an expert asked a task it was never tuned on still answers (and is scored for it).
Answers that fail (a prompt too long for the context, an unreachable endpoint) are empty strings and
counted in `failures`, so one bad item never loses a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eval.tasks import EvalItem, EvalTask
from flipmoe.errors import FlipmoeInputError

BATCH = 16
"""Prompts decoded together by a local model."""


class EvalModel(Protocol):
    name: str
    failures: int

    def answer(self, task: EvalTask, items: Sequence[EvalItem]) -> list[str]: ...


@dataclass
class RuleModel:
    """The rule/template baseline of every task."""

    name: str = "rule"
    failures: int = 0

    def answer(self, task: EvalTask, items: Sequence[EvalItem]) -> list[str]:
        return list(task.rule(items))


@dataclass
class ToolkitModel:
    """The analysis path on the whole incident (`task.toolkit`) where a task has one, else its rule."""

    name: str = "toolkit"
    failures: int = 0

    def answer(self, task: EvalTask, items: Sequence[EvalItem]) -> list[str]:
        return list((task.toolkit or task.rule)(items))


@dataclass
class ConstantModel:
    """One answer to every item, whatever the input: what a broken model (or a gamed metric) looks like."""

    text: str
    name: str = ""
    failures: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or f"constant:{self.text}"

    def answer(self, task: EvalTask, items: Sequence[EvalItem]) -> list[str]:
        return [self.text] * len(items)


@dataclass
class GenerativeModel:
    """Any object with `generate_batch(prompts, task=..., max_new_tokens=...)` (a local or remote expert)."""

    name: str
    expert: Any
    failures: int = 0

    def answer(self, task: EvalTask, items: Sequence[EvalItem]) -> list[str]:
        answers: list[str] = []
        for start in range(0, len(items), BATCH):
            prompts = [_fit(self.expert, item.input, task) for item in items[start:start + BATCH]]
            try:
                outs = self.expert.generate_batch(prompts, task=task.name, max_new_tokens=task.max_new_tokens)
                answers += [o.text.strip() for o in outs]
            except Exception:  # noqa: BLE001 - a failing batch scores 0, the run goes on
                self.failures += len(prompts)
                answers += [""] * len(prompts)
        return answers


@dataclass
class BundleModel:
    """The routed bundle: the router picks an expert per request."""

    name: str
    moe: Any
    failures: int = 0
    routed: dict[str, dict[str, int]] = field(default_factory=dict)
    """task -> expert -> requests answered by it."""

    def answer(self, task: EvalTask, items: Sequence[EvalItem]) -> list[str]:
        answers: list[str] = []
        for start in range(0, len(items), BATCH):
            chunk = [item.input for item in items[start:start + BATCH]]
            try:
                outs = self.moe.generate_batch(chunk, [task.name] * len(chunk), max_new_tokens=task.max_new_tokens)
            except Exception:  # noqa: BLE001 - as above
                self.failures += len(chunk)
                answers += [""] * len(chunk)
                continue
            for out in outs:
                counts = self.routed.setdefault(task.name, {})
                counts[out.expert] = counts.get(out.expert, 0) + 1
                answers.append(out.text.strip())
        return answers


def load_model(spec: str) -> EvalModel:
    """A model from its CLI spec (see the module docstring)."""
    kind, _, target = spec.partition(":")
    if spec == "rule":
        return RuleModel()
    if spec == "toolkit":
        return ToolkitModel()
    if kind == "constant" and target.strip():
        return ConstantModel(text=target)
    if kind in ("expert", "dense") and target:
        from experts.expert import Expert

        expert = Expert.from_checkpoint(target)
        return GenerativeModel(name=f"{kind}:{Path(target).name}" if kind == "expert" else "dense", expert=expert)
    if kind == "bundle" and target:
        from router.moe import FlipMoE

        return BundleModel(name=f"bundle:{Path(target).name}", moe=FlipMoE.from_bundle(target))
    if kind == "remote" and target:
        from experts.remote import RemoteExpert

        url, _, model = target.partition("#")
        if not model:
            raise FlipmoeInputError(f"remote model spec {spec!r} names no model", hint="write remote:URL#MODEL")
        return GenerativeModel(name=f"remote:{model}", expert=RemoteExpert(name=model, base_url=url, model=model))
    raise FlipmoeInputError(f"unknown model spec {spec!r}",
                            hint="use rule, toolkit, constant:TEXT, expert:DIR, bundle:DIR, dense:DIR or "
                                 "remote:URL#MODEL")


def _fit(expert: Any, prompt: str, task: EvalTask) -> str:
    """The prompt cut (from its start) so that it and the answer fit a local expert's context (remote: as is)."""
    from router.oracle import fit_prompt

    return str(fit_prompt(expert, prompt, task=task.name, max_new_tokens=task.max_new_tokens))
