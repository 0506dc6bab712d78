"""Load test of `flipmoe serve` on a local Ray Serve (loopback only, bounded in requests and time).

Starts the flipmoe application and, in the same Ray, a trivial Serve endpoint (`/trivial`, returns a
constant) as the baseline for Serve's own overhead. Drives N concurrent clients for T seconds per
endpoint and prints throughput, p50/p95/p99 latency and errors side by side. With `--kill`, kills the
Director replica in the middle of an incident load and shows that every accepted job still completes
or is reported failed with a reason.

    python benchmarks/bench_serve.py --bundle build/bundle-nano --clients 4 --seconds 15 --kill
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _net import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="model bundle (default: none; model endpoints are skipped)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    parser.add_argument("--max-requests", type=int, default=2000, help="per endpoint")
    parser.add_argument("--incidents", type=int, default=6, help="incident jobs submitted in the incident load")
    parser.add_argument("--kill", action="store_true", help="kill the Director replica during the incident load")
    args = parser.parse_args()

    import ray
    from ray import serve

    from data_pipeline.chaos import generate_incident
    from flipmoe.serve.app import ServeSettings
    from flipmoe.serve.deployments import build_application
    from flipmoe.telemetry import write_incident

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment
    class Trivial:
        def __call__(self, request: object) -> str:
            return "ok"

    serve.run(Trivial.bind(), name="trivial", route_prefix="/trivial")
    settings = ServeSettings(data_dir=work / "data", workers=2)
    bundle = Path(args.bundle) if args.bundle else None
    serve.run(build_application(settings, bundle=bundle), name="flipmoe", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    print(f"serving on {url}; {args.clients} clients, {args.seconds:g} s per endpoint; bundle {bundle or 'none'}")

    def get(path: str) -> Callable[[httpx.Client], httpx.Response]:
        return lambda client: client.get(url + path)

    def post(path: str, body: dict) -> Callable[[httpx.Client], httpx.Response]:  # type: ignore[type-arg]
        return lambda client: client.post(url + path, json=body)

    loads: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = [
        ("GET /trivial (baseline)", get("/trivial")),
        ("GET /healthz", get("/healthz")),
    ]
    if bundle:
        loads += [
            ("POST /v1/route", post("/v1/route", {"prompt": "ERROR connection to db-1 refused after 30ms"})),
            ("POST /v1/experts/logs/generate",
             post("/v1/experts/logs/generate", {"prompt": "ERROR connection refused", "max_tokens": 16})),
            ("POST /v1/chat/completions", post("/v1/chat/completions", {
                "model": "flipmoe", "max_tokens": 16,
                "messages": [{"role": "user", "content": "cpu_usage_percent 12.0 13.1 95.2 96.0"}]})),
        ]
    print(f"\n{'endpoint':<34}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'ok':>7}{'errors':>8}")
    for name, call in loads:
        _warm(call)
        latencies, errors = _drive(call, clients=args.clients, seconds=args.seconds, max_requests=args.max_requests)
        _row(name, latencies, errors, args.seconds)

    # Incident jobs: submission latency, then time to a report, optionally with the Director killed.
    incident_dirs = [write_incident(generate_incident("webshop", seed=700_000 + i, window_minutes=15)[0],
                                    work / "incidents" / f"i{i}") for i in range(args.incidents)]
    archives = [_tar(d) for d in incident_dirs]
    submitted: list[tuple[str, float]] = []
    submit_latency: list[float] = []
    with httpx.Client(timeout=120) as client:
        for archive in archives:
            started = time.perf_counter()
            answer = client.post(url + "/v1/incidents", content=archive, headers={"content-type": "application/gzip"})
            submit_latency.append(time.perf_counter() - started)
            answer.raise_for_status()
            submitted.append((answer.json()["id"], time.perf_counter()))
        _row("POST /v1/incidents (accept)", submit_latency, 0, sum(submit_latency))
        if args.kill:
            time.sleep(1.0)
            _kill_director()
            print("killed the Director replica during the incident load")
        finished: dict[str, tuple[str, float, str]] = {}
        deadline = time.perf_counter() + 600
        while len(finished) < len(submitted) and time.perf_counter() < deadline:
            for job_id, started in submitted:
                if job_id in finished:
                    continue
                body = client.get(f"{url}/v1/incidents/{job_id}").json()
                if body["state"] in ("done", "failed"):
                    finished[job_id] = (body["state"], time.perf_counter() - started, body.get("error") or "")
            time.sleep(0.5)
    done = [t for state, t, _ in finished.values() if state == "done"]
    failed = [(job, e) for job, (state, _, e) in finished.items() if state == "failed"]
    lost = len(submitted) - len(finished)
    print(f"\nincident jobs: {len(submitted)} accepted, {len(done)} done, {len(failed)} failed with a reason, "
          f"{lost} unfinished after 600 s")
    if done:
        print(f"  time to report: p50 {statistics.median(done):.1f} s, max {max(done):.1f} s "
              "(jobs queue behind one Director replica)")
    for job_id, error in failed:
        print(f"  failed {job_id}: {error}")
    serve.shutdown()
    ray.shutdown()


def _drive(call: Callable[[httpx.Client], httpx.Response], *, clients: int, seconds: float,
           max_requests: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client_loop() -> None:
        nonlocal errors
        with httpx.Client(timeout=60) as client:
            while time.perf_counter() < stop_at:
                with lock:
                    if len(latencies) + errors >= max_requests:
                        return
                started = time.perf_counter()
                try:
                    ok = call(client).status_code < 400
                except httpx.HTTPError:
                    ok = False
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def _warm(call: Callable[[httpx.Client], httpx.Response]) -> None:
    with httpx.Client(timeout=120) as client:
        for _ in range(3):
            call(client)


def _row(name: str, latencies: list[float], errors: int, seconds: float) -> None:
    if not latencies:
        print(f"{name:<34}{'-':>8}{'-':>9}{'-':>9}{'-':>9}{0:>7}{errors:>8}")
        return
    ms = sorted(x * 1000 for x in latencies)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))]

    print(f"{name:<34}{len(ms) / seconds:>8.1f}{pct(0.5):>9.1f}{pct(0.95):>9.1f}{pct(0.99):>9.1f}{len(ms):>7}"
          f"{errors:>8}")


def _kill_director() -> None:
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if "#Director#" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=False)
            return
    raise RuntimeError("no Director replica found")


def _tar(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
