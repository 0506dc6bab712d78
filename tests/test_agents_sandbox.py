"""The sandboxed code interpreter: output comes back; network, writes outside scratch, runaway loops,
memory bombs and child processes do not get through."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from director.agents.sandbox import _Limits, network_isolation, run_code
from flipmoe.errors import FlipmoeInputError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bool]]]:
    """A local TCP server; the list records whether anything connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[bool] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(True)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_normal_code_returns_its_output_and_reads_its_input_files() -> None:
    result = run_code("import json\nrows = open('data/in.csv').read().splitlines()\nprint(json.dumps(rows))\n"
                      "print('to stderr', file=__import__('sys').stderr)",
                      files={"data/in.csv": "a,b\n1,2"})
    assert result.ok and not result.timed_out and result.killed_reason is None
    assert result.stdout == '["a,b", "1,2"]\n'
    assert result.stderr == "to stderr\n"
    assert result.duration_s > 0


def test_a_failing_script_reports_its_traceback_and_exit_code() -> None:
    result = run_code("raise ValueError('bad input')")
    assert result.exit_code == 1 and not result.ok and result.killed_reason is None
    assert "ValueError: bad input" in result.stderr


def test_cannot_connect_to_a_listening_local_socket(listener: tuple[int, list[bool]]) -> None:
    port, accepted = listener
    result = run_code(f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n"
                      "print('connected')")
    assert result.exit_code != 0 and "connected" not in result.stdout
    assert "not allowed" in result.stderr
    assert not accepted


@pytest.mark.skipif(network_isolation() != "namespace", reason="no network namespaces on this machine")
def test_the_network_namespace_alone_cuts_the_network(listener: tuple[int, list[bool]]) -> None:
    # The kernel layer without the audit hook: a plain interpreter under the sandbox's preexec.
    port, accepted = listener
    code = (f"import socket\ns = socket.socket()\ns.settimeout(2)\n"
            f"try:\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\n"
            f"except OSError as err:\n    print('refused', err.errno)")
    limits = _Limits(memory_bytes=512 * 2**20, cpu_s=10, file_bytes=2**20)
    done = subprocess.run([sys.executable, "-I", "-c", code], preexec_fn=limits.apply, capture_output=True,
                          text=True, timeout=30)
    assert done.stdout.startswith("refused"), done.stdout + done.stderr
    assert not accepted


def test_cannot_write_rename_or_delete_outside_the_scratch_directory(tmp_path: Path) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("original")
    target = tmp_path / "new.txt"
    attempts = {
        "open": f"open({str(target)!r}, 'w').write('x')",
        "os.open": f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)",
        "append": f"open({str(victim)!r}, 'a').write('x')",
        "remove": f"import os\nos.remove({str(victim)!r})",
        "rename": f"import os\nos.rename({str(victim)!r}, {str(target)!r})",
        "relative escape": "open('../../' + 'escape.txt', 'w').write('x')",
        "symlink": f"import os\nos.symlink({str(victim)!r}, 'link')\nopen('link', 'w').write('x')",
        "dir fd": f"import os\nfd = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
                  f"os.open('new.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
    }
    for name, code in attempts.items():
        result = run_code(code)
        assert result.exit_code != 0, name
        assert "PermissionError" in result.stderr, (name, result.stderr)
    assert victim.read_text() == "original" and not target.exists()


def test_scratch_is_writable_private_and_removed_afterwards() -> None:
    result = run_code("import os, tempfile\nopen('out.txt', 'w').write('ok')\nprint(open('out.txt').read())\n"
                      "print(os.getcwd())\nprint(tempfile.gettempdir() == os.getcwd())")
    assert result.ok, result.stderr
    text, cwd, tmp_is_scratch = result.stdout.splitlines()
    assert text == "ok" and tmp_is_scratch == "True"
    assert not Path(cwd).exists()


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIPMOE_TEST_SECRET", "hunter2")
    result = run_code("import os\nprint(sorted(os.environ))")
    assert result.ok
    assert "FLIPMOE_TEST_SECRET" not in result.stdout and "hunter2" not in result.stdout


def test_infinite_loop_times_out() -> None:
    result = run_code("while True:\n    pass", timeout_s=1.0, cpu_s=30)
    assert result.timed_out and result.killed_reason == "timeout"
    assert result.duration_s < 10


def test_cpu_limit_stops_a_busy_loop() -> None:
    result = run_code("while True:\n    pass", timeout_s=20, cpu_s=1)
    assert not result.timed_out
    assert result.killed_reason is not None and "cpu" in result.killed_reason


def test_memory_bomb_is_stopped() -> None:
    result = run_code("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))", memory_mb=256,
                      timeout_s=20)
    assert not result.timed_out and not result.ok
    assert result.killed_reason is not None and "memory" in result.killed_reason


def test_processes_and_native_code_are_refused() -> None:
    for code in ("import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')",
                 "import os\nos.kill(1, 0)", "import ctypes\nctypes.CDLL('libc.so.6')",
                 "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (100, 100))"):
        result = run_code(code)
        assert result.exit_code != 0 and "not allowed" in result.stderr, code


def test_output_and_file_sizes_are_capped() -> None:
    result = run_code("while True:\n    print('x' * 10000)", max_file_mb=1, timeout_s=20)
    assert result.killed_reason is not None and "file size" in result.killed_reason
    big = run_code("print('y' * 5000)", max_output_chars=100)
    assert big.stdout.startswith("y" * 100) and "truncated" in big.stdout


def test_bad_input_file_names_and_limits_are_refused() -> None:
    for name in ("/etc/passwd", "../up.txt", "a/../../b"):
        with pytest.raises(FlipmoeInputError):
            run_code("pass", files={name: "x"})
    with pytest.raises(FlipmoeInputError):
        run_code("pass", timeout_s=0)
