"""The unit the corpus pipeline works on: a `Document` (text plus provenance), its normalisation, and
its modality tag.

Normalisation is deliberately light, because the experts' tokenizers are lossless and logs keep
meaning in their layout: Unicode NFC, line endings to "\\n", trailing whitespace cut from every line,
runs of more than two blank lines collapsed, and the invisible characters that only break
deduplication (BOM, zero-width spaces, soft hyphens) removed. Indentation and inner spacing stay.

Modality tagging (`tag_modality`) reads the file extension when there is one and otherwise the text
itself, with cheap line-level cues (timestamps and levels for logs, `key: value` or `{"...":` for
configuration, keywords and brackets for code, span fields for traces, number-dense rows for metrics,
sentences for prose). `modality_accuracy` measures it on documents whose modality is known.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MODALITIES: tuple[str, ...] = ("log", "metric", "trace", "code", "config", "prose")

_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060\u00ad"), None)
_BLANK_RUNS = re.compile(r"\n{4,}")
_TRAILING = re.compile(r"[ \t\f\v]+\n")

_EXTENSIONS = {
    "log": "log", "out": "log", "err": "log",
    "py": "code", "go": "code", "java": "code", "js": "code", "ts": "code", "c": "code", "h": "code",
    "cc": "code", "cpp": "code", "rs": "code", "rb": "code", "sh": "code", "scala": "code", "kt": "code",
    "cs": "code", "php": "code", "sql": "code",
    "yaml": "config", "yml": "config", "toml": "config", "ini": "config", "cfg": "config", "conf": "config",
    "json": "config", "properties": "config", "tf": "config", "hcl": "config", "xml": "config",
    "md": "prose", "rst": "prose", "txt": "prose", "adoc": "prose",
    "prom": "metric",
}
_LOG_LINE = re.compile(
    r"^\s*(?:\[?\d{2,4}[-/.]\d{1,2}[-/.]\d{1,4}[T ]?\d{0,2}:?\d{0,2}|\[?\d{2}:\d{2}:\d{2}|\d{6} \d{6}|"
    r"[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}|- \d{10}|\d{10}(?:\.\d+)?\s)"
    r"|\b(?:INFO|WARN|WARNING|ERROR|DEBUG|TRACE|FATAL|SEVERE|CRITICAL)\b")
_TRACE_LINE = re.compile(r"\b(?:span|trace)_?[iI]d[=:]\s*[0-9a-f]|\bduration[=:]\s*[\d.]+\s*(?:ms|us|s)\b|"
                         r"^\s*[├└│─]+\S")
_METRIC_LINE = re.compile(r"^\s*[A-Za-z_:][\w:]*(?:\{[^}]*\})?\s+[-+]?[\d.]+(?:e[-+]?\d+)?(?:\s+\d+)?\s*$|"
                          r"^[\s\d.,:;eE+\-TZ|]+$")
_CONFIG_LINE = re.compile(r"^\s*(?:- )?[\w.\-\"']+\s*[:=]\s*\S*|^\s*\[[\w.\- \"]+\]\s*$|^\s*[{}\[\]],?\s*$|^\s*- \S")
_CODE_LINE = re.compile(
    r"^\s*(?:def|class|import|from|return|if|elif|else|for|while|try|except|func|package|public|private|"
    r"static|void|const|let|var|fn|impl|struct|switch|case|#include|function|async|await|throw|catch)\b|"
    r"[;{}]\s*$|\)\s*(?:->|:|\{)\s*|^\s*(?://|/\*|\*|#!)")
_PROSE_LINE = re.compile(r"^\W{0,4}(?:[A-Za-z][A-Za-z'’,;:.()\-]*\s+){5,}")


@dataclass(kw_only=True)
class Document:
    """One document of the corpus: normalised text, where it came from, and what it is."""

    id: str
    """Stable identifier (source path plus position, or a chaos-gym incident id plus part)."""
    text: str
    """Normalised text."""
    source: str
    """Name of the source it came from (as configured)."""
    modality: str = ""
    """One of `MODALITIES`; empty until tagged."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance: path, extension, incident id, service, the modality hint of the source."""


def normalise_text(text: str) -> str:
    """NFC, "\\n" line endings, no trailing spaces, at most three blank lines, no invisible characters."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.translate(_INVISIBLE)
    text = _TRAILING.sub("\n", text)
    text = _BLANK_RUNS.sub("\n\n\n", text)
    return text.strip("\n").rstrip()


def modality_from_extension(name: str) -> str | None:
    """The modality a file extension implies, or None when it says nothing (or nothing reliable)."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _EXTENSIONS.get(suffix)


def tag_modality(text: str, *, hint: str | None = None, max_lines: int = 200) -> str:
    """The document's modality: `hint` when given (a trusted source tag), else guessed from its lines.

    Each of the first `max_lines` non-blank lines votes for every modality whose cue it shows; a
    modality wins with the largest share of lines, ties broken in the order of the checks below
    (specific telemetry cues before the generic configuration and code ones).
    """
    if hint:
        return hint
    lines = [line for line in text.split("\n", max_lines)[:max_lines] if line.strip()]
    if not lines:
        return "prose"
    n = len(lines)
    share = {
        "trace": sum(bool(_TRACE_LINE.search(line)) for line in lines) / n,
        "log": sum(bool(_LOG_LINE.search(line)) for line in lines) / n,
        "metric": sum(bool(_METRIC_LINE.match(line)) for line in lines) / n,
        "config": sum(bool(_CONFIG_LINE.match(line)) for line in lines) / n,
        "code": sum(bool(_CODE_LINE.search(line)) for line in lines) / n,
    }
    prose = sum(bool(_PROSE_LINE.match(line)) for line in lines) / n
    best = max(share, key=lambda m: share[m])
    # Markdown bullets look like YAML lists and sentences with a colon like keys: many sentence-like
    # lines (six words or more) make a text prose unless a telemetry cue is as common.
    if prose >= 0.4 and prose >= share[best] - (0.0 if best in ("log", "trace", "metric") else 0.3):
        return "prose"
    if share[best] >= 0.3:
        return best
    # Prose: mostly words, long lines. Everything else that is not clearly telemetry is prose too.
    return "prose"


def modality_accuracy(texts: Sequence[str], truth: Sequence[str]) -> dict[str, Any]:
    """Accuracy and per-modality precision/recall of `tag_modality` (without hints) against `truth`."""
    predicted = [tag_modality(t) for t in texts]
    confusion = Counter(zip(truth, predicted, strict=True))
    per_modality = {}
    for modality in sorted(set(truth) | set(predicted)):
        tp = confusion[(modality, modality)]
        n_pred = sum(c for (_, p), c in confusion.items() if p == modality)
        n_true = sum(c for (t, _), c in confusion.items() if t == modality)
        per_modality[modality] = {"precision": tp / n_pred if n_pred else 0.0,
                                  "recall": tp / n_true if n_true else 0.0, "support": n_true}
    correct = sum(c for (t, p), c in confusion.items() if t == p)
    return {"accuracy": correct / len(texts) if texts else 0.0, "per_modality": per_modality,
            "confusion": {f"{t}->{p}": c for (t, p), c in sorted(confusion.items())}}
