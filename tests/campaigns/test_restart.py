"""Sila as a real process: a scheduled campaign survives a restart and is sent once, and a worker
killed with SIGKILL in the middle of sending leaves, after a restart, exactly one message per
recipient."""
from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from crm_store.db import create_engine, sessionmaker
from crm_store.models import Campaign, CampaignRecipient, Message
from tests.campaigns.people import add_patient
from tests.campaigns.worker import Worker
from tests.fakes.twilio_server import FakeTwilio
from tests.campaigns.conftest import SID, TOKEN


@pytest.fixture
def fake():
    server = FakeTwilio(SID, TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
async def store(tmp_path, fake):
    """A migrated store with patients, and the worker that will serve it (not yet started)."""
    worker = Worker(tmp_path, fake, **({"SILA_SMS_RATE": "10"}))
    await asyncio.to_thread(worker.sila, "migrate")
    engine = create_engine(worker.database_url)
    worker.sessions = sessionmaker(engine)
    yield worker
    worker.stop(signal.SIGKILL)
    await engine.dispose()


async def add_patients(worker: Worker, count: int) -> list[str]:
    phones = [f"+9665030{i:05d}" for i in range(count)]
    async with worker.sessions() as session:
        for phone in phones:
            await add_patient(session, phone, language="en")
        await session.commit()
    await asyncio.to_thread(worker.sila, "campaigns", "segment", "Everyone", "--filters", "{}")
    await asyncio.to_thread(worker.sila, "campaigns", "template", "News", "--en", "News for {first_name}",
                            "--ar", "أخبار لك يا {first_name}")
    return phones


async def campaign(worker: Worker) -> Campaign:
    async with worker.sessions() as session:
        return await session.scalar(select(Campaign))


async def wait_until(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_a_scheduled_campaign_survives_a_restart_and_is_sent_once(store, fake):
    phones = await add_patients(store, 5)
    store.start()
    at = datetime.now(ZoneInfo("Asia/Riyadh")) + timedelta(seconds=8)
    await asyncio.to_thread(store.sila, "campaigns", "create", "Open day", "--segment", "Everyone", "--template",
                            "News", "--channel", "sms", "--at", at.replace(tzinfo=None).isoformat(timespec="seconds"))
    store.stop()  # down before the start time, and still down when it passes
    while datetime.now(ZoneInfo("Asia/Riyadh")) < at + timedelta(seconds=6):
        await asyncio.sleep(0.2)
    assert fake.messages == [] and (await campaign(store)).status == "scheduled"
    store.start()
    await fake.wait_for(lambda m: len(m) == 5, timeout=60)
    await wait_until(lambda: _status(store, "done"))
    store.stop()
    store.start()  # and once more: nothing is sent again
    await asyncio.sleep(3)
    assert sorted(m.get("To") for m in fake.messages) == phones
    assert "runs" in store.log() and "late" in store.log()  # the late start is logged


async def _status(worker, status: str):
    return (await campaign(worker)).status == status


async def test_killed_mid_send_then_restarted_every_recipient_has_exactly_one_message(store, fake):
    phones = await add_patients(store, 80)
    store.start()
    await asyncio.to_thread(store.sila, "campaigns", "create", "Open day", "--segment", "Everyone", "--template",
                            "News", "--channel", "sms", "--now")
    await fake.wait_for(lambda m: len(m) >= 15, timeout=60)
    store.stop(signal.SIGKILL)
    async with store.sessions() as session:
        in_flight = set((await session.scalars(select(Message.id).where(Message.status == "sending"))).all())
        queued_before = await session.scalar(select(func.count()).select_from(CampaignRecipient).where(
            CampaignRecipient.status == "queued"))
    sent_before_kill = len(fake.messages)
    assert sent_before_kill < 80 and queued_before < 80  # it really was killed half way

    store.start()
    await wait_until(lambda: _status(store, "done"), timeout=120)

    async def all_out():
        async with store.sessions() as session:
            return not await session.scalar(select(func.count(Message.id)).where(
                Message.status.in_(("queued", "sending"))))

    await wait_until(all_out, timeout=120)
    async with store.sessions() as session:
        rows = (await session.execute(select(CampaignRecipient.patient_id, CampaignRecipient.message_id))).all()
        per_patient = dict((await session.execute(
            select(CampaignRecipient.patient_id, func.count(Message.id)).join(
                Message, Message.id == CampaignRecipient.message_id).group_by(CampaignRecipient.patient_id))).all())
        statuses = set((await session.scalars(select(Message.status))).all())
        providers = dict((await session.execute(select(Message.id, Message.provider_message_id))).all())
    assert len(rows) == 80 and all(message_id for _, message_id in rows)
    assert set(per_patient.values()) == {1} and len(per_patient) == 80
    assert statuses == {"sent"}
    # At the provider: everyone once. The outbox is at-least-once for a request cut off by the kill
    # (handed to Twilio, not yet marked sent): only a message that was in flight may arrive twice.
    by_phone = {p: len(fake.sent_to(p)) for p in phones}
    assert min(by_phone.values()) == 1
    twice = {p for p, n in by_phone.items() if n > 1}
    assert len(twice) <= len(in_flight) and max(by_phone.values()) <= 2
    assert len(set(providers.values())) == 80
