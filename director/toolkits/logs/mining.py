"""Template mining: drain3's Drain behind our masking, in memory, one parser per run.

`LogParser` wraps a persistence-free `drain3.TemplateMiner`. Template ids are drain3's cluster
ids: a line keeps its id for the whole run, while the template text of an id may still become
more general as later lines arrive (`parse` reports the final text, `add` the text so far).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from drain3 import TemplateMiner
from drain3.drain import Drain
from drain3.template_miner_config import TemplateMinerConfig

from director.toolkits.logs.masking import MASK_PREFIX, MASK_SUFFIX, Masker
from flipmoe.errors import FlipmoeInputError


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


class AffixDrain(Drain):
    """Drain whose wildcards keep what the merged tokens share at their edges.

    Plain Drain turns `[node-12]` and `[node-47]` into `<*>`; this keeps `[node-<*>]`. A shared
    prefix is kept up to a punctuation mark or up to where digits begin (`eth<*>`), a shared suffix
    from a punctuation mark on (`<*>,`), and masks are never cut. Such a partial wildcard counts
    as a wildcard for any token that fits it, so matching and similarity work as in Drain.
    """

    def create_template(self, seq1: Sequence[str], seq2: Sequence[str]) -> list[str]:
        # seq1: the new line's tokens; seq2: the template's.
        return [kept if self._fits(kept, token) else self._generalise(kept, token)
                for token, kept in zip(seq1, seq2, strict=True)]

    def get_seq_distance(self, seq1: Sequence[str], seq2: Sequence[str],
                         include_params: bool) -> tuple[float, int]:
        # seq1: the template's tokens; seq2: the line's.
        if not seq1:
            return 1.0, 0
        similar = params = 0
        for template_token, token in zip(seq1, seq2, strict=True):
            if self.param_str in template_token and self._fits(template_token, token):
                params += 1
            elif template_token == token:
                similar += 1
        return (similar + params if include_params else similar) / len(seq1), params

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

    def __post_init__(self) -> None:
        self._masker = Masker()
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
        result = self._miner.add_log_message(message[: self.config.max_message_chars])
        return ParsedLine(result["cluster_id"], self._masker.render(result["template_mined"]))

    def fit(self, messages: Iterable[str]) -> list[int]:
        """Learn from every message; the template id of each."""
        return [self.add(message).template_id for message in messages]

    def parse(self, messages: Sequence[str]) -> list[ParsedLine]:
        """Learn from every message, then give each the final template of its id.

        Identical messages are mined once: a repeat would only join its template again.
        """
        first_seen = {message: self.add(message) for message in dict.fromkeys(messages)}
        final = self.templates
        # A template dropped under `max_clusters` keeps the text it had when its line was added.
        return [ParsedLine(line.template_id, final.get(line.template_id, line.template))
                for line in (first_seen[message] for message in messages)]

    def match(self, message: str) -> ParsedLine | None:
        """The template a message fits without learning from it; None when none fits."""
        cluster = self._miner.match(message[: self.config.max_message_chars], full_search_strategy="fallback")
        if cluster is None:
            return None
        return ParsedLine(cluster.cluster_id, self._masker.render(cluster.get_template()))

    @property
    def templates(self) -> dict[int, str]:
        """Template id -> template text (`<*>` for variables) of every template kept."""
        return {cluster.cluster_id: self._masker.render(cluster.get_template())
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
