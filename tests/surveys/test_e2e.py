"""Surveys end to end: the whole system (Sila and the real Rasa with the trained model) serving web
chat and SMS through the fake Twilio. Surveys are sent by the visit sweep and by `sila survey send`;
patients answer in English and Arabic, branch, give an answer that has to be asked again, stop,
and the bot answers them as usual afterwards."""
from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from crm_store.db import create_engine, sessionmaker
from crm_store.models import (
    ChannelIdentity,
    Conversation,
    ConversationStatus,
    Message,
    Patient,
    SurveyResponse,
    utcnow,
)
from tests.e2e.phone import SID, TOKEN, Phone, options, twilio_env
from tests.fakes.twilio_server import FakeTwilio
from tests.stack import ChatClient, Stack
from tests.surveys.conftest import fulfilled_visit

pytestmark = pytest.mark.rasa
ARABIC = re.compile(r"[\u0600-\u06ff]")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """One stack for the module: web chat and SMS, the visit sweep every second, no quiet hours."""
    fake = FakeTwilio(SID, TOKEN).start()
    env = {**twilio_env(fake, "webchat,sms"), "SILA_SURVEY_INTERVAL": "1", "SILA_SURVEY_AFTER_VISIT_HOURS": "0",
           "SILA_CAMPAIGN_QUIET_START": "0", "SILA_CAMPAIGN_QUIET_END": "0", "SILA_CAMPAIGNS_ENABLED": "false"}
    stack = Stack.start(tmp_path_factory.mktemp("survey-stack"), env=env)
    fake.callback_target = stack.base_url
    yield stack, fake
    stack.stop()
    fake.stop()


@pytest.fixture
async def store(system):
    engine = create_engine(system[0].database_url)
    yield sessionmaker(engine)
    await engine.dispose()


class _Store:
    """The stack's database as the tests' `hub`-like handle (conftest helpers take `.sessions`)."""

    def __init__(self, sessions):
        self.sessions = sessions


async def _patient(store, channel: str, address: str) -> Patient:
    async with store() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.channel == channel,
                                                                      ChannelIdentity.address == address))
        return await session.get(Patient, identity.patient_id)


async def _an_hour_ago(store, patient_id: int) -> None:
    """The patient's last message was an hour ago (a visit survey waits while they are chatting)."""
    async with store() as session:
        await session.execute(update(Conversation).where(Conversation.patient_id == patient_id)
                              .values(last_inbound_at=utcnow() - timedelta(hours=1)))
        await session.commit()


async def _response(store, patient_id: int) -> SurveyResponse:
    async with store() as session:
        return await session.scalar(select(SurveyResponse).where(SurveyResponse.patient_id == patient_id)
                                    .order_by(SurveyResponse.id.desc()).limit(1))


async def _texts_to(fake: FakeTwilio, number: str, count: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sent = [m.get("Body") for m in fake.sent_to(number)]
        if len(sent) >= count:
            return sent
        await asyncio.sleep(0.2)
    raise AssertionError(f"{number} got {len(fake.sent_to(number))} messages, expected {count}")


async def _pushed(chat: ChatClient, timeout: float = 30) -> dict:
    """The next message the hub pushes to the open web chat without being asked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = await chat.ws.receive_json(timeout=timeout)
        if frame["type"] == "message" and frame["direction"] == "out":
            return frame
    raise AssertionError("nothing pushed")


async def test_sms_in_english_after_a_visit_with_an_answer_asked_again(system, store):
    stack, fake = system
    number = "+966501119001"
    phone = Phone(stack, fake, store, "sms", number)
    assert await phone.say("Hello")
    patient = await _patient(store, "sms", number)
    await _an_hour_ago(store, patient.id)
    await fulfilled_visit(_Store(store), patient.id)  # the sweep (every second) sends the visit survey

    before = len(fake.sent_to(number))
    opening = (await _texts_to(fake, number, before + 1))[-1]
    assert "recommend Al Noor Specialist Hospital" in opening and "0 (not at all likely)" in opening

    again = "\n".join(await phone.say("It was great"))
    assert "Sorry, I didn't catch that answer." in again and "from 0 (not at all likely) to 10" in again
    asked = "\n".join(await phone.say("nine out of ten"))
    assert "seen on time" in asked and options(asked) == ["Yes", "No"]
    asked = "\n".join(await phone.say("1"))
    assert "anything you would like to tell us" in asked
    thanks = "\n".join(await phone.say("Dr Khalid explained everything clearly"))
    assert thanks.startswith("Thank you for your answers")

    response = await _response(store, patient.id)
    assert (response.status, response.nps, response.answered, response.reason) == ("completed", 9, 3, "visit")
    hours = "\n".join(await phone.say("What are your opening hours?"))
    assert "Sunday to Thursday" in hours  # the bot again


async def test_sms_in_arabic_a_detractor_branches_and_patient_relations_take_over(system, store):
    stack, fake = system
    number = "+966501119002"
    phone = Phone(stack, fake, store, "sms", number)
    assert await phone.say("السلام عليكم")
    patient = await _patient(store, "sms", number)
    before = len(fake.sent_to(number))
    stack.sila("survey", "send", "post-visit-nps", "--patient", str(patient.id), "--channel", "sms")
    opening = (await _texts_to(fake, number, before + 1))[-1]
    assert "ما مدى احتمال أن توصي" in opening and "من ٠" in opening

    asked = "\n".join(await phone.say("٣"))
    assert "ما أكثر ما لم يعجبك" in asked and "وقت الانتظار" in options(asked)
    asked = "\n".join(await phone.say("الانتظار طويل"))
    assert "أخبرنا باختصار" in asked
    thanks = "\n".join(await phone.say("انتظرت ساعتين بعد موعدي"))
    assert "علاقات المرضى" in thanks and ARABIC.search(thanks)

    response = await _response(store, patient.id)
    assert (response.status, response.nps, response.alert) == ("completed", 3, "detractor")
    async with store() as session:
        conversation = await session.get(Conversation, response.conversation_id)
    assert (conversation.status, conversation.team) == (ConversationStatus.pending_human, "patient_relations")
    assert await phone.say("شكرًا") == []  # a person answers now, not the bot


async def test_web_chat_in_english_a_low_satisfaction_score_asks_what_went_wrong(system, store):
    stack, fake = system
    async with ChatClient(stack.base_url, "en") as chat:
        assert await chat.say("hi")
        patient = await _patient(store, "webchat", chat.session_token)
        stack.sila("survey", "send", "post-chat-csat", "--patient", str(patient.id))
        opening = await _pushed(chat)
        assert "How satisfied are you" in opening["text"]
        assert [b["payload"] for b in opening["buttons"]] == ["1", "2", "3", "4", "5"]

        again = ChatClient.text(await chat.say("meh"))
        assert "Sorry, I didn't catch that answer." in again and "from 1 (very dissatisfied) to 5" in again
        asked = ChatClient.text(await chat.say("⭐⭐"))
        assert "What went wrong?" in asked
        thanks = ChatClient.text(await chat.say("Nobody told me when my refill would be ready"))
        assert "patient relations team will contact you" in thanks
    response = await _response(store, patient.id)
    assert (response.status, response.csat, response.alert, response.channel) == (
        "completed", 2, "low_satisfaction", "webchat")


async def test_web_chat_in_arabic_stopping_mid_survey_and_the_bot_answers_again(system, store):
    stack, fake = system
    async with ChatClient(stack.base_url, "ar") as chat:
        assert await chat.say("السلام عليكم")
        patient = await _patient(store, "webchat", chat.session_token)
        stack.sila("survey", "send", "post-visit-nps", "--patient", str(patient.id), "--channel", "webchat")
        opening = await _pushed(chat)
        assert "ما مدى احتمال" in opening["text"] and not opening["buttons"]

        asked = ChatClient.text(await chat.say("عشرة"))
        assert "هل تمت رؤيتك في موعدك" in asked
        stopped = ChatClient.text(await chat.say("خلاص"))
        assert "أوقفت الاستبيان" in stopped
        hours = ChatClient.text(await chat.say("متى تفتح العيادات؟"))
        assert "من الأحد إلى الخميس" in hours  # the bot, in Arabic
    response = await _response(store, patient.id)
    assert (response.status, response.stop_reason, response.nps) == ("stopped", "patient", 10)
    async with store() as session:
        statuses = (await session.scalars(select(Message.status).where(
            Message.conversation_id == response.conversation_id, Message.direction == "in")
            .order_by(Message.id))).all()
    assert statuses[-3:] == ["survey", "survey", "answered"]
