"""A patient books, lists, moves and cancels over the web chat websocket, in English and in Arabic,
against the real Rasa server and trained model; the CRM store holds every message and change."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from crm_store.db import create_engine, sessionmaker
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    ChannelIdentity,
    Conversation,
    ConversationStatus,
    Message,
    Patient,
    Slot,
    SlotStatus,
)
from tests.stack import ChatClient

pytestmark = pytest.mark.rasa
REFERENCE = re.compile(r"SL-[A-Z0-9]{6}")


@pytest.fixture
async def store(stack):
    engine = create_engine(stack.database_url)
    yield sessionmaker(engine)
    await engine.dispose()


async def _patient_state(store, token: str):
    async with store() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.address == token))
        patient = await session.get(Patient, identity.patient_id)
        appointments = (await session.scalars(select(Appointment).where(Appointment.patient_id == patient.id)
                                              .order_by(Appointment.id))).all()
        messages = (await session.scalars(select(Message).join(Conversation)
                                          .where(Conversation.patient_id == patient.id).order_by(Message.id))).all()
    return patient, appointments, messages


async def _slot(store, slot_id: int) -> Slot:
    async with store() as session:
        return await session.get(Slot, slot_id)


def _has_arabic(text: str) -> bool:
    return bool(re.search(r"[\u0600-\u06ff]", text))


SCRIPTS = {
    "en": {
        "book": "I'd like to book an appointment with a cardiologist tomorrow",
        "name": "Sarah Thompson", "dob": "14/03/1985", "first": "1", "yes": "yes",
        "list": "when is my appointment?", "reschedule": "I need to reschedule my appointment",
        "day": "next Sunday", "second": "2", "cancel": "please cancel my appointment",
        "hours": "what time do you open?", "location": "where are you located? is there parking?",
        "insurance": "do you accept Bupa insurance?", "human": "I want to talk to a real person",
    },
    "ar": {
        "book": "ابغى احجز موعد عند دكتور قلب بكرة",
        "name": "محمد العتيبي", "dob": "١٤/٠٣/١٩٨٥", "first": "١", "yes": "ايوه",
        "list": "متى موعدي؟", "reschedule": "ابي اغير موعدي",
        "day": "الأحد الجاي", "second": "٢", "cancel": "الغي موعدي لو سمحت",
        "hours": "متى تفتحون؟", "location": "وين موقعكم وفي مواقف؟",
        "insurance": "تقبلون تأمين التعاونية؟", "human": "ابغى اكلم موظف",
    },
}


@pytest.mark.parametrize("lang", ["en", "ar"])
async def test_book_list_reschedule_cancel(stack, store, lang):
    s = SCRIPTS[lang]
    async with ChatClient(stack.base_url, language=lang) as chat:
        replies = await chat.say(s["book"])
        assert any(w in ChatClient.text(replies).lower() for w in ("name", "اسم")), replies
        await chat.say(s["name"])
        offer = await chat.say(s["dob"])
        offered = [b for b in offer[-1]["buttons"] if b["payload"] not in ("Another day", "يوم آخر")]
        assert 1 <= len(offered) <= 3, offer
        confirm = await chat.say(s["first"])
        assert [b["payload"] for b in confirm[-1]["buttons"]] == ["/affirm", "/deny"], confirm
        booked = ChatClient.text(await chat.say(s["yes"]))
        reference = REFERENCE.search(booked).group(0)
        assert _has_arabic(booked) == (lang == "ar")

        patient, appointments, _ = await _patient_state(store, chat.session_token)
        assert patient.birth_date.isoformat() == "1985-03-14"
        assert patient.display_name(lang) == s["name"]
        assert [(a.reference, a.status) for a in appointments] == [(reference, AppointmentStatus.booked)]
        first_slot = appointments[0].slot_id
        assert (await _slot(store, first_slot)).status == SlotStatus.booked

        listed = ChatClient.text(await chat.say(s["list"]))
        assert reference in listed

        await chat.say(s["reschedule"])  # one appointment: chosen for the patient, the day is asked
        offer = await chat.say(s["day"])
        assert len([b for b in offer[-1]["buttons"] if b["payload"] not in ("Another day", "يوم آخر")]) >= 2, offer
        await chat.say(s["second"])
        moved = ChatClient.text(await chat.say(s["yes"]))
        assert reference in moved
        _, appointments, _ = await _patient_state(store, chat.session_token)
        assert appointments[0].slot_id != first_slot and len(appointments[0].history) == 1
        assert (await _slot(store, first_slot)).status == SlotStatus.free

        confirm = await chat.say(s["cancel"])
        assert [b["payload"] for b in confirm[-1]["buttons"]] == ["/affirm", "/deny"], confirm
        cancelled = ChatClient.text(await chat.say(s["yes"]))
        assert reference in cancelled
        _, appointments, messages = await _patient_state(store, chat.session_token)
        assert appointments[0].status == AppointmentStatus.cancelled
        assert (await _slot(store, appointments[0].slot_id)).status == SlotStatus.free

    inbound = [m for m in messages if m.direction == "in"]
    outbound = [m for m in messages if m.direction == "out"]
    assert len(inbound) == 12 and all(m.status == "answered" for m in inbound)
    assert all(m.intent and m.confidence is not None for m in inbound)
    assert inbound[0].intent == "book_appointment"
    assert {"book_appointment", "list_appointments", "reschedule_appointment", "cancel_appointment"} <= \
        {m.intent for m in inbound}
    assert len(outbound) >= 13 and all(m.status in ("delivered", "sent") for m in outbound)


@pytest.mark.parametrize("lang", ["en", "ar"])
async def test_faq_and_asking_for_a_human(stack, store, lang):
    s = SCRIPTS[lang]
    async with ChatClient(stack.base_url, language=lang) as chat:
        hours = ChatClient.text(await chat.say(s["hours"]))
        assert ("9:00 pm" in hours) if lang == "en" else ("٩ مساءً" in hours)
        location = ChatClient.text(await chat.say(s["location"]))
        assert ("parking" in location.lower()) if lang == "en" else ("المواقف" in location)
        insurance = ChatClient.text(await chat.say(s["insurance"]))
        assert ("Bupa Arabia" in insurance) if lang == "en" else ("التعاونية" in insurance)
        handoff = ChatClient.text(await chat.say(s["human"]))
        assert _has_arabic(handoff) == (lang == "ar")
        silent = await chat.say("hello?" if lang == "en" else "مرحبا؟")
        assert silent == []  # the bot stays quiet while a person owns the conversation
    async with store() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.address == chat.session_token))
        conversation = await session.scalar(select(Conversation).where(Conversation.identity_id == identity.id))
        last = await session.scalar(select(Message).where(Message.conversation_id == conversation.id)
                                    .order_by(Message.id.desc()).limit(1))
    assert conversation.status == ConversationStatus.pending_human
    assert conversation.handoff_reason == "request_human"
    assert last.direction == "in" and last.status == "routed_human"


async def test_emergency_gets_guidance_and_an_urgent_handoff(stack, store):
    async with ChatClient(stack.base_url, language="en") as chat:
        reply = ChatClient.text(await chat.say("my father has severe chest pain and can't breathe"))
    assert "997" in reply
    async with store() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.address == chat.session_token))
        conversation = await session.scalar(select(Conversation).where(Conversation.identity_id == identity.id))
    assert conversation.urgent and conversation.status == ConversationStatus.pending_human


async def test_known_patient_is_not_asked_again_and_history_survives_reconnect(stack, store):
    async with ChatClient(stack.base_url, language="en") as chat:
        await chat.say("book an appointment with dermatology")
        await chat.say("Lina Haddad")
        await chat.say("02/07/1990")
        stopped = ChatClient.text(await chat.say("no, stop"))  # abandon: nothing booked
        assert "nothing was changed" in stopped.lower()
        await chat.reconnect()
        assert [m["text"] for m in chat.history] == chat.transcript
        replies = ChatClient.text(await chat.say("I want to book with the eye doctor"))
        assert "name" not in replies.lower()
        _, appointments, _ = await _patient_state(store, chat.session_token)
        assert appointments == []


async def test_two_misunderstandings_offer_a_person(stack):
    async with ChatClient(stack.base_url, language="en") as chat:
        first = ChatClient.text(await chat.say("what's the best pizza topping"))
        second = await chat.say("who won the football match yesterday")
    assert "person" not in first
    assert "/request_human" in [b["payload"] for b in second[-1]["buttons"]]
