"""The outbox: replies are rows in `messages` (direction out, status queued) written in the same
transaction as what caused them, then delivered through the channel, retried with backoff."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from channels.base import ChannelAdapter, ChannelError, OutboundMessage
from bot import consent
from crm_store import changes
from crm_store.models import ConsentPurpose, ConsentStatus, Conversation, Message, utcnow

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8


def queue_reply(session: AsyncSession, conversation: Conversation, text: str, *,
                buttons: list | None = None, sender: str = "bot", language: str | None = None,
                purpose: str = "transactional", template: dict | None = None) -> Message:
    message = Message(
        conversation_id=conversation.id, channel=conversation.channel, direction="out", sender=sender,
        text=text, buttons=buttons or None, status="queued", language=language or conversation.language,
        next_attempt_at=utcnow(), purpose=purpose, template=template,
    )
    session.add(message)
    return message


class RateLimiter:
    """Spaces sends on one channel to at most `rate` per second (a long code takes ~1 SMS/s)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            delay = self._next - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next = max(loop.time(), self._next) + self.interval


class Outbox:
    def __init__(self, sessions: async_sessionmaker, adapters: dict[str, ChannelAdapter]):
        self.sessions = sessions
        self.adapters = adapters
        self.wakeup = asyncio.Event()
        self.limiters = {name: RateLimiter(a.rate_per_second) for name, a in adapters.items() if a.rate_per_second}

    async def deliver(self, message_ids: list[int]) -> None:
        for message_id in message_ids:
            await self._deliver_one(message_id)

    async def _deliver_one(self, message_id: int) -> None:
        async with self.sessions() as session:
            claimed = await session.execute(
                update(Message).where(Message.id == message_id, Message.status == "queued")
                .values(status="sending")
            )
            await session.commit()
            if claimed.rowcount != 1:
                return  # another worker has it, or it is already out
            message = await session.get(Message, message_id)
            conversation = await session.scalar(
                select(Conversation).options(selectinload(Conversation.identity))
                .where(Conversation.id == message.conversation_id)
            )
            if message.purpose == ConsentPurpose.marketing.value and await consent.current(
                    session, conversation.patient_id, message.channel, ConsentPurpose.marketing) != ConsentStatus.granted:
                # Checked at send time: an opt-out between scheduling and sending still counts.
                message.status, message.error = "suppressed", "no marketing consent on this channel"
                await session.commit()
                return
            outbound = OutboundMessage(message.id, message.channel, conversation.identity.address, message.text,
                                       message.buttons or [], message.language or "ar", conversation.id,
                                       message.template)
            if limiter := self.limiters.get(message.channel):
                await limiter.wait()
            try:
                receipt = await self.adapters[message.channel].send(outbound)
            except ChannelError as exc:
                message.attempts += 1
                message.error = f"{exc.code}: {exc}" if exc.code else str(exc)
                if exc.retryable and message.attempts < MAX_ATTEMPTS:
                    message.status = "queued"
                    message.next_attempt_at = utcnow() + timedelta(seconds=min(300, 2 ** message.attempts))
                else:
                    message.status = "failed"
                if exc.opted_out:  # the provider says the patient unsubscribed: record it, never retry
                    consent.record(session, conversation.patient_id, message.channel, ConsentStatus.revoked,
                                   source=f"provider:{exc.code}")
                log.warning("delivery of message %s failed (attempt %s): %s", message.id, message.attempts, exc)
                await session.commit()
                return
            # Conditional: a provider's status callback may already have moved the message on.
            await session.execute(
                update(Message).where(Message.id == message.id, Message.status == "sending")
                .values(status=receipt.status, error=None,
                        provider_message_id=receipt.provider_message_id or message.provider_message_id))
            changes.queue(session, "Communication", message.id)
            await session.commit()

    async def run(self, interval: float = 2.0) -> None:
        """Retry what is due, forever; started by the app and cancelled at shutdown."""
        async with self.sessions() as session:
            # A crash between claiming and sending leaves `sending`; those go out again.
            await session.execute(update(Message).where(Message.status == "sending").values(status="queued"))
            await session.commit()
        while True:
            async with self.sessions() as session:
                due = (await session.scalars(
                    select(Message.id).where(Message.direction == "out", Message.status == "queued",
                                             Message.next_attempt_at <= utcnow())
                    .order_by(Message.id).limit(100)
                )).all()
            await self.deliver(list(due))
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
            self.wakeup.clear()
