"""The model bundle: where it is found, how it is read, its CLI, and a reduced-budget build."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from tiny_experts import EXPERT_TASKS, records, tiny_experts, write_bundle

import flipmoe
from flipmoe.cli import build_parser, main
from flipmoe.errors import FlipmoeInputError
from router import bundle as bundle_module
from router.bundle import (
    BUNDLE_ENV,
    BundleConfig,
    build_bundle,
    detector_path,
    ensure_bundle,
    load_bundle,
    load_expert,
    read_manifest,
    render_card,
)
from router.train import RouterTrainConfig, fit_router

EXPERTS = tuple(EXPERT_TASKS)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    router = fit_router(records(80), EXPERTS, config=RouterTrainConfig(c_grid=(3.0,), folds=2))
    return write_bundle(tmp_path_factory.mktemp("b") / "bundle", tiny_experts(), router)


@pytest.fixture
def no_default_bundle(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(bundle_module, "_PACKAGED", tmp_path / "packaged")
    return tmp_path


def test_explicit_path_then_env_then_packaged_then_cache(tiny_bundle, no_default_bundle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert ensure_bundle(tiny_bundle) == tiny_bundle
    monkeypatch.setenv(BUNDLE_ENV, str(tiny_bundle))
    assert ensure_bundle() == tiny_bundle
    monkeypatch.delenv(BUNDLE_ENV)
    packaged = no_default_bundle / "packaged" / "nano"
    packaged.mkdir(parents=True)
    (packaged / "bundle.json").write_text("{}")
    cached = no_default_bundle / "cache" / "flipmoe" / "bundles" / "nano"
    cached.mkdir(parents=True)
    (cached / "bundle.json").write_text("{}")
    assert ensure_bundle() == packaged
    (packaged / "bundle.json").unlink()
    assert ensure_bundle() == cached


def test_missing_bundle_is_built_on_first_use_saying_so(no_default_bundle, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    built = []
    monkeypatch.setattr(bundle_module, "build_bundle", lambda out, **kw: built.append((out, kw)) or out)
    path = ensure_bundle(progress=True)
    assert path == no_default_bundle / "cache" / "flipmoe" / "bundles" / "nano"
    assert built and built[0][1]["config"].preset == "nano"
    assert "building the nano bundle" in capsys.readouterr().err


def test_bad_bundles_say_what_to_do(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FlipmoeInputError, match="flipmoe bundle build"):
        ensure_bundle(tmp_path)
    monkeypatch.setenv(BUNDLE_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FlipmoeInputError, match=f"from \\${BUNDLE_ENV}"):
        ensure_bundle()
    (tmp_path / "bundle.json").write_text("{not json")
    with pytest.raises(FlipmoeInputError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "bundle.json").write_text(json.dumps({"experts": {"x": {"kind": "telepathic"}}, "router": "r"}))
    with pytest.raises(FlipmoeInputError, match="unknown kind 'telepathic'"):
        load_bundle(tmp_path)


def test_load_bundle_gives_experts_router_and_manifest(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    experts, router, manifest = load_bundle(tiny_bundle)
    assert set(experts) == set(EXPERTS) and router.experts == EXPERTS and manifest["name"] == "flipmoe-tiny"


def test_load_expert_loads_one_entry_local_or_remote(tiny_bundle, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The one expert loader: serving loads experts one at a time with it, `load_experts` all of them."""
    assert load_expert(tiny_bundle, "logs").name == "logs"
    with pytest.raises(FlipmoeInputError, match="no expert .nope.") as err:
        load_expert(tiny_bundle, "nope")
    assert "logs" in (err.value.hint or "")
    manifest = {"experts": {"big": {"kind": "remote", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    remote = load_expert(tmp_path, "big", manifest=manifest)
    assert type(remote).__name__ == "RemoteExpert" and remote.model == "m"
    manifest["experts"]["big"]["colour"] = "blue"
    with pytest.raises(FlipmoeInputError, match="remote expert 'big'"):
        load_expert(tmp_path, "big", manifest=manifest)


def test_bundle_show_cli(tiny_bundle, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["bundle", "show", str(tiny_bundle), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["bundle"]["experts"].keys() == set(EXPERTS)
    assert main(["bundle", "show", str(tiny_bundle / "experts")]) == 2
    assert "no bundle.json" in capsys.readouterr().err


def test_rebuild_command_parses_back_to_the_same_config() -> None:
    config = BundleConfig(expert_steps=5, router_requests_per_task=4, train_incidents=2)
    words = shlex.split(config.command("/tmp/x"))
    assert words[:3] == ["flipmoe", "bundle", "build"]
    args = build_parser().parse_args(words[1:])
    assert (args.expert_steps, args.router_requests_per_task, args.train_incidents, args.out) == (5, 4, 2, "/tmp/x")
    assert BundleConfig().command("B") == "flipmoe bundle build --preset nano --out B"
    with pytest.raises(FlipmoeInputError):
        BundleConfig(test_fraction=1.0)


def test_card_renders_every_section() -> None:
    card = {"name": "flipmoe-nano", "preset": "nano", "created": "2026", "parameters": {"logs": 1000},
            "experts": {"logs": {"final_loss": 1.5}}, "router": {"requests": 10, "temperature": 0.5,
                                                                 "cross_validated": {"accuracy": 0.9, "ece": 0.05}},
            "evaluation": {"requests": 10, "accuracy": {"router": 0.9, "random": 0.25}, "ece": 0.04,
                           "task_scores": {"flipmoe": {"t": 0.5}, "router": {"t": 0.5}, "task_label": {"t": 0.4},
                                           "random": {"t": 0.1}, "oracle": {"t": 0.6}, "expert:logs": {"t": 0.4}}},
            "data": {"train_incidents": 16}, "timings": {"total_s": 60.0}, "commands": {"build": "flipmoe ..."}}
    text = render_card(card)
    for needle in ("# flipmoe-nano", "| logs | 1,000", "router 0.900", "| t | 0.500", "    flipmoe ...", "total_s 60"):
        assert needle in text


# An absolute path (`/work/...`, `~/...`, `C:\\...`) starting a word or a quoted string; URLs do not match.
_ABSOLUTE_PATH = re.compile(r"""(?:^|[\s"'=(\[,])(?:/[\w.-]+/|~/|[A-Za-z]:\\)""", re.MULTILINE)


def test_packaged_bundle_holds_no_machine_paths() -> None:
    packaged = Path(flipmoe.__file__).parent / "bundles"
    texts = [p for p in packaged.rglob("*") if p.suffix in {".json", ".md", ".yaml", ".csv", ".txt"}]
    assert any(p.name == "card.json" for p in texts), "no packaged bundle to check"
    found = {str(p.relative_to(packaged)): m.group(0).strip() for p in texts
             for m in _ABSOLUTE_PATH.finditer(p.read_text(encoding="utf-8"))}
    assert not found, f"machine paths in the packaged bundle (write them relative to the bundle): {found}"
    assert _ABSOLUTE_PATH.search('"shared_data": "/work/shared/data"') and not _ABSOLUTE_PATH.search("https://x/y")


@pytest.mark.slow
def test_reduced_budget_build_runs_the_whole_chain(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The exact rebuild command with tiny budgets: data, experts, oracle labels, router, evaluation, card."""
    config = BundleConfig(expert_steps=2, detector_steps=2, router_requests_per_task=4, train_incidents=1,
                          heldout_incidents=1, max_new_tokens=8)
    out = tmp_path / "bundle"
    assert main(shlex.split(config.command(out))[1:] + ["--quiet"]) == 0
    manifest = read_manifest(out)
    assert set(manifest["experts"]) == {"logs", "metrics", "traces", "code"}
    assert detector_path(out, "metrics").is_dir()
    card = json.loads((out / "card.json").read_text())
    assert card["evaluation"]["task_scores"]["flipmoe"] and card["router"]["requests"] > 0
    assert manifest["commands"]["build"] == config.command(out)
    with pytest.raises(FlipmoeInputError, match="exists"):
        build_bundle(out, config=config, progress=False)


def test_train_router_command_retrains_the_bundles_router(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import argparse

    from router.cli import register_train_router

    router = fit_router(records(40), EXPERTS, config=RouterTrainConfig(c_grid=(3.0,), folds=2))
    bundle = write_bundle(tmp_path / "bundle", tiny_experts(), router)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["config"] = {"max_new_tokens": 4, "router_requests_per_task": 4}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    requests = [r.example for r in records(16, seed=9)]
    monkeypatch.setattr(bundle_module, "heldout_requests", lambda sources, per_task: requests)
    monkeypatch.setattr(bundle_module, "training_answers", lambda sources: {})
    parser = argparse.ArgumentParser()
    register_train_router(parser.add_subparsers())
    args = parser.parse_args(["router", "--bundle", str(bundle), "--quiet"])
    assert args.handler(args) == 0
    assert "cross-validated accuracy" in capsys.readouterr().out
    card = json.loads((bundle / "card.json").read_text())
    retrained = json.loads((bundle / "router" / "card.json").read_text())
    assert retrained["requests"] + retrained["test_requests"] == 16
    assert card["evaluation"]["requests"] == retrained["test_requests"]
    assert set(card["evaluation"]["task_scores"]["flipmoe"]) <= {r.task for r in requests}


def test_context_shortfall_reads_config_and_tokenizer_only() -> None:
    from router.bundle import context_shortfall, packaged_bundle

    bundle = packaged_bundle()
    if bundle is None:
        pytest.skip("no packaged bundle in this installation")
    assert context_shortfall(bundle, "ERROR db refused", new_tokens=8, expert="logs") is None
    reason = context_shortfall(bundle, "ERROR db refused " * 200, new_tokens=64, task="log_change_summary")
    assert reason is not None and "logs expert reads 128 tokens" in reason
    assert "no expert of the bundle answers" in (context_shortfall(bundle, "x", new_tokens=1, task="poetry") or "")


def test_train_detector_command_adds_a_metrics_detector_to_a_bundle(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    router = fit_router(records(40), EXPERTS, config=RouterTrainConfig(c_grid=(3.0,), folds=2))
    bundle = write_bundle(tmp_path / "bundle", tiny_experts(), router)
    with pytest.raises(FlipmoeInputError, match="no metrics detector"):
        detector_path(bundle, "metrics")
    assert main(["train", "detector", "--bundle", str(bundle), "--steps", "2", "--incidents", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    from experts.metrics.detector import MetricsDetector

    detector = MetricsDetector.load(detector_path(bundle, "metrics"))
    assert detector.card["training"]["steps"] == 2 and read_manifest(bundle)["experts"]  # experts kept
    assert main(["train", "detector", "--bundle", str(bundle), "--steps", "0"]) == 2
