"""The router stores a plain message from a known patient with Core statements in a shared
transaction, and everything else through the ORM: both leave the same rows behind, a pre-bot
handler sees every message it may want, and copies of one webhook are stored once."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bot.events import EventBus
from bot.outbox import Outbox
from bot.router import Router
from channels.base import ChannelAdapter, InboundMessage, OutboundMessage, ProviderReceipt
from crm_store.models import ChannelIdentity, Conversation, EhrOutbox, JourneyEvent, Message, Patient

HOSPITAL = {"name_en": "Sila Hospital", "name_ar": "مستشفى صلة", "phone": "+966110000000", "email": "care@sila.example"}


class Provider(ChannelAdapter):
    """An SMS provider that accepts everything (the outbox's far end)."""

    name = "sms"

    def __init__(self):
        self.sent: list[str] = []

    @classmethod
    def from_settings(cls, settings, hub):
        return cls()

    def routes(self):
        return []

    async def deliver(self, message: OutboundMessage) -> ProviderReceipt:
        self.sent.append(message.text)
        return ProviderReceipt("sent", f"SM-out-{len(self.sent)}")


class Recorder:
    """A pre-bot handler that answers nothing and notes what it was shown."""

    def __init__(self, wants=None, claims=None):
        self.seen: list[str] = []
        if wants is not None:
            self.wants = wants
        if claims is not None:
            self.claims = claims

    async def __call__(self, session, conversation, message):
        self.seen.append(message.text)
        return []


@pytest.fixture
async def router(sessions):
    router = Router(sessions, rasa=None, outbox=Outbox(sessions, {"sms": Provider()}), events=EventBus(),
                    default_language="ar",
                    keyword_channels=frozenset({"sms"}), hospital=HOSPITAL)
    yield router
    await router.close()


def near(when, then) -> bool:
    return abs((when - then).total_seconds()) < 5


async def rows_of(sessions, message_id: int) -> dict:
    """What storing one inbound message left behind, without ids and clocks."""
    async with sessions() as session:
        message = await session.get(Message, message_id)
        conversation = await session.get(Conversation, message.conversation_id)
        patient = await session.get(Patient, conversation.patient_id)
        identity = await session.get(ChannelIdentity, conversation.identity_id)
        events = (await session.scalars(select(JourneyEvent).where(
            JourneyEvent.reference == message.provider_message_id))).all()
        owed = (await session.scalars(select(EhrOutbox.kind).where(EhrOutbox.crm_id == message.id))).all()
    return {
        "message": (message.channel, message.direction, message.sender, message.text, message.display,
                    message.status, message.language, message.entities, message.buttons, message.template,
                    message.purpose, message.private, message.attempts, message.error),
        "conversation": (conversation.language, near(conversation.last_inbound_at, message.created_at),
                         near(conversation.updated_at, message.created_at)),
        "patient": patient.preferred_language,
        "identity_seen": near(identity.last_seen_at, message.created_at),
        "journey": [(e.patient_id == patient.id, e.kind, e.data) for e in events],
        "ehr_outbox": owed,
    }


async def test_both_ways_of_storing_leave_the_same_rows(router, sessions):
    await router.store(InboundMessage("sms", "+966500000001", "مرحبا", "SM-first"))
    await router.store(InboundMessage("sms", "+966500000002", "مرحبا", "SM-first-2"))
    media = [{"url": "https://api.twilio.example/media/1", "content_type": "image/jpeg"}]
    core = await router.store(InboundMessage("sms", "+966500000001", "What time do you open?", "SM-core", media))
    everything = Recorder()  # no `wants`, no `claims`: it may want any message, so all go the ORM way
    router.pre_bot.append(everything)
    orm = await router.store(InboundMessage("sms", "+966500000002", "What time do you open?", "SM-orm", media))
    assert everything.seen == ["What time do you open?"]
    core_rows, orm_rows = await rows_of(sessions, core.message_id), await rows_of(sessions, orm.message_id)
    assert core_rows == orm_rows
    assert core_rows["message"][6] == "en" and core_rows["patient"] == "en"
    assert core_rows["journey"] == [(True, "message_in", {"channel": "sms"})]
    assert core_rows["ehr_outbox"] == ["Communication"]


async def test_handlers_see_every_message_they_may_want(router, sessions):
    by_words = Recorder(wants=lambda said: said.lower() == "confirm")
    claimed: set[int] = set()
    by_state = Recorder(wants=lambda said: True, claims=lambda conn, patient_ids: claimed & patient_ids)
    router.pre_bot += [by_words, by_state]
    first = await router.store(InboundMessage("sms", "+966500000003", "hello", "SM-1"))
    await router.store(InboundMessage("sms", "+966500000003", "Confirm", "SM-2"))
    await router.store(InboundMessage("sms", "+966500000003", "thanks", "SM-3"))
    async with sessions() as session:
        claimed.add((await session.get(Conversation, first.conversation_id)).patient_id)
    await router.store(InboundMessage("sms", "+966500000003", "my answer is blue", "SM-4"))
    # The first message created the patient (the ORM way, where every handler is asked).
    assert by_words.seen == ["hello", "Confirm", "my answer is blue"]
    assert by_state.seen == ["hello", "Confirm", "my answer is blue"]


async def test_consent_keywords_and_numbers_still_take_effect(router, sessions):
    await router.store(InboundMessage("sms", "+966500000004", "hello", "SM-a"))
    stop = await router.store(InboundMessage("sms", "+966500000004", "STOP", "SM-b"))
    number = await router.store(InboundMessage("sms", "+966500000004", "٢", "SM-c"))
    async with sessions() as session:
        assert (await session.get(Message, stop.message_id)).status == "consent"
        assert (await session.get(Message, number.message_id)).status == "received"
        replies = (await session.execute(select(Message.sender, Message.status).where(Message.direction == "out"))).all()
    assert replies == [("system", "sent")]  # the opt-out confirmation, queued with the STOP


async def test_copies_of_one_webhook_from_a_known_patient_are_stored_once(router, sessions):
    await router.store(InboundMessage("sms", "+966500000005", "hello", "SM-known"))
    copy = InboundMessage("sms", "+966500000005", "When can I see a cardiologist?", "SM-copied")
    received = await asyncio.gather(*(router.store(copy) for _ in range(8)))
    assert len({r.message_id for r in received}) == 1
    assert sorted(r.duplicate for r in received) == [False] + [True] * 7
    async with sessions() as session:
        stored = await session.scalar(select(func.count(Message.id)).where(Message.provider_message_id == "SM-copied"))
        events = await session.scalar(select(func.count(JourneyEvent.id)).where(JourneyEvent.reference == "SM-copied"))
        owed = await session.scalar(select(func.count(EhrOutbox.id)).where(EhrOutbox.crm_id == received[0].message_id))
    assert (stored, events, owed) == (1, 1, 1)


async def test_many_patients_at_once_keep_each_conversations_order(router, sessions):
    senders = [f"+9665001000{n:02d}" for n in range(25)]
    for n, sender in enumerate(senders):
        await router.store(InboundMessage("sms", sender, "hello", f"SM-hello-{n}"))

    async def talk(n: int, sender: str) -> list[int]:
        return [(await router.store(InboundMessage("sms", sender, f"question {k}", f"SM-{n}-{k}"))).message_id
                for k in range(4)]

    ids = await asyncio.gather(*(talk(n, s) for n, s in enumerate(senders)))
    assert all(sent == sorted(sent) for sent in ids)
    async with sessions() as session:
        texts = (await session.execute(select(Message.provider_message_id, Message.text, Message.status)
                                       .where(Message.text.like("question %")))).all()
    assert len(texts) == 100 and {t.status for t in texts} == {"received"}
