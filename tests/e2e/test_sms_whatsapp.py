"""A patient books over SMS and over WhatsApp, in English and in Arabic: signed Twilio webhooks in,
the real Rasa model deciding, replies read from what the fake Twilio REST API received."""
from __future__ import annotations

import asyncio
import re
import time

import pytest
from sqlalchemy import select

from crm_store.db import create_engine, sessionmaker
from crm_store.models import Appointment, AppointmentStatus, ChannelIdentity, Conversation, Message, Patient
from tests.e2e.phone import PUBLIC, REFERENCE, SID, TOKEN, Phone, options, twilio_env
from tests.fakes.twilio_server import FakeTwilio
from tests.stack import Stack

pytestmark = pytest.mark.rasa



@pytest.fixture(scope="module")
def twilio(tmp_path_factory):
    """The fake Twilio and a Stack serving SMS and WhatsApp through it."""
    fake = FakeTwilio(SID, TOKEN).start()
    stack = Stack.start(tmp_path_factory.mktemp("twilio-stack"), env=twilio_env(fake))
    fake.callback_target = stack.base_url  # status callbacks reach Sila the way Twilio's would
    yield stack, fake
    stack.stop()
    fake.stop()


@pytest.fixture
async def store(twilio):
    engine = create_engine(twilio[0].database_url)
    yield sessionmaker(engine)
    await engine.dispose()


def has_arabic(text: str) -> bool:
    return bool(re.search(r"[\u0600-\u06ff]", text))


SCRIPTS = {
    "en": {"book": "I'd like to book an appointment with a cardiologist tomorrow", "name": "Sarah Thompson",
           "dob": "14/03/1985", "first": "1", "yes": "1"},
    "ar": {"book": "ابغى احجز موعد عند دكتور قلب بكرة", "name": "محمد العتيبي",
           "dob": "١٤/٠٣/١٩٨٥", "first": "١", "yes": "ايوه"},
}


@pytest.mark.parametrize("channel, lang, number", [
    ("sms", "en", "+966501110001"), ("sms", "ar", "+966501110002"),
    ("whatsapp", "en", "+966501110003"), ("whatsapp", "ar", "+966501110004"),
])
async def test_book_an_appointment(twilio, store, channel, lang, number):
    stack, fake = twilio
    s = SCRIPTS[lang]
    phone = Phone(stack, fake, store, channel, number)

    asked = "\n".join(await phone.say(s["book"]))
    assert any(w in asked.lower() for w in ("name", "اسم")), asked
    await phone.say(s["name"])
    offer = await phone.say(s["dob"])
    slots = options(offer[-1])
    assert 1 <= len([o for o in slots if o not in ("Another day", "يوم آخر")]) <= 3, offer
    confirm = await phone.say(s["first"])  # the number of the first time offered
    assert len(options(confirm[-1])) == 2, confirm  # yes / no, as numbered lines
    booked = "\n".join(await phone.say(s["yes"]))
    reference = REFERENCE.search(booked).group(0)
    assert has_arabic(booked) == (lang == "ar"), booked

    async with store() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.channel == channel,
                                                                      ChannelIdentity.address == number))
        patient = await session.get(Patient, identity.patient_id)
        appointment = await session.scalar(select(Appointment).where(Appointment.patient_id == patient.id))
    assert patient.display_name(lang) == s["name"] and patient.birth_date.isoformat() == "1985-03-14"
    assert (appointment.reference, appointment.status, appointment.source_channel) == (
        reference, AppointmentStatus.booked, channel)

    sent = fake.sent_to(phone.address)
    assert all(m.authorised and m.get("From") == phone.to for m in sent)
    assert all(m.get("StatusCallback") == PUBLIC + "/webhooks/twilio/status" for m in sent)
    await _all_delivered(store, identity.id, {m.sid for m in sent})


async def _all_delivered(store, identity_id: int, sids: set[str], timeout: float = 20) -> None:
    """The fake's signed status callbacks end every reply as delivered."""
    deadline = time.monotonic() + timeout
    while True:
        async with store() as session:
            rows = (await session.execute(
                select(Message.provider_message_id, Message.status).join(Conversation)
                .where(Conversation.identity_id == identity_id, Message.direction == "out"))).all()
        if {r.provider_message_id for r in rows} == sids and all(r.status == "delivered" for r in rows):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not all delivered: {rows}")
        await asyncio.sleep(0.2)
