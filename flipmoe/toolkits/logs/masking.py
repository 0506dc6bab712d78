r"""Masking: the variable tokens of a log message, replaced before Drain sees it.

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

Speed. Python's regex engine skips quickly to the characters a pattern can start with, but only when
the pattern begins with a character class; so the rules that run on most messages (NUM, IP, HEX,
PORT, ID) are written to start with their first character and check what precedes it from there
(`(?<!X[\s\S])` after the first character is `(?<!X)` before it); a comment gives each one's plain
form. `needs` and `may_match` are cheap necessary conditions that spare most messages most regexes.
`MaskCache` masks each message shape once (the notes above it say why that is exact). The tests hold
the fast forms to the plain ones, and the cache to the masker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from drain3.masking import AbstractMaskingInstruction

MASK_PREFIX, MASK_SUFFIX = "<:", ":>"
WILDCARD = "<*>"

# Boundaries: a token edge is anything but a letter or digit, so `_`, `-`, `/`, `:` separate.
_START = r"(?<![A-Za-z0-9])"
# `_START` checked from after the first character of the match (see the module docstring).
_START_AFTER_FIRST = r"(?<![A-Za-z0-9][\s\S])"
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
# Checked from after the first character of the match, like `_START_AFTER_FIRST`.
_NOT_SOURCE_LINE_AFTER_FIRST = "".join(rf"(?<!\.{ext}:[\s\S])" for ext in _SOURCE_EXTENSIONS) + \
    r"(?<![A-Za-z]#[\s\S])"
_SOURCE_FILE = r"[\w.-]*\.(?:" + "|".join(_SOURCE_EXTENSIONS) + "):"


# Necessary conditions (`may_match`): separators a match cannot do without.
def _five_separators(text: str) -> bool:  # six hex pairs
    return text.count(":") + text.count("-") >= 5


def _ipv6_colons(text: str) -> bool:  # `::`, or eight groups
    return "::" in text or text.count(":") >= 7


def _four_dashes(text: str) -> bool:
    return text.count("-") >= 4


def _found(pattern: str) -> Callable[[str], bool]:
    """A necessary condition that is a regex search (one that starts with a character class, which
    the regex engine skips to)."""
    search = re.compile(pattern).search
    return lambda text: search(text) is not None


# A clock time holds `1:23:4`, an ISO date `1-23-4`; a dotted quad `1.2.3.4`; a duration a digit
# then the first letter of a unit; `0x` or six hex digits in a row; an ID a digit after `_` or `-`
# (perhaps after a minus); a path two `/part`s or a drive.
_CLOCK_OR_DATE = _found(r"\d[:-]\d\d[:-]\d")
_DOTTED_QUAD = _found(r"\d\.\d{1,3}\.\d{1,3}\.\d")
_DIGIT_UNIT = _found(r"\d[nuµmshd]")
_HEX_RUN = _found(r"[0-9a-fA-F][0-9a-fA-F]{5}")
_ID_DIGIT = _found(r"[_-]-?\d")
# A host name's last letter or digit right before `:` and a digit, or before `/<:IP:>`.
_HOST_END = _found(r"[:/](?<=[A-Za-z0-9][:/])(?:(?<=:)\d|(?<=/)" + re.escape(MASK_PREFIX + "IP" + MASK_SUFFIX) + ")")
_TWO_PARTS = _found(r"/[\w.@%+~=-]+/[\w.@%+~=-]|:\\")


def _six_hex(text: str) -> bool:
    return "0x" in text or "0X" in text or _HEX_RUN(text)


_ADJACENT_WILDCARDS = re.compile(f"(?:{re.escape(WILDCARD)}){{2,}}")


def _masked(name: str) -> str:
    """The text of an applied mask, for rules that look at what an earlier rule masked."""
    return re.escape(MASK_PREFIX + name + MASK_SUFFIX)


class MaskRule(AbstractMaskingInstruction):
    """A drain3 masking instruction that masks the `value` group when it has one, else the match.

    `needs` lists substrings of which a message must hold one for the rule to apply at all: a
    cheap test that spares most messages most regexes. `may_match`, when given, is a further test
    that every text the regex matches in passes (a count of separators, say), so it only saves time.
    """

    def __init__(self, name: str, pattern: str, doc: str, *, needs: tuple[str, ...] = (),
                 may_match: Callable[[str], bool] | None = None, mask_with: str | None = None) -> None:
        super().__init__(mask_with or name)
        self.name = name
        self.regex = re.compile(pattern)
        self.doc = doc
        self.needs = needs
        self.may_match = may_match
        # A few needed substrings are looked for one by one, many in one search.
        self._needs_search = re.compile("|".join(re.escape(needed) for needed in needs)).search \
            if len(needs) > 3 else None
        self._has_value = "value" in self.regex.groupindex

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        token = mask_prefix + self.mask_with + mask_suffix
        pieces: list[str] = []
        position = 0
        for start, end in self.spans(content):
            pieces += (content[position:start], token)
            position = end
        return "".join(pieces) + content[position:] if pieces else content

    def spans(self, content: str) -> list[tuple[int, int]]:
        """Where `mask` puts its token: the `value` group of each match when it has one, else the
        whole match; in order and without overlap."""
        if self._needs_search is not None:
            if self._needs_search(content) is None:
                return []
        elif self.needs:
            for needed in self.needs:
                if needed in content:
                    break
            else:
                return []
        if self.may_match is not None and not self.may_match(content):
            return []
        if not self._has_value:
            return [match.span() for match in self.regex.finditer(content)]
        # An alternative of the pattern without a `value` group masks its whole match.
        return [match.span("value") if match.start("value") >= 0 else match.span()
                for match in self.regex.finditer(content)]

    def __repr__(self) -> str:
        return f"MaskRule({self.name!r})"


MASK_RULES: tuple[MaskRule, ...] = (
    MaskRule("URL", r"\b[A-Za-z][A-Za-z0-9+.-]*://(?P<value>[^\s\"'<>()\[\]{},;]+)",
             "everything after `scheme://`; the scheme stays", needs=("://",)),
    MaskRule("PATH", r"(?<![\w.:/\\])(?:~?(?:/[\w.@%+~=-]+){2,}/?|[A-Za-z]:\\[^\s\"'<>()\[\],;]+)",
             "unix paths of two or more parts, and Windows paths (a lone `/name` is usually a constant)",
             needs=("/", "\\"), may_match=_TWO_PARTS),
    MaskRule("UUID", _START + rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}" + _END,
             "UUIDs", needs=("-",), may_match=_four_dashes),
    MaskRule("EMAIL", _START + r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}" + _END,
             "e-mail addresses", needs=("@",)),
    MaskRule("MAC", _START + rf"{_HEX}{{2}}(?:[:-]{_HEX}{{2}}){{5,}}" + _END,
             "MAC and other colon-separated hardware addresses", needs=(":", "-"), may_match=_five_separators),
    MaskRule("IPV6", r"(?<![\w:.])(?=[0-9a-fA-F:]*::|(?:[0-9a-fA-F]{1,4}:){7})"
             rf"(?:{_HEX}{{1,4}})?(?::{{1,2}}{_HEX}{{1,4}}){{1,7}}(?![\w:])",
             "IPv6 addresses, full or `::`-compressed", needs=(":",), may_match=_ipv6_colons),
    MaskRule("TIMESTAMP",
             r"(?<![\w.:/])(?:\d{4}-\d{2}-\d{2}(?:[T ]" + _CLOCK + r")?(?:Z|[+-]\d{2}:?\d{2})?"
             rf"|(?:{_DAY},? )?{_MONTH} +\d{{1,2}}(?:,? \d{{4}})? +{_CLOCK}(?: [A-Z]{{3,4}})?(?: \d{{4}})?"
             rf"|{_CLOCK})" + _END,
             "dates and times (ISO 8601, syslog style, clock times) as one token", needs=(":", "-"),
             may_match=_CLOCK_OR_DATE),
    # `_START \d{1,3}(?:\.\d{1,3}){3}(?!\.?[A-Za-z0-9])` from its first digit.
    MaskRule("IP", r"\d" + _START_AFTER_FIRST + r"\d{0,2}(?:\.\d{1,3}){3}(?!\.?[A-Za-z0-9])", "IPv4 addresses",
             needs=(".",), may_match=_DOTTED_QUAD),
    MaskRule("HOST", r"(?<![\w.-])(?!" + _SOURCE_FILE + r")(?=[\w.-]*[A-Za-z])(?=[\w.-]*\d)"
             r"[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?(?=:\d{1,5}" + _END + "|/" + _masked("IP") + ")",
             "host names with a digit (instances: web-07, node3.dc) in `host:port` or `host/ip`",
             needs=(*(f":{digit}" for digit in "0123456789"), "/" + MASK_PREFIX + "IP" + MASK_SUFFIX),
             may_match=_HOST_END),
    # `(?:(?<=IP)|(?<=HOST)|(?<=IPV6\])):(?P<value>\d{1,5})_END` from its colon.
    MaskRule("PORT", rf":(?:(?<={_masked('IP')}:)|(?<={_masked('HOST')}:)|(?<={_masked('IPV6')}\]:))"
             r"(?P<value>\d{1,5})" + _END, "the port of `ip:port` and `host:port`; the colon stays",
             needs=(f"IP{MASK_SUFFIX}:", f"HOST{MASK_SUFFIX}:", f"IPV6{MASK_SUFFIX}]:")),
    # `(?<=[A-Za-z][_-])(?P<value>-?\d[\w-]*)` from its first character (a minus or a digit).
    MaskRule("ID", r"(?P<value>[-\d](?<=[A-Za-z][_-][\s\S])(?:(?<=-)\d[\w-]*|(?<=\d)[\w-]*))",
             "the tail of `word_123...` and `word-123...` identifiers: blk_-42, job_17_3, api-5d8f-x2",
             needs=("_", "-"), may_match=_ID_DIGIT),
    # `_START (?:0[xX]HEX+|(?=HEX*\d)(?=HEX*[a-fA-F])HEX{6,}) _END` from its first hex digit.
    MaskRule("HEX", _HEX + _START_AFTER_FIRST + rf"(?:(?<=0)[xX]{_HEX}+{_END}"
             rf"|(?:(?<=\d)|(?={_HEX}*\d))(?:(?<=[a-fA-F])|(?={_HEX}*[a-fA-F])){_HEX}{{5,}}{_END})",
             "`0x` numbers, and hex strings of six or more characters mixing digits and letters; "
             "masked like numbers, since one field can print either", may_match=_six_hex, mask_with="NUM"),
    MaskRule("KV", r"(?<![\w.-])[A-Za-z_][\w.-]*=(?P<value>" + _VALUE_CHAR + r"*\d" + _VALUE_CHAR + "*)",
             "the value of `key=value` when it holds a digit; the key stays", needs=("=",)),
    MaskRule("QUOTED", r"(?<!\w)(?P<q>[\"'])(?P<value>[^\"'\n]*[\d\s][^\"'\n]*)(?P=q)(?!\w)",
             "the content of a quoted string with digits or spaces; the quotes stay", needs=("\"", "'")),
    MaskRule("DURATION", _START + rf"(?:\d+(?:\.\d+)?{_TIME_UNIT}){{2,}}" + _END
             + "|" + _START + rf"(?P<value>\d+(?:\.\d+)?){_TIME_UNIT}" + _END,
             "durations: the number of `35ms` (the unit stays), all of `1m30s`", may_match=_DIGIT_UNIT),
    # `(?<![A-Za-z0-9])(?<!\d\.)(?<!\.java:)...(?:[-+]|v(?=\d+\.\d))?\d+(?:\.\d+)*(?![0-9])`, written to
    # start with its first character (a sign, `v` or a digit): the rule that runs on every message.
    MaskRule("NUM", r"[-+v\d](?<![A-Za-z0-9][\s\S])(?<!\d\.[\s\S])" + _NOT_SOURCE_LINE_AFTER_FIRST
             + r"(?:(?<=[-+])\d+|(?<=v)(?=\d+\.\d)\d+|(?<=\d)\d*)(?:\.\d+)*(?![0-9])",
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

    def trace(self, message: str) -> tuple[str, list[int]]:
        """`mask(message)`, and for each of its characters the index in `message` it was copied
        from (-1 for the characters of a mask)."""
        origin = list(range(len(message)))
        for rule in self.rules:
            spans = rule.spans(message)
            if not spans:
                continue
            token = MASK_PREFIX + rule.mask_with + MASK_SUFFIX
            pieces: list[str] = []
            origins: list[int] = []
            position = 0
            for start, end in spans:
                pieces += (message[position:start], token)
                origins += origin[position:start]
                origins += [-1] * len(token)
                position = end
            message, origin = "".join(pieces) + message[position:], origins + origin[position:]
        return message, origin

    def render(self, template: str) -> str:
        """A mined template with every mask written `<*>`, as LogHub writes templates."""
        # Adjacent masks are one variable stretch of text: `<*><*>` says nothing more than `<*>`.
        return _ADJACENT_WILDCARDS.sub(WILDCARD, self._mask_token.sub(WILDCARD, template))


# ---------------------------------------------------------------------------------- the shape cache
#
# `MaskCache` gives `Masker().mask(message)` without running the 16 rules on most messages. What
# follows holds for the default rules, `MASK_RULES`, and is checked by the tests against the plain
# masker on real logs and generated text.
#
# 1. Premask. A whitespace-delimited token of six or more hex characters with a digit and a letter
#    (trace and span ids) ends up `<:NUM:>` (rule HEX), and a UUID between whitespace, brackets,
#    quotes, `,` or `;` ends up `<:UUID:>`: no rule matches across whitespace into such a hex token
#    nor into a UUID behind those characters (only URL and PATH run before UUID, and neither can
#    reach it there), and every lookaround of a rule that reaches a neighbour stops at the
#    separator. Writing them as masks first changes nothing.
# 2. Shape. The rules treat all digits alike (`\d`, `[0-9...]`, `\w`, counts of digits) except the
#    literal `0` of `0[xX]`, and masks never join characters that were apart. So writing every ASCII
#    digit `1`, except a `0` before `x` or `X`, masks the same places, and the digits that masking
#    keeps (`eth0`, `G1237`, `Main.java:42`) are the message's own digits at the same positions.
#    `Masker.trace` tells which positions; the message's digits are put back there.
# 3. Pieces. Only TIMESTAMP and QUOTED match across whitespace, and no lookaround of a rule can
#    tell a neighbour behind whitespace from the start or end of the text. So a shape can be cut
#    after a whitespace character where neither can cross, and the pieces masked one by one: the
#    long lines of Java services are lists whose pieces (`startStation=shanghai, `) repeat.
#    TIMESTAMP crosses a space only from a letter, digit, `,` or space into a digit or capital;
#    from `,` only when a letter or digit is before it. QUOTED spans two successive equal quotes
#    (its content holds no quote), and rules 1-13 never mask a quote: no cut goes between two such.
#    The `needs` and `may_match` tests are necessary conditions, so testing a piece instead of the
#    whole shape changes nothing, except HOST's: it looks for an ASCII digit after a colon where its
#    regex takes any digit, so a shape with other digits is not cut. Short shapes are not cut
#    either: their pieces seldom repeat.
# 4. Quick key. Finding a shape costs a regex pass over the message. A long ASCII message is first
#    looked up by its bytes with every hex character written `1`: messages that differ only in
#    their trace ids have the same key. Where hex characters are decides where 1. finds tokens, so a
#    message with a known key has the same shape as the one remembered if it has the same text
#    between those tokens (digits written `1`) and its hex tokens still mix digits and letters.

_PREMASK = re.compile(
    r"""[\s\[(,;"'](?:(?<=\s)[0-9a-fA-F]{6,}+(?!\S)"""
    rf"""|(?P<uuid>{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})(?=[\s\]),;"']|$))""")
_NUM_TOKEN, _UUID_TOKEN = MASK_PREFIX + "NUM" + MASK_SUFFIX, MASK_PREFIX + "UUID" + MASK_SUFFIX
_DIGITS_TO_ONE = bytes.maketrans(b"0123456789", b"1111111111")
_HEX_TO_ONE = bytes.maketrans(b"0123456789abcdefABCDEF", b"1" * 22)
_NONZERO_TO_ONE = str.maketrans("23456789", "11111111")
_ZERO = re.compile("0(?![xX])")
# A cut goes after the whitespace character matched (the lookarounds keep TIMESTAMP whole).
_CUT = re.compile(r"\s(?:(?=[^\s\dA-Z])|(?<=[^\w,\s]\s)(?=\S)|(?<=\W,\s)(?=\S))")
_QUOTE = re.compile("[\"']")
_CUT_FROM = 256
# A memory of `size` entries is emptied as well when its keys reach this many characters on average
# (keys are messages or their shapes, up to `max_message_chars` long).
MEMORY_CHARS_PER_ENTRY = 256
_QUICK_FROM = 128
_OTHER_DIGIT = re.compile(r"[^\D0-9]")
_ONE = re.compile("1")

_Getter = Callable[[str], Sequence[str]]


@dataclass(frozen=True, slots=True)
class _Shape:
    """A masked shape: the text with `{}` where a digit of the message goes (when any does), and
    where those digits are in the premasked message."""

    text: str
    digits: tuple[int, ...]
    getter: _Getter | None


@dataclass(frozen=True, slots=True)
class _Quick:
    """A message remembered by which of its characters are hex digits (see `MaskCache.mask`)."""

    digits: bytes
    """The message, digits written 1."""
    kept: tuple[tuple[int, int], ...]
    """The spans between its premasked tokens."""
    hex_tokens: tuple[tuple[int, int], ...]
    """The spans of its premasked hex tokens (the other tokens are UUIDs)."""
    text: str
    getter: _Getter | None
    """The message's digits that go into `text`."""

    def fits(self, message: str, digits: bytes) -> bool:
        """Whether `message`, with the same hex characters at the same places, premasks to the same
        shape: same characters between the tokens (up to digits), and hex tokens that still mix
        digits and letters (UUIDs and the spans where tokens can be depend on hex-ness only)."""
        mine = self.digits
        for start, end in self.kept:
            if digits[start:end] != mine[start:end]:
                return False
        for start, end in self.hex_tokens:
            token = message[start:end]
            if token.isdigit() or token.isalpha():
                return False
        return True


# A masked piece, and (position in it, position in the piece) of each digit it keeps.
_Piece = tuple[str, tuple[tuple[int, int], ...]]


def _premask(message: str) -> tuple[str, list[tuple[int, int, bool]]]:
    """The message with its hex ids and UUIDs written as masks (see 1. above), and the (start, end,
    whether a hex id) of each."""
    padded = " " + message  # every token follows a character of the pattern's first class
    tokens: list[tuple[int, int, bool]] = []
    parts: list[str] = []
    position = 0
    for match in _PREMASK.finditer(padded):
        start, end, uuid = match.start() + 1, match.end(), match.start("uuid") >= 0
        if not uuid and (padded[start:end].isdigit() or padded[start:end].isalpha()):
            continue  # a hex word without digits, or a number: left to the rules
        parts += (padded[position:start], _UUID_TOKEN if uuid else _NUM_TOKEN)
        position = end
        tokens.append((start - 1, end - 1, not uuid))
    if not tokens:
        return message, tokens
    parts.append(padded[position:])
    return "".join(parts)[1:], tokens


def _escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _shape(premasked: str) -> bytes:
    """The shape as UTF-8 (where `bytes.translate` is fast; no other character holds an ASCII digit's
    byte)."""
    if "0x" in premasked or "0X" in premasked:
        return _ZERO.sub("1", premasked.translate(_NONZERO_TO_ONE)).encode("utf-8", "surrogatepass")
    return premasked.encode("utf-8", "surrogatepass").translate(_DIGITS_TO_ONE)


def _cuts(shape: str) -> list[int]:
    """Where `shape` can be cut into pieces that mask independently (see 3. above)."""
    if not shape.isascii() and _OTHER_DIGIT.search(shape):
        # HOST's `needs` look for ASCII digits after a colon but its regex takes any digit: a piece
        # without the needed `:1` of another piece would not be masked as the whole shape is.
        return []
    cuts = [match.end() for match in _CUT.finditer(shape)]
    if not cuts:
        return cuts
    quotes = [(match.start(), match.group()) for match in _QUOTE.finditer(shape)]
    inside = [(start, end) for (start, quote), (end, closing) in zip(quotes, quotes[1:], strict=False)
              if quote == closing]
    if not inside:
        return cuts
    kept, index = [], 0  # both lists are in order: one sweep
    for cut in cuts:
        while index < len(inside) and inside[index][1] < cut:
            index += 1
        if index == len(inside) or cut <= inside[index][0]:
            kept.append(cut)
    return kept


class MaskCache:
    """`masker.mask(message)`, remembered per message shape and per piece of a shape: the same
    output as the masker for every message, computed once per shape (see the notes above).

    Without the default rules, each distinct message is remembered as it is; a message holding
    `<:` (the mask prefix, which rules look for) is masked directly. At most `size` shapes, `size`
    pieces and `size` quick keys are remembered (a memory is emptied when full); `size=0`
    remembers nothing. A memory is also emptied when its keys reach `MEMORY_CHARS_PER_ENTRY` times
    `size` characters.
    """

    def __init__(self, masker: Masker, *, size: int = 100_000) -> None:
        self.masker = masker
        self.size = size
        self._by_shape = tuple(masker.rules) == MASK_RULES
        self._shapes: dict[str | bytes, _Shape] = {}
        self._pieces: dict[str, _Piece] = {}
        self._quick: dict[bytes, _Quick] = {}
        self._chars: dict[int, int] = {}  # id of a memory -> characters of its keys

    def mask(self, message: str) -> str:
        """`masker.mask(message)`."""
        if not self.size:
            return self.masker.mask(message)
        if not self._by_shape:
            known = self._shapes.get(message)
            if known is None:
                known = self._remember(self._shapes, message, _Shape(self.masker.mask(message), (), None))
            return known.text
        if MASK_PREFIX in message:
            return self.masker.mask(message)
        # Quick path: a long ASCII message (one byte a character) keyed by where its hex characters
        # are; finding a shape (premask, digits) costs a regex pass, this two `bytes.translate`. The
        # `0x` rule of shapes is left to the full path, and short messages, which seldom share a key.
        quick = len(message) >= _QUICK_FROM and message.isascii() and "0x" not in message and "0X" not in message
        if quick:
            raw = message.encode("ascii")
            key = raw.translate(_HEX_TO_ONE)
            known_quick = self._quick.get(key)
            if known_quick is not None and known_quick.fits(message, raw.translate(_DIGITS_TO_ONE)):
                getter = known_quick.getter
                return known_quick.text if getter is None else known_quick.text.format(*getter(message))
        premasked, tokens = _premask(message)
        shape = _shape(premasked)
        known = self._shapes.get(shape)
        if known is None:
            known = self._remember(self._shapes, shape, self._learn(shape.decode("utf-8", "surrogatepass")))
        if quick:
            self._remember(self._quick, key, self._quick_entry(message, tokens, known))
        return known.text if known.getter is None else known.text.format(*known.getter(premasked))

    def _quick_entry(self, message: str, tokens: list[tuple[int, int, bool]], known: _Shape) -> _Quick:
        kept: list[tuple[int, int]] = []
        starts: list[int] = []  # where each kept span starts in the premasked message
        position = premasked_position = 0
        for start, end, hex_id in tokens:
            kept.append((position, start))
            starts.append(premasked_position)
            premasked_position += start - position + len(_NUM_TOKEN if hex_id else _UUID_TOKEN)
            position = end
        kept.append((position, len(message)))
        starts.append(premasked_position)
        getter = None
        if known.digits:
            # A kept digit is never in a mask: map it back from the premasked message.
            digits, span = [], 0
            for at in known.digits:
                while span + 1 < len(starts) and starts[span + 1] <= at:
                    span += 1
                digits.append(kept[span][0] + at - starts[span])
            getter = itemgetter(*digits)
        return _Quick(message.encode("ascii").translate(_DIGITS_TO_ONE), tuple(kept),
                      tuple((start, end) for start, end, hex_id in tokens if hex_id), known.text, getter)

    def _learn(self, shape: str) -> _Shape:
        # Pieces pay off on long lines (lists of records); a short one is masked whole.
        cuts = _cuts(shape) if len(shape) >= _CUT_FROM else []
        if not cuts:
            masked, kept = self._trace(shape)
        else:
            pieces = [shape[start:end] for start, end in zip((0, *cuts), (*cuts, len(shape)), strict=True)]
            entries = [self._pieces.get(piece) or self._piece(piece) for piece in pieces]
            masked = "".join([text for text, _ in entries])
            kept_all: list[tuple[int, int]] = []
            if any(piece_kept for _, piece_kept in entries):
                at_text = at_piece = 0
                for (text, piece_kept), piece in zip(entries, pieces, strict=True):
                    if piece_kept:
                        kept_all += [(at_text + at, at_piece + source) for at, source in piece_kept]
                    at_text += len(text)
                    at_piece += len(piece)
            kept = tuple(kept_all)
        if not kept:
            return _Shape(masked, (), None)
        # The masked text as a format: its braces doubled, `{}` where a kept digit goes.
        parts: list[str] = []
        position = 0
        for at, _ in kept:
            parts += (_escape_braces(masked[position:at]), "{}")
            position = at + 1
        parts.append(_escape_braces(masked[position:]))
        sources = tuple(source for _, source in kept)
        return _Shape("".join(parts), sources, itemgetter(*sources))

    def _piece(self, piece: str) -> _Piece:
        entry: _Piece = self._remember(self._pieces, piece, self._trace(piece))
        return entry

    def _trace(self, shape: str) -> _Piece:
        masked, origin = self.masker.trace(shape)
        # A `1` of the shape is a digit of the message (a `0` left in the shape is a `0` there too),
        # and a `1` of the masked shape is one of those: no mask holds a `1`.
        return masked, tuple((match.start(), origin[match.start()]) for match in _ONE.finditer(masked))

    def _remember(self, memory: dict, key: str | bytes, value: Any) -> Any:
        chars = self._chars.get(id(memory), 0) + len(key)
        if len(memory) >= self.size or chars > self.size * MEMORY_CHARS_PER_ENTRY:
            memory.clear()
            chars = len(key)
        self._chars[id(memory)] = chars
        memory[key] = value
        return value
