"""A sandboxed Python interpreter for agents: run untrusted code, get its output back.

The code runs under bubblewrap (`bwrap`), which the kernel enforces; there is no fallback. Without a
working `bwrap`, `run_code` raises `SandboxUnavailableError` and runs nothing. Inside:

- new mount, PID, network, IPC, UTS and (where the kernel has them) cgroup namespaces: no network
  (a loopback device that is down), no view of the host's processes, no way to signal them;
- a file system of read-only binds only: /usr and the /lib* directories, the Python interpreter's
  prefix and this environment's site-packages, the caller's data (`data_dir`, at `DATA`) and input
  files (`files`, at `INPUT`); a fresh /proc and /dev; a size-capped tmpfs scratch directory
  (`SCRATCH`: the working directory, HOME and TMPDIR) is the only writable place, and it vanishes
  with the sandbox. Nothing else of the host (its /etc beyond the loader's cache, /root, /home, /tmp,
  the repository, the caller's other files) exists;
- an unprivileged identity in a user namespace without capabilities, in which creating further user
  namespaces is disabled. Run by root, the code also gets a fresh uid of its own (no groups,
  no_new_privs): bwrap sets up the namespaces and binds as root, `setpriv` drops to the fresh uid, and
  a second, unprivileged bwrap adds the user namespace (root's own would keep the code uid 0 to the
  kernel, which exempts it from RLIMIT_NPROC). Run by another user, the code keeps that user's uid;
- a cleared environment (nothing of the parent's: tokens, keys, proxies) and a new session;
- rlimits set by `prlimit` just before Python starts: CPU seconds, address space, size of any file
  written (stdout and stderr included), open files, no core dumps, and processes (threads count)
  — enforced by the kernel because the uid is not root;
- a wall-clock timeout that kills the whole tree: `bwrap` is killed, `--die-with-parent` kills the
  PID namespace's init, and the kernel then kills every process in the namespace, including those
  that called `setsid` or double-forked.

`isolation()` says what held when this machine was probed (once per process).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

from flipmoe.errors import FlipmoeInputError

__all__ = ["DATA", "INPUT", "SCRATCH", "Isolation", "SandboxResult", "SandboxUnavailableError", "isolation",
           "run_code"]

SCRATCH = "/sandbox/scratch"
"""The code's working directory, HOME and TMPDIR: a tmpfs, the only writable place."""
INPUT = "/sandbox/input"
"""Where `run_code(files=...)` puts its input files (read-only)."""
DATA = "/sandbox/data"
"""Where `run_code(data_dir=...)` shows the caller's data directory (read-only)."""

_EXIT_MEMORY = 75
"""Exit status the child's bootstrap uses when the code ran out of memory (MemoryError)."""
_MAX_OPEN_FILES = 256
_FRESH_UIDS = (1 << 30, 1 << 24)
"""(first, count) of the uids a run by root picks from: far above any account, one per run, so that
RLIMIT_NPROC counts only that run's processes."""
_INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) and util-linux (prlimit, setpriv)"

# Runs first in the sandboxed interpreter (`-I -S`: no environment, no site module); its arguments are the
# site-packages directories to import from. The code comes on stdin.
_BOOTSTRAP = r"""
import os, sys
sys.path.extend(sys.argv[1:])
sys.dont_write_bytecode = True
_code = sys.stdin.read()
# stdin becomes /dev/null on fd 0: the code holds no descriptor beyond 0, 1 and 2.
_null = os.open("/dev/null", os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
sys.stdin = open(0, closefd=False)
try:
    exec(compile(_code, "<sandbox>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
except MemoryError:
    sys.stderr.write("MemoryError: the code ran out of memory (sandbox memory limit)\n")
    sys.stderr.flush()
    os._exit(EXIT_MEMORY)
""".replace("EXIT_MEMORY", str(_EXIT_MEMORY))


class SandboxUnavailableError(RuntimeError):
    """The sandbox cannot run here (no bubblewrap, or it cannot create namespaces): no code was run."""


@dataclass(frozen=True, kw_only=True)
class Isolation:
    """How the sandbox isolates code on this machine."""

    namespaces: tuple[str, ...]
    """Linux namespaces each run gets ('mount', 'pid', 'net', 'ipc', 'uts', 'cgroup', 'user')."""
    fresh_uid: bool
    """True (run by root): each run gets an unprivileged uid of its own; False: the caller's uid."""
    flags: tuple[str, ...]
    """Namespace and privilege flags of the bwrap that builds the sandbox."""
    inner_flags: tuple[str, ...] = ()
    """Flags of a second bwrap run under the fresh uid inside the first, for the user namespace; none
    where the kernel refuses unprivileged user namespaces."""

    def describe(self) -> str:
        who = "a fresh unprivileged uid" if self.fresh_uid else "the caller's uid"
        return f"bubblewrap: {', '.join(self.namespaces)} namespaces; {who}; no capabilities"


@dataclass(frozen=True, kw_only=True)
class SandboxResult:
    """What a sandboxed run produced."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The process's exit status; negative: killed by that signal; None: never started."""
    timed_out: bool
    """Killed, with everything it started, because it ran past `timeout_s` of wall-clock time."""
    killed_reason: str | None
    """Why the run was stopped ('timeout', 'cpu limit', 'memory limit', 'file size limit', 'signal ...'),
    or None when the code ended on its own."""
    duration_s: float
    isolation: str = ""
    """`Isolation.describe()` of the sandbox it ran in."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None


def run_code(code: str, *, timeout_s: float = 10.0, memory_mb: int = 1024, cpu_s: float | None = None,
             files: Mapping[str, str | bytes] | None = None, data_dir: str | Path | None = None,
             max_file_mb: int = 16, scratch_mb: int = 64, max_processes: int = 64,
             max_output_chars: int = 100_000) -> SandboxResult:
    """Run Python `code` in the sandbox (see the module docstring) and return its output.

    `files` are written under `INPUT` (relative names, no '..'); `data_dir`, a directory the code may
    read, is shown at `DATA` (run by root, the code's uid is not the owner: the directory must be
    readable by others). `cpu_s` defaults to `timeout_s`. Every file the code writes, stdout and stderr
    included, is limited to `max_file_mb`, the scratch directory to `scratch_mb` in all, processes and
    threads to `max_processes`; the returned outputs to `max_output_chars` characters each.
    Raises `SandboxUnavailableError` (and runs nothing) where bubblewrap cannot isolate the code.
    """
    limits = {"timeout_s": timeout_s, "memory_mb": memory_mb, "max_file_mb": max_file_mb, "scratch_mb": scratch_mb,
              "max_processes": max_processes, "cpu_s": 1 if cpu_s is None else cpu_s}
    if any(value <= 0 for value in limits.values()):
        raise FlipmoeInputError("sandbox limits must be positive",
                                hint=", ".join(f"{k}={v}" for k, v in limits.items() if v <= 0))
    data = _data_dir(data_dir)
    names = _input_names(files or {})
    sandbox = isolation()
    cpu_limit = max(1, int(round(cpu_s if cpu_s is not None else timeout_s)))
    work = Path(tempfile.mkdtemp(prefix="flipmoe-sandbox-"))
    start = time.monotonic()
    try:
        inputs = work / "input"
        _write_inputs(inputs, names, files or {})
        rlimits = _rlimits(memory_bytes=memory_mb * 2**20, cpu_s=cpu_limit, file_bytes=max_file_mb * 2**20,
                           processes=max_processes)
        command = _command(sandbox, inputs=inputs, data=data, scratch_bytes=scratch_mb * 2**20,
                           rlimits=rlimits, python_args=["-c", _BOOTSTRAP, *_site_dirs()])
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                       env={"PATH": "/usr/bin:/bin"}, start_new_session=True, close_fds=True)
            timed_out = _feed_and_wait(process, code, timeout_s)
        duration = time.monotonic() - start
        stdout = _read(work / "stdout", max_output_chars)
        stderr = _read(work / "stderr", max_output_chars)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    exit_code = _exit_status(process.returncode)
    return SandboxResult(stdout=stdout, stderr=stderr, exit_code=exit_code, timed_out=timed_out,
                         killed_reason=_killed_reason(exit_code, stderr, timed_out=timed_out, memory_mb=memory_mb,
                                                      cpu_s=cpu_limit, max_file_mb=max_file_mb),
                         duration_s=duration, isolation=sandbox.describe())


def isolation() -> Isolation:
    """The isolation this machine gives (probed once per process by a trial run under bubblewrap).

    Raises `SandboxUnavailableError`, naming what is missing, where bubblewrap cannot run the sandbox.
    """
    found = _probe()
    if isinstance(found, str):
        raise SandboxUnavailableError(found)
    return found


# ------------------------------------------------------------------------------------------ probing


@lru_cache(maxsize=1)
def _probe() -> Isolation | str:
    """The first flag set, strongest first, under which bubblewrap runs the interpreter; or why none does."""
    missing = [tool for tool in _tools() if _tools()[tool] is None]
    if missing:
        return f"the sandbox needs {' and '.join(missing)}, not found on PATH: {_INSTALL_HINT}"
    failures = []
    for candidate in _candidates():
        command = _command(candidate, inputs=None, data=None, scratch_bytes=2**20,
                           rlimits=_rlimits(memory_bytes=2**30, cpu_s=10, file_bytes=2**20, processes=16),
                           python_args=["-c", "pass"])
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                                  env={"PATH": "/usr/bin:/bin"})
        except (OSError, subprocess.SubprocessError) as err:
            failures.append(f"{type(err).__name__}: {err}")
            continue
        if done.returncode == 0:
            return candidate
        failures.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return (f"bubblewrap (bwrap) cannot create the sandbox's namespaces on this machine "
            f"({'; '.join(dict.fromkeys(failures))}): code is not run without it")


def _candidates() -> list[Isolation]:
    """Flag sets, strongest first."""
    flags = ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
    namespaces = ("mount", "pid", "net", "ipc", "uts", "cgroup")
    user = ("--unshare-user", "--disable-userns", "--cap-drop", "ALL")
    if os.geteuid() == 0:
        return [Isolation(namespaces=(*namespaces, "user"), fresh_uid=True, flags=flags, inner_flags=user),
                Isolation(namespaces=namespaces, fresh_uid=True, flags=flags)]
    return [Isolation(namespaces=(*namespaces, "user"), fresh_uid=False, flags=(*flags, *user)),
            Isolation(namespaces=(*namespaces, "user"), fresh_uid=False, flags=(*flags, "--unshare-user", "--cap-drop",
                                                                                  "ALL"))]


@lru_cache(maxsize=1)
def _tools() -> dict[str, str | None]:
    tools = {"bubblewrap (bwrap)": shutil.which("bwrap"), "prlimit": shutil.which("prlimit")}
    if os.geteuid() == 0:
        tools["setpriv"] = shutil.which("setpriv")
    return tools


# ------------------------------------------------------------------------------------ the command


def _command(sandbox: Isolation, *, inputs: Path | None, data: Path | None, scratch_bytes: int,
             rlimits: list[str], python_args: list[str]) -> list[str]:
    tools = _tools()
    bwrap, prlimit = tools["bubblewrap (bwrap)"], tools["prlimit"]
    assert bwrap is not None and prlimit is not None
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    args = [bwrap, *sandbox.flags, "--die-with-parent", "--new-session", "--hostname", "sandbox",
            *_system_binds(), *_binds([Path(sys.base_prefix).resolve(), *map(Path, _site_dirs())]),
            "--proc", "/proc", "--dev", "/dev", "--perms", "0755", "--dir", "/sandbox",
            "--size", str(scratch_bytes), "--perms", "01777", "--tmpfs", SCRATCH]
    if inputs is not None:
        args += ["--ro-bind", str(inputs), INPUT]
    if data is not None:
        args += ["--ro-bind", str(data), DATA]
    args += ["--chdir", SCRATCH, "--clearenv", *_environment()]
    drop: list[str] = []
    if sandbox.fresh_uid:
        setpriv = tools["setpriv"]
        assert setpriv is not None
        uid = str(_FRESH_UIDS[0] + secrets.randbelow(_FRESH_UIDS[1]))
        drop = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    if sandbox.inner_flags:
        # The inner bwrap stages its root on /tmp; `--dev-bind` keeps /dev/null and friends usable.
        args += ["--perms", "0755", "--dir", "/tmp"]
        drop += [bwrap, *sandbox.inner_flags, "--die-with-parent", "--dev-bind", "/", "/", "--chdir", SCRATCH, "--"]
    return [*args, "--", *drop, prlimit, *rlimits, "--", python, "-I", "-S", "-B", "-X", "utf8", *python_args]


def _rlimits(*, memory_bytes: int, cpu_s: int, file_bytes: int, processes: int) -> list[str]:
    # The soft CPU limit sends SIGXCPU; the hard one, a second later, SIGKILL if that was ignored.
    # The limits are set after the uid change: for root, RLIMIT_NPROC is not enforced.
    return [f"--as={memory_bytes}", f"--cpu={cpu_s}:{cpu_s + 1}", f"--fsize={file_bytes}",
            f"--nofile={_MAX_OPEN_FILES}", "--core=0", f"--nproc={processes}"]


def _system_binds() -> list[str]:
    """/usr read-only, and /bin, /sbin, /lib* as they are on the host (symlinks into /usr, or directories)."""
    args = ["--ro-bind", "/usr", "/usr", "--perms", "0755", "--dir", "/etc",
            "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    return args


def _binds(paths: list[Path]) -> list[str]:
    """Read-only binds of `paths` at the same place, with their missing parents created world-readable
    (bwrap would make them 0700, which the unprivileged uid could not cross)."""
    covered = [Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib64")]
    created: set[Path] = set()
    args: list[str] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not path.is_dir() or any(path == c or c in path.parents for c in covered):
            continue
        for parent in reversed(path.parents[:-1]):
            if parent not in created:
                args += ["--perms", "0755", "--dir", str(parent)]
                created.add(parent)
        args += ["--ro-bind", str(path), str(path)]
        covered.append(path)
    return args


@lru_cache(maxsize=1)
def _site_dirs() -> tuple[str, ...]:
    """This environment's site-packages (the venv's, else the interpreter's), for the code's imports."""
    paths = sysconfig.get_paths()
    return tuple(dict.fromkeys(str(Path(paths[key]).resolve()) for key in ("purelib", "platlib")
                               if Path(paths[key]).is_dir()))


def _environment() -> list[str]:
    """A minimal environment: nothing of the parent's (credentials, proxies, cluster addresses)."""
    variables = {"PATH": "/usr/bin:/bin", "HOME": SCRATCH, "TMPDIR": SCRATCH, "LANG": "C.UTF-8", "TZ": "UTC",
                 "MPLBACKEND": "Agg", "MPLCONFIGDIR": SCRATCH, "ARROW_DEFAULT_MEMORY_POOL": "system",
                 # One thread per pool: threads count against the process limit.
                 **{name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                           "NUMEXPR_NUM_THREADS")}}
    return [arg for name, value in variables.items() for arg in ("--setenv", name, value)]


# ------------------------------------------------------------------------------------------ running


def _data_dir(data_dir: str | Path | None) -> Path | None:
    if data_dir is None:
        return None
    path = Path(data_dir).resolve()
    if not path.is_dir():
        raise FlipmoeInputError("the sandbox's data directory does not exist or is not a directory", path=data_dir)
    return path


def _input_names(files: Mapping[str, str | bytes]) -> dict[str, PurePosixPath]:
    names = {}
    for name in files:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise FlipmoeInputError(f"sandbox input file name {name!r} must be relative and stay in the "
                                    "input directory")
        names[name] = relative
    return names


def _write_inputs(inputs: Path, names: dict[str, PurePosixPath], files: Mapping[str, str | bytes]) -> None:
    """The input files in a directory the sandbox's uid can read (it is bound read-only)."""
    inputs.mkdir()
    inputs.chmod(0o755)
    for name, relative in names.items():
        target = inputs.joinpath(*relative.parts)
        for parent in reversed(relative.parents[:-1]):
            (inputs / parent).mkdir(exist_ok=True)
            (inputs / parent).chmod(0o755)
        content = files[name]
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
        target.chmod(0o644)


def _feed_and_wait(process: subprocess.Popen[bytes], code: str, timeout_s: float) -> bool:
    """Send the code, wait; past `timeout_s`, kill bwrap and with it the sandbox's whole PID namespace.
    True when it timed out."""
    try:
        # communicate() writes the code under the same deadline: a child that never reads it cannot
        # hold the caller past `timeout_s` (a plain write blocks once the pipe's buffer is full).
        process.communicate(input=code.encode("utf-8"), timeout=timeout_s)
        return False
    except BrokenPipeError:  # the child died before reading its code; its status says why
        process.wait()
        return False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        return True


def _read(path: Path, limit: int) -> str:
    with open(path, "rb") as handle:
        data = handle.read(limit * 4 + 4)
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit:
        return text[:limit] + f"\n[... output truncated at {limit} characters]"
    return text


def _exit_status(returncode: int) -> int:
    """The code's exit status, negative for a signal: bwrap reports a command killed by signal N as 128 + N."""
    if 128 < returncode <= 128 + signal.SIGRTMAX:
        return -(returncode - 128)
    return returncode


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
    signal_number = -exit_code
    if signal_number == signal.SIGXCPU:
        return f"cpu limit ({cpu_s} s)"
    if signal_number == signal.SIGKILL:
        return f"killed by SIGKILL (the cpu hard limit of {cpu_s + 1} s, or the kernel out of memory)"
    if signal_number == signal.SIGXFSZ:
        return f"file size limit ({max_file_mb} MiB)"
    try:
        return f"signal {signal.Signals(signal_number).name}"
    except ValueError:  # a real-time signal without a name
        return f"signal {signal_number}"
