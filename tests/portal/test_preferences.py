"""Preferences: language, and consent per channel and purpose — the same consent STOP changes.
Turning news and offers off in the portal stops campaign messages exactly as STOP does."""
from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy import select
from twilio.request_validator import RequestValidator

from bot import consent
from campaigns.runtime import CAMPAIGNS
from crm_store.models import (
    Campaign,
    CampaignRecipient,
    CampaignTemplate,
    ChannelIdentity,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    Message,
    Patient,
    Segment,
    utcnow,
)
from bot.outbox import queue_reply
from tests.portal.conftest import TOKEN, add_patient, eventually
from tests.portal.helpers import PortalUser

BORN = date(1985, 3, 14)
STOPPER, PORTAL_USER, CONTROL = "+966501110001", "+966501110002", "+966501110003"


async def _stop_by_sms(client, phone: str) -> None:
    """The patient texts STOP: Twilio's signed webhook into Sila."""
    path = "/webhooks/twilio/messages"
    sid = "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "AccountSid": "AC", "From": phone, "To": "+15005550006", "Body": "STOP",
              "NumMedia": "0"}
    signature = RequestValidator(TOKEN).compute_signature("https://sila.example" + path, params)
    response = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status == 200


async def test_marketing_off_in_the_portal_stops_campaigns_as_stop_does(client, hub, fake):
    people = {}
    for phone, name in ((STOPPER, "Stop"), (PORTAL_USER, "Portal"), (CONTROL, "Control")):
        people[phone] = await add_patient(hub, phone, BORN, first=name, marketing=True)
    # A promotion already queued for later, before the patient changes their mind.
    async with hub.sessions() as session:
        conversation = Conversation(patient_id=people[PORTAL_USER].id, channel="sms", language="en",
                                    identity_id=await _identity_id(session, people[PORTAL_USER].id))
        session.add(conversation)
        await session.flush()
        early = queue_reply(session, conversation, "Our open day is on Saturday!", sender="system",
                            purpose="marketing")
        early.next_attempt_at = utcnow() + timedelta(days=1)
        await session.commit()

    await _stop_by_sms(client, STOPPER)
    user = PortalUser(client, fake)
    await user.sign_in(PORTAL_USER, BORN)
    page = await (await client.get("/portal/preferences")).text()
    assert 'data-channel="sms"' in page
    turned = await user.post("/portal/preferences/consent", {"channel": "sms", "purpose": "marketing",
                                                             "status": "revoked"})
    assert turned.status == 302
    async with hub.sessions() as session:
        for phone in (STOPPER, PORTAL_USER):
            assert await consent.current(session, people[phone].id, "sms",
                                         ConsentPurpose.marketing) == ConsentStatus.revoked
        # Care messages stay on for the portal user: they turned off news and offers only.
        assert await consent.current(session, people[PORTAL_USER].id, "sms",
                                     ConsentPurpose.transactional) == ConsentStatus.granted
    page = await (await client.get("/portal/preferences?saved=consent")).text()
    assert "Saved." in page

    # The early promotion's time comes: the outbox checks consent at send time.
    async with hub.sessions() as session:
        message = await session.get(Message, early.id)
        message.next_attempt_at = utcnow()
        await session.commit()
    await hub.outbox.deliver([early.id])
    async with hub.sessions() as session:
        assert (await session.get(Message, early.id)).status == "suppressed"

    # A campaign to everyone: only the patient who kept saying yes gets it.
    async with hub.sessions() as session:
        segment = Segment(name="Everyone", filters={})
        template = CampaignTemplate(name="Open day", purpose="marketing", body_en="Open day on Saturday, {first_name}!",
                                    body_ar="يوم مفتوح السبت يا {first_name}!", channel_bodies={})
        session.add_all([segment, template])
        await session.flush()
        campaign = Campaign(name="Open day", segment_id=segment.id, template_id=template.id, channels=["sms"])
        session.add(campaign)
        await session.commit()
    runtime = client.app[CAMPAIGNS]
    assert await runtime.broadcasts.schedule(campaign.id, utcnow() + timedelta(seconds=1))

    async def done():
        async with hub.sessions() as session:
            return (await session.get(Campaign, campaign.id)).status == "done"
    await eventually(done, timeout=40)
    await fake.wait_for(lambda m: any("Open day" in (r.get("Body") or "") for r in m))
    received = {r.get("To") for r in fake.messages if "Open day" in (r.get("Body") or "")}
    assert received == {CONTROL}
    async with hub.sessions() as session:
        reasons = dict((await session.execute(select(CampaignRecipient.patient_id, CampaignRecipient.reason)
                                              .where(CampaignRecipient.campaign_id == campaign.id))).all())
    assert reasons[people[STOPPER].id] == reasons[people[PORTAL_USER].id] == "opted_out"

    # Turning it back on is the patient's choice too.
    await user.post("/portal/preferences/consent", {"channel": "sms", "purpose": "marketing", "status": "granted"})
    async with hub.sessions() as session:
        assert await consent.current(session, people[PORTAL_USER].id, "sms",
                                     ConsentPurpose.marketing) == ConsentStatus.granted


async def _identity_id(session, patient_id: int) -> int:
    return await session.scalar(select(ChannelIdentity.id).where(ChannelIdentity.patient_id == patient_id))


async def test_language_and_only_known_channels(client, hub, fake):
    patient = await add_patient(hub, PORTAL_USER, BORN, language="en")
    user = PortalUser(client, fake)
    await user.sign_in(PORTAL_USER, BORN)
    saved = await user.post("/portal/preferences/language", {"language": "ar", "scope": "record",
                                                             "back": "/portal/preferences"})
    assert saved.headers["Location"] == "/portal/preferences"
    page = await (await client.get("/portal/preferences")).text()
    assert 'dir="rtl"' in page and "الأخبار والعروض" in page
    async with hub.sessions() as session:
        assert (await session.get(Patient, patient.id)).preferred_language == "ar"
    # A channel the patient is not known on cannot be switched on behind their back.
    refused = await user.post("/portal/preferences/consent", {"channel": "telegram", "purpose": "marketing",
                                                              "status": "granted"})
    assert refused.status == 404
    assert (await user.post("/portal/preferences/consent", {"channel": "pigeon", "purpose": "marketing",
                                                            "status": "granted"})).status == 400
