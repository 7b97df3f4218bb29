"""The console in a real browser: Debian's Chromium driven by Playwright against two service processes on one
real Redis. Log in; watch traffic sent to the other instance appear; find the hammering client; explain and
reset a limit; edit, conflict, invalid edit, rollback; a store that loses the limits shows a banner.

Screenshots of each page go to the test's directory, or to $CONSOLE_SCREENSHOTS (how docs/console/ was made)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Page, expect, sync_playwright

from ratelimitd.store.embedded import EmbeddedRedis
from tests.integration.test_stored_limits import Api, enforced_limit, live, wait_for_limit
from tests.service import RLS, ServiceProcess

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "alice-" + uuid.uuid4().hex
HAMMER = "<img src=x onerror=window.__pwned=1>"
FILES = (
    "domain: files\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 3, name: login}\n"
)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess, EmbeddedRedis]]:
    store = EmbeddedRedis().start()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "files.yaml").write_text(FILES)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{TOKEN}\n")
    args = ("--admin-token-file", str(tokens))
    try:
        with (
            ServiceProcess(tmp_path / "conf", store.url, *args).start() as a,
            ServiceProcess(tmp_path / "conf", store.url, *args).start() as b,
        ):
            yield a, b, store
    finally:
        store.close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium (apt)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        yield context.new_page()
        browser.close()


def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("CONSOLE_SCREENSHOTS", tmp_path / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_the_console(fleet: tuple[ServiceProcess, ServiceProcess, EmbeddedRedis], page: Page, tmp_path: Path) -> None:
    a, b, store = fleet
    out = shots(tmp_path)
    api = Api(a, TOKEN)
    assert api.call("PUT", "/domains/live", live(4), {"If-None-Match": "*"})[0] == 201
    wait_for_limit(b, 4)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    console = f"http://127.0.0.1:{a.http_port}/console"
    response = page.goto(console)
    assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]

    # log in: a wrong token is refused, the right one opens the overview
    page.fill("#token", "wrong")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_have_text("The token was refused.")
    page.screenshot(path=out / "login.png")
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    expect(page.locator("#tabs")).to_be_visible()

    # traffic sent to the OTHER instance shows on this one's overview within 2 s
    for _ in range(12):
        b.check("files", [("user", HAMMER)])
    for i in range(5):
        b.check("files", [("user", f"someone-{i}")])
    sent = time.monotonic()
    row = page.locator('#rules tr[data-rule="files.user"]')
    expect(row.locator("td.over")).to_be_visible(timeout=2000)
    assert time.monotonic() - sent <= 2.0
    expect(page.locator('#rules tr[data-rule="live.user"]')).to_be_visible()
    page.screenshot(path=out / "overview.png", full_page=True)

    # top limited keys: the hammering client, shown as text and never as HTML
    page.click('#tabs button[data-tab="top"]')
    card = page.locator('#top-list .card[data-rule="files.user"]')
    expect(card.locator("td.value").first).to_have_text(HAMMER, timeout=3000)
    expect(card.locator("td.num").first).to_have_text("9")
    assert page.locator("#top-list img").count() == 0 and page.evaluate("window.__pwned") is None
    page.screenshot(path=out / "top-keys.png", full_page=True)

    # explain, then reset the limit
    page.click('#tabs button[data-tab="explain"]')
    page.select_option("#explain-domain", "files")
    page.fill("#explain-entries", f"user={HAMMER}")
    page.click("#explain-form button")
    expect(page.locator('#explain-result dd[data-field="code"]')).to_have_text("OVER_LIMIT")
    expect(page.locator('#explain-result dd[data-field="rule"]')).to_have_text(
        "files.user: 3 per minute, fixed_window (name: login)"
    )
    page.screenshot(path=out / "explain.png", full_page=True)
    page.click("#reset")
    expect(page.locator("#explain-message")).to_have_text("Reset.")
    expect(page.locator('#explain-result dd[data-field="remaining"]')).to_have_text("3")
    deadline = time.monotonic() + 1.5  # the other instance's local over-limit cache holds a denial up to 1 s
    while b.check("files", [("user", HAMMER)], hits=0).overall_code != RLS.OK:
        assert time.monotonic() < deadline, "the reset was not seen by the other instance"
        time.sleep(0.05)

    # edit: a change applied in the browser is enforced by the other instance
    page.click('#tabs button[data-tab="edit"]')
    page.select_option("#edit-domain", "live")
    expect(page.locator("#editor")).to_have_value(live(4))
    page.fill("#editor", live(9))
    expect(page.locator("#diff .add")).to_contain_text("requests_per_unit: 9")
    expect(page.locator("#problems li.ok")).to_have_text("valid")
    page.screenshot(path=out / "edit.png", full_page=True)
    page.click("#apply")
    expect(page.locator("#edit-status")).to_have_text("Applied as version 2.")
    wait_for_limit(b, 9)

    # a concurrent edit elsewhere: the browser's apply is refused and shown, nothing changes
    assert api.call("PUT", "/domains/live", live(12), {"If-Match": '"2"'})[0] == 200
    page.fill("#editor", live(15))
    page.click("#apply")
    expect(page.locator("#edit-status")).to_contain_text("Someone else changed it")
    page.screenshot(path=out / "edit-conflict.png", full_page=True)
    assert api.call("GET", "/domains/live")[2] == live(12)

    # an invalid edit shows its error at its line and changes nothing
    page.select_option("#edit-domain", "files")
    page.select_option("#edit-domain", "live")
    expect(page.locator("#editor")).to_have_value(live(12))
    page.fill("#editor", live(12).replace("minute", "fortnight"))
    expect(page.locator("#problems li.error")).to_have_text(
        "line 4: live: descriptors[0].rate_limit: invalid rate limit unit 'fortnight'"
    )
    page.click("#apply")
    expect(page.locator("#edit-status")).to_contain_text("Refused, nothing changed")
    page.screenshot(path=out / "edit-invalid.png", full_page=True)
    assert api.call("GET", "/domains/live")[1]["ETag"] == '"3"'

    # history and rollback to the first version, enforced by the other instance
    page.select_option("#edit-domain", "files")
    expect(page.locator("#editor")).to_have_js_property("readOnly", True)
    expect(page.locator("#apply")).to_be_disabled()
    page.select_option("#edit-domain", "live")
    expect(page.locator("#history tbody tr")).to_have_count(3)
    page.click('#history button[data-version="1"]')
    expect(page.locator("#edit-status")).to_have_text("Rolled back to 1 as version 4.")
    wait_for_limit(b, 4)
    page.screenshot(path=out / "history.png", full_page=True)

    # the store loses the limits: a banner says so, and they are still enforced
    redis.Redis.from_url(store.url).flushall()
    expect(page.locator("#banner")).to_be_visible(timeout=3000)
    assert enforced_limit(b) == 4
    page.click('#tabs button[data-tab="overview"]')
    page.screenshot(path=out / "lost-banner.png")

    assert any("/v1/admin/" in u for u in urls), "the page called no admin API"
    assert not any(TOKEN in u for u in urls), "the token appeared in a URL"
