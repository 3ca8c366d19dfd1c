"""A patient books an appointment over Telegram, in English and in Arabic: updates posted to the
real webhook, buttons tapped as callback queries, the bot's replies read from a fake Bot API, the
real Rasa server and trained model in between."""
from __future__ import annotations

import asyncio
import itertools
import re
import time

import aiohttp
import pytest
from sqlalchemy import select

from crm_store.db import create_engine, sessionmaker
from crm_store.models import Appointment, AppointmentStatus, ChannelIdentity, Conversation, Message, Patient
from tests.fakes.telegram_server import BOT_USER, FakeTelegram
from tests.stack import Stack

pytestmark = pytest.mark.rasa
TOKEN = "7000000002:AAE-e2e-fake-token"
SECRET = "e2e-secret_token"
REFERENCE = re.compile(r"SL-[A-Z0-9]{6}")
UPDATE_IDS = itertools.count(700000)


@pytest.fixture(scope="module")
def fake():
    server = FakeTelegram(TOKEN).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture(scope="module")
def telegram_stack(tmp_path_factory, fake):
    running = Stack.start(tmp_path_factory.mktemp("telegram"), env={
        "SILA_CHANNELS": "webchat,telegram", "SILA_TELEGRAM_BOT_TOKEN": TOKEN,
        "SILA_TELEGRAM_SECRET_TOKEN": SECRET, "SILA_TELEGRAM_API_URL": fake.url})
    yield running
    running.stop()


@pytest.fixture
async def store(telegram_stack):
    engine = create_engine(telegram_stack.database_url)
    yield sessionmaker(engine)
    await engine.dispose()


class TelegramPatient:
    """A patient in a private chat with the bot, as Telegram would report them to the webhook."""

    def __init__(self, stack: Stack, fake: FakeTelegram, store, chat: int, language: str):
        self.url = f"{stack.base_url}/webhooks/telegram"
        self.fake, self.store, self.chat = fake, store, chat
        self.user = {"id": chat, "is_bot": False, "first_name": "Patient", "language_code": language}

    async def say(self, text: str) -> list[dict]:
        update_id = next(UPDATE_IDS)
        return await self._post({"update_id": update_id, "message": {
            "message_id": update_id, "from": self.user, "date": int(time.time()), "text": text,
            "chat": {"id": self.chat, "type": "private", "first_name": "Patient"}}})

    async def tap(self, shown: dict, title_or_data) -> list[dict]:
        """Tap a button of a message the bot sent; `title_or_data` picks it (a predicate on the button)."""
        button = next(b for row in shown["reply_markup"]["inline_keyboard"] for b in row if title_or_data(b))
        update_id = next(UPDATE_IDS)
        return await self._post({"update_id": update_id, "callback_query": {
            "id": f"cq-{update_id}", "from": self.user, "chat_instance": "-777", "data": button["callback_data"],
            "message": {**shown, "from": BOT_USER}}}, callback=True)

    async def _post(self, update: dict, callback: bool = False) -> list[dict]:
        seen = len(self.fake.delivered(self.chat))
        async with aiohttp.ClientSession() as http:
            async with http.post(self.url, json=update,
                                 headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as response:
                assert response.status == 200, await response.text()
        await self._answered(str(update["update_id"]))
        if callback:
            answered = [a["callback_query_id"] for a in self.fake.sent("answerCallbackQuery")]
            assert update["callback_query"]["id"] in answered
        return self.fake.delivered(self.chat)[seen:]

    async def _answered(self, update_id: str, seconds: float = 60) -> None:
        """Wait until the bot has answered this update and every reply has reached the Bot API."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            async with self.store() as session:
                inbound = await session.scalar(select(Message).where(Message.channel == "telegram",
                                                                     Message.provider_message_id == update_id))
                waiting = inbound is not None and await session.scalar(
                    select(Message.id).where(Message.conversation_id == inbound.conversation_id,
                                             Message.direction == "out",
                                             Message.status.in_(("queued", "sending"))).limit(1))
            if inbound is not None and inbound.status not in ("received", "pending_bot") and not waiting:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"update {update_id} was not answered in {seconds}s")


def _text(replies: list[dict]) -> str:
    return "\n".join(r["text"] for r in replies)


SCRIPTS = {
    "en": {"book": "I'd like to book an appointment with a cardiologist tomorrow", "name": "Sarah Thompson",
           "dob": "14/03/1985", "another_day": "Another day"},
    "ar": {"book": "ابغى احجز موعد عند دكتور قلب بكرة", "name": "محمد العتيبي", "dob": "١٤/٠٣/١٩٨٥",
           "another_day": "يوم آخر"},
}


@pytest.mark.parametrize("lang, chat", [("en", 81000001), ("ar", 81000002)])
async def test_book_an_appointment_over_telegram(telegram_stack, fake, store, lang, chat):
    s = SCRIPTS[lang]
    patient = TelegramPatient(telegram_stack, fake, store, chat, lang)

    asked = _text(await patient.say(s["book"]))
    assert any(w in asked.lower() for w in ("name", "اسم")), asked
    await patient.say(s["name"])
    offer = await patient.say(s["dob"])
    keyboard = offer[-1]["reply_markup"]["inline_keyboard"]
    slots = [b for row in keyboard for b in row if b["text"] != s["another_day"]]
    assert 1 <= len(slots) <= 3, offer

    confirm = await patient.tap(offer[-1], lambda b: b["text"] == slots[0]["text"])
    buttons = [b["callback_data"] for row in confirm[-1]["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == ["/affirm", "/deny"], confirm
    booked = _text(await patient.tap(confirm[-1], lambda b: b["callback_data"] == "/affirm"))
    reference = REFERENCE.search(booked).group(0)
    assert bool(re.search(r"[\u0600-\u06ff]", booked)) == (lang == "ar"), booked

    async with store() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.channel == "telegram",
                                                                      ChannelIdentity.address == str(chat)))
        record = await session.get(Patient, identity.patient_id)
        appointments = (await session.scalars(select(Appointment).where(Appointment.patient_id == record.id))).all()
        taps = (await session.scalars(select(Message).join(Conversation).where(
            Conversation.identity_id == identity.id, Message.direction == "in", Message.display.is_not(None))
            .order_by(Message.id))).all()
    assert [(a.reference, a.status) for a in appointments] == [(reference, AppointmentStatus.booked)]
    assert record.birth_date.isoformat() == "1985-03-14" and record.display_name(lang) == s["name"]
    assert [(m.text, m.display) for m in taps][-1] == ("/affirm", confirm[-1]["reply_markup"]
                                                       ["inline_keyboard"][0][0]["text"])
