import json
import subprocess
import sys

import pytest
from conftest import tiny_incident

from flipmoe.cli import build_parser, main
from flipmoe.telemetry import write_incident


def _subcommand_paths(parser, prefix=()):
    """Every (sub)command path of the CLI, e.g. ('import', 'nezha')."""
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommand_paths(sub, (*prefix, name))


def test_every_command_has_real_help(capsys):
    paths = list(_subcommand_paths(build_parser()))
    assert ("incident", "show") in paths and ("version",) in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "usage: flipmoe " + " ".join(path) in text
        assert len(text.splitlines()) > 3, f"{path} has no real help text"


def test_version(capsys):
    assert main(["version", "--short"]) == 0
    assert capsys.readouterr().out.startswith("flipmoe 0.")


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2


def test_incident_show(tmp_path, capsys):
    write_incident(tiny_incident(), tmp_path / "inc")
    assert main(["incident", "show", str(tmp_path / "inc")]) == 0
    out = capsys.readouterr().out
    assert "p95 latency of front above 1s" in out and "spans" in out
    assert main(["incident", "show", "--json", str(tmp_path / "inc")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["modalities"]["spans"]["rows"] == 3
    assert summary["services"] == ["api", "db", "front"]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "incident.json").write_text("{")
    assert main(["incident", "show", str(tmp_path / "inc")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flipmoe: error:") and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_config_file_exits_2(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("nonsense: 1\n")
    assert main(["--config", str(tmp_path / "c.yaml"), "version"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_console_script_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "flipmoe", "version", "--short"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("flipmoe")
