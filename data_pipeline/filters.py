"""Heuristic document filters: binary data, garbage text, length and repetition.

Each check is a pure function of the text returning the reason a document is removed, or None; the
pipeline counts removals by reason. Thresholds live in `FilterConfig`.
"""

from __future__ import annotations

import re
from collections import Counter

from data_pipeline.config import FilterConfig

TELEMETRY = frozenset({"log", "metric", "trace"})
_WORDS = re.compile(r"\w+")
_GARBAGE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff\ud800-\udfff\U000f0000-\U0010ffff]")
_SPACE = re.compile(r"\s")
_ALNUM = re.compile(r"[^\W_]")
_MIN_REPEAT_LINE = 8


def garbage_fraction(text: str) -> float:
    """Share of characters that no text should hold: controls (but tab and newline), U+FFFD, private use."""
    return _GARBAGE.subn("", text)[1] / len(text) if text else 0.0


def alnum_fraction(text: str) -> float:
    """Share of letters and digits among the non-space characters."""
    visible = len(text) - _SPACE.subn("", text)[1]
    return _ALNUM.subn("", text)[1] / visible if visible else 0.0


def duplicate_line_fraction(text: str) -> float:
    """Share of lines (of 8+ characters) that repeat an earlier line exactly."""
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if len(line) >= _MIN_REPEAT_LINE]
    if not lines:
        return 0.0
    return 1.0 - len(set(lines)) / len(lines)


def top_ngram_fraction(text: str, n: int = 3) -> float:
    """Share of words covered by the most frequent word n-gram (Gopher's repetition signal)."""
    words = _WORDS.findall(text.lower())
    if len(words) < n + 3:
        return 0.0
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    (_, count), = grams.most_common(1)
    return min(1.0, count * n / len(words)) if count > 1 else 0.0


def rejection_reason(text: str, modality: str, config: FilterConfig) -> str | None:
    """Why the document is removed ("binary", "garbage", "too_short", ...), or None to keep it."""
    if "\x00" in text:
        return "binary"
    if len(text) < config.min_chars:
        return "too_short"
    if len(text) > config.max_chars:
        return "too_long"
    if garbage_fraction(text) > config.max_garbage_fraction:
        return "garbage"
    if alnum_fraction(text) < config.min_alnum_fraction:
        return "garbage"
    if duplicate_line_fraction(text) > config.max_duplicate_line_fraction:
        return "repetition"
    if modality not in TELEMETRY and top_ngram_fraction(text) > config.max_top_ngram_fraction:
        return "repetition"
    return None
