"""Who is behind a phone number, and on which channel to reach a patient (sign-in codes,
appointment confirmations, "you have a new message")."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import consent
from crm_store.conversations import open_conversation
from crm_store.models import (
    ChannelIdentity,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    JourneyEvent,
    Patient,
    utcnow,
)

CODE_CHANNELS = ("sms", "whatsapp")
# Channels a patient can be told something on, without them having written first.
NOTICE_CHANNELS = ("sms", "whatsapp", "telegram", "email")
# WhatsApp lets a business write freely only within 24 hours of the patient's last message.
WHATSAPP_WINDOW = timedelta(hours=24)


async def reachable_at(session: AsyncSession, phone: str) -> list[Patient]:
    """Patients with this number on their record or writing from it by SMS or WhatsApp (a family
    may share one phone: the date of birth tells them apart)."""
    by_identity = select(ChannelIdentity.patient_id).where(
        ChannelIdentity.channel.in_(CODE_CHANNELS), ChannelIdentity.address == phone)
    return list((await session.scalars(select(Patient).where(
        or_(Patient.phone == phone, Patient.id.in_(by_identity))).order_by(Patient.id))).all())


async def _revoked(session: AsyncSession, patient_id: int, channel: str) -> bool:
    return await consent.current(session, patient_id, channel, ConsentPurpose.transactional) == ConsentStatus.revoked


async def _window_open(session: AsyncSession, identity: ChannelIdentity) -> bool:
    last = await session.scalar(select(Conversation.last_inbound_at).where(
        Conversation.identity_id == identity.id, Conversation.last_inbound_at.is_not(None))
        .order_by(Conversation.last_inbound_at.desc()).limit(1))
    return last is not None and utcnow() - last < WHATSAPP_WINDOW


async def _record_sms(session: AsyncSession, patient: Patient, available) -> ChannelIdentity | None:
    """An SMS identity for the number on the patient's record, when it has none yet."""
    if "sms" not in available or not patient.phone or await _revoked(session, patient.id, "sms"):
        return None
    taken = await session.scalar(select(ChannelIdentity).where(
        ChannelIdentity.channel == "sms", ChannelIdentity.address == patient.phone))
    if taken is not None:
        return taken if taken.patient_id == patient.id else None
    identity = ChannelIdentity(patient_id=patient.id, channel="sms", address=patient.phone)
    session.add(identity)
    session.add(JourneyEvent(patient_id=patient.id, kind="identity_created", reference="sms",
                             data={"source": "patient record"}))
    await session.flush()
    return identity


async def code_route(session: AsyncSession, phone: str, patients: list[Patient], available,
                     whatsapp_template: str, language: str) -> tuple[Conversation, dict | None] | None:
    """Where a code for `phone` goes: the number's WhatsApp when that is where it was last seen
    (inside the 24-hour window, or with an approved template), else its SMS; (conversation,
    template variables to fill) or None."""
    if not patients:
        return None
    identities = (await session.scalars(select(ChannelIdentity).where(
        ChannelIdentity.channel.in_(CODE_CHANNELS), ChannelIdentity.address == phone)
        .order_by(ChannelIdentity.last_seen_at.desc(), ChannelIdentity.id.desc()))).all()
    for identity in identities:
        if identity.channel not in available or await _revoked(session, identity.patient_id, identity.channel):
            continue
        template = None
        if identity.channel == "whatsapp" and not await _window_open(session, identity):
            if not whatsapp_template:
                continue
            template = {"content_sid": whatsapp_template}
        return await open_conversation(session, identity, language), template
    owner = next((p for p in patients if p.phone == phone), None)
    identity = await _record_sms(session, owner, available) if owner else None
    return (await open_conversation(session, identity, language), None) if identity else None


async def notice_conversation(session: AsyncSession, patient: Patient, available) -> Conversation | None:
    """The patient's preferred channel for a notice: the one they used last that can carry it."""
    identities = (await session.scalars(select(ChannelIdentity).where(
        ChannelIdentity.patient_id == patient.id, ChannelIdentity.channel.in_(NOTICE_CHANNELS))
        .order_by(ChannelIdentity.last_seen_at.desc(), ChannelIdentity.id.desc()))).all()
    language = patient.preferred_language or "ar"
    for identity in identities:
        if identity.channel not in available or await _revoked(session, patient.id, identity.channel):
            continue
        if identity.channel == "whatsapp" and not await _window_open(session, identity):
            continue  # free text is refused outside the window; the next channel will do
        return await open_conversation(session, identity, language)
    identity = await _record_sms(session, patient, available)
    return await open_conversation(session, identity, language) if identity else None
