"""Automations: appointment reminders the patient answers (confirm, or cancel and free the slot),
no-show and after-visit follow-ups, birthday greetings and a condition's education drip."""
from __future__ import annotations

import re

from datetime import date, datetime, timedelta, timezone

from sqlalchemy import select, update

from crm_store import appointments
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    AutomationRule,
    AutomationSend,
    FhirResource,
    JourneyEvent,
    Message,
    Slot,
    SlotStatus,
    utcnow,
)
from tests.campaigns.conftest import bodies_to, eventually, patient_says
from tests.campaigns.people import add_patient, slot_at


async def book(hub, phone: str, start: datetime, *, language: str = "ar", booked_days_ago: float = 3,
               marketing: bool | None = None):
    async with hub.sessions() as session:
        patient = await add_patient(session, phone, language=language, first="Layla", first_ar="ليلى",
                                    marketing=marketing)
        slot = await slot_at(session, start)
        if start > utcnow():
            appointment = await appointments.book(session, patient_id=patient.id, slot_id=slot.id, channel="sms",
                                                  holder="front-desk")
        else:  # a visit in the past, as the EHR import or the front desk recorded it
            slot.status = SlotStatus.booked
            appointment = Appointment(reference=appointments.new_reference(), patient_id=patient.id,
                                      practitioner_id=slot.practitioner_id, slot_id=slot.id, source_channel="desk",
                                      history=[])
            session.add(appointment)
        appointment.created_at = utcnow() - timedelta(days=booked_days_ago)
        await session.commit()
    return patient, appointment


async def enable(hub, key: str, **config) -> None:
    async with hub.sessions() as session:
        rule = await session.scalar(select(AutomationRule).where(AutomationRule.key == key))
        rule.enabled = True
        rule.config = {**rule.config, **config}
        rule.channels = ["sms"]
        await session.commit()


async def appointment_row(hub, appointment_id: int) -> Appointment:
    async with hub.sessions() as session:
        return await session.get(Appointment, appointment_id)


async def answered(hub, appointment_id: int) -> AutomationSend:
    async def check():
        async with hub.sessions() as session:
            return await session.scalar(select(AutomationSend).where(
                AutomationSend.appointment_id == appointment_id, AutomationSend.answer.is_not(None)))

    return await eventually(check)


async def test_reminder_answered_takid_confirms_the_appointment(client, hub, runtime, fake):
    start = utcnow() + timedelta(hours=30)
    _, appointment = await book(hub, "+966501100001", start)
    runtime.clock = lambda: start - timedelta(hours=23)
    assert await runtime.automations.run_once() == 1
    assert await runtime.automations.run_once() == 0  # one reminder per appointment and offset
    [reminder] = await fake.wait_for(lambda m: len(m) == 1)
    body = reminder.get("Body")
    assert body.startswith("مرحبًا ليلى، نذكّرك بموعدك مع د. خالد الحربي (قسم القلب) يوم ")
    assert re.search(r"يوم \w+ [٠-٩]+ \w+، [٠-٩]+:[٠-٩]{2} (صباحًا|مساءً)، رقم الحجز", body)  # Arabic-Indic digits
    assert body.endswith("1. تأكيد الموعد\n2. إلغاء الموعد")

    await patient_says(client, "+966501100001", "تأكيد")
    send = await answered(hub, appointment.id)
    assert send.answer == "confirmed"
    reply = await fake.wait_for(lambda m: len(m) == 2)
    assert reply[1].get("Body").startswith("شكرًا لك، تم تأكيد موعدك مع د. خالد الحربي")
    assert (await appointment_row(hub, appointment.id)).status == AppointmentStatus.booked
    async with hub.sessions() as session:
        kinds = (await session.scalars(select(JourneyEvent.kind).where(
            JourneyEvent.reference == appointment.reference))).all()
    assert "appointment_confirmed" in kinds

    # The 2-hour reminder is not sent to a patient who already confirmed; a later "2" is not an answer.
    runtime.clock = lambda: start - timedelta(hours=1, minutes=30)
    assert await runtime.automations.run_once() == 0
    await patient_says(client, "+966501100001", "2")
    assert (await appointment_row(hub, appointment.id)).status == AppointmentStatus.booked


async def test_reminder_answered_2_cancels_and_frees_the_slot(client, hub, runtime, fake):
    start = utcnow() + timedelta(hours=30)
    _, appointment = await book(hub, "+966501100002", start, language="en")
    runtime.clock = lambda: start - timedelta(hours=23)
    await runtime.automations.run_once()
    [reminder] = await fake.wait_for(lambda m: len(m) == 1)
    assert reminder.get("Body").endswith("Will you come?\n\n1. Confirm\n2. Cancel the appointment")
    await patient_says(client, "+966501100002", "2")
    assert (await answered(hub, appointment.id)).answer == "cancelled"
    cancelled = await appointment_row(hub, appointment.id)
    assert cancelled.status == AppointmentStatus.cancelled
    async with hub.sessions() as session:
        assert (await session.get(Slot, cancelled.slot_id)).status == SlotStatus.free
    reply = await fake.wait_for(lambda m: len(m) == 2)
    assert "is cancelled and the time is free" in reply[1].get("Body")


async def test_each_way_of_answering(client, hub, runtime, fake):
    answers = {"1": "confirmed", "yes": "confirmed", "نعم": "confirmed", "١": "confirmed", "أكيد": "confirmed",
               "no": "cancelled", "لا": "cancelled", "إلغاء": "cancelled", "٢": "cancelled"}
    start = utcnow() + timedelta(hours=30)
    booked = {}
    for i, said in enumerate(answers):
        booked[said] = await book(hub, f"+9665011003{i:02d}", start + timedelta(minutes=i))
    runtime.clock = lambda: start - timedelta(hours=23)
    assert await runtime.automations.run_once() == len(answers)
    await fake.wait_for(lambda m: len(m) == len(answers))
    for i, said in enumerate(answers):
        await patient_says(client, f"+9665011003{i:02d}", said)
    for said, (_, appointment) in booked.items():
        assert (await answered(hub, appointment.id)).answer == answers[said], said


async def test_reminder_timing(client, hub, runtime, fake):
    start = utcnow() + timedelta(hours=30)
    _, late_booker = await book(hub, "+966501100401", start)
    _, early_booker = await book(hub, "+966501100402", start + timedelta(minutes=20))
    async with hub.sessions() as session:  # booked only 20 hours before the visit
        await session.execute(update(Appointment).where(Appointment.id == late_booker.id).values(
            created_at=start - timedelta(hours=20)))
        await session.commit()
    # 19 hours before: the 24-hour reminder, but not for the patient who booked inside those 24 hours.
    runtime.clock = lambda: start - timedelta(hours=19)
    assert await runtime.automations.run_once() == 1
    await fake.wait_for(lambda m: len(m) == 1)
    assert len(bodies_to(fake, "+966501100402")) == 1
    # Ninety minutes before: the 2-hour reminder for both.
    runtime.clock = lambda: start - timedelta(minutes=90)
    assert await runtime.automations.run_once() == 2
    await fake.wait_for(lambda m: len(m) == 3)
    async with hub.sessions() as session:
        keys = (await session.scalars(select(AutomationSend.key).order_by(AutomationSend.id))).all()
    assert [k.rsplit(":", 1)[1] for k in keys] == ["24h", "2h", "2h"]
    # After a downtime that swallowed both windows' starts, only the nearest reminder goes out.
    _, downtime = await book(hub, "+966501100404", start + timedelta(minutes=10))
    assert await runtime.automations.run_once() == 1
    async with hub.sessions() as session:
        keys = (await session.scalars(select(AutomationSend.key).where(
            AutomationSend.appointment_id == downtime.id))).all()
    assert [k.rsplit(":", 1)[1] for k in keys] == ["2h"]
    # A reminder that the quiet hours would delay past the visit is dropped, not sent late.
    runtime.policy.quiet_start, runtime.policy.quiet_end = 21, 8
    early = datetime.combine(date.today() + timedelta(days=2), datetime.min.time(), timezone.utc) + timedelta(hours=4)
    _, dawn = await book(hub, "+966501100403", early)  # 07:00 in Riyadh
    runtime.clock = lambda: early - timedelta(hours=2)  # 05:00 in Riyadh
    assert await runtime.automations.run_once() == 0
    async with hub.sessions() as session:
        send = await session.scalar(select(AutomationSend).where(AutomationSend.appointment_id == dawn.id))
    assert (send.status, send.reason) == ("skipped", "too_late")


async def test_no_show_and_after_visit_follow_ups(client, hub, runtime, fake):
    await enable(hub, "noshow_followup", delay_hours=2)
    await enable(hub, "post_visit", delay_hours=3)
    visit = utcnow() - timedelta(hours=5)
    _, missed = await book(hub, "+966501100501", visit, language="en")
    _, seen = await book(hub, "+966501100502", visit + timedelta(minutes=20), language="en")
    async with hub.sessions() as session:
        await session.execute(update(Appointment).where(Appointment.id == missed.id).values(
            status=AppointmentStatus.noshow))
        await session.execute(update(Appointment).where(Appointment.id == seen.id).values(
            status=AppointmentStatus.fulfilled))
        await session.commit()
    assert await runtime.automations.run_once() == 2
    assert await runtime.automations.run_once() == 0
    await fake.wait_for(lambda m: len(m) == 2)
    assert bodies_to(fake, "+966501100501")[0].startswith("Hello Layla, we missed you at your appointment")
    assert bodies_to(fake, "+966501100502")[0].startswith("Thank you for visiting Al Noor Specialist Hospital")


async def test_birthday_greeting_once_a_year_and_only_with_marketing_consent(client, hub, runtime, fake):
    await enable(hub, "birthday")
    async with hub.sessions() as session:
        await add_patient(session, "+966501100601", language="en", first="Sami", birth_date=date(1990, 2, 28))
        await add_patient(session, "+966501100602", language="en", first="Leap", birth_date=date(2000, 2, 29))
        await add_patient(session, "+966501100603", language="en", birth_date=date(1985, 2, 28), marketing=None)
        await add_patient(session, "+966501100604", language="en", birth_date=date(1985, 3, 1))
        await session.commit()
    runtime.clock = lambda: datetime(2027, 2, 28, 6, 0, tzinfo=timezone.utc)  # 09:00 in Riyadh: too early
    assert await runtime.automations.run_once() == 0
    runtime.clock = lambda: datetime(2027, 2, 28, 8, 0, tzinfo=timezone.utc)  # 11:00
    assert await runtime.automations.run_once() == 2
    assert await runtime.automations.run_once() == 0
    await fake.wait_for(lambda m: len(m) == 2)
    assert bodies_to(fake, "+966501100602") == ["Happy birthday, Leap! Everyone at Al Noor Specialist Hospital "
                                                "wishes you a healthy year."]
    assert bodies_to(fake, "+966501100603") == [] and bodies_to(fake, "+966501100604") == []


async def test_condition_drip_sends_each_step_when_due(client, hub, runtime, fake):
    await enable(hub, "diabetes_education")
    now = utcnow()
    async with hub.sessions() as session:
        diabetic = await add_patient(session, "+966501100701", language="en", first="Nadia")
        old_case = await add_patient(session, "+966501100702", language="en")
        for patient, recorded in ((diabetic, now - timedelta(days=3)), (old_case, now - timedelta(days=400))):
            session.add(FhirResource(resource_type="Patient", resource_id=f"ehr-{patient.id}", crm_id=patient.id,
                                     patient_ref=f"Patient/ehr-{patient.id}",
                                     content={"resourceType": "Patient", "id": f"ehr-{patient.id}"}))
            session.add(FhirResource(
                resource_type="Condition", resource_id=f"cond-{patient.id}", patient_ref=f"Patient/ehr-{patient.id}",
                date=recorded, content={"resourceType": "Condition", "id": f"cond-{patient.id}",
                                        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                                        "subject": {"reference": f"Patient/ehr-{patient.id}"}}))
        await session.commit()
    runtime.clock = lambda: now
    assert await runtime.automations.run_once() == 1
    runtime.clock = lambda: now + timedelta(days=6)
    assert await runtime.automations.run_once() == 0
    runtime.clock = lambda: now + timedelta(days=7, minutes=1)
    assert await runtime.automations.run_once() == 1
    runtime.clock = lambda: now + timedelta(days=30)
    assert await runtime.automations.run_once() == 1
    assert await runtime.automations.run_once() == 0
    sent = await fake.wait_for(lambda m: len(m) == 3)
    assert [m.get("Body").split(",")[0] for m in sent] == ["Nadia"] * 3
    assert "blood sugar" in sent[0].get("Body") and "whole grains" in sent[1].get("Body") and \
        "eye doctor" in sent[2].get("Body")
    assert bodies_to(fake, "+966501100702") == []
    async with hub.sessions() as session:
        assert not await session.scalar(select(Message.id).where(Message.status == "queued"))
