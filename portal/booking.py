"""Booking, moving and cancelling from the portal, with the bot's slot logic
(crm_store/appointments.py): a chosen time is held for the patient while they confirm (10 minutes,
by portal session), then taken by one conditional UPDATE, so a time the bot or another patient
takes meanwhile is never booked twice."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from crm_store import appointments as appts
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    Department,
    Practitioner,
    Slot,
    SlotStatus,
    utcnow,
)

SEARCH_DAYS = 28  # the demo schedule keeps four weeks of slots ahead
PER_DAY = 24


@dataclass
class Offer:
    day: date
    slots: list[Slot]
    requested: bool  # False: nothing free on the day asked for, these are the nearest


async def practitioner_ids(session: AsyncSession, department: str | None, practitioner: str | None) -> list[int]:
    query = select(Practitioner.id).join(Department).where(Practitioner.active)
    if practitioner:
        query = query.where(Practitioner.code == practitioner)
    if department:
        query = query.where(Department.code == department)
    if not (department or practitioner):
        return []
    return list((await session.scalars(query)).all())


async def offer(session: AsyncSession, ids: list[int], day: date, zone: str, holder: str) -> Offer | None:
    """Free times on `day` (hospital time), else on the nearest later day that has any."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(), tz)
    found = await appts.free_slots(session, practitioner_ids=ids, start=start, end=start + timedelta(days=1),
                                   limit=PER_DAY, holder=holder)
    if found:
        return Offer(day, found, True)
    first = await appts.free_slots(session, practitioner_ids=ids, start=start + timedelta(days=1),
                                   end=start + timedelta(days=SEARCH_DAYS), limit=1, holder=holder)
    if not first:
        return None
    nearest = first[0].start_at.astimezone(tz).date()
    begin = datetime.combine(nearest, time(), tz)
    return Offer(nearest, await appts.free_slots(session, practitioner_ids=ids, start=begin,
                                                 end=begin + timedelta(days=1), limit=PER_DAY, holder=holder), False)


async def hold(session: AsyncSession, slot_id: int, holder: str) -> bool:
    """Hold one time for this portal session, letting go of any other it held."""
    await session.execute(update(Slot).where(Slot.held_by == holder, Slot.status == SlotStatus.held,
                                             Slot.id != slot_id)
                          .values(status=SlotStatus.free, held_by=None, held_until=None))
    return await appts.hold_slot(session, slot_id, holder)


async def held_slot(session: AsyncSession, slot_id: int, holder: str) -> Slot | None:
    """The slot if this session holds it now (with practitioner and department loaded)."""
    return await session.scalar(select(Slot).options(
        selectinload(Slot.practitioner).selectinload(Practitioner.department)).where(
        Slot.id == slot_id, Slot.status == SlotStatus.held, Slot.held_by == holder, Slot.held_until > utcnow()))


async def appointment_of(session: AsyncSession, patient_id: int, reference: str) -> Appointment | None:
    """One of this patient's appointments by its reference (anyone else's is simply not found)."""
    return await session.scalar(select(Appointment).options(
        selectinload(Appointment.slot), selectinload(Appointment.practitioner).selectinload(Practitioner.department))
        .where(Appointment.reference == reference, Appointment.patient_id == patient_id)
        .execution_options(populate_existing=True))


async def of_patient(session: AsyncSession, patient_id: int) -> tuple[list[Appointment], list[Appointment]]:
    """(upcoming, past): upcoming are booked and ahead, soonest first; past are the rest, newest first."""
    rows = (await session.scalars(select(Appointment).join(Slot, Slot.id == Appointment.slot_id).options(
        selectinload(Appointment.slot), selectinload(Appointment.practitioner).selectinload(Practitioner.department))
        .where(Appointment.patient_id == patient_id).order_by(Slot.start_at))).all()
    now = utcnow()
    upcoming = [a for a in rows if a.status == AppointmentStatus.booked and a.slot.start_at > now]
    past = [a for a in rows if a not in upcoming]
    return upcoming, list(reversed(past))


async def book_or_move(session: AsyncSession, patient_id: int, slot_id: int, holder: str,
                       move: Appointment | None) -> Appointment | None:
    """Book the held time, or move `move` to it; None when the time is gone (nothing changed)."""
    if move is not None:
        if not await appts.reschedule(session, move, slot_id=slot_id, channel="portal", holder=holder):
            return None
        return move
    return await appts.book(session, patient_id=patient_id, slot_id=slot_id, channel="portal", holder=holder)
