"""Task data of the code expert, and the rule baselines of its tasks.

Both come from the chaos gym's code trees (`data_pipeline.chaos.code.CodeBase`) of random systems:
the training split reads the systems of the training seeds, the held-out split those of the
held-out seeds (>= 600000), so held-out handlers, files and services were never seen in training.

- `exception_cause`: a service's exception and stack trace -> `<kind> in <handler> at <path>:<line>`,
  the kind being the chaos gym's code-level fault (a null dereference injected into the handler's
  compute line) or a request rejected by input validation. Scored by token F1. Baseline: exception
  keywords for the kind, the first application frame for handler and file:line (as the stack names
  the file, without its folder in the tree).
- `config_key`: a service's settings and a client error from calling a dependency -> the setting to
  check (the dependency's timeout, its port, the database pool size), as the chaos gym's bad_config
  fault would break it. Baseline: error keywords for the kind of setting, the dependency's host
  setting for its prefix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from data_pipeline.examples import TaskExample
from experts.code.corpus import CODE_SYSTEMS
from experts.sources import Sources, balanced, check_split, digest, without_heldout

TASK_NAMES = ("exception_cause", "config_key")
BUG, VALIDATION = "null dereference", "invalid request rejected by validation"


def task_data(sources: Sources, split: str) -> dict[str, list[TaskExample]]:
    """{task: examples} of `split`; no training input is also a held-out input."""
    check_split(split)
    data = _split_data(sources, split)
    return data if split == "heldout" else without_heldout(data, _split_data(sources, "heldout"))


def _split_data(sources: Sources, split: str) -> dict[str, list[TaskExample]]:
    n = sources.examples(split)
    seeds = sources.seeds(split)[:CODE_SYSTEMS]
    causes, keys = [], []
    for seed in seeds:
        causes += _exception_examples(seed, split)
        keys += _config_examples(seed, split)
    causes.sort(key=lambda e: digest(e.input))
    keys.sort(key=lambda e: digest(e.input))
    return {"exception_cause": balanced(causes, lambda e: e.target.split(" in ")[0], n),
            "config_key": balanced(keys, lambda e: e.target.rsplit("_", 1)[-1], n)}


def _exception_examples(seed: int, split: str) -> list[TaskExample]:
    from data_pipeline.chaos.code import CodeBase
    from data_pipeline.chaos.systems import get_system

    base = CodeBase(get_system("random", seed=seed))
    examples = []
    for (service, method), handler in sorted(base.handlers.items()):
        base.inject_bug(service, method, "exception")
        for point, kind in (("compute", BUG), ("validate", VALIDATION)):
            examples.append(TaskExample(
                task="exception_cause", input=f"service: {service}\n{base.stack_trace(service, method, point)}",
                target=f"{kind} in {method} at {handler.file}:{handler.lines[point]}",
                meta={"source": f"chaos-code:random@{seed}", "split": split}))
    return examples


class _Fields(dict[str, str]):
    """Template fields of a client error; ones not given get a neutral value."""

    def __missing__(self, key: str) -> str:
        return {"verb": "POST", "path": "/api/v1", "op": "GET", "qty": "3"}.get(key, "0")


def _config_examples(seed: int, split: str) -> list[TaskExample]:
    from data_pipeline.chaos import catalogues as cat
    from data_pipeline.chaos import simulate as sim
    from data_pipeline.chaos.code import CodeBase, config_prefix
    from data_pipeline.chaos.systems import get_system

    system = get_system("random", seed=seed)
    base = CodeBase(system)
    examples = []
    for service, env in sorted(base.env.items()):
        runtime = system.service(service).runtime
        settings = "\n".join(f"{key}={value}" for key, value in env.items())
        for host_key, dependency in env.items():
            if not host_key.endswith("_HOST"):
                continue
            prefix = config_prefix(dependency)
            callee = system.service(dependency)
            fields = _Fields(peer=dependency, port=env.get(f"{prefix}_PORT", "0"),
                             peer_ip=f"10.0.{int(digest(dependency)[:2], 16)}.{int(digest(service)[:2], 16)}",
                             ms_int=env.get(f"{prefix}_TIMEOUT_MS", "1000"))
            if callee.kind == "service":
                cases = [(cat.CLIENT_ERRORS[runtime][sim.TIMEOUT], f"{prefix}_TIMEOUT_MS"),
                         (cat.CLIENT_ERRORS[runtime][sim.REFUSED], f"{prefix}_PORT")]
            else:
                pool = cat.STORE_CLIENT_ERRORS.get(callee.runtime, {}).get(sim.POOL)
                cases = [(cat.STORE_CLIENT_ERRORS[callee.runtime][sim.REFUSED], f"{prefix}_PORT")]
                cases += [(pool, "DB_POOL_MAX_SIZE")] if pool and "DB_POOL_MAX_SIZE" in env else []
            for template, key in cases:
                error = f"call to {dependency} failed: " + template.format_map(fields)
                examples.append(TaskExample(task="config_key", input=f"service: {service}\n{settings}\nerror: {error}",
                                            target=key, meta={"source": f"chaos-code:random@{seed}", "split": split}))
    return examples


# --- rules ------------------------------------------------------------------------------------------

_VALIDATION_WORDS = re.compile(r"IllegalArgument|ArgumentException|ValueError|invalid|must not be empty|"
                               r"is required|must be set", re.IGNORECASE)
# The first application frame of each runtime's stack: (file, line, handler).
_FRAMES = (
    re.compile(r"\tat \S+\.(?P<method>\w+)\((?P<file>\w+(?<!Assert)\.java):(?P<line>\d+)\)"),
    re.compile(r"\)\.(?P<method>\w+)\(0x[^\n]*\n\t/src/(?P<file>[\w./]+):(?P<line>\d+)"),
    re.compile(r'File "/app/(?P<file>[\w./]+)", line (?P<line>\d+), in (?P<method>\w+)'),
    re.compile(r"at \S*?\.?(?P<method>\w+) \(/usr/src/app/(?P<file>[\w./]+):(?P<line>\d+):\d+\)"),
    re.compile(r"\.(?P<method>\w+)\(\w+ request, ServerCallContext context\) in /app/(?P<file>[\w./]+):line "
               r"(?P<line>\d+)"),
)


def exception_baseline(inputs: Sequence[str]) -> list[str]:
    answers = []
    for text in inputs:
        kind = VALIDATION if _VALIDATION_WORDS.search(text) else BUG
        frame = next((m for pattern in _FRAMES if (m := pattern.search(text))), None)
        where = f" in {frame['method']} at {frame['file']}:{frame['line']}" if frame else ""
        answers.append(kind + where)
    return answers


_TIMEOUT_WORDS = re.compile(r"time[ds]? ?out|deadline", re.IGNORECASE)
_POOL_WORDS = re.compile(r"pool|connection is not available", re.IGNORECASE)


def config_key_baseline(inputs: Sequence[str]) -> list[str]:
    answers = []
    for text in inputs:
        settings = dict(line.split("=", 1) for line in text.split("\n") if re.fullmatch(r"[A-Z0-9_]+=.*", line))
        error = text.split("\nerror: ", 1)[-1]
        if _POOL_WORDS.search(error) and "DB_POOL_MAX_SIZE" in settings:
            answers.append("DB_POOL_MAX_SIZE")
            continue
        hosts = [k.removesuffix("_HOST") for k, v in settings.items() if k.endswith("_HOST") and v in error]
        prefix = max(hosts, key=len) if hosts else "UNKNOWN"
        answers.append(f"{prefix}_TIMEOUT_MS" if _TIMEOUT_WORDS.search(error) else f"{prefix}_PORT")
    return answers
