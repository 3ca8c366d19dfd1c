"""The CRM store on SQLite and PostgreSQL: schema, demo hospital, and slot integrity under races."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from crm_store import appointments as appts
from crm_store.migrate import upgrade
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    ChannelIdentity,
    Conversation,
    Department,
    JourneyEvent,
    Message,
    Patient,
    Practitioner,
    Slot,
    SlotStatus,
)
from crm_store.seed import seed_hospital
from tests.conftest import HOSPITAL


async def _patient(session, name="Test") -> Patient:
    patient = Patient(given_name_en=name, preferred_language="en")
    session.add(patient)
    await session.flush()
    return patient


async def _first_free_slot(session) -> Slot:
    return await session.scalar(
        select(Slot).where(Slot.status == SlotStatus.free, Slot.start_at > datetime.now(timezone.utc))
        .order_by(Slot.start_at, Slot.id).limit(1))


async def test_demo_hospital_is_bilingual_with_four_weeks_of_slots(sessions):
    async with sessions() as session:
        departments = (await session.scalars(select(Department))).all()
        practitioners = (await session.scalars(select(Practitioner))).all()
        first, last = (await session.execute(select(func.min(Slot.start_at), func.max(Slot.start_at)))).one()
    assert len(departments) >= 6 and len(practitioners) >= 12
    for item in [*departments, *practitioners]:
        assert item.name_en and item.name_ar and item.name_ar != item.name_en
        assert any("\u0600" <= ch <= "\u06ff" for ch in item.name_ar)
    assert last - first >= timedelta(days=25)
    assert first.tzinfo is not None


async def test_seeding_again_changes_nothing(sessions, store_url):
    async with sessions() as session:
        before = await session.scalar(select(func.count(Slot.id)))
        result = await seed_hospital(session, HOSPITAL)
        after = await session.scalar(select(func.count(Slot.id)))
    assert result["slots_added"] == 0 and before == after
    await asyncio.to_thread(upgrade, store_url)  # migrating an up-to-date store is a no-op


async def test_ten_patients_racing_for_one_slot_get_one_booking(sessions):
    async with sessions() as session:
        slot = await _first_free_slot(session)
        patients = [await _patient(session, f"P{i}") for i in range(10)]
        await session.commit()

    async def attempt(patient_id: int):
        async with sessions() as session:
            appointment = await appts.book(session, patient_id=patient_id, slot_id=slot.id, channel="webchat",
                                           holder=f"conversation-{patient_id}")
            await session.commit()
            return appointment

    results = await asyncio.gather(*(attempt(p.id) for p in patients))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    async with sessions() as session:
        assert await session.scalar(select(func.count(Appointment.id)).where(Appointment.slot_id == slot.id)) == 1
        assert (await session.get(Slot, slot.id)).status == SlotStatus.booked
        # The nine others can still be offered other times.
        others = await appts.free_slots(session, practitioner_ids=[slot.practitioner_id], start=slot.start_at,
                                        end=slot.start_at + timedelta(days=7))
    assert others and slot.id not in {s.id for s in others}


async def test_a_hold_keeps_a_slot_for_one_patient_until_it_lapses(sessions):
    async with sessions() as session:
        slot = await _first_free_slot(session)
        assert await appts.hold_slot(session, slot.id, "alice")
        assert not await appts.hold_slot(session, slot.id, "bob")
        assert await appts.hold_slot(session, slot.id, "alice")  # holding again refreshes
        await session.commit()
        offered_to_bob = await appts.free_slots(session, practitioner_ids=[slot.practitioner_id],
                                                start=slot.start_at, end=slot.end_at, holder="bob")
        assert offered_to_bob == []
        slot = await session.get(Slot, slot.id)
        slot.held_until = datetime.now(timezone.utc) - timedelta(seconds=1)
        await session.commit()
        assert await appts.hold_slot(session, slot.id, "bob")


async def test_reschedule_moves_and_records_history_and_cancel_frees(sessions):
    async with sessions() as session:
        patient = await _patient(session)
        first, second = (await session.scalars(
            select(Slot).where(Slot.status == SlotStatus.free, Slot.start_at > datetime.now(timezone.utc))
            .order_by(Slot.start_at, Slot.id).limit(2))).all()
        appointment = await appts.book(session, patient_id=patient.id, slot_id=first.id, channel="sms", holder="c1")
        await session.commit()
        assert await appts.reschedule(session, appointment, slot_id=second.id, channel="webchat", holder="c1")
        await session.commit()
        assert (await session.get(Slot, first.id)).status == SlotStatus.free
        assert (await session.get(Slot, second.id)).status == SlotStatus.booked
        assert appointment.history[0]["from"] == first.start_at.isoformat()
        assert appointment.history[0]["to"] == second.start_at.isoformat()
        assert [a.reference for a in await appts.upcoming(session, patient.id)] == [appointment.reference]
        assert await appts.cancel(session, appointment, channel="webchat")
        await session.commit()
        assert appointment.status == AppointmentStatus.cancelled
        assert (await session.get(Slot, second.id)).status == SlotStatus.free
        assert await appts.upcoming(session, patient.id) == []
        kinds = (await session.scalars(select(JourneyEvent.kind).where(JourneyEvent.patient_id == patient.id)
                                       .order_by(JourneyEvent.id))).all()
    assert kinds == ["appointment_booked", "appointment_rescheduled", "appointment_cancelled"]


async def test_a_provider_message_id_is_stored_once_per_channel(sessions):
    async with sessions() as session:
        patient = await _patient(session)
        identity = ChannelIdentity(patient_id=patient.id, channel="sms", address="+966500000001")
        session.add(identity)
        await session.flush()
        conversation = Conversation(patient_id=patient.id, identity_id=identity.id, channel="sms")
        session.add(conversation)
        await session.flush()
        for channel in ("sms", "whatsapp"):  # the same id on another channel is another message
            session.add(Message(conversation_id=conversation.id, channel=channel, direction="in",
                                sender="patient", text="hi", provider_message_id="SM1", status="received"))
        await session.commit()
        session.add(Message(conversation_id=conversation.id, channel="sms", direction="in", sender="patient",
                            text="hi", provider_message_id="SM1", status="received"))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_times_come_back_as_utc_on_every_backend(sessions):
    riyadh = timezone(timedelta(hours=3))
    async with sessions() as session:
        patient = await _patient(session)
        moment = datetime(2026, 12, 1, 10, 0, tzinfo=riyadh)
        session.add(JourneyEvent(patient_id=patient.id, kind="test", occurred_at=moment))
        await session.commit()
    async with sessions() as session:
        stored = await session.scalar(select(JourneyEvent.occurred_at).where(JourneyEvent.kind == "test"))
    assert stored == moment and stored.utcoffset() == timedelta(0)
