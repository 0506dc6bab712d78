"""Telemetry is data, never instructions: neutralise what in it could steer a model.

Log lines, alert text, names and event reasons are written by the systems under investigation, and an
attacker (or a confused service) can write anything there. Before any model reads telemetry — the
explorer's briefing and observations (`flipmoe.toolkits.explore.observation_text`), the summary prompt
(`director.actors.writing`), the runbook prompt (`director.director`) — it goes through `neutralise`,
which replaces with `REDACTED` every line that holds

- tool-call or chat-template markup: `<tool_call>`, `<function=...>`, `<|im_start|>`-style special tokens,
  `[INST]`, `[TOOL_CALLS]`, `<<SYS>>`, a forged turn ("assistant: ..."), and the experts' own prompt
  symbols (`<task>`, `<input>`, `<answer>`, `<extra_id_N>`: `data_pipeline.tokens`), so a model can
  neither replay a planted call nor read a forged turn;
- a tool call written as JSON (`{"name": ..., "arguments": ...}`, `"tool_calls": ...`);
- instruction-like text: "ignore previous instructions", "you are now", "system prompt", "the root cause
  is X", "the culprit is X", "report X as the root cause", ...

Lines are matched on a normalised copy (NFKC, format characters such as zero-width spaces removed,
whitespace collapsed), so spacing and compatibility look-alikes do not slip through; a line that matches
nothing is returned as it was. Whole lines go, not just the phrase: what remains of an instruction is
still an instruction.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["REDACTED", "is_suspicious", "neutralise"]

REDACTED = "[redacted: instructions or tool-call markup in the telemetry]"

_MARKUP = re.compile(
    # Tool-call tags, with or without attributes.
    r"</?\s*(tool_calls?|tool_response|tool_results?|tool_use|function_calls?|function_results?|invoke)\b[^>]{0,200}>"
    # Role tags and the experts' prompt symbols, exactly: "<input type=...>" in an HTML log stays.
    r"|</?\s*(system|assistant|user|developer|tools?|functions?|think|task|input|answer|extra_id_\d+)\s*>"
    r"|<function\s*=|<\|[^|>\n]{1,60}\|>|\[/?(INST|TOOL_CALLS|TOOL_RESULTS|AVAILABLE_TOOLS|SYSTEM_PROMPT)\]"
    # A forged turn: "assistant:" opening a line, or mid-line where a newline was collapsed (log templates).
    r"|<</?SYS>>|(^|\s)(system|assistant|developer)\s*:(\s|$)",
    re.IGNORECASE)
_QUOTE = r"\\?[\"']"
_JSON_CALL = re.compile(
    rf"{_QUOTE}(name|tool|tool_name|function)\s*{_QUOTE}\s*:\s*{_QUOTE}[^\"'\\]{{1,80}}{_QUOTE}\s*,\s*"
    rf"{_QUOTE}(arguments|args|parameters|input)\s*{_QUOTE}\s*:"
    rf"|{_QUOTE}(tool_calls|function_call)\s*{_QUOTE}\s*:", re.IGNORECASE)
_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+|your\s+|of\s+)*"
    r"(previous|prior|above|earlier|preceding|instructions?|prompts?|rules|guidelines)\b"
    r"|\byou\s+are\s+now\b|\bfrom\s+now\s+on\s*,?\s+you\b|\bact\s+as\s+(an?\s+|the\s+)?(ai|assistant|model)\b"
    r"|\bsystem\s+prompt\b|\bnew\s+instructions\b|\bdeveloper\s+mode\b"
    r"|\b(report|name|declare|mark|blame|flag|identify|list|answer|output|conclude|state|submit|return)\b.{0,80}"
    r"\bas\s+(the\s+)?(likely\s+|probable\s+|real\s+|actual\s+|true\s+|only\s+)?root[\s_-]*cause"
    r"|\broot[\s_-]*cause\s+(is|was|=|:)|\broot[\s_-]*cause\s+of\s+(this|the)\s+\w+\s+(is|was)\b"
    r"|\bculprit\s+(is|was)\b|\b(real|actual|true)\s+cause\s+(is|was)\b"
    r"|\b(call|invoke|use)\s+(the\s+|this\s+)?tool\b|\btool[\s_-]*call",
    re.IGNORECASE)
_FORMAT_CHARS = "Cf"


def neutralise(text: str) -> str:
    """`text` with every line that could steer a model replaced by `REDACTED` (see the module docstring)."""
    return "\n".join(REDACTED if is_suspicious(line) else line for line in text.splitlines())


def is_suspicious(line: str) -> bool:
    """True when one line of telemetry holds markup, a JSON tool call or instruction-like text."""
    normal = _normalised(line)
    return bool(_MARKUP.search(normal) or _JSON_CALL.search(normal) or _INSTRUCTION.search(normal))


def _normalised(line: str) -> str:
    text = unicodedata.normalize("NFKC", line)
    text = "".join(c for c in text if unicodedata.category(c) != _FORMAT_CHARS)
    return " ".join(text.split())
