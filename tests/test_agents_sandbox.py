"""The sandboxed code interpreter: output and inputs come back, limits hold, and without bubblewrap nothing
runs. The escape attempts are in test_sandbox_escapes.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sandbox_unavailable

from director.agents import sandbox
from director.agents.sandbox import DATA, INPUT, SCRATCH, SandboxUnavailableError, run_code
from flipmoe.errors import FlipmoeInputError

needs_sandbox = pytest.mark.skipif(sandbox_unavailable() is not None,
                                   reason=f"no sandbox here: {sandbox_unavailable()}")


@needs_sandbox
def test_normal_code_returns_its_output_and_reads_its_inputs(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "table.csv").write_text("a,b\n3,4")
    result = run_code(f"import json, os\nprint(json.dumps(open('{INPUT}/data/in.csv').read().splitlines()))\n"
                      f"print(open('{DATA}/table.csv').read().splitlines()[1])\nprint(os.getcwd())\n"
                      "print('to stderr', file=__import__('sys').stderr)",
                      files={"data/in.csv": "a,b\n1,2"}, data_dir=tmp_path)
    assert result.ok and not result.timed_out and result.killed_reason is None, result.stderr
    assert result.stdout == f'["a,b", "1,2"]\n3,4\n{SCRATCH}\n'
    assert result.stderr == "to stderr\n"
    assert result.duration_s > 0 and "bubblewrap" in result.isolation


@needs_sandbox
def test_pandas_and_numpy_import_under_the_limits() -> None:
    result = run_code("import pandas as pd\nprint(pd.DataFrame({'x': [1, 2, 3]})['x'].sum())", timeout_s=60)
    assert result.ok and result.stdout == "6\n", result.stderr


@needs_sandbox
def test_a_failing_script_reports_its_traceback_and_exit_code() -> None:
    result = run_code("raise ValueError('bad input')")
    assert result.exit_code == 1 and not result.ok and result.killed_reason is None
    assert "ValueError: bad input" in result.stderr


@needs_sandbox
def test_scratch_is_writable_private_and_gone_afterwards() -> None:
    first = run_code("import os, tempfile\nopen('out.txt', 'w').write('ok')\nprint(open('out.txt').read())\n"
                     "print(tempfile.gettempdir() == os.getcwd())")
    assert first.ok and first.stdout.splitlines() == ["ok", "True"], first.stderr
    second = run_code("import os\nprint(os.listdir('.'))")
    assert second.stdout == "[]\n"


@needs_sandbox
def test_environment_is_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIPMOE_TEST_SECRET", "hunter2")
    result = run_code("import os\nprint(sorted(os.environ))")
    assert result.ok
    assert "FLIPMOE_TEST_SECRET" not in result.stdout and "hunter2" not in result.stdout


@needs_sandbox
def test_infinite_loop_times_out() -> None:
    result = run_code("while True:\n    pass", timeout_s=1.0, cpu_s=30)
    assert result.timed_out and result.killed_reason == "timeout"
    assert result.duration_s < 10


@needs_sandbox
def test_cpu_limit_stops_a_busy_loop() -> None:
    result = run_code("while True:\n    pass", timeout_s=20, cpu_s=1)
    assert not result.timed_out
    assert result.killed_reason is not None and "cpu" in result.killed_reason


@needs_sandbox
def test_memory_bomb_is_stopped() -> None:
    result = run_code("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))", memory_mb=256,
                      timeout_s=20)
    assert not result.timed_out and not result.ok
    assert result.killed_reason is not None and "memory" in result.killed_reason


@needs_sandbox
def test_output_file_and_scratch_sizes_are_capped() -> None:
    result = run_code("while True:\n    print('x' * 10000)", max_file_mb=1, timeout_s=20)
    assert result.killed_reason is not None and "file size" in result.killed_reason
    big = run_code("print('y' * 5000)", max_output_chars=100)
    assert big.stdout.startswith("y" * 100) and "truncated" in big.stdout
    full = run_code("open('big', 'wb').write(b'x' * 20 * 2**20)", max_file_mb=64, scratch_mb=4)
    assert not full.ok and "No space left on device" in full.stderr


@needs_sandbox
def test_the_process_limit_holds() -> None:
    code = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(5)\n"
            "            os._exit(0)\n        n += 1\nexcept OSError:\n    print(n)")
    result = run_code(code, max_processes=10)
    assert result.ok and int(result.stdout) < 10, result.stdout + result.stderr


@pytest.mark.parametrize("choice", [0, 1], ids=["strongest", "fallback"])
def test_every_flag_set_the_probe_may_pick_holds(monkeypatch: pytest.MonkeyPatch, choice: int) -> None:
    """The weaker flag sets (for kernels without unprivileged user namespaces) still confine the code."""
    if sandbox_unavailable() is not None:
        pytest.skip(f"no sandbox here: {sandbox_unavailable()}")
    candidate = sandbox._candidates()[choice]
    monkeypatch.setattr(sandbox, "_probe", lambda: candidate)
    code = ("import os\nprint(os.getuid())\ntry:\n    open('/usr/x', 'w')\nexcept OSError as err:\n"
            "    print(type(err).__name__)\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            import time; time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError:\n    print(n)")
    result = run_code(code, max_processes=10)
    assert result.ok, result.stderr
    uid, refused, forks = result.stdout.split()
    assert uid != "0" and refused == "OSError" and int(forks) < 10


@pytest.fixture
def no_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A PATH without bubblewrap, and the probe forgotten before and after."""
    monkeypatch.setenv("PATH", str(tmp_path))
    sandbox._probe.cache_clear()
    sandbox._tools.cache_clear()
    yield
    sandbox._probe.cache_clear()
    sandbox._tools.cache_clear()


def test_without_bubblewrap_code_is_refused_not_run_weakly(no_bwrap: None, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(SandboxUnavailableError, match="bubblewrap"):
        run_code(f"open({str(marker)!r}, 'w').write('x')")
    assert not marker.exists()


def test_bad_input_file_names_and_limits_are_refused(tmp_path: Path) -> None:
    for name in ("/etc/passwd", "../up.txt", "a/../../b"):
        with pytest.raises(FlipmoeInputError):
            run_code("pass", files={name: "x"})
    for limits in ({"timeout_s": 0}, {"memory_mb": -1}, {"max_processes": 0}):
        with pytest.raises(FlipmoeInputError, match="must be positive"):
            run_code("pass", **limits)  # type: ignore[arg-type]
    with pytest.raises(FlipmoeInputError, match="not a directory"):
        run_code("pass", data_dir=tmp_path / "missing")


@needs_sandbox
def test_code_larger_than_a_pipe_buffer_is_fed_under_the_deadline() -> None:
    # 1 MiB of comment: more than the pipe holds, so the write itself must share the run's deadline.
    result = run_code("# " + "x" * (1 << 20) + "\nprint('read all of it')", timeout_s=60)
    assert result.stdout.strip() == "read all of it" and not result.timed_out
