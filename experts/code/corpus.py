"""Pretraining text of the code expert: real code and the chaos gym's synthetic trees.

- the project's own Python sources and YAML files, read from the directories of its installed
  packages (real code, written by people, in the style the expert will be asked about);
- the source trees and deploy manifests the chaos gym writes for its systems (Java, Go, Python,
  Node, C# handlers), for the built-in systems and the random systems of the training seeds — the
  held-out seeds' systems are what `exception_cause` and `config_key` are scored on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from experts.sources import Sources

# `eval` is left out on purpose: its task generators hold evaluation items (SQL, PromQL references), and
# the contamination check found them in this corpus when it was included.
PROJECT_PACKAGES = ("flipmoe", "director", "data_pipeline", "experts", "router")
MAX_FILE_CHARS = 40_000
"""Longer files (generated tables, data) are left out."""
CODE_SYSTEMS = 6
"""Random systems (training seeds) whose trees are read, besides the built-in ones."""


def code_trees(systems: list[tuple[str, int]]) -> dict[str, list[str]]:
    """`system@seed/path` -> lines of every file the chaos gym writes for these systems."""
    from data_pipeline.chaos.code import CodeBase
    from data_pipeline.chaos.systems import get_system

    files = {}
    for name, seed in systems:
        base = CodeBase(get_system(name, seed=seed))
        files.update({f"{name}@{seed}/{path}": lines for path, lines in base.files.items()})
    return files


def project_files() -> list[Path]:
    """Python and YAML files of the project's installed packages, sorted."""
    found: set[Path] = set()
    for package in PROJECT_PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for pattern in ("*.py", "*.yaml", "*.yml"):
                found.update(p for p in Path(folder).rglob(pattern) if "__pycache__" not in p.parts)
    return sorted(found)


def corpus(sources: Sources) -> list[str]:
    documents = []
    for path in project_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        if 0 < len(text) <= MAX_FILE_CHARS:
            documents.append(text)
    systems = [("webshop", 0), ("ticketing", 0)] + [("random", s) for s in sources.seeds("train")[:CODE_SYSTEMS]]
    documents += ["\n".join(lines) + "\n" for lines in code_trees(systems).values()]
    return documents
