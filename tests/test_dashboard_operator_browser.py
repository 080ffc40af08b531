"""Issue 13's bar, in a real headless Chromium against the demo: an operator answers, from the
console alone, what failed in the last hour and why, whether it is getting worse, which job
type is slow, and stops or retries a batch. Each answer is a screenshot in docs/dashboard.md
(``dashboard-operator-*.png``). Fixtures come from `test_dashboard_browser`."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from tests import test_dashboard_browser as base
from tests.servers import request_json
from tests.test_dashboard_browser import new_page, post, wait_status

demo = base.demo
browser = base.browser
shots = base.shots


def _seconds(shown: str) -> float:
    """A run time as the console prints it (``"12 ms"``, ``"2.01 s"``), in seconds."""
    number, unit = shown.split()
    return float(number) / (1000 if unit == "ms" else 1)


async def test_an_operator_answers_four_questions_from_the_console(
    demo: str, browser: Browser, shots: Path
) -> None:
    board = demo + "/dashboard"
    welcomes = [
        post(demo + "/signups", {"email": f"user{i}@example.com"})["welcome_job"] for i in range(3)
    ]
    slow = [post(demo + "/exports", {"steps": 2})["job_id"] for _ in range(2)]
    failing = [post(demo + "/exports", {"steps": 1, "fail": True})["job_id"] for _ in range(3)]
    for job_id in welcomes + slow:
        wait_status(demo, job_id, "succeeded")
    for job_id in failing:
        wait_status(demo, job_id, "failed")
    page = await new_page(browser)

    # 1. What failed in the last hour, and why: the overview's card opens the failed jobs of
    # the last hour; a job's page shows its traceback.
    await page.goto(board + "/")
    await expect(page.locator("#count-failed-hour")).to_have_text("3")
    await page.locator("#count-failed-hour").click()
    await page.wait_for_url("**state=failed**window=1h**")
    rows = page.locator("#jobs tbody tr")
    await expect(rows).to_have_count(3)
    await page.screenshot(path=shots / "dashboard-operator-failed-hour.png", full_page=True)
    await rows.first.locator("td.mono a").click()
    await expect(page.locator("#traceback-text")).to_contain_text(
        "RuntimeError: the export target refused the file"
    )
    await expect(page.locator("#traceback-text")).to_contain_text("in export_signups")

    # 2. Is it getting worse: the overview's chart has this minute's failures, and says so in
    # its table too.
    await page.goto(board + "/")
    chart = page.locator("#history-section figure.chart")
    await expect(chart.locator("rect.bar-failed").first).to_be_visible()
    await chart.locator("details.chart-table summary").click()
    failed_cells = chart.locator("details.chart-table tbody td")
    await expect(failed_cells.filter(has_text="3")).not_to_have_count(0)
    await page.screenshot(path=shots / "dashboard-operator-chart.png", full_page=True)

    # 3. Which job type is slow: the job types page gives each type's p50 and p95.
    await page.goto(board + "/types")
    export_row = page.locator('#types tr[data-name="export-signups"]')
    welcome_row = page.locator('#types tr[data-name="welcome-email"]')
    await expect(export_row).to_have_count(1)
    await expect(welcome_row).to_have_count(1)
    export_p95 = _seconds(await export_row.locator('td[data-label="p95"]').inner_text())
    welcome_p95 = _seconds(await welcome_row.locator('td[data-label="p95"]').inner_text())
    assert export_p95 >= 1 > welcome_p95, (export_p95, welcome_p95)
    await expect(export_row.locator('td[data-label="Failed"]')).to_have_text("3")
    await page.screenshot(path=shots / "dashboard-operator-types.png", full_page=True)

    # 4. Retry the batch: from the type's failed count, tick them all, confirm, done.
    await export_row.locator('td[data-label="Failed"] a').click()
    await page.wait_for_url("**state=failed**")
    await expect(rows).to_have_count(3)
    await page.locator("#select-all").check()
    await page.locator("#bulk-retry").click()
    await expect(page.locator("#bulk-question")).to_have_text("Retry 3 failed jobs?")
    await page.locator("#bulk-go").click()
    await expect(page.locator("#bulk-result")).to_have_text("Retried 3 of 3 jobs")
    await page.screenshot(path=shots / "dashboard-operator-retried.png", full_page=True)
    for job_id in failing:
        # Each ran again (a fresh try of one), and failed again: the export target still refuses.
        wait_status(demo, job_id, "failed")
        assert request_json(f"{demo}/jobs/{job_id}")[1]["tries"] == 1
    assert page.errors == []  # type: ignore[attr-defined]
