"""What the portal tells patients on their own channel: appointment confirmations (the bot's own
sentences) and "you have a new message from your care team" — never what the message says, since
an SMS or a lock screen is not private and clinical content stays behind the portal's sign-in."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.formatting import format_when
from bot.outbox import queue_reply
from bot.texts import text
from crm_store.content import load_hospital
from crm_store.models import Appointment, JourneyEvent, Message, Patient, utcnow
from portal import guardians, reach

# One "new message" notice per patient in this time, however many replies staff send.
NOTICE_QUIET = timedelta(minutes=10)


async def _route(session: AsyncSession, patient: Patient, fallback_id: int | None, available):
    """The patient's conversation for a notice, else (for a child with no channel) a guardian's."""
    conversation = await reach.notice_conversation(session, patient, available)
    if conversation is not None:
        return conversation, patient
    others = [await session.get(Patient, fallback_id)] if fallback_id and fallback_id != patient.id else []
    for other in others + await guardians.guardians_of(session, patient.id):
        if other is not None and (conversation := await reach.notice_conversation(session, other, available)):
            return conversation, other
    return None, None


async def appointment_confirmation(session: AsyncSession, hub, appointment: Appointment, key: str,
                                   signed_in_id: int | None = None) -> Message | None:
    """Queue the bot's confirmation ("booked", "rescheduled", "cancelled") for an appointment
    (loaded with slot, practitioner and department) on the patient's preferred channel."""
    patient = await session.get(Patient, appointment.patient_id)
    conversation, recipient = await _route(session, patient, signed_in_id, hub.adapters)
    if conversation is None:
        return None
    lang = recipient.preferred_language if recipient.preferred_language in ("ar", "en") else "ar"
    practitioner = appointment.practitioner
    sentence = text(key, lang, doctor=practitioner.name(lang), department=practitioner.department.name(lang),
                    when=format_when(appointment.slot.start_at, hub.settings.timezone, lang),
                    reference=appointment.reference)
    return queue_reply(session, conversation, sentence, sender="system", language=lang)


async def notify_waiting_message(hub, patient_id: int, message_id: int) -> None:
    """Tell a patient with no portal page open that their care team wrote (once per quiet period)."""
    async with hub.sessions() as session:
        since = utcnow() - NOTICE_QUIET
        if await session.scalar(select(JourneyEvent.id).where(
                JourneyEvent.patient_id == patient_id, JourneyEvent.kind == "portal_notice",
                JourneyEvent.occurred_at > since).limit(1)):
            return
        patient = await session.get(Patient, patient_id)
        conversation, recipient = await _route(session, patient, None, hub.adapters)
        if conversation is None:
            return
        lang = recipient.preferred_language if recipient.preferred_language in ("ar", "en") else "ar"
        hospital = load_hospital(hub.settings.hospital_file)["hospital"]
        queue_reply(session, conversation, text("portal_new_message", lang, hospital=hospital[f"name_{lang}"],
                                                url=hub.settings.base_url + "/portal/messages"),
                    sender="system", language=lang)
        session.add(JourneyEvent(patient_id=patient_id, kind="portal_notice", reference=str(message_id),
                                 data={"channel": conversation.channel, "to": recipient.id}))
        await session.commit()
    hub.outbox.wakeup.set()
