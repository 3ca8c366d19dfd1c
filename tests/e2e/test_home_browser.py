"""A patient opens the demo hospital's page and books in Arabic through the widget, in Chromium,
against the real hub and Rasa."""
from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.rasa]


async def _send(page, text: str) -> None:
    await page.locator("#sila-input").fill(text)
    await page.locator("#sila-input").press("Enter")


async def _last_bot(page, count_before: int):
    bubbles = page.locator(".sila-msg.sila-out")
    await expect(bubbles).not_to_have_count(count_before, timeout=30000)
    return bubbles.last


async def test_booking_in_arabic_through_the_widget(stack, browser, tmp_path):
    context = await browser.new_context(locale="ar-SA", viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    await page.goto(stack.base_url + "/")
    await expect(page.locator("header .brand")).to_contain_text("مستشفى النور التخصصي")
    await expect(page.locator("#sila-panel")).to_be_visible()
    await expect(page.locator("#sila-panel")).to_have_attribute("dir", "rtl")

    out = page.locator(".sila-msg.sila-out")
    steps = [("ابي احجز موعد عند دكتورة الجلدية بكرة", "اسم"), ("نورة القحطاني", "ميلاد"), ("٢/٩/١٩٩١", "المواعيد")]
    for text, expected in steps:
        before = await out.count()
        await _send(page, text)
        await expect(out.nth(before)).to_contain_text(expected, timeout=30000)

    # Tap the first offered time: the button's title is shown as the patient's bubble.
    first_time = page.locator(".sila-btn").first
    title = await first_time.inner_text()
    before = await out.count()
    await first_time.click()
    await expect(page.locator(".sila-msg.sila-in").last).to_contain_text(title.split("·")[0].strip())
    await expect(out.nth(before)).to_contain_text("للتأكيد", timeout=30000)

    before = await out.count()
    await page.locator(".sila-btn", has_text="نعم").click()
    confirmation = out.nth(before)
    await expect(confirmation).to_contain_text("تم حجز موعدك", timeout=30000)
    assert re.search(r"SL-[A-Z0-9]{6}", await confirmation.inner_text())
    direction = await confirmation.evaluate("el => getComputedStyle(el).direction")
    assert direction == "rtl"
    await page.screenshot(path=str(tmp_path / "booked-ar.png"))

    # A reload restores the same conversation from the server.
    shown = await out.count()
    await page.reload()
    await expect(page.locator(".sila-msg.sila-out")).to_have_count(shown, timeout=15000)
    await context.close()
