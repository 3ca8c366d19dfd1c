"""Every inbound message, from any channel, goes through here: store it once, find the patient,
then let the bot or a human answer."""
from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import consent
from bot.events import EventBus
from bot.nlu.arabic import normalize
from bot.nlu.choices import choice_index
from bot.nlu.language import detect
from bot.outbox import Outbox, queue_reply, reply_values
from bot.rasa_client import RasaClient, RasaUnavailable
from bot.texts import text
from bot.triage import is_emergency
from channels.base import InboundMessage
from crm_store import answers
from crm_store import inbound as plain_store
from crm_store.group_commit import close_writer, writer
from crm_store.conversations import open_conversation
from crm_store.models import (
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Message,
    Patient,
    utcnow,
)

log = logging.getLogger(__name__)
# Channels whose address is the patient's phone number in E.164.
PHONE_CHANNELS = frozenset({"sms", "whatsapp", "voice"})
HUMAN_OWNED = (ConversationStatus.pending_human, ConversationStatus.human)
NUMBERED = re.compile(r"\s*\d{1,2}\s*[.)]?\s*")


def written_in(seen: str, current: str) -> str:
    """The language of what the patient saw (typed, or a tapped button's title)."""
    # A tapped button sends its payload ("/affirm", "١"); the patient read its title.
    return current if seen.startswith("/") else detect(seen, default=current)


def _language_of(arrival: plain_store.Arrival, current: str) -> str:
    return written_in(arrival.display or arrival.text, current)


def message_event(message: Message) -> dict:
    return {
        "type": "message",
        "id": str(message.provider_message_id or message.id) if message.direction == "in" else str(message.id),
        "direction": message.direction,
        "sender": message.sender,
        "text": message.text,
        "display": message.display,
        "buttons": message.buttons or [],
        "language": message.language,
        "time": message.created_at.isoformat(),
    }


def topic(conversation_id: int) -> str:
    return f"conversation:{conversation_id}"


@dataclass
class Received:
    conversation_id: int
    message_id: int
    duplicate: bool = False


class Router:
    def __init__(self, sessions: async_sessionmaker, rasa: RasaClient, outbox: Outbox, events: EventBus,
                 default_language: str, *, keyword_channels: frozenset[str] = frozenset(),
                 hospital: dict | None = None):
        self.sessions = sessions
        self.keyword_channels = keyword_channels
        self.hospital = hospital or {}
        self.rasa = rasa
        self.outbox = outbox
        self.events = events
        self.default_language = default_language
        # Handlers that may answer a message before the bot, in the transaction that stores it
        # (campaigns: the answer to an appointment reminder); each returns its queued replies.
        # A handler may say which messages it leaves alone, so that those are stored on the fast
        # path without it: `wants(text) -> bool` by their words, and/or `claims(conn, patient_ids)
        # -> set[int]` (Core, in the storing transaction) by the patient's state.
        self.pre_bot: list = []
        # One message at a time per conversation, so replies keep the patient's order.
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._background: set[asyncio.Task] = set()
        self._store_work = partial(plain_store.store_batch, language_of=_language_of, claimed=self._claimed)

    async def close(self) -> None:
        await close_writer(self.sessions)

    async def identify(self, session: AsyncSession, channel: str, address: str,
                       language: str | None = None) -> tuple[ChannelIdentity, Conversation]:
        """The patient behind a channel address and their open conversation, created when new."""
        identity = await session.scalar(
            select(ChannelIdentity).where(ChannelIdentity.channel == channel, ChannelIdentity.address == address)
        )
        if identity is None:
            patient = await self._known_by_phone(session, channel, address)
            if patient is None:
                patient = Patient(preferred_language=language or self.default_language, phone=
                                  address if channel in PHONE_CHANNELS else None)
                session.add(patient)
                await session.flush()
            identity = ChannelIdentity(patient_id=patient.id, channel=channel, address=address)
            session.add(identity)
            # Writing to us is consent to be answered on the same channel (transactional only).
            session.add(Consent(patient_id=patient.id, channel=channel, purpose=ConsentPurpose.transactional,
                                status=ConsentStatus.granted, source=f"inbound:{channel}"))
            session.add(JourneyEvent(patient_id=patient.id, kind="identity_created", reference=channel))
            await session.flush()
        conversation = await open_conversation(session, identity, language)
        return identity, conversation

    @staticmethod
    async def _known_by_phone(session: AsyncSession, channel: str, address: str) -> Patient | None:
        """A patient the hospital already knows (imported from the EHR, say) writing from their phone."""
        if channel not in PHONE_CHANNELS:
            return None
        return await session.scalar(select(Patient).where(Patient.phone == address).order_by(Patient.id).limit(1))

    async def receive(self, inbound: InboundMessage, *, wait: bool = True) -> Received:
        """Store the message exactly once, then let the bot answer it (or leave it for staff).

        Webhooks pass wait=False: the message is safely stored when this returns, and the answer
        follows in the background (a crash before it is answered is picked up by the replayer)."""
        stored = await self.store(inbound)
        if not stored.duplicate:
            if wait:
                await self.answer_conversation(stored.conversation_id)
            else:
                task = asyncio.create_task(self.answer_conversation(stored.conversation_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return stored

    async def store(self, inbound: InboundMessage) -> Received:
        """One transaction: find or create the patient, store the message, apply consent keywords.
        A copy of the same webhook racing this one loses on a unique constraint and is a duplicate.

        A plain message from a known address with an open conversation (most of them) is written
        with Core statements in a transaction shared with the other webhooks of the moment; the
        rest go through the ORM below."""
        if (check := self._plain(inbound)) is not None:
            media = [{"media": m} for m in inbound.media] or None
            stored = await writer(self.sessions).run(self._store_work, plain_store.Arrival(
                inbound.channel, inbound.sender, inbound.text, inbound.metadata.get("display"),
                inbound.provider_message_id, media, check))
            if stored is not None:
                if not stored.duplicate:
                    self._announce(stored)
                return Received(stored.conversation_id, stored.id, stored.duplicate)
        for attempt in (1, 2):
            async with self.sessions() as session:
                if existing := await self._stored(session, inbound):
                    return existing
                try:
                    identity, conversation = await self.identify(session, inbound.channel, inbound.sender)
                    message, replies = await self._store_in(session, inbound, identity, conversation)
                    await session.commit()
                    break
                except IntegrityError:
                    await session.rollback()
                    if existing := await self._stored(session, inbound):
                        return existing
                    if attempt == 2:
                        raise
                    # A new sender's identity was created by the racing copy: look again.
        self._announce(message)
        if replies:
            await self.outbox.deliver([r.id for r in replies])
        return Received(message.conversation_id, message.id)

    def _announce(self, message) -> None:
        self.events.publish(topic(message.conversation_id), message_event(message))
        self.events.publish("console", {"type": "activity", "conversation_id": message.conversation_id})

    def _plain(self, inbound: InboundMessage) -> bool | None:
        """None when storing the message may need more than rows (a consent keyword, a number that
        may answer options, words a pre-bot handler may want from anyone); otherwise whether the
        handlers that may want it must be asked if they claim the patient."""
        if inbound.channel in self.keyword_channels and consent.keyword(inbound.text) is not None:
            return None
        if not inbound.metadata.get("display") and NUMBERED.fullmatch(normalize(inbound.text)):
            return None
        check = False
        for handler in self.pre_bot:
            if (wants := getattr(handler, "wants", None)) is not None and not wants(inbound.text):
                continue
            if getattr(handler, "claims", None) is None:
                return None
            check = True
        return check

    def _claimed(self, conn, patient_ids: set[int]) -> set[int]:
        return set().union(*(h.claims(conn, patient_ids) for h in self.pre_bot if hasattr(h, "claims")))

    @staticmethod
    async def _stored(session: AsyncSession, inbound: InboundMessage) -> Received | None:
        found = (await session.execute(
            select(Message.id, Message.conversation_id).where(
                Message.channel == inbound.channel, Message.provider_message_id == inbound.provider_message_id)
        )).first()
        return Received(found.conversation_id, found.id, duplicate=True) if found else None

    async def answer_conversation(self, conversation_id: int) -> bool:
        """Answer every unanswered message of one conversation, oldest first; False when Rasa is
        unreachable (the rest wait, in order, for the replayer)."""
        async with self._locks[conversation_id]:
            waiting = await writer(self.sessions).run(answers.waiting, conversation_id)
            for n, turn in enumerate(waiting):
                # The bot's actions may hand the conversation to a person: each later message is
                # looked at again once the one before it is answered.
                if not await self._answer(turn.id, turn if n == 0 else None):
                    await self._hold_for_replay(conversation_id)
                    return False
            return True

    async def _store_in(self, session: AsyncSession, inbound: InboundMessage, identity: ChannelIdentity,
                        conversation: Conversation) -> tuple[Message, list[Message]]:
        replies: list[Message] = []
        conversation = await session.get(Conversation, conversation.id)
        patient = await session.get(Patient, conversation.patient_id)
        language = written_in(inbound.metadata.get("display") or inbound.text, conversation.language)
        text_for_bot, display = await self._resolve_numbered_choice(session, conversation, inbound)
        message = Message(
            conversation_id=conversation.id, channel=inbound.channel, direction="in", sender="patient",
            text=text_for_bot, display=display, provider_message_id=inbound.provider_message_id,
            status="received", language=language,
            entities=[{"media": m} for m in inbound.media] or None,
        )
        session.add(message)
        now = utcnow()
        conversation.language = language
        conversation.updated_at = conversation.last_inbound_at = now
        patient.preferred_language = language
        (await session.get(ChannelIdentity, identity.id)).last_seen_at = now
        session.add(JourneyEvent(patient_id=conversation.patient_id, kind="message_in",
                                 reference=inbound.provider_message_id, data={"channel": inbound.channel}))
        if inbound.channel in self.keyword_channels:
            replies = await self._consent_keyword(session, conversation, message)
        for handler in self.pre_bot:
            if message.status == "received":
                replies += await handler(session, conversation, message)
        return message, replies

    @staticmethod
    async def _resolve_numbered_choice(session: AsyncSession, conversation: Conversation,
                                       inbound: InboundMessage) -> tuple[str, str | None]:
        """"2" or «٢» answering numbered options means that option: the bot gets its payload."""
        if inbound.metadata.get("display"):
            return inbound.text, inbound.metadata["display"]
        last = await session.scalar(
            select(Message).where(Message.conversation_id == conversation.id, Message.direction == "out")
            .order_by(Message.id.desc()).limit(1))
        if last is not None and last.buttons and NUMBERED.fullmatch(normalize(inbound.text)):
            index = choice_index(inbound.text, len(last.buttons))
            if index is not None:
                return last.buttons[index - 1]["payload"], inbound.text
        return inbound.text, None

    async def _consent_keyword(self, session: AsyncSession, conversation: Conversation,
                               message: Message) -> list[Message]:
        """STOP, START and HELP change consent in the same transaction that stores the message."""
        kind = consent.keyword(message.text)
        patient_id, channel = conversation.patient_id, conversation.channel
        if kind == "opt_in" and message.text.strip().lower() == "yes" and await consent.current(
                session, patient_id, channel, ConsentPurpose.transactional) != ConsentStatus.revoked:
            return []  # "yes" is an answer unless the patient had opted out
        if kind is None:
            return []
        message.status = "consent"
        if kind == "help":
            hospital = self.hospital
            reply = text("help_keyword", message.language, hospital=hospital[f"name_{message.language}"],
                         phone=hospital["phone"], email=hospital["email"])
        else:
            status = ConsentStatus.revoked if kind == "opt_out" else ConsentStatus.granted
            consent.record(session, patient_id, channel, status, source=f"keyword:{message.text.strip()[:20]}")
            session.add(JourneyEvent(patient_id=patient_id, kind=f"consent_{status.value}", reference=channel))
            reply = text("opted_out" if kind == "opt_out" else "opted_in", message.language)
        await session.flush()
        queued = queue_reply(session, conversation, reply, sender="system", language=message.language)
        await session.flush()
        return [queued]

    async def _answer(self, message_id: int, turn=None) -> bool:
        """Ask the bot about one stored message; False when Rasa is unreachable (kept for replay).
        Core statements, the writes group-committed (crm_store/answers.py): every webhook's
        message comes through here."""
        turn = turn or await writer(self.sessions).run(answers.turns, message_id)
        if turn.conversation_status in HUMAN_OWNED:
            await writer(self.sessions).run(answers.set_status, (message_id, "routed_human"))
            return True
        metadata = {"message_id": message_id, "conversation_id": turn.conversation_id,
                    "patient_id": turn.patient_id, "channel": turn.channel, "language": turn.language}
        text_in = turn.text
        if is_emergency(text_in):
            text_in = "/emergency"  # Rasa's own syntax for "this message has intent emergency"
        try:
            replies = await self.rasa.converse(str(turn.conversation_id), text_in, metadata)
        except RasaUnavailable as exc:
            log.warning("Rasa unavailable for conversation %s: %s", turn.conversation_id, exc)
            return False
        rows = [reply_values(turn.conversation_id, turn.conversation_channel, turn.conversation_language,
                             reply.get("text") or "", buttons=reply.get("buttons"), language=turn.language)
                for reply in replies if reply.get("text")]
        queued = await writer(self.sessions).run(answers.record, answers.Answer(message_id, rows))
        await self.outbox.deliver(queued)
        return True

    async def _hold_for_replay(self, conversation_id: int) -> None:
        """Mark what is unanswered as pending, telling the patient once per outage."""
        async with self.sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
            unanswered = (await session.scalars(
                select(Message).where(Message.conversation_id == conversation_id, Message.direction == "in",
                                      Message.status.in_(("received", "pending_bot"))).order_by(Message.id))).all()
            already_told = any(m.status == "pending_bot" for m in unanswered)
            for message in unanswered:
                message.status = "pending_bot"
            queued = None
            if unanswered and not already_told:
                queued = queue_reply(session, conversation, text("reply_will_follow", unanswered[-1].language),
                                     sender="system", language=unanswered[-1].language)
            await session.commit()
        if queued is not None:
            await self.outbox.deliver([queued.id])

    async def replay_pending(self) -> int:
        """Answer what waited for Rasa (or for a worker that died), conversation by conversation."""
        stale = utcnow() - timedelta(seconds=30)
        async with self.sessions() as session:
            conversations = (await session.scalars(
                select(Message.conversation_id).where(
                    Message.direction == "in",
                    or_(Message.status == "pending_bot",
                        and_(Message.status == "received", Message.created_at < stale)))
                .group_by(Message.conversation_id).order_by(func.min(Message.id)))).all()
        replayed = 0
        for conversation_id in conversations:
            if not await self.answer_conversation(conversation_id):
                break
            replayed += 1
        return replayed

    async def run_replayer(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.replay_pending()
            except Exception:  # keep the replayer alive whatever one message does
                log.exception("replaying pending messages failed")
