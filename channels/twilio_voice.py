"""Twilio Voice: a phone call is a conversation; the caller speaks (or presses keys), Sila answers
with TwiML that speaks the bot's replies and listens again.

A call is synchronous: the bot's reply must be in the HTTP response to the <Gather> action, so
the gather handler waits for the bot (the one webhook here that does) and speaks the replies the
store holds for that utterance; while it waits, the caller is "on the line" and `deliver()`
counts the replies as delivered. A reply with nobody on the line fails instead of vanishing.
The turn number and the count of silences travel in the action URL, which Twilio signs, so a
retried webhook is recognised without keeping state between requests.
"""
from __future__ import annotations

import re
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import func, select
from twilio.twiml.voice_response import VoiceResponse

from bot.formatting import arabic_digits
from bot.nlu.arabic import normalize
from bot.router import HUMAN_OWNED
from bot.texts import text
from channels.base import ChannelAdapter, ChannelError, InboundMessage, OutboundMessage, ProviderReceipt
from channels.twilio_signature import verified_form
from crm_store.models import (
    ChannelIdentity,
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Message,
    Patient,
    utcnow,
)

VOICE_PATH = "/webhooks/twilio/voice"
GATHER_PATH = VOICE_PATH + "/gather"
STATUS_PATH = VOICE_PATH + "/status"
# Twilio's speech recognition and text-to-speech locales for the hub's two languages.
LOCALES = {"ar": "ar-SA", "en": "en-US"}
# Words that ask for a person straight away, whatever the bot is in the middle of (normalised).
TRANSFER_WORDS = {normalize(w) for w in ("agent", "operator", "موظف", "موظفة")}
# Final call statuses of Twilio's status callback.
CALL_ENDED = {"completed", "busy", "failed", "no-answer", "canceled"}

# What only the phone line says lives in bot/texts.yml under voice_*; it is kept in the
# transcript but is not the bot's reply.
PHONE_LINE_TEXTS = {text(f"voice_{key}", lang) for key in ("reask", "goodbye", "transfer") for lang in ("en", "ar")}


def prompt(key: str, language: str, **values) -> str:
    return text(f"voice_{key}", language, **values)


def spoken_options(buttons: list[dict], language: str) -> str:
    """Choices read out as keypad options: "Press 1 for …, 2 for …"."""
    parts = []
    for n, button in enumerate(buttons, 1):
        number = arabic_digits(str(n)) if language == "ar" else str(n)
        parts.append(prompt("first_option" if n == 1 else "next_option", language, n=number,
                            title=button["title"]))
    return ("، " if language == "ar" else ", ").join(parts) + "."


def wants_a_person(text: str) -> bool:
    return text.strip() == "0" or bool(set(re.findall(r"\w+", normalize(text).lower())) & TRANSFER_WORDS)


def twiml(response: VoiceResponse) -> web.Response:
    return web.Response(text=response.to_xml(), content_type="text/xml", charset="utf-8")


class TwilioVoiceAdapter(ChannelAdapter):
    name = "voice"
    renders_buttons = True  # spoken as keypad options by the gather handler

    def __init__(self, hub, auth_token: str, front_desk: str):
        self.hub = hub
        self.auth_token = auth_token
        self.front_desk = front_desk

    @classmethod
    def from_settings(cls, settings, hub) -> "TwilioVoiceAdapter":
        if not settings.twilio_auth_token:
            raise ValueError("the voice channel needs SILA_TWILIO_AUTH_TOKEN to verify Twilio's webhooks")
        if not settings.front_desk_number:
            raise ValueError("the voice channel needs SILA_FRONT_DESK_NUMBER to transfer callers to a person")
        return cls(hub, settings.twilio_auth_token, settings.front_desk_number)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(VOICE_PATH, self.incoming_call), web.post(GATHER_PATH, self.gather),
                web.post(STATUS_PATH, self.call_status)]

    async def deliver(self, message: OutboundMessage) -> ProviderReceipt:
        reply = {"text": message.text, "buttons": message.buttons, "language": message.language}
        if not self.hub.events.publish(self._topic(message.recipient), reply):
            # Speech only reaches a caller during a call; staff must call back or use another channel.
            raise ChannelError("the caller is not on the line", retryable=False, code="no_call")
        return ProviderReceipt("delivered")

    @staticmethod
    def _topic(address: str) -> str:
        return f"voice:{address}"

    async def _form(self, request: web.Request, *required: str):
        form = await verified_form(request, self.auth_token, self.hub.settings.base_url)
        missing = [key for key in required if not form.get(key)]
        if missing:
            raise web.HTTPBadRequest(text=f"missing Twilio parameter(s): {', '.join(missing)}")
        return form

    async def incoming_call(self, request: web.Request) -> web.Response:
        """A call arrives: greet the caller in their language and listen."""
        form = await self._form(request, "CallSid", "From")
        call_sid, caller = form["CallSid"], form["From"]
        greeting_id = f"{call_sid}:greeting"
        async with self.hub.sessions() as session:
            greeting = await session.scalar(select(Message).where(
                Message.channel == self.name, Message.provider_message_id == greeting_id))
            if greeting is not None:  # Twilio retried the webhook: greet the same way again
                said = (greeting.text, greeting.language)
            else:  # this call starts a new conversation
                language = await self._known_language(session, caller) or self.hub.settings.default_language
                await self._close_previous_calls(session, caller)
                identity, conversation = await self.hub.router.identify(session, self.name, caller, language)
                conversation.language = language
                hospital = self.hub.router.hospital.get(f"name_{language}", "")
                said = self._spoken(session, conversation, prompt("greeting", language, hospital=hospital),
                                    language, provider_message_id=greeting_id)
                session.add(JourneyEvent(patient_id=identity.patient_id, kind="call_started",
                                         reference=call_sid, data={"conversation_id": conversation.id}))
                await session.commit()
        response = VoiceResponse()
        self._listen(response, [said], said[1], turn=1)
        return twiml(response)

    async def gather(self, request: web.Request) -> web.Response:
        """What the caller said (or pressed) goes to the bot; its replies are spoken back."""
        form = await self._form(request, "CallSid", "From")
        call_sid, caller = form["CallSid"], form["From"]
        text = (form.get("SpeechResult") or form.get("Digits") or "").strip()
        turn = await self._turn(request, call_sid)
        if not text:
            silences = request.query.get("silence", "0")
            return await self._silence(caller, turn, int(silences) if silences.isdigit() else 0)
        inbound = InboundMessage(self.name, caller, text, f"{call_sid}:{turn}",
                                 metadata={"call_sid": call_sid})
        if wants_a_person(text):
            return await self._transfer_on_request(inbound)
        # The caller is on the line while the bot answers: deliver() knows its replies are heard.
        with self.hub.events.subscribe(self._topic(caller)):
            received = await self.hub.router.receive(inbound, wait=True)
        async with self.hub.sessions() as session:
            message = await session.get(Message, received.message_id)
            conversation = await session.get(Conversation, received.conversation_id)
            # Read back from the store, so a retried webhook is answered with what was already said.
            replies = await self._replies_to(session, message)
            language = replies[-1]["language"] if replies else message.language or conversation.language
            said = [self._said(r["text"], r["language"] or language, r.get("buttons")) for r in replies]
            if conversation.status in HUMAN_OWNED or not replies:
                # A person is needed (or the bot has nothing to say): put the caller through.
                said.append(self._spoken(session, conversation, prompt("transfer", language), language))
                self._record_transfer(session, conversation, call_sid)
                await session.commit()
                return twiml(self._dial(said))
            hang_up = message.intent == "goodbye"
        response = VoiceResponse()
        if hang_up:
            for text_, lang in said:
                response.say(text_, language=LOCALES.get(lang, "en-US"))
            response.hangup()
        else:
            self._listen(response, said, language, turn=turn + 1)
        return twiml(response)

    async def call_status(self, request: web.Request) -> web.Response:
        """Twilio's status callback: the end of a call ends its conversation."""
        form = await self._form(request, "CallSid", "CallStatus")
        if form["CallStatus"] not in CALL_ENDED:
            return web.Response(status=204)
        async with self.hub.sessions() as session:
            greeting = await session.scalar(select(Message).where(
                Message.channel == self.name, Message.provider_message_id == f"{form['CallSid']}:greeting"))
            conversation = greeting and await session.get(Conversation, greeting.conversation_id)
            ended = await session.scalar(select(JourneyEvent.id).where(
                JourneyEvent.kind == "call_ended", JourneyEvent.reference == form["CallSid"]))
            if conversation is not None and ended is None:
                # A conversation a person owns stays open in the staff inbox after the call.
                if conversation.status == ConversationStatus.bot:
                    conversation.status = ConversationStatus.closed
                session.add(JourneyEvent(patient_id=conversation.patient_id, kind="call_ended",
                                         reference=form["CallSid"],
                                         data={"status": form["CallStatus"], "duration": form.get("CallDuration")}))
                await session.commit()
        return web.Response(status=204)

    async def _turn(self, request: web.Request, call_sid: str) -> int:
        """The caller's utterance number in this call, from the signed action URL."""
        if request.query.get("turn", "").isdigit():
            return int(request.query["turn"])
        async with self.hub.sessions() as session:  # posted without our URL: count what was said
            said = await session.scalar(select(func.count(Message.id)).where(
                Message.channel == self.name, Message.direction == "in",
                Message.provider_message_id.like(f"{call_sid}:%")))
        return said + 1

    async def _silence(self, caller: str, turn: int, silences: int) -> web.Response:
        """No speech and no keys: ask once more, then say goodbye and hang up."""
        async with self.hub.sessions() as session:
            _, conversation = await self.hub.router.identify(session, self.name, caller)
            language = conversation.language
            said = self._spoken(session, conversation, prompt("reask" if not silences else "goodbye", language),
                                language)
            await session.commit()
        response = VoiceResponse()
        if silences:
            response.say(said[0], language=LOCALES.get(language, "en-US"))
            response.hangup()
        else:
            self._listen(response, [said], language, turn=turn, silence=1)
        return twiml(response)

    async def _transfer_on_request(self, inbound: InboundMessage) -> web.Response:
        """"agent", «موظف» or 0: the utterance is kept in the transcript and the call goes to a person."""
        received = await self.hub.router.store(inbound)
        async with self.hub.sessions() as session:
            message = await session.get(Message, received.message_id)
            conversation = await session.get(Conversation, received.conversation_id)
            language = conversation.language if inbound.text.strip() == "0" else message.language
            if message.status == "received":
                message.status = "routed_human"  # the front desk answers it on the line, not the bot
            said = self._spoken(session, conversation, prompt("transfer", language), language)
            self._record_transfer(session, conversation, inbound.metadata["call_sid"])
            await session.commit()
        return twiml(self._dial([said]))

    def _listen(self, response: VoiceResponse, said: list[tuple[str, str]], language: str, *, turn: int,
                silence: int = 0) -> None:
        """Speak, then listen for speech or keys; silence comes back to the same action."""
        query = {"turn": turn, **({"silence": silence} if silence else {})}
        action = f"{GATHER_PATH}?{urlencode(query)}"
        gather = response.gather(input="speech dtmf", action=action, method="POST",
                                 language=LOCALES.get(language, "en-US"), speech_timeout="auto")
        for sentence, lang in said:
            gather.say(sentence, language=LOCALES.get(lang, "en-US"))
        # Without input Twilio skips the action and runs the next verb: report the silence there.
        response.redirect(action, method="POST")

    def _dial(self, said: list[tuple[str, str]]) -> VoiceResponse:
        response = VoiceResponse()
        for sentence, lang in said:
            response.say(sentence, language=LOCALES.get(lang, "en-US"))
        response.dial(self.front_desk)
        return response

    @staticmethod
    def _said(text: str, language: str, buttons: list[dict] | None = None) -> tuple[str, str]:
        return (f"{text} {spoken_options(buttons, language)}" if buttons else text), language

    def _spoken(self, session, conversation: Conversation, text: str, language: str, *,
                provider_message_id: str | None = None) -> tuple[str, str]:
        """Keep what the phone line itself says in the call's transcript (it is spoken at once)."""
        session.add(Message(conversation_id=conversation.id, channel=self.name, direction="out", sender="system",
                            text=text, status="delivered", language=language,
                            provider_message_id=provider_message_id))
        return text, language

    def _record_transfer(self, session, conversation: Conversation, call_sid: str) -> None:
        session.add(JourneyEvent(patient_id=conversation.patient_id, kind="call_transferred", reference=call_sid,
                                 data={"conversation_id": conversation.id}))

    @staticmethod
    async def _replies_to(session, message: Message) -> list[dict]:
        """The replies stored after one inbound message, up to the caller's next utterance."""
        later = (await session.scalars(select(Message).where(
            Message.conversation_id == message.conversation_id, Message.id > message.id)
            .order_by(Message.id))).all()
        replies = []
        for row in later:
            if row.direction == "in":
                break
            if row.text not in PHONE_LINE_TEXTS:
                replies.append({"text": row.text, "buttons": row.buttons or [], "language": row.language})
        return replies

    async def _known_language(self, session, caller: str) -> str | None:
        """The caller's preferred language from their record (this line, or their phone number)."""
        return await session.scalar(
            select(Patient.preferred_language).join(ChannelIdentity, ChannelIdentity.patient_id == Patient.id)
            .where(ChannelIdentity.channel == self.name, ChannelIdentity.address == caller)
        ) or await session.scalar(select(Patient.preferred_language).where(Patient.phone == caller)
                                  .order_by(Patient.id).limit(1))

    async def _close_previous_calls(self, session, caller: str) -> None:
        """Each call is its own conversation: the bot's one left open (no status callback came) is
        closed; one a person owns stays open, and what the caller says goes to a person."""
        stale = (await session.scalars(
            select(Conversation).join(ChannelIdentity, Conversation.identity_id == ChannelIdentity.id)
            .where(ChannelIdentity.channel == self.name, ChannelIdentity.address == caller,
                   Conversation.status == ConversationStatus.bot))).all()
        for conversation in stale:
            conversation.status = ConversationStatus.closed
            conversation.updated_at = utcnow()
        await session.flush()
