"""The data pipeline end to end in one process (and once on Ray Data, opt-in)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipeline.config import (
    ClassifierConfig,
    ContaminationConfig,
    DataBuildConfig,
    ExecutionConfig,
    ExpertShardConfig,
    InstructConfig,
    ShardConfig,
    SourceConfig,
)
from data_pipeline.pipeline import build, summary
from data_pipeline.shards import read_manifest, read_shards
from experts.registry import catalog
from flipmoe.errors import FlipmoeInputError

REPO = Path(__file__).resolve().parents[1]
LEAK = ("the checkout flow retries the payment call three times with exponential backoff before it "
        "gives up and returns an error to the customer, which is what the evaluation asks about")


def _files(root: Path) -> Path:
    files = root / "files"
    files.mkdir(parents=True)
    (files / "app.py").write_text("import os\n\n\ndef handler(request):\n    user = load_user(request.user_id)\n"
                                  "    if user is None:\n        raise KeyError(request.user_id)\n    return user\n")
    (files / "copy.py").write_text((files / "app.py").read_text())  # exact duplicate
    (files / "deploy.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: cart\n"
                                       "spec:\n  replicas: 3\n  template:\n    spec:\n      containers: []\n")
    (files / "blob.bin").write_bytes(b"\x7fELF\x00\x00\x01" + bytes(range(256)) * 4)
    (files / "tiny.md").write_text("hi")
    (files / "notes.md").write_text(f"# Payments\n\nDuring the incident {LEAK}. Then the on-call engineer "
                                    "rolled back the deploy and the error rate fell back to normal.\n")
    lines = [f"2024-03-01 10:00:{i % 60:02d},123 INFO worker-{i} processed job {i * 17} in {i % 9}ms"
             for i in range(80)]
    (files / "worker.log").write_text("\n".join(lines) + "\n")
    with (root / "corpus.jsonl").open("w") as f:
        f.write(json.dumps({"text": "The load balancer health check marks a pod unhealthy after three failed "
                                    "probes; the kubelet then restarts the container and the pod rejoins.",
                            "kind": "prose"}) + "\n")
    (root / "eval").mkdir()
    (root / "eval" / "heldout.txt").write_text(LEAK + "\n")
    return files


def _config(tmp_path: Path, **execution: object) -> DataBuildConfig:
    files = _files(tmp_path)
    return DataBuildConfig(
        out=str(tmp_path / "out"),
        sources=(SourceConfig(name="files", kind="directory", path=str(files)),
                 SourceConfig(name="jsonl", kind="jsonl", path=str(tmp_path / "corpus.jsonl"), modality_field="kind"),
                 SourceConfig(name="loghub", kind="loghub", path=str(REPO / "tests" / "fixtures" / "loghub"),
                              include=("HDFS_200.csv",)),
                 SourceConfig(name="chaos", kind="chaos", system="webshop", incidents=1, seed=7, window_minutes=3,
                              traces_per_incident=10)),
        relevance=ClassifierConfig(enabled=False), quality=ClassifierConfig(enabled=False),
        contamination=ContaminationConfig(eval_paths=(str(tmp_path / "eval"),), expert_heldout=False),
        shards=ShardConfig(seq_len=64, sequences_per_shard=50, heldout_fraction=0.1, experts=(
            ExpertShardConfig(name="logs", family="logs", modalities=("log", "prose"), objective="causal",
                              vocab_size=400),
            ExpertShardConfig(name="code", family="code", modalities=("code", "config"), objective="significance",
                              vocab_size=400))),
        instruct=InstructConfig(per_incident=2, variations=2),
        execution=ExecutionConfig(**execution),  # type: ignore[arg-type]
    )


def _check(result, out: Path) -> None:  # type: ignore[no-untyped-def]
    stages = {s.stage: s for s in result.stages}
    assert stages["filters"].removed.get("binary") == 1
    assert stages["filters"].removed.get("too_short") == 1
    assert stages["exact_dedup"].removed["exact_duplicate"] >= 1
    assert stages["contamination"].removed["contains_eval_text"] == 1
    for s in result.stages:
        if not s.stage.startswith(("shards", "read")):
            assert s.kept == s.input - sum(s.removed.values()), s
    chain = ["filters", "relevance", "quality", "exact_dedup", "near_dedup", "contamination"]
    for before, after in zip(chain, chain[1:], strict=False):
        assert stages[before].kept == stages[after].input
    assert not result.documents["text"].str.contains("exponential backoff").any()
    manifest = read_manifest(out)
    assert manifest["documents"] == len(result.documents)
    for name in ("logs", "code"):
        entry = manifest["experts"][name]
        for split, counts in entry["splits"].items():
            rows = read_shards(out / "shards" / name / split)
            assert len(rows) == counts["rows"] > 0
            assert sum(len(r.input_ids) for r in rows) == counts["tokens"]
            assert sum(r.loss_tokens for r in rows) == counts["loss_tokens"]
            assert all(len(r.input_ids) <= 64 for r in rows)
            if split == "train":
                difficulties = [r.difficulty for r in rows]
                assert difficulties == sorted(difficulties)  # curriculum order
    assert "tasks" in manifest["experts"]["logs"]["splits"]
    instructions = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    tasks = {i["task"] for i in instructions}
    assert {"instruct_log_change", "instruct_slow_call", "instruct_log_change_inverted"} <= tasks
    report = json.loads((out / "report.json").read_text())
    assert report["dedup"]["bands"] * report["dedup"]["rows"] <= 128
    assert "filters" in summary(result)


def test_single_process_build(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = build(config, families=catalog())
    _check(result, Path(config.out))


def test_config_round_trips_through_yaml_and_example_loads(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config.save(tmp_path / "c.yaml")
    assert DataBuildConfig.load(tmp_path / "c.yaml") == config
    example = DataBuildConfig.load(REPO / "data_pipeline" / "configs" / "example.yaml")
    assert {s.kind for s in example.sources} >= {"chaos", "directory", "loghub"}


def test_cli_data_build_writes_manifest_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flipmoe.cli import main

    files = _files(tmp_path)
    (tmp_path / "build.yaml").write_text(
        f"out: {tmp_path / 'out'}\nsources:\n  - {{name: files, kind: directory, path: '{files}'}}\n"
        "relevance: {enabled: false}\nquality: {enabled: false}\ncontamination: {enabled: false}\n"
        "shards: {enabled: false}\n")
    assert main(["data", "build", str(tmp_path / "build.yaml"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "exact_dedup" in printed and "manifest.json" in printed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["documents_read"] == 8 and read_manifest(tmp_path / "out")["documents"] == report["documents_kept"]
    assert main(["data", "build", str(tmp_path / "missing.yaml")]) == 2


def test_bad_config_and_missing_source_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("sources:\n  - {name: x, kind: ftp, path: /}\n")
    with pytest.raises(FlipmoeInputError, match="kind"):
        DataBuildConfig.load(tmp_path / "bad.yaml")
    with pytest.raises(FlipmoeInputError, match="held-out"):
        SourceConfig(name="c", kind="chaos", seed=599_999, incidents=4)
    config = DataBuildConfig(out=str(tmp_path / "o"), sources=(
        SourceConfig(name="gone", kind="directory", path=str(tmp_path / "missing")),))
    with pytest.raises(FlipmoeInputError, match="does not exist"):
        build(config, families=catalog())


@pytest.mark.integration
def test_ray_data_build_matches_single_process(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    local_config = _config(tmp_path / "a")
    ray_config = _config(tmp_path / "b", runner="ray", workers=2, batch_size=64)
    try:
        ray_result = build(ray_config, families=catalog())
    finally:
        ray.shutdown()
    _check(ray_result, Path(ray_config.out))
    local_result = build(local_config, families=catalog())
    on_ray, local = set(ray_result.documents["text"]), set(local_result.documents["text"])
    assert on_ray == local, (f"Ray only: {[d[:300] for d in on_ray - local]}\n"
                             f"local only: {[d[:300] for d in local - on_ray]}\n"
                             f"Ray stages: {[(s.stage, s.input, s.kept, s.removed) for s in ray_result.stages]}\n"
                             f"local stages: {[(s.stage, s.input, s.kept, s.removed) for s in local_result.stages]}")
    assert sorted(ray_result.documents["text"]) == sorted(local_result.documents["text"])
