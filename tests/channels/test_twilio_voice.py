"""Twilio Voice without the real bot: signed call webhooks in, TwiML out, the call kept as the
conversation. Rasa is unreachable (the router's "reply will follow" is what gets spoken), except
where a small fake Rasa answers with choices."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from aiohttp import web
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from bot.app import HUB, create_app
from bot.outbox import queue_reply
from bot.settings import Settings
from channels.twilio_voice import TwilioVoiceAdapter, spoken_options
from crm_store.models import Conversation, ConversationStatus, JourneyEvent, Message, Patient
from tests.fakes.tcp_proxy import _free_port

SID, TOKEN = "AC" + "2" * 32, "voice-auth-token"
PUBLIC = "https://sila.example"  # behind a proxy: Twilio signs the URL it called
CALLER, LINE, FRONT_DESK = "+966501112233", "+966112345600", "+966112345678"


def settings_for(store_url: str, rasa_url: str | None = None, **extra) -> Settings:
    values = dict(database_url=store_url, rasa_url=rasa_url or f"http://127.0.0.1:{_free_port()}",
                  rasa_timeout=2, replay_interval=3600, public_url=PUBLIC, twilio_account_sid=SID,
                  twilio_auth_token=TOKEN, front_desk_number=FRONT_DESK)
    return Settings(**{**values, **extra})


@pytest.fixture
async def client(aiohttp_client, store_url):
    return await aiohttp_client(create_app(settings_for(store_url), channels=("voice",)))


def call(call_sid: str = "CA" + "a" * 32, **extra) -> dict:
    return {"CallSid": call_sid, "AccountSid": SID, "From": CALLER, "To": LINE, "CallStatus": "in-progress",
            "Direction": "inbound", "ApiVersion": "2010-04-01", **extra}


async def post(client, path: str, params: dict, *, signature: str | None = None):
    if signature is None:
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
    return await client.post(path, data=params, headers={"X-Twilio-Signature": signature} if signature else {})


async def twiml(response) -> ET.Element:
    assert response.status == 200, await response.text()
    assert response.content_type == "text/xml"
    root = ET.fromstring(await response.read())
    assert root.tag == "Response"
    return root


def says(root: ET.Element) -> list[tuple[str, str]]:
    return [(say.text, say.get("language")) for say in root.iter("Say")]


def gather_of(root: ET.Element) -> ET.Element:
    gather = root.find("Gather")
    assert gather is not None, ET.tostring(root)
    assert gather.get("input") == "speech dtmf" and gather.get("speechTimeout") == "auto"
    assert gather.get("action").startswith("/webhooks/twilio/voice/gather")
    # Silence skips the action: the next verb brings Twilio back to the same action.
    redirect = root.find("Redirect")
    assert redirect is not None and redirect.text == gather.get("action")
    return gather


async def start_call(client, **extra) -> ET.Element:
    return await twiml(await post(client, "/webhooks/twilio/voice", call(**extra)))


async def transcript(client) -> list[tuple[str, str, str]]:
    async with client.app[HUB].sessions() as session:
        rows = (await session.execute(select(Message.direction, Message.sender, Message.text)
                                      .order_by(Message.id))).all()
    return [tuple(r) for r in rows]


@pytest.mark.parametrize("path", ["/webhooks/twilio/voice", "/webhooks/twilio/voice/gather?turn=1",
                                  "/webhooks/twilio/voice/status"])
@pytest.mark.parametrize("forgery", ["missing", "wrong token", "altered body"])
async def test_forged_webhooks_are_refused_and_nothing_is_stored(client, path, forgery):
    params = call(SpeechResult="I want to book an appointment", CallStatus="completed")
    signature = {
        "missing": "",
        "wrong token": RequestValidator("not-the-token").compute_signature(PUBLIC + path, params),
        "altered body": RequestValidator(TOKEN).compute_signature(PUBLIC + path, {**params, "From": "+15550001"}),
    }[forgery]
    response = await post(client, path, params, signature=signature)
    assert response.status == 403
    assert await transcript(client) == []
    async with client.app[HUB].sessions() as session:
        assert await session.scalar(select(func.count(Patient.id))) == 0


async def test_a_call_without_its_sid_is_malformed(client):
    response = await post(client, "/webhooks/twilio/voice", {"From": CALLER, "To": LINE})
    assert response.status == 400 and "CallSid" in await response.text()


async def test_a_new_caller_is_greeted_in_the_default_language_and_heard(client):
    root = await start_call(client)
    gather = gather_of(root)
    assert gather.get("language") == "ar-SA" and gather.get("action") == "/webhooks/twilio/voice/gather?turn=1"
    [(greeting, language)] = says(gather)
    assert language == "ar-SA" and "مستشفى النور التخصصي" in greeting
    assert await transcript(client) == [("out", "system", greeting)]
    async with client.app[HUB].sessions() as session:
        event = await session.scalar(select(JourneyEvent).where(JourneyEvent.kind == "call_started"))
    assert event.reference == "CA" + "a" * 32


async def test_a_retried_call_webhook_greets_again_and_starts_one_conversation(client):
    first, again = await start_call(client), await start_call(client)
    assert says(first) == says(again)
    assert len(await transcript(client)) == 1
    async with client.app[HUB].sessions() as session:
        assert await session.scalar(select(func.count(Conversation.id))) == 1


async def test_a_gather_posted_without_our_action_url_still_counts_turns(client):
    await start_call(client)
    for speech in ("hello", "hello again"):
        await twiml(await post(client, "/webhooks/twilio/voice/gather", call(SpeechResult=speech)))
    async with client.app[HUB].sessions() as session:
        ids = (await session.scalars(select(Message.provider_message_id).where(Message.direction == "in")
                                     .order_by(Message.id))).all()
    assert ids == ["CA" + "a" * 32 + ":1", "CA" + "a" * 32 + ":2"]


async def test_a_known_caller_is_greeted_in_their_language(client):
    async with client.app[HUB].sessions() as session:
        session.add(Patient(phone=CALLER, preferred_language="en"))
        await session.commit()
    root = await start_call(client)
    assert gather_of(root).get("language") == "en-US"
    [(greeting, language)] = says(root)
    assert language == "en-US" and "Al Noor Specialist Hospital" in greeting


async def test_speech_goes_to_the_router_and_its_reply_is_spoken_in_that_language(client):
    await start_call(client)
    params = call(SpeechResult="I want to book an appointment with a cardiologist", Confidence="0.91")
    root = await twiml(await post(client, "/webhooks/twilio/voice/gather?turn=1", params))
    gather = gather_of(root)
    assert gather.get("language") == "en-US" and gather.get("action") == "/webhooks/twilio/voice/gather?turn=2"
    [(reply, language)] = says(root)
    assert language == "en-US" and "the reply will follow" in reply  # Rasa is down here
    rows = await transcript(client)
    assert rows[1:] == [("in", "patient", "I want to book an appointment with a cardiologist"),
                        ("out", "system", reply)]
    async with client.app[HUB].sessions() as session:
        inbound = await session.scalar(select(Message).where(Message.direction == "in"))
        told = await session.scalar(select(Message).where(Message.text == reply))
    assert inbound.provider_message_id == "CA" + "a" * 32 + ":1" and inbound.language == "en"
    assert told.status == "delivered"


async def test_a_retried_gather_is_stored_once_and_answered_the_same(client):
    await start_call(client)
    params = call(SpeechResult="ابغى احجز موعد")
    first = await twiml(await post(client, "/webhooks/twilio/voice/gather?turn=1", params))
    again = await twiml(await post(client, "/webhooks/twilio/voice/gather?turn=1", params))
    assert says(first) == says(again) and "سيصلك الرد" in says(first)[0][0]
    assert says(first)[0][1] == "ar-SA" and gather_of(again).get("language") == "ar-SA"
    assert [r[0] for r in await transcript(client)] == ["out", "in", "out"]


async def test_with_nothing_to_say_the_caller_is_put_through(client):
    """Rasa still down on the second utterance: the router stays quiet, so a person answers."""
    await start_call(client)
    await post(client, "/webhooks/twilio/voice/gather?turn=1", call(SpeechResult="hello, I need a doctor"))
    root = await twiml(await post(client, "/webhooks/twilio/voice/gather?turn=2",
                                  call(SpeechResult="hello? are you there?")))
    assert root.find("Gather") is None and root.find("Dial").text == FRONT_DESK
    assert "front desk" in says(root)[-1][0]


@pytest.mark.parametrize("said, language, expected", [
    ({"SpeechResult": "agent"}, "en-US", "front desk"),
    ({"SpeechResult": "I want an operator please"}, "en-US", "front desk"),
    ({"SpeechResult": "ابغى اكلم موظف"}, "ar-SA", "موظف الاستقبال"),
    ({"SpeechResult": "موظفة لو سمحتي"}, "ar-SA", "موظف الاستقبال"),
    ({"Digits": "0"}, "ar-SA", "موظف الاستقبال"),  # the call's language: Arabic by default
])
async def test_asking_for_a_person_transfers_the_call(client, said, language, expected):
    await start_call(client)
    root = await twiml(await post(client, "/webhooks/twilio/voice/gather?turn=1", call(**said)))
    assert [child.tag for child in root] == ["Say", "Dial"]
    assert root.find("Dial").text == FRONT_DESK
    [(text, say_language)] = says(root)
    assert say_language == language and expected in text
    async with client.app[HUB].sessions() as session:
        inbound = await session.scalar(select(Message).where(Message.direction == "in"))
        transferred = await session.scalar(select(func.count(JourneyEvent.id))
                                           .where(JourneyEvent.kind == "call_transferred"))
    assert inbound.text == next(iter(said.values())) and inbound.status == "routed_human"
    assert transferred == 1
    assert (await transcript(client))[-1] == ("out", "system", text)


async def test_silence_is_asked_about_once_then_the_call_ends(client):
    first = await start_call(client)
    retry_url = gather_of(first).get("action")
    reask = await twiml(await post(client, retry_url, call()))  # no SpeechResult, no Digits
    gather = gather_of(reask)
    assert "silence=1" in gather.get("action") and "لم أسمع" in says(reask)[0][0]
    goodbye = await twiml(await post(client, gather.get("action"), call()))
    assert [child.tag for child in goodbye] == ["Say", "Hangup"]
    assert "في أمان الله" in says(goodbye)[0][0]
    rows = await transcript(client)
    assert [r[0] for r in rows] == ["out", "out", "out"]  # greeting, asked again, goodbye


async def test_speaking_after_a_silence_starts_counting_again(client):
    await start_call(client)
    reask = await twiml(await post(client, "/webhooks/twilio/voice/gather?turn=1", call()))
    answered = await twiml(await post(client, gather_of(reask).get("action"),
                                      call(SpeechResult="I'd like an appointment")))
    assert gather_of(answered).get("action") == "/webhooks/twilio/voice/gather?turn=2"


async def test_the_end_of_the_call_ends_its_conversation(client):
    await start_call(client)
    response = await post(client, "/webhooks/twilio/voice/status",
                          call(CallStatus="completed", CallDuration="42"))
    assert response.status == 204
    async with client.app[HUB].sessions() as session:
        conversation = await session.scalar(select(Conversation))
        ended = await session.scalar(select(JourneyEvent).where(JourneyEvent.kind == "call_ended"))
    assert conversation.status == ConversationStatus.closed
    assert ended.data == {"status": "completed", "duration": "42"}
    await start_call(client, call_sid="CA" + "b" * 32)  # the next call is a new conversation
    async with client.app[HUB].sessions() as session:
        assert await session.scalar(select(func.count(Conversation.id))) == 2


async def test_a_conversation_staff_own_outlives_the_call_and_the_next_call_goes_to_them(client):
    await start_call(client)
    async with client.app[HUB].sessions() as session:
        conversation = await session.scalar(select(Conversation))
        conversation.status = ConversationStatus.pending_human
        await session.commit()
    await post(client, "/webhooks/twilio/voice/status", call(CallStatus="completed"))
    await start_call(client, call_sid="CA" + "c" * 32)
    root = await twiml(await post(client, "/webhooks/twilio/voice/gather?turn=1",
                                  call(call_sid="CA" + "c" * 32, SpeechResult="I am calling about my results")))
    assert root.find("Dial").text == FRONT_DESK
    async with client.app[HUB].sessions() as session:
        conversations = (await session.scalars(select(Conversation))).all()
        inbound = await session.scalar(select(Message).where(Message.direction == "in"))
    assert [c.status for c in conversations] == [ConversationStatus.pending_human]
    assert inbound.status == "routed_human"


async def test_a_reply_with_nobody_on_the_line_fails_clearly(client):
    await start_call(client)
    hub = client.app[HUB]
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation))
        reply = queue_reply(session, conversation, "We tried to reach you.", sender="staff")
        await session.commit()
    await hub.outbox.deliver([reply.id])
    async with hub.sessions() as session:
        failed = await session.get(Message, reply.id)
    assert failed.status == "failed" and failed.error == "no_call: the caller is not on the line"


@pytest.mark.parametrize("missing", ["twilio_auth_token", "front_desk_number"])
def test_the_channel_refuses_to_start_without_its_settings(missing):
    settings = settings_for("sqlite+aiosqlite:///unused.db", **{missing: ""})
    with pytest.raises(ValueError, match=missing.upper()):
        TwilioVoiceAdapter.from_settings(settings, hub=None)


def test_arabic_choices_are_read_with_arabic_digits():
    buttons = [{"title": "١٠:٠٠ صباحًا", "payload": "/a"}, {"title": "يوم آخر", "payload": "Another day"}]
    assert spoken_options(buttons, "ar") == "اضغط ١ لاختيار ١٠:٠٠ صباحًا، ٢ لاختيار يوم آخر."


@pytest.fixture
async def fake_rasa(aiohttp_server):
    """Rasa's REST channel answering with choices, then confirming whatever payload it got."""
    heard: list[str] = []

    async def webhook(request: web.Request) -> web.Response:
        message = (await request.json())["message"]
        heard.append(message)
        if message.startswith("/"):
            return web.json_response([{"recipient_id": "1", "text": f"You chose {message}. Goodbye."}])
        return web.json_response([{"recipient_id": "1", "text": "Free times with Dr Khalid tomorrow:",
                                   "buttons": [{"title": "10:00 am", "payload": "/slot_1"},
                                               {"title": "11:30 am", "payload": "/slot_2"}]}])

    app = web.Application()
    app.router.add_post("/webhooks/rest/webhook", webhook)
    server = await aiohttp_server(app)
    server.heard = heard
    return server


async def test_choices_are_read_as_keypad_options_and_a_key_chooses(aiohttp_client, store_url, fake_rasa):
    client = await aiohttp_client(create_app(settings_for(store_url, str(fake_rasa.make_url(""))),
                                             channels=("voice",)))
    await start_call(client)
    offer = await twiml(await post(client, "/webhooks/twilio/voice/gather?turn=1",
                                   call(SpeechResult="book me with a cardiologist tomorrow")))
    [(spoken, language)] = says(offer)
    assert language == "en-US"
    assert spoken == "Free times with Dr Khalid tomorrow: Press 1 for 10:00 am, 2 for 11:30 am."
    chosen = await twiml(await post(client, gather_of(offer).get("action"), call(Digits="2")))
    assert fake_rasa.heard == ["book me with a cardiologist tomorrow", "/slot_2"]
    assert says(chosen) == [("You chose /slot_2. Goodbye.", "en-US")]
    async with client.app[HUB].sessions() as session:
        inbound = (await session.scalars(select(Message).where(Message.direction == "in")
                                         .order_by(Message.id))).all()
    assert [(m.text, m.display) for m in inbound][-1] == ("/slot_2", "2")
