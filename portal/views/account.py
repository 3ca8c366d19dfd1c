"""Preferences (language; consent per channel and purpose — the consent STOP changes), "my data"
(everything Sila holds, as a FHIR bundle) and, for a guardian, whose record they are looking at."""
from __future__ import annotations

import json

from aiohttp import web
from sqlalchemy import select, update

from bot import consent
from crm_store.content import load_hospital
from crm_store.models import (
    ChannelIdentity,
    ConsentPurpose,
    ConsentStatus,
    JourneyEvent,
    Patient,
    PortalSession,
    utcnow,
)
from portal import export, guardians
from portal.views.base import LANGUAGES, VISIT, hub, not_found, patient_page, render

# Channels a patient can be messaged on and so decide about (the portal thread is always theirs).
CONSENT_CHANNELS = ("sms", "whatsapp", "telegram", "email", "webchat", "voice")
PURPOSES = (ConsentPurpose.transactional, ConsentPurpose.marketing)


async def _channels(session, patient: Patient) -> list[str]:
    """The channels this patient is known on (and SMS to the number on their record)."""
    known = set((await session.scalars(select(ChannelIdentity.channel).where(
        ChannelIdentity.patient_id == patient.id))).all())
    if patient.phone:
        known.add("sms")
    return [c for c in CONSENT_CHANNELS if c in known]


@patient_page
async def preferences(request: web.Request) -> web.Response:
    visit = request[VISIT]
    rows = []
    async with hub(request).sessions() as session:
        patient = await session.get(Patient, visit.acting_id)
        for channel in await _channels(session, patient):
            states = {p.value: await consent.current(session, patient.id, channel, p) for p in PURPOSES}
            rows.append({"channel": channel, **{k: (v.value if v else None) for k, v in states.items()}})
    return render(request, "portal_preferences.html", rows=rows, preferred=patient.preferred_language,
                  saved=request.query.get("saved"))


@patient_page
async def set_language(request: web.Request) -> web.StreamResponse:
    visit = request[VISIT]
    form = await request.post()
    lang = form.get("language")
    if lang not in LANGUAGES:
        raise web.HTTPBadRequest(text="ar or en")
    async with hub(request).sessions() as session:
        await session.execute(update(PortalSession).where(PortalSession.id == visit.session_id).values(language=lang))
        if form.get("scope") == "record":  # also the language Sila writes to the patient in
            patient = await session.get(Patient, visit.acting_id)
            patient.preferred_language = lang
        await session.commit()
    target = str(form.get("back", ""))
    raise web.HTTPFound(target if target.startswith("/portal") and not target.startswith("//") else "/portal")


@patient_page
async def set_consent(request: web.Request) -> web.StreamResponse:
    visit = request[VISIT]
    form = await request.post()
    channel, purpose, status = form.get("channel"), form.get("purpose"), form.get("status")
    if channel not in CONSENT_CHANNELS or purpose not in {p.value for p in PURPOSES} or \
            status not in {s.value for s in ConsentStatus}:
        raise web.HTTPBadRequest(text="a channel, a purpose and granted or revoked")
    async with hub(request).sessions() as session:
        patient = await session.get(Patient, visit.acting_id)
        if channel not in await _channels(session, patient):
            raise not_found(request)
        chosen = ConsentStatus(status)
        # The same record STOP and START write: the outbox checks it before every marketing send.
        consent.record(session, patient.id, channel, chosen, source="portal", purposes=(ConsentPurpose(purpose),))
        session.add(JourneyEvent(patient_id=patient.id, kind=f"consent_{chosen.value}", reference=channel,
                                 data={"purpose": purpose, "source": "portal", "by": visit.patient_id}))
        await session.commit()
    raise web.HTTPFound("/portal/preferences?saved=consent")


@patient_page
async def my_data(request: web.Request) -> web.Response:
    return render(request, "portal_data.html")


@patient_page
async def download(request: web.Request) -> web.Response:
    visit, h = request[VISIT], hub(request)
    hospital = load_hospital(h.settings.hospital_file)["hospital"]
    async with h.sessions() as session:
        bundle = await export.patient_bundle(session, visit.acting_id, hospital, h.settings.base_url)
    name = f"sila-record-{visit.acting_id}-{utcnow().date().isoformat()}.json"
    return web.Response(body=json.dumps(bundle, ensure_ascii=False, indent=1).encode(),
                        content_type="application/fhir+json", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@patient_page
async def switch(request: web.Request) -> web.StreamResponse:
    """A guardian chooses whose record to look at: their own or a linked child's."""
    visit = request[VISIT]
    form = await request.post()
    try:
        target = int(form.get("patient", ""))
    except ValueError:
        raise not_found(request) from None
    async with hub(request).sessions() as session:
        if not await guardians.may_act_for(session, visit.patient_id, target):
            raise not_found(request)
        await session.execute(update(PortalSession).where(PortalSession.id == visit.session_id)
                              .values(acting_patient_id=target))
        await session.commit()
    raise web.HTTPFound("/portal")


def setup(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/portal/preferences", preferences),
        web.post("/portal/preferences/language", set_language),
        web.post("/portal/preferences/consent", set_consent),
        web.get("/portal/data", my_data),
        web.get("/portal/data/export", download),
        web.post("/portal/switch", switch),
    ])
