"""A marketer in a real browser: builds a segment and watches the count, saves it, schedules a
campaign to it, and sees the funnel fill as the messages reach the fake Twilio."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from playwright.async_api import expect

from bot.settings import ROOT
from crm_store.db import create_engine, sessionmaker
from tests.campaigns.conftest import SID, TOKEN
from tests.campaigns.people import add_patient
from tests.campaigns.worker import Worker
from tests.e2e.conftest import browser  # noqa: F401  (the Playwright fixture)
from tests.fakes.twilio_server import FakeTwilio

pytestmark = pytest.mark.browser
PASSWORD = "a long enough password"


@pytest.fixture
def fake():
    server = FakeTwilio(SID, TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
async def sila(tmp_path, fake):
    worker = Worker(tmp_path, fake)
    await asyncio.to_thread(worker.sila, "migrate")
    subprocess.run([sys.executable, "-m", "bot.cli", "user", "add", "mariam", "--role", "marketer", "--language",
                    "ar", "--name", "Mariam", "--password-stdin"], input=PASSWORD + "\n", text=True, cwd=ROOT,
                   check=True, capture_output=True, env=worker.env)
    await asyncio.to_thread(worker.sila, "campaigns", "template", "Open day", "--en", "Open day, {first_name}!",
                            "--ar", "يوم مفتوح يا {first_name}!")
    engine = create_engine(worker.database_url)
    async with sessionmaker(engine)() as session:
        for i in range(7):
            await add_patient(session, f"+96650400000{i}", language="ar" if i < 4 else "en")
        await session.commit()
    await engine.dispose()
    worker.start()
    yield worker
    worker.stop()


async def test_marketer_builds_a_segment_schedules_a_campaign_and_sees_the_funnel(sila, browser, fake):  # noqa: F811
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    base = f"http://127.0.0.1:{sila.port}"
    await page.goto(base + "/console/campaigns/segments")
    await page.fill("input[name=username]", "mariam")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page.locator("html")).to_have_attribute("dir", "rtl")
    count = page.locator("#segment-count")
    await expect(count).to_have_text("7")
    await page.check("input[name=languages][value=ar]")
    await expect(count).to_have_text("4")  # the count follows the filters without a reload
    await page.fill("input[name=tags]", "nobody-has-this")
    await expect(count).to_have_text("0")
    await page.fill("input[name=tags]", "")
    await expect(count).to_have_text("4")
    await page.fill("form#segment input[name=name]", "Arabic speakers")
    await page.click("button.save-segment")
    await expect(page.locator("a.saved-segment")).to_have_text("Arabic speakers")

    await page.click("text=حملة جديدة")
    await page.fill("form.new-campaign input[name=name]", "Open day")
    await page.select_option("select[name=template_id]", label="Open day — ترويجي (يتطلب موافقة تسويقية)")
    await page.click("button.schedule")  # no time given: now
    await expect(page.locator("h1")).to_have_text("Open day")
    await expect(page.locator("tr[data-stage=recipients] .value")).to_have_text("4", timeout=20000)
    await expect(page.locator("tr[data-stage=sent] .value")).to_have_text("4", timeout=20000)
    await expect(page.locator(".campaign-status")).to_have_text("اكتملت", timeout=20000)
    assert sorted(m.get("To") for m in fake.messages) == [f"+96650400000{i}" for i in range(4)]
    assert all(m.get("Body") == "يوم مفتوح يا أمل!" for m in fake.messages)
    await context.close()
