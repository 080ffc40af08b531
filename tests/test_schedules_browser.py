"""The Schedules page in a real headless Chromium, against the demo app: schedules added by
another process listed with their next tick and paused badge; pause, resume and remove from
the console; a schedule added (after a typo that keeps what was typed) and edited from
the console; no console error and no sideways scroll at 390 px."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from hostedjobs import JobHost, job_type
from tests.servers import serve_demo
from tests.test_dashboard_browser import browser, new_page, shots
from tests.test_dashboard_hosted_browser import no_sideways_scroll

__all__ = ["browser", "shots"]  # fixtures

YEARLY = "0 0 1 1 *"


@job_type("browser-customer-report")
@dataclass
class CustomerReport:
    customer_id: str


async def test_schedules_page_pause_resume_remove(
    tmp_path: Path, browser: Browser, shots: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOSTEDJOBS_REDIS_URL", raising=False)  # the demo's embedded server
    with serve_demo(tmp_path) as demo:
        board = demo + "/dashboard"
        admin = JobHost(queue_name="demo", data_dir=tmp_path / "data", run_worker=False)

        @admin.handler(CustomerReport)
        async def report(job: CustomerReport) -> None:
            return None

        async with admin.connected():
            for name in ("acme", "globex", "initech-with-a-rather-long-name-for-a-phone"):
                await admin.schedules.add(
                    f"report:{name}", YEARLY, CustomerReport(name), timezone="Europe/Prague"
                )
            await admin.schedules.pause("report:globex")

            page = await new_page(browser)
            await page.goto(board + "/")
            await page.get_by_role("link", name="Schedules").click()
            rows = page.locator("#schedules tbody tr")
            await expect(rows).to_have_count(3)
            globex = page.locator('#schedules tr[data-name="report:globex"]')
            await expect(globex.locator(".pill.paused")).to_have_text("paused")
            acme = page.locator('#schedules tr[data-name="report:acme"]')
            await expect(acme.locator('td[data-label="Next tick"] time')).to_be_visible()
            await page.screenshot(path=shots / "dashboard-schedules.png", full_page=True)

            await acme.get_by_role("button", name="Pause").click()
            await expect(page.locator(".notice")).to_contain_text("paused in every process")
            await expect(acme.locator(".pill.paused")).to_have_text("paused")
            found = await admin.schedules.get("report:acme")
            assert found is not None and found.paused

            await globex.get_by_role("button", name="Resume").click()
            await expect(page.locator(".notice")).to_contain_text("resumed")
            await expect(globex.locator(".pill.paused")).to_have_count(0)

            page.once("dialog", lambda dialog: dialog.accept())
            await acme.get_by_role("button", name="Remove").click()
            await expect(page.locator(".notice")).to_contain_text("was removed")
            await expect(rows).to_have_count(2)
            assert await admin.schedules.get("report:acme") is None

            # Add one from the console: a typo in the payload keeps what was typed.
            await page.locator("#add-schedule summary").click()
            form = page.locator("#schedule-form")
            await form.locator('input[name="name"]').fill("remind:signup-7")
            await form.locator('input[name="cron"]').fill("0 9 * * 1")
            await form.locator('select[name="job_type"]').select_option("signup-reminder@1")
            await form.locator('textarea[name="payload"]').fill('{"signup_id": "seven"}')
            await form.get_by_role("button", name="Add").click()
            await expect(page.locator("#schedule-error")).to_contain_text("does not fit")
            await expect(form.locator('input[name="name"]')).to_have_value("remind:signup-7")
            await page.screenshot(path=shots / "dashboard-schedule-error.png", full_page=True)
            page.errors.remove(  # type: ignore[attr-defined]
                "Failed to load resource: the server responded with a status of 400 (Bad Request)"
            )  # the refused form's own answer, and the only error
            await form.locator('textarea[name="payload"]').fill('{"signup_id": 7}')
            await form.get_by_role("button", name="Add").click()
            await expect(page.locator(".notice")).to_contain_text("was added")
            added = page.locator('#schedules tr[data-name="remind:signup-7"]')
            await expect(added.locator('td[data-label="Payload"]')).to_contain_text('"signup_id"')

            await added.get_by_role("link", name="Edit").click()
            await expect(page.locator("h1")).to_contain_text("remind:signup-7")
            await page.locator('input[name="cron"]').fill("30 9 * * 1-5")
            await page.get_by_role("button", name="Save").click()
            await expect(page.locator(".notice")).to_contain_text("changed in every process")
            await expect(added.locator('td[data-label="Cron"]')).to_have_text("30 9 * * 1-5")
            changed = await admin.schedules.get("remind:signup-7")
            assert changed is not None and changed.payload == {"signup_id": 7}
            await admin.schedules.remove("remind:signup-7")

            phone = await new_page(browser, width=390, height=844)
            await phone.goto(board + "/schedules")
            await expect(phone.locator("h1")).to_have_text("Schedules")
            await no_sideways_scroll(phone)
            await phone.screenshot(path=shots / "dashboard-schedules-phone.png", full_page=True)
            for each in (page, phone):
                assert each.errors == []  # type: ignore[attr-defined]
            for name in ("globex", "initech-with-a-rather-long-name-for-a-phone"):
                await admin.schedules.remove(f"report:{name}")
