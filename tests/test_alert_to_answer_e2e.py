"""Alert to answer, end to end: real Prometheus and Alertmanager (Debian packages `prometheus` and
`prometheus-alertmanager`), Loki as the local double (Debian has no Grafana Loki package), flipmoe under uvicorn.

    workload (/metrics, log lines) ──scrape 1 s──► Prometheus ──rule, for: 0s──► Alertmanager ──group_wait 1 s──►
    flipmoe POST /v1/alertmanager ──pulls Prometheus and Loki, analyses──► Slack / webhook receiver

The workload serves four services' CPU and p95 latency; `Workload.inject(service)` makes that service's jump.
The alert is on the shop's worst p95 latency, with no service label, so the alert itself does not say which
service is at fault: the analysis has to. `alert_pipeline` is shared with benchmarks/bench_alert_to_answer.py.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from browser import headless_chromium, missing_browser, wait_for
from http_doubles import LokiDouble, LokiEntry, Receiver, Request, free_port, serving
from prometheus_server import stop, wait_ready

from flipmoe.config import (
    AlertsConfig,
    DeliveryConfig,
    DeliveryTarget,
    FlipmoeConfig,
    ImportConfig,
    LokiConfig,
    PrometheusConfig,
    SecretRef,
)
from flipmoe.serve.app import ServeSettings, create_app
from flipmoe.serve.services import DirectorAnalyzer

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
MISSING = [name for name, path in (("prometheus", PROMETHEUS), ("prometheus-alertmanager", ALERTMANAGER)) if not path]
SERVICES = {"frontend": "frontend-6f7-a1", "checkout": "checkout-5d9-b2", "payment": "payment-7c8-c3",
            "cart": "cart-4b6-d4"}
BASELINE_S = 20.0
"""Seconds of normal telemetry before an anomaly: the window looks back this far (`alerts.look_back_minutes`)."""
SLACK_TOKEN = "T0123/B0456/e2eSecret"
NO_BROWSER = missing_browser() and f"the console check cannot run: {missing_browser()}"


# -- the workload: metrics to scrape, log lines to Loki -------------------------------------------------------

class Workload:
    """Four services' metrics on `/metrics` and their log lines in `loki`; `inject(service)` makes one slow."""

    def __init__(self, loki: LokiDouble) -> None:
        self.loki = loki
        self.hot: str | None = None
        self._stop = threading.Event()
        workload = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = workload.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self._server.server_address[1]}"
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True),
                         threading.Thread(target=self._log, daemon=True)]

    def inject(self, service: str | None) -> float:
        """Make `service` slow (None: all normal again); returns when, in `time.time()` seconds."""
        self.hot = service
        return time.time()

    def exposition(self) -> str:
        """Prometheus text format: CPU and p95 latency per service, with a little wobble so no series is flat."""
        wobble = math.sin(time.time())
        lines = ["# TYPE cpu_usage_ratio gauge", "# TYPE http_request_duration_seconds_p95 gauge"]
        for i, (service, pod) in enumerate(SERVICES.items()):
            labels = f'service="{service}",pod="{pod}",node="node-1"'
            hot = service == self.hot
            lines.append(f"cpu_usage_ratio{{{labels}}} {(0.9 if hot else 0.2 + 0.03 * i) + 0.01 * wobble:.4f}")
            lines.append(f"http_request_duration_seconds_p95{{{labels}}} "
                         f"{(1.5 if hot else 0.05 + 0.01 * i) + 0.002 * wobble:.4f}")
        return "\n".join(lines) + "\n"

    def _log(self) -> None:
        i = 0
        while not self._stop.wait(0.5):
            now = pd.Timestamp.now(tz="UTC")
            for service, pod in SERVICES.items():
                labels = {"namespace": "shop", "app": service, "pod": pod, "node": "node-1"}
                if service == self.hot:
                    line = f'level=error msg="timeout calling payment after 1000ms" order={i}'
                else:
                    line = f'level=info msg="handled request {i} in {3 + i % 5}ms"'
                self.loki.entries.append(LokiEntry(now, line, labels))
            i += 1

    def __enter__(self) -> Workload:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


class TimedReceiver(Receiver):
    """A `Receiver` that also notes when (`time.time()`) each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[tuple[float, Request]] = []

    def answer(self, request: Request) -> tuple[int, str, bytes]:
        self.arrived.append((time.time(), request))
        return super().answer(request)

    def slack(self) -> list[tuple[float, Any]]:
        """The Slack messages so far: (when each arrived, its body)."""
        return [(at, r.body) for at, r in self.arrived if r.path.startswith("/services/")]


class Stamped:
    """ASGI middleware noting when (`time.time()`) each `POST /v1/alertmanager` reached the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received: list[float] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/alertmanager":
            self.received.append(time.time())
        await self.app(scope, receive, send)


# -- the real servers -------------------------------------------------------------------------------------------

@contextmanager
def _process(args: list[str], ready_url: str, log: Path) -> Iterator[None]:
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        assert wait_ready(process, ready_url), f"{args[0]} exited:\n{log.read_text(errors='replace')[-2000:]}"
        yield
    finally:
        stop(process)


def _alertmanager(workdir: Path, address: str, webhook: str) -> list[str]:
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "flipmoe", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "flipmoe", "webhook_configs": [{"url": webhook, "send_resolved": False}]}]}))
    return [str(ALERTMANAGER), f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'alertmanager'}", f"--web.listen-address={address}",
            "--cluster.listen-address="]


def _prometheus(workdir: Path, address: str, scrape: str, alertmanager: str) -> list[str]:
    (workdir / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "shop", "interval": "1s", "rules": [{
        "alert": "HighLatency", "expr": "max(http_request_duration_seconds_p95) > 1", "for": "0s",
        "labels": {"severity": "critical"},
        "annotations": {"summary": "p95 latency of the shop above 1s"}}]}]}))
    (workdir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": "shop", "static_configs": [{"targets": [scrape]}]}]}))
    return [str(PROMETHEUS), f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prometheus'}", f"--web.listen-address={address}",
            "--log.level=warn"]


def pipeline_config(*, prometheus: str, loki: str, receiver: str) -> FlipmoeConfig:
    """What flipmoe pulls for an alert (the last BASELINE_S seconds, at the scrape's 1 s) and where it sends it."""
    return FlipmoeConfig(
        imports=ImportConfig(history_minutes=0),
        prometheus=PrometheusConfig(url=prometheus, step_seconds=1.0, retries=1, retry_backoff_seconds=0.1, queries={
            name: f"max by (service, pod, node) ({name})"
            for name in ("cpu_usage_ratio", "http_request_duration_seconds_p95")}),
        loki=LokiConfig(url=loki, queries=['{namespace="shop"}'], retries=1, retry_backoff_seconds=0.1),
        alerts=AlertsConfig(look_back_minutes=BASELINE_S / 60, margin_after_minutes=1),
        delivery=DeliveryConfig(report_base_url="http://127.0.0.1", targets=[
            DeliveryTarget(kind="slack", url_secret=SecretRef(env="E2E_SLACK_WEBHOOK"), retry_backoff_seconds=0.1),
            DeliveryTarget(kind="webhook", name="audit", url=f"{receiver}/hook", retry_backoff_seconds=0.1)]))


@dataclass
class Pipeline:
    workload: Workload
    receiver: TimedReceiver
    flipmoe: Stamped
    url: str
    """flipmoe's base URL."""
    data_dir: Path
    """flipmoe's data folder: `incidents/<job id>/incident` holds what each alert pulled."""


@contextmanager
def alert_pipeline(workdir: Path, analyzer: DirectorAnalyzer) -> Iterator[Pipeline]:
    """Every server up and scraping; the caller injects anomalies and watches `receiver`.

    Sets `E2E_SLACK_WEBHOOK` in the environment (the Slack target's URL is a secret)."""
    loki, receiver = LokiDouble([]), TimedReceiver()
    with ExitStack() as stack:
        stack.enter_context(loki)
        stack.enter_context(receiver)
        workload = stack.enter_context(Workload(loki))
        os.environ["E2E_SLACK_WEBHOOK"] = f"{receiver.url}/services/{SLACK_TOKEN}"
        # Ports first: flipmoe's config names Prometheus, which names Alertmanager, which names flipmoe.
        prometheus, alertmanager = (f"127.0.0.1:{free_port()}" for _ in range(2))
        data_dir = workdir / "serve"
        config = pipeline_config(prometheus=f"http://{prometheus}", loki=loki.url, receiver=receiver.url)
        app = Stamped(create_app(ServeSettings(data_dir=data_dir), analyzer=analyzer, config=config))
        flipmoe = stack.enter_context(serving(app))
        stack.enter_context(_process(_alertmanager(workdir, alertmanager, f"{flipmoe}/v1/alertmanager"),
                                     f"http://{alertmanager}", workdir / "alertmanager.log"))
        stack.enter_context(_process(_prometheus(workdir, prometheus, workload.target, alertmanager),
                                     f"http://{prometheus}", workdir / "prometheus.log"))
        yield Pipeline(workload, receiver, app, flipmoe, data_dir)


def wait_for_answer(pipeline: Pipeline, *, after: int, timeout: float = 60.0) -> tuple[float, Any, Any]:
    """The next answer past the `after` ones already delivered: when its Slack message arrived, that message, and
    the webhook target's JSON (sent after it)."""
    deadline = time.time() + timeout
    while len(pipeline.receiver.messages("/hook")) <= after:
        assert time.time() < deadline, f"no answer within {timeout:.0f} s"
        time.sleep(0.05)
    delivered, slack = pipeline.receiver.slack()[after]
    return delivered, slack, pipeline.receiver.messages("/hook")[after]


# -- the console in a browser (as tests/test_console.py drives it) ----------------------------------------------

def console_top_cause(url: str, job_id: str) -> tuple[str, str]:
    """Opens the console at `url`, waits for job `job_id` to be done in the job list and opens its report; returns
    the job row's top cause and the report's "Top cause" (the summary card, in the sandboxed report frame)."""
    from selenium.webdriver.common.by import By

    def row() -> Any:
        return browser.find_element(By.CSS_SELECTOR, f"#jobs tbody tr[data-job-id='{job_id}']")

    with headless_chromium() as browser:
        browser.get(url + "/")
        wait_for(browser, lambda: browser.find_element(By.ID, "console").is_displayed(), "the console did not open",
                 timeout=30)
        # The job table is redrawn on every poll: read and click inside waits, which retry a vanished row.
        listed = wait_for(browser, lambda: row().get_attribute("data-state") == "done"
                          and row().find_element(By.CLASS_NAME, "cause").text,
                          "the alert's job is not done in the list", timeout=30)
        wait_for(browser, lambda: row().find_element(By.CLASS_NAME, "open-report").click() or True,
                 "the report link could not be clicked", timeout=30)
        frame = wait_for(browser, lambda: browser.find_element(By.ID, "report-frame").get_attribute("srcdoc")
                         and browser.find_element(By.ID, "report-frame"), "the report was not loaded", timeout=30)
        browser.switch_to.frame(frame)
        try:
            shown = browser.find_element(
                By.XPATH, "//section[@id='summary']//dt[normalize-space()='Top cause']/following-sibling::dd[1]").text
        finally:
            browser.switch_to.default_content()
    return listed, shown


# -- the test ---------------------------------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.skipif(bool(MISSING), reason=f"needs {' and '.join(MISSING)} on PATH (Debian packages prometheus and "
                                          "prometheus-alertmanager; .ci/install-prometheus.sh installs them)")
def test_an_injected_anomaly_fires_an_alert_and_its_answer_names_the_service(tmp_path: Path) -> None:
    with alert_pipeline(tmp_path, DirectorAnalyzer(bundle=None)) as pipeline:
        time.sleep(BASELINE_S)
        pipeline.workload.inject("checkout")
        _, slack, hook = wait_for_answer(pipeline, after=0)
        assert "*checkout*" in slack["text"], slack["text"]
        assert hook["state"] == "done" and hook["root_causes"][0]["service"] == "checkout", hook
        assert hook["alert"].startswith("HighLatency: p95 latency of the shop above 1s"), hook["alert"]
        # The console shows the same answer: the job done in its list, checkout on top in its report.
        # (The app runs with auth off on 127.0.0.1, so the console asks for no token.)
        if not NO_BROWSER:
            listed, shown = console_top_cause(pipeline.url, hook["job_id"])
            assert listed.startswith("checkout"), listed
            assert shown.split(" / ")[0] == "checkout", shown
    assert len(pipeline.receiver.slack()) == 1 and len(pipeline.flipmoe.received) == 1
    if NO_BROWSER:
        pytest.skip(f"delivery checked; {NO_BROWSER}")
