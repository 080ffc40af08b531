"""The run-history charts and the job types pages in a real headless Chromium, on the demo."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from tests import test_dashboard_browser as shared
from tests.test_dashboard_browser import new_page, post, wait_status

# The demo (with failing jobs), Chromium and the screenshot folder of the dashboard's tests.
demo, browser, shots = shared.demo, shared.browser, shared.shots


async def test_history_chart_and_job_types_in_chromium(
    demo: str, browser: Browser, shots: Path
) -> None:
    """Real runs (succeeded and failed) show in the overview's chart, in the job types table
    with their run times, and on the type's page, which links to its failed jobs; the 24 h
    view renders too; no console error."""
    board = demo + "/dashboard"
    for n in range(3):
        signup = post(demo + "/signups", {"email": f"user{n}@example.com"})
        wait_status(demo, signup["welcome_job"], "succeeded")
    failing = post(demo + "/exports", {"steps": 1, "fail": True})["job_id"]
    wait_status(demo, failing, "failed")

    page = await new_page(browser)
    await page.goto(board + "/")
    chart = page.locator("#history-section figure.chart")
    await expect(chart.locator("#history-title")).to_have_text("Runs in the last hour, by minute")
    await expect(page.locator("#history-failed")).to_have_text("1")
    assert int(await page.locator("#history-succeeded").inner_text()) >= 3
    assert await chart.locator("rect.bar-succeeded").count() >= 1
    assert await chart.locator("rect.bar-failed").count() == 1
    await page.locator("#history-section").screenshot(path=shots / "dashboard-history.png")

    await page.locator("#history-section .windows a", has_text="24h").click()
    await expect(chart.locator("#history-title")).to_have_text("Runs in 24 h, by 15 min")
    await expect(page.locator("#history-failed")).to_have_text("1")

    await page.goto(board + "/types")
    row = page.locator('#types tr[data-name="export-signups"]')
    await expect(row.locator('td[data-label="Failed"]')).to_have_text("1")
    await expect(row.locator('td[data-label="Failure rate"]')).to_have_text("100.0 %")
    welcome = page.locator('#types tr[data-name="welcome-email"]')
    assert int(await welcome.locator('td[data-label="Succeeded"]').inner_text()) >= 3
    await expect(welcome.locator('td[data-label="p50"]')).to_contain_text("ms")
    await expect(row.locator('td[data-label="p95"]')).to_contain_text("s")
    await page.screenshot(path=shots / "dashboard-types.png", full_page=True)

    await row.get_by_role("link", name="export-signups").click()
    await expect(page.locator("h1")).to_have_text("export-signups")
    await expect(page.locator("#history-failed")).to_have_text("1")
    link = page.locator("#type-failed-jobs")
    assert await link.get_attribute("href") == "/dashboard/jobs?type=export-signups&state=failed"
    assert page.errors == []  # type: ignore[attr-defined]


async def test_history_pages_read_well_at_phone_width(
    demo: str, browser: Browser, shots: Path
) -> None:
    """At 390 px the chart fits, the job types table stacks, and nothing scrolls sideways."""
    signup = post(demo + "/signups", {"email": "phone@example.com"})
    wait_status(demo, signup["welcome_job"], "succeeded")
    page = await new_page(browser, width=390, height=844)
    for path in ("/", "/?window=24h", "/types", "/types/welcome-email"):
        await page.goto(f"{demo}/dashboard{path}")
        await expect(page.locator("figure.chart svg")).to_be_visible()
        box = await page.locator("figure.chart svg").bounding_box()
        assert box is not None and box["width"] > 250, box
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
    await page.goto(f"{demo}/dashboard/types")
    await page.screenshot(path=shots / "dashboard-types-phone.png", full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
