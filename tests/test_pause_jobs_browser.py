"""Pausing a job type from the console in a real headless Chromium, against the demo under
uvicorn: Pause (confirmed) holds new jobs in the queue with a badge and a held count, Resume
runs them; no console errors, no sideways scroll at 390 px."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from tests.servers import serve_demo
from tests.test_dashboard_browser import browser, new_page, post, shots, wait_status
from tests.test_dashboard_hosted_browser import no_sideways_scroll

__all__ = ["browser", "shots"]  # fixtures


async def test_pause_and_resume_a_job_type_in_chromium(
    tmp_path: Path, browser: Browser, shots: Path
) -> None:
    with serve_demo(tmp_path) as demo:
        board = demo + "/dashboard"
        first = post(demo + "/signups", {"email": "first@example.com"})
        wait_status(demo, first["welcome_job"], "succeeded")

        page = await new_page(browser)
        await page.goto(f"{board}/types/welcome-email")
        await expect(page.locator("#state")).to_have_text("active")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.get_by_role("button", name="Pause").click()
        await expect(page.locator(".notice")).to_contain_text("The job type is paused")
        await expect(page.locator("#paused")).to_have_text("paused")

        held = post(demo + "/signups", {"email": "held@example.com"})
        # The worker claims the job and parks it: queued, held, with the reason.
        await page.goto(f"{board}/types/welcome-email")
        await expect(page.locator("#held")).to_have_text("1")
        await expect(page.locator("#state")).to_contain_text("paused: every job")
        await page.screenshot(path=shots / "dashboard-type-paused.png", full_page=True)

        listing = await new_page(browser)
        await listing.goto(f"{board}/types")
        row = listing.locator('#paused-types tr[data-name="welcome-email"]')
        await expect(row.locator(".pill.paused")).to_have_text("paused")
        await expect(row.locator(".held")).to_have_text("1")
        await expect(
            listing.locator('#types tr[data-name="welcome-email"] .pill.paused')
        ).to_have_text("paused")
        await row.get_by_role("button", name="Resume").click()
        await expect(listing.locator(".notice")).to_contain_text("The job type is resumed")
        await expect(listing.locator("#paused")).to_have_count(0)
        wait_status(demo, held["welcome_job"], "succeeded")
        await listing.goto(f"{board}/types/welcome-email")
        await expect(listing.locator("#held")).to_have_text("0")
        await expect(listing.get_by_role("button", name="Pause")).to_be_visible()

        phone = await new_page(browser, width=390, height=844)
        await page.goto(f"{board}/types/welcome-email")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.get_by_role("button", name="Pause").click()
        await expect(page.locator("#paused")).to_have_text("paused")
        for path in ("/types", "/types/welcome-email"):
            await phone.goto(board + path)
            await expect(phone.locator("h1")).to_be_visible()
            await no_sideways_scroll(phone)
        await phone.screenshot(path=shots / "dashboard-types-paused-phone.png", full_page=True)
        for each in (page, listing, phone):
            assert each.errors == []  # type: ignore[attr-defined]
