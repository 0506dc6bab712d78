"""Pretraining text of the logs expert: blocks of consecutive log lines.

LogHub lines of the training split (the held-out lines of `log_template` never appear, not even
unlabelled), chaos-gym log lines of the training incidents (`level service message`, from the start
of the baseline and from the end of the incident window, so both calm and faulty periods are read),
and Nezha TrainTicket lines when the shared data is there.
"""

from __future__ import annotations

from collections.abc import Sequence

from experts.sources import Sources, hash_split

LINES_PER_DOCUMENT = 32
"""Consecutive lines per document: enough context for the model to see a log's rhythm."""
CHAOS_LINES = 300
"""Lines taken from each end of a chaos incident (baseline start, window end)."""


def corpus(sources: Sources) -> list[str]:
    loghub = sources.loghub_table()
    documents: list[str] = []
    for _, lines in loghub.groupby("system", sort=True):
        kept = [c for s, c in zip(lines["system"], lines["content"], strict=True) if hash_split(s, c) == "train"]
        documents += _blocks(kept)
    for sample in sources.chaos("train"):
        for frame in (sample.table("logs", baseline=True).head(CHAOS_LINES), sample.table("logs").tail(CHAOS_LINES)):
            documents += _blocks([f"{lv} {svc} {msg}" for lv, svc, msg in
                                  zip(frame["level"], frame["service"], frame["message"], strict=True)])
    documents += _blocks(sources.nezha_log_lines())
    return documents


def _blocks(lines: Sequence[str]) -> list[str]:
    return ["\n".join(lines[i:i + LINES_PER_DOCUMENT]) for i in range(0, len(lines), LINES_PER_DOCUMENT)]
