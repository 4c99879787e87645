"""The console in a real browser: Debian's chromium driven through its chromedriver (nothing
is downloaded), against a real ``limechat-events web`` and a real worker delivering to the
sandbox. ``LIMECHAT_SCREENSHOTS=1`` writes a screenshot of each page to docs/console/."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import contract
from tests.helpers import ROOT, run_cli, running_worker, wait_for
from tests.integration.console_support import WEB_PASSWORD, WEB_USER, basic, running_console
from tests.integration.test_dlq import event
from worker.deadletter import DeadLetters
from worker.outcome import Reason
from worker.sandbox import Sandbox

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCRIPT = "<script>alert(1)</script>"
SHOTS = ROOT / "docs" / "console"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless chromium from Debian's packages; skipped (failed in CI) when missing."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # (Selenium Manager, if ever asked, stays offline)
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--disable-gpu",
    ):
        options.add_argument(flag)
    # (a driver path given: Selenium Manager, which could download one, is never asked)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> None:
    if os.environ.get("LIMECHAT_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"{name}.png"))


def fetch(driver: Any, url: str, method: str = "GET", body: str | None = None) -> int:
    """The status the page's own ``fetch`` gets. A GET goes without credentials (a 401 would
    otherwise wait for a login prompt headless chromium never shows)."""
    script = (
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: arguments[1], body: arguments[2],"
        " credentials: arguments[1] === 'GET' ? 'omit' : 'same-origin',"
        " headers: arguments[2] ? {'Content-Type': 'application/x-www-form-urlencoded'} : {}})"
        ".then(r => done(r.status), e => done(String(e)));"
    )
    status: int = driver.execute_async_script(script, url, method, body)
    return status


def attr(driver: Any, element_id: str, name: str) -> str | None:
    """An attribute of the element with that id, None while the page does not have it."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        value: str | None = driver.find_element("id", element_id).get_attribute(name)
    except (NoSuchElementException, StaleElementReferenceException):
        return None
    return value


def no_alert(driver: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert  # noqa: B018
    except NoAlertPresentException:
        return True
    return False


def test_the_console_in_a_browser(
    browser: Any, env: dict[str, str], r: redis.Redis, receiver: Sandbox
) -> None:
    from selenium.webdriver.common.by import By

    # Given: dead letters (one named <script>..., one auth signup, three order_placed 400s)
    letters = DeadLetters(r)
    letters.add(event(SCRIPT), Reason.HTTP_4XX, status=400, response_body="no such event")
    signup = event("signup", plan="pro")
    letters.add(
        signup,
        Reason.AUTH,
        status=401,
        response_body='{"error": "bad token"}',
        error="401 Unauthorized",
    )
    for i in range(3):
        letters.add(event(i=i), Reason.HTTP_4XX, status=400, response_body="invalid data")
    env.update(LIMECHAT_WEB_USER=WEB_USER, LIMECHAT_WEB_PASSWORD=WEB_PASSWORD)
    browser.set_script_timeout(30)

    with running_console(env) as (_, url):
        # No password, no page: the open health check loads, the browser is refused the rest.
        browser.get(url + "dlq")
        assert "Dead letters" not in browser.page_source  # (the refused login: an empty page)
        browser.get(url + "healthz")
        assert "ok" in browser.page_source
        assert fetch(browser, url + "dlq") == 401
        assert fetch(browser, url) == 401

        # Log in: the Authorization header on every request, as a Basic-auth login would send.
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": basic()})

        # The overview's numbers (refreshed by its script) equal `stats --json`.
        browser.get(url)
        wait_for(
            lambda: attr(browser, "refreshed", "data-updated"),
            30,
            "the overview's script to refresh it",
        )
        stats = json.loads(run_cli(env, "stats", "--json").stdout)
        shown = {
            node.get_attribute("data-stat"): node.text
            for node in browser.find_elements(By.CSS_SELECTOR, "[data-stat]")
        }
        assert shown["queue.waiting"] == str(stats["queue"]["waiting"])
        assert shown["queue.in_flight"] == str(stats["queue"]["in_flight"])
        assert shown["retries.parked"] == str(stats["retries"]["parked"])
        assert shown["dlq.depth"] == str(stats["dlq"]["depth"]) == "5"
        for reason, count in stats["dlq"]["by_reason"].items():
            assert shown[f"dlq.by_reason.{reason}"] == str(count)
        assert shown["workers_alive"] == str(stats["workers_alive"])
        assert shown["counters.delivered"] == str(stats["counters"]["delivered"])
        assert shown["rate_limit.limit"] == stats["rate_limit"]["limit"]

        # The <script> event renders as text, and nothing ran.
        browser.get(url + "dlq")
        names = [n.text for n in browser.find_elements(By.CSS_SELECTOR, "td.name")]
        assert SCRIPT in names and no_alert(browser)
        shot(browser, "dead-letters")

        # A POST without the CSRF token is refused, and nothing changes.
        assert fetch(browser, url + "dlq/act", "POST", "action=purge&scope=matching") == 403
        assert r.zcard(contract.DLQ_INDEX) == 5

        # Filter, open the entry, replay it: a real worker delivers it to the sandbox.
        box = browser.find_element(By.NAME, "event")
        box.clear()
        box.send_keys("signup")
        browser.find_element(By.ID, "apply").click()
        rows = wait_for(
            lambda: (
                browser.find_elements(By.CSS_SELECTOR, "a[href*='/dlq/entry/']")
                if "event=signup" in browser.current_url
                else None
            ),
            30,
            "the filter",
        )
        assert len(rows) == 1
        rows[0].click()
        wait_for(
            lambda: "bad token" in browser.find_element(By.ID, "response").text,
            30,
            "the entry page",
        )
        assert "401 Unauthorized" in browser.find_element(By.ID, "error").text
        shot(browser, "entry")
        browser.find_element(By.ID, "replay-one").click()
        count = wait_for(
            lambda: attr(browser, "count", "data-count"),
            30,
            "the confirmation",
        )
        assert count == "1" and "Replay 1 dead letter?" in browser.page_source
        shot(browser, "confirm")
        browser.find_element(By.ID, "do-it").click()
        done = wait_for(lambda: attr(browser, "done", "data-done"), 30, "the replay")
        assert done == "1"
        with running_worker(env):
            wait_for(
                lambda: [q for q in receiver.accepted() if q.body["event"] == "signup"],
                60,
                "the worker to deliver the replayed event",
            )

        # Purge everything a filter matches, with the count stated first.
        browser.get(url + "dlq?event=order_placed")
        browser.find_element(By.ID, "purge-matching").click()
        count = wait_for(
            lambda: attr(browser, "count", "data-count"),
            30,
            "the purge's confirmation",
        )
        assert count == "3" and "Purge 3 dead letters?" in browser.page_source
        browser.find_element(By.ID, "do-it").click()
        wait_for(
            lambda: attr(browser, "done", "data-done") == "3",
            30,
            "the purge",
        )
        left = [e["event"]["event"] for e in letters.list()]
        assert left == [SCRIPT]

        browser.get(url + "retries")
        assert "Parked retries" in browser.page_source
        shot(browser, "retries")
        assert no_alert(browser)

        # (the overview's picture for the docs, once something was delivered)
        browser.get(url)
        wait_for(lambda: attr(browser, "refreshed", "data-updated"), 30, "the overview")
        shot(browser, "overview")


def test_chromium_is_the_one_from_debian() -> None:
    """Nothing else may be used: a downloaded browser or driver would not be these paths."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    assert shutil.which("chromium") in (CHROMIUM, None) or Path(CHROMIUM).exists()
