"""Load test of a real `flipmoe serve` process (loopback, a random free port, a bearer token).

Unlike `bench_serve.py`, which drives Ray Serve from inside the benchmark, this starts the command an
operator runs, as its own process group, and measures it from outside:

1. time to ready: process start until `/healthz` answers "ok" and the command prints that it is serving;
2. `/healthz` latency alone (the baseline), then during `--duration` seconds in which `--clients`
   clients upload incident archives just under the request-body limit and `--clients` clients ask for
   generations (chat completions and one expert, alternately); every answer is tallied by status;
3. peak RSS (the kernel's high-water mark) of the HTTP ingress replica and of Ray Serve's HTTP proxy;
4. `--jobs` more incident jobs, then SIGKILL of the whole server while it works through them, a restart
   on the same data directory, the time until every job that was running is running again (or
   finished), and the accepted jobs that never reach done or failed (goal 0).

    python benchmarks/bench_serve_load.py --bundle flipmoe/bundles/nano --clients 4 --duration 30

Heavy on a small machine: other processes sharing the cores shift every figure.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from _net import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "bench-serve-load-token"
# Ray names each worker process after the actor it hosts.
INGRESS_TITLE, PROXY_TITLE = "ray::ServeReplica:flipmoe:Ingress", "ray::ProxyActor"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (`q` in [0, 100]) of a non-empty list."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100), at least the first value
    return ordered[int(rank) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(ROOT / "flipmoe" / "bundles" / "nano"), help="model bundle")
    parser.add_argument("--clients", type=int, default=4, help="uploading clients, and as many generating ones")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of /healthz probes before the load")
    parser.add_argument("--jobs", type=int, default=6, help="incident jobs submitted before the SIGKILL")
    parser.add_argument("--settle", type=float, default=900.0, help="seconds to wait for every job to finish")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--data-dir", help="server data directory (default: a temporary one, removed at the end)")
    args = parser.parse_args()

    from flipmoe.serve.app import ServeSettings

    work = Path(tempfile.mkdtemp(prefix="bench-serve-load-"))
    data_dir = Path(args.data_dir).resolve() if args.data_dir else work / "data"
    limit = ServeSettings().max_request_bytes
    small, large = _archives(work, limit)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"{os.cpu_count()} CPUs, shared: other processes on them shift every figure. Server on {url}, "
          f"bundle {args.bundle}; {args.clients} uploading + {args.clients} generating clients for "
          f"{args.duration:g} s; archives of {len(large) / 2**20:.2f} MiB (limit {limit / 2**20:.0f} MiB)")
    server = Server(port=port, bundle=args.bundle, data_dir=data_dir, log=work / "server.log")
    try:
        _run(args, server, url, small, large, data_dir)
    finally:
        server.kill()
        print(f"server log: {server.log}")
        if not args.data_dir:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)


def _run(args: argparse.Namespace, server: Server, url: str, small: bytes, large: bytes, data_dir: Path) -> None:
    server.start()
    ready = server.wait_ready(url, args.ready_timeout)
    print(f"\ntime to ready: /healthz ok after {ready['healthz']:.1f} s, \"serving\" printed after "
          f"{ready['serving']:.1f} s")

    idle = _probe_healthz(url, args.idle, threading.Event())
    idle_hwm = {name: _hwm(pids) for name, pids in server.actor_pids().items()}
    tally = Tally()
    accepted: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_upload_loop, args=(url, large, stop, tally, accepted))
               for _ in range(args.clients)]
    threads += [threading.Thread(target=_generate_loop, args=(url, i, stop, tally)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    timer = threading.Timer(args.duration, stop.set)
    timer.start()
    try:
        loaded = _probe_healthz(url, args.duration, stop)
    finally:
        stop.set()
        timer.cancel()
        for thread in threads:
            thread.join()
    load_hwm = {name: _hwm(pids) for name, pids in server.actor_pids().items()}

    print(f"\n{'GET /healthz':<40}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'no answer':>11}")
    _latency_row("idle (baseline)", idle)
    _latency_row(f"under load ({args.clients} upload + {args.clients} generate)", loaded)
    print(f"\n{'requests under load':<40}{'n':>6}{'2xx':>6}{'4xx':>6}{'429':>6}{'5xx':>6}{'no answer':>11}"
          f"{'p50 s':>8}")
    for kind in ("upload", "generate"):
        tally.row(kind)
    print(f"\n{'peak RSS (VmHWM)':<40}{'after idle':>12}{'after load':>12}")
    for name in idle_hwm:
        print(f"{name:<40}{_mib(idle_hwm[name]):>12}{_mib(load_hwm.get(name)):>12}")

    _kill_and_resume(args, server, url, small, accepted, data_dir)


def _kill_and_resume(args: argparse.Namespace, server: Server, url: str, small: bytes, accepted: list[str],
                     data_dir: Path) -> None:
    with httpx.Client(timeout=60, headers=_auth()) as client:
        for _ in range(args.jobs):
            answer = client.post(url + "/v1/incidents", content=small, headers={"content-type": "application/gzip"})
            if answer.status_code == 202:
                accepted.append(answer.json()["id"])
            else:
                print(f"  job submission answered {answer.status_code}: {answer.text[:200]}")
    db = data_dir / "jobs.sqlite"
    deadline = time.monotonic() + 60
    while not _jobs(db, "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    escaped = server.kill()
    at_kill = _jobs(db)
    running = {job_id: attempts for job_id, (state, attempts) in at_kill.items() if state == "running"}
    states = Counter(state for state, _ in at_kill.values())
    print(f"\nSIGKILL of the server process group with {len(accepted)} accepted jobs: "
          f"{dict(sorted(states.items()))}")
    if escaped:
        print(f"  {len(escaped)} of its processes had left the group and were killed by pid: "
              f"{', '.join(sorted(set(escaped)))}")

    server.start()
    started = server.started
    resumed_at = None
    ready_at = None
    deadline = started + args.ready_timeout
    while time.monotonic() < deadline and (resumed_at is None or ready_at is None):
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"the restarted server exited with {server.process.returncode}; see {server.log}")
        if ready_at is None and _healthz_ok(url) and server.serving.is_set():
            ready_at = time.monotonic()
        now = _jobs(db)
        if resumed_at is None and all(now[j][0] in ("done", "failed") or now[j][1] > a for j, a in running.items()):
            resumed_at = time.monotonic()
        time.sleep(0.1)
    if ready_at is None:
        raise RuntimeError(f"the restarted server was not ready in {args.ready_timeout:g} s; see {server.log}")
    resumed = (f"{resumed_at - started:.1f} s after the restart, {resumed_at - ready_at:+.1f} s from ready"
               if resumed_at else "never")
    print(f"restart: ready after {ready_at - started:.1f} s; the {len(running)} jobs running at the kill were "
          f"running again or finished {resumed} (goal <= 10 s)")

    lost, unfinished, took = _settle(db, accepted, args.settle)
    final = _jobs(db)
    done = sum(final.get(j, ("", 0))[0] == "done" for j in accepted)
    failed = sum(final.get(j, ("", 0))[0] == "failed" for j in accepted)
    print(f"jobs after the restart ({took:.0f} s): {len(accepted)} accepted, {done} done, {failed} failed, "
          f"{len(lost)} lost (not in the job store; goal 0), {len(unfinished)} not finished within "
          f"{args.settle:g} s")
    for job_id in [j for j in accepted if final.get(j, ("", 0))[0] == "failed"][:5]:
        print(f"  failed {job_id}: {_error(db, job_id)}")


def _settle(db: Path, accepted: list[str], seconds: float) -> tuple[list[str], list[str], float]:
    """Waits until every accepted job is done or failed; returns the lost ones, the unfinished ones, the wait."""
    started = time.monotonic()
    report = started + 60
    while True:
        jobs = _jobs(db)
        lost = [j for j in accepted if j not in jobs]
        unfinished = [j for j in accepted if j in jobs and jobs[j][0] not in ("done", "failed")]
        if not unfinished or time.monotonic() - started > seconds:
            return lost, unfinished, time.monotonic() - started
        if time.monotonic() > report:
            print(f"  ... {len(unfinished)} jobs still queued or running")
            report += 60
        time.sleep(1.0)


class Server:
    """`flipmoe serve` as its own process group; `kill` leaves nothing of it behind."""

    def __init__(self, *, port: int, bundle: str, data_dir: Path, log: Path) -> None:
        self.port, self.bundle, self.data_dir, self.log = port, bundle, data_dir, log
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.serving = threading.Event()

    def start(self) -> None:
        command = [sys.executable, "-m", "flipmoe", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--bundle", self.bundle, "--data-dir", str(self.data_dir), "--token", TOKEN, "--auth", "on"]
        self.serving.clear()
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        threading.Thread(target=self._follow, args=(self.process,), daemon=True).start()

    def _follow(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with self.log.open("ab") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if b"flipmoe serving on" in line:
                    self.serving.set()

    def wait_ready(self, url: str, timeout: float) -> dict[str, float]:
        times: dict[str, float] = {}
        while time.monotonic() - self.started < timeout:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"flipmoe serve exited with {self.process.returncode}; see {self.log}")
            if "healthz" not in times and _healthz_ok(url):
                times["healthz"] = time.monotonic() - self.started
            if "serving" not in times and self.serving.is_set():
                times["serving"] = time.monotonic() - self.started
            if len(times) == 2:
                return times
            time.sleep(0.1)
        raise RuntimeError(f"flipmoe serve was not ready in {timeout:g} s; see {self.log}")

    def actor_pids(self) -> dict[str, list[int]]:
        """The server's ingress replica and HTTP proxy processes, found among its descendants."""
        titles = {"ingress replica": INGRESS_TITLE, "Ray Serve HTTP proxy": PROXY_TITLE}
        found: dict[str, list[int]] = {name: [] for name in titles}
        for pid in self._descendants():
            for name, title in titles.items():
                if _cmdline(pid).startswith(title):
                    found[name].append(pid)
        return found

    def kill(self) -> list[str]:
        """SIGKILL the process group, then any descendant that left it; returns the names of those."""
        if self.process is None:
            return []
        pgid = self.process.pid
        descendants = self._descendants()
        outside = [pid for pid in descendants if _pgid(pid) not in (pgid, None)]
        names = [Path(_cmdline(pid).split(" ")[0]).name for pid in outside]
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in outside:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in descendants) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.process = None
        return names

    def _descendants(self) -> list[int]:
        if self.process is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                parent = _ppid(int(entry.name))
                if parent is not None:
                    children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found


class Tally:
    """Answers by kind of request: status codes, requests without an answer, latencies of the 2xx ones."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: dict[str, Counter[str]] = {}
        self.latency: dict[str, list[float]] = {}

    def add(self, kind: str, status: int | None, seconds: float) -> None:
        bucket = ("no answer" if status is None else "2xx" if status < 300 else "429" if status == 429
                  else "4xx" if status < 500 else "5xx")
        with self.lock:
            self.status.setdefault(kind, Counter())[bucket] += 1
            if bucket == "2xx":
                self.latency.setdefault(kind, []).append(seconds)

    def row(self, kind: str) -> None:
        counts = self.status.get(kind, Counter())
        latencies = self.latency.get(kind, [])
        p50 = f"{percentile(latencies, 50):.2f}" if latencies else "-"
        print(f"{kind:<40}{counts.total():>6}{counts['2xx']:>6}{counts['4xx']:>6}{counts['429']:>6}"
              f"{counts['5xx']:>6}{counts['no answer']:>11}{p50:>8}")


def _upload_loop(url: str, archive: bytes, stop: threading.Event, tally: Tally, accepted: list[str]) -> None:
    with httpx.Client(timeout=120, headers=_auth()) as client:
        while not stop.is_set():
            status, seconds, answer = _timed(lambda: client.post(
                url + "/v1/incidents", content=archive, headers={"content-type": "application/gzip"}))
            tally.add("upload", status, seconds)
            if answer is not None and status == 202:
                accepted.append(answer.json()["id"])


def _generate_loop(url: str, index: int, stop: threading.Event, tally: Tally) -> None:
    chat = {"model": "flipmoe", "max_tokens": 16,
            "messages": [{"role": "user", "content": "cpu_usage_percent 12.0 13.1 95.2 96.0"}]}
    expert = {"prompt": "ERROR connection to db-1 refused after 30ms", "max_tokens": 16}
    with httpx.Client(timeout=180, headers=_auth()) as client:
        turn = index
        while not stop.is_set():
            if turn % 2:
                status, seconds, _ = _timed(lambda: client.post(url + "/v1/chat/completions", json=chat))
            else:
                status, seconds, _ = _timed(lambda: client.post(url + "/v1/experts/logs/generate", json=expert))
            tally.add("generate", status, seconds)
            turn += 1


def _timed(call: Callable[[], httpx.Response]) -> tuple[int | None, float, httpx.Response | None]:
    started = time.perf_counter()
    try:
        answer = call()
    except httpx.HTTPError:
        return None, time.perf_counter() - started, None
    return answer.status_code, time.perf_counter() - started, answer


def _probe_healthz(url: str, seconds: float, stop: threading.Event) -> tuple[list[float], int]:
    """`/healthz` every 100 ms for `seconds` (or until `stop`): latencies of the answers, and probes unanswered."""
    latencies, unanswered = [], 0
    until = time.monotonic() + seconds
    with httpx.Client(timeout=30, headers=_auth()) as client:
        while time.monotonic() < until and not stop.is_set():
            status, took, _ = _timed(lambda: client.get(url + "/healthz"))
            if status == 200:
                latencies.append(took)
            else:
                unanswered += 1
            time.sleep(0.1)
    return latencies, unanswered


def _latency_row(name: str, probes: tuple[list[float], int]) -> None:
    latencies, unanswered = probes
    ms = [x * 1000 for x in latencies]
    if not ms:
        print(f"{name:<40}{0:>6}{'-':>9}{'-':>9}{'-':>9}{unanswered:>11}")
        return
    print(f"{name:<40}{len(ms):>6}{percentile(ms, 50):>9.1f}{percentile(ms, 99):>9.1f}{max(ms):>9.1f}"
          f"{unanswered:>11}")


def _healthz_ok(url: str) -> bool:
    try:
        answer = httpx.get(url + "/healthz", timeout=5, headers=_auth())
        return answer.status_code == 200 and answer.json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        return False


def _auth() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}


def _jobs(db: Path, state: str | None = None) -> dict[str, tuple[str, int]]:
    """Job id -> (state, attempts), read from the server's job store (it may be dead or starting)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=30) as connection:
        rows = connection.execute("SELECT id, state, attempts FROM jobs").fetchall()
    return {job_id: (s, attempts) for job_id, s, attempts in rows if state is None or s == state}


def _error(db: Path, job_id: str) -> str:
    with sqlite3.connect(db, timeout=30) as connection:
        row = connection.execute("SELECT error FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return str(row[0] if row else "")


def _archives(work: Path, limit: int) -> tuple[bytes, bytes]:
    """A small incident archive, and the same incident with a heap dump that fills it to just under `limit`."""
    from data_pipeline.chaos import generate_incident
    from flipmoe.telemetry import write_incident

    incident = write_incident(generate_incident("webshop", seed=900_001, window_minutes=10)[0], work / "incident")
    small = _tar_gz(incident, b"")
    # Random bytes do not compress: the archive grows by the padding plus tar and gzip framing (< 0.1%).
    pad = int((limit - len(small)) * 0.995)
    large = _tar_gz(incident, os.urandom(pad))
    if len(large) >= limit:
        raise RuntimeError(f"the padded archive ({len(large)} bytes) is not under the limit ({limit})")
    return small, large


def _tar_gz(incident: Path, attachment: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        archive.add(incident, arcname=incident.name)
        if attachment:
            info = tarfile.TarInfo(f"{incident.name}/attachments/heap.bin")
            info.size = len(attachment)
            archive.addfile(info, io.BytesIO(attachment))
    return buffer.getvalue()


def _hwm(pids: list[int]) -> int | None:
    """The largest peak resident set (VmHWM, bytes) among `pids`."""
    peaks = [_status_field(pid, "VmHWM") for pid in pids]
    known = [p for p in peaks if p is not None]
    return max(known) if known else None


def _status_field(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _ppid(pid: int) -> int | None:
    try:
        # The command name may hold spaces and parentheses; the fields after its last ')' do not.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


if __name__ == "__main__":
    main()
