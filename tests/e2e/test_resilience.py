"""Nothing is lost when Rasa is down, and ten patients racing for one slot get one booking."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from crm_store.db import create_engine, sessionmaker
from crm_store.models import Appointment, ChannelIdentity, Conversation, Message
from tests.stack import ChatClient

pytestmark = pytest.mark.rasa
NAMES = ["Omar Khalil", "Aisha Rahman", "Yusuf Nasser", "Maryam Saleh", "Hana Yousef", "Karim Adel",
         "Noor Hamdan", "Ali Hassan", "Fatima Zahra", "Samir Aziz"]


async def test_rasa_down_then_back_replays_every_message(stack):
    engine = create_engine(stack.database_url)
    store = sessionmaker(engine)
    async with ChatClient(stack.base_url, language="en") as chat:
        stack.proxy.set_up(False)
        try:
            first = await chat.say("hello there")
            second = await chat.say("what are your opening hours?")
        finally:
            stack.proxy.set_up(True)
        assert "reply will follow" in ChatClient.text(first)
        assert second == []  # told once per outage, not once per message
        async with store() as session:
            statuses = (await session.scalars(
                select(Message.status).join(Conversation).join(ChannelIdentity)
                .where(ChannelIdentity.address == chat.session_token, Message.direction == "in")
                .order_by(Message.id))).all()
        assert statuses == ["pending_bot", "pending_bot"]

        replayed = []
        while len(replayed) < 2:  # the greeting, then the opening hours, in the patient's order
            frame = await chat.ws.receive_json(timeout=30)
            if frame["type"] == "message" and frame["direction"] == "out":
                replayed.append(frame["text"])
        assert "assistant" in replayed[0].lower() and "9:00 pm" in replayed[1]
    async with store() as session:
        statuses = (await session.scalars(
            select(Message.status).join(Conversation).join(ChannelIdentity)
            .where(ChannelIdentity.address == chat.session_token, Message.direction == "in"))).all()
    await engine.dispose()
    assert statuses == ["answered", "answered"]


async def test_ten_patients_racing_for_one_slot(stack):
    engine = create_engine(stack.database_url)
    store = sessionmaker(engine)
    chats = [ChatClient(stack.base_url, language="en") for _ in range(10)]
    for chat in chats:
        await chat.__aenter__()
    try:
        async def reach_offer(chat: ChatClient, i: int) -> list[dict]:
            await chat.say("book with Dr. Reem Al-Shehri")
            await chat.say(NAMES[i])
            await chat.say("01/01/1980")
            return await chat.say("next Sunday")

        offers = await asyncio.gather(*(reach_offer(c, i) for i, c in enumerate(chats)))
        first_titles = {o[-1]["buttons"][0]["title"] for o in offers}
        assert len(first_titles) == 1  # everyone was offered the same first time
        picks = await asyncio.gather(*(c.say("1") for c in chats))
        winners = [i for i, p in enumerate(picks) if [b["payload"] for b in p[-1]["buttons"]] == ["/affirm", "/deny"]]
        losers = [p for i, p in enumerate(picks) if i not in winners]
        assert len(winners) == 1
        for reply in losers:
            assert "just taken" in ChatClient.text(reply)
            alternatives = [b["title"] for b in reply[-1]["buttons"]]
            assert len(alternatives) >= 2  # other times, and "another day"
            assert all(t not in first_titles for t in alternatives)
        await chats[winners[0]].say("yes")
    finally:
        for chat in chats:
            await chat.__aexit__(None, None, None)
    async with store() as session:
        slot_id = await session.scalar(select(Appointment.slot_id).order_by(Appointment.id.desc()).limit(1))
        bookings = await session.scalar(select(func.count(Appointment.id)).where(Appointment.slot_id == slot_id))
    await engine.dispose()
    assert bookings == 1
