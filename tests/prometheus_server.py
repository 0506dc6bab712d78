"""A real Prometheus server holding known, backfilled series, for tests that query PromQL.

A test module starts one server for its tests (tests using it are skipped, with the reason, when
the binaries are missing):

    from prometheus_server import PrometheusServer, demo_prometheus

    @pytest.fixture(scope="module")
    def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
        with demo_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
            yield server

`running_prometheus(openmetrics_text(series), workdir)` serves other data. Data is written as
OpenMetrics, turned into TSDB blocks by `promtool tsdb create-blocks-from openmetrics`, and
served by `prometheus` on a free local port. The demo series start on a 2-hour block boundary a
few hours before now, so promtool writes one block, well inside the retention and outside the
head block that Prometheus fills from scrapes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from http_doubles import free_port

STEP_SECONDS = 15
SAMPLES = 480
"""Samples per demo series: two hours at 15 s, minus the last so they fit one 2-hour block."""
SHIFT_INDEX = 360
"""Sample at which checkout-0's CPU (and its error rate) shifts up: 90 minutes in."""
_BLOCK_SECONDS = 2 * 3600
_STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BackfilledSeries:
    """One backfilled series: metric name, labels (without `__name__`) and samples."""

    name: str
    labels: dict[str, str]
    timestamps: list[int]
    """Unix seconds."""
    values: list[float]


@dataclass(frozen=True)
class PrometheusServer:
    """A running server and the series it holds."""

    url: str
    series: list[BackfilledSeries]
    start: pd.Timestamp
    """Time of the first sample of every demo series."""
    end: pd.Timestamp
    """Time of the last sample of every demo series."""
    shift_at: pd.Timestamp
    """When checkout-0's CPU jumps from about 20 to about 85 (and its 5xx rate from 0.2/s to 2/s)."""

    def find(self, name: str, **labels: str) -> list[BackfilledSeries]:
        """The demo series called `name` whose labels include `labels`."""
        return [s for s in self.series if s.name == name and labels.items() <= s.labels.items()]


def missing_binaries() -> list[str]:
    return [name for name in ("prometheus", "promtool") if shutil.which(name) is None]


def demo_series(start: int) -> list[BackfilledSeries]:
    """CPU gauges and request counters of three services (four pods on two nodes), plus a database
    gauge labelled only with job/instance; checkout-0 shifts level at `SHIFT_INDEX`."""
    times = [start + STEP_SECONDS * i for i in range(SAMPLES)]
    pods = [("frontend", "frontend-0", "node-a", 35.0, 10.0),  # service, pod, node, CPU %, 2xx per s
            ("frontend", "frontend-1", "node-b", 30.0, 10.0),
            ("checkout", "checkout-0", "node-a", 20.0, 4.0),
            ("payment", "payment-0", "node-b", 15.0, 2.0)]
    series = []
    for service, pod, node, cpu, ok_rate in pods:
        shifts = pod == "checkout-0"
        labels = {"service": service, "pod": pod, "node": node}
        series.append(BackfilledSeries("container_cpu_usage", labels, times, [
            (85.0 if shifts and i >= SHIFT_INDEX else cpu) + (i % 4) * 0.5 for i in range(SAMPLES)]))
        series.append(BackfilledSeries("http_requests_total", {**labels, "code": "200"}, times,
                                       _counter([ok_rate] * SAMPLES)))
        series.append(BackfilledSeries("http_requests_total", {**labels, "code": "500"}, times, _counter(
            [2.0 if shifts and i >= SHIFT_INDEX else 0.2 for i in range(SAMPLES)])))
    series.append(BackfilledSeries("process_open_fds", {"job": "postgres", "instance": "db-0:9187"}, times,
                                   [40.0 + i % 3 for i in range(SAMPLES)]))
    return series


def _counter(rates: list[float]) -> list[float]:
    """Counter values growing at `rates` (per second, one per step); starting well above zero keeps
    rate()'s extrapolation from clamping at zero."""
    values, total = [], 1000.0
    for rate in rates:
        values.append(total)
        total += rate * STEP_SECONDS
    return values


def openmetrics_text(series: list[BackfilledSeries]) -> str:
    """The series as OpenMetrics text (families contiguous, ending with '# EOF'); names ending in
    _total are counters, the rest gauges."""
    lines = []
    for name in dict.fromkeys(s.name for s in series):
        counter = name.endswith("_total")
        lines.append(f"# TYPE {name.removesuffix('_total')} {'counter' if counter else 'gauge'}")
        for one in (s for s in series if s.name == name):
            labels = ",".join(f'{key}="{value}"' for key, value in one.labels.items())
            lines.extend(f"{name}{{{labels}}} {value!r} {ts}"
                         for ts, value in zip(one.timestamps, one.values, strict=True))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@contextmanager
def running_prometheus(openmetrics: str, workdir: Path) -> Iterator[str]:
    """Backfill `openmetrics` into a fresh TSDB under `workdir`, serve it, yield the base URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data.om").write_text(openmetrics, encoding="utf-8")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(workdir / "data.om"),
                    str(workdir / "data")], check=True, capture_output=True, timeout=120)
    # No scrape jobs: the server holds exactly the backfilled series.
    (workdir / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\n", encoding="utf-8")
    process, url = _start(workdir)
    try:
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server, killing it if it has not exited within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _start(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start Prometheus on a free port; a port taken between probing and binding gets another try."""
    log = workdir / "prometheus.log"
    for _ in range(3):
        port = free_port()
        with log.open("ab") as sink:
            process = subprocess.Popen(
                ["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                 "--storage.tsdb.retention.time=100y", "--log.level=warn"],
                stdout=sink, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        if wait_ready(process, url):
            return process, url
    raise RuntimeError(f"Prometheus did not start:\n{log.read_text(errors='replace')[-2000:]}")


def wait_ready(process: subprocess.Popen[bytes], url: str) -> bool:
    """True once /-/ready answers 200; False if the process exited (say, the port was taken)."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"the server at {url} was not ready after {_STARTUP_TIMEOUT_S} s")


@contextmanager
def demo_prometheus(workdir: Path) -> Iterator[PrometheusServer]:
    """A Prometheus server holding `demo_series`; skips the calling test when the binaries are missing."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"needs the Prometheus binaries on PATH ({', '.join(missing)} missing); "
                    "install them with .ci/install-prometheus.sh")
    start = int(time.time()) // _BLOCK_SECONDS * _BLOCK_SECONDS - 2 * _BLOCK_SECONDS
    series = demo_series(start)
    with running_prometheus(openmetrics_text(series), workdir) as url:
        yield PrometheusServer(
            url=url, series=series,
            start=pd.Timestamp(start, unit="s", tz="UTC"),
            end=pd.Timestamp(start + STEP_SECONDS * (SAMPLES - 1), unit="s", tz="UTC"),
            shift_at=pd.Timestamp(start + STEP_SECONDS * SHIFT_INDEX, unit="s", tz="UTC"))
