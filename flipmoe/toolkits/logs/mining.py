"""Template mining: drain3's Drain behind our masking, in memory, one parser per run.

`LogParser` wraps a persistence-free `drain3.TemplateMiner`. Template ids are drain3's cluster
ids: a line keeps its id for the whole run, while the template text of an id may still become
more general as later lines arrive (`parse` reports the final text, `add` the text so far).

Two memories make it fast without changing any result (`cache_size=0` turns them off):
- masking goes through `MaskCache`, which masks each message shape once;
- Drain is skipped for a masked message it has already taken when its tree search would end the
  same way: the search goes down the same nodes of the prefix tree (nodes only ever gain children,
  so unchanged child counts mean the same way down) to the same leaf, the template it found there
  is unchanged, and every template of the leaf created or generalised since scores lower for the
  message than that template did (Drain keeps the first best, so a tie is not trusted). Under
  `max_clusters`, creating a template may drop any other, so it empties this memory. Drain would
  then find the same template and leave it as it is, so the parser only counts the line.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drain3 import TemplateMiner
from drain3.drain import Drain, LogCluster, Node
from drain3.template_miner_config import TemplateMinerConfig

from flipmoe.errors import FlipmoeInputError
from flipmoe.toolkits.logs.masking import MASK_PREFIX, MASK_SUFFIX, MEMORY_CHARS_PER_ENTRY, MaskCache, Masker


@dataclass(kw_only=True)
class LogParserConfig:
    """Drain settings; the same for every system (no per-system tuning)."""

    sim_th: float = 0.7
    """Share of a template's constant tokens a line must equal to join it. Higher than drain3's 0.4:
    once masking has taken the variables out, tokens that still differ are mostly words that tell
    events apart (`Link ok` / `Link error`)."""
    depth: int = 4
    """Depth of Drain's prefix tree (>= 3): the root, the token count, then `depth - 2` leading tokens."""
    max_children: int = 100
    """Children of a tree node before further distinct tokens share a wildcard child."""
    max_clusters: int | None = None
    """Keep at most this many templates (least recently used are dropped); None means unbounded."""
    max_message_chars: int = 4096
    """Longer messages are cut before mining, so one huge line cannot dominate time or memory."""
    cache_size: int = 100_000
    """Message shapes, pieces of shapes and masked messages remembered to skip work that would give
    the same result (module docstring); each memory is emptied when it reaches this size. 0: none."""

    def __post_init__(self) -> None:
        if not 0.0 < self.sim_th <= 1.0:
            raise FlipmoeInputError(f"sim_th must be in (0, 1], got {self.sim_th}")
        if self.depth < 3:
            raise FlipmoeInputError(f"depth must be at least 3, got {self.depth}")
        if self.max_children < 2:
            raise FlipmoeInputError(f"max_children must be at least 2, got {self.max_children}")
        if self.max_clusters is not None and self.max_clusters < 1:
            raise FlipmoeInputError(f"max_clusters must be positive or None, got {self.max_clusters}")
        if self.max_message_chars < 16:
            raise FlipmoeInputError(f"max_message_chars must be at least 16, got {self.max_message_chars}")
        if self.cache_size < 0:
            raise FlipmoeInputError(f"cache_size must be 0 (no caching) or more, got {self.cache_size}")


# Templates whose wildcard positions (AffixDrain) and rendered text (LogParser) are remembered.
_WILDCARD_MEMORY = _RENDERED = 10_000


class AffixDrain(Drain):
    """Drain whose wildcards keep what the merged tokens share at their edges.

    Plain Drain turns `[node-12]` and `[node-47]` into `<*>`; this keeps `[node-<*>]`. A shared
    prefix is kept up to a punctuation mark or up to where digits begin (`eth<*>`), a shared suffix
    from a punctuation mark on (`<*>,`), and masks are never cut. Such a partial wildcard counts
    as a wildcard for any token that fits it, so matching and similarity work as in Drain.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wildcard_positions: dict[tuple[str, ...], tuple[int, ...]] = {}

    def create_template(self, seq1: Sequence[str], seq2: Sequence[str]) -> list[str]:
        # seq1: the new line's tokens; seq2: the template's.
        return [kept if self._fits(kept, token) else self._generalise(kept, token)
                for token, kept in zip(seq1, seq2, strict=True)]

    def get_seq_distance(self, seq1: Sequence[str], seq2: Sequence[str],
                         include_params: bool) -> tuple[float, int]:
        # seq1: the template's tokens; seq2: the line's. A token that fits a wildcard of the
        # template counts as a parameter, else an equal token as similar.
        if not seq1:
            return 1.0, 0
        if len(seq1) != len(seq2):
            raise ValueError("a template and a line of different lengths")
        similar = sum(map(operator.eq, seq1, seq2))
        params = 0
        for position in self._wildcards(seq1):
            template_token, token = seq1[position], seq2[position]
            if self._fits(template_token, token):
                params += 1
                if template_token == token:
                    similar -= 1
        return (similar + params if include_params else similar) / len(seq1), params

    def _wildcards(self, template: Sequence[str]) -> tuple[int, ...]:
        """Positions of the template's tokens that hold a wildcard (remembered per template)."""
        key = tuple(template)
        positions = self._wildcard_positions.get(key)
        if positions is None:
            if len(self._wildcard_positions) >= _WILDCARD_MEMORY:
                self._wildcard_positions.clear()
            positions = self._wildcard_positions[key] = \
                tuple(position for position, token in enumerate(template) if self.param_str in token)
        return positions

    def _fits(self, template_token: str, token: str) -> bool:
        if template_token == token or template_token == self.param_str:
            return True
        prefix, wildcard, suffix = template_token.partition(self.param_str)
        return bool(wildcard) and len(token) > len(prefix) + len(suffix) \
            and token.startswith(prefix) and token.endswith(suffix)

    def _generalise(self, template_token: str, token: str) -> str:
        prefix, wildcard, suffix = template_token.partition(self.param_str)
        if not wildcard:
            prefix = suffix = template_token
        # The wildcard must stand for at least one character of the line, and of the template
        # token when that has no wildcard yet.
        shortest = len(token) if wildcard else min(len(token), len(template_token))
        front = _shared_edge(prefix, token, back=False, limit=shortest - 1)
        back = _shared_edge(suffix, token, back=True, limit=shortest - len(front) - 1)
        return front + self.param_str + back


_MASK_SPAN = re.compile(re.escape(MASK_PREFIX) + r"[^\s]*?" + re.escape(MASK_SUFFIX))


def _shared_edge(a: str, b: str, *, back: bool, limit: int) -> str:
    """The longest common start (`back`: end), at most `limit` long, of `a` and `b` that stops
    where a wildcard may begin.

    That is after a punctuation mark, or between a letter and digits that follow it in both
    strings (`eth<*>`); never inside a `<:MASK:>`.
    """
    masks = [match.span() for match in _MASK_SPAN.finditer(a)]
    if back:
        a, b = a[::-1], b[::-1]
    common = min(len(os.path.commonprefix([a, b])), limit)
    for cut in range(common, 0, -1):
        position = len(a) - cut if back else cut
        if any(start < position < end for start, end in masks):
            continue
        edge = a[cut - 1]
        digits_follow = cut < len(a) and cut < len(b) and a[cut].isdigit() and b[cut].isdigit()
        if not edge.isalnum() or (edge.isalpha() and digits_follow):
            return a[:cut][::-1] if back else a[:cut]
    return ""


@dataclass(slots=True)
class _Mined:
    """What Drain did with a masked message the last time it took it."""

    template_id: int
    score: tuple[float, int]
    """(similarity, wildcards matched) of the message to the template, as Drain's search ranks them."""
    way: tuple[tuple[Node, int], ...]
    """The inner nodes the search went through, each with its number of children then."""
    leaf: Node
    seen: int
    """How many changes of the leaf's templates this takes into account."""


@dataclass(frozen=True)
class ParsedLine:
    """One message's template."""

    template_id: int
    template: str


@dataclass(kw_only=True)
class LogParser:
    """Mine templates from log messages: `add` one at a time (streaming) or `parse` a batch."""

    config: LogParserConfig = field(default_factory=LogParserConfig)
    _masker: Masker = field(init=False, repr=False)
    _miner: TemplateMiner = field(init=False, repr=False)
    _masks: MaskCache = field(init=False, repr=False)
    # Masked message -> its last mining: what it matched and how well, and where the search went.
    _mined: dict[str, _Mined] = field(init=False, repr=False, default_factory=dict)
    # id of a leaf node -> the templates of the leaf created or changed, in order (one per change).
    _changes: dict[int, list[int]] = field(init=False, repr=False, default_factory=dict)
    _mined_chars: int = field(init=False, repr=False, default=0)
    _rendered: dict[str, str] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._masker = Masker()
        self._masks = MaskCache(self._masker, size=self.config.cache_size)
        miner_config = TemplateMinerConfig()
        miner_config.drain_sim_th = self.config.sim_th
        miner_config.drain_depth = self.config.depth
        miner_config.drain_max_children = self.config.max_children
        miner_config.drain_max_clusters = self.config.max_clusters
        miner_config.masking_instructions = list(self._masker.rules)
        miner_config.mask_prefix, miner_config.mask_suffix = MASK_PREFIX, MASK_SUFFIX
        self._miner = TemplateMiner(persistence_handler=None, config=miner_config)
        # TemplateMiner builds a plain Drain from the same settings; swap in the affix-keeping one.
        drain = self._miner.drain
        self._miner.drain = AffixDrain(depth=drain.log_cluster_depth, sim_th=drain.sim_th,
                                       max_children=drain.max_children, max_clusters=drain.max_clusters,
                                       extra_delimiters=drain.extra_delimiters, param_str=drain.param_str,
                                       parametrize_numeric_tokens=drain.parametrize_numeric_tokens)

    def add(self, message: str) -> ParsedLine:
        """Learn from one message; its template as known so far."""
        cluster = self._add(message)
        return ParsedLine(cluster.cluster_id, self._render(cluster.get_template()))

    def fit(self, messages: Iterable[str]) -> list[int]:
        """Learn from every message; the template id of each."""
        return [self._add(message).cluster_id for message in messages]

    def parse(self, messages: Sequence[str]) -> list[ParsedLine]:
        """Learn from every message, then give each the final template of its id.

        Identical messages are mined once: a repeat would only join its template again.
        """
        distinct = dict.fromkeys(messages)
        if self.config.max_clusters is None:
            ids = {message: self._add(message).cluster_id for message in distinct}
            final = self.templates
            lines = {template_id: ParsedLine(template_id, final[template_id]) for template_id in set(ids.values())}
            return [lines[ids[message]] for message in messages]
        first_seen = {message: self.add(message) for message in distinct}
        final = self.templates
        # A template dropped under `max_clusters` keeps the text it had when its line was added.
        return [ParsedLine(line.template_id, final.get(line.template_id, line.template))
                for line in (first_seen[message] for message in messages)]

    def match(self, message: str) -> ParsedLine | None:
        """The template a message fits without learning from it; None when none fits."""
        masked = self._masks.mask(message[: self.config.max_message_chars])
        cluster = self._miner.drain.match(masked, full_search_strategy="fallback")
        if cluster is None:
            return None
        return ParsedLine(cluster.cluster_id, self._render(cluster.get_template()))

    @property
    def templates(self) -> dict[int, str]:
        """Template id -> template text (`<*>` for variables) of every template kept."""
        return {cluster.cluster_id: self._render(cluster.get_template())
                for cluster in self._miner.drain.clusters}

    def parameters(self, message: str, template_id: int) -> list[str] | None:
        """The variable parts of `message` under template `template_id`; None if it does not fit."""
        cluster = self._miner.drain.id_to_cluster.get(template_id)
        if cluster is None:
            return None
        # Masks keep context around the value (`blk_<:ID:>`), so their regexes cannot be reused as
        # they are for matching; drain3's approximate matching (`.+?` per mask) fits instead.
        message = message[: self.config.max_message_chars]
        extracted = self._miner.extract_parameters(cluster.get_template(), message, exact_matching=False)
        return None if extracted is None else [parameter.value for parameter in extracted]

    def _add(self, message: str) -> LogCluster:
        """What `TemplateMiner.add_log_message` does (mask, then Drain), with the memories."""
        masked = self._masks.mask(message[: self.config.max_message_chars])
        drain = self._miner.drain
        if not self.config.cache_size:
            return drain.add_log_message(masked)[0]
        known = self._mined.get(masked)
        if known is not None and self._still_found(known, masked):
            # Drain's search would end at this template and find nothing to generalise: count the
            # line and touch the template (for `max_clusters`), as `Drain.add_log_message` does.
            cluster = drain.id_to_cluster[known.template_id]
            cluster.size += 1
            return cluster
        cluster, change = drain.add_log_message(masked)
        if change == "cluster_created" and self.config.max_clusters is not None:
            self._forget()  # the new template may have dropped one of any leaf
        tokens = drain.get_content_as_tokens(masked)
        way, leaf = self._way_down(tokens)
        changes = self._changes.setdefault(id(leaf), [])
        if change != "none":
            # The changed template is in the leaf the message's search now reaches: a new one was
            # put where the search goes, a generalised one was found there.
            changes.append(cluster.cluster_id)
        score = drain.get_seq_distance(cluster.log_template_tokens, tokens, False)
        if change == "none" or (change == "cluster_created" and score[0] >= drain.sim_th):
            # Unchanged, Drain would find this template again. So it would a template just made
            # of the message if that reaches the threshold: the leaf's other templates all stayed
            # below it, as none took the message.
            self._remember(masked, _Mined(cluster.cluster_id, score, way, leaf, len(changes)))
        else:
            # A generalised template may now rank below another: mine the message again next time.
            self._remember(masked, _Mined(cluster.cluster_id, score, way, leaf, len(changes) - 1))
        return cluster

    def _still_found(self, known: _Mined, masked: str) -> bool:
        """Whether Drain's search for `masked` would still end at the template it found last time."""
        if not all(len(node.key_to_child_node) == children for node, children in known.way):
            return False
        changes = self._changes.get(id(known.leaf))
        if changes is None:
            return False
        if known.seen == len(changes):
            return True
        changed = set(changes[known.seen:])
        if known.template_id in changed:
            return False
        drain = self._miner.drain
        tokens = drain.get_content_as_tokens(masked)
        for template_id in changed:
            rival = drain.id_to_cluster.get(template_id)
            if rival is not None and drain.get_seq_distance(rival.log_template_tokens, tokens, False) >= known.score:
                return False
        known.seen = len(changes)
        return True

    def _remember(self, masked: str, mined: _Mined) -> None:
        size = self.config.cache_size
        self._mined_chars += len(masked)
        if len(self._mined) >= size or mined.seen >= size or self._mined_chars > size * MEMORY_CHARS_PER_ENTRY:
            self._forget()  # and this one too: its leaf's log is gone
            return
        self._mined[masked] = mined

    def _forget(self) -> None:
        self._mined.clear()
        self._changes.clear()
        self._mined_chars = 0

    def _way_down(self, tokens: Sequence[str]) -> tuple[tuple[tuple[Node, int], ...], Node]:
        """The nodes `Drain.tree_search` goes through for `tokens`, each with its number of children,
        and the leaf it ends at (a message just added always has one)."""
        drain = self._miner.drain
        node = drain.root_node.key_to_child_node[str(len(tokens))]
        way = []
        depth = 1
        for token in tokens:
            if depth >= drain.max_node_depth or depth == len(tokens):
                break
            children = node.key_to_child_node
            way.append((node, len(children)))
            child = children.get(token)
            node = children[drain.param_str] if child is None else child
            depth += 1
        return tuple(way), node

    def _render(self, template: str) -> str:
        rendered = self._rendered.get(template)
        if rendered is None:
            if len(self._rendered) >= (min(self.config.cache_size, _RENDERED) or 1):
                self._rendered.clear()
            rendered = self._rendered[template] = self._masker.render(template)
        return rendered
