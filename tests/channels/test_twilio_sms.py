"""Twilio SMS and WhatsApp without a bot: signed webhooks in, the REST API (a local fake) out.

Rasa is unreachable here, so every new message gets exactly one real reply through the outbox
("the reply will follow"), which is what the fake counts."""
from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from twilio.request_validator import RequestValidator

from bot.app import HUB, create_app
from bot.outbox import queue_reply
from bot.settings import Settings
from channels.twilio_sms import TwilioSmsAdapter, TwilioWhatsAppAdapter
from crm_store.models import (
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    Message,
    utcnow,
)
from tests.fakes.tcp_proxy import _free_port
from tests.fakes.twilio_server import FakeTwilio

SID, TOKEN = "AC" + "1" * 32, "test-auth-token"
PUBLIC = "https://sila.example"  # behind a proxy: Twilio signs the URL it called, not ours
SMS_FROM, WA_FROM = "+15005550006", "whatsapp:+14155238886"
PATIENT = "+966501234567"


@pytest.fixture
def fake():
    server = FakeTwilio(SID, TOKEN).start()
    yield server
    server.stop()


def settings_for(store_url: str, fake: FakeTwilio, **extra) -> Settings:
    return Settings(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=2,
                    replay_interval=3600, public_url=PUBLIC, twilio_account_sid=SID, twilio_auth_token=TOKEN,
                    twilio_api_url=fake.url, twilio_sms_from=SMS_FROM, twilio_whatsapp_from=WA_FROM,
                    sms_rate=100, whatsapp_rate=100, **extra)


@pytest.fixture
async def client(aiohttp_client, store_url, fake):
    return await aiohttp_client(create_app(settings_for(store_url, fake), channels=("sms", "whatsapp")))


def inbound(text: str, sid: str, sender: str = PATIENT, to: str = SMS_FROM, **extra) -> dict:
    return {"MessageSid": sid, "SmsMessageSid": sid, "AccountSid": SID, "From": sender, "To": to,
            "Body": text, "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01", **extra}


async def post_signed(client, path: str, params: dict, *, signature: str | None = None, sent: dict | None = None):
    """POST a form as Twilio does, signed over the public URL (or with the given signature)."""
    if signature is None:
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
    headers = {"X-Twilio-Signature": signature} if signature else {}
    return await client.post(path, data=sent if sent is not None else params, headers=headers)


async def count(client, *where) -> int:
    async with client.app[HUB].sessions() as session:
        return await session.scalar(select(func.count(Message.id)).where(*where))


async def messages(client, *where) -> list[Message]:
    async with client.app[HUB].sessions() as session:
        return (await session.scalars(select(Message).where(*where).order_by(Message.id))).all()


async def settle(client, *where, status=("queued", "sending"), timeout: float = 20) -> list[Message]:
    """Outbound rows once the outbox is done with them (nothing queued or sending)."""
    for _ in range(int(timeout / 0.1)):
        rows = await messages(client, Message.direction == "out", *where)
        if rows and not any(m.status in status for m in rows):
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"outbox never settled: {[(m.text, m.status, m.error) for m in rows]}")


def texts(records) -> list[str]:
    return [r.get("Body") for r in records]


@pytest.mark.parametrize("forgery", ["missing", "wrong", "body_altered", "other_url"])
async def test_unsigned_or_forged_webhooks_are_refused_and_nothing_is_stored(client, fake, forgery):
    params = inbound("book me in", "SM" + "f" * 32)
    signer = RequestValidator(TOKEN)
    if forgery == "missing":
        response = await post_signed(client, "/webhooks/twilio/messages", params, signature="")
    elif forgery == "wrong":
        wrong = RequestValidator("another-token").compute_signature(PUBLIC + "/webhooks/twilio/messages", params)
        response = await post_signed(client, "/webhooks/twilio/messages", params, signature=wrong)
    elif forgery == "body_altered":
        response = await post_signed(client, "/webhooks/twilio/messages", params,
                                     sent={**params, "Body": "cancel all my appointments"})
    else:  # a signature replayed from another URL of ours
        other = signer.compute_signature(PUBLIC + "/webhooks/twilio/status", params)
        response = await post_signed(client, "/webhooks/twilio/messages", params, signature=other)
    assert response.status == 403
    status = await post_signed(client, "/webhooks/twilio/status",
                               {"MessageSid": "SMx", "MessageStatus": "delivered"}, signature="forged")
    assert status.status == 403
    assert await count(client) == 0
    async with client.app[HUB].sessions() as session:
        assert await session.scalar(select(func.count(ChannelIdentity.id))) == 0
    assert fake.requests == []


@pytest.mark.parametrize("params", [
    {"From": PATIENT, "Body": "hi"},  # no MessageSid
    {"MessageSid": "SM1", "Body": "hi"},  # no From
    {"MessageSid": "SM1", "From": "not-a-number", "Body": "hi"},
    {"MessageSid": "SM1", "From": PATIENT, "Body": "hi", "NumMedia": "many"},
])
async def test_malformed_webhooks_get_400(client, params):
    response = await post_signed(client, "/webhooks/twilio/messages", params)
    assert response.status == 400 and "Twilio message" in await response.text()
    response = await post_signed(client, "/webhooks/twilio/status", {"MessageSid": "SM1"})
    assert response.status == 400
    assert await count(client) == 0


async def test_the_same_webhook_eight_times_in_parallel_is_stored_and_answered_once(client, fake):
    params = inbound("hello", "SM" + "a" * 32)
    responses = await asyncio.gather(*(post_signed(client, "/webhooks/twilio/messages", params) for _ in range(8)))
    assert [r.status for r in responses] == [200] * 8
    assert all(r.content_type == "text/xml" for r in responses)
    assert "<Response" in await responses[0].text()
    await fake.wait_for(lambda sent: len(sent) >= 1)
    await settle(client)
    await asyncio.sleep(0.5)  # room for a second reply, were there one
    assert len(fake.sent_to(PATIENT)) == 1
    reply = fake.sent_to(PATIENT)[0]
    assert reply.authorised and reply.get("From") == SMS_FROM
    assert reply.get("StatusCallback") == PUBLIC + "/webhooks/twilio/status"
    assert await count(client, Message.direction == "in") == 1
    [stored] = await messages(client, Message.direction == "in")
    assert stored.channel == "sms" and stored.provider_message_id == params["MessageSid"]


async def test_whatsapp_address_media_and_reply(client, fake):
    params = inbound("", "SM" + "b" * 32, sender="whatsapp:+966 50 123 4567", to=WA_FROM, NumMedia="2",
                     MediaUrl0=f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages/MMb/Media/ME1",
                     MediaContentType0="image/jpeg",
                     MediaUrl1=f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages/MMb/Media/ME2",
                     MediaContentType1="audio/ogg", ProfileName="Sarah")
    assert (await post_signed(client, "/webhooks/twilio/messages", params)).status == 200
    await fake.wait_for(lambda sent: len(sent) == 1)
    assert fake.messages[0].get("To") == "whatsapp:" + PATIENT and fake.messages[0].get("From") == WA_FROM
    async with client.app[HUB].sessions() as session:
        identity = await session.scalar(select(ChannelIdentity))
    assert (identity.channel, identity.address) == ("whatsapp", PATIENT)
    [stored] = await messages(client, Message.direction == "in")
    assert [e["media"] for e in stored.entities] == [
        {"url": params["MediaUrl0"], "content_type": "image/jpeg"},
        {"url": params["MediaUrl1"], "content_type": "audio/ogg"}]
    await settle(client)


async def test_status_callbacks_update_the_message_and_never_go_backwards(client, fake):
    await post_signed(client, "/webhooks/twilio/messages", inbound("hi", "SM" + "c" * 32))
    [reply] = await settle(client)
    assert reply.status == "sent" and reply.provider_message_id == fake.messages[0].sid
    sid = reply.provider_message_id

    async def callback(status: str, **extra) -> str:
        response = await post_signed(client, "/webhooks/twilio/status",
                                     {"MessageSid": sid, "MessageStatus": status, "AccountSid": SID, **extra})
        assert response.status == 204
        [row] = await messages(client, Message.id == reply.id)
        return row.status

    assert await callback("queued") == "sent"  # Twilio's interim status: stays ours
    assert await callback("delivered") == "delivered"
    assert await callback("sent") == "delivered"  # a late "sent" does not undo delivery
    assert await callback("undelivered", ErrorCode="30003", ErrorMessage="Unreachable destination handset") \
        == "undelivered"
    [row] = await messages(client, Message.id == reply.id)
    assert row.error == "30003: Unreachable destination handset"
    unknown = await post_signed(client, "/webhooks/twilio/status", {"MessageSid": "SMunknown", "MessageStatus": "read"})
    assert unknown.status == 204


async def test_unsubscribed_recipient_is_marked_opted_out_and_not_retried(client, fake):
    fake.unsubscribed.add(PATIENT)
    await post_signed(client, "/webhooks/twilio/messages", inbound("hi", "SM" + "d" * 32))
    [reply] = await settle(client)
    assert reply.status == "failed" and reply.error.startswith("21610:") and reply.attempts == 1
    async with client.app[HUB].sessions() as session:
        revoked = (await session.scalars(select(Consent).where(Consent.status == ConsentStatus.revoked))).all()
    assert {(c.channel, c.purpose, c.source) for c in revoked} == {
        ("sms", ConsentPurpose.transactional, "provider:21610"), ("sms", ConsentPurpose.marketing, "provider:21610")}
    await client.app[HUB].outbox.deliver([reply.id])  # a second push changes nothing
    assert len([r for r in fake.requests if r.get("To") == PATIENT]) == 1


async def test_a_message_two_senders_take_up_at_once_goes_out_once(client, fake):
    """The campaign's senders and the outbox's retry loop can reach for the same queued message in
    one moment; their claims then share a group commit, and only the first may send it."""
    hub = client.app[HUB]
    await post_signed(client, "/webhooks/twilio/messages", inbound("hi", "SM" + "c" * 32))
    await settle(client)
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation))
        queued = [queue_reply(session, conversation, f"Reminder {n}") for n in range(3)]
        await session.commit()
    before = len(fake.requests)
    ids = [m.id for m in queued]
    await asyncio.gather(*(hub.outbox.deliver([i]) for i in ids + ids + ids[:1]))
    assert sorted(r.get("Body") for r in fake.requests[before:]) == ["Reminder 0", "Reminder 1", "Reminder 2"]
    assert {m.status for m in await messages(client, Message.id.in_(ids))} == {"sent"}


async def test_a_server_error_is_retried_then_succeeds(client, fake):
    fake.fail_next(1)
    await post_signed(client, "/webhooks/twilio/messages", inbound("hi", "SM" + "e" * 32))
    [reply] = await settle(client, status=("queued", "sending"), timeout=30)
    assert [r.answered for r in fake.requests] == [500, 201]
    assert reply.status == "sent" and reply.attempts == 1 and reply.error is None


async def test_a_permanent_error_fails_with_twilios_code(client, fake):
    fake.fail_next(1, code=21211)
    await post_signed(client, "/webhooks/twilio/messages", inbound("hi", "SM" + "9" * 32))
    [reply] = await settle(client)
    assert reply.status == "failed" and reply.error == "21211: Invalid 'To' Phone Number"
    assert len(fake.requests) == 1


async def test_whatsapp_outside_the_window_needs_a_template(client, fake):
    hub = client.app[HUB]
    await post_signed(client, "/webhooks/twilio/messages",
                      inbound("hi", "SM" + "7" * 32, sender="whatsapp:" + PATIENT, to=WA_FROM))
    await settle(client)
    before = len(fake.requests)
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation))
        await session.execute(update(Conversation).values(last_inbound_at=utcnow() - timedelta(hours=25)))
        free = queue_reply(session, conversation, "Your results are ready")
        template = queue_reply(session, conversation, "", template={
            "content_sid": "HX" + "0" * 32, "variables": {"1": "Sarah", "2": "الأحد ١٠:٠٠"}})
        await session.commit()
    await hub.outbox.deliver([free.id, template.id])
    free, template = await messages(client, Message.id.in_([free.id, template.id]))
    assert free.status == "failed" and "outside WhatsApp's 24-hour window" in free.error and free.attempts == 1
    assert template.status == "sent"
    [sent] = fake.requests[before:]  # the free text never reached Twilio
    assert sent.get("ContentSid") == "HX" + "0" * 32 and sent.get("Body") is None
    assert json.loads(sent.get("ContentVariables")) == {"1": "Sarah", "2": "الأحد ١٠:٠٠"}


async def test_stop_suppresses_marketing_start_restores_it_help_names_the_hospital(client, fake):
    hub = client.app[HUB]

    async def marketing(text: str) -> Message:
        async with hub.sessions() as session:
            conversation = await session.scalar(select(Conversation))
            queued = queue_reply(session, conversation, text, purpose="marketing")
            await session.commit()
        await hub.outbox.deliver([queued.id])
        [row] = await messages(client, Message.id == queued.id)
        return row

    await post_signed(client, "/webhooks/twilio/messages", inbound("STOP", "SM" + "1" * 32))
    await fake.wait_for(lambda sent: len(sent) == 1)
    assert "unsubscribed" in fake.messages[-1].get("Body")
    assert (await marketing("Flu shots this week")).status == "suppressed"
    await post_signed(client, "/webhooks/twilio/messages", inbound("START", "SM" + "2" * 32))
    await fake.wait_for(lambda sent: len(sent) == 2)
    assert "subscribed again" in fake.messages[-1].get("Body")
    assert (await marketing("Flu shots next week")).status == "sent"
    await post_signed(client, "/webhooks/twilio/messages", inbound("HELP", "SM" + "3" * 32))
    await fake.wait_for(lambda sent: len(sent) == 4)
    assert texts(fake.messages)[2] == "Flu shots next week"
    assert "Al Noor Specialist Hospital" in fake.messages[3].get("Body") and "+966112345678" in fake.messages[3].get("Body")
    assert await count(client, Message.direction == "in", Message.status == "consent") == 3


async def test_whatsapp_is_refused_on_a_hub_serving_only_sms(aiohttp_client, store_url, fake):
    client = await aiohttp_client(create_app(settings_for(store_url, fake), channels=("sms",)))
    response = await post_signed(client, "/webhooks/twilio/messages",
                                 inbound("hi", "SM" + "4" * 32, sender="whatsapp:" + PATIENT, to=WA_FROM))
    assert response.status == 400 and "whatsapp channel is not enabled" in await response.text()
    assert await count(client) == 0


@pytest.mark.parametrize("cls, missing, needed", [
    (TwilioSmsAdapter, "twilio_auth_token", "SILA_TWILIO_AUTH_TOKEN"),
    (TwilioSmsAdapter, "twilio_account_sid", "SILA_TWILIO_ACCOUNT_SID"),
    (TwilioSmsAdapter, "twilio_sms_from", "SILA_TWILIO_SMS_FROM"),
    (TwilioWhatsAppAdapter, "twilio_whatsapp_from", "SILA_TWILIO_WHATSAPP_FROM"),
])
def test_a_missing_secret_stops_start_up(cls, missing, needed):
    settings = Settings(**{"twilio_account_sid": SID, "twilio_auth_token": TOKEN, "twilio_sms_from": SMS_FROM,
                           "twilio_whatsapp_from": WA_FROM, missing: ""})
    with pytest.raises(ValueError, match=needed):
        cls.from_settings(settings, hub=None)


def test_a_whatsapp_sender_without_its_prefix_stops_start_up():
    settings = Settings(twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_whatsapp_from="+14155238886")
    with pytest.raises(ValueError, match="whatsapp:"):
        TwilioWhatsAppAdapter.from_settings(settings, hub=None)


# --- long messages: Twilio refuses a body over 1,600 characters (21617) ---------------------------

LONG_AR = " ".join(f"موعدك رقم {i} في عيادة القلب يوم الأحد، الرجاء الحضور قبل الموعد بربع ساعة." for i in range(70))
LONG_EN = " ".join(f"Item {i}: bring your insurance card and the list of your medicines." for i in range(60))


def squeeze(text: str) -> str:
    return "".join(text.split())


async def long_reply(client, fake, text: str, *, sender: str = PATIENT, to: str = SMS_FROM, sid: str,
                     buttons: list | None = None, fail_part: int | None = None) -> tuple[int, list]:
    """Open a conversation, then queue and send one long reply; (its id, the requests Twilio got).
    With `fail_part`, Twilio answers that part (1-based) with a 500."""
    hub = client.app[HUB]
    await post_signed(client, "/webhooks/twilio/messages", inbound("مرحبا", sid, sender=sender, to=to))
    await settle(client)
    if fail_part:
        fake.fail_next(1, after=fail_part - 1)
    before = len(fake.requests)
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation))
        message = queue_reply(session, conversation, text, buttons=buttons)
        await session.commit()
    await hub.outbox.deliver([message.id])
    return message.id, fake.requests[before:]


async def test_the_fake_refuses_a_body_over_1600_characters_as_twilio_does(client, fake):
    from twilio.base.exceptions import TwilioRestException

    messages_api = client.app[HUB].adapters["sms"].client().api.account.messages
    with pytest.raises(TwilioRestException) as refused:
        await messages_api.create_async(to=PATIENT, from_=SMS_FROM, body="a" * 1601)
    assert (refused.value.status, refused.value.code) == (400, 21617)
    with pytest.raises(TwilioRestException):  # an emoji counts twice
        await messages_api.create_async(to=PATIENT, from_=SMS_FROM, body="😀" * 801)
    assert (await messages_api.create_async(to=PATIENT, from_=SMS_FROM, body="ع" * 1600)).sid


async def test_a_long_arabic_sms_goes_out_in_parts_in_order_with_the_options_last(client, fake):
    buttons = [{"title": "نعم", "payload": "/affirm"}, {"title": "لا", "payload": "/deny"}]
    message_id, sent = await long_reply(client, fake, LONG_AR, sid="SM" + "6" * 32, buttons=buttons)
    bodies = [r.get("Body") for r in sent]
    assert [r.answered for r in sent] == [201] * 4  # 5,200 characters: one message would be refused
    # Arabic is UCS-2: each part fills at most 23 segments of 67 characters, and ends a sentence.
    assert all(len(b) <= 23 * 67 for b in bodies) and all(b.endswith("ربع ساعة.") for b in bodies[:-1])
    assert squeeze("".join(bodies)) == squeeze(LONG_AR + "1. نعم 2. لا")
    assert bodies[-1].endswith("1. نعم\n2. لا")
    assert [r.get("StatusCallback") for r in sent] == [None] * 3 + [PUBLIC + "/webhooks/twilio/status"]
    [row] = await messages(client, Message.id == message_id)
    assert (row.status, row.provider_message_id, row.text) == ("sent", sent[-1].sid, LONG_AR)
    await post_signed(client, "/webhooks/twilio/status",
                      {"MessageSid": sent[-1].sid, "MessageStatus": "delivered", "AccountSid": SID})
    [row] = await messages(client, Message.id == message_id)
    assert row.status == "delivered"


async def test_a_long_whatsapp_message_uses_the_whole_1600_characters(client, fake):
    message_id, sent = await long_reply(client, fake, LONG_EN, sender="whatsapp:" + PATIENT, to=WA_FROM,
                                        sid="SM" + "8" * 32)
    bodies = [r.get("Body") for r in sent]
    assert [r.answered for r in sent] == [201] * 3 and all(r.get("To") == "whatsapp:" + PATIENT for r in sent)
    assert all(1500 < len(b) <= 1600 for b in bodies[:-1]) and " ".join(bodies) == LONG_EN
    [row] = await messages(client, Message.id == message_id)
    assert row.status == "sent"


async def test_a_part_that_fails_is_retried_without_sending_the_earlier_parts_again(client, fake):
    message_id, sent = await long_reply(client, fake, LONG_AR, sid="SM" + "0" * 32, fail_part=2)
    assert [r.answered for r in sent] == [201, 500]
    [row] = await messages(client, Message.id == message_id)
    assert row.status == "queued" and row.error == "20500: part 2 of 4: Internal Server Error"
    await client.app[HUB].outbox.deliver([message_id])  # the retry, when it falls due
    [row] = await settle(client, Message.id == message_id)
    tried = fake.requests[-5:]
    assert tried[:2] == sent and [r.answered for r in tried] == [500 if r is sent[1] else 201 for r in tried]
    bodies = [r.get("Body") for r in tried]
    assert bodies[1] == bodies[2] and len(set(bodies)) == 4  # part 2 again, part 1 not
    assert squeeze("".join(bodies[:1] + bodies[2:])) == squeeze(LONG_AR)
    assert row.status == "sent" and row.attempts == 1 and row.provider_message_id == tried[-1].sid
