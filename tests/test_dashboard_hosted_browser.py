"""The hosted-job pages in a real headless Chromium, against two demo processes sharing one
Redis: runs of both on one page, pause and resume from the console, phone width."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page, expect

from tests.servers import serve_demo
from tests.test_dashboard_browser import browser, new_page, shots

__all__ = ["browser", "shots"]  # fixtures


async def run_now(page: Page, board: str, name: str) -> None:
    await page.goto(f"{board}/hosted")
    await (
        page.locator(f'#hosted tr[data-name="{name}"]')
        .get_by_role("button", name="Run now")
        .click()
    )
    await expect(page.locator(".notice")).to_have_text("The job was started.")


async def no_sideways_scroll(page: Page) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px"


async def test_hosted_pages_show_every_process_and_pause_resume(
    tmp_path: Path, browser: Browser, shots: Path
) -> None:
    """Runs from two processes on one page with their process; Pause (confirmed) shows in
    both processes' consoles; Resume; nothing scrolls sideways at 390 px."""
    with (
        serve_demo(tmp_path) as first,
        serve_demo(tmp_path, HOSTEDJOBS_EMBEDDED_IDLE_TIMEOUT="60") as second,
    ):
        board, other = first + "/dashboard", second + "/dashboard"
        page = await new_page(browser)
        await run_now(page, board, "refresh-stats")
        await run_now(page, other, "refresh-stats")

        # Each process's run is on the first process's page, with its process.
        await page.goto(f"{board}/hosted/refresh-stats")
        await expect(page.locator("#processes tbody tr")).to_have_count(2)
        manual = page.locator("#history tbody tr").filter(has_text="run now")
        await expect(manual).to_have_count(2)
        processes = {
            (await cell.inner_text()).strip()
            for cell in await manual.locator('td[data-label="Process"]').all()
        }
        assert len(processes) == 2 and all("pid" in p for p in processes), processes
        await page.goto(f"{board}/hosted")
        await expect(page.locator("#hosted tbody tr")).to_have_count(4)
        await page.screenshot(path=shots / "dashboard-hosted-runs.png", full_page=True)

        # Pause from the job's page (a confirmation first); the other process's console
        # shows it paused too; resume from the list.
        await page.goto(f"{board}/hosted/refresh-stats")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.get_by_role("button", name="Pause").click()
        await expect(page.locator(".notice")).to_contain_text("paused in every process")
        await expect(page.locator("#paused")).to_have_text("paused")
        await expect(page.locator("#state")).to_contain_text("no new runs start")
        await page.screenshot(path=shots / "dashboard-hosted-job.png", full_page=True)
        elsewhere = await new_page(browser)
        await elsewhere.goto(f"{other}/hosted")
        row = elsewhere.locator('#hosted tr[data-name="refresh-stats"]')
        await expect(row.locator(".pill.paused")).to_have_text("paused")
        await row.get_by_role("button", name="Resume").click()
        await expect(elsewhere.locator(".notice")).to_have_text(
            "The job is resumed in every process."
        )
        await expect(elsewhere.locator("#paused")).to_have_count(0)
        # The first console, refreshing live, sees the resume without a reload.
        await expect(page.locator("#paused")).to_have_count(0)
        await expect(page.get_by_role("button", name="Pause")).to_be_visible()

        phone = await new_page(browser, width=390, height=844)
        for path in ("/hosted", "/hosted/refresh-stats"):
            await phone.goto(board + path)
            await expect(phone.locator("h1")).to_be_visible()
            await no_sideways_scroll(phone)
        for each in (page, elsewhere, phone):
            assert each.errors == []  # type: ignore[attr-defined]
