"""Slack for staff: a handoff posts a notice without clinical detail, a signed reply in its thread
reaches the patient once, and anything unsigned, forged or stale is refused, against a fake Slack."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import date

import pytest
from sqlalchemy import func, select

from bot.app import HUB, create_app
from bot.settings import Settings
from channels.base import ChannelError, OutboundMessage
from channels.slack import SlackAdapter
from crm_store.models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Message,
    Patient,
    SlackThread,
)
from tests.fakes.slack_server import CHANNEL_ID, FakeSlack, signed_event, thread_reply
from tests.fakes.tcp_proxy import _free_port

TOKEN = "xoxb-fake-sila-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
EVENTS = "/webhooks/slack/events"
CLINICAL = "I have chest pain since this morning"


@pytest.fixture
async def fake():
    server = await FakeSlack(TOKEN).start()
    yield server
    await server.close()


def settings_for(store_url: str, fake: FakeSlack, **overrides) -> Settings:
    values = dict(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=2,
                  replay_interval=3600, channels="webchat,slack", slack_bot_token=TOKEN,
                  slack_signing_secret=SIGNING_SECRET, slack_channel=CHANNEL_ID, slack_api_url=fake.url,
                  public_url="https://sila.example.org", default_language="en")
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def client(aiohttp_client, store_url, fake):
    return await aiohttp_client(create_app(settings_for(store_url, fake)))


async def web_patient(client):
    """A web chat patient (Layla, with a birth date and phone on file) and their open socket."""
    ws = await client.ws_connect("/webchat/ws")
    await ws.send_json({"type": "hello", "language": "en"})
    welcome = await ws.receive_json()
    hub = client.app[HUB]
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation).order_by(Conversation.id.desc()).limit(1))
        patient = await session.get(Patient, conversation.patient_id)
        patient.given_name_en, patient.family_name_en = "Layla", "Haddad"
        patient.birth_date, patient.phone = date(1987, 3, 14), "+966501234567"
        session.add(Message(conversation_id=conversation.id, channel="webchat", direction="in",
                            sender="patient", text=CLINICAL, status="routed_human"))
        await session.commit()
        return ws, welcome["session"], conversation.id


async def hand_over(client, conversation_id: int, reason: str = "request_human", urgent: bool = False):
    """What actions.conversation.hand_over does: pending_human, a journey event, a console event."""
    hub = client.app[HUB]
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        conversation.status, conversation.handoff_reason = ConversationStatus.pending_human, reason
        conversation.urgent = urgent
        session.add(JourneyEvent(patient_id=conversation.patient_id, kind="handoff",
                                 reference=str(conversation_id), data={"reason": reason, "urgent": urgent}))
        await session.commit()
    hub.events.publish("console", {"type": "handoff", "conversation_id": conversation_id, "urgent": urgent})


async def eventually(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def notice_thread(client, conversation_id: int) -> SlackThread | None:
    async with client.app[HUB].sessions() as session:
        return await session.scalar(select(SlackThread).where(
            SlackThread.conversation_id == conversation_id, SlackThread.thread_ts.is_not(None)))


async def post_event(client, payload: dict, **signing) -> "object":
    body, headers = signed_event(SIGNING_SECRET, payload, **signing)
    return await client.post(EVENTS, data=body, headers=headers)


async def staff_messages(client, conversation_id: int) -> list[Message]:
    async with client.app[HUB].sessions() as session:
        return list((await session.scalars(select(Message).where(
            Message.conversation_id == conversation_id, Message.sender == "staff"))).all())


async def test_a_handoff_posts_one_notice_without_clinical_detail(client, fake):
    ws, _, conversation_id = await web_patient(client)
    await hand_over(client, conversation_id, "request_human")
    thread = await eventually(lambda: notice_thread(client, conversation_id))
    assert thread is not None and thread.channel_id == CHANNEL_ID
    [notice] = fake.posted()
    params = notice["params"]
    assert notice["authorization"] == f"Bearer {TOKEN}"
    assert params["channel"] == CHANNEL_ID and notice["answer"]["ts"] == thread.thread_ts
    text = params["text"]
    assert "Layla" in text and "asked for a person" in text and "Waiting: 0 min" in text
    assert f"https://sila.example.org/console/conversations/{conversation_id}" in text
    for secret in ("Haddad", "chest", CLINICAL, "1987", "+966", "501234567", "URGENT"):
        assert secret not in text
    await ws.close()


async def test_an_emergency_is_flagged_urgent_and_a_nameless_patient_is_a_patient(aiohttp_client, store_url, fake):
    client = await aiohttp_client(create_app(settings_for(store_url, fake, default_language="ar")))
    ws = await client.ws_connect("/webchat/ws")
    await ws.send_json({"type": "hello", "language": "ar"})
    await ws.receive_json()
    async with client.app[HUB].sessions() as session:
        conversation_id = await session.scalar(select(Conversation.id))
    await hand_over(client, conversation_id, "emergency", urgent=True)
    assert await eventually(lambda: notice_thread(client, conversation_id))
    text = fake.posted()[0]["params"]["text"]
    assert "عاجل" in text and "مريض" in text and "حالة طارئة محتملة" in text
    await ws.close()


async def test_a_signed_thread_reply_reaches_the_web_chat_patient(client, fake):
    ws, _, conversation_id = await web_patient(client)
    await hand_over(client, conversation_id)
    thread = await eventually(lambda: notice_thread(client, conversation_id))
    response = await post_event(client, thread_reply(thread.thread_ts, "Hello Layla, this is nurse Sara &amp; team"))
    assert response.status == 200
    [message] = await staff_messages(client, conversation_id)
    assert message.direction == "out" and message.channel == "webchat"
    assert message.text == "Hello Layla, this is nurse Sara & team"
    while True:  # the patient's socket gets the reply
        frame = await ws.receive_json(timeout=20)
        if frame.get("type") == "message" and frame.get("direction") == "out":
            break
    assert frame["text"] == message.text
    async with client.app[HUB].sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation.status == ConversationStatus.human and conversation.assignee == "slack:U0NURSE01"
        journey = await session.scalar(select(JourneyEvent).where(JourneyEvent.kind == "staff_reply"))
        assert journey.data["via"] == "slack" and journey.data["message_id"] == message.id
        audit = await session.scalar(select(AuditEntry).where(AuditEntry.conversation_id == conversation_id))
        assert (audit.username, audit.action, audit.outcome) == ("slack:U0NURSE01", "reply", "ok")
        delivered = await eventually(lambda: _status(client, message.id))
    assert delivered in ("sent", "delivered")
    await ws.close()


async def _status(client, message_id: int) -> str | None:
    async with client.app[HUB].sessions() as session:
        status = await session.scalar(select(Message.status).where(Message.id == message_id))
    return status if status in ("sent", "delivered", "failed") else None


async def test_a_retried_event_is_relayed_once(client, fake):
    ws, _, conversation_id = await web_patient(client)
    await hand_over(client, conversation_id)
    thread = await eventually(lambda: notice_thread(client, conversation_id))
    payload = thread_reply(thread.thread_ts, "We are calling you now")
    assert (await post_event(client, payload)).status == 200
    assert (await post_event(client, payload, retry=1)).status == 200
    assert (await post_event(client, payload, retry=2)).status == 200
    assert len(await staff_messages(client, conversation_id)) == 1
    await ws.close()


async def test_bot_messages_the_notice_and_other_threads_are_not_relayed(client, fake):
    ws, _, conversation_id = await web_patient(client)
    await hand_over(client, conversation_id)
    thread = await eventually(lambda: notice_thread(client, conversation_id))
    bot = thread_reply(thread.thread_ts, "bot echo")
    bot["event"]["bot_id"] = "B0OTHER"
    edited = thread_reply(thread.thread_ts, "edited")
    edited["event"]["subtype"] = "message_changed"
    notice = thread_reply(thread.thread_ts, "the notice")
    notice["event"]["ts"] = thread.thread_ts
    elsewhere = thread_reply("1600000000.000001", "another thread")
    for payload in (bot, edited, notice, elsewhere):
        assert (await post_event(client, payload)).status == 200
    assert await staff_messages(client, conversation_id) == []
    await ws.close()


@pytest.mark.parametrize("tamper", ["forged", "no_signature", "no_timestamp", "stale", "garbled_timestamp",
                                    "other_secret"])
async def test_unsigned_forged_or_stale_events_are_refused(client, fake, tamper):
    ws, _, conversation_id = await web_patient(client)
    await hand_over(client, conversation_id)
    thread = await eventually(lambda: notice_thread(client, conversation_id))
    payload = thread_reply(thread.thread_ts, "Please send me your ID number")
    stale = int(time.time()) - 6 * 60
    body, headers = signed_event("wrong-secret" if tamper == "other_secret" else SIGNING_SECRET, payload,
                                 timestamp=stale if tamper == "stale" else None)
    if tamper == "forged":
        body = body.replace(b"Please", b"PLEASE")
    if tamper == "no_signature":
        del headers["X-Slack-Signature"]
    if tamper == "no_timestamp":
        del headers["X-Slack-Request-Timestamp"]
    if tamper == "garbled_timestamp":
        headers["X-Slack-Request-Timestamp"] = "soon"
    response = await client.post(EVENTS, data=body, headers=headers)
    assert response.status == 403
    assert await staff_messages(client, conversation_id) == []
    async with client.app[HUB].sessions() as session:
        assert await session.scalar(select(func.count(SlackThread.id)).where(SlackThread.thread_ts.is_(None))) == 0
        assert (await session.get(Conversation, conversation_id)).status == ConversationStatus.pending_human
    await ws.close()


async def test_the_url_verification_challenge_is_answered(client):
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    response = await post_event(client, {"token": "x", "challenge": challenge, "type": "url_verification"})
    assert response.status == 200
    assert (await response.json())["challenge"] == challenge
    body, headers = signed_event("wrong-secret", {"type": "url_verification", "challenge": "c"})
    assert (await client.post(EVENTS, data=body, headers=headers)).status == 403


async def test_a_malformed_body_is_a_400(client):
    body = b"{not json"
    ts = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    response = await client.post(EVENTS, data=body, headers={"X-Slack-Request-Timestamp": ts,
                                                             "X-Slack-Signature": f"v0={digest}"})
    assert response.status == 400


async def test_a_refused_notice_is_logged_and_the_next_handoff_still_posts(client, fake):
    fake.fail("chat.postMessage", "channel_not_found")
    ws, _, conversation_id = await web_patient(client)
    await hand_over(client, conversation_id)
    await eventually(lambda: _refused(fake), timeout=20)
    assert fake.posted() == []
    await hand_over(client, conversation_id, "misunderstanding")
    assert await eventually(lambda: notice_thread(client, conversation_id))
    assert "the bot did not understand" in fake.posted()[0]["params"]["text"]
    await ws.close()


async def _refused(fake) -> bool:
    return any(r["answer"].get("error") == "channel_not_found" for r in list(fake.requests) if "answer" in r)


async def test_slack_refuses_to_start_without_its_secrets(store_url, fake):
    for missing in ("slack_bot_token", "slack_signing_secret", "slack_channel"):
        with pytest.raises(ValueError, match=missing.upper()):
            SlackAdapter.from_settings(settings_for(store_url, fake, **{missing: ""}), hub=None)


async def test_deliver_never_sends_to_a_patient(store_url, fake):
    adapter = SlackAdapter.from_settings(settings_for(store_url, fake), hub=None)
    with pytest.raises(ChannelError) as refused:
        await adapter.deliver(OutboundMessage(1, "slack", "U123", "hello"))
    assert refused.value.retryable is False
