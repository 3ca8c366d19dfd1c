"""The whole loop with the real Rasa and a real training run, in the browser: an admin finds an
Arabic message the bot did not understand in the review queue, labels it, retrains, reads the
evaluation, activates the new model — and the bot now answers that message.

Training writes into copies of nlu_data/ and models/ (SILA_NLU_DATA_DIR, SILA_MODELS_DIR): the
repository's data and model are the same after the test."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import pytest
from playwright.async_api import async_playwright, expect

from bot.settings import ROOT
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.stack import ChatClient, Stack

pytestmark = [pytest.mark.browser, pytest.mark.rasa]
PASSWORD = "a long enough password"
# "Can you send me the location on the map?" — the model shipped with the repository falls back.
MISUNDERSTOOD = "ممكن ترسلون لي الموقع على الخريطة"
LOCATION_ANSWER = "نحن على طريق الملك فهد"


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("nlu_training")
    shutil.copytree(ROOT / "nlu_data", work / "nlu_data")
    (work / "models").mkdir()
    for name in ("sila.tar.gz", "sila.tar.fingerprint"):
        shutil.copy2(ROOT / "models" / name, work / "models" / name)
    running = Stack.start(work, {"SILA_NLU_DATA_DIR": str(work / "nlu_data"), "SILA_MODELS_DIR": str(work / "models")})
    running.work = work
    yield running
    running.stop()


async def test_an_admin_teaches_the_bot_a_message_it_did_not_understand(stack):
    repo_data, repo_model = (ROOT / "nlu_data/nlu/ar.yml").read_text(), sha256(ROOT / "models/sila.tar.gz")
    subprocess.run([sys.executable, "-m", "bot.cli", "user", "add", "huda", "--role", "admin", "--language", "ar",
                    "--name", "Huda", "--password-stdin"], input=PASSWORD + "\n", text=True, cwd=ROOT, check=True,
                   capture_output=True, env={**stack.env, "PATH": "/usr/bin:/bin"})

    async with ChatClient(stack.base_url, language="ar") as chat:
        before = ChatClient.text(await chat.say(MISUNDERSTOOD))
        assert LOCATION_ANSWER not in before and "لم أفهم" in before

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            await page.goto(stack.base_url + "/console/nlu/review")
            await page.fill("input[name=username]", "huda")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await expect(page.locator("html")).to_have_attribute("dir", "rtl")

            item = page.locator("section.review-item", has_text=MISUNDERSTOOD)
            await expect(item).to_contain_text("لم تُفهم")  # "not understood"
            await item.locator("select[name=intent]").select_option("ask_location")
            await item.locator("button.label").click()
            await expect(page.locator(".notice")).to_have_text("أضيف إلى بيانات التدريب.")
            await expect(page.locator("section.review-item", has_text=MISUNDERSTOOD)).to_have_count(0)

            await page.goto(stack.base_url + "/console/nlu/training")
            await page.click("button.train")
            state = page.locator("#job-state")
            await expect(state).to_have_attribute("data-status", "running")
            await expect(state.locator(".stage")).to_have_text("تدريب مصنّف النوايا", timeout=240_000)
            # Training (about two minutes on two cores) and the evaluation of both models.
            await expect(state).to_have_attribute("data-status", "succeeded", timeout=900_000)

            arabic = page.locator("section.evaluation[data-language=ar]")
            await expect(arabic.locator("table.intent-report tr[data-intent=ask_location]")).to_be_visible()
            await expect(arabic.locator("svg.confusion").first).to_be_visible()
            await expect(page.locator("section.evaluation[data-language=en] table.summary")).to_be_visible()
            new, old = (await arabic.locator("table.summary td.new").inner_text(),
                        await arabic.locator("table.summary td.old").inner_text())
            assert 0.9 <= float(new) <= 1 and 0.9 <= float(old) <= 1

            await page.click("button.activate")
            await expect(page.locator(".notice")).to_have_text("تم تفعيل النموذج: المساعد يستخدمه الآن.",
                                                               timeout=300_000)
            await browser.close()

        await chat.reconnect()  # the same patient, back minutes later on a fresh socket
        after = ChatClient.text(await chat.say(MISUNDERSTOOD))
        assert LOCATION_ANSWER in after

    trained = list((stack.work / "models" / "trained").glob("sila-*.tar.gz"))
    assert len(trained) == 1 and sha256(stack.work / "models" / "sila.tar.gz") == sha256(trained[0])
    assert MISUNDERSTOOD in (stack.work / "nlu_data/nlu/ar.yml").read_text()
    assert (ROOT / "nlu_data/nlu/ar.yml").read_text() == repo_data
    assert sha256(ROOT / "models/sila.tar.gz") == repo_model
