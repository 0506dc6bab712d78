"""Every Python block of the README runs as written: extracted from README.md (no copies), executed in
order in one namespace, in a scratch directory, on the packaged nano bundle."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import flipmoe
from router.bundle import detector_path, read_manifest

REPO = Path(__file__).resolve().parents[1]
PACKAGED = Path(flipmoe.__file__).parent / "bundles" / "nano"


def readme_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)]


def test_packaged_bundle_is_complete() -> None:
    manifest = read_manifest(PACKAGED)
    assert set(manifest["experts"]) == {"logs", "metrics", "traces", "code"}
    for entry in manifest["experts"].values():
        assert (PACKAGED / entry["path"] / "model.safetensors").is_file()
    assert (detector_path(PACKAGED, "metrics") / "model.safetensors").is_file()


def test_readme_has_python_examples() -> None:
    assert len(readme_blocks()) >= 5


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIPMOE_BUNDLE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flipmoe").symlink_to(REPO / "flipmoe")  # paths in the README are relative to the checkout
    namespace: dict[str, object] = {"__name__": "readme"}
    for line, code in readme_blocks():
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 (the README's own code)
        except Exception as err:  # name the block that failed
            pytest.fail(f"README.md block at line {line} failed: {type(err).__name__}: {err}")
