"""Slots and appointments: finding free times, holding, booking, moving and cancelling.

Every change of a slot's state is one conditional UPDATE, so two patients racing for the same
slot can never both get it, on SQLite or PostgreSQL alike.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from crm_store import changes
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    JourneyEvent,
    Practitioner,
    Slot,
    SlotStatus,
    utcnow,
)

HOLD = timedelta(minutes=10)


def _available_to(holder: str, now: datetime):
    """A slot is available to `holder` when free, held by them, or held by someone whose hold lapsed."""
    return or_(
        Slot.status == SlotStatus.free,
        and_(Slot.status == SlotStatus.held, or_(Slot.held_by == holder, Slot.held_until < now)),
    )


async def free_slots(
    session: AsyncSession,
    *,
    practitioner_ids: list[int],
    start: datetime,
    end: datetime,
    limit: int = 3,
    holder: str = "",
) -> list[Slot]:
    now = utcnow()
    rows = await session.scalars(
        select(Slot)
        .options(selectinload(Slot.practitioner))
        .where(
            Slot.practitioner_id.in_(practitioner_ids),
            Slot.start_at >= max(start, now),
            Slot.start_at < end,
            _available_to(holder, now),
        )
        .order_by(Slot.start_at, Slot.practitioner_id)
        .limit(limit)
    )
    return list(rows)


async def hold_slot(session: AsyncSession, slot_id: int, holder: str) -> bool:
    """Hold a slot for `holder` while they confirm; False when someone else has it."""
    now = utcnow()
    result = await session.execute(
        update(Slot)
        .where(Slot.id == slot_id, Slot.start_at > now, _available_to(holder, now))
        .values(status=SlotStatus.held, held_by=holder, held_until=now + HOLD)
    )
    return result.rowcount == 1


async def release_hold(session: AsyncSession, slot_id: int, holder: str) -> None:
    await session.execute(
        update(Slot)
        .where(Slot.id == slot_id, Slot.status == SlotStatus.held, Slot.held_by == holder)
        .values(status=SlotStatus.free, held_by=None, held_until=None)
    )


async def _take(session: AsyncSession, slot_id: int, holder: str) -> bool:
    now = utcnow()
    result = await session.execute(
        update(Slot)
        .where(Slot.id == slot_id, Slot.start_at > now, _available_to(holder, now))
        .values(status=SlotStatus.booked, held_by=None, held_until=None)
    )
    if result.rowcount == 1:
        changes.queue(session, "Slot", slot_id)
    return result.rowcount == 1


async def _free(session: AsyncSession, slot_id: int) -> None:
    await session.execute(
        update(Slot)
        .where(Slot.id == slot_id)
        .values(status=SlotStatus.free, held_by=None, held_until=None)
    )
    changes.queue(session, "Slot", slot_id)


def new_reference() -> str:
    # Unambiguous characters only: patients read this out over the phone.
    alphabet = "ACDEFGHJKMNPQRTUVWXY3479"
    return "SL-" + "".join(secrets.choice(alphabet) for _ in range(6))


async def book(
    session: AsyncSession, *, patient_id: int, slot_id: int, channel: str, holder: str
) -> Appointment | None:
    """Book the slot for the patient; None when the slot is no longer available."""
    if not await _take(session, slot_id, holder):
        return None
    slot = await session.get(Slot, slot_id)
    appointment = Appointment(
        reference=new_reference(),
        patient_id=patient_id,
        practitioner_id=slot.practitioner_id,
        slot_id=slot_id,
        status=AppointmentStatus.booked,
        source_channel=channel,
        history=[],
    )
    session.add(appointment)
    await session.flush()
    session.add(JourneyEvent(patient_id=patient_id, kind="appointment_booked", reference=appointment.reference,
                             data={"slot_start": slot.start_at.isoformat(), "channel": channel}))
    return appointment


async def reschedule(
    session: AsyncSession, appointment: Appointment, *, slot_id: int, channel: str, holder: str
) -> bool:
    """Move the appointment to another slot; the old slot is freed only once the new one is taken."""
    if appointment.status != AppointmentStatus.booked or not await _take(session, slot_id, holder):
        return False
    old = await session.get(Slot, appointment.slot_id)
    new = await session.get(Slot, slot_id)
    await _free(session, old.id)
    appointment.history = [
        *appointment.history,
        {"from": old.start_at.isoformat(), "to": new.start_at.isoformat(),
         "at": utcnow().isoformat(), "channel": channel},
    ]
    appointment.slot_id = new.id
    appointment.practitioner_id = new.practitioner_id
    session.add(JourneyEvent(patient_id=appointment.patient_id, kind="appointment_rescheduled",
                             reference=appointment.reference,
                             data={"from": old.start_at.isoformat(), "to": new.start_at.isoformat(),
                                   "channel": channel}))
    return True


async def cancel(session: AsyncSession, appointment: Appointment, *, channel: str) -> bool:
    if appointment.status != AppointmentStatus.booked:
        return False
    appointment.status = AppointmentStatus.cancelled
    await _free(session, appointment.slot_id)
    session.add(JourneyEvent(patient_id=appointment.patient_id, kind="appointment_cancelled",
                             reference=appointment.reference, data={"channel": channel}))
    return True


async def upcoming(session: AsyncSession, patient_id: int) -> list[Appointment]:
    rows = await session.scalars(
        select(Appointment)
        .join(Slot, Appointment.slot_id == Slot.id)
        .options(selectinload(Appointment.slot),
                 selectinload(Appointment.practitioner).selectinload(Practitioner.department))
        .where(Appointment.patient_id == patient_id,
               Appointment.status == AppointmentStatus.booked,
               Slot.start_at > utcnow())
        .order_by(Slot.start_at)
    )
    return list(rows)
