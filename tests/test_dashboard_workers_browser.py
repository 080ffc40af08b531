"""The workers page in a real headless Chromium, against the demo app under uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.async_api import Browser, expect

from tests.test_dashboard_browser import browser, demo, new_page, post, shots, wait_status

__all__ = ["browser", "demo", "shots"]  # fixtures, used by name


async def test_workers_page_lists_the_demo_worker_and_links_its_running_job(
    demo: str, browser: Browser, shots: Path
) -> None:
    """The demo's worker shows alive with its pid, concurrency and running export; the job's
    link opens the job page; at 390 px the table stacks and nothing scrolls sideways."""
    board = demo + "/dashboard"
    # One step a second: it still runs while the page is read.
    job_id = post(demo + "/exports", {"steps": 40})["job_id"]
    wait_status(demo, job_id, "running")

    page = await new_page(browser)
    await page.goto(board + "/")
    await page.locator("#workers-link").click()
    await expect(page).to_have_url(board + "/workers")
    await expect(page.locator('nav a[aria-current="page"]')).to_have_text("Workers")
    row = page.locator("#workers tbody tr")
    await expect(row).to_have_count(1)
    await expect(row).to_have_attribute("data-state", "alive")
    # The demo runs its worker in the web process: uvicorn's pid is the worker's.
    pid = int(await row.locator(".pid").inner_text())
    assert pid > 0 and pid != os.getpid()
    await expect(row.locator(".concurrency")).to_have_text("16")
    link = row.locator(f'.running a[href$="/jobs/view?id={job_id}"]')
    await expect(link).to_have_text(job_id)
    await expect(row.locator(".running")).to_contain_text("export-signups@1")
    await expect(row.locator(".rate")).not_to_have_text("")
    await page.screenshot(path=shots / "dashboard-workers.png", full_page=True)
    await link.click()
    await expect(page).to_have_url(f"{board}/jobs/view?id={job_id}")
    await expect(page.locator("#progress")).to_be_visible()

    phone = await new_page(browser, width=390, height=844)
    await phone.goto(board + "/workers")
    await expect(phone.locator("#workers tbody tr .pid")).to_have_text(str(pid))
    overflow = await phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"/workers scrolls sideways by {overflow}px"
    await phone.screenshot(path=shots / "dashboard-workers-phone.png", full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
    assert phone.errors == []  # type: ignore[attr-defined]
