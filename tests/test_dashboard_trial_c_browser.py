"""Faults a newcomer found trying the console (issue 13), in a real headless Chromium against
the demo app. Fixtures come from `test_dashboard_browser`."""

from __future__ import annotations

from playwright.async_api import Browser, Page, expect

from tests import test_dashboard_browser as base
from tests.servers import request_json
from tests.test_dashboard_browser import new_page, post, wait_status

demo = base.demo
browser = base.browser


async def skipped_refreshes(page: Page) -> int:
    return int(await page.locator("#main").get_attribute("data-refreshes-skipped") or 0)


async def wait_skips(page: Page, more_than: int) -> None:
    """Until live refresh has skipped more than ``more_than`` times: refreshes came due."""
    await page.wait_for_function(
        "n => Number(document.getElementById('main').dataset.refreshesSkipped || 0) > n",
        arg=more_than,
        timeout=60_000,
    )


async def test_live_refresh_waits_while_a_form_is_edited(demo: str, browser: Browser) -> None:
    """Ticked boxes and a typed filter survive several refresh intervals, even with the focus
    elsewhere; after the form is reset the page refreshes again."""
    board = demo + "/dashboard"
    failing = [post(demo + "/exports", {"steps": 1, "fail": True})["job_id"] for _ in range(3)]
    for job_id in failing:
        wait_status(demo, job_id, "failed")

    page = await new_page(browser)
    await page.goto(board + "/jobs?state=failed")
    await expect(page.locator("#jobs tbody tr")).to_have_count(3)
    # A refresh happens while nothing is edited.
    await page.wait_for_function("() => document.getElementById('main').dataset.refreshes > 0")

    boxes = page.locator('input[name="ids"]')
    await boxes.nth(0).check()
    await boxes.nth(2).check()
    await page.locator("h1").click()  # the focus leaves the form
    await wait_skips(page, await skipped_refreshes(page) + 2)
    await expect(page.locator('input[name="ids"]:checked')).to_have_count(2)
    await expect(boxes.nth(0)).to_be_checked()
    await expect(boxes.nth(2)).to_be_checked()

    # Unticked again: the selection is gone, but the form was edited: still paused.
    await boxes.nth(0).uncheck()
    await boxes.nth(2).uncheck()
    await page.locator("#filters summary").click()
    await page.locator('#filter-form input[name="type"]').fill("demo.export")
    await page.locator("h1").click()
    await wait_skips(page, await skipped_refreshes(page) + 2)
    await expect(page.locator('#filter-form input[name="type"]')).to_have_value("demo.export")

    # Reset: refreshes resume (the typed value is thrown away by the reset itself).
    await page.evaluate(
        "document.getElementById('filter-form').reset();"
        "document.getElementById('bulk').reset();"
        "window.refreshesBefore = Number(document.getElementById('main').dataset.refreshes)"
    )
    await page.wait_for_function(
        "() => Number(document.getElementById('main').dataset.refreshes) > window.refreshesBefore",
        timeout=60_000,
    )
    assert page.errors == []  # type: ignore[attr-defined]


async def test_the_bulk_confirmation_holds_still_and_its_result_survives_a_reload(
    demo: str, browser: Browser
) -> None:
    """The confirmation never refreshes itself; after the action the browser is on the list
    (a GET), so reloading it acts on nothing again."""
    board = demo + "/dashboard"
    failing = [post(demo + "/exports", {"steps": 1, "fail": True})["job_id"] for _ in range(2)]
    for job_id in failing:
        wait_status(demo, job_id, "failed")
    page = await new_page(browser)
    await page.goto(board + "/jobs?state=failed")
    await page.locator("#select-all").check()
    await page.locator("#bulk-retry").click()
    await expect(page.locator("#bulk-question")).to_have_text("Retry 2 failed jobs?")
    await expect(page.locator("#main")).to_have_attribute("data-refresh", "0")
    await page.locator("#bulk-go").click()
    await expect(page.locator("#bulk-result")).to_have_text("Retried 2 of 2 jobs")
    assert "/jobs?state=failed" in page.url and "done=retry" in page.url
    for job_id in failing:
        wait_status(demo, job_id, "failed")  # ran again, and failed again
    await page.reload()  # a GET: no "resubmit the form?" and no second retry
    await expect(page.locator("#bulk-result")).to_have_text("Retried 2 of 2 jobs")
    for job_id in failing:
        info = request_json(f"{demo}/jobs/{job_id}")[1]
        assert info["status"] == "failed" and info["tries"] == 1
    assert page.errors == []  # type: ignore[attr-defined]
