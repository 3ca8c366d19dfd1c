"""The portal in Chromium, in English and in Arabic, against a whole Sila (no Rasa needed) that
imported three Synthea patients from the EHR: a patient signs in with the code the fake Twilio was
asked to text them, sees a result flagged abnormal, books an appointment, writes to the care team;
an agent sees it in the console and answers; the answer appears in the portal and the patient
replies."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from playwright.async_api import expect

from bot.settings import ROOT
from tests.e2e.conftest import browser  # noqa: F401  (the shared Chromium fixture)
from tests.e2e.phone import SID, TOKEN, twilio_env
from tests.fakes.twilio_server import FakeTwilio
from tests.portal.conftest import BUNDLES, CODE, GAYLA_PHONE, ROYAL_PHONE
from tests.stack import Stack

pytestmark = [pytest.mark.browser]
PASSWORD = "a long enough password"
PEOPLE = {
    # language: (typed phone, E.164, date of birth, name, abnormal result, the staff's answer)
    "en": ("+1 555-605-8177", GAYLA_PHONE, "1937-06-03", "Gayla", "outside the normal range",
           "Please come a little early so the nurse can check your blood pressure."),
    "ar": ("+1 555 804 6642", ROYAL_PHONE, "1997-06-27", "Royal", "خارج المعدل الطبيعي",
           "أهلًا، سنعيد فحص الهيموغلوبين في موعدك القادم."),
}


def _import(sila, env):
    subprocess.run([*sila, "ehr", "import", str(BUNDLES)], env=env, cwd=ROOT, check=True, capture_output=True)


@pytest.fixture(scope="module")
def portal_stack(tmp_path_factory):
    fake = FakeTwilio(SID, TOKEN).start()
    stack = Stack.start(tmp_path_factory.mktemp("portal"), env=twilio_env(fake, "webchat,sms,whatsapp"),
                        rasa=False, before_serve=_import)
    yield stack, fake
    stack.stop()
    fake.stop()


def _add_agent(stack: Stack, username: str, language: str) -> None:
    subprocess.run([sys.executable, "-m", "bot.cli", "user", "add", username, "--role", "agent", "--language",
                    language, "--name", username.title(), "--password-stdin"], input=PASSWORD + "\n", text=True,
                   cwd=ROOT, check=True, capture_output=True,
                   env={"SILA_DATABASE_URL": stack.database_url, "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("lang", ["en", "ar"])
async def test_a_patient_and_an_agent_through_the_portal(portal_stack, browser, lang):  # noqa: F811
    stack, fake = portal_stack
    typed, phone, born, name, abnormal, answer = PEOPLE[lang]
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = await context.new_page()

    # Sign in: the phone, the code texted to it, the date of birth.
    await page.goto(f"{stack.base_url}/portal/appointments?lang={lang}")
    await expect(page).to_have_url(re.compile(r"/portal/sign-in"))
    await expect(page.locator("html")).to_have_attribute("dir", "rtl" if lang == "ar" else "ltr")
    await page.fill("#phone", typed)
    await page.click("#sign-in button[type=submit]")
    await expect(page.locator("#code")).to_be_visible()
    sms = await fake.wait_for(lambda m: any(r.get("To") == phone for r in m))
    code = CODE.search([r for r in sms if r.get("To") == phone][-1].get("Body")).group(1)
    await page.fill("#code", code)
    await page.fill("#birth_date", born)
    await page.click("#verify button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/portal/appointments\?lang=" + lang))  # where they were going

    # My health: a result outside the normal range, flagged in words.
    await page.click("nav.tabs a[href='/portal/health']")
    flagged = page.locator("#latest-results tr.result.abnormal").first
    await expect(flagged).to_contain_text(abnormal)

    # Book the first free cardiology time.
    await page.click("nav.tabs a[href='/portal/appointments']")
    await page.click("a[href='/portal/appointments/new']")
    await page.select_option("#department", "cardiology")
    await page.click("#search button[type=submit]")
    await page.locator("button.slot").first.click()
    await page.click("#book")
    done = page.locator("#done")
    await expect(done).to_be_visible()
    reference = re.search(r"SL-[A-Z0-9]{6}", await done.inner_text()).group(0)
    await expect(page.locator("#upcoming")).to_contain_text(reference)
    await fake.wait_for(lambda m: any(r.get("To") == phone and reference in (r.get("Body") or "") for r in m))

    # A message to the care team.
    question = ("Do I need to fast before the appointment?" if lang == "en"
                else "هل أحتاج للصيام قبل الموعد؟")
    await page.click("nav.tabs a[href='/portal/messages']")
    await page.fill("#text", question)
    await page.click("#send")
    await expect(page.locator("#live")).to_contain_text(question)

    # The agent sees it in the console inbox and answers.
    agent = f"portal_agent_{lang}"
    _add_agent(stack, agent, lang)
    desk = await browser.new_context(viewport={"width": 1280, "height": 900})
    console = await desk.new_page()
    await console.goto(stack.base_url + "/console")
    await console.fill("input[name=username]", agent)
    await console.fill("input[name=password]", PASSWORD)
    await console.click("button[type=submit]")
    row = console.locator("tr.conversation", has_text=name)
    await expect(row).to_be_visible(timeout=15000)
    await expect(row).to_contain_text("portal")
    await row.locator("a").click()
    await expect(console.locator("#messages")).to_contain_text(question)
    await console.fill("form[action$='/reply'] textarea", answer)
    await console.click("button.send")

    # It appears in the open portal page without a reload; the patient answers.
    await expect(page.locator("#live .msg.staff").last).to_contain_text(answer, timeout=15000)
    thanks = "Thank you, I will." if lang == "en" else "شكرًا، سأفعل."
    await page.fill("#text", thanks)
    await page.click("#send")
    await expect(page.locator("#live")).to_contain_text(thanks)
    await expect(console.locator("#messages")).to_contain_text(thanks, timeout=15000)
    await desk.close()
    await context.close()
