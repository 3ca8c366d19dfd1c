"""The web chat widget in a real browser (Debian's chromium through Playwright).

The widget (channels/webchat_static) is embedded cross-origin in a host page and talks to the
scripted fake endpoint in widget_fake_server.py. The tests check what a patient sees and does.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable

import pytest

from playwright.async_api import expect

from tests.e2e.widget_fake_server import FakeWidgetServer

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

pytestmark = pytest.mark.browser


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def server() -> AsyncIterator[FakeWidgetServer]:
    srv = FakeWidgetServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def context(browser):
    ctx = await browser.new_context(locale="en-US", viewport={"width": 1200, "height": 800})
    ctx.set_default_timeout(5000)
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context):
    pg = await context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    assert errors == [], f"JavaScript errors on the page: {errors}"


def composer(page):
    return page.get_by_role("textbox", name=re.compile("Your message"))


def user_bubbles(page):
    return page.locator("#sila-chat .sila-msg.sila-in")


def user_text(page, text: str):
    """The text of the user's bubbles that say exactly `text`."""
    return user_bubbles(page).locator(".sila-text", has_text=re.compile(rf"^{re.escape(text)}$"))


def bot_bubbles(page):
    return page.locator("#sila-chat .sila-msg.sila-out")


async def say(page, text: str) -> None:
    box = composer(page)
    await box.fill(text)
    await box.press("Enter")


async def test_typing_a_message_shows_it_and_the_bot_replies(page, server):
    await page.goto(f"{server.host_url}/?lang=en")
    panel = page.get_by_role("dialog", name="Sila · Patient assistant")
    await expect(panel).to_be_visible()
    await expect(composer(page)).to_have_attribute("placeholder", re.compile("Type a message.*اكتب"))

    await say(page, "hello there")
    await expect(user_bubbles(page).filter(has_text="hello there")).to_have_count(1)
    await expect(composer(page)).to_have_value("")
    await expect(bot_bubbles(page).filter(has_text="You said: hello there")).to_be_visible()
    await expect(page.locator("#sila-chat .sila-typing")).to_be_hidden()
    # the server's echo (same id) did not add a second bubble
    await expect(user_bubbles(page)).to_have_count(1)
    await expect(user_bubbles(page).first).not_to_have_class(re.compile("sila-pending"))

    assert server.hellos[0]["language"] == "en"
    assert server.hellos[0]["session"] is None
    [sent] = server.received
    assert sent["text"] == "hello there" and UUID4.match(sent["id"]) and "display" not in sent

    # Shift+Enter is a new line, Enter sends; the line break is kept on screen
    box = composer(page)
    await box.type("first line")
    await box.press("Shift+Enter")
    await box.type("second line")
    assert server.received[-1]["text"] == "hello there"
    await box.press("Enter")
    bubble = user_bubbles(page).filter(has_text="first line")
    await expect(bubble).to_be_visible()
    assert "first line\nsecond line" in await bubble.locator(".sila-text").inner_text()
    await eventually(lambda: server.received[-1]["text"] == "first line\nsecond line")


async def test_arabic_reply_renders_right_to_left(page, server):
    await page.goto(f"{server.host_url}/?lang=en")
    panel = page.locator("#sila-panel")
    await expect(panel).to_have_attribute("dir", "ltr")
    await say(page, "مرحبا")
    reply = bot_bubbles(page).filter(has_text="أهلاً بك في مستشفى النور")
    await expect(reply).to_be_visible()
    assert await reply.evaluate("el => getComputedStyle(el).direction") == "rtl"
    # the panel follows the language of the last bot message
    await expect(panel).to_have_attribute("dir", "rtl")
    await expect(panel).to_have_attribute("lang", "ar")
    await expect(page.get_by_role("dialog", name="صلة · مساعد المرضى")).to_be_visible()
    # an English bubble in the Arabic panel stays left-to-right
    await say(page, "ok thanks")
    english = user_bubbles(page).filter(has_text="ok thanks")
    await expect(english).to_be_visible()
    assert await english.evaluate("el => getComputedStyle(el).direction") == "ltr"


async def test_arabic_page_says_hello_in_arabic(page, server):
    await page.goto(f"{server.host_url}/?lang=ar")
    await eventually(lambda: len(server.hellos) == 1)
    assert server.hellos[0]["language"] == "ar"
    await expect(page.locator("#sila-panel")).to_have_attribute("dir", "rtl")
    await expect(page.get_by_role("button", name="إغلاق المحادثة")).to_be_visible()


async def test_quick_reply_buttons_send_their_payload(page, server):
    await page.goto(f"{server.host_url}/?lang=en")
    await say(page, "I want to book")
    cardiology = page.get_by_role("button", name="Cardiology")
    await expect(cardiology).to_be_visible()
    await expect(page.get_by_role("button", name="Pediatrics")).to_be_visible()

    await cardiology.click()
    # the title is the user's bubble, the payload goes to the server
    await expect(user_text(page, "Cardiology")).to_have_count(1)
    await eventually(lambda: len(server.received) == 2)
    assert server.received[1]["text"] == '/book_appointment{"department":"cardiology"}'
    assert server.received[1]["display"] == "Cardiology"
    # that message's buttons are gone
    await expect(page.get_by_role("button", name="Cardiology")).to_have_count(0)
    await expect(page.get_by_role("button", name="Pediatrics")).to_have_count(0)
    await expect(bot_bubbles(page).filter(has_text="Booked: Cardiology")).to_be_visible()
    assert "/book_appointment" not in await page.locator("#sila-chat .sila-log").inner_text()


async def test_reconnects_and_shows_history_once(page, server):
    await page.goto(f"{server.host_url}/?lang=en")
    await say(page, "one")
    await expect(bot_bubbles(page).filter(has_text="You said: one")).to_be_visible()
    await say(page, "two")
    await expect(bot_bubbles(page).filter(has_text="You said: two")).to_be_visible()

    await server.drop_all(refuse_for=1.2)
    status = page.get_by_role("status").filter(has_text="Reconnecting…")
    await expect(status).to_be_visible()
    # a message typed while offline is shown at once and delivered after the reconnect
    await say(page, "three")
    await expect(user_bubbles(page).filter(has_text="three")).to_be_visible()

    await expect(bot_bubbles(page).filter(has_text="You said: three")).to_be_visible(timeout=8000)
    await expect(status).to_be_hidden()
    [token] = list(server.sessions)
    assert len(server.hellos) >= 2 and all(h["session"] == token for h in server.hellos[1:])
    for text in ("one", "two", "three"):
        await expect(user_text(page, text)).to_have_count(1)
        await expect(bot_bubbles(page).filter(has_text=f"You said: {text}")).to_have_count(1)
    await expect(page.locator("#sila-chat .sila-msg")).to_have_count(6)
    assert [f["text"] for f in server.received].count("three") == 1

    # and a second drop, with no refusal: still no duplicates
    await server.drop_all()
    await eventually(lambda: len(server.hellos) >= 3)
    await expect(page.locator("#sila-chat .sila-msg")).to_have_count(6)
    await expect(status).to_be_hidden()


async def test_session_token_survives_a_reload(page, server):
    await page.goto(f"{server.host_url}/?lang=en")
    await say(page, "remember me")
    await expect(bot_bubbles(page).filter(has_text="You said: remember me")).to_be_visible()
    [token] = list(server.sessions)
    assert server.hellos[0]["session"] is None
    assert await page.evaluate("localStorage.getItem('sila.session')") == token

    await page.reload()
    await eventually(lambda: len(server.hellos) == 2)
    assert server.hellos[1]["session"] == token
    assert list(server.sessions) == [token]
    await expect(bot_bubbles(page).filter(has_text="You said: remember me")).to_be_visible()
    await expect(page.locator("#sila-chat .sila-msg")).to_have_count(2)


async def test_message_text_is_never_markup(page, server):
    await page.goto(f"{server.host_url}/?lang=en")
    await say(page, '<img src=x onerror="window.__pwned=1"><b>bold</b>')
    await expect(bot_bubbles(page).filter(has_text="<b>bold</b>")).to_be_visible()
    assert await page.locator("#sila-chat .sila-log img, #sila-chat .sila-log b").count() == 0
    assert await page.evaluate("window.__pwned") is None

    await say(page, "portal link?")
    link = page.get_by_role("link", name="https://portal.example/results")
    await expect(link).to_be_visible()
    assert await link.get_attribute("href") == "https://portal.example/results"
    assert "noopener" in (await link.get_attribute("rel") or "")
    text = await bot_bubbles(page).filter(has_text="patient portal").locator(".sila-text").inner_text()
    assert text.startswith("Your results are in the patient portal:\nhttps://") and text.endswith(".\nSee you soon.")


async def test_typing_indicator_and_errors(page, server):
    await page.goto(f"{server.host_url}/?lang=en")
    typing = page.locator("#sila-chat .sila-typing")
    await say(page, "slow answer please")
    await expect(typing).to_be_visible()
    await expect(bot_bubbles(page).filter(has_text="slow answer please")).to_be_visible()
    await expect(typing).to_be_hidden()

    # no answer coming: the server's "idle" hides the indicator long before its 10 s timeout
    await say(page, "quiet please")
    await expect(typing).to_be_visible()
    await expect(typing).to_be_hidden(timeout=3000)

    await say(page, "error now")
    await expect(page.get_by_role("status").filter(has_text="Something went wrong")).to_be_visible()


async def test_launcher_api_and_phone_layout(browser, server):
    ctx = await browser.new_context(locale="ar-SA", viewport={"width": 390, "height": 760})
    try:
        page = await ctx.new_page()
        await page.goto(f"{server.host_url}/?lang=&open=false")
        panel = page.locator("#sila-panel")
        await expect(panel).to_be_hidden()
        launcher = page.get_by_role("button", name="تحدث معنا")  # navigator.language is Arabic
        await launcher.click()
        await expect(panel).to_be_visible()
        box = await panel.bounding_box()
        assert box == {"x": 0, "y": 0, "width": 390, "height": 760}
        await eventually(lambda: len(server.hellos) == 1)
        assert server.hellos[0]["language"] == "ar"

        await page.evaluate("window.SilaChat.close()")
        await expect(panel).to_be_hidden()
        await page.evaluate("window.SilaChat.send('book via api')")
        await expect(panel).to_be_visible()
        await expect(page.get_by_role("button", name="Cardiology")).to_be_visible()
        await composer(page).focus()
        await page.keyboard.press("Escape")
        await expect(panel).to_be_hidden()
    finally:
        await ctx.close()
