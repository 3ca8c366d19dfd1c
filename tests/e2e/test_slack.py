"""A web chat patient asks for a person: the staff's Slack gets a notice (read from a fake Slack),
a nurse answers in its thread with a signed Events API request, and the patient reads the answer
in the web chat; the real Rasa server and trained model decide the handoff."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from sqlalchemy import select

from crm_store.db import create_engine, sessionmaker
from crm_store.models import ChannelIdentity, Conversation, ConversationStatus, JourneyEvent, Message
from tests.fakes.slack_server import CHANNEL_ID, FakeSlack, signed_event, thread_reply
from tests.stack import ChatClient, Stack

pytestmark = pytest.mark.rasa
TOKEN = "xoxb-e2e-fake-token"
SIGNING_SECRET = "e2e-slack-signing-secret"
ASK = {"en": "I want to talk to a real person", "ar": "ابغى اكلم موظف"}
ANSWER = {"en": "Hello, this is nurse Sara. How can I help?", "ar": "مرحبا، معك الممرضة سارة. كيف أساعدك؟"}


@pytest.fixture(scope="module")
def fake():
    server = FakeSlack(TOKEN).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture(scope="module")
def slack_stack(tmp_path_factory, fake):
    running = Stack.start(tmp_path_factory.mktemp("slack"), env={
        "SILA_CHANNELS": "webchat,slack", "SILA_SLACK_BOT_TOKEN": TOKEN,
        "SILA_SLACK_SIGNING_SECRET": SIGNING_SECRET, "SILA_SLACK_CHANNEL": CHANNEL_ID,
        "SILA_SLACK_API_URL": fake.url})
    yield running
    running.stop()


@pytest.fixture
async def store(slack_stack):
    engine = create_engine(slack_stack.database_url)
    yield sessionmaker(engine)
    await engine.dispose()


async def _notice_for(fake: FakeSlack, link: str, timeout: float = 30) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in fake.posted() if link in r["params"]["text"]]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    return None


@pytest.mark.parametrize("lang", ["en", "ar"])
async def test_a_slack_thread_reply_reaches_the_web_chat_patient(slack_stack, fake, store, lang):
    async with ChatClient(slack_stack.base_url, language=lang) as chat:
        handoff = await chat.say(ASK[lang])
        assert handoff, "the patient is told a person will answer"
        async with store() as session:
            identity = await session.scalar(select(ChannelIdentity).where(
                ChannelIdentity.address == chat.session_token))
            conversation = await session.scalar(select(Conversation).where(Conversation.identity_id == identity.id))
        assert conversation.status == ConversationStatus.pending_human
        link = f"{slack_stack.base_url}/console/conversations/{conversation.id}"
        notice = await _notice_for(fake, link)
        assert notice is not None, fake.requests
        assert notice["params"]["channel"] == CHANNEL_ID and ASK[lang] not in notice["params"]["text"]

        body, headers = signed_event(SIGNING_SECRET, thread_reply(notice["answer"]["ts"], ANSWER[lang]))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{slack_stack.base_url}/webhooks/slack/events", data=body,
                                 headers=headers) as response:
                assert response.status == 200
            forged = dict(headers, **{"X-Slack-Signature": "v0=" + "0" * 64})
            async with http.post(f"{slack_stack.base_url}/webhooks/slack/events", data=body,
                                 headers=forged) as response:
                assert response.status == 403
        while True:
            frame = await chat.ws.receive_json(timeout=30)
            if frame.get("type") == "message" and frame.get("direction") == "out":
                break
        assert frame["text"] == ANSWER[lang]

    async with store() as session:
        staff = (await session.scalars(select(Message).where(Message.conversation_id == conversation.id,
                                                             Message.sender == "staff"))).all()
        conversation = await session.get(Conversation, conversation.id)
        relayed = await session.scalar(select(JourneyEvent).where(
            JourneyEvent.kind == "staff_reply", JourneyEvent.reference == str(conversation.id)))
    assert [m.text for m in staff] == [ANSWER[lang]]
    assert conversation.status == ConversationStatus.human and conversation.assignee == "slack:U0NURSE01"
    assert relayed is not None and relayed.data["via"] == "slack"
