"""An agent in the console sees a patient's request for a person arrive live, claims it, replies,
the patient reads it in the web chat, the agent resolves, and the bot answers again."""
from __future__ import annotations

import subprocess
import sys

import pytest
from playwright.async_api import expect

from bot.settings import ROOT
from tests.stack import ChatClient

pytestmark = [pytest.mark.browser, pytest.mark.rasa]
PASSWORD = "a long enough password"


def add_user(stack, username: str, language: str) -> None:
    subprocess.run([sys.executable, "-m", "bot.cli", "user", "add", username, "--role", "agent", "--language",
                    language, "--name", username.title(), "--password-stdin"], input=PASSWORD + "\n", text=True,
                   cwd=ROOT, check=True, capture_output=True,
                   env={"SILA_DATABASE_URL": stack.database_url, "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("lang", ["en", "ar"])
async def test_agent_takes_over_and_hands_back(stack, browser, lang):
    username = f"agent_{lang}"
    add_user(stack, username, lang)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(stack.base_url + "/console")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page.locator("html")).to_have_attribute("dir", "rtl" if lang == "ar" else "ltr")

    async with ChatClient(stack.base_url, language=lang) as chat:
        ask = "I want to talk to a real person" if lang == "en" else "ابغى اكلم موظف"
        await chat.say(ask)
        row = page.locator("tr.conversation").last
        await expect(row).to_be_visible(timeout=15000)  # arrives without a reload
        await row.locator("a").click()
        await expect(page.locator("#messages")).to_contain_text(ask)
        await page.click("button.claim")
        await expect(page.locator(".assignee")).to_have_text(username)

        answer = "Hello, I'm from reception. How can I help?" if lang == "en" else "أهلًا، معك الاستقبال. كيف أقدر أساعدك؟"
        await page.fill("form[action$='/reply'] textarea", answer)
        await page.click("button.send")
        frame = await chat.ws.receive_json(timeout=15)
        while frame.get("direction") != "out":
            frame = await chat.ws.receive_json(timeout=15)
        assert frame["text"] == answer

        silent = await chat.say("thank you" if lang == "en" else "شكرا")
        assert silent == []  # a person owns the conversation: the bot stays quiet
        await page.click("button.resolve")
        await expect(page.locator(".assignee")).to_have_text("—")
        # Resolving a conversation staff handled asks the patient how it went (surveys/).
        frame = await chat.ws.receive_json(timeout=15)
        while frame.get("direction") != "out":
            frame = await chat.ws.receive_json(timeout=15)
        assert ("How satisfied" if lang == "en" else "ما مدى رضاك") in frame["text"]
        resolved = await chat.say("5")
        assert ("resolved" if lang == "en" else "هل تم حل") in ChatClient.text(resolved)
        thanks = await chat.say("yes" if lang == "en" else "نعم")
        assert ("Thank you" if lang == "en" else "شكرًا") in ChatClient.text(thanks)
        back = await chat.say("what are your opening hours?" if lang == "en" else "متى تفتحون؟")
        assert back and ("9:00 pm" in back[0]["text"] or "٩ مساءً" in back[0]["text"])
    await context.close()
