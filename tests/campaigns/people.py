"""Patients, consents, segments, templates and campaigns for the campaign tests, written straight
into the CRM store as the EHR import, the router and the console would leave them."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from crm_store.models import (
    Campaign,
    CampaignTemplate,
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Patient,
    PatientTag,
    Segment,
    utcnow,
)


async def add_patient(session, phone: str | None, *, language: str = "ar", first: str = "Amal", first_ar: str = "أمل",
                      channels: tuple[str, ...] = ("sms",), marketing: bool | None = True,
                      transactional: bool | None = None, birth_date: date | None = None, sex: str | None = None,
                      tags: tuple[str, ...] = (), at: datetime | None = None) -> Patient:
    """A patient with identities on `channels` (the phone number, or a token for other channels)."""
    patient = Patient(given_name_en=first, given_name_ar=first_ar, preferred_language=language, phone=phone,
                      birth_date=birth_date, sex=sex)
    session.add(patient)
    await session.flush()
    at = at or utcnow() - timedelta(days=30)
    for channel in channels:
        address = phone if channel in ("sms", "whatsapp") else f"{channel}-{patient.id}"
        session.add(ChannelIdentity(patient_id=patient.id, channel=channel, address=address))
        for purpose, granted in ((ConsentPurpose.marketing, marketing), (ConsentPurpose.transactional, transactional)):
            if granted is not None:
                session.add(Consent(patient_id=patient.id, channel=channel, purpose=purpose, recorded_at=at,
                                    status=ConsentStatus.granted if granted else ConsentStatus.revoked,
                                    source="test"))
    for tag in tags:
        session.add(PatientTag(patient_id=patient.id, tag=tag))
    await session.flush()
    return patient


async def add_campaign(session, *, filters: dict | None = None, purpose: str = "marketing",
                       channels: tuple[str, ...] = ("sms",), name: str = "Open day",
                       body_en: str = "Hello {first_name}, our open day is on Saturday.",
                       body_ar: str = "مرحبًا {first_name}، يوم المستشفى المفتوح يوم السبت.") -> Campaign:
    segment = Segment(name=f"{name} audience", filters=filters or {})
    template = CampaignTemplate(name=f"{name} message", purpose=purpose, body_en=body_en, body_ar=body_ar,
                                channel_bodies={})
    session.add_all([segment, template])
    await session.flush()
    campaign = Campaign(name=name, segment_id=segment.id, template_id=template.id, channels=list(channels))
    session.add(campaign)
    await session.flush()
    return campaign


async def slot_at(session, start: datetime, minutes: int = 20):
    """A free slot with the test clinic's doctor (created on first use)."""
    from sqlalchemy import select

    from crm_store.models import Department, Practitioner, Slot

    doctor = await session.scalar(select(Practitioner).where(Practitioner.code == "dr-test"))
    if doctor is None:
        department = Department(code="cardiology", name_en="Cardiology", name_ar="القلب", aliases=[])
        session.add(department)
        await session.flush()
        doctor = Practitioner(code="dr-test", name_en="Dr. Khalid Al-Harbi", name_ar="د. خالد الحربي",
                              specialty_en="Cardiologist", specialty_ar="استشاري قلب", department_id=department.id,
                              aliases=[])
        session.add(doctor)
        await session.flush()
    slot = Slot(practitioner_id=doctor.id, start_at=start, end_at=start + timedelta(minutes=minutes))
    session.add(slot)
    await session.flush()
    return slot
