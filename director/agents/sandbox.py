"""A sandboxed Python code interpreter for agents: run untrusted code, get its output back.

The code runs in a fresh interpreter (`sys.executable -I -B`) in a child process that:

- has no network: it is moved into a new, empty Linux network namespace (only a loopback device,
  which is down) before Python starts; where namespaces are not available, only the audit hook below
  stands between the code and the network;
- runs under resource limits set in the child before `exec` (`resource.setrlimit`): CPU seconds,
  address space, size of any file it writes (its stdout and stderr included), open files, no core
  dumps, no new processes;
- is killed, with its whole process group, when it runs past its wall-clock time;
- sees only a scrubbed environment and works in a fresh scratch directory (its cwd, HOME and
  TMPDIR), which is deleted afterwards;
- runs the code behind an audit hook (PEP 578, installed before the code is read) that refuses
  sockets, process creation and signals to other processes, changing resource limits, loading
  native code through ctypes, and any write, rename, delete or permission change outside the
  scratch directory.

The audit hook is defence in depth, not a boundary on its own: C extensions can call the OS
without raising audit events. The network namespace and the rlimits are enforced by the kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Literal

from flipmoe.errors import FlipmoeInputError

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_EXIT_MEMORY = 75
"""Exit status the child's bootstrap uses when the code ran out of memory (MemoryError)."""
_MAX_OPEN_FILES = 256

NetworkIsolation = Literal["namespace", "audit-hook"]

# Runs in the child before the user's code, which it reads from stdin. Kept free of imports beyond
# `os` and `sys` so that nothing the code could abuse is loaded before the hook is in place.
_BOOTSTRAP = r"""
import os, sys
sys.dont_write_bytecode = True
_SCRATCH = os.path.realpath(os.getcwd())
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_REFUSED = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
            "os.system", "os.kill", "os.killpg", "os.setns", "os.unshare", "pty.", "resource.",
            "signal.pthread_kill", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
            "ctypes.set_errno", "http.client.", "urllib.", "ftplib.", "smtplib.", "imaplib.", "poplib.",
            "nntplib.", "telnetlib.", "webbrowser.", "sys.remote_exec")
_PATH_EVENTS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1, "os.chflags": 1,
                "os.lchflags": 1, "os.lchmod": 1, "os.lchown": 1, "os.truncate": 1, "os.utime": 1,
                "os.setxattr": 1, "os.removexattr": 1, "shutil.rmtree": 1, "shutil.chown": 1,
                "os.rename": 2, "os.link": 2, "os.symlink": 2, "shutil.copyfile": 2, "shutil.copymode": 2,
                "shutil.copystat": 2, "shutil.move": 2, "shutil.copytree": 2}

def _inside(path):
    if isinstance(path, int):
        return True
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    real = os.path.realpath(os.path.join(os.getcwd(), os.fspath(path)))
    return real == _SCRATCH or real.startswith(_SCRATCH + os.sep) or real == os.devnull

def _refuse(event, detail=""):
    raise PermissionError(f"sandbox: {event} is not allowed{detail}")

def _hook(event, args):
    if event.startswith(_REFUSED):
        _refuse(event)
    # ctypes loads the interpreter itself (dlopen(NULL)) when imported; any other library is refused.
    if event == "ctypes.dlopen" and args and args[0] is not None:
        _refuse(event, f" ({args[0]})")
    if event == "open":
        path, flags = args[0], args[2]
        if path is None or isinstance(path, int):
            return
        writing = flags is not None and flags & _WRITE_FLAGS
        if (writing or os.path.isdir(path)) and not _inside(path):
            _refuse("writing" if writing else "opening a directory", f" outside the scratch directory: {path}")
        return
    n = _PATH_EVENTS.get(event)
    if n is not None:
        for path in args[:n]:
            if path is not None and not _inside(path):
                _refuse(event, f" outside the scratch directory: {path}")

sys.addaudithook(_hook)
_code = sys.stdin.read()
sys.stdin = open(os.devnull)
del _hook
try:
    exec(compile(_code, "<sandbox>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
except MemoryError:
    sys.stderr.write("MemoryError: the code ran out of memory (sandbox memory limit)\n")
    sys.stderr.flush()
    os._exit(EXIT_MEMORY)
""".replace("EXIT_MEMORY", str(_EXIT_MEMORY))


@dataclass(frozen=True, kw_only=True)
class SandboxResult:
    """What a sandboxed run produced."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The process's exit status; negative: killed by that signal; None: never started."""
    timed_out: bool
    """Killed because it ran past `timeout_s` of wall-clock time."""
    killed_reason: str | None
    """Why the run was stopped ('timeout', 'cpu limit', 'memory limit', 'file size limit', 'signal ...'),
    or None when the code ended on its own."""
    duration_s: float
    network: NetworkIsolation = "audit-hook"
    """How the network was cut: a network namespace (and the audit hook), or the audit hook alone."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None


def run_code(code: str, *, timeout_s: float = 10.0, memory_mb: int = 1024, cpu_s: float | None = None,
             files: dict[str, str] | None = None, max_file_mb: int = 16,
             max_output_chars: int = 100_000) -> SandboxResult:
    """Run Python `code` in a sandbox (see the module docstring) and return its output.

    `files` are written into the scratch directory first (relative names, no '..'), so the code can
    read its inputs with `open(name)`. `cpu_s` defaults to `timeout_s`. Every file the code writes,
    stdout and stderr included, is limited to `max_file_mb`; the returned outputs to
    `max_output_chars` characters each.
    """
    if timeout_s <= 0 or memory_mb <= 0 or (cpu_s is not None and cpu_s <= 0) or max_file_mb <= 0:
        raise FlipmoeInputError("sandbox limits must be positive",
                                hint=f"got timeout_s={timeout_s}, memory_mb={memory_mb}, cpu_s={cpu_s}, "
                                     f"max_file_mb={max_file_mb}")
    cpu_limit = max(1, int(round(cpu_s if cpu_s is not None else timeout_s)))
    network = network_isolation()
    scratch = Path(tempfile.mkdtemp(prefix="flipmoe-sandbox-"))
    outputs = Path(tempfile.mkdtemp(prefix="flipmoe-sandbox-out-"))
    start = time.monotonic()
    try:
        _write_inputs(scratch, files or {})
        limits = _Limits(memory_bytes=memory_mb * 2**20, cpu_s=cpu_limit, file_bytes=max_file_mb * 2**20)
        with open(outputs / "stdout", "wb") as out, open(outputs / "stderr", "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-I", "-B", "-X", "utf8", "-c", _BOOTSTRAP],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=scratch, env=_environment(scratch),
                preexec_fn=limits.apply, start_new_session=True, close_fds=True)
            timed_out = False
            try:
                assert process.stdin is not None
                process.stdin.write(code.encode("utf-8"))
                process.stdin.close()
            except BrokenPipeError:  # the child died before reading its code; its status says why
                pass
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(process)
        duration = time.monotonic() - start
        stdout = _read(outputs / "stdout", max_output_chars)
        stderr = _read(outputs / "stderr", max_output_chars)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(outputs, ignore_errors=True)
    code_ = process.returncode
    return SandboxResult(stdout=stdout, stderr=stderr, exit_code=code_, timed_out=timed_out,
                         killed_reason=_killed_reason(code_, stderr, timed_out=timed_out, memory_mb=memory_mb,
                                                      cpu_s=cpu_limit, max_file_mb=max_file_mb),
                         duration_s=duration, network=network)


@dataclass(frozen=True)
class _Limits:
    memory_bytes: int
    cpu_s: int
    file_bytes: int

    def apply(self) -> None:
        """Runs in the child between fork and exec: cut the network, then set the limits."""
        _unshare_network()
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL if that was ignored.
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_s, self.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_bytes, self.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (_MAX_OPEN_FILES, _MAX_OPEN_FILES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # Not enforced for root (CAP_SYS_RESOURCE); there the audit hook refuses process creation.
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


def _unshare_network() -> bool:
    """Move the calling process into a new network namespace; as an unprivileged user, inside a new
    user namespace (which unprivileged users may create where the kernel allows it)."""
    libc = _libc()
    if libc is None or not sys.platform.startswith("linux"):
        return False
    return libc.unshare(_CLONE_NEWNET) == 0 or libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0


def _probe_unshare() -> None:
    if not _unshare_network():
        raise OSError("unshare(CLONE_NEWNET) refused")


@lru_cache(maxsize=1)
def network_isolation() -> NetworkIsolation:
    """'namespace' when this machine lets the sandbox cut the network with a namespace, else
    'audit-hook' (checked once, by starting a child that tries)."""
    _libc()  # load libc in the parent: the child between fork and exec should not dlopen
    try:
        subprocess.run([sys.executable, "-I", "-c", "pass"], preexec_fn=_probe_unshare, check=True,
                       capture_output=True, timeout=30)
    except (subprocess.SubprocessError, OSError):
        return "audit-hook"
    return "namespace"


def _write_inputs(scratch: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise FlipmoeInputError(f"sandbox input file name {name!r} must be relative and stay in the "
                                    "scratch directory")
        target = scratch.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _environment(scratch: Path) -> dict[str, str]:
    """A minimal environment: nothing of the parent's (credentials, proxies, cluster addresses)."""
    one_thread = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                         "NUMEXPR_NUM_THREADS")}
    return {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(scratch), **one_thread}


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _read(path: Path, limit: int) -> str:
    with open(path, "rb") as handle:
        data = handle.read(limit * 4 + 4)
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit:
        return text[:limit] + f"\n[... output truncated at {limit} characters]"
    return text


def _killed_reason(exit_code: int | None, stderr: str, *, timed_out: bool, memory_mb: int, cpu_s: int,
                   max_file_mb: int) -> str | None:
    if timed_out:
        return "timeout"
    if exit_code == _EXIT_MEMORY:
        return f"memory limit ({memory_mb} MiB)"
    # Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE surfaces as EFBIG in the traceback.
    if exit_code and "[Errno 27]" in stderr:
        return f"file size limit ({max_file_mb} MiB)"
    if exit_code is None or exit_code >= 0:
        return None
    sig = -exit_code
    if sig == signal.SIGXCPU:
        return f"cpu limit ({cpu_s} s)"
    if sig == signal.SIGKILL:
        return f"killed by SIGKILL (the cpu hard limit of {cpu_s + 1} s, or the kernel out of memory)"
    if sig == signal.SIGXFSZ:
        return f"file size limit ({max_file_mb} MiB)"
    return f"signal {signal.Signals(sig).name}"
