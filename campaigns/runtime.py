"""Campaigns inside a Sila worker: the scheduler, the broadcasts it starts, the automations it runs,
and the router's handler for answers to reminders. Opened after the hub, closed before it."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from campaigns.automations import Automations
from campaigns.broadcasts import Broadcasts, job_id
from campaigns.defaults import ensure_defaults
from campaigns.delivery import Policy
from campaigns.reminders import ReminderAnswers
from campaigns.scheduler import Scheduler
from crm_store.content import load_hospital
from crm_store.models import Campaign, SchedulerClaim, utcnow

log = logging.getLogger(__name__)
MAX_BATCH = 500


class CampaignRuntime:
    def __init__(self, hub, clock=utcnow):
        self.hub = hub
        self.settings = hub.settings
        self.clock = clock  # tests give a fixed one (quiet hours at 22:00)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.lease = timedelta(seconds=self.settings.campaign_lease)
        self.concurrency = max(1, self.settings.campaign_concurrency)
        self.zone = ZoneInfo(self.settings.timezone)
        self.broadcasts = Broadcasts(self)
        self.automations = Automations(self)
        self.scheduler: Scheduler | None = None
        self.policy: Policy | None = None
        # The `sila campaigns` command changes the schedule but leaves the sending to the workers.
        self.passive = False
        self._tasks: set[asyncio.Task] = set()

    @property
    def sessions(self):
        return self.hub.sessions

    @property
    def outbox(self):
        return self.hub.outbox

    def now(self) -> datetime:
        return self.clock()

    def keep(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rate(self, channels: list[str]) -> float | None:
        """The fastest of the channels' rate limits; None when one of them has none."""
        rates = [self.hub.adapters[c].rate_per_second for c in channels if c in self.hub.adapters]
        return None if not rates or any(not r for r in rates) else max(rates)

    def batch_size(self, channels: list[str]) -> int:
        """About two seconds of sending at the channels' rate limit (smaller batches make a pause
        take effect sooner), and at most MAX_BATCH."""
        rate = self._rate(channels)
        return MAX_BATCH if rate is None else max(10, min(MAX_BATCH, int(rate * 2)))

    def senders(self, channels: list[str]) -> int:
        """Sends in flight at once: `concurrency`, or about a second's worth under a rate limit
        (a claimed message waiting for its turn would still go out after a pause)."""
        rate = self._rate(channels)
        return self.concurrency if rate is None else max(1, min(self.concurrency, int(rate)))

    async def open(self) -> None:
        hospital = load_hospital(self.settings.hospital_file)["hospital"]
        self.policy = Policy.from_settings(self.settings, self.hub.adapters.keys(), hospital)
        await ensure_defaults(self.sessions)
        self.hub.router.pre_bot.append(ReminderAnswers(self.settings.timezone))
        self.scheduler = Scheduler(self.settings.database_url, asyncio.get_running_loop(), self,
                                   misfire_grace=self.settings.campaign_misfire_grace)
        enabled = self.settings.campaigns_enabled
        # A worker with campaigns off still writes the schedule (the console), but never runs it.
        self.passive = not enabled
        await asyncio.to_thread(self.scheduler.start, paused=not enabled)
        await asyncio.to_thread(self.scheduler.add_every, "automations", "campaigns.jobs:run_automations",
                                self.settings.automation_interval)
        await self.reconcile()
        if enabled:
            self.keep(asyncio.create_task(self._pulse()))

    async def _pulse(self) -> None:
        """This worker's heartbeat: the scheduler looks again at jobs other workers (or `sila
        campaigns`) added, and running campaigns that are due and unattended are taken up."""
        while True:
            await asyncio.sleep(self.settings.campaign_poll)
            self.scheduler.wake()
            try:
                await self.broadcasts.continue_due()
            except Exception:  # the database away for a moment: try again at the next beat
                log.exception("looking for campaigns to continue failed")

    async def close(self) -> None:
        if self.scheduler is not None:
            await asyncio.to_thread(self.scheduler.shutdown)
        running = [*self._tasks, *self.broadcasts._running.values()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def reconcile(self) -> None:
        """Scheduled campaigns whose job is not in the store (a crash between the two writes) get it."""
        async with self.sessions() as session:
            scheduled = (await session.execute(select(Campaign.id, Campaign.run_at).where(
                Campaign.status == "scheduled"))).all()
        for campaign_id, run_at in scheduled:
            if await asyncio.to_thread(self.scheduler.next_run, job_id(campaign_id)) is None:
                log.info("campaign %s: scheduled but not in the job store; adding it", campaign_id)
                await asyncio.to_thread(self.scheduler.add_once, job_id(campaign_id),
                                        "campaigns.jobs:start_campaign", run_at, (campaign_id,))

    async def missed(self, job: str, run_time: datetime) -> None:
        if job.startswith("campaign:"):
            await self.broadcasts.missed(int(job.split(":", 1)[1]), run_time)

    async def claim_run(self, job: str, run_time: datetime) -> bool:
        """True for the one worker that claims this run of a recurring job."""
        key = int(run_time.timestamp())
        async with self.sessions() as session:
            result = await session.execute(update(SchedulerClaim).where(
                SchedulerClaim.job_id == job, SchedulerClaim.run_key < key)
                .values(run_key=key, owner=self.owner, claimed_at=utcnow()))
            if result.rowcount == 1:
                await session.commit()
                return True
            if await session.scalar(select(SchedulerClaim.job_id).where(SchedulerClaim.job_id == job)):
                return False
            try:
                await session.execute(insert(SchedulerClaim).values(job_id=job, run_key=key, owner=self.owner,
                                                                    claimed_at=utcnow()))
                await session.commit()
                return True
            except IntegrityError:
                return False


CAMPAIGNS = web.AppKey("campaigns", CampaignRuntime)


def setup_campaigns(app: web.Application) -> None:
    """Console pages, and the runtime opened after the hub (its cleanup context comes later)."""
    from bot.app import HUB
    from campaigns.views import setup_views

    runtime = CampaignRuntime(app[HUB])
    app[CAMPAIGNS] = runtime

    async def campaigns_ctx(app: web.Application):
        await runtime.open()
        yield
        await runtime.close()

    app.cleanup_ctx.append(campaigns_ctx)
    setup_views(app)
