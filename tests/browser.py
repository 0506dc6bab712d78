"""Headless Chromium from the OS packages, driven by Selenium: one setup for every browser test.

`missing_browser()` says why a browser test cannot run here ("" when it can); `headless_chromium()` opens
the browser; `wait_for(browser, condition, what)` polls a condition that may read a page being redrawn.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def missing_browser() -> str:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return ("headless Chromium and chromedriver are not installed "
                "(Debian: apt-get install chromium chromium-driver; .ci/run does it)")
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed: pip install -e '.[test]'"
    return ""


@contextmanager
def headless_chromium(*, console_log: bool = False) -> Iterator[Any]:
    """A headless Chromium; with `console_log`, the page's console messages are kept (`get_log("browser")`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser: Any, condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """The first truthy value of `condition()` within `timeout` s; elements that vanish while the page is
    redrawn (the console redraws its job table on every poll) count as not yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def check(_: Any) -> Any:
        try:
            return condition()
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(check, message=what)
