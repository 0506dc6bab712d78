"""Escapes from the sandbox, as an attacker would try them (issue 21): every one must fail.

Each case runs hostile code in `director.agents.sandbox.run_code` and checks the host, not only the code's
own report: files that must not appear, processes that must not survive, connections that must not be
accepted, secrets that must not be printed. Skipped, with the reason, only where bubblewrap cannot run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sandbox_unavailable

from director.agents.sandbox import DATA, SandboxResult, run_code

pytestmark = pytest.mark.skipif(sandbox_unavailable() is not None, reason=f"no sandbox here: {sandbox_unavailable()}")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An incident-like data directory the sandbox may read, inside a host directory it may not see."""
    tmp_path.chmod(0o755)
    directory = tmp_path / "data"
    directory.mkdir(mode=0o755)
    (directory / "logs.csv").write_text("service,message\ncart,ok\n")
    (directory / "logs.csv").chmod(0o644)
    (tmp_path / "secret.txt").write_text("sibling-secret")
    (tmp_path / "secret.txt").chmod(0o644)
    return directory


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"") for p in sorted(root.rglob("*"))}


def _attempts(result: SandboxResult) -> dict[str, str]:
    """The code prints one JSON object {attempt: outcome}; outcome 'ESCAPED' when the attempt worked."""
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


_TRY = '''
import json, os
outcomes = {}
def attempt(name, action):
    try:
        action()
        outcomes[name] = "ESCAPED"
    except Exception as err:
        outcomes[name] = f"{type(err).__name__}: {err}"
'''


def _escaped(outcomes: dict[str, str]) -> list[str]:
    return [name for name, outcome in outcomes.items() if outcome == "ESCAPED"]


# ------------------------------------------------------------------------------------------- writes


def test_writes_outside_scratch_through_dir_fd_and_relative_paths_fail(data: Path) -> None:
    host = data.parent
    before = _snapshot(host)
    code = _TRY + f'''
W = os.O_WRONLY | os.O_CREAT
data_fd = os.open({DATA!r}, os.O_RDONLY | os.O_DIRECTORY)
root_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
attempt("dir_fd into the data dir", lambda: os.open("x", W, dir_fd=data_fd))
attempt("dir_fd parent of the data dir", lambda: os.open("../x", W, dir_fd=data_fd))
attempt("dir_fd ../../ of the data dir", lambda: os.open("../../escape", W, dir_fd=data_fd))
attempt("dir_fd at / into tmp", lambda: os.open("tmp/escape", W, dir_fd=root_fd))
attempt("dir_fd at / into usr", lambda: os.open("usr/escape", W, dir_fd=root_fd))
os.chdir({DATA!r})
attempt("relative after chdir", lambda: open("../escape", "w"))
attempt("relative deep after chdir", lambda: open("../../../../../../tmp/escape", "w"))
attempt("overwrite input data", lambda: open("logs.csv", "a").write("x"))
attempt("rename input data", lambda: os.rename("logs.csv", "moved.csv"))
attempt("unlink input data", lambda: os.unlink("logs.csv"))
attempt("mkdir in data", lambda: os.mkdir("d"))
attempt("chmod input data", lambda: os.chmod("logs.csv", 0o777))
attempt("utime input data", lambda: os.utime("logs.csv", (0, 0)))
os.chdir("/sandbox/scratch")
os.symlink({DATA!r} + "/logs.csv", "link")
attempt("write through a symlink in scratch", lambda: open("link", "w").write("x"))
attempt("hard link the input into scratch", lambda: os.link({DATA!r} + "/logs.csv", "hard"))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def remount():
    if libc.mount(b"none", {DATA!r}.encode(), None, 32 | 4096, None) != 0:  # MS_REMOUNT | MS_BIND
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    open({DATA!r} + "/x", "w").write("x")
attempt("remount the data read-write", remount)
def unmount():
    if libc.umount2({DATA!r}.encode(), 2) != 0:  # MNT_DETACH
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
attempt("unmount the data", unmount)
print(json.dumps(outcomes))
'''
    outcomes = _attempts(run_code(code, data_dir=data))
    assert _escaped(outcomes) == [], outcomes
    assert _snapshot(host) == before


def test_fifos_device_nodes_and_sqlite_cannot_write_outside_scratch(data: Path) -> None:
    host = data.parent
    before = _snapshot(host)
    code = _TRY + f'''
import sqlite3, stat
def sqlite_write(path):
    with sqlite3.connect(path) as db:
        db.execute("create table t (x)")
attempt("mkfifo in the data dir", lambda: os.mkfifo({DATA!r} + "/fifo"))
attempt("mkfifo relative ../", lambda: os.mkfifo("../fifo"))
attempt("mkfifo at /", lambda: os.mkfifo("/fifo"))
attempt("mknod regular file in data", lambda: os.mknod({DATA!r} + "/node", 0o600 | stat.S_IFREG))
attempt("mknod block device in scratch", lambda: os.mknod("sda", 0o600 | stat.S_IFBLK, os.makedev(8, 0)))
attempt("mknod char device in scratch", lambda: os.mknod("mem", 0o600 | stat.S_IFCHR, os.makedev(1, 1)))
attempt("sqlite3 database in the data dir", lambda: sqlite_write({DATA!r} + "/x.db"))
attempt("sqlite3 database relative ../../", lambda: sqlite_write("../../x.db"))
attempt("sqlite3 database in /tmp", lambda: sqlite_write("/tmp/x.db"))
sqlite_write("ok.db")  # in scratch it works: the refusals above are the sandbox's, not sqlite's
print(json.dumps(outcomes))
'''
    outcomes = _attempts(run_code(code, data_dir=data))
    assert _escaped(outcomes) == [], outcomes
    assert _snapshot(host) == before


# ---------------------------------------------------------------------------------------- processes


def test_fork_exec_of_a_shell_runs_unprivileged_and_confined(data: Path) -> None:
    before = _snapshot(data.parent)
    code = f'''
import _posixsubprocess, subprocess, os
# subprocess goes through _posixsubprocess.fork_exec, which raises no audit event: nothing to intercept here,
# the kernel confines the shell.
shell = subprocess.run(["/bin/sh", "-c", "id -u; id -G; grep CapEff /proc/self/status; "
                        "echo x > {DATA}/pwned; echo $?; cat /proc/1/environ; echo $?; ls /root /work 2>&1"],
                       capture_output=True, text=True)
print(shell.stdout)
print(shell.stderr)
try:
    os.setuid(0)
    print("SETUID-0-WORKED")
except OSError as err:  # EPERM; EINVAL in a user namespace, where uid 0 is not even mapped
    print("setuid refused", err)
'''
    result = run_code(code, data_dir=data)
    assert result.ok, result.stderr
    lines = result.stdout.splitlines()
    uid, groups = lines[0], lines[1]
    assert uid != "0" and "0" not in groups.split(), result.stdout
    assert "CapEff:\t0000000000000000" in result.stdout
    assert "SETUID-0-WORKED" not in result.stdout and "setuid refused" in result.stdout
    assert "Read-only file system" in result.stdout or "Permission denied" in result.stdout
    assert _snapshot(data.parent) == before


def _alive(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _gone(marker: str, within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_fork_bombs_are_bounded_and_their_processes_killed() -> None:
    marker = f"flipmoe-bomb-{os.getpid()}-{time.monotonic_ns()}"
    code = f'''
import os, time
started = 0
try:
    while True:
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 1000; : {marker}"])
        started += 1
except OSError as err:
    print("fork refused after", started, "children:", err, flush=True)
while True:
    time.sleep(1)
'''
    start = time.monotonic()
    result = run_code(code, timeout_s=3, max_processes=16)
    assert result.timed_out and time.monotonic() - start < 15
    started = int(result.stdout.split("after")[1].split()[0])
    assert started < 16, result.stdout
    assert _gone(marker), f"bomb processes survived: {_alive(marker)}"


def test_a_runaway_fork_loop_ends_with_the_timeout() -> None:
    result = run_code("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                      timeout_s=2, max_processes=8)
    assert result.timed_out and result.killed_reason == "timeout"


def test_setsid_and_double_forked_children_are_killed_at_the_timeout() -> None:
    marker = f"flipmoe-daemon-{os.getpid()}-{time.monotonic_ns()}"
    code = f'''
import os, subprocess, time
subprocess.Popen(["/bin/sh", "-c", "sleep 1000; : {marker}"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sh", ["/bin/sh", "-c", "trap '' HUP TERM; sleep 1001; : {marker}"])
    os._exit(0)
time.sleep(0.5)
print("spawned", flush=True)
time.sleep(1000)
'''
    result = run_code(code, timeout_s=3)
    assert result.timed_out and "spawned" in result.stdout
    assert _gone(marker), f"children outlived the timeout: {_alive(marker)}"


def test_children_do_not_outlive_a_normal_exit() -> None:
    marker = f"flipmoe-orphan-{os.getpid()}-{time.monotonic_ns()}"
    code = f'import subprocess\nsubprocess.Popen(["/bin/sh", "-c", "sleep 1000; : {marker}"], start_new_session=True)'
    assert run_code(code).ok
    assert _gone(marker)


def test_signals_cannot_reach_host_processes() -> None:
    host = [os.getpid(), os.getppid()]
    code = f"""
import os, signal
print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
for pid in {host}:
    try:
        os.kill(pid, signal.SIGKILL)
        print("signalled", pid)
    except OSError as err:
        print("refused", pid, type(err).__name__)
"""
    result = run_code(code)
    assert result.ok, result.stderr
    visible = json.loads(result.stdout.splitlines()[0])
    assert max(visible) < 10  # a PID namespace of its own: only the sandbox's processes exist
    for pid in host:
        if pid not in visible:
            assert f"refused {pid} ProcessLookupError" in result.stdout


# -------------------------------------------------------------------------------------------- reads


def test_the_parents_environment_is_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"hunter2-{os.getpid()}"
    monkeypatch.setenv("FLIPMOE_TEST_TOKEN", secret)
    code = f'''
import os
print(os.getppid(), dict(os.environ))
for pid in ["self", str(os.getppid()), "1", "{os.getpid()}", "{os.getppid()}",
            *[p for p in os.listdir("/proc") if p.isdigit()]]:
    for name in ("environ", "cmdline"):
        try:
            print(pid, name, open(f"/proc/{{pid}}/{{name}}", "rb").read())
        except OSError as err:
            print(pid, name, type(err).__name__)
'''
    result = run_code(code)
    assert result.ok, result.stderr
    assert secret not in result.stdout + result.stderr
    assert "FLIPMOE_TEST_TOKEN" not in result.stdout and "pytest" not in result.stdout


def test_files_outside_the_given_data_are_unreadable(data: Path) -> None:
    code = _TRY + f'''
for path in ["/etc/passwd", "/etc/shadow", "/etc/hostname", "/root/.bashrc", "/root/.ssh/id_rsa",
             {str(data.parent / "secret.txt")!r}, {str(REPO / "pyproject.toml")!r}, {str(REPO / "README.md")!r},
             {str(Path.home() / ".bash_history")!r}, "/proc/1/root/etc/passwd", "/proc/1/cwd/README.md",
             "/sandbox/data/../../etc/hostname", "/sys/class/net/lo/address", "/dev/mem", "/dev/sda"]:
    attempt(f"read {{path}}", lambda path=path: open(path, "rb").read())
attempt("list the host's /tmp", lambda: os.listdir({str(data.parent)!r}))
try:  # the repository exists only as the path to the site-packages it may hold
    outcomes["the repository's files"] = "ESCAPED" if set(os.listdir({str(REPO)!r})) - {{".venv"}} else "absent"
except FileNotFoundError as err:
    outcomes["the repository's files"] = str(err)
fds = sorted(os.listdir("/proc/self/fd"))  # 0, 1, 2 and the one listdir holds
outcomes["no inherited descriptors"] = "ESCAPED" if len(fds) > 4 else str(fds)
assert open({DATA!r} + "/logs.csv").read().startswith("service")  # the given data is readable
print(json.dumps(outcomes))
'''
    outcomes = _attempts(run_code(code, data_dir=data))
    assert _escaped(outcomes) == [], outcomes


# ------------------------------------------------------------------------------------------ network


@pytest.fixture
def listeners() -> Iterator[tuple[int, str, list[str]]]:
    """A TCP server on 127.0.0.1 and an abstract unix socket; the list records what connected."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    unix = socket.socket(socket.AF_UNIX)
    abstract = f"flipmoe-test-{os.getpid()}"
    unix.bind("\0" + abstract)
    unix.listen()
    accepted: list[str] = []
    stop = threading.Event()

    def serve(server: socket.socket, name: str) -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(name)
            conn.close()

    threads = [threading.Thread(target=serve, args=(s, n), daemon=True) for s, n in ((tcp, "tcp"), (unix, "unix"))]
    for thread in threads:
        thread.start()
    yield tcp.getsockname()[1], abstract, accepted
    stop.set()
    for thread in threads:
        thread.join()
    tcp.close()
    unix.close()


def test_no_network_of_any_kind(listeners: tuple[int, str, list[str]]) -> None:
    port, abstract, accepted = listeners
    code = _TRY + f'''
import socket
def tcp(host, port):
    s = socket.create_connection((host, port), timeout=2)
    s.close()
def unix():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect("\\0{abstract}")
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("8.8.8.8", 53))
attempt("tcp to a host listener on 127.0.0.1", lambda: tcp("127.0.0.1", {port}))
attempt("tcp to the internet", lambda: tcp("1.1.1.1", 443))
attempt("dns", lambda: socket.getaddrinfo("example.com", 443))
attempt("udp to the internet", udp)
attempt("abstract unix socket of the host", unix)
attempt("tcp to the private network", lambda: tcp("10.0.0.1", 80))
print(json.dumps(outcomes))
'''
    outcomes = _attempts(run_code(code, timeout_s=20))
    assert _escaped(outcomes) == [], outcomes
    assert accepted == []
