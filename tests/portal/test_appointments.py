"""Appointments in the portal: book, move and cancel with the bot's slot logic, the bot's
confirmations on the patient's phone, and the calendar file."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from crm_store import appointments as appts
from crm_store.models import Appointment, AppointmentStatus, JourneyEvent, Practitioner, Slot, SlotStatus
from tests.portal.conftest import add_patient
from tests.portal.helpers import PortalUser

PHONE, BORN = "+966501234567", date(1985, 3, 14)
SLOT_BUTTON = re.compile(r'name="slot" value="(\d+)"')


async def _choose(client, query: str) -> list[int]:
    page = await (await client.get("/portal/appointments/new?" + query)).text()
    return [int(s) for s in SLOT_BUTTON.findall(page)]


async def _book(user: PortalUser, slot_id: int, move: str | None = None):
    extra = {"move": move} if move else {}
    held = await user.post("/portal/appointments/hold", {"slot": str(slot_id), **extra})
    assert held.status == 302 and "/portal/appointments/confirm?slot=" in held.headers["Location"]
    confirm = await user.client.get(held.headers["Location"])
    assert confirm.status == 200
    return await user.post("/portal/appointments/book", {"slot": str(slot_id), **extra})


async def test_book_move_and_cancel_with_confirmations(client, hub, fake):
    patient = await add_patient(hub, PHONE, BORN, language="en")
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    day = (date.today() + timedelta(days=2)).isoformat()
    slots = await _choose(client, f"department=cardiology&day={day}")
    assert slots, "the demo schedule has cardiology slots every working day"

    booked = await _book(user, slots[0])
    assert booked.status == 302 and "done=booked" in booked.headers["Location"]
    async with hub.sessions() as session:
        appointment = await session.scalar(select(Appointment).options(selectinload(Appointment.slot))
                                           .where(Appointment.patient_id == patient.id))
    assert appointment.slot_id == slots[0] and appointment.source_channel == "portal"
    assert appointment.slot.status == SlotStatus.booked
    listing = await (await client.get(booked.headers["Location"])).text()
    assert appointment.reference in listing and "is booked" in listing
    confirmation = (await fake.wait_for(lambda m: len(m) == 2))[-1]  # after the sign-in code
    assert confirmation.get("To") == PHONE
    body = confirmation.get("Body")
    assert appointment.reference in body and "Your appointment is booked" in body

    # Move: the same appointment, a new slot, the old one free again, the move in its history.
    later = await _choose(client, f"move={appointment.reference}&day={(date.today() + timedelta(days=5)).isoformat()}")
    moved = await _book(user, later[1], move=appointment.reference)
    assert "done=moved" in moved.headers["Location"]
    async with hub.sessions() as session:
        again = await session.get(Appointment, appointment.id)
        old = await session.get(Slot, slots[0])
    assert again.slot_id == later[1] and old.status == SlotStatus.free and len(again.history) == 1
    assert "Your appointment with" in (await fake.wait_for(lambda m: len(m) == 3))[-1].get("Body")

    # Cancel, after a confirmation page.
    page = await client.get(f"/portal/appointments/{appointment.reference}/cancel")
    assert page.status == 200 and "Cancel this appointment?" in await page.text()
    cancelled = await user.post(f"/portal/appointments/{appointment.reference}/cancel")
    assert "done=cancelled" in cancelled.headers["Location"]
    async with hub.sessions() as session:
        final = await session.get(Appointment, appointment.id)
        freed = await session.get(Slot, later[1])
        kinds = (await session.scalars(select(JourneyEvent.kind).where(JourneyEvent.patient_id == patient.id))).all()
    assert final.status == AppointmentStatus.cancelled and freed.status == SlotStatus.free
    assert {"appointment_booked", "appointment_rescheduled", "appointment_cancelled"} <= set(kinds)
    assert "is cancelled" in (await fake.wait_for(lambda m: len(m) == 4))[-1].get("Body")
    past = await (await client.get("/portal/appointments")).text()
    assert "Cancelled" in past and appointment.reference in past


async def test_a_time_someone_else_holds_is_not_booked(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    slots = await _choose(client, f"department=dermatology&day={(date.today() + timedelta(days=3)).isoformat()}")
    async with hub.sessions() as session:  # a patient in the web chat is confirming that time
        assert await appts.hold_slot(session, slots[0], "4242")
        await session.commit()
    held = await user.post("/portal/appointments/hold", {"slot": str(slots[0])})
    assert held.headers["Location"].endswith("taken=1")
    assert "just taken" in await (await client.get(held.headers["Location"])).text()
    # Booking without a hold is refused the same way, and nothing is booked.
    assert "taken=1" in (await user.post("/portal/appointments/book", {"slot": str(slots[0])})).headers["Location"]
    async with hub.sessions() as session:
        assert (await session.scalars(select(Appointment))).all() == []


async def test_no_free_times_on_a_day_offers_the_nearest(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    friday = date.today() + timedelta(days=(4 - date.today().weekday()) % 7 or 7)  # clinics are shut on Fridays
    page = await (await client.get(f"/portal/appointments/new?department=ent&day={friday.isoformat()}")).text()
    assert "There are no free times on" in page and SLOT_BUTTON.search(page)


async def test_the_calendar_file_follows_rfc_5545(client, hub, fake):
    patient = await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    slots = await _choose(client, f"department=cardiology&day={(date.today() + timedelta(days=2)).isoformat()}")
    await _book(user, slots[0])
    async with hub.sessions() as session:
        appointment = await session.scalar(select(Appointment).options(
            selectinload(Appointment.slot),
            selectinload(Appointment.practitioner).selectinload(Practitioner.department),
        ).where(Appointment.patient_id == patient.id))
    response = await client.get(f"/portal/appointments/{appointment.reference}.ics")
    assert response.status == 200 and response.content_type == "text/calendar"
    assert f'filename="{appointment.reference}.ics"' in response.headers["Content-Disposition"]
    raw = (await response.read()).decode()
    assert raw.endswith("\r\n") and "\n" not in raw.replace("\r\n", "")  # CRLF only
    assert all(len(line.encode()) <= 75 for line in raw.split("\r\n"))  # folded
    lines = raw.replace("\r\n ", "").split("\r\n")[:-1]  # unfolded
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-1] == "END:VCALENDAR"
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields.setdefault(name.split(";")[0], value)
    assert fields["VERSION"] == "2.0" and fields["PRODID"]
    assert fields["UID"] == f"{appointment.reference}@sila.example"
    start = datetime.strptime(fields["DTSTART"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    end = datetime.strptime(fields["DTEND"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    assert (start, end) == (appointment.slot.start_at, appointment.slot.end_at)
    assert fields["STATUS"] == "CONFIRMED" and fields["SEQUENCE"] == "0"
    assert "Cardiology" in fields["SUMMARY"] and appointment.practitioner.name_en in fields["SUMMARY"]
    assert "King Fahd Road\\, Al Olaya\\, Riyadh 12211" == fields["LOCATION"]  # commas escaped
    assert re.fullmatch(r"\d{8}T\d{6}Z", fields["DTSTAMP"])

    assert "BEGIN:VALARM" in raw

    await user.post("/portal/preferences/language", {"language": "ar"})
    arabic = (await (await client.get(f"/portal/appointments/{appointment.reference}.ics")).read()).decode()
    assert "SUMMARY;LANGUAGE=ar:أمراض القلب" in arabic.replace("\r\n ", "")


def test_folding_never_splits_an_arabic_letter():
    from portal.ics import fold

    line = "SUMMARY;LANGUAGE=ar:" + "أمراض القلب — د. خالد الحربي " * 4
    folded = fold(line)
    parts = folded.split("\r\n ")
    assert all(len(p.encode()) <= 75 for p in parts) and "".join(parts) == line
