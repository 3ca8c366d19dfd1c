"""Broadcast campaigns: schedule, start, send through the outbox, pause, resume, cancel.

Sending is crash-safe. The audience is frozen once (one `campaign_recipients` row per patient,
unique per campaign). Recipients are then taken in batches; one transaction decides each batch,
queues a message per recipient in the outbox and writes that message's id on the recipient row,
under the campaign's lease (renewed in the same transaction, conditional on this worker still
holding it). A crash loses at most an uncommitted batch (no messages, recipients still pending);
whatever was committed is in the outbox and is sent after a restart. A worker that stops
answering loses its lease after SILA_CAMPAIGN_LEASE seconds and another worker carries on.

The outbox itself is at-least-once at the provider: a message handed to Twilio in the instant
before a crash, and not yet marked sent, is sent again after the restart (Twilio has no
idempotency key for new messages). The window is one request per message in flight.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns import delivery, segments
from crm_store.models import Campaign, CampaignRecipient, CampaignTemplate, Message, Segment

log = logging.getLogger(__name__)
STARTABLE = ("draft", "scheduled", "missed")
LIVE = ("draft", "scheduled", "running", "paused", "missed")


def job_id(campaign_id: int) -> str:
    return f"campaign:{campaign_id}"


class Broadcasts:
    def __init__(self, runtime):
        self.rt = runtime
        self._running: dict[int, asyncio.Task] = {}

    # -- what staff do ---------------------------------------------------------------------------

    async def schedule(self, campaign_id: int, run_at: datetime) -> bool:
        """Set the start time (again) and put the job in the shared schedule."""
        async with self.rt.sessions() as session:
            result = await session.execute(
                update(Campaign).where(Campaign.id == campaign_id, Campaign.status.in_(STARTABLE))
                .values(status="scheduled", run_at=run_at, note=None))
            await session.commit()
        if result.rowcount != 1:
            return False
        await asyncio.to_thread(self.rt.scheduler.add_once, job_id(campaign_id), "campaigns.jobs:start_campaign",
                                run_at, (campaign_id,))
        return True

    async def pause(self, campaign_id: int) -> bool:
        async with self.rt.sessions() as session:
            result = await session.execute(update(Campaign).where(Campaign.id == campaign_id,
                                                                  Campaign.status == "running")
                                           .values(status="paused"))
            if result.rowcount == 1:
                # Queued but not yet claimed by the outbox: held until resumed.
                await session.execute(update(Message).where(Message.id.in_(self._messages_of(campaign_id)),
                                                            Message.status == "queued").values(status="paused"))
            await session.commit()
        return result.rowcount == 1

    async def resume(self, campaign_id: int) -> bool:
        async with self.rt.sessions() as session:
            result = await session.execute(update(Campaign).where(Campaign.id == campaign_id,
                                                                  Campaign.status == "paused")
                                           .values(status="running", next_due_at=None))
            if result.rowcount == 1:
                await session.execute(update(Message).where(Message.id.in_(self._messages_of(campaign_id)),
                                                            Message.status == "paused")
                                      .values(status="queued", next_attempt_at=self.rt.now()))
            await session.commit()
        if result.rowcount == 1:
            self.continue_due_soon()
        return result.rowcount == 1

    async def cancel(self, campaign_id: int) -> bool:
        async with self.rt.sessions() as session:
            result = await session.execute(update(Campaign).where(Campaign.id == campaign_id,
                                                                  Campaign.status.in_(LIVE))
                                           .values(status="cancelled", finished_at=self.rt.now()))
            if result.rowcount == 1:
                await session.execute(update(Message).where(Message.id.in_(self._messages_of(campaign_id)),
                                                            Message.status.in_(("queued", "paused")))
                                      .values(status="cancelled"))
                await session.execute(update(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id,
                                                                      CampaignRecipient.status == "pending")
                                      .values(status="skipped", reason="cancelled"))
            await session.commit()
        if result.rowcount == 1:
            await asyncio.to_thread(self.rt.scheduler.remove, job_id(campaign_id))
        return result.rowcount == 1

    @staticmethod
    def _messages_of(campaign_id: int):
        return select(CampaignRecipient.message_id).where(CampaignRecipient.campaign_id == campaign_id,
                                                          CampaignRecipient.message_id.is_not(None))

    # -- what the scheduler does -----------------------------------------------------------------

    async def start(self, campaign_id: int) -> bool:
        """The scheduled time came: claim the start (once, whichever worker fires) and send."""
        async with self.rt.sessions() as session:
            result = await session.execute(
                update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "scheduled")
                .values(status="running", started_at=self.rt.now(), lease_owner=None, lease_until=None))
            await session.commit()
        if result.rowcount != 1:
            log.info("campaign %s: start already claimed, or no longer scheduled", campaign_id)
            return False
        log.info("campaign %s started", campaign_id)
        self._spawn(campaign_id)
        return True

    async def missed(self, campaign_id: int, run_time: datetime) -> None:
        late = self.rt.now() - run_time
        async with self.rt.sessions() as session:
            await session.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "scheduled")
                                  .values(status="missed", note=f"start missed by {int(late.total_seconds())} s"))
            await session.commit()

    def continue_due_soon(self) -> None:
        """Look (in the background) for running campaigns that are due and unattended."""
        if self.rt.passive:
            return
        task = asyncio.get_running_loop().create_task(self.continue_due())
        self.rt.keep(task)

    async def continue_due(self) -> list[int]:
        now = self.rt.now()
        async with self.rt.sessions() as session:
            due = (await session.scalars(select(Campaign.id).where(
                Campaign.status == "running",
                (Campaign.lease_until.is_(None)) | (Campaign.lease_until < now),
                (Campaign.next_due_at.is_(None)) | (Campaign.next_due_at <= now)))).all()
        started = [c for c in due if c not in self._running]
        for campaign_id in started:
            self._spawn(campaign_id)
        return started

    def _spawn(self, campaign_id: int) -> None:
        if campaign_id in self._running or self.rt.passive:
            return
        task = asyncio.get_running_loop().create_task(self.run(campaign_id))
        self._running[campaign_id] = task
        task.add_done_callback(lambda _: self._running.pop(campaign_id, None))

    async def wait_idle(self) -> None:
        """Until every campaign this worker is sending has paused for now (tests, the CLI)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    # -- sending ---------------------------------------------------------------------------------

    async def run(self, campaign_id: int) -> None:
        if not await self._take_lease(campaign_id):
            return
        keeper = asyncio.create_task(self._keep_lease(campaign_id))
        try:
            await self._send(campaign_id, keeper)
        except Exception:
            log.exception("campaign %s: sending stopped; it resumes when the lease lapses", campaign_id)
        finally:
            keeper.cancel()
        await self._release(campaign_id)

    async def _take_lease(self, campaign_id: int) -> bool:
        now = self.rt.now()
        async with self.rt.sessions() as session:
            result = await session.execute(
                update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "running",
                                       (Campaign.lease_until.is_(None)) | (Campaign.lease_until < now)
                                       | (Campaign.lease_owner == self.rt.owner))
                .values(lease_owner=self.rt.owner, lease_until=now + self.rt.lease, next_due_at=None))
            await session.commit()
        return result.rowcount == 1

    async def _renew(self, session: AsyncSession, campaign_id: int) -> bool:
        """In the caller's transaction: still ours and still running? (and keep it ours)."""
        result = await session.execute(
            update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "running",
                                   Campaign.lease_owner == self.rt.owner)
            .values(lease_until=self.rt.now() + self.rt.lease))
        return result.rowcount == 1

    async def _keep_lease(self, campaign_id: int) -> None:
        """Renew the lease until it is lost (paused, cancelled, taken over); sending stops then."""
        while True:
            await asyncio.sleep(self.rt.lease.total_seconds() / 3)
            try:
                async with self.rt.sessions() as session:
                    held = await self._renew(session, campaign_id)
                    await session.commit()
            except Exception:  # the database away: stop, and let whoever holds the lease next go on
                log.exception("campaign %s: renewing the lease failed", campaign_id)
                return
            if not held:
                return

    async def _release(self, campaign_id: int) -> None:
        async with self.rt.sessions() as session:
            await session.execute(update(Campaign).where(Campaign.id == campaign_id,
                                                         Campaign.lease_owner == self.rt.owner)
                                  .values(lease_owner=None, lease_until=None))
            await session.commit()

    async def _send(self, campaign_id: int, keeper: asyncio.Task) -> None:
        async with self.rt.sessions() as session:
            campaign = await session.get(Campaign, campaign_id)
            template = await session.get(CampaignTemplate, campaign.template_id)
            segment = await session.get(Segment, campaign.segment_id)
        if campaign.audience is None:
            await self._freeze_audience(campaign_id, segments.parse_filters(segment.filters or {}))
        batch_size = self.rt.batch_size(campaign.channels)
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=batch_size * 2)
        workers = [asyncio.create_task(self._deliver_from(queue)) for _ in range(self.rt.senders(campaign.channels))]
        try:
            # Messages queued before a crash or a pause are sent first (the outbox's retry loop may
            # race for them; its claim lets one of them send each).
            for message_id in await self._waiting_messages(campaign_id):
                await queue.put(message_id)
            while not keeper.done():
                # Queue the next batch in the outbox only when this one is nearly out: what is
                # queued is sent even if the campaign is paused, so keep it to about one batch.
                while queue.qsize() > batch_size and not keeper.done():
                    await asyncio.sleep(0.05)
                message_ids = await self._next_batch(campaign, template, batch_size)
                if message_ids is None:
                    break
                for message_id in message_ids:
                    await queue.put(message_id)
            await queue.join()
        finally:
            for worker in workers:
                worker.cancel()
        await self._settle(campaign_id)

    async def _freeze_audience(self, campaign_id: int, filters: segments.SegmentFilters) -> None:
        async with self.rt.sessions() as session:
            ids = await segments.patient_ids(session, filters, self.rt.settings.timezone,
                                             self.rt.now().astimezone(self.rt.zone).date())
            claimed = await session.execute(update(Campaign).where(Campaign.id == campaign_id,
                                                                   Campaign.audience.is_(None))
                                            .values(audience=len(ids)))
            if claimed.rowcount == 1 and ids:
                await session.execute(insert(CampaignRecipient), [
                    {"campaign_id": campaign_id, "patient_id": pid, "status": "pending"} for pid in ids])
            await session.commit()
        log.info("campaign %s: %s recipients", campaign_id, len(ids))

    async def _waiting_messages(self, campaign_id: int) -> list[int]:
        async with self.rt.sessions() as session:
            return list((await session.scalars(select(Message.id).where(
                Message.id.in_(self._messages_of(campaign_id)), Message.status == "queued")
                .order_by(Message.id))).all())

    async def _next_batch(self, campaign: Campaign, template: CampaignTemplate, size: int) -> list[int] | None:
        """Decide and queue the next due recipients in one transaction; None when there are none
        (or the campaign is no longer ours to send)."""
        now = self.rt.now()
        async with self.rt.sessions() as session:
            if not await self._renew(session, campaign.id):  # first: it also serialises workers
                await session.rollback()
                return None
            rows = (await session.execute(
                select(CampaignRecipient.id, CampaignRecipient.patient_id).where(
                    CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.status == "pending",
                    (CampaignRecipient.due_at.is_(None)) | (CampaignRecipient.due_at <= now))
                .order_by(CampaignRecipient.id).limit(size))).all()
            if not rows:
                await session.rollback()
                return None
            decisions = await delivery.plan(
                session, self.rt.policy, [delivery.Item(r.patient_id) for r in rows], template, campaign.channels,
                now, journey=("campaign_message", f"campaign:{campaign.id}"))
            queued = await delivery.mark(session, CampaignRecipient, [r.id for r in rows], decisions, now)
            await session.commit()
        return queued

    async def _deliver_from(self, queue: asyncio.Queue) -> None:
        while True:
            message_id = await queue.get()
            try:
                await self.rt.outbox.deliver([message_id])
            except Exception:  # it stays in the outbox, whose retry loop picks it up
                log.exception("campaign message %s: delivery attempt failed", message_id)
            finally:
                queue.task_done()

    async def _settle(self, campaign_id: int) -> None:
        """Done when nobody is pending any more; else note when the next deferred one is due."""
        async with self.rt.sessions() as session:
            next_due = await session.scalar(select(func.min(CampaignRecipient.due_at)).where(
                CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status == "pending"))
            pending = await session.scalar(select(func.count()).select_from(CampaignRecipient).where(
                CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status == "pending"))
            running = (Campaign.id == campaign_id, Campaign.status == "running",
                       Campaign.lease_owner == self.rt.owner)
            if not pending:
                result = await session.execute(update(Campaign).where(*running).values(
                    status="done", finished_at=self.rt.now()))
                if result.rowcount:
                    log.info("campaign %s done", campaign_id)
            else:
                await session.execute(update(Campaign).where(*running).values(
                    next_due_at=next_due or self.rt.now() + timedelta(seconds=self.rt.settings.campaign_poll)))
            await session.commit()
