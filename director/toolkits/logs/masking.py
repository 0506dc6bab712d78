"""Masking: the variable tokens of a log message, replaced before Drain sees it.

One rule set for every system, no per-system constants. Each rule is a regex; when it defines a
group named `value`, only that group is masked and the rest of the match is context that stays
(the key of `key=value`, the quotes around a string, the `blk_` of `blk_-3419`). Rules run in
order, so structured tokens (URLs, IPs, paths) are masked whole before the number rule could cut
them into pieces.

A mask is written `<:NAME:>` while mining, so Drain compares `<:IP:>` with `<:IP:>` as equal
tokens, and rendered as LogHub's `<*>` in templates. Masks sit inside a token without swallowing
its punctuation (`/<*>:<*>`, `blk_<*>`, `<*>ms`), which is how LogHub's ground truth writes them.

A plain word is never masked, alone or as a value (`status=FAILED` keeps FAILED): words carry the
meaning that tells templates apart, and Drain still turns a word into `<*>` where it varies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from drain3.masking import AbstractMaskingInstruction

MASK_PREFIX, MASK_SUFFIX = "<:", ":>"
WILDCARD = "<*>"

# Boundaries: a token edge is anything but a letter or digit, so `_`, `-`, `/`, `:` separate.
_START = r"(?<![A-Za-z0-9])"
_END = r"(?![A-Za-z0-9])"
_HEX = "[0-9a-fA-F]"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"
_CLOCK = r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?"
_TIME_UNIT = r"(?:ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d)"
# Characters that end a value: whitespace, separators, brackets, quotes, and `=` (which also keeps
# the value pattern linear on text like `a=a=a=...`).
_VALUE_CHAR = r"""[^\s,;&|()\[\]{}<>"'=]"""
# `File.java:123` and `Class#123` name a call site, so the line number is part of the template.
_SOURCE_EXTENSIONS = ("c", "h", "cc", "cpp", "hpp", "cs", "go", "rs", "py", "rb", "js", "ts", "kt", "java",
                      "scala", "swift", "php")
_NOT_SOURCE_LINE = "".join(rf"(?<!\.{ext}:)" for ext in _SOURCE_EXTENSIONS) + r"(?<![A-Za-z]#)"
_SOURCE_FILE = r"[\w.-]*\.(?:" + "|".join(_SOURCE_EXTENSIONS) + "):"


_ADJACENT_WILDCARDS = re.compile(f"(?:{re.escape(WILDCARD)}){{2,}}")


def _masked(name: str) -> str:
    """The text of an applied mask, for rules that look at what an earlier rule masked."""
    return re.escape(MASK_PREFIX + name + MASK_SUFFIX)


class MaskRule(AbstractMaskingInstruction):
    """A drain3 masking instruction that masks the `value` group when it has one, else the match.

    `needs` lists substrings of which a message must hold one for the rule to apply at all: a
    cheap test that spares most messages most regexes.
    """

    def __init__(self, name: str, pattern: str, doc: str, *, needs: tuple[str, ...] = (),
                 mask_with: str | None = None) -> None:
        super().__init__(mask_with or name)
        self.name = name
        self.regex = re.compile(pattern)
        self.doc = doc
        self.needs = needs

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        if self.needs and not any(needed in content for needed in self.needs):
            return content
        token = mask_prefix + self.mask_with + mask_suffix
        if "value" not in self.regex.groupindex:
            return self.regex.sub(lambda _: token, content)

        def replace(match: re.Match[str]) -> str:
            start, end = match.span("value")
            if start < 0:  # an alternative of the pattern without a `value` group
                return token
            whole, offset = match.group(0), match.start()
            return whole[: start - offset] + token + whole[end - offset:]

        return self.regex.sub(replace, content)

    def __repr__(self) -> str:
        return f"MaskRule({self.name!r})"


MASK_RULES: tuple[MaskRule, ...] = (
    MaskRule("URL", r"\b[A-Za-z][A-Za-z0-9+.-]*://(?P<value>[^\s\"'<>()\[\]{},;]+)",
             "everything after `scheme://`; the scheme stays", needs=("://",)),
    MaskRule("PATH", r"(?<![\w.:/\\])(?:~?(?:/[\w.@%+~=-]+){2,}/?|[A-Za-z]:\\[^\s\"'<>()\[\],;]+)",
             "unix paths of two or more parts, and Windows paths (a lone `/name` is usually a constant)",
             needs=("/", "\\")),
    MaskRule("UUID", _START + rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}" + _END,
             "UUIDs", needs=("-",)),
    MaskRule("EMAIL", _START + r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}" + _END,
             "e-mail addresses", needs=("@",)),
    MaskRule("MAC", _START + rf"{_HEX}{{2}}(?:[:-]{_HEX}{{2}}){{5,}}" + _END,
             "MAC and other colon-separated hardware addresses", needs=(":", "-")),
    MaskRule("IPV6", r"(?<![\w:.])(?=[0-9a-fA-F:]*::|(?:[0-9a-fA-F]{1,4}:){7})"
             rf"(?:{_HEX}{{1,4}})?(?::{{1,2}}{_HEX}{{1,4}}){{1,7}}(?![\w:])",
             "IPv6 addresses, full or `::`-compressed", needs=(":",)),
    MaskRule("TIMESTAMP",
             r"(?<![\w.:/])(?:\d{4}-\d{2}-\d{2}(?:[T ]" + _CLOCK + r")?(?:Z|[+-]\d{2}:?\d{2})?"
             rf"|(?:{_DAY},? )?{_MONTH} +\d{{1,2}}(?:,? \d{{4}})? +{_CLOCK}(?: [A-Z]{{3,4}})?(?: \d{{4}})?"
             rf"|{_CLOCK})" + _END,
             "dates and times (ISO 8601, syslog style, clock times) as one token", needs=(":", "-")),
    MaskRule("IP", _START + r"\d{1,3}(?:\.\d{1,3}){3}(?!\.?[A-Za-z0-9])", "IPv4 addresses", needs=(".",)),
    MaskRule("HOST", r"(?<![\w.-])(?!" + _SOURCE_FILE + r")(?=[\w.-]*[A-Za-z])(?=[\w.-]*\d)"
             r"[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?(?=:\d{1,5}" + _END + "|/" + _masked("IP") + ")",
             "host names with a digit (instances: web-07, node3.dc) in `host:port` or `host/ip`",
             needs=(*(f":{digit}" for digit in "0123456789"), "/" + MASK_PREFIX + "IP" + MASK_SUFFIX)),
    MaskRule("PORT", rf"(?:(?<={_masked('IP')})|(?<={_masked('HOST')})|(?<={_masked('IPV6')}\]))"
             r":(?P<value>\d{1,5})" + _END, "the port of `ip:port` and `host:port`; the colon stays",
             needs=(f"IP{MASK_SUFFIX}:", f"HOST{MASK_SUFFIX}:", f"IPV6{MASK_SUFFIX}]:")),
    MaskRule("ID", r"(?<=[A-Za-z][_-])(?P<value>-?\d[\w-]*)",
             "the tail of `word_123...` and `word-123...` identifiers: blk_-42, job_17_3, api-5d8f-x2",
             needs=("_", "-")),
    MaskRule("HEX", _START + rf"(?:0[xX]{_HEX}+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F]){_HEX}{{6,}})"
             + _END, "`0x` numbers, and hex strings of six or more characters mixing digits and letters; "
             "masked like numbers, since one field can print either", mask_with="NUM"),
    MaskRule("KV", r"(?<![\w.-])[A-Za-z_][\w.-]*=(?P<value>" + _VALUE_CHAR + r"*\d" + _VALUE_CHAR + "*)",
             "the value of `key=value` when it holds a digit; the key stays", needs=("=",)),
    MaskRule("QUOTED", r"(?<!\w)(?P<q>[\"'])(?P<value>[^\"'\n]*[\d\s][^\"'\n]*)(?P=q)(?!\w)",
             "the content of a quoted string with digits or spaces; the quotes stay", needs=("\"", "'")),
    MaskRule("DURATION", _START + rf"(?:\d+(?:\.\d+)?{_TIME_UNIT}){{2,}}" + _END
             + "|" + _START + rf"(?P<value>\d+(?:\.\d+)?){_TIME_UNIT}" + _END,
             "durations: the number of `35ms` (the unit stays), all of `1m30s`"),
    MaskRule("NUM", r"(?<![A-Za-z0-9])(?<!\d\.)" + _NOT_SOURCE_LINE
             + r"(?:[-+]|v(?=\d+\.\d))?\d+(?:\.\d+)*(?![0-9])",
             "numbers, decimals and versions not glued after a letter (`eth0` stays, `41C` -> `<*>C`), "
             "except the line of a source location (`Main.java:42`, `OrderService#42`)"),
)


@dataclass(frozen=True, kw_only=True)
class Masker:
    """Applies `rules` in order; `render` turns mined templates into `<*>` form."""

    rules: Sequence[MaskRule] = MASK_RULES
    _mask_token: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Drain writes its own wildcard with the same prefix and suffix: `<:*:>`.
        names = "|".join(sorted({re.escape(rule.mask_with) for rule in self.rules} | {r"\*"}))
        pattern = re.escape(MASK_PREFIX) + f"(?:{names})" + re.escape(MASK_SUFFIX)
        object.__setattr__(self, "_mask_token", re.compile(pattern))

    def mask(self, message: str) -> str:
        """The message with its variable tokens as `<:NAME:>`."""
        for rule in self.rules:
            message = rule.mask(message, MASK_PREFIX, MASK_SUFFIX)
        return message

    def render(self, template: str) -> str:
        """A mined template with every mask written `<*>`, as LogHub writes templates."""
        # Adjacent masks are one variable stretch of text: `<*><*>` says nothing more than `<*>`.
        return _ADJACENT_WILDCARDS.sub(WILDCARD, self._mask_token.sub(WILDCARD, template))
