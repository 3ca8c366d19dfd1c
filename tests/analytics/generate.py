"""A hospital's fortnight of conversations, made up but shaped like the real thing: several
channels, both languages, messages around the hospital's midnight, handoffs answered late or not at
all, internal notes, booking requests that did or did not become appointments, attended and missed
visits, and a campaign. Seeded, so a failure can be replayed."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from crm_store.models import (
    Appointment,
    AppointmentStatus,
    Campaign,
    CampaignRecipient,
    CampaignTemplate,
    ChannelIdentity,
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Message,
    Patient,
    Practitioner,
    Segment,
    Slot,
    SlotStatus,
    Survey,
    SurveyResponse,
)

CHANNELS = ["webchat", "whatsapp", "sms", "telegram", "voice"]
INTENTS = ["greet", "book_appointment", "book_appointment", "ask_hours", "ask_location", "cancel_appointment",
           "request_human", "nlu_fallback", "out_of_scope", "thank", "ask_insurance", "emergency"]
REASONS = ["request_human", "misunderstanding", "emergency", "refill", None]
# The data spans 2026-01-01 .. 2026-01-24 (UTC); the period tested is part of it.
ORIGIN = datetime(2026, 1, 1, tzinfo=timezone.utc)
PHONE = "+96655{:07d}"
_taken: set[tuple[int, datetime]] = set()


def _when(rng: random.Random) -> datetime:
    day = rng.randrange(0, 24)
    if rng.random() < 0.3:  # around midnight in Riyadh (21:00 UTC): which day it counts on matters
        return ORIGIN + timedelta(days=day, hours=20, minutes=rng.randrange(0, 120), seconds=rng.randrange(60))
    return ORIGIN + timedelta(days=day, seconds=rng.randrange(86400))


async def generate(sessions, seed: int = 9, patients: int = 60) -> dict:
    rng = random.Random(seed)
    _taken.clear()
    made = {"names": [], "phones": []}
    async with sessions() as session:
        practitioners = (await session.scalars(select(Practitioner).order_by(Practitioner.id))).all()
        for p in range(patients):
            phone = PHONE.format(seed * 1000 + p)
            patient = Patient(given_name_en=f"Given{p}x", family_name_en=f"Family{p}y", given_name_ar=f"مريض{p}",
                              phone=phone, preferred_language=rng.choice(["ar", "en"]))
            session.add(patient)
            await session.flush()
            made["names"].append(patient.given_name_en)
            made["phones"].append(phone)
            for channel in rng.sample(CHANNELS, rng.choice([1, 1, 2])):
                await _conversation(session, rng, patient, channel)
            await _visits(session, rng, patient, practitioners)
        await _campaign(session, rng)
        await _surveys(session, rng)
        await session.commit()
    return made


async def _conversation(session, rng: random.Random, patient: Patient, channel: str) -> None:
    identity = ChannelIdentity(patient_id=patient.id, channel=channel, address=f"{channel}:{patient.phone}")
    session.add(identity)
    await session.flush()
    language = patient.preferred_language
    conversation = Conversation(patient_id=patient.id, identity_id=identity.id, channel=channel, language=language,
                                status=rng.choice([ConversationStatus.bot, ConversationStatus.bot,
                                                   ConversationStatus.human, ConversationStatus.closed]))
    session.add(conversation)
    await session.flush()
    for _ in range(rng.randrange(1, 7)):
        at = _when(rng)
        intent = rng.choice(INTENTS + [None])
        text = "/affirm" if rng.random() < 0.08 else f"message {rng.random():.6f}"
        session.add(Message(conversation_id=conversation.id, channel=channel, direction="in", sender="patient",
                            text=text, status="answered", intent=intent, created_at=at,
                            confidence=None if intent is None else round(rng.uniform(0.3, 1.0), 3),
                            language=rng.choice([language, language, None])))
        session.add(Message(conversation_id=conversation.id, channel=channel, direction="out", sender="bot",
                            text="answer", status="sent", created_at=at + timedelta(seconds=2)))
        if intent == "book_appointment" and rng.random() < 0.6:
            await _booking(session, rng, patient, channel if rng.random() < 0.8 else "webchat",
                           at + timedelta(hours=rng.choice([0.1, 2, 23.9, 24.5, 30])))
        if rng.random() < 0.2:
            await _handoff(session, rng, conversation, at + timedelta(seconds=5))
        if rng.random() < 0.05:  # a person replied on their own initiative, no handoff
            session.add(Message(conversation_id=conversation.id, channel=channel, direction="out", sender="staff",
                                text="staff here", status="sent", created_at=at + timedelta(minutes=3)))


async def _handoff(session, rng: random.Random, conversation: Conversation, at: datetime) -> None:
    reason = rng.choice(REASONS)
    session.add(JourneyEvent(patient_id=conversation.patient_id, kind="handoff", reference=str(conversation.id),
                             data={"reason": reason, "urgent": reason == "emergency"} if reason else {},
                             occurred_at=at))
    if rng.random() < 0.3:  # an internal note is not a reply to the patient
        session.add(Message(conversation_id=conversation.id, channel=conversation.channel, direction="out",
                            sender="staff", text="note", status="note", private=True,
                            created_at=at + timedelta(seconds=30)))
    if rng.random() < 0.8:
        delay = timedelta(seconds=rng.choice([40, 200, 299, 301, 900, 3600 * 5]) + rng.randrange(30))
        session.add(Message(conversation_id=conversation.id, channel=conversation.channel, direction="out",
                            sender="staff", text="hello from reception", status="sent", created_at=at + delay))
        session.add(Message(conversation_id=conversation.id, channel=conversation.channel, direction="out",
                            sender="staff", text="anything else?", status="sent", created_at=at + delay * 2))


async def _slot(session, rng: random.Random, practitioners, start: datetime) -> Slot:
    doctor = rng.choice(practitioners)
    while (doctor.id, start) in _taken:  # one slot per doctor and start time
        start += timedelta(minutes=20)
    _taken.add((doctor.id, start))
    slot = Slot(practitioner_id=doctor.id, start_at=start, end_at=start + timedelta(minutes=20),
                status=SlotStatus.booked)
    session.add(slot)
    await session.flush()
    return slot


async def _booking(session, rng, patient: Patient, channel: str, at: datetime) -> None:
    doctor = (await session.scalars(select(Practitioner).order_by(Practitioner.id))).all()
    slot = await _slot(session, rng, doctor, at + timedelta(days=3, minutes=rng.randrange(100000)))
    session.add(Appointment(reference=f"SL-{rng.randrange(16 ** 8):08X}", patient_id=patient.id,
                            practitioner_id=slot.practitioner_id, slot_id=slot.id, source_channel=channel,
                            status=AppointmentStatus.booked, history=[], created_at=at))


async def _visits(session, rng: random.Random, patient: Patient, practitioners) -> None:
    for _ in range(rng.randrange(0, 3)):
        slot = await _slot(session, rng, practitioners, _when(rng).replace(minute=0, second=0))
        session.add(Appointment(reference=f"SL-{rng.randrange(16 ** 8):08X}", patient_id=patient.id,
                                practitioner_id=slot.practitioner_id, slot_id=slot.id,
                                source_channel=rng.choice(CHANNELS), history=[],
                                created_at=slot.start_at - timedelta(days=5),
                                status=rng.choice([AppointmentStatus.fulfilled, AppointmentStatus.fulfilled,
                                                   AppointmentStatus.noshow, AppointmentStatus.cancelled,
                                                   AppointmentStatus.booked])))


async def _campaign(session, rng: random.Random) -> None:
    segment = Segment(name="all adults", filters={})
    template = CampaignTemplate(name="flu", body_en="Flu shots are here", body_ar="لقاح الإنفلونزا متوفر")
    session.add_all([segment, template])
    await session.flush()
    patients = (await session.scalars(select(Patient).order_by(Patient.id))).all()
    for name, started in (("flu season", ORIGIN + timedelta(days=8)), ("before the period", ORIGIN)):
        campaign = Campaign(name=name, segment_id=segment.id, template_id=template.id, channels=["sms"],
                            status="done", started_at=started, finished_at=started + timedelta(hours=1))
        session.add(campaign)
        await session.flush()
        for patient in rng.sample(patients, min(25, len(patients))):
            if rng.random() < 0.2:
                session.add(CampaignRecipient(campaign_id=campaign.id, patient_id=patient.id, status="skipped",
                                              reason="opted_out"))
                continue
            conversation = await session.scalar(select(Conversation).where(Conversation.patient_id == patient.id)
                                                .limit(1))
            message = Message(conversation_id=conversation.id, channel="sms", direction="out", sender="system",
                              text="Flu shots are here", purpose="marketing", created_at=started,
                              status=rng.choice(["delivered", "read", "sent", "failed"]))
            session.add(message)
            await session.flush()
            session.add(CampaignRecipient(campaign_id=campaign.id, patient_id=patient.id, status="queued",
                                          channel="sms", message_id=message.id, queued_at=started))


async def _surveys(session, rng: random.Random) -> None:
    patients = (await session.scalars(select(Patient).order_by(Patient.id))).all()
    for code in ("after_visit", "chat_feedback"):
        survey = Survey(code=code, title_en=code.replace("_", " "), title_ar="استبيان " + code, definition={})
        session.add(survey)
        await session.flush()
        for patient in rng.sample(patients, min(30, len(patients))):
            offered = _when(rng)
            answered = rng.choice([0, 0, 1, 2, 3])
            session.add(SurveyResponse(
                survey_id=survey.id, survey_code=code, survey_version=1, patient_id=patient.id,
                channel=rng.choice(CHANNELS), language=patient.preferred_language, reason="visit",
                status="completed" if answered == 3 else rng.choice(["sent", "in_progress", "expired", "stopped"]),
                answered=answered, nps=rng.randrange(11) if answered else None,
                csat=rng.randrange(1, 6) if answered > 1 else None, offered_at=offered,
                expires_at=offered + timedelta(days=3)))
