"""Sending surveys: to a patient on their channel, after a fulfilled visit, after a conversation
staff resolved, or for a campaign (which calls `offer`); and closing the ones that expired.

`offer` queues the first question in the caller's transaction (the outbox delivers it) and never
sends a patient a second survey while one is open. A survey goes out on the channel the patient
was last seen on among those that can carry one (not voice), unless they opted out of it there;
WhatsApp outside its 24-hour window needs the survey's approved opening template. Surveys are
care messages (transactional), not marketing: marketing consent is not required, an opt-out is
honoured. Automatic surveys (after visits and chats) also leave a patient alone who was surveyed
in the last SILA_SURVEY_COOLDOWN_DAYS, and a visit survey waits while the patient is in the middle
of a conversation with the bot (their next message would be taken for an answer) or inside the
quiet hours of campaigns (SILA_CAMPAIGN_QUIET_START/END, in the patient's zone)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from bot import consent
from bot.outbox import queue_reply
from campaigns import quiet
from crm_store.content import load_hospital
from crm_store.conversations import open_conversation
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    ChannelIdentity,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    JourneyEvent,
    Patient,
    Practitioner,
    Slot,
    SurveyResponse,
    utcnow,
)
from surveys import answering, catalogue
from surveys.versions import definition_of
from surveys.definitions import Definition
from surveys.fhir import hospital_context
from surveys.render import question_message, whatsapp_template

log = logging.getLogger(__name__)
SURVEY_CHANNELS = ("webchat", "sms", "whatsapp", "telegram", "email")
ACTIVE = timedelta(minutes=30)
WHATSAPP_WINDOW = timedelta(hours=24)
# A conversation handed over for these reasons gets no satisfaction survey when it is resolved.
NO_SURVEY_AFTER = frozenset({"emergency", "detractor", "low_satisfaction"})


@dataclass
class Offer:
    status: str  # sent | skipped
    reason: str | None = None  # why skipped: no_survey, duplicate, busy, cooldown, opted_out, no_channel…
    response: SurveyResponse | None = None
    message_ids: list[int] = field(default_factory=list)


def _names(row) -> dict:
    return {"en": row.name_en, "ar": row.name_ar}


async def _reach(session: AsyncSession, patient: Patient, definition: Definition, *, channel: str | None,
                 channels, conversation_id: int | None, now: datetime) -> tuple[Conversation, bool] | str:
    """(conversation, needs the WhatsApp template) to send on, or why there is none."""
    allowed = [c for c in (channels or SURVEY_CHANNELS) if c in SURVEY_CHANNELS]
    query = select(ChannelIdentity).where(ChannelIdentity.patient_id == patient.id)
    if conversation_id is not None:
        query = query.join(Conversation, Conversation.identity_id == ChannelIdentity.id).where(
            Conversation.id == conversation_id)
    else:
        query = query.where(ChannelIdentity.channel.in_([channel] if channel else allowed))
    identities = (await session.scalars(query.order_by(ChannelIdentity.last_seen_at.desc()))).all()
    why = "no_channel"
    for identity in identities:
        if identity.channel not in SURVEY_CHANNELS:
            continue
        if await consent.current(session, patient.id, identity.channel,
                                 ConsentPurpose.transactional) == ConsentStatus.revoked:
            why = "opted_out"
            continue
        conversation = (await session.get(Conversation, conversation_id) if conversation_id is not None
                        else await open_conversation(session, identity, patient.preferred_language))
        template = identity.channel == "whatsapp" and not (
            conversation.last_inbound_at and conversation.last_inbound_at > now - WHATSAPP_WINDOW)
        if template and definition.whatsapp is None:
            why = "whatsapp_window"
            continue
        return conversation, template
    return why


async def offer(session: AsyncSession, patient_id: int, survey_code: str, *, reason: str = "manual",
                channel: str | None = None, channels=None, conversation_id: int | None = None,
                occasion: str | None = None, appointment_id: int | None = None, department: str | None = None,
                practitioner: str | None = None, context: dict | None = None, hospital: dict | None = None,
                expiry_days: float = 3.0, cooldown_days: float = 0.0,
                unless_active_within: timedelta | None = ACTIVE, now: datetime | None = None) -> Offer:
    """Send `survey_code` to a patient: the first question is queued in this transaction (commit,
    then deliver `message_ids` or let the outbox find them). `reason` is visit | chat | campaign |
    manual; `occasion` (e.g. "campaign:12") makes a repeated call a no-op; `channel` forces one;
    `channels` limits the choice (in no particular order: the patient's latest wins)."""
    now = now or utcnow()
    survey = await catalogue.by_code(session, survey_code)
    if survey is None or not survey.active:
        return Offer("skipped", "no_survey")
    definition = definition_of(survey)
    if occasion and await session.scalar(select(exists().where(
            SurveyResponse.survey_id == survey.id, SurveyResponse.occasion == occasion))):
        return Offer("skipped", "duplicate")
    if (current := await answering.open_response(session, patient_id)) is not None:
        if current.expires_at > now:
            return Offer("skipped", "busy")
        await answering.finish(session, current, "expired", reason="expired", now=now)
    if cooldown_days and await session.scalar(select(exists().where(
            SurveyResponse.patient_id == patient_id, SurveyResponse.offered_at > now - timedelta(days=cooldown_days)))):
        return Offer("skipped", "cooldown")
    patient = await session.get(Patient, patient_id)
    reach = await _reach(session, patient, definition, channel=channel, channels=channels,
                         conversation_id=conversation_id, now=now)
    if isinstance(reach, str):
        return Offer("skipped", reach)
    conversation, template = reach
    if conversation.status in answering.HUMAN_OWNED:
        return Offer("skipped", "with_staff")
    last_heard = conversation.last_inbound_at
    if unless_active_within and last_heard and last_heard > now - unless_active_within:
        return Offer("skipped", "chatting")
    language = patient.preferred_language if patient.preferred_language in ("ar", "en") else conversation.language
    context = {**hospital_context(hospital),
               "first_name": {"en": patient.given_name_en or "", "ar": patient.given_name_ar or ""}, **(context or {})}
    days = definition.expiry_days or expiry_days
    first = definition.questions[0]
    response = SurveyResponse(
        survey_id=survey.id, survey_code=survey.code, survey_version=survey.version, patient_id=patient.id,
        open_patient_id=patient.id, conversation_id=conversation.id, channel=conversation.channel,
        language=language, reason=reason, occasion=occasion, appointment_id=appointment_id,
        department=department, practitioner=practitioner, context=context, status="sent",
        current_question=first.id, offered_at=now, last_activity_at=now, expires_at=now + timedelta(days=days))
    session.add(response)
    await session.flush()
    body, buttons = question_message(definition, first, language, context, opening=True)
    queued = queue_reply(session, conversation, body, buttons=buttons, language=language,
                         template=whatsapp_template(definition, language, context) if template else None)
    await session.flush()
    response.last_message_id = queued.id
    session.add(JourneyEvent(patient_id=patient.id, kind="survey_sent", reference=str(response.id),
                             data={"survey": survey.code, "reason": reason, "channel": conversation.channel}))
    return Offer("sent", None, response, [queued.id])


async def after_chat(session: AsyncSession, conversation: Conversation, settings) -> Offer | None:
    """The satisfaction survey for a conversation staff just resolved (SILA_SURVEY_AFTER_CHAT)."""
    code = settings.survey_after_chat
    if not code or conversation.handoff_reason in NO_SURVEY_AFTER:
        return None
    handoff = await session.scalar(select(JourneyEvent.id).where(
        JourneyEvent.kind == "handoff", JourneyEvent.reference == str(conversation.id))
        .order_by(JourneyEvent.id.desc()).limit(1))
    return await offer(
        session, conversation.patient_id, code, reason="chat", conversation_id=conversation.id,
        occasion=f"chat:{conversation.id}:{handoff or 0}", department=conversation.team,
        hospital=load_hospital(settings.hospital_file).get("hospital"), expiry_days=settings.survey_expiry_days,
        cooldown_days=settings.survey_cooldown_days, unless_active_within=None)


async def after_visits(sessions: async_sessionmaker, settings, channels, now: datetime | None = None) -> list[int]:
    """Offer the visit survey (SILA_SURVEY_AFTER_VISIT) for appointments fulfilled at least
    SILA_SURVEY_AFTER_VISIT_HOURS ago (and not more than SILA_SURVEY_LOOKBACK_DAYS); the queued
    message ids. What cannot be sent now (quiet hours, another survey open) is tried next time."""
    code = settings.survey_after_visit
    if not code:
        return []
    now = now or utcnow()
    async with sessions() as session:
        survey = await catalogue.by_code(session, code)
        if survey is None or not survey.active:
            return []
        surveyed = select(SurveyResponse.appointment_id).where(
            SurveyResponse.survey_id == survey.id, SurveyResponse.appointment_id.is_not(None))
        visits = (await session.scalars(
            select(Appointment).join(Slot, Slot.id == Appointment.slot_id)
            .where(Appointment.status == AppointmentStatus.fulfilled,
                   Slot.end_at <= now - timedelta(hours=settings.survey_after_visit_hours),
                   Slot.end_at > now - timedelta(days=settings.survey_lookback_days),
                   Appointment.id.not_in(surveyed))
            .options(selectinload(Appointment.patient),
                     selectinload(Appointment.practitioner).selectinload(Practitioner.department))
            .order_by(Slot.end_at).limit(500))).all()
    hospital = load_hospital(settings.hospital_file).get("hospital")
    queued: list[int] = []
    for visit in visits:
        zone = quiet.zone_for(visit.patient.phone, settings.timezone)
        if quiet.quiet_until(now, zone, settings.campaign_quiet_start, settings.campaign_quiet_end):
            continue
        doctor = visit.practitioner
        async with sessions() as session:
            result = await offer(
                session, visit.patient_id, code, reason="visit", channels=channels, occasion=f"visit:{visit.id}",
                appointment_id=visit.id, department=doctor.department.code, practitioner=doctor.code,
                context={"department": _names(doctor.department), "doctor": _names(doctor)}, hospital=hospital,
                expiry_days=settings.survey_expiry_days, cooldown_days=settings.survey_cooldown_days, now=now)
            if result.status != "sent":
                continue
            try:
                await session.commit()
            except IntegrityError:  # another worker sent it (or another survey) meanwhile
                await session.rollback()
                continue
            queued += result.message_ids
    return queued


async def expire_due(sessions: async_sessionmaker, now: datetime | None = None) -> int:
    """Close the open surveys whose time is up (a detractor's answers still alert); how many."""
    now = now or utcnow()
    async with sessions() as session:
        due = (await session.scalars(select(SurveyResponse.id).where(
            SurveyResponse.open_patient_id.is_not(None), SurveyResponse.expires_at <= now)
            .order_by(SurveyResponse.id).limit(500))).all()
    closed = 0
    for response_id in due:
        async with sessions() as session:
            # Claimed by one conditional update: with several workers, one closes it.
            claimed = await session.execute(update(SurveyResponse).where(
                SurveyResponse.id == response_id, SurveyResponse.open_patient_id.is_not(None))
                .values(open_patient_id=None).execution_options(synchronize_session=False))
            if claimed.rowcount != 1:
                continue
            response = await session.get(SurveyResponse, response_id)
            await answering.finish(session, response, "expired", reason="expired", now=now)
            await session.commit()
            closed += 1
    return closed
