"""The knowledge base: a document per fault type, retrievable by symptoms."""

from __future__ import annotations

import pytest

from director.agents.knowledge import (
    KnowledgeBase,
    default_knowledge_base,
    fault_types_without_docs,
    remediation,
    search,
    what_to_check,
)
from flipmoe.telemetry.taxonomy import FAULT_TYPES


def test_every_fault_type_has_a_complete_document() -> None:
    assert fault_types_without_docs(list(FAULT_TYPES)) == []
    kb = default_knowledge_base()
    for name in FAULT_TYPES:
        text = kb.get(name).text  # type: ignore[union-attr]
        assert text.startswith(f"# {name}: ")
        for heading in ("Symptoms", "What to check", "Remediation"):
            assert kb.section(name, heading), (name, heading)
        assert all(f"- {m}:" in text for m in ("Metrics", "Logs", "Traces", "Events")), name


@pytest.mark.parametrize(("query", "expected"), [
    ("container OOMKilled, heap space errors, memory keeps growing", "memory_leak"),
    ("no such host, temporary failure in name resolution", "dns_failure"),
    ("x509: certificate has expired", "certificate_expiry"),
    ("Back-off restarting failed container", "pod_crash_loop"),
    ("connection pool exhausted, lock wait timeout", "db_slow_query"),
    ("redis evicted keys, hit ratio dropped", "cache_outage"),
    ("retrying attempt 3 of 5, amplification", "retry_storm"),
    ("packets dropped, TCP retransmits", "packet_loss"),
    ("noisy neighbour throttles the pod", "cpu_contention"),
    ("NodeNotReady", "node_failure"),
    ("No space left on device", "disk_io"),
])
def test_search_finds_the_fault_type_from_its_symptoms(query: str, expected: str) -> None:
    hits = search(query, k=3)
    assert hits and hits[0].name == expected
    assert hits[0].title.startswith(expected) and 0 < hits[0].score <= 1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_what_to_check_by_fault_type_or_by_text() -> None:
    assert any("OOMKilled" in item for item in what_to_check("memory_leak"))
    assert what_to_check(None, query="x509 handshake failed") == what_to_check("certificate_expiry")
    assert what_to_check("not_a_fault") == [] and what_to_check(None) == []
    assert remediation("bad_config") and remediation("nope") == []


def test_a_custom_base_and_empty_queries(tmp_path) -> None:
    (tmp_path / "a.md").write_text("# alpha\n\n## What to check\n- one\n  continued\n")
    (tmp_path / "b.md").write_text("# beta\nbanana\n")
    kb = KnowledgeBase.from_directory(tmp_path)
    assert kb.section("a", "What to check") == ["one continued"]
    assert kb.search("banana")[0].title == "beta"
    assert kb.search("") == [] and kb.search("banana", k=0) == []
    with pytest.raises(FileNotFoundError):
        KnowledgeBase.from_directory(tmp_path / "missing")
