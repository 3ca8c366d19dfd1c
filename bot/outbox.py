"""The outbox: replies are rows in `messages` (direction out, status queued) written in the same
transaction as what caused them, then delivered through the channel, retried with backoff."""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.base import ChannelAdapter, ChannelError, OutboundMessage
from bot import consent
from crm_store import sending
from crm_store.group_commit import writer
from crm_store.models import ConsentPurpose, ConsentStatus, Conversation, Message, utcnow

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8


def queue_reply(session: AsyncSession, conversation: Conversation, text: str, *,
                buttons: list | None = None, sender: str = "bot", language: str | None = None,
                purpose: str = "transactional", template: dict | None = None) -> Message:
    message = Message(**reply_values(conversation.id, conversation.channel, conversation.language, text,
                                     buttons=buttons, sender=sender, language=language, purpose=purpose,
                                     template=template))
    session.add(message)
    return message


def reply_values(conversation_id: int, channel: str, conversation_language: str, text: str, *,
                 buttons: list | None = None, sender: str = "bot", language: str | None = None,
                 purpose: str = "transactional", template: dict | None = None) -> dict:
    """The columns of a queued reply (for Core inserts: crm_store/answers.py)."""
    return dict(conversation_id=conversation_id, channel=channel, direction="out", sender=sender, text=text,
                buttons=buttons or None, status="queued", language=language or conversation_language,
                next_attempt_at=utcnow(), purpose=purpose, template=template)


class RateLimiter:
    """Spaces sends on one channel to at most `rate` per second (a long code takes ~1 SMS/s).

    A patient waiting for an answer goes before a campaign: when a send slot opens, urgent
    (transactional) senders waiting for it are served first, marketing ones after, each in order."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next = 0.0
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()
        self._releasing: asyncio.Task | None = None

    async def wait(self, urgent: bool = True) -> None:
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (0 if urgent else 1, next(self._order), turn))
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.create_task(self._release())
        await turn

    async def _release(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            delay = self._next - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            *_, turn = heapq.heappop(self._waiting)
            if not turn.done():  # a sender that gave up (cancelled) does not use the slot
                turn.set_result(None)
                self._next = max(loop.time(), self._next) + self.interval


class Outbox:
    def __init__(self, sessions: async_sessionmaker, adapters: dict[str, ChannelAdapter]):
        self.sessions = sessions
        self.adapters = adapters
        self.wakeup = asyncio.Event()
        self.limiters = {name: RateLimiter(a.rate_per_second) for name, a in adapters.items() if a.rate_per_second}

    async def deliver(self, message_ids: list[int]) -> None:
        for batch in await self._batches(message_ids):
            await self._deliver_one(batch)

    async def _batches(self, message_ids: list[int]) -> list[list[int]]:
        """One by one, except consecutive replies of one conversation, sender and purpose on a
        channel that combines them (e-mail: the replies of a turn are one mail). A message with
        buttons ends a batch: its options answer the text just above them."""
        combining = {name for name, adapter in self.adapters.items() if hasattr(adapter, "combine")}
        if not combining or len(message_ids) < 2:
            return [[message_id] for message_id in message_ids]
        async with self.sessions() as session:
            rows = {r.id: r for r in (await session.execute(
                select(Message.id, Message.conversation_id, Message.channel, Message.sender, Message.purpose,
                       Message.buttons, Message.template).where(Message.id.in_(message_ids)))).all()}
        batches: list[list[int]] = []
        previous = None
        for message_id in message_ids:
            row = rows.get(message_id)
            if (previous is not None and row is not None and row.channel in combining
                    and not (previous.buttons or previous.template or row.template)
                    and (row.conversation_id, row.channel, row.sender, row.purpose)
                    == (previous.conversation_id, previous.channel, previous.sender, previous.purpose)):
                batches[-1].append(message_id)
            else:
                batches.append([message_id])
            previous = row
        return batches

    async def _deliver_one(self, message_ids: list[int]) -> None:
        """Send one message, or one batch of them as a single provider message (all sent, or all not).

        Every reply comes through here, so the claim and the record of a send the provider accepted
        are Core statements in the store's group commit (crm_store/sending.py), and no database
        connection is held while the provider is called; the rarer outcomes use the ORM."""
        batch = await writer(self.sessions).run(sending.claim, message_ids)
        if not batch:
            return  # another worker has it, or it is already out
        message = batch[0]
        if message.purpose == ConsentPurpose.marketing.value and message.marketing_consent != ConsentStatus.granted:
            async with self.sessions() as session:
                for row in await self._rows(session, batch):
                    row.status, row.error = "suppressed", "no marketing consent on this channel"
                await session.commit()
            return
        adapter = self.adapters[message.channel]
        outbound = [OutboundMessage(row.id, row.channel, row.address, row.text, row.buttons or [],
                                    row.language or "ar", row.conversation_id, row.template) for row in batch]
        if limiter := self.limiters.get(message.channel):
            await limiter.wait(urgent=message.purpose != ConsentPurpose.marketing.value)
        try:
            receipt = await adapter.send(adapter.combine(outbound) if len(outbound) > 1 else outbound[0])
        except ChannelError as exc:
            async with self.sessions() as session:
                rows = await self._rows(session, batch)
                for row in rows:
                    row.attempts += 1
                    row.error = f"{exc.code}: {exc}" if exc.code else str(exc)
                    if exc.retryable and row.attempts < MAX_ATTEMPTS:
                        row.status = "queued"
                        row.next_attempt_at = utcnow() + timedelta(seconds=min(300, 2 ** row.attempts))
                    else:
                        row.status = "failed"
                if exc.opted_out:  # the provider says the patient unsubscribed: record it, never retry
                    consent.record(session, message.patient_id, message.channel, ConsentStatus.revoked,
                                   source=f"provider:{exc.code}")
                log.warning("delivery of message %s failed (attempt %s): %s", message.id, rows[0].attempts, exc)
                await session.commit()
            return
        await writer(self.sessions).run(sending.sent, sending.Sent(
            [row.id for row in batch], receipt.status, receipt.provider_message_id))

    @staticmethod
    async def _rows(session: AsyncSession, batch: list) -> list[Message]:
        return list((await session.scalars(
            select(Message).where(Message.id.in_([row.id for row in batch])).order_by(Message.id))).all())

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
