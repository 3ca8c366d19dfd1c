"""Telegram: the secret token on every update, one message per update however often it comes,
button taps, linking a chat to a patient, and the Bot API's answers, against a local fake Bot API."""
from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, select
from telegram.error import BadRequest

from bot.app import HUB, create_app
from bot.outbox import queue_reply
from bot.settings import Settings
from channels.base import ChannelError, OutboundMessage
from channels.telegram import (
    BLOCKED_ERROR,
    SECRET_HEADER,
    TelegramAdapter,
    deep_link,
    e164,
    link_code,
    read_link_code,
)
from crm_store.models import (
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    JourneyEvent,
    Message,
    Patient,
)
from tests.fakes.tcp_proxy import _free_port
from tests.fakes.telegram_server import BLOCKED, BOT_USER, FakeTelegram

TOKEN = "7000000001:AAH-fake-token"
SECRET = "s3cret-token_for-webhooks"
CHAT = 51234567


@pytest.fixture
async def fake():
    server = await FakeTelegram(TOKEN).start()
    yield server
    await server.close()


@pytest.fixture
async def client(aiohttp_client, store_url, fake):
    # Nothing listens on the Rasa port: each new conversation gets "the reply will follow" once.
    settings = Settings(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=2,
                        replay_interval=3600, channels="telegram", telegram_bot_token=TOKEN,
                        telegram_secret_token=SECRET, telegram_api_url=fake.url)
    return await aiohttp_client(create_app(settings))


def _user(chat: int = CHAT, language: str = "en") -> dict:
    return {"id": chat, "is_bot": False, "first_name": "Sarah", "language_code": language}


def message_update(update_id: int, text: str | None = None, chat: int = CHAT, language: str = "en",
                   **extra) -> dict:
    message = {"message_id": update_id + 1000, "from": _user(chat, language), "date": int(time.time()),
               "chat": {"id": chat, "type": "private", "first_name": "Sarah"}, **extra}
    if text is not None:
        message["text"] = text
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return {"update_id": update_id, "message": message}


def callback_update(update_id: int, data: str, shown: dict, chat: int = CHAT) -> dict:
    """A tap on a button of `shown`, a message the bot sent (as the fake Bot API returned it)."""
    return {"update_id": update_id, "callback_query": {
        "id": f"cq-{update_id}", "from": _user(chat), "chat_instance": "-4242", "data": data,
        "message": {**shown, "from": BOT_USER}}}


async def post(client, update, secret: str | None = SECRET):
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    return await client.post("/webhooks/telegram", json=update, headers=headers)


async def eventually(check, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def count(client, *where) -> int:
    async with client.app[HUB].sessions() as session:
        return await session.scalar(select(func.count(Message.id)).where(*where))


async def settled(client) -> bool:
    """Nothing inbound waits for the bot and nothing outbound waits to be sent."""
    return (await count(client, Message.direction == "in", Message.status == "received") == 0
            and await count(client, Message.direction == "out", Message.status.in_(("queued", "sending"))) == 0)


async def identity_patient(client, chat: int = CHAT) -> int | None:
    async with client.app[HUB].sessions() as session:
        return await session.scalar(select(ChannelIdentity.patient_id).where(
            ChannelIdentity.channel == "telegram", ChannelIdentity.address == str(chat)))


async def add_patient(client, phone: str | None = None) -> int:
    async with client.app[HUB].sessions() as session:
        patient = Patient(given_name_en="Sarah", family_name_en="Thompson", phone=phone, preferred_language="en")
        session.add(patient)
        await session.commit()
        return patient.id


def test_the_adapter_refuses_to_start_without_its_secrets():
    with pytest.raises(ValueError, match="SILA_TELEGRAM_BOT_TOKEN"):
        TelegramAdapter.from_settings(Settings(telegram_secret_token=SECRET), hub=None)
    with pytest.raises(ValueError, match="SILA_TELEGRAM_SECRET_TOKEN"):
        TelegramAdapter.from_settings(Settings(telegram_bot_token=TOKEN), hub=None)
    with pytest.raises(ValueError, match="SILA_TELEGRAM_SECRET_TOKEN"):
        TelegramAdapter.from_settings(Settings(telegram_bot_token=TOKEN, telegram_secret_token="has spaces"), None)


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", SECRET + "x"])
async def test_an_update_without_the_secret_token_is_refused_and_not_stored(client, fake, secret):
    response = await post(client, message_update(1, "hello"), secret=secret)
    assert response.status == 403
    assert await count(client) == 0 and fake.requests == []


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"update": 1}', b'{"update_id": "x"}',
                                  b'{"update_id": 3, "message": {"text": "no chat"}}'])
async def test_a_malformed_update_is_a_400(client, body):
    response = await client.post("/webhooks/telegram", data=body,
                                 headers={SECRET_HEADER: SECRET, "Content-Type": "application/json"})
    assert response.status == 400
    assert "Update" in await response.text()
    assert await count(client) == 0


async def test_the_same_update_eight_times_at_once_is_stored_and_answered_once(client, fake):
    update = message_update(10, "I'd like to book an appointment")
    responses = await asyncio.gather(*(post(client, update) for _ in range(8)))
    assert [r.status for r in responses] == [200] * 8
    assert await eventually(lambda: settled(client))
    assert await count(client, Message.direction == "in") == 1
    async with client.app[HUB].sessions() as session:
        stored = await session.scalar(select(Message).where(Message.direction == "in"))
    assert (stored.text, stored.provider_message_id, stored.channel) == ("I'd like to book an appointment", "10",
                                                                         "telegram")
    replies = fake.sent(chat_id=CHAT)
    assert len(replies) == 1 and "reply will follow" in replies[0]["text"]
    assert fake.requests[-1]["token"] == TOKEN
    assert await count(client, Message.direction == "out", Message.status == "sent",
                       Message.provider_message_id == f"{CHAT}:1") == 1


async def test_stop_is_honoured_before_the_bot(client, fake):
    assert (await post(client, message_update(20, "STOP"))).status == 200
    assert await eventually(lambda: settled(client))
    assert "unsubscribed" in fake.sent(chat_id=CHAT)[-1]["text"]
    async with client.app[HUB].sessions() as session:
        status = await session.scalar(select(Consent.status).where(Consent.channel == "telegram")
                                      .order_by(Consent.id.desc()).limit(1))
    assert status == ConsentStatus.revoked


async def _send_with_buttons(client, fake, buttons: list[dict]) -> tuple[int, dict]:
    """The bot asks something with buttons; returns the stored message id and what Telegram got."""
    await post(client, message_update(30, "hello"))
    assert await eventually(lambda: settled(client))
    hub = client.app[HUB]
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation))
        message = queue_reply(session, conversation, "Which time suits you?", buttons=buttons, language="en")
        await session.commit()
    await hub.outbox.deliver([message.id])
    return message.id, fake.sent()[-1]


async def test_buttons_are_an_inline_keyboard_and_a_tap_reaches_the_bot_as_its_payload(client, fake):
    long_payload = "/choose_slot" + '{"slot_id": 123456, "practitioner": "dr-khalid-alharbi", "day": "2026-12-01"}'
    buttons = [{"title": "Sun 10:00", "payload": "2026-12-01T10:00:00+03:00"},
               {"title": "Dr Khalid, Sun 10:30", "payload": long_payload},
               {"title": "Yes", "payload": "/affirm"}]
    message_id, sent = await _send_with_buttons(client, fake, buttons)
    keyboard = sent["reply_markup"]["inline_keyboard"]
    assert [[b["text"] for b in row] for row in keyboard] == [["Sun 10:00"], ["Dr Khalid, Sun 10:30"], ["Yes"]]
    data = [row[0]["callback_data"] for row in keyboard]
    assert data == ["2026-12-01T10:00:00+03:00", f"~{message_id}.1", "/affirm"]
    assert all(len(d.encode()) <= 64 for d in data)

    shown = {"message_id": 1, "date": int(time.time()), "chat": {"id": CHAT, "type": "private"},
             "text": sent["text"], "reply_markup": sent["reply_markup"]}
    for update_id, tapped in ((31, data[1]), (32, data[2])):
        assert (await post(client, callback_update(update_id, tapped, shown))).status == 200
    assert await eventually(lambda: settled(client))
    async with client.app[HUB].sessions() as session:
        taps = (await session.execute(select(Message.text, Message.display).where(
            Message.provider_message_id.in_(("31", "32"))).order_by(Message.id))).all()
    assert taps == [(long_payload, "Dr Khalid, Sun 10:30"), ("/affirm", "Yes")]
    assert [a["callback_query_id"] for a in fake.sent("answerCallbackQuery")] == ["cq-31", "cq-32"]

    # Telegram retries the same tap: stored once, answered once.
    await asyncio.gather(*(post(client, callback_update(32, data[2], shown)) for _ in range(3)))
    assert await count(client, Message.provider_message_id == "32") == 1
    assert len(fake.sent("answerCallbackQuery")) == 2


async def test_a_long_payload_reference_from_another_chat_is_not_resolved(client, fake):
    message_id, sent = await _send_with_buttons(client, fake, [{"title": "x", "payload": "p" * 80}])
    other = {"message_id": 9, "date": int(time.time()), "chat": {"id": 999, "type": "private"}, "text": "?"}
    assert (await post(client, callback_update(40, f"~{message_id}.0", other, chat=999))).status == 200
    assert await count(client, Message.provider_message_id == "40") == 0
    assert [a["callback_query_id"] for a in fake.sent("answerCallbackQuery")] == ["cq-40"]


async def test_start_with_a_link_code_moves_the_chat_to_the_existing_patient(client, fake):
    patient_id = await add_patient(client)
    await post(client, message_update(50, "hello"))  # first contact: a placeholder patient is made
    assert await eventually(lambda: settled(client))
    placeholder = await identity_patient(client)
    assert placeholder != patient_id

    update = message_update(51, f"/start {link_code(patient_id, SECRET)}", language="ar")
    await asyncio.gather(*(post(client, update) for _ in range(4)))
    assert await eventually(lambda: settled(client))
    assert await identity_patient(client) == patient_id
    async with client.app[HUB].sessions() as session:
        conversations = (await session.scalars(select(Conversation.patient_id))).all()
        command = await session.scalar(select(Message).where(Message.provider_message_id == "51"))
    assert conversations == [patient_id]
    assert command.text == "/start" and command.status == "linked"  # the code itself is not kept
    replies = [r["text"] for r in fake.sent(chat_id=CHAT)]
    assert len(replies) == 2 and "تم ربط حسابك" in replies[1]


@pytest.mark.parametrize("code", ["12-99999-AAAAAAAAAAAAAAAA", "nonsense", "expired"])
async def test_start_with_an_invalid_code_is_refused_clearly(client, fake, code):
    patient_id = await add_patient(client)
    if code == "expired":
        code = link_code(patient_id, SECRET, now=time.time() - 30 * 86400)
    await post(client, message_update(60, f"/start {code}"))
    assert await eventually(lambda: settled(client))
    assert await identity_patient(client) != patient_id
    assert "not valid" in fake.sent(chat_id=CHAT)[-1]["text"]
    assert await count(client, Message.status == "link_refused") == 1


def test_link_codes_are_short_signed_and_readable_only_with_the_secret():
    code = link_code(42, SECRET)
    assert len(code) <= 64 and all(c.isalnum() or c in "-_" for c in code)  # a t.me start parameter
    assert read_link_code(code, SECRET) == 42
    assert read_link_code(code, "another-secret") is None
    assert read_link_code(code.replace("42-", "43-", 1), SECRET) is None
    assert deep_link("sila_hospital_bot", code) == f"https://t.me/sila_hospital_bot?start={code}"


async def test_sharing_ones_own_contact_links_by_phone(client, fake):
    patient_id = await add_patient(client, phone="+966501234567")
    contact = {"phone_number": "966501234567", "first_name": "Sarah", "user_id": CHAT}
    await post(client, message_update(70, contact=contact))
    assert await eventually(lambda: settled(client))
    assert await identity_patient(client) == patient_id
    assert "now linked" in fake.sent(chat_id=CHAT)[-1]["text"]


async def test_someone_elses_contact_links_nothing(client, fake):
    patient_id = await add_patient(client, phone="+966501234567")
    contact = {"phone_number": "+966501234567", "first_name": "Sarah", "user_id": CHAT + 1}
    await post(client, message_update(80, contact=contact))
    assert await eventually(lambda: settled(client))
    assert await identity_patient(client) != patient_id
    assert "your own phone number" in fake.sent(chat_id=CHAT)[-1]["text"]


async def test_a_phone_shared_by_two_records_links_neither(client, fake):
    first, second = [await add_patient(client, phone="+966501234567") for _ in range(2)]
    contact = {"phone_number": "966501234567", "first_name": "Sarah", "user_id": CHAT}
    await post(client, message_update(85, contact=contact))
    assert await eventually(lambda: settled(client))
    assert await identity_patient(client) not in (first, second)
    assert "Several records" in fake.sent(chat_id=CHAT)[-1]["text"]


def test_contact_numbers_become_e164():
    assert e164("966501234567") == "+966501234567"
    assert e164("+44 20 7946 0958") == "+442079460958"
    assert e164("12") is None


async def test_a_blocked_bot_opts_the_patient_out_and_is_not_retried(client, fake):
    fake.fail("sendMessage", *BLOCKED, times=10)
    await post(client, message_update(90, "hello"))
    assert await eventually(lambda: settled(client))
    async with client.app[HUB].sessions() as session:
        reply = await session.scalar(select(Message).where(Message.direction == "out"))
        status = await session.scalar(select(Consent.status).where(Consent.channel == "telegram")
                                      .order_by(Consent.id.desc()).limit(1))
    assert (reply.status, reply.attempts) == ("failed", 1) and "blocked" in reply.error
    assert status == ConsentStatus.revoked
    assert len(fake.sent()) == 1


@pytest.mark.parametrize("status, description, retryable", [
    (500, "Internal Server Error", True),
    (502, "Bad Gateway", True),
    (400, "Bad Request: chat not found", False),
    (403, "Forbidden: user is deactivated", False),
])
async def test_bot_api_errors_are_retryable_or_permanent(client, fake, status, description, retryable):
    fake.fail("sendMessage", status, description)
    adapter = client.app[HUB].adapters["telegram"]
    with pytest.raises(ChannelError) as error:
        await adapter.deliver(OutboundMessage(1, "telegram", str(CHAT), "hello"))
    assert error.value.retryable is retryable and not error.value.opted_out
    assert description.split(": ")[-1].lower() in str(error.value).lower()  # the provider's words, for staff
    receipt = await adapter.deliver(OutboundMessage(2, "telegram", str(CHAT), "hello again"))
    assert receipt.status == "sent"


async def test_a_dropped_connection_is_retryable(client, fake):
    fake.fail("sendMessage", status=0)
    adapter = client.app[HUB].adapters["telegram"]
    with pytest.raises(ChannelError) as error:
        await adapter.deliver(OutboundMessage(1, "telegram", str(CHAT), "hello"))
    assert error.value.retryable and not error.value.opted_out


async def test_set_webhook_sends_the_secret_token(client, fake):
    adapter = client.app[HUB].adapters["telegram"]
    assert await adapter.set_webhook("https://sila.example/webhooks/telegram") is True
    params = fake.sent("setWebhook")[0]
    assert params["url"] == "https://sila.example/webhooks/telegram" and params["secret_token"] == SECRET
    assert params["allowed_updates"] == ["message", "callback_query", "my_chat_member"]


async def test_opening_the_bot_greets_and_group_chats_are_ignored(client, fake):
    await post(client, message_update(100, "/start"))
    group = message_update(101, "hello everyone")
    group["message"]["chat"] = {"id": -100123, "type": "supergroup", "title": "Family"}
    assert (await post(client, group)).status == 200
    assert await eventually(lambda: settled(client))
    async with client.app[HUB].sessions() as session:
        stored = (await session.execute(select(Message.text, Message.display).where(Message.direction == "in"))).all()
    assert stored == [("/greet", "/start")]  # the bot reads a greeting; staff see what was tapped
    assert [r["chat_id"] for r in fake.sent()] == [CHAT]


# --- the patient blocks the bot, and comes back (my_chat_member) -----------------------------------

async def telegram_consent(client, purpose: ConsentPurpose = ConsentPurpose.transactional) -> tuple | None:
    async with client.app[HUB].sessions() as session:
        row = (await session.execute(
            select(Consent.status, Consent.source).where(Consent.channel == "telegram", Consent.purpose == purpose)
            .order_by(Consent.recorded_at.desc(), Consent.id.desc()).limit(1))).first()
    return tuple(row) if row else None


async def queue_to_chat(client, text: str, *, deliver: bool = False, purpose: str = "transactional") -> int:
    hub = client.app[HUB]
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation))
        message = queue_reply(session, conversation, text, language="en", purpose=purpose)
        await session.commit()
    if deliver:
        await hub.outbox.deliver([message.id])
    return message.id


async def message_row(client, message_id: int) -> Message:
    async with client.app[HUB].sessions() as session:
        return await session.get(Message, message_id)


async def test_blocking_the_bot_revokes_consent_and_fails_what_waits_then_unblocking_restores_it(client, fake):
    await post(client, message_update(200, "hello"))
    assert await eventually(lambda: settled(client))
    waiting = [await queue_to_chat(client, "Your appointment is tomorrow at 10:00"),
               await queue_to_chat(client, "Reply 1 to confirm")]
    before = len(fake.sent())

    assert (await post(client, fake.block(CHAT, 201))).status == 200
    assert await telegram_consent(client) == (ConsentStatus.revoked, "telegram:blocked")
    assert await telegram_consent(client, ConsentPurpose.marketing) == (ConsentStatus.revoked, "telegram:blocked")
    for message_id in waiting:
        row = await message_row(client, message_id)
        assert (row.status, row.error, row.attempts) == ("failed", BLOCKED_ERROR, 0)
    await client.app[HUB].outbox.deliver(waiting)  # a failed message is not picked up again
    assert len(fake.sent()) == before

    # Something sent while blocked is tried once: Telegram's 403 is final, never retried.
    late = await queue_to_chat(client, "Your results are ready", deliver=True)
    row = await message_row(client, late)
    assert (row.status, row.attempts) == ("failed", 1) and "blocked by the user" in row.error
    await client.app[HUB].outbox.deliver([late])
    assert len(fake.sent()) == before + 1

    assert (await post(client, fake.unblock(CHAT, 202))).status == 200
    assert await telegram_consent(client) == (ConsentStatus.granted, "telegram:unblocked")
    # Marketing was never granted on Telegram: unblocking does not grant it.
    assert (await telegram_consent(client, ConsentPurpose.marketing))[0] == ConsentStatus.revoked
    again = await queue_to_chat(client, "Welcome back", deliver=True)
    assert (await message_row(client, again)).status == "sent"
    assert fake.sent()[-1]["text"] == "Welcome back"
    async with client.app[HUB].sessions() as session:
        journey = (await session.scalars(select(JourneyEvent.kind).where(JourneyEvent.kind.like("telegram_%"))
                                         .order_by(JourneyEvent.id))).all()
    assert journey == ["telegram_blocked", "telegram_unblocked"]


@pytest.mark.parametrize("before, after", [
    ("STOP", (ConsentStatus.revoked, ConsentStatus.revoked)),  # an opt-out said before the block still holds
    ("marketing", (ConsentStatus.granted, ConsentStatus.granted)),  # and so does a marketing consent
])
async def test_unblocking_restores_consent_as_it_was_before_the_block(client, fake, before, after):
    await post(client, message_update(210, "hello"))
    assert await eventually(lambda: settled(client))
    if before == "STOP":
        await post(client, message_update(211, "STOP"))
        assert await eventually(lambda: settled(client))
    else:
        async with client.app[HUB].sessions() as session:
            patient_id = await identity_patient(client)
            session.add(Consent(patient_id=patient_id, channel="telegram", purpose=ConsentPurpose.marketing,
                                status=ConsentStatus.granted, source="portal"))
            await session.commit()
    await post(client, fake.block(CHAT, 212))
    assert (await telegram_consent(client))[1] == "telegram:blocked"
    await post(client, fake.unblock(CHAT, 213))
    restored = (await telegram_consent(client), await telegram_consent(client, ConsentPurpose.marketing))
    assert tuple(status for status, _ in restored) == after
    if after[1] == ConsentStatus.granted:
        marketing = await queue_to_chat(client, "Flu shots this week", deliver=True, purpose="marketing")
        assert (await message_row(client, marketing)).status == "sent"


async def test_member_updates_count_by_telegrams_clock_and_a_retried_one_counts_once(client, fake):
    await post(client, message_update(220, "hello"))
    assert await eventually(lambda: settled(client))
    now = int(time.time())
    unblocked, blocked = fake.unblock(CHAT, 222, date=now + 5), fake.block(CHAT, 221, date=now)
    fake.blocked.discard(CHAT)  # the unblock is the newer event
    assert (await post(client, unblocked)).status == 200  # delivered first, though it happened last
    responses = await asyncio.gather(*(post(client, blocked) for _ in range(4)))  # late, and retried
    assert [r.status for r in responses] == [200] * 4
    assert (await telegram_consent(client))[0] != ConsentStatus.revoked
    async with client.app[HUB].sessions() as session:
        events = (await session.execute(select(JourneyEvent.kind, JourneyEvent.reference).where(
            JourneyEvent.kind.like("telegram_%")).order_by(JourneyEvent.id))).all()
    assert sorted(events) == [("telegram_blocked", "221"), ("telegram_unblocked", "222")]
    sent = await queue_to_chat(client, "Still here", deliver=True)
    assert (await message_row(client, sent)).status == "sent"


async def test_member_updates_of_unknown_chats_and_groups_change_nothing(client, fake):
    assert (await post(client, fake.block(CHAT + 7, 230))).status == 200  # never wrote to us
    group = fake.block(-100123, 231)
    group["my_chat_member"]["chat"] = {"id": -100123, "type": "supergroup", "title": "Family"}
    assert (await post(client, group)).status == 200
    async with client.app[HUB].sessions() as session:
        assert await session.scalar(select(func.count(JourneyEvent.id))) == 0
        assert await session.scalar(select(func.count(Consent.id))) == 0
    assert (await post(client, fake.block(CHAT, 232), secret="wrong")).status == 403


# --- long messages: the Bot API refuses a text over 4,096 characters ------------------------------

LONG = " ".join(f"الجملة رقم {n} عن مواعيد العيادة وساعات العمل. Sentence {n} about the clinic." for n in range(120))


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def test_the_fake_refuses_a_text_over_4096_characters_as_telegram_does(client, fake):
    adapter = client.app[HUB].adapters["telegram"]
    with pytest.raises(BadRequest, match="too long"):
        await adapter.bot.send_message(CHAT, "a" * 4097)
    assert fake.delivered(CHAT) == []
    assert (await adapter.bot.send_message(CHAT, "ع" * 4096)).message_id


async def test_a_long_reply_goes_out_in_parts_in_order_with_the_buttons_on_the_last(client, fake):
    adapter = client.app[HUB].adapters["telegram"]
    buttons = [{"title": "Book", "payload": "/book"}, {"title": "Cancel", "payload": "/cancel"}]
    receipt = await adapter.deliver(OutboundMessage(7, "telegram", str(CHAT), LONG, buttons))
    parts = fake.delivered(CHAT)
    assert len(parts) == -(-_units(LONG) // 4096) == 3
    assert all(_units(p["text"]) <= 4096 for p in parts) and all(p["text"].endswith(".") for p in parts)
    assert " ".join(p["text"] for p in parts) == LONG  # cut between sentences, nothing lost or reordered
    assert ["reply_markup" in p for p in parts] == [False, False, True]
    assert receipt.provider_message_id == f"{CHAT}:{parts[-1]['message_id']}"


async def test_a_part_that_fails_is_retried_without_sending_the_earlier_parts_again(client, fake):
    adapter = client.app[HUB].adapters["telegram"]
    fake.fail("sendMessage", 502, "Bad Gateway", after=1)
    message = OutboundMessage(8, "telegram", str(CHAT), LONG)
    with pytest.raises(ChannelError) as error:
        await adapter.deliver(message)
    assert error.value.retryable and str(error.value).startswith("part 2 of 3:")
    assert len(fake.delivered(CHAT)) == 1
    receipt = await adapter.deliver(message)  # the outbox's retry
    texts = [p["text"] for p in fake.delivered(CHAT)]
    assert len(texts) == 3 and " ".join(texts) == LONG  # part 1 once, then parts 2 and 3
    assert receipt.provider_message_id.endswith(f":{fake.delivered(CHAT)[-1]['message_id']}")
