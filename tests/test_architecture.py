"""The package picture (README "Layers") as a check: import-linter's contracts from pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    """Imports go one way (core -> data_pipeline -> experts -> router -> director -> eval -> CLI/serve),
    and nothing on the RCA path imports the ground-truth accessor."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if command is None:
        pytest.fail("lint-imports (import-linter) is not installed: pip install -e '.[test]'")
    result = subprocess.run([command, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_readme_layer_table_matches_the_contract() -> None:
    """Every layer of the contract appears, in order, in the README's layer table."""
    import tomllib

    layers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Layers"):]
    table = table[: table.index("\n## ", 4)]
    positions = []
    for layer in layers:
        first = layer.split("|")[0].strip()
        assert f"`{first}`" in table, f"layer {first} missing from the README's layer table"
        positions.append(table.index(f"`{first}`"))
    assert positions == sorted(positions), "the README lists the layers in another order than pyproject.toml"
