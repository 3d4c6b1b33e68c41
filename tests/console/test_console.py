"""The console in a real headless Chromium against the real servers (subprocesses, SQLite):
the admin's flows end to end, every form control, the viewer's read-only view, and the
security headers. With LISTENER_CONSOLE_SCREENSHOTS=docs/screenshots the same run refreshes
the README's screenshots."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.console.support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Console,
    Receiver,
    broken_webhook_package,
    console_servers,
    dist_package,
    formkit_package,
    require_chromium,
    shot,
)

WAIT = 60_000  # ms: the machine may be busy with other suites
ADMIN_TOKEN = "admin-token-for-console-tests-0123456789"
VIEWER_TOKEN = "viewer-token-for-console-tests-0123456789"
PUBLISHER_TOKEN = "publisher-token-for-console-tests-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(WAIT)
    expect.set_options(timeout=WAIT)
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("pageerror", lambda e: violations.append(f"uncaught: {e}"))
    yield page
    context.close()
    assert violations == [], violations  # the console runs under the strict CSP, error-free


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with console_servers(tmp_path) as c:
        yield c


def confirm(page: Page) -> None:
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-ok")
    expect(page.locator("#confirm")).to_be_hidden()


def drop_file(page: Page, selector: str, name: str, data: bytes) -> None:
    """Drops a file on an element the way a browser does: a DataTransfer holding a File."""
    transfer = page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "application/zip" }));
            return dt;
        }""",
        [name, base64.b64encode(data).decode()],
    )
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def task_fail(n: int) -> dict[str, Any]:
    return {
        "taskFail": {
            "projectName": "etl",
            "workflowName": "nightly",
            "taskName": f"extract-{n}",
            "taskInstanceId": n,
        }
    }


def test_admin_installs_subscribes_watches_breaks_fixes_parks_redelivers(
    console: Console, page: Page, tmp_path: Path
) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        _admin_flow(console, page, receiver)
    finally:
        receiver.stop()


def _admin_flow(console: Console, page: Page, receiver: Receiver) -> None:
    page.goto(console.base + "/")
    expect(page.locator("#role")).to_contain_text("admin")  # open server on loopback

    # -- install by file picker, with the upload progress bar --------------------------------------
    page.click("a[data-nav=plugins]")
    expect(page.locator("h1")).to_have_text("Plugins")
    webhook_zip = dist_package("webhook")
    page.set_input_files("#package-file", str(webhook_zip))
    expect(page.locator("#install-status")).to_contain_text("Installed webhook")
    progress = page.locator("#install-progress")
    size = webhook_zip.stat().st_size
    expect(progress).to_have_js_property("value", size)
    expect(progress).to_have_js_property("max", size)
    row = page.locator("#plugin-webhook")
    expect(row).to_contain_text("1.2.0")
    expect(row).to_contain_text("ACTIVE")
    expect(row.locator(".users")).to_have_text("none")

    # -- and by drag and drop ----------------------------------------------------------------------
    drop_file(page, "#drop-zone", "formkit.zip", formkit_package())
    expect(page.locator("#install-status")).to_contain_text("Installed formkit")
    expect(page.locator("#plugin-formkit")).to_contain_text("Form kit")

    # -- create an instance through the rendered form: a field error first -------------------------
    page.click("a[data-nav=instances]")
    page.click("#new-instance")
    expect(page.locator("h1")).to_have_text("New listener instance")
    page.select_option("#f-plugin", "webhook")
    expect(page.locator("#p-url")).to_be_visible()
    page.fill("#f-id", "Hook_1")  # the server's rule, not checked here
    page.fill("#p-timeout", "500")
    page.click("#save")
    # Client-side checks from the spec: required url, timeout above its max; nothing sent.
    expect(page.locator("#p-url-err")).to_have_text("is required")
    expect(page.locator("#p-timeout-err")).to_have_text("must be at most 120")
    expect(page.locator("#p-url")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#p-url")).to_be_focused()
    page.fill("#p-url", receiver.url)
    page.fill("#p-timeout", "5")
    page.fill("#p-secret", "whsec-console-secret-42")
    page.click("#save")
    # The server's BadRequest field violation, beside the field it names.
    expect(page.locator("#f-id-err")).to_contain_text("must match")
    expect(page.locator("#form-error")).to_be_visible()
    assert page.locator("#p-url-err").is_hidden()
    shot(page, "instance-form")
    page.fill("#f-id", "hook")
    page.fill("#f-display_name", "Ops webhook")
    page.click("#save")
    expect(page).to_have_url(re.compile(r"#/instances/hook$"))
    expect(page.locator("#state")).to_contain_text("ACTIVE")
    # The secret never reaches the browser: masked by the server.
    assert "whsec-console-secret-42" not in page.content()
    status, stored = console.call("GET", "/v1/listenerInstances/hook")
    assert status == 200 and stored["params"]["secret"] == "******"

    # -- publish, and watch it delivered -----------------------------------------------------------
    first = console.publish(task_fail(1))
    receiver.wait_for(first["id"])
    expect(page.locator("#attempts")).to_contain_text("delivered")
    expect(page.locator("#pending")).to_have_text("0")

    # -- break the destination until BLOCKED, see the error ----------------------------------------
    receiver.stop()
    second = console.publish(task_fail(2))
    expect(page.locator("#state")).to_contain_text("BLOCKED")
    expect(page.locator("#last-error")).to_contain_text("cannot connect")
    expect(page.locator("#attempts")).to_contain_text("failed")
    expect(page.locator("#next-attempt")).not_to_have_text("—")
    shot(page, "instance-detail-blocked")
    page.click("a[data-nav=instances]")
    hook_row = page.locator("tr[data-instance=hook]")
    expect(hook_row).to_contain_text("BLOCKED")
    expect(hook_row).to_contain_text("cannot connect")
    page.fill("#filter-text", "no-such-thing")
    expect(page.locator("tr[data-instance=hook]")).to_have_count(0)
    page.fill("#filter-text", "")
    page.select_option("#filter-state", "BLOCKED")
    expect(hook_row).to_be_visible()
    shot(page, "instances")

    # -- fix it, retry now -------------------------------------------------------------------------
    receiver.start()
    hook_row.locator("a").click()
    assert second["id"] not in receiver.ids()  # the next automatic attempt is minutes away
    page.click("#retry")
    expect(page.locator("#state")).to_contain_text("ACTIVE")
    receiver.wait_for(second["id"])
    expect(page.locator("#last-error")).to_have_text("none")

    # -- park the failing head event, then redeliver it --------------------------------------------
    receiver.stop()
    third = console.publish(task_fail(3))
    expect(page.locator("#state")).to_contain_text("BLOCKED")
    page.click("#skip")
    confirm(page)
    parked_row = page.locator(f"#parked-table tr[data-sequence='{third['sequence']}']")
    expect(parked_row).to_contain_text("TASK_FAIL")
    expect(page.locator("#state")).to_contain_text("ACTIVE")
    receiver.start()
    before_redelivery = len(receiver.bodies)
    page.click("#redeliver-all")
    confirm(page)
    expect(page.locator("#parked")).to_contain_text("No parked events.")
    receiver.wait_for(third["id"], after=before_redelivery)

    # -- operator actions: test event, pause/resume, replay with a confirmation --------------------
    page.select_option("#test-type", "EVENT_TYPE_TASK_FAIL")
    page.click("#send-test")
    expect(page.locator("#action-result")).to_contain_text("Test event delivered")
    expect(page.locator("#resume")).to_be_hidden()
    page.click("#pause")
    expect(page.locator("#state")).to_contain_text("PAUSED")
    expect(page.locator("#pause")).to_be_hidden()
    page.click("#resume")
    expect(page.locator("#state")).to_contain_text("ACTIVE")
    delivered_before = len(receiver.bodies)
    page.fill("#replay-sequence", str(first["sequence"]))
    page.click("#replay")
    expect(page.locator("#confirm-cancel")).to_be_focused()  # the safe choice comes first
    page.keyboard.press("Escape")  # cancelled: nothing replayed
    expect(page.locator("#confirm")).to_be_hidden()
    expect(page.locator("#replay")).to_be_focused()
    page.click("#replay")
    confirm(page)
    expect(page.locator("#action-result")).to_contain_text("Replaying")
    for event in (first, second, third):
        receiver.wait_for(event["id"], after=delivered_before)
    expect(page.locator(".chart path.rate")).to_have_count(1)
    shot(page, "instance-detail")

    # -- edit: the secret stays masked and kept ----------------------------------------------------
    page.click("#edit")
    expect(page.locator("#p-secret")).to_have_value("")
    # The plugin marks its url secret too: masked the same way, kept when left empty.
    expect(page.locator("#p-url")).to_have_value("")
    expect(page.locator("#p-url")).to_have_attribute(
        "placeholder", re.compile("leave empty to keep")
    )
    expect(page.locator("#p-secret")).to_have_attribute(
        "placeholder", re.compile("leave empty to keep")
    )
    page.fill("#f-display_name", "Ops webhook (edited)")
    page.click("#save")
    expect(page.locator("h1")).to_contain_text("Ops webhook (edited)")
    assert "whsec-console-secret-42" not in page.content()

    # -- uninstall refused while in use; a failing update shown in place ---------------------------
    page.click("a[data-nav=plugins]")
    expect(page.locator("#plugin-webhook .users")).to_have_text("hook")
    page.locator("#plugin-webhook button", has_text="Uninstall").click()
    confirm(page)
    expect(page.locator("#plugin-webhook-error")).to_contain_text("listenerInstances/hook")
    broken = Path(console.pair.data_dir) / "webhook-2.0.0.zip"
    broken.write_bytes(broken_webhook_package())
    page.locator("#plugin-webhook input[type=file]").set_input_files(str(broken))
    expect(page.locator("#plugin-webhook-error")).to_contain_text("Update failed")
    expect(page.locator("#plugin-webhook")).to_contain_text("1.2.0")
    shot(page, "plugins")
    status, plugin = console.call("GET", "/v1/plugins/webhook")
    assert plugin["version"] == "1.2.0"

    # -- events, filtered by type, with the payload ------------------------------------------------
    console.publish(
        {"workflowEnd": {"projectName": "etl", "workflowName": "nightly", "state": "SUCCESS"}}
    )
    page.click("a[data-nav=events]")
    expect(page.locator("#events tbody tr")).to_have_count(4)
    page.select_option("#event-type", "EVENT_TYPE_TASK_FAIL")
    page.click("#events-form button[type=submit]")
    expect(page.locator("#events tbody tr")).to_have_count(3)
    expect(page.locator("#events-info")).to_contain_text("TASK_FAIL")
    row = page.locator(f"#events tr[data-sequence='{third['sequence']}']")
    row.locator("summary").click()
    expect(row.locator("pre")).to_contain_text('"taskName": "extract-3"')
    shot(page, "events")


def test_every_form_control_round_trips(console: Console, page: Page) -> None:
    status, _ = console.call(
        "POST", "/v1/plugins", {"package": base64.b64encode(formkit_package()).decode()}
    )
    assert status == 200
    page.goto(console.base + "/#/instances/new")
    page.select_option("#f-plugin", "formkit")
    # The CEL filter field is offered exactly when this server's API has it (DESIGN §13).
    _, spec = console.call("GET", "/openapi.json")
    fields = spec["components"]["schemas"]["listener.v1.ListenerInstance"]["properties"]
    expect(page.locator("#f-filter")).to_have_count(1 if "filter" in fields else 0)
    # Defaults from the spec are rendered in each control type.
    expect(page.locator("#p-batch")).to_have_value("10")
    expect(page.locator("#p-mode-0")).to_be_checked()  # radio "fast"
    expect(page.locator("#p-level")).to_have_value("info")
    expect(page.locator("#p-enabled")).to_be_checked()
    expect(page.locator("#p-enabled")).to_have_attribute("role", "switch")
    expect(page.locator("#p-tags-0")).to_be_checked()
    expect(page.locator("#p-tags-1")).not_to_be_checked()
    expect(page.locator("#p-token")).to_have_attribute("type", "password")
    # Client-side checks: required, range.
    page.fill("#p-batch", "0")
    page.click("#save")
    expect(page.locator("#p-target-err")).to_have_text("is required")
    expect(page.locator("#p-batch-err")).to_have_text("must be at least 1")
    # Fill every control by keyboard and pointer.
    page.fill("#f-id", "kit")
    page.fill("#p-target", "somewhere")
    page.fill("#p-batch", "25")
    page.check("#p-mode-1")
    page.select_option("#p-level", "warn")
    page.uncheck("#p-enabled")
    page.check("#p-tags-2")
    page.fill("#p-notes", "line one\nline two")
    page.fill("#p-token", "tok-secret-99")
    page.uncheck("input[value=EVENT_TYPE_WORKFLOW_FAIL]")
    page.check("input[value=EVENT_TYPE_SERVER_DOWN]")
    page.check("#f-mode-park")
    page.fill("#f-park_after", "3")
    page.click("#save")
    expect(page).to_have_url(re.compile(r"#/instances/kit$"))
    status, got = console.call("GET", "/v1/listenerInstances/kit")
    assert status == 200
    assert got["params"] == {
        "target": "somewhere",
        "batch": "25",
        "mode": "safe",
        "level": "warn",
        "enabled": "false",
        "tags": '["a","c"]',
        "notes": "line one\nline two",
        "token": "******",
    }
    assert sorted(got["eventTypes"]) == ["EVENT_TYPE_SERVER_DOWN", "EVENT_TYPE_TASK_FAIL"]
    assert got["failurePolicy"] == {"mode": "MODE_PARK", "parkAfter": 3}
    # Edit shows the stored values back in every control.
    page.goto(console.base + "/#/instances/kit/edit")
    expect(page.locator("#p-batch")).to_have_value("25")
    expect(page.locator("#p-mode-1")).to_be_checked()
    expect(page.locator("#p-level")).to_have_value("warn")
    expect(page.locator("#p-enabled")).not_to_be_checked()
    expect(page.locator("#p-tags-2")).to_be_checked()
    expect(page.locator("#p-notes")).to_have_value("line one\nline two")
    expect(page.locator("#f-park_after")).to_have_value("3")
    # Keyboard only: the switch toggles with the space bar.
    page.focus("#p-enabled")
    page.keyboard.press("Space")
    page.click("#save")
    expect(page).to_have_url(re.compile(r"#/instances/kit$"))
    status, got = console.call("GET", "/v1/listenerInstances/kit")
    assert got["params"]["enabled"] == "true"
    assert got["params"]["token"] == "******"


def test_viewer_signs_in_and_is_offered_no_admin_action(tmp_path: Path, page: Page) -> None:
    tokens = f"admin:{ADMIN_TOKEN},viewer:{VIEWER_TOKEN},publisher:{PUBLISHER_TOKEN}"
    with console_servers(tmp_path, tokens=tokens) as console:
        package = base64.b64encode(dist_package("logger").read_bytes()).decode()
        status, _ = console.call("POST", "/v1/plugins", {"package": package}, ADMIN_TOKEN)
        assert status == 200
        status, _ = console.call(
            "POST",
            "/v1/listenerInstances?listenerInstanceId=audit",
            {
                "plugin": "plugins/logger",
                "params": {"logFile": str(tmp_path / "audit.jsonl")},
                "eventTypes": ["EVENT_TYPE_TASK_FAIL"],
            },
            ADMIN_TOKEN,
        )
        assert status == 200

        page.goto(console.base + "/")
        expect(page).to_have_url(re.compile("#/signin$"))
        expect(page.locator("#token")).to_be_focused()
        page.fill("#token", "wrong-token")
        page.keyboard.press("Enter")
        expect(page.locator("#token-err")).to_contain_text("not valid")
        shot(page, "signin")
        page.fill("#token", PUBLISHER_TOKEN)
        page.keyboard.press("Enter")
        expect(page.locator("#token-err")).to_contain_text("may only publish")
        page.fill("#token", VIEWER_TOKEN)
        page.keyboard.press("Enter")
        expect(page.locator("#role")).to_have_text("Signed in: viewer")
        # Keyboard: a section link opens its page and focus lands on the page's heading.
        page.focus("a[data-nav=events]")
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Events")
        expect(page.locator("h1")).to_be_focused()
        page.go_back()
        assert VIEWER_TOKEN not in page.url
        assert page.evaluate("document.cookie") == ""
        expect(page.locator("tr[data-instance=audit]")).to_be_visible()
        expect(page.locator("#new-instance")).to_have_count(0)
        page.click("tr[data-instance=audit] a")
        expect(page.locator("#status")).to_contain_text("logger")
        for control in ("#pause", "#retry", "#skip", "#edit", "#delete", "#replay", "#send-test"):
            expect(page.locator(control)).to_have_count(0)
        page.click("a[data-nav=plugins]")
        expect(page.locator("#plugin-logger")).to_be_visible()
        expect(page.locator("#package-file")).to_have_count(0)
        expect(page.locator("button", has_text="Uninstall")).to_have_count(0)
        page.goto(console.base + "/#/instances/new")
        expect(page.locator("h1")).to_have_text("Not allowed")

        # An admin sees the same pages with their actions; signing out forgets the token.
        page.click("#signout")
        expect(page).to_have_url(re.compile("#/signin$"))
        assert page.evaluate("sessionStorage.length") == 0
        page.fill("#token", ADMIN_TOKEN)
        page.keyboard.press("Enter")
        expect(page.locator("#role")).to_have_text("Signed in: admin")
        expect(page.locator("#new-instance")).to_be_visible()


def test_security_headers_and_no_framing(console: Console) -> None:
    import urllib.request

    with urllib.request.urlopen(console.base + "/", timeout=30) as reply:
        csp = reply.headers.get("Content-Security-Policy", "")
        body = reply.read().decode()
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp or "DENY" in str(reply.headers.get("X-Frame-Options"))
    assert "<script>" not in body and "style=" not in body  # nothing inline to allow
