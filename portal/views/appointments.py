"""Appointments: upcoming and past; book, move and cancel with the bot's slot logic and
confirmations; add to calendar."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from bot.formatting import format_day, format_time, format_when
from crm_store import appointments as appts
from crm_store.content import load_hospital
from crm_store.models import Department, Practitioner
from portal import booking, ics, notify
from portal.views.base import VISIT, hub, not_found, patient_page, render

REFERENCE = r"{ref:SL-[A-Z0-9]+}"


def _when(moment, request) -> str:
    return format_when(moment, hub(request).settings.timezone, request[VISIT].language)


def appointment_row(appointment, request) -> dict:
    lang = request[VISIT].language
    return {"reference": appointment.reference, "status": appointment.status.value,
            "when": _when(appointment.slot.start_at, request),
            "doctor": appointment.practitioner.name(lang),
            "department": appointment.practitioner.department.name(lang)}


@patient_page
async def appointments_page(request: web.Request) -> web.Response:
    visit = request[VISIT]
    async with hub(request).sessions() as session:
        upcoming, past = await booking.of_patient(session, visit.acting_id)
    return render(request, "portal_appointments.html", upcoming=[appointment_row(a, request) for a in upcoming],
                  past=[appointment_row(a, request) for a in past], done=request.query.get("done"),
                  done_ref=request.query.get("ref"))


def _day(raw: str | None, zone: str) -> date:
    today = datetime.now(ZoneInfo(zone)).date()
    try:
        day = date.fromisoformat(raw) if raw else today
    except ValueError:
        day = today
    return max(day, today)


async def _moving(session, request, reference: str | None):
    """The appointment being moved (one of the patient's, still booked), or None."""
    if not reference:
        return None
    appointment = await booking.appointment_of(session, request[VISIT].acting_id, reference)
    if appointment is None or appointment.status.value != "booked":
        raise not_found(request)
    return appointment


@patient_page
async def choose(request: web.Request) -> web.Response:
    """Department or doctor, then a day, then one of the free times."""
    visit, h = request[VISIT], hub(request)
    lang, zone = visit.language, h.settings.timezone
    department = request.query.get("department") or None
    practitioner = request.query.get("practitioner") or None
    day = _day(request.query.get("day"), zone)
    async with h.sessions() as session:
        moving = await _moving(session, request, request.query.get("move"))
        if moving is not None and not (department or practitioner):
            practitioner = moving.practitioner.code
        departments = (await session.scalars(select(Department).order_by(Department.id))).all()
        doctors = (await session.scalars(select(Practitioner).options(selectinload(Practitioner.department))
                                         .where(Practitioner.active).order_by(Practitioner.id))).all()
        found = None
        if ids := await booking.practitioner_ids(session, department, practitioner):
            found = await booking.offer(session, ids, day, zone, visit.holder)
    slots = [{"id": s.id, "time": format_time(s.start_at, zone, lang), "doctor": s.practitioner.name(lang)}
             for s in (found.slots if found else [])]
    return render(request, "portal_choose.html", departments=departments, doctors=doctors, department=department,
                  practitioner=practitioner, day=day.isoformat(), min_day=_day(None, zone).isoformat(),
                  searched=bool(department or practitioner), slots=slots,
                  offer_day=format_day(found.day, lang) if found else None,
                  requested_day=format_day(day, lang), nearest=bool(found and not found.requested),
                  moving=appointment_row(moving, request) if moving else None, taken=request.query.get("taken") == "1")


@patient_page
async def hold(request: web.Request) -> web.StreamResponse:
    visit = request[VISIT]
    form = await request.post()
    move = str(form.get("move", "")) or None
    try:
        slot_id = int(form.get("slot", ""))
    except ValueError:
        raise web.HTTPBadRequest(text="choose a time") from None
    async with hub(request).sessions() as session:
        await _moving(session, request, move)
        held = await booking.hold(session, slot_id, visit.holder)
        await session.commit()
    suffix = f"&move={move}" if move else ""
    if not held:
        raise web.HTTPFound(f"/portal/appointments/new?taken=1{suffix}")
    raise web.HTTPFound(f"/portal/appointments/confirm?slot={slot_id}{suffix}")


@patient_page
async def confirm_page(request: web.Request) -> web.Response:
    visit = request[VISIT]
    lang = visit.language
    try:
        slot_id = int(request.query.get("slot", ""))
    except ValueError:
        raise not_found(request) from None
    async with hub(request).sessions() as session:
        moving = await _moving(session, request, request.query.get("move"))
        slot = await booking.held_slot(session, slot_id, visit.holder)
    if slot is None:  # not held for this patient (or the hold lapsed): choose again
        raise web.HTTPFound("/portal/appointments/new?taken=1" + (f"&move={moving.reference}" if moving else ""))
    return render(request, "portal_confirm.html", slot_id=slot.id, when=_when(slot.start_at, request),
                  doctor=slot.practitioner.name(lang), department=slot.practitioner.department.name(lang),
                  moving=appointment_row(moving, request) if moving else None)


@patient_page
async def book(request: web.Request) -> web.StreamResponse:
    visit, h = request[VISIT], hub(request)
    form = await request.post()
    try:
        slot_id = int(form.get("slot", ""))
    except ValueError:
        raise web.HTTPBadRequest(text="choose a time") from None
    async with h.sessions() as session:
        moving = await _moving(session, request, str(form.get("move", "")) or None)
        done = await booking.book_or_move(session, visit.acting_id, slot_id, visit.holder, moving)
        if done is None:
            await session.rollback()
            raise web.HTTPFound("/portal/appointments/new?taken=1" + (f"&move={moving.reference}" if moving else ""))
        await session.commit()
        appointment = await booking.appointment_of(session, visit.acting_id, done.reference)
        confirmation = await notify.appointment_confirmation(
            session, h, appointment, "rescheduled" if moving else "booked", visit.patient_id)
        await session.commit()
    if confirmation is not None:
        await h.outbox.deliver([confirmation.id])
    raise web.HTTPFound(f"/portal/appointments?done={'moved' if moving else 'booked'}&ref={appointment.reference}")


@patient_page
async def cancel_page(request: web.Request) -> web.Response:
    async with hub(request).sessions() as session:
        appointment = await booking.appointment_of(session, request[VISIT].acting_id, request.match_info["ref"])
    if appointment is None or appointment.status.value != "booked":
        raise not_found(request)
    return render(request, "portal_cancel.html", appointment=appointment_row(appointment, request))


@patient_page
async def cancel(request: web.Request) -> web.StreamResponse:
    visit, h = request[VISIT], hub(request)
    async with h.sessions() as session:
        appointment = await booking.appointment_of(session, visit.acting_id, request.match_info["ref"])
        if appointment is None:
            raise not_found(request)
        if not await appts.cancel(session, appointment, channel="portal"):
            raise web.HTTPFound("/portal/appointments")
        await session.commit()
        confirmation = await notify.appointment_confirmation(session, h, appointment, "cancelled", visit.patient_id)
        await session.commit()
    if confirmation is not None:
        await h.outbox.deliver([confirmation.id])
    raise web.HTTPFound(f"/portal/appointments?done=cancelled&ref={appointment.reference}")


@patient_page
async def calendar_file(request: web.Request) -> web.Response:
    visit, h = request[VISIT], hub(request)
    async with h.sessions() as session:
        appointment = await booking.appointment_of(session, visit.acting_id, request.match_info["ref"])
    if appointment is None:
        raise not_found(request)
    hospital = load_hospital(h.settings.hospital_file)["hospital"]
    body = ics.calendar(appointment, hospital, visit.language, h.settings.base_url)
    return web.Response(body=body.encode(), content_type="text/calendar", charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="{appointment.reference}.ics"', "Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/portal/appointments", appointments_page),
        web.get("/portal/appointments/new", choose),
        web.post("/portal/appointments/hold", hold),
        web.get("/portal/appointments/confirm", confirm_page),
        web.post("/portal/appointments/book", book),
        web.get(f"/portal/appointments/{REFERENCE}/cancel", cancel_page),
        web.post(f"/portal/appointments/{REFERENCE}/cancel", cancel),
        web.get(f"/portal/appointments/{REFERENCE}.ics", calendar_file),
    ])
