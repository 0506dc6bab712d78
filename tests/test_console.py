"""The service's web console in a real browser: headless Chromium from the OS packages, driven by Selenium.

The app runs under uvicorn on 127.0.0.1 (no Ray) with a stand-in analyzer that reports progress and waits
until the test lets it finish, so the console's live state and progress can be watched. Skipped, with the
reason, when Chromium, chromedriver or Selenium is missing (`.ci/run` installs them).
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import headless_chromium, missing_browser, wait_for
from conftest import tiny_incident
from http_doubles import serving

from flipmoe.serve.app import ServeSettings, create_app
from flipmoe.telemetry import write_incident

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(missing_browser()), reason=missing_browser())]

TOKEN = "console-token"
MARKER = "placeholder report <b>for</b> the console"


class GatedAnalyzer:
    """Reports two stages, then waits for `release` before writing a small report."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, incident_dir: Path, out_dir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
        incident_id = json.loads((incident_dir / "incident.json").read_text(encoding="utf-8"))["id"]
        progress("reading the incident")
        progress("step localise (2 step(s) done)")
        assert self.release.wait(60), "the test never released the analysis"
        (out_dir / "report.json").write_text(json.dumps({"incident": incident_id, "root_causes": []}))
        # The report escapes telemetry; the console must show it as a page, markup included.
        (out_dir / "report.html").write_text(f"<!DOCTYPE html><html><body><h1 id='marker'>{MARKER}</h1>"
                                             "<img alt='plot' src='data:image/png;base64,iVBORw0KGgo='></body></html>")
        (out_dir / "report.md").write_text(f"# RCA report: {incident_id}\n")
        return {"incident": incident_id, "root_causes": [{"rank": 1, "service": "checkout", "pod": "checkout-1",
                                                          "fault_type": "cpu_hog", "score": 0.9}]}


def tar_gz(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium(console_log=True) as driver:
        yield driver


def until(browser: Any, condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    return wait_for(browser, condition, what, timeout)


def row(browser: Any, job_id: str) -> Any:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, f"#jobs tbody tr[data-job-id='{job_id}']")
    return rows[0] if rows else None


def console_errors(browser: Any) -> list[str]:
    """Severe console messages (script errors, CSP violations) other than the expected 401s."""
    return [entry["message"] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "401" not in entry["message"]]


def test_token_upload_live_progress_and_report(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    analyzer = GatedAnalyzer()
    app = create_app(ServeSettings(data_dir=tmp_path / "data", auth="on", tokens=frozenset({TOKEN})),
                     analyzer=analyzer)
    archive = tmp_path / "tiny.tar.gz"
    archive.write_bytes(tar_gz(write_incident(tiny_incident(), tmp_path / "src" / "tiny")))
    with serving(app) as url:
        browser.get(url + "/")
        # Auth is on: the console asks for the token before showing anything.
        until(browser, lambda: browser.find_element(By.ID, "token-form").is_displayed(), "no token prompt")
        assert not browser.find_element(By.ID, "console").is_displayed()
        browser.find_element(By.ID, "token").send_keys("wrong")
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        until(browser, lambda: "refused" in browser.find_element(By.ID, "token-error").text, "a bad token passed")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        until(browser, lambda: browser.find_element(By.ID, "console").is_displayed(), "the console did not open")
        assert browser.execute_script("return sessionStorage.getItem('flipmoe-token')") == TOKEN
        assert browser.execute_script("return localStorage.length") == 0

        # Upload an archive through the form; the new job shows up with its live progress.
        browser.find_element(By.ID, "upload-file").send_keys(str(archive))
        browser.find_element(By.CSS_SELECTOR, "#upload-form button").click()
        status = until(browser, lambda: "accepted as job" in (s := browser.find_element(By.ID, "upload-status").text)
                       and s, "the upload was not accepted")
        job_id = until(browser, lambda: browser.find_element(By.CSS_SELECTOR, "#jobs tbody tr")
                       .get_attribute("data-job-id"), "the job is not listed")
        assert job_id.startswith(status.split("accepted as job ")[1].split()[0])
        until(browser, lambda: row(browser, job_id).get_attribute("data-state") == "running"
              and "step localise" in row(browser, job_id).find_element(By.CLASS_NAME, "progress").text,
              "the running job's progress is not shown")

        # A reload keeps the token for this tab: no second prompt.
        browser.refresh()
        until(browser, lambda: row(browser, job_id) is not None, "the job list did not come back after a reload")
        assert not browser.find_element(By.ID, "token-form").is_displayed()

        analyzer.release.set()
        until(browser, lambda: row(browser, job_id).get_attribute("data-state") == "done", "the job did not finish")
        # The job table is redrawn on every poll: read and click inside waits, which retry a vanished row.
        cause = until(browser, lambda: row(browser, job_id).find_element(By.CLASS_NAME, "cause").text, "no cause")
        assert "checkout / checkout-1 (cpu_hog)" in cause
        until(browser, lambda: row(browser, job_id).find_element(By.CLASS_NAME, "open-report").click() or True,
              "the report link could not be clicked")

        # The report is fetched with the token and shown in a sandboxed frame.
        frame = until(browser, lambda: browser.find_element(By.ID, "report-frame").get_attribute("srcdoc")
                      and browser.find_element(By.ID, "report-frame"), "the report was not loaded")
        assert frame.get_attribute("sandbox") == ""

        def marker_in_frame() -> str:
            # srcdoc is set before the frame has parsed it: look inside the frame until the report is there.
            browser.switch_to.default_content()
            browser.switch_to.frame(browser.find_element(By.ID, "report-frame"))
            try:
                return str(browser.find_element(By.ID, "marker").text)
            finally:
                browser.switch_to.default_content()

        assert until(browser, marker_in_frame, "the report frame did not render") == \
            "placeholder report for the console"
        assert browser.current_url.endswith(f"#report={job_id}")
        assert console_errors(browser) == []


def test_no_prompt_when_auth_is_off_on_localhost(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    app = create_app(ServeSettings(data_dir=tmp_path / "data"), analyzer=GatedAnalyzer())
    with serving(app) as url:
        browser.get(url + "/")
        until(browser, lambda: browser.find_element(By.ID, "console").is_displayed(), "the console did not open")
        assert not browser.find_element(By.ID, "token-form").is_displayed()
        assert browser.find_element(By.ID, "jobs-empty").is_displayed()
        assert not browser.find_element(By.ID, "forget-token").is_displayed()
        assert console_errors(browser) == []
