"""The campaign pages for marketers: who may open them, the segment builder's live count, templates
with a preview, creating and scheduling a campaign, its funnel, pause and cancel, automations."""
from __future__ import annotations

import re
from urllib.parse import unquote_plus

import pytest
from sqlalchemy import select

from crm_store.models import AuditEntry, AutomationRule, Campaign, CampaignTemplate, Segment, StaffRole, StaffUser
from inbox.security import hash_password
from tests.campaigns.conftest import eventually
from tests.campaigns.people import add_patient

PASSWORD = "correct horse battery"


@pytest.fixture
async def console(client, hub):
    async with hub.sessions() as session:
        for name, role, language in (("mariam", StaffRole.marketer, "en"), ("noura", StaffRole.marketer, "ar"),
                                     ("amal", StaffRole.agent, "en"), ("root", StaffRole.admin, "en")):
            session.add(StaffUser(username=name, display_name=name.title(), password_hash=hash_password(PASSWORD),
                                  role=role, language=language))
        for i in range(4):
            await add_patient(session, f"+96650222000{i}", language="ar" if i % 2 else "en",
                              tags=("vip",) if i < 3 else ())
        await session.commit()
    return client


async def sign_in(client, username: str):
    page = await (await client.get("/console/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    response = await client.post("/console/login", data={"_csrf": token, "username": username, "password": PASSWORD},
                                 allow_redirects=False)
    assert response.status == 302


async def csrf_of(client, path: str) -> str:
    page = await (await client.get(path)).text()
    return re.search(r'name="_csrf" value="([^"]+)"', page).group(1)


async def audit_actions(hub) -> list[tuple[str, str, str]]:
    async with hub.sessions() as session:
        rows = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    return [(r.username, r.action, r.outcome) for r in rows]


async def test_only_marketers_and_admins_open_campaign_pages(console, hub):
    first = await console.get("/console/campaigns", allow_redirects=False)
    assert first.status == 302 and first.headers["Location"].startswith("/console/login")
    await sign_in(console, "amal")
    assert (await console.get("/console/campaigns")).status == 403
    assert ("amal", "denied:campaign_list", "forbidden") in await audit_actions(hub)
    await sign_in(console, "root")
    assert (await console.get("/console/campaigns")).status == 200
    await sign_in(console, "mariam")
    page = await (await console.get("/console/campaigns")).text()
    assert "Campaigns" in page and 'href="/console/campaigns/segments"' in page


async def test_segment_live_count_and_save(console, hub):
    await sign_in(console, "mariam")
    token = await csrf_of(console, "/console/campaigns/segments")
    refused = await console.post("/console/campaigns/segments/count", data={"tags": "vip"})
    assert refused.status == 403  # no CSRF token
    counted = await console.post("/console/campaigns/segments/count", data={"tags": "vip"},
                                 headers={"X-CSRF-Token": token})
    assert await counted.json() == {"count": 3}
    both = await console.post("/console/campaigns/segments/count", data={"tags": "vip", "languages": "ar"},
                              headers={"X-CSRF-Token": token})
    assert await both.json() == {"count": 1}
    bad = await console.post("/console/campaigns/segments/count", data={"age_min": "-3"},
                             headers={"X-CSRF-Token": token})
    assert bad.status == 400 and "age_min" in (await bad.json())["error"]
    saved = await console.post("/console/campaigns/segments", data={"_csrf": token, "name": "VIPs", "tags": "vip"},
                               allow_redirects=False)
    assert saved.status == 302
    page = await (await console.get(saved.headers["Location"])).text()
    assert re.search(r'id="segment-count"[^>]*>3<', page)
    async with hub.sessions() as session:
        segment = await session.scalar(select(Segment).where(Segment.name == "VIPs"))
    assert segment.filters["tags"] == ["vip"] and segment.created_by == "mariam"
    assert ("mariam", "segment_save", "ok") in await audit_actions(hub)


async def test_template_preview_in_arabic_with_arabic_digits_and_whatsapp_content(console, hub):
    await sign_in(console, "noura")
    token = await csrf_of(console, "/console/campaigns/templates")
    form = {"_csrf": token, "name": "Flu shots", "purpose": "marketing",
            "body_en": "Hi {first_name}, see you {appointment_time}",
            "body_ar": "أهلًا {first_name}، موعدك {appointment_time}",
            "sms_ar": "{first_name}: لقاح الإنفلونزا متوفر", "wa_sid_ar": "HX" + "a" * 32,
            "wa_variables": "1={first_name}\n2={appointment_time}", "channel": "whatsapp", "language": "ar"}
    shown = await (await console.post("/console/campaigns/templates/preview", data=form)).json()
    assert shown["text"].startswith("أهلًا سارة، موعدك ") and "١٠:٣٠ صباحًا" in shown["text"]
    assert shown["template"]["content_sid"] == "HX" + "a" * 32
    assert shown["template"]["variables"]["1"] == "سارة"
    sms = await (await console.post("/console/campaigns/templates/preview", data={**form, "channel": "sms"})).json()
    assert sms["text"] == "سارة: لقاح الإنفلونزا متوفر" and sms["template"] is None
    typo = await console.post("/console/campaigns/templates", data={**form, "body_en": "Hi {firstname}"},
                              allow_redirects=False)
    assert "problem=unknown variable {firstname}" in unquote_plus(typo.headers["Location"])
    saved = await console.post("/console/campaigns/templates", data=form, allow_redirects=False)
    assert saved.status == 302
    async with hub.sessions() as session:
        template = await session.scalar(select(CampaignTemplate).where(CampaignTemplate.name == "Flu shots"))
    assert template.channel_bodies == {"sms": {"ar": "{first_name}: لقاح الإنفلونزا متوفر"}}
    assert template.whatsapp == {"content_sid": {"ar": "HX" + "a" * 32},
                                 "variables": {"1": "{first_name}", "2": "{appointment_time}"}}


async def test_create_send_now_then_funnel_and_refused_actions(console, hub, fake):
    await sign_in(console, "mariam")
    token = await csrf_of(console, "/console/campaigns/segments")
    await console.post("/console/campaigns/segments", data={"_csrf": token, "name": "VIPs", "tags": "vip"})
    await console.post("/console/campaigns/templates", data={
        "_csrf": token, "name": "News", "purpose": "marketing", "body_en": "News for {first_name}",
        "body_ar": "أخبار لك يا {first_name}"})
    async with hub.sessions() as session:
        segment_id = await session.scalar(select(Segment.id).where(Segment.name == "VIPs"))
        template_id = await session.scalar(select(CampaignTemplate.id).where(CampaignTemplate.name == "News"))
    page = await (await console.get("/console/campaigns/new")).text()
    assert 'name="run_at"' in page
    created = await console.post("/console/campaigns", data={
        "_csrf": token, "name": "Spring news", "segment_id": str(segment_id), "template_id": str(template_id),
        "channel": "sms", "run_at": ""}, allow_redirects=False)
    assert created.status == 302
    campaign_path = created.headers["Location"]
    await fake.wait_for(lambda m: len(m) == 3)

    async def finished():
        figures = await (await console.get(campaign_path + "/funnel")).json()
        return figures["status"] == "done" and figures["sent"] == 3 and figures

    figures = await eventually(finished)
    assert figures["recipients"] == 3 and figures["messaged"] == 3
    detail = await (await console.get(campaign_path)).text()
    assert re.search(r'data-stage="sent".*?<span class="value">3</span>', detail, re.S)
    refused = await console.post(campaign_path + "/pause", data={"_csrf": token})
    assert refused.status == 409  # a finished campaign cannot be paused
    actions = await audit_actions(hub)
    assert ("mariam", "campaign_create", "ok") in actions and ("mariam", "campaign_pause", "refused:409") in actions
    async with hub.sessions() as session:
        campaign = await session.scalar(select(Campaign))
    assert campaign.created_by == "mariam" and campaign.channels == ["sms"]


async def test_automation_is_switched_and_edited_in_the_console(console, hub):
    await sign_in(console, "mariam")
    page = await (await console.get("/console/campaigns/automations")).text()
    assert "Appointment reminders" in page and "Birthday greeting" in page
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    async with hub.sessions() as session:
        birthday = await session.scalar(select(AutomationRule).where(AutomationRule.key == "birthday"))
    assert not birthday.enabled
    bad = await console.post(f"/console/campaigns/automations/{birthday.id}", allow_redirects=False,
                             data={"_csrf": token, "enabled": "1", "config": "{not json"})
    assert "error=config" in bad.headers["Location"]
    done = await console.post(f"/console/campaigns/automations/{birthday.id}", allow_redirects=False, data={
        "_csrf": token, "enabled": "1", "config": '{"hour": 9}', "channel": ["sms", "whatsapp"],
        "template_id": str(birthday.template_id)})
    assert done.status == 302
    async with hub.sessions() as session:
        birthday = await session.get(AutomationRule, birthday.id)
    assert birthday.enabled and birthday.config == {"hour": 9} and birthday.channels == ["sms", "whatsapp"]
    assert birthday.updated_by == "mariam"
