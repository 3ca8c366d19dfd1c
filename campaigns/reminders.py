"""Appointment reminders the patient answers: "1"/"2", yes/no, «نعم»/«لا», «تأكيد»/«إلغاء».

A reply counts as an answer only when the last message Sila sent in that conversation is the
reminder, so a "yes" meant for the bot's own question is never taken for one. The router calls
`answer` after the consent keywords (STOP still wins) and before the bot, in the transaction
that stores the message: the appointment is confirmed, or cancelled with its slot freed, together
with the message. English "cancel" alone is not offered: carriers and Twilio treat it as an opt-out
from all messages, so the reminder asks for "2".
"""
from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from bot.formatting import format_when
from bot.nlu.arabic import normalize
from bot.outbox import queue_reply
from bot.texts import text
from crm_store import appointments
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    AutomationSend,
    Conversation,
    JourneyEvent,
    Message,
    Practitioner,
    utcnow,
)

CONFIRM_PAYLOAD, CANCEL_PAYLOAD = "/reminder_confirm", "/reminder_cancel"
_CONFIRM = {"1", "yes", "y", "yeah", "yep", "ok", "okay", "confirm", "confirmed", "i confirm", "نعم", "ايوه",
            "ايوا", "اي", "أكيد", "تأكيد", "أؤكد", "اكد", "مؤكد", "موافق", "تمام", CONFIRM_PAYLOAD}
_CANCEL = {"2", "no", "n", "nope", "لا", "إلغاء", "الغاء", "ألغي", "الغيه", "إلغاء الموعد", "لا أستطيع",
           "ما أقدر", "ما اقدر", CANCEL_PAYLOAD}
CONFIRM_WORDS = {normalize(w) for w in _CONFIRM}
CANCEL_WORDS = {normalize(w) for w in _CANCEL}


def buttons(language: str) -> list[dict]:
    return [{"title": text("reminder_button_confirm", language), "payload": CONFIRM_PAYLOAD},
            {"title": text("reminder_button_cancel", language), "payload": CANCEL_PAYLOAD}]


def reading(said: str) -> str | None:
    """"confirm", "cancel" or None for what the patient wrote."""
    if said.strip() in (CONFIRM_PAYLOAD, CANCEL_PAYLOAD):
        return "confirm" if said.strip() == CONFIRM_PAYLOAD else "cancel"
    words = " ".join(re.findall(r"\w+", normalize(said)))
    if words in CONFIRM_WORDS:
        return "confirm"
    if words in CANCEL_WORDS:
        return "cancel"
    return None


class ReminderAnswers:
    """The router's pre-bot handler for answers to reminders."""

    def __init__(self, zone: str):
        self.zone = zone

    def wants(self, said: str) -> bool:
        """Whether the message may answer a reminder; the router stores any other on its fast path."""
        return reading(said) is not None

    async def __call__(self, session: AsyncSession, conversation: Conversation, message: Message) -> list[Message]:
        choice = reading(message.text)
        if choice is None:
            return []
        await session.flush()
        last = await session.scalar(
            select(Message.id).where(Message.conversation_id == conversation.id, Message.direction == "out",
                                     Message.private.is_(False)).order_by(Message.id.desc()).limit(1))
        reminder = last and await session.scalar(select(AutomationSend).where(
            AutomationSend.message_id == last, AutomationSend.appointment_id.is_not(None)))
        if not reminder or reminder.answer is not None:
            return []
        appointment = await session.scalar(
            select(Appointment).options(selectinload(Appointment.slot),
                                        selectinload(Appointment.practitioner).selectinload(Practitioner.department))
            .where(Appointment.id == reminder.appointment_id))
        language = message.language or conversation.language
        when = format_when(appointment.slot.start_at, self.zone, language)
        doctor = appointment.practitioner.name(language)
        message.status = "answered"
        now = utcnow()
        if appointment.status != AppointmentStatus.booked or appointment.slot.start_at <= now:
            reply = text("reminder_too_late", language, when=when)
        elif choice == "confirm":
            reminder.answer, reminder.answered_at = "confirmed", now
            session.add(JourneyEvent(patient_id=appointment.patient_id, kind="appointment_confirmed",
                                     reference=appointment.reference, data={"channel": conversation.channel}))
            reply = text("reminder_confirmed", language, when=when, doctor=doctor)
        else:
            await appointments.cancel(session, appointment, channel=conversation.channel)
            reminder.answer, reminder.answered_at = "cancelled", now
            reply = text("reminder_cancelled", language, when=when, doctor=doctor)
        queued = queue_reply(session, conversation, reply, sender="system", language=language)
        await session.flush()
        return [queued]
