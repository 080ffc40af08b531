"""The dashboard in a real headless Chromium, against the demo app under uvicorn.

Chromium is Debian's (``apt-get install chromium``; `.ci/run` installs it when missing), driven
by Playwright. Screenshots of every page go to ``$HOSTEDJOBS_SCREENSHOTS`` when it is set
(``docs/images`` to refresh the docs' pictures), else to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.servers import request_json, serve_demo

# Assertions retry for up to 30 s (Playwright's default is 5 s): pages load slowly on a busy
# machine.
expect.set_options(timeout=30_000)


def _chromium() -> str:
    for candidate in (os.environ.get("HOSTEDJOBS_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    message = "no Chromium: apt-get install chromium (or set HOSTEDJOBS_CHROMIUM)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    """The demo with reminders an hour away, so one stays scheduled for the delete test."""
    with serve_demo(tmp_path, failing_jobs=True, REMINDER_DELAY="3600") as base:
        yield base


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("HOSTEDJOBS_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def post(url: str, body: object) -> dict[str, str]:
    status, answer = request_json(url, "POST", body)
    assert status == 202, answer
    assert isinstance(answer, dict)
    return answer


def wait_status(demo: str, job_id: str, wanted: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (info := request_json(f"{demo}/jobs/{job_id}")[1]).get("status") != wanted:
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


async def new_page(browser: Browser, width: int = 1280, height: int = 860) -> Page:
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(60_000)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def test_dashboard_pages_and_actions_in_chromium(
    demo: str, browser: Browser, shots: Path
) -> None:
    """Every page loads with real jobs; run now, delete and retry work; the bar moves live."""
    board = demo + "/dashboard"
    signup = post(demo + "/signups", {"email": "<script>window.pwned=1</script>@example.com"})
    wait_status(demo, signup["welcome_job"], "succeeded")
    failing = post(demo + "/exports", {"steps": 1, "fail": True})["job_id"]
    wait_status(demo, failing, "failed")
    # One step a second: it must still run when its page is read, late in the test.
    long_export = post(demo + "/exports", {"steps": 40})["job_id"]
    wait_status(demo, long_export, "running")

    page = await new_page(browser)

    # Overview: the worker's heartbeat, live counts, startup state.
    await page.goto(board + "/")
    await expect(page.locator("#workers tbody tr")).to_have_count(1)
    await expect(page.locator("#startup-state")).to_have_text("succeeded")
    await expect(page.locator("#count-running")).to_have_text("1")
    await expect(page.locator("#count-failed-hour")).to_have_text("1")
    await page.screenshot(path=shots / "dashboard-overview.png", full_page=True)

    # Hosted jobs: run the per-process cron job now; its run shows up in the history.
    await page.goto(board + "/hosted")
    await expect(page.locator("#hosted tbody tr")).to_have_count(4)
    await page.screenshot(path=shots / "dashboard-hosted.png", full_page=True)
    row = page.locator('#hosted tr[data-name="refresh-stats"]')
    await row.get_by_role("button", name="Run now").click()
    await expect(page.locator(".notice")).to_have_text("The job was started.")
    assert page.url.startswith(board + "/hosted/refresh-stats")
    manual_run = page.locator("#history tbody tr").filter(has_text="run now")
    await expect(manual_run).to_have_count(1)
    await expect(manual_run).to_contain_text("succeeded")

    # A running job's page: the progress bar moves without a reload.
    await page.goto(f"{board}/jobs/{long_export}")
    await page.evaluate("window.sameDocument = true")
    bar = page.locator("#progress progress")
    first = float(await bar.get_attribute("value") or 0)
    await expect(bar).not_to_have_attribute("value", str(first))
    assert await page.evaluate("window.sameDocument") is True
    await expect(page.locator("#progress")).to_contain_text("step")
    await page.screenshot(path=shots / "dashboard-job.png", full_page=True)

    # Markup in a payload renders as text and never runs.
    await page.goto(f"{board}/jobs/{signup['welcome_job']}")
    await expect(page.locator("#payload")).to_contain_text("<script>window.pwned=1</script>")
    assert await page.evaluate("window.pwned") is None

    # Delete a scheduled job (confirming the dialog).
    await page.goto(board + "/jobs?state=scheduled")
    await page.screenshot(path=shots / "dashboard-jobs.png", full_page=True)
    await page.locator(f'a[href$="/jobs/view?id={signup["reminder_job"]}"]').click()
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete").click()
    await expect(page.locator(".notice")).to_have_text("The job was deleted; it will not run.")
    # Kept as cancelled ("deleted") for the retention period; its id is free again.
    deleted = request_json(f"{demo}/jobs/{signup['reminder_job']}")[1]
    assert (deleted["status"], deleted["message"]) == ("cancelled", "deleted")

    # Retry a failed job: it is queued again under its id and runs (and fails) again.
    await page.goto(board + "/jobs?state=failed")
    await page.locator(f'a[href$="/jobs/view?id={failing}"]').click()
    await expect(page.locator("#error")).to_contain_text("the export target refused the file")
    await page.screenshot(path=shots / "dashboard-failed-job.png", full_page=True)
    await page.get_by_role("button", name="Retry").click()
    await expect(page.locator(".notice")).to_have_text("The job is queued again.")
    await expect(page.locator("#job-status")).to_have_text("failed")
    await expect(page.get_by_role("button", name="Retry")).to_be_visible()

    assert page.errors == []  # type: ignore[attr-defined]


async def test_dashboard_reads_well_at_phone_width(
    demo: str, browser: Browser, shots: Path
) -> None:
    """At 390 px wide, tables become stacked rows and nothing scrolls sideways."""
    job_id = post(demo + "/exports", {"steps": 20})["job_id"]
    wait_status(demo, job_id, "running")
    page = await new_page(browser, width=390, height=844)
    for path, name in (("/", "overview"), ("/hosted", "hosted"), (f"/jobs/{job_id}", "job")):
        await page.goto(f"{demo}/dashboard{path}")
        await expect(page.locator("h1")).to_be_visible()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
        await page.screenshot(path=shots / f"dashboard-{name}-phone.png", full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
