"""The console's filter box in a real headless Chromium: the server's check of a bad CEL
expression shown beside the box, a good one saved, shown, edited and cleared."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.console.support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Console,
    console_servers,
    formkit_package,
    require_chromium,
)

WAIT = 60_000  # ms: the machine may be busy with other suites
GOOD = 'has(event.task_fail) && event.task_fail.project_name == "etl"'


@pytest.fixture
def page(tmp_path: Path) -> Iterator[tuple[Console, Page]]:
    require_chromium()
    with console_servers(tmp_path) as console, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(WAIT)
        expect.set_options(timeout=WAIT)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield console, page
        browser.close()
        assert errors == []


def test_filter_box_shows_the_servers_check_in_place(page: tuple[Console, Page]) -> None:
    console, browser_page = page
    status, _ = console.call(
        "POST", "/v1/plugins", {"package": base64.b64encode(formkit_package()).decode()}
    )
    assert status == 200
    browser_page.goto(console.base + "/#/instances/new")
    browser_page.select_option("#f-plugin", "formkit")
    browser_page.fill("#f-id", "kit")
    browser_page.fill("#p-target", "somewhere")
    browser_page.fill("#f-filter", 'event.task_fail.project_nme == "etl"')
    browser_page.click("#save")
    error = browser_page.locator("#f-filter-err")
    expect(error).to_contain_text("line 1, column 17")
    expect(error).to_contain_text("no field 'project_nme'")
    expect(browser_page.locator("#f-filter")).to_have_attribute("aria-invalid", "true")
    assert console.call("GET", "/v1/listenerInstances/kit")[0] == 404  # nothing created

    browser_page.fill("#f-filter", GOOD)
    browser_page.click("#save")
    expect(browser_page).to_have_url(re.compile(r"#/instances/kit$"))
    expect(browser_page.locator("main")).to_contain_text(GOOD)
    status, got = console.call("GET", "/v1/listenerInstances/kit")
    assert status == 200 and got["filter"] == GOOD

    # Edit: the box holds the stored filter; a syntax error is shown in place, then cleared.
    browser_page.goto(console.base + "/#/instances/kit/edit")
    expect(browser_page.locator("#f-filter")).to_have_value(GOOD)
    browser_page.fill("#f-filter", "event.source ==")
    browser_page.click("#save")
    expect(browser_page.locator("#f-filter-err")).to_contain_text("Syntax error")
    assert console.call("GET", "/v1/listenerInstances/kit")[1]["filter"] == GOOD
    browser_page.fill("#f-filter", "")
    browser_page.click("#save")
    expect(browser_page).to_have_url(re.compile(r"#/instances/kit$"))
    assert console.call("GET", "/v1/listenerInstances/kit")[1].get("filter", "") == ""
