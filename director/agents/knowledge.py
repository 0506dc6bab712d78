"""A small knowledge base: one Markdown document per fault type, with TF-IDF retrieval.

The documents (`director/knowledge/<fault_type>.md`) say how each fault type of
`flipmoe.telemetry.taxonomy` shows in metrics, logs, traces and events, what to check next and how
it is usually fixed. Actors retrieve them by free text (an alert, a symptom description) with
`search`; the report takes the "What to check" list of each root cause's fault type from
`what_to_check`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "knowledge"


@dataclass(frozen=True, kw_only=True)
class Doc:
    """A retrieved document."""

    title: str
    score: float
    """Cosine similarity to the query, in [0, 1]."""
    text: str
    name: str = ""
    """The file stem: the fault type for the shipped documents."""


def _analyse(text: str) -> str:
    # `memory_leak`, `OOMKilled` and `memory leak` should meet: index both the identifier and its words.
    lowered = text.lower()
    return lowered + " " + re.sub(r"[_:./-]+", " ", lowered)


class KnowledgeBase:
    """Documents and their TF-IDF index."""

    def __init__(self, documents: dict[str, str]) -> None:
        if not documents:
            raise ValueError("a knowledge base needs at least one document")
        self.names = sorted(documents)
        self.texts = [documents[name] for name in self.names]
        self.titles = [_title(text, name) for name, text in zip(self.names, self.texts, strict=True)]
        self._index: tuple[Any, Any] | None = None

    def _tfidf(self) -> tuple[Any, Any]:
        """The vectorizer and document matrix, built on first search: scikit-learn takes a second to
        import, and reading a section (the report's use) needs no index."""
        if self._index is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vectorizer = TfidfVectorizer(preprocessor=_analyse, sublinear_tf=True, ngram_range=(1, 2),
                                         stop_words="english", token_pattern=r"(?u)\b\w\w+\b")
            self._index = (vectorizer, vectorizer.fit_transform(self.texts))
        return self._index

    @classmethod
    def from_directory(cls, directory: str | Path = KNOWLEDGE_DIR) -> KnowledgeBase:
        """Every `*.md` file of `directory`, named by its stem."""
        paths = sorted(Path(directory).glob("*.md"))
        if not paths:
            raise FileNotFoundError(f"no knowledge documents (*.md) in {directory}")
        return cls({p.stem: p.read_text(encoding="utf-8") for p in paths})

    def search(self, query: str, k: int = 3) -> list[Doc]:
        """The `k` documents most similar to `query` (those with any similarity), best first."""
        if k <= 0 or not query.strip():
            return []
        vectorizer, matrix = self._tfidf()
        scores = (matrix @ vectorizer.transform([query]).T).toarray().ravel()
        order = np.argsort(-scores, kind="stable")[:k]
        return [Doc(title=self.titles[i], score=float(scores[i]), text=self.texts[i], name=self.names[i])
                for i in order if scores[i] > 0]

    def get(self, name: str) -> Doc | None:
        """The document called `name` (a fault type), if there is one."""
        if name not in self.names:
            return None
        i = self.names.index(name)
        return Doc(title=self.titles[i], score=1.0, text=self.texts[i], name=name)

    def section(self, name: str, heading: str) -> list[str]:
        """The bullet items under `## heading` of document `name` (empty when either is missing)."""
        doc = self.get(name)
        return _bullets(doc.text, heading) if doc is not None else []


def _title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def _bullets(text: str, heading: str) -> list[str]:
    items: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line[3:].strip().lower() == heading.lower()
        elif inside and line.startswith("- "):
            items.append(line[2:].strip())
        elif inside and line.startswith("  ") and items:  # a wrapped bullet
            items[-1] += " " + line.strip()
    return items


@lru_cache(maxsize=1)
def default_knowledge_base() -> KnowledgeBase:
    """The shipped documents (loaded and indexed once per process)."""
    return KnowledgeBase.from_directory(KNOWLEDGE_DIR)


def search(query: str, k: int = 3) -> list[Doc]:
    """Search the shipped knowledge base."""
    return default_knowledge_base().search(query, k)


def what_to_check(fault_type: str | None, *, query: str = "") -> list[str]:
    """What to check next for a fault type; without one (or an unknown one), for the document that
    best matches `query` (say, the root cause's evidence summaries)."""
    kb = default_knowledge_base()
    if fault_type and kb.get(fault_type) is not None:
        return kb.section(fault_type, "What to check")
    hits = kb.search(query, 1) if query else []
    return kb.section(hits[0].name, "What to check") if hits else []


def remediation(fault_type: str) -> list[str]:
    """Typical remediation of a fault type (empty for an unknown one)."""
    return default_knowledge_base().section(fault_type, "Remediation")


def fault_types_without_docs(names: Sequence[str]) -> list[str]:
    """Which of `names` have no document (the shipped base must cover the whole taxonomy)."""
    kb = default_knowledge_base()
    return [name for name in names if kb.get(name) is None]
