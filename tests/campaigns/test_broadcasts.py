"""Broadcast campaigns through the outbox to the fake Twilio: scheduling, consent at every step,
quiet hours in the recipient's zone, the frequency cap, pause/resume/cancel, several workers,
missed starts and the funnel."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from bot.app import HUB, create_app
from bot.outbox import queue_reply
from campaigns import metrics
from campaigns.runtime import CAMPAIGNS
from crm_store import appointments
from crm_store.models import (
    Campaign,
    CampaignRecipient,
    ChannelIdentity,
    Conversation,
    Message,
    utcnow,
)
from tests.campaigns.conftest import bodies_to, eventually, patient_says, settings_for
from tests.campaigns.people import add_campaign, add_patient, slot_at

OPEN_DAY = "our open day is on Saturday"


async def campaign_row(hub, campaign_id: int) -> Campaign:
    async with hub.sessions() as session:
        return await session.get(Campaign, campaign_id)


async def recipients(hub, campaign_id: int) -> dict[int, CampaignRecipient]:
    async with hub.sessions() as session:
        rows = (await session.scalars(select(CampaignRecipient).where(
            CampaignRecipient.campaign_id == campaign_id))).all()
    return {r.patient_id: r for r in rows}


async def finished(hub, campaign_id: int, status: str = "done") -> Campaign:
    async def check():
        campaign = await campaign_row(hub, campaign_id)
        return campaign.status == status and campaign

    return await eventually(check)


async def settled(hub, campaign_id: int) -> list[Message]:
    """The campaign's messages once the outbox is done with them."""
    async def check():
        async with hub.sessions() as session:
            rows = (await session.scalars(select(Message).join(
                CampaignRecipient, CampaignRecipient.message_id == Message.id).where(
                CampaignRecipient.campaign_id == campaign_id))).all()
        return not any(m.status in ("queued", "sending") for m in rows) and rows

    return await eventually(check)


async def test_scheduled_campaign_reaches_consenting_patients_once(client, hub, runtime, fake):
    async with hub.sessions() as session:
        yes = await add_patient(session, "+966501000001", language="en", first="Huda")
        stopped = await add_patient(session, "+966501000002")
        no_consent = await add_patient(session, "+966501000003", marketing=None)
        nowhere = await add_patient(session, None, channels=())
        campaign = await add_campaign(session)
        await session.commit()
    await patient_says(client, "+966501000002", "STOP")  # the router revokes consent
    assert await runtime.broadcasts.schedule(campaign.id, utcnow() + timedelta(seconds=1))
    assert (await campaign_row(hub, campaign.id)).status == "scheduled"
    await finished(hub, campaign.id)
    await settled(hub, campaign.id)
    assert bodies_to(fake, "+966501000001") == [f"Hello Huda, {OPEN_DAY}."]
    assert not any(OPEN_DAY in b or "السبت" in b for b in bodies_to(fake, "+966501000002"))
    assert bodies_to(fake, "+966501000003") == []
    rows = await recipients(hub, campaign.id)
    assert (rows[yes.id].status, rows[yes.id].channel) == ("queued", "sms")
    assert {p: (r.status, r.reason) for p, r in rows.items() if p != yes.id} == {
        stopped.id: ("skipped", "opted_out"), no_consent.id: ("skipped", "no_consent"),
        nowhere.id: ("skipped", "unreachable")}
    # Nothing fires it again: not another beat of the scheduler, not a restart's reconciliation.
    await runtime.reconcile()
    await runtime.broadcasts.continue_due()
    await asyncio.sleep(1)
    assert len(bodies_to(fake, "+966501000001")) == 1
    assert not await runtime.broadcasts.start(campaign.id)


async def test_no_promotion_without_marketing_consent_but_reminders_still_come(client, hub, runtime, fake):
    async with hub.sessions() as session:
        patient = await add_patient(session, "+966501000010", language="en", first="Omar", marketing=None)
        campaign = await add_campaign(session)
        slot = await slot_at(session, utcnow() + timedelta(hours=30))
        appointment = await appointments.book(session, patient_id=patient.id, slot_id=slot.id, channel="sms",
                                              holder="test")
        appointment.created_at = utcnow() - timedelta(days=3)
        await session.commit()
    runtime.clock = lambda: slot.start_at - timedelta(hours=23)  # inside the 24-hour reminder's window
    await runtime.broadcasts.schedule(campaign.id, utcnow())
    await finished(hub, campaign.id)
    assert await runtime.automations.run_once() == 1
    sent = await fake.wait_for(lambda m: len(m) == 1)
    assert "a reminder of your appointment" in sent[0].get("Body")
    assert (await recipients(hub, campaign.id))[patient.id].reason == "no_consent"
    await asyncio.sleep(0.5)
    assert len(bodies_to(fake, "+966501000010")) == 1


async def test_a_campaign_at_22_recipient_time_waits_until_8(client, hub, runtime, fake):
    async with hub.sessions() as session:
        riyadh = await add_patient(session, "+966501000020", language="en", first="Riyadh")
        cairo = await add_patient(session, "+201001000021", language="en", first="Cairo")
        await add_patient(session, "+442071000022", language="en", first="London")
        campaign = await add_campaign(session)
        await session.commit()
    runtime.policy.quiet_start, runtime.policy.quiet_end = 21, 8
    now = [datetime(2026, 1, 14, 19, 0, tzinfo=timezone.utc)]  # 22:00 in Riyadh, 21:00 Cairo, 19:00 London
    runtime.clock = lambda: now[0]
    await runtime.broadcasts.schedule(campaign.id, utcnow())
    await fake.wait_for(lambda m: len(m) == 1)
    await runtime.broadcasts.wait_idle()
    assert bodies_to(fake, "+442071000022") == [f"Hello London, {OPEN_DAY}."]
    rows = await recipients(hub, campaign.id)
    assert (rows[riyadh.id].status, rows[riyadh.id].reason) == ("pending", "quiet_hours")
    assert rows[riyadh.id].due_at == datetime(2026, 1, 15, 5, 0, tzinfo=timezone.utc)  # 08:00 in Riyadh
    assert rows[cairo.id].due_at == datetime(2026, 1, 15, 6, 0, tzinfo=timezone.utc)  # 08:00 in Cairo
    assert (await campaign_row(hub, campaign.id)).next_due_at == rows[riyadh.id].due_at

    now[0] = datetime(2026, 1, 15, 4, 59, tzinfo=timezone.utc)
    assert await runtime.broadcasts.continue_due() == []  # not yet
    now[0] = datetime(2026, 1, 15, 5, 0, tzinfo=timezone.utc)
    await fake.wait_for(lambda m: len(m) == 2)  # the worker's own heartbeat picks it up
    assert bodies_to(fake, "+966501000020") == [f"Hello Riyadh, {OPEN_DAY}."]
    assert bodies_to(fake, "+201001000021") == []
    now[0] = datetime(2026, 1, 15, 6, 0, tzinfo=timezone.utc)
    await fake.wait_for(lambda m: len(m) == 3)
    await finished(hub, campaign.id)
    assert all(len(bodies_to(fake, p)) == 1 for p in ("+966501000020", "+201001000021", "+442071000022"))


async def test_frequency_cap_spares_patients_who_had_enough_promotions(client, hub, runtime, fake):
    async with hub.sessions() as session:
        busy = await add_patient(session, "+966501000030", language="en")
        await add_patient(session, "+966501000031", language="en")
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.patient_id == busy.id))
        conversation = Conversation(patient_id=busy.id, identity_id=identity.id, channel="sms")
        session.add(conversation)
        await session.flush()
        for _ in range(3):  # the cap is 3 promotions in 7 days
            queue_reply(session, conversation, "earlier news", purpose="marketing").status = "delivered"
        promotion = await add_campaign(session, name="Promotion")
        care = await add_campaign(session, name="Clinic moved", purpose="transactional")
        await session.commit()
    await runtime.broadcasts.schedule(promotion.id, utcnow())
    await finished(hub, promotion.id)
    assert (await recipients(hub, promotion.id))[busy.id].reason == "frequency_cap"
    await runtime.broadcasts.schedule(care.id, utcnow())
    await finished(hub, care.id)
    assert (await recipients(hub, care.id))[busy.id].status == "queued"  # care messages are not capped
    await settled(hub, care.id)
    assert len(bodies_to(fake, "+966501000030")) == 1 and len(bodies_to(fake, "+966501000031")) == 2


@pytest.fixture
async def throttled(aiohttp_client, store_url, fake):
    """A hub whose SMS sender allows five messages a second."""
    return await aiohttp_client(create_app(settings_for(store_url, fake, sms_rate=5, campaign_concurrency=2),
                                           channels=("sms",)))


async def test_pause_holds_resume_finishes_and_an_opt_out_in_between_is_honoured(throttled, fake):
    hub, runtime = throttled.app[HUB], throttled.app[CAMPAIGNS]
    phones = [f"+9665010001{i:02d}" for i in range(20)]
    async with hub.sessions() as session:
        for phone in phones:
            await add_patient(session, phone, language="en")
        campaign = await add_campaign(session)
        await session.commit()
    await runtime.broadcasts.schedule(campaign.id, utcnow())
    await fake.wait_for(lambda m: len(m) >= 3)
    assert await runtime.broadcasts.pause(campaign.id)
    assert not await runtime.broadcasts.pause(campaign.id)  # already paused

    async def quiet_outbox():
        async with hub.sessions() as session:
            return not await session.scalar(select(func.count(Message.id)).where(Message.status == "sending"))

    await eventually(quiet_outbox)
    held = len(fake.messages)
    await asyncio.sleep(1.0)
    assert len(fake.messages) == held < 20
    unsent = [p for p in phones if not bodies_to(fake, p)]
    await patient_says(throttled, unsent[-1], "STOP")  # opts out while the campaign is paused
    assert await runtime.broadcasts.resume(campaign.id)
    await finished(hub, campaign.id)
    await settled(hub, campaign.id)
    for phone in phones:
        campaign_messages = [b for b in bodies_to(fake, phone) if OPEN_DAY in b]
        assert len(campaign_messages) == (0 if phone == unsent[-1] else 1), phone
    funnel = await _funnel(hub, campaign.id)
    assert funnel.suppressed + funnel.skipped["opted_out"] == 1 and funnel.sent == 19


async def test_cancel_stops_what_is_not_yet_sent(throttled, fake):
    hub, runtime = throttled.app[HUB], throttled.app[CAMPAIGNS]
    async with hub.sessions() as session:
        for i in range(20):
            await add_patient(session, f"+9665010002{i:02d}", language="en")
        campaign = await add_campaign(session)
        await session.commit()
    await runtime.broadcasts.schedule(campaign.id, utcnow())
    await fake.wait_for(lambda m: len(m) >= 2)
    assert await runtime.broadcasts.cancel(campaign.id)
    await runtime.broadcasts.wait_idle()
    await asyncio.sleep(1.0)
    funnel = await _funnel(hub, campaign.id)
    assert (await campaign_row(hub, campaign.id)).status == "cancelled"
    assert len(fake.messages) == funnel.sent < 20
    assert funnel.cancelled + funnel.skipped["cancelled"] + funnel.sent == 20
    assert max(len(fake.sent_to(m.get("To"))) for m in fake.messages) == 1
    assert not await runtime.broadcasts.resume(campaign.id)


async def _funnel(hub, campaign_id: int) -> metrics.Funnel:
    async with hub.sessions() as session:
        return await metrics.funnel(session, campaign_id)


async def test_of_two_workers_one_starts_the_campaign(aiohttp_client, client, store_url, hub, runtime, fake):
    second = await aiohttp_client(create_app(settings_for(store_url, fake), channels=("sms", "whatsapp")))
    async with hub.sessions() as session:
        for i in range(5):
            await add_patient(session, f"+96650100030{i}", language="en")
        campaign = await add_campaign(session)
        await session.commit()
    async with hub.sessions() as session:
        await session.execute(Campaign.__table__.update().where(Campaign.id == campaign.id).values(status="scheduled"))
        await session.commit()
    # The same job fired by both workers at once: one claim wins, the other does nothing.
    claims = await asyncio.gather(runtime.broadcasts.start(campaign.id),
                                  second.app[CAMPAIGNS].broadcasts.start(campaign.id))
    assert sorted(claims) == [False, True]
    await finished(hub, campaign.id)
    await settled(hub, campaign.id)
    assert len(fake.messages) == 5 and len({m.get("To") for m in fake.messages}) == 5

    async with hub.sessions() as session:
        again = await add_campaign(session, name="Again")
        await session.commit()
    await second.app[CAMPAIGNS].broadcasts.schedule(again.id, utcnow() + timedelta(seconds=1))
    await finished(hub, again.id)
    await settled(hub, again.id)
    await asyncio.sleep(1)
    assert len(fake.messages) == 10 and all(len(fake.sent_to(m.get("To"))) == 2 for m in fake.messages)


async def test_a_start_missed_beyond_the_grace_time_is_marked_missed_not_sent(aiohttp_client, store_url, fake):
    client = await aiohttp_client(create_app(settings_for(store_url, fake, campaign_misfire_grace=30),
                                             channels=("sms",)))
    hub, runtime = client.app[HUB], client.app[CAMPAIGNS]
    async with hub.sessions() as session:
        await add_patient(session, "+966501000400")
        late, too_late = await add_campaign(session, name="Late"), await add_campaign(session, name="Too late")
        await session.commit()
    await runtime.broadcasts.schedule(late.id, utcnow() - timedelta(seconds=20))  # within the grace: sent late
    await runtime.broadcasts.schedule(too_late.id, utcnow() - timedelta(minutes=5))
    missed = await finished(hub, too_late.id, "missed")
    assert missed.note.startswith("start missed by ")
    await finished(hub, late.id)
    await fake.wait_for(lambda m: len(m) == 1)
    assert await runtime.broadcasts.schedule(too_late.id, utcnow())  # a person reschedules it
    await finished(hub, too_late.id)
    await fake.wait_for(lambda m: len(m) == 2)


async def test_funnel_counts_delivery_failures_replies_opt_outs_and_bookings(client, hub, runtime, fake):
    fake.callback_target = str(client.make_url(""))
    async with hub.sessions() as session:
        people = [await add_patient(session, f"+96650100050{i}", language="en") for i in range(4)]
        campaign = await add_campaign(session)
        await session.commit()
    fake.fail_next(1, code=21211)  # the first number is not a valid mobile
    await runtime.broadcasts.schedule(campaign.id, utcnow())
    await finished(hub, campaign.id)

    async def delivered():
        funnel = await _funnel(hub, campaign.id)
        return funnel.delivered == 3 and funnel

    await eventually(delivered)
    failed_phone = next(f"+96650100050{i}" for i in range(4) if not bodies_to(fake, f"+96650100050{i}"))
    others = [f"+96650100050{i}" for i in range(4) if f"+96650100050{i}" != failed_phone]
    await patient_says(client, others[0], "Can I book a check-up?")
    await patient_says(client, others[1], "STOP")
    async with hub.sessions() as session:
        booker = next(p for p in people if p.phone == others[0])
        slot = await slot_at(session, utcnow() + timedelta(days=3))
        await appointments.book(session, patient_id=booker.id, slot_id=slot.id, channel="sms", holder="t")
        await session.commit()
    funnel = await _funnel(hub, campaign.id)
    assert funnel.stages() == [("recipients", 4), ("messaged", 4), ("sent", 3), ("delivered", 3), ("replied", 1),
                               ("booked", 1)]
    assert funnel.failed == 1 and list(funnel.failures) == ["21211: Invalid 'To' Phone Number"]
    assert funnel.opted_out == 1
