"""Template mining: a Brain-style parser behind flipmoe's masking, learning in batches.

How a batch of messages becomes templates (after Brain, Yu et al. 2023: groups by the longest
common pattern, then a column-wise tree; no per-system settings):

1. Masking (`Masker`, through `MaskCache`) writes the variables that have a recognisable shape
   (numbers, ids, addresses, paths, durations, `key=value` values, ...) as masks.
2. Messages are split on whitespace and grouped by token count. Within a count, every
   (position, token) is counted over the batch. A message's *root* is its longest common pattern:
   the tokens that share the frequency that most of its tokens have (a tie goes to the higher
   frequency). Messages with the same root form an initial group. Unlike Drain's prefix tree, a
   variable first token (`proxy.example.org:5070 close, ...`) does not split a template.
3. Each group is refined column by column. A column with one word is a constant. A column with
   few distinct words (fewer than `variable_threshold`; fewer than `IDENTIFIER_THRESHOLD` when every
   word holds a character other than a letter, as names of files, hosts and classes do) splits the
   group, one part per word (`Link ok` / `Link error`, `as bytes` / `as values`); the column with
   fewest words splits first, and the parts are refined again. A column never splits when its words
   are all one-offs, when one of them holds a mask (masking found a variable there), or when they are
   one name with different numbers (`U01` / `U11`). Any other column is a variable.
4. A variable column keeps the start and end its words share, up to punctuation (`[node-<*>]`).
5. Within a batch, a template whose every token fits a more general template of the same length
   joins it (its constant was one value of the other's variable); templates that differ only in
   how many tokens a variable stretch spans (`<*> <*>` vs `<*>`: multi-word variables,
   lists of varying length) are one template.

6. Each template also names its *event* (`LogParser.event`): the template with the words of the
   few-valued columns it was split by written as variables. `TrainType: ZhiDa` and `TrainType:
   GaoTie` are two templates (as LogHub's references want) and one event. The incident analysis
   counts events, so a shift among a field's values (which stations users asked for) does not read
   as new kinds of lines.

Streaming: templates learnt from earlier batches are kept, and a message that fits one (the most
specific that fits) is assigned to it without mining; only the rest of a batch is mined. A
template id never changes its text once made, and a message keeps the id it was first given.
`parse` mines a whole batch at once and is the way to feed the parser (the CLI reads files in
batches of `batch_lines`); `add` is a batch of one, so a message that fits no template becomes one
on its own.

Why written here and not taken from a library: drain3 (the maintained Drain) is a prefix tree
with a similarity threshold, which splits templates on variable first tokens and merges messages
that differ in one constant word; Brain's published code is a research script with per-data-set
settings and no package. The LogHub benchmark (`benchmarks/bench_log_parsing.py`) compares this
parser with drain3 in the same run.
"""

from __future__ import annotations

import os
import re
from bisect import insort
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from flipmoe.errors import FlipmoeInputError
from flipmoe.toolkits.logs.masking import MASK_PREFIX, MASK_SUFFIX, MEMORY_CHARS_PER_ENTRY, WILDCARD, MaskCache, Masker

# The parser's own wildcard, written like a mask so that `Masker.render` turns it into `<*>`.
PARAM = MASK_PREFIX + "*" + MASK_SUFFIX


@dataclass(kw_only=True)
class LogParserConfig:
    """The parser's settings; the same for every system (no per-system tuning)."""

    variable_threshold: int = 8
    """A column of a group with this many distinct words or more is a variable; with fewer (and
    not all of them one-offs) the group splits by it. Chosen by leave-one-system-out on the LogHub
    dev systems (`benchmarks/bench_log_parsing.py --loso`)."""
    max_templates: int | None = None
    """Keep at most this many templates (the least recently used are dropped); None: unbounded."""
    max_message_chars: int = 4096
    """Longer messages are cut before mining, so one huge line cannot dominate time or memory."""
    cache_size: int = 100_000
    """Message shapes and masked messages remembered (masking once per shape, matching once per
    masked message); each memory is emptied when it reaches this size. 0: none."""
    batch_lines: int = 50_000
    """Lines the CLI reads before mining them together (more: better statistics, more memory)."""

    def __post_init__(self) -> None:
        if self.variable_threshold < 2:
            raise FlipmoeInputError(f"variable_threshold must be at least 2, got {self.variable_threshold}")
        if self.max_templates is not None and self.max_templates < 1:
            raise FlipmoeInputError(f"max_templates must be positive or None, got {self.max_templates}")
        if self.max_message_chars < 16:
            raise FlipmoeInputError(f"max_message_chars must be at least 16, got {self.max_message_chars}")
        if self.cache_size < 0:
            raise FlipmoeInputError(f"cache_size must be 0 (no caching) or more, got {self.cache_size}")
        if self.batch_lines < 1:
            raise FlipmoeInputError(f"batch_lines must be positive, got {self.batch_lines}")


@dataclass(frozen=True)
class ParsedLine:
    """One message's template."""

    template_id: int
    template: str


Tokens = tuple[str, ...]


@dataclass(slots=True)
class _Shape:
    """One token sequence of a template (a template has one per token count it was seen with)."""

    template_id: int
    tokens: Tokens
    wildcards: int = field(init=False)
    """Tokens holding a wildcard or mask: fewer is more specific, and is tried first."""
    anchor: tuple[int, str] = field(init=False)
    """The first token without a wildcard, and its position ((-1, "") when none): the index key."""
    constants: tuple[tuple[int, str], ...] = field(init=False)
    affixes: tuple[tuple[int, str, str], ...] = field(init=False)
    """(position, prefix, suffix) of each wildcard token that keeps a prefix or suffix."""

    def __post_init__(self) -> None:
        self.wildcards = sum(PARAM in token or MASK_PREFIX in token for token in self.tokens)
        self.constants = tuple((position, token) for position, token in enumerate(self.tokens) if PARAM not in token)
        self.anchor = self.constants[0] if self.constants else (-1, "")
        affixes = []
        for position, token in enumerate(self.tokens):
            prefix, wildcard, suffix = token.partition(PARAM)
            if wildcard and (prefix or suffix):
                affixes.append((position, prefix, suffix))
        self.affixes = tuple(affixes)

    def fits(self, tokens: Tokens) -> bool:
        for position, token in self.constants:
            if tokens[position] != token:
                return False
        for position, prefix, suffix in self.affixes:
            token = tokens[position]
            if len(token) <= len(prefix) + len(suffix) or not token.startswith(prefix) or not token.endswith(suffix):
                return False
        return True


@dataclass(slots=True)
class _Template:
    template_id: int
    text: str
    key: str
    shapes: list[_Shape]
    event: ParsedLine
    """The template's event: the template with the words it was split by written as variables."""
    last_used: int = 0
    pattern: re.Pattern[str] | None = None


def _fits(template_token: str, token: str) -> bool:
    """Whether a message token is one the template token stands for."""
    if template_token == token or template_token == PARAM:
        return True
    prefix, wildcard, suffix = template_token.partition(PARAM)
    return bool(wildcard) and len(token) > len(prefix) + len(suffix) \
        and token.startswith(prefix) and token.endswith(suffix)


def _specificity(shape: _Shape) -> int:
    return shape.wildcards


_MASK_SPAN = re.compile(re.escape(MASK_PREFIX) + r"[^\s]*?" + re.escape(MASK_SUFFIX))
_WILDCARD_RUNS = re.compile(re.escape(WILDCARD) + r"(?:\s+" + re.escape(WILDCARD) + r")+")


def _edge(values: Sequence[str], *, back: bool, limit: int) -> str:
    """The longest start (`back`: end) that all `values` share, at most `limit` long, cut where a
    wildcard may begin: after a punctuation mark, or between a letter and digits that follow it
    in every value (`eth<*>`); never inside a `<:MASK:>`."""
    if limit <= 0:
        return ""
    oriented = [value[::-1] for value in values] if back else list(values)
    common = min(len(os.path.commonprefix(oriented)), limit)
    first = values[0]
    masks = [match.span() for match in _MASK_SPAN.finditer(first)]
    for cut in range(common, 0, -1):
        position = len(first) - cut if back else cut
        if any(start < position < end for start, end in masks):
            continue
        edge = oriented[0][cut - 1]
        digits_follow = all(cut < len(value) and value[cut].isdigit() for value in oriented)
        if not edge.isalnum() or (edge.isalpha() and digits_follow):
            kept = oriented[0][:cut]
            return kept[::-1] if back else kept
    return ""


def _generalise(values: Sequence[str]) -> str:
    """One token standing for all `values`: their shared edges around a wildcard."""
    shortest = min(len(value) for value in values)
    front = _edge(values, back=False, limit=shortest - 1)
    back = _edge(values, back=True, limit=shortest - len(front) - 1)
    return front + PARAM + back


_DIGITS = re.compile(r"\d+")


IDENTIFIER_THRESHOLD = 4
"""A column whose words are all identifiers (each holds a character other than a letter: `chrome.exe`,
`ee0`, `/tmp`, `x_y`) is a variable from this many distinct words on, whatever `variable_threshold` says:
names of files, hosts and classes vary, plain words (`NEW`, `boot`, `bytes`) enumerate."""
_NOT_LETTER = re.compile(r"[^A-Za-z]")


def _identifier(word: str) -> bool:
    return _NOT_LETTER.search(word) is not None


def _numbered(words: Iterable[str]) -> bool:
    """Whether the words are one name with different numbers (`U01`, `U11`): a variable, whereas
    `ee0` and `alt0` are two names."""
    skeletons = {_DIGITS.sub("0", word) for word in words}
    return len(skeletons) == 1 and "0" in next(iter(skeletons))


_Row = tuple[Tokens, int]  # a distinct masked message's tokens, and how many lines it stands for


@dataclass(kw_only=True)
class LogParser:
    """Mine templates from log messages: `parse` a batch, or `add` one at a time."""

    config: LogParserConfig = field(default_factory=LogParserConfig)
    _masker: Masker = field(init=False, repr=False)
    _masks: MaskCache = field(init=False, repr=False)
    _templates: dict[int, _Template] = field(init=False, repr=False, default_factory=dict)
    _by_key: dict[str, int] = field(init=False, repr=False, default_factory=dict)
    # token count -> anchor (first constant token and its position) -> shapes, most specific first
    _index: dict[int, dict[tuple[int, str], list[_Shape]]] = field(init=False, repr=False, default_factory=dict)
    # masked message -> its template id (a message keeps the id it was first given)
    _assigned: dict[str, int] = field(init=False, repr=False, default_factory=dict)
    _assigned_chars: int = field(init=False, repr=False, default=0)
    _next_id: int = field(init=False, repr=False, default=1)
    # event key -> event id, for the events of the templates kept
    _events: dict[str, int] = field(init=False, repr=False, default_factory=dict)
    _next_event: int = field(init=False, repr=False, default=1)
    _clock: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        self._masker = Masker()
        self._masks = MaskCache(self._masker, size=self.config.cache_size)

    # ------------------------------------------------------------------------------------ public

    def add(self, message: str) -> ParsedLine:
        """Learn from one message; its template."""
        return self.parse([message])[0]

    def fit(self, messages: Iterable[str]) -> list[int]:
        """Learn from every message; the template id of each."""
        return [line.template_id for line in self.parse(list(messages))]

    def parse(self, messages: Sequence[str]) -> list[ParsedLine]:
        """Learn from the batch; the template of each message.

        Messages that fit a template learnt before keep to it; the others are mined together.
        """
        cut = self.config.max_message_chars
        masked = [self._masks.mask(message[:cut]) for message in messages]
        counts = Counter(masked)
        ids: dict[str, int] = {}
        new: dict[str, int] = {}
        for text, count in counts.items():
            known = self._assigned.get(text)
            if known is None or known not in self._templates:
                known = self._match(text)
            if known is None:
                new[text] = count
            else:
                ids[text] = known
        if new:
            ids.update(self._mine(new))
        self._clock += 1
        lines: dict[int, ParsedLine] = {}
        for text, template_id in ids.items():
            self._remember(text, template_id)
            if template_id not in lines:
                template = self._templates[template_id]
                template.last_used = self._clock
                lines[template_id] = ParsedLine(template_id, template.text)
        self._bound()
        by_text = {text: lines[template_id] for text, template_id in ids.items()}
        return [by_text[text] for text in masked]

    def match(self, message: str) -> ParsedLine | None:
        """The template a message fits without learning from it; None when none fits."""
        text = self._masks.mask(message[: self.config.max_message_chars])
        template_id = self._assigned.get(text)
        if template_id is None or template_id not in self._templates:
            template_id = self._match(text)
        if template_id is None:
            return None
        return ParsedLine(template_id, self._templates[template_id].text)

    def event(self, template_id: int) -> ParsedLine | None:
        """The event of a template: the template with the few words it was told apart by written as
        variables (`TrainType: ZhiDa` and `TrainType: GaoTie` are one event, `TrainType: <*>`), with
        the event's own id. Incident analysis counts events, so that a shift among a field's values
        (which stations were queried) is not read as new kinds of lines. None for an unknown id."""
        template = self._templates.get(template_id)
        return None if template is None else template.event

    @property
    def templates(self) -> dict[int, str]:
        """Template id -> template text (`<*>` for variables) of every template kept."""
        return {template_id: template.text for template_id, template in self._templates.items()}

    def parameters(self, message: str, template_id: int) -> list[str] | None:
        """The variable parts of `message` under template `template_id`; None if it does not fit."""
        template = self._templates.get(template_id)
        if template is None:
            return None
        if template.pattern is None:
            # Masks keep context around the value (`blk_<:ID:>`), so their regexes cannot be reused
            # as they are: each `<*>` of a shape's text matches the shortest run that fits.
            alternatives = []
            for shape in template.shapes:
                pieces = self._masker.render(" ".join(shape.tokens)).split(WILDCARD)
                alternatives.append("(.*?)".join(r"\s+".join(map(re.escape, piece.split(" "))) for piece in pieces))
            template.pattern = re.compile("|".join(f"(?:{alternative})" for alternative in alternatives), re.DOTALL)
        found = template.pattern.fullmatch(message[: self.config.max_message_chars].strip())
        if found is None:
            return None
        return [value for value in found.groups() if value is not None]

    # ---------------------------------------------------------------------------------- matching

    def _match(self, text: str) -> int | None:
        """The most specific template that fits a masked message."""
        tokens = _tokens(text)
        by_anchor = self._index.get(len(tokens))
        if not by_anchor:
            return None
        best: _Shape | None = None
        for position in {position for position, _ in by_anchor}:
            for shape in by_anchor.get((position, tokens[position] if position >= 0 else ""), ()):
                if best is not None and shape.wildcards >= best.wildcards:
                    break
                if shape.fits(tokens):
                    best = shape
                    break
        return None if best is None else best.template_id

    def _remember(self, text: str, template_id: int) -> None:
        size = self.config.cache_size
        if not size:
            return
        if text not in self._assigned:
            self._assigned_chars += len(text)
            if len(self._assigned) >= size or self._assigned_chars > size * MEMORY_CHARS_PER_ENTRY:
                self._assigned.clear()
                self._assigned_chars = len(text)
        self._assigned[text] = template_id

    # ------------------------------------------------------------------------------------ mining

    def _mine(self, batch: dict[str, int]) -> dict[str, int]:
        """Templates for a batch of masked messages (with their line counts); their ids."""
        by_length: dict[int, list[_Row]] = defaultdict(list)
        tokenised = {text: _tokens(text) for text in batch}
        for text, count in batch.items():
            tokens = tokenised[text]
            by_length[len(tokens)].append((tokens, count))
        ids: dict[Tokens, int] = {}
        for rows in by_length.values():
            refined = [part for initial in _initial_groups(rows) for part in self._refine(initial)]
            groups = [group for group, _ in refined]
            shapes = [_template_tokens(group) for group in groups]
            general = _most_general(shapes)
            # The template each group ends in, and the columns any of its groups was split by.
            final = [general.get(tokens, tokens) for tokens in shapes]
            split_by: dict[Tokens, frozenset[int]] = defaultdict(frozenset)
            for (_, enumerated), tokens in zip(refined, final, strict=True):
                split_by[tokens] |= enumerated
            made: dict[Tokens, int] = {}
            for (group, _), tokens in zip(refined, final, strict=True):
                template_id = made.get(tokens)
                if template_id is None:
                    event = tuple(PARAM if position in split_by[tokens] else token
                                  for position, token in enumerate(tokens))
                    template_id = made[tokens] = self._template_for(tokens, event)
                for row in group:
                    ids[row[0]] = template_id
        return {text: ids[tokenised[text]] for text in batch}

    def _refine(self, rows: list[_Row]) -> list[tuple[list[_Row], frozenset[int]]]:
        """Split a group by its columns of few distinct words (module docstring, step 3); each part
        with the positions of the columns of few words it was split by."""
        threshold = self.config.variable_threshold
        width = len(rows[0][0])
        done: list[tuple[list[_Row], frozenset[int]]] = []
        pending: list[tuple[list[_Row], frozenset[int]]] = [(rows, frozenset())]
        while pending:
            group, enumerated = pending.pop()
            best: tuple[int, int] | None = None
            words_at: dict[int, Counter[str]] = {}
            for position in range(width):
                words: Counter[str] = Counter()
                for tokens, count in group:
                    words[tokens[position]] += count
                distinct = len(words)
                if distinct < 2 or max(words.values()) == 1 or any(MASK_PREFIX in word for word in words) \
                        or _numbered(words):
                    continue
                words_at[position] = words
                limit = IDENTIFIER_THRESHOLD if all(map(_identifier, words)) else threshold
                if distinct < limit and (best is None or distinct < best[0]):
                    best = (distinct, position)
            if best is not None:
                enumerated |= {best[1]}
            else:
                best = _determining(group, words_at)
            if best is None:
                done.append((group, enumerated))
                continue
            position = best[1]
            parts: dict[str, list[_Row]] = defaultdict(list)
            for row in group:
                parts[row[0][position]].append(row)
            pending.extend((part, enumerated) for part in parts.values())
        return done

    def _template_for(self, tokens: Tokens, event: Tokens) -> int:
        """The id of the template with these tokens (and this event): a new one, or the one it is
        the same as."""
        text = self._masker.render(" ".join(tokens))
        key = _WILDCARD_RUNS.sub(WILDCARD, text)
        template_id = self._by_key.get(key)
        if template_id is not None and template_id in self._templates:
            template = self._templates[template_id]
        else:
            template_id = self._next_id
            self._next_id += 1
            event_text = self._masker.render(" ".join(event))
            event_key = _WILDCARD_RUNS.sub(WILDCARD, event_text)
            event_id = self._events.get(event_key)
            if event_id is None:
                event_id = self._events[event_key] = self._next_event
                self._next_event += 1
            template = self._templates[template_id] = _Template(template_id, text, key, [],
                                                                ParsedLine(event_id, event_text))
            self._by_key[key] = template_id
        if all(shape.tokens != tokens for shape in template.shapes):
            shape = _Shape(template_id, tokens)
            template.shapes.append(shape)
            template.pattern = None
            insort(self._index.setdefault(len(tokens), {}).setdefault(shape.anchor, []), shape, key=_specificity)
        return template_id

    def _bound(self) -> None:
        """Drop the least recently used templates beyond `max_templates` (down to 90% of it)."""
        limit = self.config.max_templates
        if limit is None or len(self._templates) <= limit:
            return
        keep = max(1, limit * 9 // 10)
        by_use = sorted(self._templates.values(), key=lambda template: template.last_used)
        dropped = by_use[: len(self._templates) - keep]
        for template in dropped:
            del self._templates[template.template_id]
            self._by_key.pop(template.key, None)
            for shape in template.shapes:
                by_anchor = self._index[len(shape.tokens)]
                by_anchor[shape.anchor].remove(shape)
                if not by_anchor[shape.anchor]:
                    del by_anchor[shape.anchor]
        kept = {template.event.template_id for template in self._templates.values()}
        self._events = {key: event_id for key, event_id in self._events.items() if event_id in kept}
        self._assigned.clear()
        self._assigned_chars = 0


# A data-size unit after a number is part of the value (`5.2 KB,` is one variable and its comma).
_SIZE_UNIT = re.compile(r"(?:[KMGTP]i?)?B(?P<rest>[^\w<]*)")


def _tokens(text: str) -> Tokens:
    """A masked message's tokens: split on whitespace, a size unit joined to the number before it."""
    tokens = text.split()
    if len(tokens) < 2 or not any(token[0] in "KMGTPB" for token in tokens):
        return tuple(tokens)
    joined: list[str] = []
    for token in tokens:
        unit = _SIZE_UNIT.fullmatch(token) if token[0] in "KMGTPB" else None
        if unit is not None and joined and joined[-1].endswith(MASK_SUFFIX):
            joined[-1] += unit["rest"]
        else:
            joined.append(token)
    return tuple(joined)


def _initial_groups(rows: list[_Row]) -> list[list[_Row]]:
    """Messages of one token count grouped by their root (module docstring, step 2)."""
    frequency: Counter[tuple[int, str]] = Counter()
    for tokens, count in rows:
        for position, token in enumerate(tokens):
            frequency[position, token] += count
    groups: dict[tuple[str | None, ...], list[_Row]] = defaultdict(list)
    for row in rows:
        tokens = row[0]
        frequencies = [frequency[position, token] for position, token in enumerate(tokens)]
        shared = Counter(frequencies)
        root_frequency = max(shared.items(), key=lambda item: (item[1], item[0]))[0] if shared else 0
        root = tuple(token if f == root_frequency else None for token, f in zip(tokens, frequencies, strict=True))
        groups[root].append(row)
    return list(groups.values())


def _determining(group: list[_Row], words_at: dict[int, Counter[str]]) -> tuple[int, int] | None:
    """A column whose word decides the words of other word columns: the event's own name (a source
    location, an operation) in a group that mixes events, not a variable. (number of columns it
    decides, position) of the one that decides most, or None.

    Column `c` decides `d` when every message with the same word at `c` has the same word at `d`,
    `d` varies, and most lines share their word at `c` with another line (so a column of one-offs,
    which decides everything trivially, does not count)."""
    if len(words_at) < 2:
        return None
    positions = list(words_at)
    lines = sum(count for _, count in group)
    best: tuple[int, int] | None = None
    for column in positions:
        seen: dict[str, Tokens] = {}
        if sum(n for n in words_at[column].values() if n > 1) * 2 < lines:
            continue
        others = [position for position in positions if position != column]
        broken: set[int] = set()
        for tokens, _ in group:
            previous = seen.setdefault(tokens[column], tokens)
            if previous is not tokens:
                for position in others:
                    if position not in broken and previous[position] != tokens[position]:
                        broken.add(position)
        decided = len(others) - len(broken)
        if decided and (best is None or decided > best[0]):
            best = (decided, column)
    return best


def _template_tokens(group: list[_Row]) -> Tokens:
    """A group's template: its constant columns as they are, the others generalised."""
    columns = zip(*(tokens for tokens, _ in group), strict=True)
    template = []
    for column in columns:
        values = list(dict.fromkeys(column))
        template.append(values[0] if len(values) == 1 else _generalise(values))
    return tuple(template)


def _most_general(shapes: list[Tokens]) -> dict[Tokens, Tokens]:
    """For each shape that a more general shape of the batch fits token by token, that shape (the
    one with most wildcards); step 5 of the module docstring."""
    wildcards = {shape: sum(PARAM in token for token in shape) for shape in shapes}
    general: dict[Tokens, Tokens] = {}
    by_generality = sorted(set(shapes), key=lambda shape: -wildcards[shape])
    for shape in by_generality:
        for other in by_generality:
            if wildcards[other] <= wildcards[shape]:
                break
            if all(_fits(mine, token) for mine, token in zip(other, shape, strict=True)):
                general[shape] = general.get(other, other)
                break
    return general
