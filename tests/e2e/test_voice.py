"""A caller books an appointment by phone, in English and in Arabic, against the real Rasa server
and trained model: signed Twilio Voice webhooks in, the <Say> texts of each TwiML answer read as
the caller would hear them; the CRM store keeps the appointment and the call's transcript."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from crm_store.db import create_engine, sessionmaker
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    ChannelIdentity,
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Message,
    Patient,
)
from tests.stack import Stack

pytestmark = pytest.mark.rasa
TOKEN, FRONT_DESK = "e2e-voice-token", "+966112345678"
REFERENCE = re.compile(r"SL-[A-Z0-9]{6}")
LOCALES = {"en": "en-US", "ar": "ar-SA"}

# What a speech recogniser hands Twilio for each answer.
SCRIPTS = {
    "en": {"caller": "+966550000101", "book": "I want to book an appointment with a cardiologist tomorrow",
           "name": "Sarah Thompson", "dob": "14 March 1985", "first": "one", "yes": "yes", "bye": "goodbye"},
    "ar": {"caller": "+966550000102", "book": "ابغى احجز موعد عند دكتور قلب بكرة",
           "name": "محمد العتيبي", "dob": "14 مارس 1985", "first": "واحد", "yes": "ايوه", "bye": "مع السلامة"},
}


@pytest.fixture(scope="module")
def voice_stack(tmp_path_factory):
    """Sila with the voice channel, and Rasa with the trained model."""
    running = Stack.start(tmp_path_factory.mktemp("voice"), env={
        "SILA_CHANNELS": "voice", "SILA_TWILIO_AUTH_TOKEN": TOKEN, "SILA_FRONT_DESK_NUMBER": FRONT_DESK})
    yield running
    running.stop()


@pytest.fixture
async def store(voice_stack):
    engine = create_engine(voice_stack.database_url)
    yield sessionmaker(engine)
    await engine.dispose()


class Caller:
    """One phone call, as Twilio drives it: each answer is posted to the last <Gather>'s action."""

    def __init__(self, base_url: str, number: str, call_sid: str):
        self.base_url, self.number, self.call_sid = base_url, number, call_sid
        self.action = "/webhooks/twilio/voice"
        self.heard: list[str] = []

    async def __aenter__(self) -> "Caller":
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.close()

    async def post(self, path: str, **extra: str) -> ET.Element | None:
        params = {"CallSid": self.call_sid, "AccountSid": "AC" + "0" * 32, "From": self.number,
                  "To": "+966112345600", "CallStatus": "in-progress", "Direction": "inbound", **extra}
        signature = RequestValidator(TOKEN).compute_signature(self.base_url + path, params)
        async with self._http.post(self.base_url + path, data=params, headers={"X-Twilio-Signature": signature},
                                   timeout=aiohttp.ClientTimeout(total=60)) as response:
            body = await response.read()
            assert response.status in (200, 204), body
        if response.status == 204:
            return None
        root = ET.fromstring(body)
        assert root.tag == "Response"
        gather = root.find("Gather")
        if gather is not None:
            assert gather.get("input") == "speech dtmf" and gather.get("speechTimeout") == "auto"
            self.action = gather.get("action")
        return root

    async def dial(self) -> ET.Element:
        return await self.post("/webhooks/twilio/voice")

    async def say(self, speech: str) -> ET.Element:
        return await self.post(self.action, SpeechResult=speech, Confidence="0.92")

    def heard_in(self, root: ET.Element, language: str) -> str:
        """What the caller heard, checking every sentence was spoken in `language`."""
        spoken = [(say.text, say.get("language")) for say in root.iter("Say")]
        assert spoken and all(locale == LOCALES[language] for _, locale in spoken), spoken
        if (gather := root.find("Gather")) is not None:
            assert gather.get("language") == LOCALES[language]
        text = "\n".join(t for t, _ in spoken)
        self.heard.append(text)
        return text


async def _call_record(store, number: str):
    async with store() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.channel == "voice",
                                                                      ChannelIdentity.address == number))
        patient = await session.get(Patient, identity.patient_id)
        appointments = (await session.scalars(select(Appointment).where(Appointment.patient_id == patient.id))).all()
        conversations = (await session.scalars(select(Conversation).where(Conversation.patient_id == patient.id)
                                               .order_by(Conversation.id))).all()
        messages = (await session.scalars(select(Message).where(Message.conversation_id == conversations[-1].id)
                                          .order_by(Message.id))).all()
        events = (await session.scalars(select(JourneyEvent).where(JourneyEvent.patient_id == patient.id)
                                        .order_by(JourneyEvent.id))).all()
    return patient, appointments, conversations, messages, events


@pytest.mark.parametrize("lang", ["en", "ar"])
async def test_a_caller_books_an_appointment_by_speech(voice_stack, store, lang):
    s = SCRIPTS[lang]
    call_sid = f"CA{lang}" + "5" * 30
    async with Caller(voice_stack.base_url, s["caller"], call_sid) as caller:
        greeting = await caller.dial()
        assert "Gather" in [child.tag for child in greeting]
        caller.heard_in(greeting, "ar")  # a new caller: the hospital's default language

        asked_name = caller.heard_in(await caller.say(s["book"]), lang)
        assert ("name" in asked_name.lower()) if lang == "en" else ("اسم" in asked_name), asked_name
        asked_dob = caller.heard_in(await caller.say(s["name"]), lang)
        assert ("date of birth" in asked_dob) if lang == "en" else ("تاريخ ميلادك" in asked_dob), asked_dob
        offer = caller.heard_in(await caller.say(s["dob"]), lang)
        assert ("Press 1 for" in offer) if lang == "en" else ("اضغط ١ لاختيار" in offer), offer
        confirm = caller.heard_in(await caller.say(s["first"]), lang)
        assert ("Press 1 for" in confirm) if lang == "en" else ("اضغط ١ لاختيار" in confirm), confirm
        booked = caller.heard_in(await caller.say(s["yes"]), lang)
        reference = REFERENCE.search(booked).group(0)
        farewell = await caller.say(s["bye"])  # the bot says goodbye, and the line hangs up
        caller.heard_in(farewell, lang)
        assert [child.tag for child in farewell][-1] == "Hangup" and farewell.find("Gather") is None

        assert await caller.post("/webhooks/twilio/voice/status", CallStatus="completed", CallDuration="95") is None

    patient, appointments, conversations, messages, events = await _call_record(store, s["caller"])
    assert patient.birth_date.isoformat() == "1985-03-14" and patient.display_name(lang) == s["name"]
    assert patient.preferred_language == lang
    assert [(a.reference, a.status) for a in appointments] == [(reference, AppointmentStatus.booked)]

    # The call is the conversation, and its transcript is what was said and heard, in order.
    assert len(conversations) == 1 and conversations[0].status == ConversationStatus.closed
    inbound = [m for m in messages if m.direction == "in"]
    assert [m.text for m in inbound] == [s[k] for k in ("book", "name", "dob", "first", "yes", "bye")]
    assert [m.provider_message_id for m in inbound] == [f"{call_sid}:{n}" for n in range(1, 7)]
    assert all(m.status == "answered" for m in inbound) and inbound[0].intent == "book_appointment"
    outbound = [m for m in messages if m.direction == "out"]
    assert all(m.status == "delivered" for m in outbound)
    assert messages[0].direction == "out" and messages[0].provider_message_id == f"{call_sid}:greeting"
    assert reference in outbound[-2].text and inbound[-1].intent == "goodbye"
    spoken_replies = "\n".join(caller.heard[1:])
    assert all(m.text in spoken_replies for m in outbound[1:])
    kinds = [e.kind for e in events]
    assert "call_started" in kinds and kinds[-1] == "call_ended"


async def test_a_caller_who_asks_for_a_real_person_is_put_through(voice_stack, store):
    async with Caller(voice_stack.base_url, "+966550000103", "CA" + "6" * 32) as caller:
        await caller.dial()
        root = await caller.say("I want to talk to a real person")
    assert root.find("Gather") is None and root.find("Dial").text == FRONT_DESK
    heard = caller.heard_in(root, "en")
    assert "front desk" in heard
    _, _, conversations, messages, events = await _call_record(store, "+966550000103")
    assert conversations[-1].status == ConversationStatus.pending_human
    assert conversations[-1].handoff_reason == "request_human"
    assert messages[1].intent == "request_human" and "call_transferred" in [e.kind for e in events]
