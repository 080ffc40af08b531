"""Finding jobs and acting on them in a real headless Chromium, against the demo app: search,
filters and sort, bulk retry / delete / cancel with their confirmation, cancelling a running
job from its page, and a failed job's traceback; no console errors, nothing scrolling
sideways at phone width. Fixtures come from `test_dashboard_browser`."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page, expect

from tests import test_dashboard_browser as base
from tests.servers import request_json
from tests.test_dashboard_browser import new_page, post, wait_status

# The demo, the browser and the screenshot folder, as the dashboard's other browser tests
# have them.
demo = base.demo
browser = base.browser
shots = base.shots


async def no_sideways_scroll(page: Page, what: str) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{what} scrolls sideways by {overflow}px"


async def test_search_filter_sort_and_the_traceback(
    demo: str, browser: Browser, shots: Path
) -> None:
    """The list opens on a state that holds jobs; the search box goes to a job by its id (or
    says there is none); filters by type and the order narrow and turn the list; a failed
    job's page shows its traceback in a collapsible block."""
    board = demo + "/dashboard"
    welcome = post(demo + "/signups", {"email": "ada@example.com"})["welcome_job"]
    wait_status(demo, welcome, "succeeded")
    exports = [post(demo + "/exports", {"steps": 1})["job_id"] for _ in range(3)]
    for job_id in exports:
        wait_status(demo, job_id, "succeeded")
    failing = post(demo + "/exports", {"steps": 1, "fail": True})["job_id"]
    wait_status(demo, failing, "failed")

    page = await new_page(browser)
    await page.goto(board + "/jobs")
    # Nothing runs: the list opens on the failed jobs, not on the empty queue.
    await expect(page.locator('.tabs a[aria-current="page"]')).to_contain_text("failed")
    await expect(page.locator("#jobs tbody tr")).to_have_count(1)

    await page.locator("#q").fill(failing)
    await page.locator("#q").press("Enter")
    await page.wait_for_url(f"**/jobs/view?id={failing}")
    await expect(page.locator("#error")).to_contain_text("the export target refused the file")
    trace = page.locator("#traceback-text")
    await expect(trace).to_be_visible()
    await expect(trace).to_contain_text("Traceback (most recent call last)")
    await expect(trace).to_contain_text("in export_signups")
    await expect(trace).to_contain_text("RuntimeError: the export target refused the file")
    await expect(page.locator("#tries li")).to_have_count(1)
    await page.screenshot(path=shots / "dashboard-traceback.png", full_page=True)
    await page.locator("#traceback summary").click()
    await expect(trace).to_be_hidden()

    await page.goto(board + "/jobs")
    await page.locator("#q").fill("no-such-job-id")
    await page.locator("#q").press("Enter")
    await expect(page.locator("#no-such-job")).to_contain_text("no-such-job-id")

    await page.goto(board + "/jobs?state=succeeded")
    await expect(page.locator("#jobs tbody tr")).to_have_count(4)
    await page.locator("#filters summary").click()
    await page.locator('#filter-form input[name="type"]').fill("export-signups")
    await page.locator("#filter-form").get_by_role("button", name="Apply").click()
    await page.wait_for_url("**type=export-signups**")
    rows = page.locator("#jobs tbody tr")
    await expect(rows).to_have_count(3)
    await expect(page.locator("#filters summary")).to_contain_text("(3 match)")
    newest = [await rows.nth(i).locator("td.mono a").inner_text() for i in range(3)]
    assert set(newest) == set(exports)
    await page.locator('#filter-form select[name="sort"]').select_option("oldest")
    await page.locator("#filter-form").get_by_role("button", name="Apply").click()
    await page.wait_for_url("**sort=oldest**")
    await expect(rows.first.locator("td.mono a")).to_have_text(newest[-1])
    oldest = [await rows.nth(i).locator("td.mono a").inner_text() for i in range(3)]
    assert oldest == newest[::-1]
    await page.screenshot(path=shots / "dashboard-jobs-filtered.png", full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_bulk_retry_delete_and_cancel_with_their_confirmation(
    demo: str, browser: Browser, shots: Path
) -> None:
    """Ticked jobs (or every job on the page) go to a confirmation naming how many; its
    button acts and the result says how many were done."""
    board = demo + "/dashboard"
    failing = [post(demo + "/exports", {"steps": 1, "fail": True})["job_id"] for _ in range(3)]
    for job_id in failing:
        wait_status(demo, job_id, "failed")
    # Each sign-up leaves a reminder an hour away: scheduled jobs to delete and cancel.
    reminders = [
        post(demo + "/signups", {"email": f"user{i}@example.com"})["reminder_job"] for i in range(3)
    ]
    for job_id in reminders:
        wait_status(demo, job_id, "scheduled")

    page = await new_page(browser)
    await page.goto(board + "/jobs?state=failed")
    await expect(page.locator("#jobs tbody tr")).to_have_count(3)
    await page.locator("#select-all").check()
    await expect(page.locator('input[name="ids"]:checked')).to_have_count(3)
    await page.locator("#bulk-retry").click()
    await expect(page.locator("#bulk-question")).to_have_text("Retry 3 failed jobs?")
    await expect(page.locator("#bulk-jobs tbody tr")).to_have_count(3)
    await page.screenshot(path=shots / "dashboard-bulk-confirm.png", full_page=True)
    await page.locator("#bulk-go").click()
    await expect(page.locator("#bulk-result")).to_have_text("Retried 3 of 3 jobs")
    for job_id in failing:
        wait_status(demo, job_id, "failed")  # ran again, and failed again
        info = request_json(f"{demo}/jobs/{job_id}")[1]
        assert info["tries"] == 1

    # Cancel one ticked scheduled job.
    await page.goto(board + "/jobs?state=scheduled")
    await expect(page.locator("#jobs tbody tr")).to_have_count(3)
    await page.locator(f'input[name="ids"][value="{reminders[0]}"]').check()
    await page.locator("#bulk-cancel").click()
    await expect(page.locator("#bulk-question")).to_have_text("Cancel 1 scheduled job?")
    await page.locator("#bulk-go").click()
    await expect(page.locator("#bulk-result")).to_have_text("Cancelled 1 of 1 job")

    # Delete every job left on the page, without ticking any (works without scripts too).
    await page.goto(board + "/jobs?state=scheduled")
    await expect(page.locator("#jobs tbody tr")).to_have_count(2)
    await page.locator("#page-delete").click()
    await expect(page.locator("#bulk-question")).to_have_text("Delete 2 scheduled jobs?")
    await page.locator("#bulk-go").click()
    await expect(page.locator("#bulk-result")).to_have_text("Deleted 2 of 2 jobs")

    # All three are listed as cancelled now.
    await page.goto(board + "/jobs?state=cancelled")
    for job_id in reminders:
        await expect(page.locator(f'#jobs a[href$="/jobs/view?id={job_id}"]')).to_have_count(1)
    await expect(page.locator("#jobs")).to_contain_text("deleted")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_cancel_a_running_job_from_its_page(demo: str, browser: Browser) -> None:
    """The long export is stopped from its page: the run ends cancelled."""
    board = demo + "/dashboard"
    job_id = post(demo + "/exports", {"steps": 60})["job_id"]
    wait_status(demo, job_id, "running")
    page = await new_page(browser)
    await page.goto(f"{board}/jobs/{job_id}")
    await expect(page.locator("#job-status")).to_have_text("running")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.locator(".notice")).to_contain_text("The job was cancelled")
    await expect(page.locator("#job-status")).to_have_text("cancelled")
    info = request_json(f"{demo}/jobs/{job_id}")[1]
    assert (info["status"], info["message"]) == ("cancelled", "cancelled while it ran")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_finding_and_bulk_pages_at_phone_width(
    demo: str, browser: Browser, shots: Path
) -> None:
    """At 390 px the filtered list with its bulk bar, the confirmation and a traceback fit."""
    board = demo + "/dashboard"
    failing = [post(demo + "/exports", {"steps": 1, "fail": True})["job_id"] for _ in range(2)]
    for job_id in failing:
        wait_status(demo, job_id, "failed")
    page = await new_page(browser, width=390, height=844)
    await page.goto(board + "/jobs?state=failed&type=export-signups&sort=oldest")
    await expect(page.locator("#jobs tbody tr")).to_have_count(2)
    await no_sideways_scroll(page, "the filtered list")
    await page.screenshot(path=shots / "dashboard-jobs-filtered-phone.png", full_page=True)
    await page.locator("#page-retry").click()
    await expect(page.locator("#bulk-question")).to_have_text("Retry 2 failed jobs?")
    await no_sideways_scroll(page, "the confirmation")
    await page.goto(f"{board}/jobs/{failing[0]}")
    await expect(page.locator("#traceback-text")).to_be_visible()
    await no_sideways_scroll(page, "the traceback")
    assert page.errors == []  # type: ignore[attr-defined]
