"""Odd job ids, control characters and an oversized form in a real headless Chromium, against
a host's dashboard served by uvicorn on a real Redis (issue 13, trial A)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import quote

import pytest
import uvicorn
from playwright.async_api import Browser, expect
from starlette.applications import Starlette
from starlette.routing import Mount

from hostedjobs import JobHost
from hostedjobs.testing import wait_for_job
from tests.servers import free_port
from tests.test_dashboard import Note, allow_all, make_host
from tests.test_dashboard_browser import browser, new_page
from tests.test_dashboard_trial_a import ODD_IDS
from tests.waiting import eventually

__all__ = ["browser"]  # a fixture, used by name

CONTROL_ID = "ctl\x1b[31m\u202eevil"
# Job ids are the Redis's, whatever the queue: others than the HTTP test's.
BROWSER_IDS = (*(job_id + "·b" for job_id in ODD_IDS), CONTROL_ID)


@pytest.fixture
async def served(redis_url: str, queue_name: str) -> AsyncIterator[tuple[JobHost, str]]:
    """A running host and the base URL of its dashboard, under a real uvicorn."""
    host = make_host(redis_url, queue_name)
    app = Starlette(routes=[Mount("/dash", app=host.dashboard(auth=allow_all))])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    async with host.run():
        task = asyncio.create_task(server.serve())
        try:
            await eventually(lambda: server.started, what="uvicorn started")
            yield host, f"http://127.0.0.1:{port}/dash"
        finally:
            server.should_exit = True
            await task


async def test_odd_ids_open_and_act_in_chromium(
    served: tuple[JobHost, str], browser: Browser
) -> None:
    """From the lists, each odd id's link opens its page showing the id; Delete, Cancel and
    Retry (clicked, dialogs confirmed) act on that very job."""
    host, board = served
    scheduler = host.scheduler
    for job_id in BROWSER_IDS:
        await scheduler.schedule(Note(text="d"), delay=timedelta(hours=1), job_id=job_id)
        await scheduler.schedule(Note(text="c"), delay=timedelta(hours=1), job_id=job_id + "·c")
        await scheduler.enqueue(Note(text="r", fail=True), job_id=job_id + "·r")
    for job_id in BROWSER_IDS:
        await wait_for_job(host, job_id + "·r", timeout=60)

    page = await new_page(browser)
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    for job_id in BROWSER_IDS:
        shown = job_id.replace("\x1b", "\\x1b").replace("\u202e", "\\u202e")
        for state, target, button, notice, status in (
            ("scheduled", job_id, "Delete", "The job was deleted; it will not run.", None),
            ("scheduled", job_id + "·c", "Cancel", "The job was cancelled", "cancelled"),
            ("failed", job_id + "·r", "Retry", "The job is queued again.", None),
        ):
            await page.goto(f"{board}/jobs?state={state}")
            link = page.locator(f'#jobs a[href="/dash/jobs/view?id={quote(target, safe="")}"]')
            await expect(link).to_have_text(shown + target[len(job_id) :])
            await link.click()
            await expect(page.locator("h1")).to_have_text(shown + target[len(job_id) :])
            await page.get_by_role("button", name=button).click()
            await expect(page.locator(".notice")).to_contain_text(notice)
            if status is not None:
                await expect(page.locator("#job-status")).to_have_text(status)
                await expect(page.locator("h1")).to_have_text(shown + target[len(job_id) :])
        info = await scheduler.get(job_id)
        assert info is None or info.message == "deleted", info
        cancelled = await scheduler.get(job_id + "·c")
        assert cancelled is not None and cancelled.status == "cancelled", cancelled
    assert page.errors == []  # type: ignore[attr-defined]


async def test_an_oversized_form_gets_a_413_page_in_chromium(
    served: tuple[JobHost, str], browser: Browser
) -> None:
    """A bulk form grown past 256 KiB, submitted by the browser, gets the 413 page saying so."""
    host, board = served
    await host.scheduler.schedule(Note(text="x"), delay=timedelta(hours=1))
    page = await new_page(browser)
    await page.goto(f"{board}/jobs?state=scheduled")
    await page.evaluate(
        """() => {
            const field = document.createElement("input");
            field.type = "hidden";
            field.name = "padding";
            field.value = "x".repeat(300 * 1024);
            document.getElementById("bulk").appendChild(field);
        }"""
    )
    await page.locator("#page-delete").click()
    await expect(page.locator("h1")).to_have_text("413")
    await expect(page.locator("#failure")).to_contain_text("the form is over 256 KiB")
