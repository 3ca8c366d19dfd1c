"""Booking, rescheduling and cancelling as Rasa forms: each asks, offers real free slots, holds the
chosen one, and changes nothing until the patient confirms."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dateparser
from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, SlotSet
from rasa_sdk.forms import FormValidationAction
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from actions import common
from actions.common import choice_index, language, say
from bot.formatting import format_day, format_time, format_when
from bot.nlu.arabic import normalize
from bot.nlu.timeparse import extract_times
from bot.texts import text
from crm_store import appointments as appts
from crm_store.models import Appointment, Department, Patient, Practitioner, Slot

SEARCH_DAYS = 28
ANOTHER_DAY = {"another day", "other day", "different day", "يوم اخر", "يوم ثاني", "غير يوم", "another-day"}


def _zone() -> ZoneInfo:
    return ZoneInfo(common.settings().timezone)


def _form(tracker: Tracker) -> str | None:
    return (tracker.active_loop or {}).get("name")


STOP_WORDS = {"no", "stop", "nevermind", "never", "forget", "quit", "cancel", "nope", "لا", "لأ", "خلاص", "بلاش",
              "وقف", "توقف", "الغ", "الغي", "انس", "مش", "مابي", "مابغى", "la", "khalas"}


def _stop_requested(tracker: Tracker) -> bool:
    """"No, stop" in the middle of a flow; a name the classifier happens to call `deny` is not."""
    intent, confidence = common.latest_intent(tracker)
    said = set(common.words((tracker.latest_message or {}).get("text") or "").split())
    return intent == "deny" and confidence >= 0.5 and bool(said & {normalize(w) for w in STOP_WORDS})


async def _practitioner_ids(session, tracker: Tracker) -> list[int]:
    if code := tracker.get_slot("practitioner"):
        return list(await session.scalars(select(Practitioner.id).where(Practitioner.code == code)))
    if code := tracker.get_slot("department"):
        return list(await session.scalars(
            select(Practitioner.id).join(Department).where(Department.code == code, Practitioner.active)))
    return []


async def _who(session, tracker: Tracker, lang: str) -> str:
    if code := tracker.get_slot("practitioner"):
        return (await session.scalar(select(Practitioner).where(Practitioner.code == code))).name(lang)
    dept = await session.scalar(select(Department).where(Department.code == tracker.get_slot("department")))
    return dept.name(lang) if dept else ""


async def match_directory(session, raw: str) -> tuple[str | None, str | None]:
    """(department code, practitioner code) named in free text, for answers the NLU did not tag."""
    haystack = common.words(raw)
    for prac in (await session.scalars(select(Practitioner).options(selectinload(Practitioner.department))
                                       .where(Practitioner.active))).all():
        names = [prac.code, prac.name_en, prac.name_ar, *prac.aliases]
        if any(common.words(n).strip() and common.words(n) in haystack for n in names):
            return prac.department.code, prac.code
    for dept in (await session.scalars(select(Department))).all():
        if any(common.words(n).strip() and common.words(n) in haystack for n in [dept.code, dept.name_en, dept.name_ar, *dept.aliases]):
            return dept.code, None
    return None, None


def read_day(tracker: Tracker, raw: str) -> str | None:
    """The requested day (and hour, when given) as ISO text, from the NLU's time entity, a
    button's ISO payload, or the patient's own words."""
    for entity in common.entity_values(tracker, "time"):
        return _iso_from_value(entity.get("value"), (entity.get("additional_info") or {}).get("grain"))
    raw = raw.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?([+-]\d{2}:\d{2})?)?", raw):
        return raw[:16]
    matches = extract_times(raw, datetime.now(_zone()), common.settings().timezone)
    return _iso_from_value(matches[0].value, matches[0].grain) if matches else None


def _iso_from_value(value: Any, grain: str | None) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(_zone())
    return moment.date().isoformat() if grain in (None, "day", "week", "month") else moment.strftime("%Y-%m-%dT%H:%M")


def _day_window(day_iso: str) -> tuple[datetime, datetime, bool]:
    """Start and end of the requested day in the hospital zone, and whether an hour was asked for."""
    zone = _zone()
    if "T" in day_iso:
        moment = datetime.fromisoformat(day_iso).replace(tzinfo=zone)
        return moment, datetime.combine(moment.date() + timedelta(days=1), time(), zone), True
    day = date.fromisoformat(day_iso)
    return datetime.combine(day, time(), zone), datetime.combine(day + timedelta(days=1), time(), zone), False


async def _offers(session, tracker: Tracker) -> tuple[list[Slot], bool]:
    """Up to three free slots on the requested day (from the requested hour), else on the nearest
    day that has any; the flag says whether they are on the requested day."""
    ids = await _practitioner_ids(session, tracker)
    holder = str(common.conversation_id(tracker))
    start, end, _ = _day_window(tracker.get_slot("appointment_day"))
    found = await appts.free_slots(session, practitioner_ids=ids, start=start, end=end, holder=holder)
    if found:
        return found, True
    first = await appts.free_slots(session, practitioner_ids=ids, start=end,
                                   end=end + timedelta(days=SEARCH_DAYS), limit=1, holder=holder)
    if not first:
        return [], False
    day_start = datetime.combine(first[0].start_at.astimezone(_zone()).date(), time(), _zone())
    return await appts.free_slots(session, practitioner_ids=ids, start=day_start,
                                  end=day_start + timedelta(days=1), holder=holder), False


class FlowValidation(FormValidationAction, ABC):
    """Validation shared by the three forms: each slot is read from the patient's own words."""

    @abstractmethod
    def name(self) -> str: ...

    async def required_slots(self, domain_slots, dispatcher, tracker, domain) -> list[str]:
        if tracker.get_slot("flow_stopped"):
            return []
        return list(domain_slots)

    def _stop(self, slot: str) -> dict[str, Any]:
        return {slot: None, "flow_stopped": True}

    async def validate_appointment_day(self, value, dispatcher, tracker, domain) -> dict[str, Any]:
        if _stop_requested(tracker):
            return self._stop("appointment_day")
        day = read_day(tracker, str(value or ""))
        if day is None:
            say(dispatcher, tracker, "unknown_day")
            return {"appointment_day": None}
        if date.fromisoformat(day[:10]) < datetime.now(_zone()).date():
            say(dispatcher, tracker, "past_day")
            return {"appointment_day": None}
        return {"appointment_day": day, "offered": None, "slot_choice": None}

    async def validate_slot_choice(self, value, dispatcher, tracker, domain) -> dict[str, Any]:
        if _stop_requested(tracker):
            return self._stop("slot_choice")
        raw = str(value or "")
        offered = tracker.get_slot("offered") or []
        if raw.strip().lower() in {normalize(w) for w in ANOTHER_DAY} | ANOTHER_DAY \
                or normalize(raw).strip() in {normalize(w) for w in ANOTHER_DAY}:
            return {"slot_choice": None, "appointment_day": None, "offered": None}
        index = choice_index(raw, len(offered)) or self._by_time(tracker, raw, offered)
        if index is None:
            say(dispatcher, tracker, "unknown_choice")
            return {"slot_choice": None}
        slot_id = offered[index - 1]["id"]
        holder = str(common.conversation_id(tracker))
        async with common.sessions()() as session:
            previous = tracker.get_slot("held_slot")
            if previous and previous != slot_id:
                await appts.release_hold(session, previous, holder)
            held = await appts.hold_slot(session, slot_id, holder)
            await session.commit()
        if not held:
            say(dispatcher, tracker, "slot_taken")
            return {"slot_choice": None, "offered": None}
        return {"slot_choice": str(slot_id), "held_slot": slot_id}

    @staticmethod
    def _by_time(tracker: Tracker, raw: str, offered: list[dict]) -> int | None:
        """"10:30", «١٠:٣٠» or a time entity naming one of the offered times."""
        wanted = set()
        for entity in common.entity_values(tracker, "time"):
            iso = _iso_from_value(entity.get("value"), (entity.get("additional_info") or {}).get("grain"))
            if iso and "T" in iso:
                wanted.add(iso[11:16])
        if match := re.search(r"(\d{1,2}):(\d{2})", normalize(raw)):
            hour, minute = int(match.group(1)), int(match.group(2))
            wanted |= {f"{hour:02d}:{minute:02d}", f"{(hour + 12) % 24:02d}:{minute:02d}"}
        for i, option in enumerate(offered, 1):
            if datetime.fromisoformat(option["start"]).astimezone(_zone()).strftime("%H:%M") in wanted:
                return i
        return None

    async def validate_confirmed(self, value, dispatcher, tracker, domain) -> dict[str, Any]:
        answer = common.yes_no(tracker)
        if answer is None:
            say(dispatcher, tracker, "yes_or_no")
            return {"confirmed": None}
        return {"confirmed": "yes" if answer else "no"}


class ValidateBookingForm(FlowValidation):
    def name(self) -> str:
        return "validate_booking_form"

    async def required_slots(self, domain_slots, dispatcher, tracker, domain) -> list[str]:
        slots = await super().required_slots(domain_slots, dispatcher, tracker, domain)
        if slots and tracker.get_slot("practitioner"):
            slots.remove("department")
        if slots and await _patient_known(tracker) and not tracker.get_slot("patient_name"):
            # Asked once: a patient whose record has a name and birth date is not asked again.
            slots = [s for s in slots if s not in ("patient_name", "patient_dob")]
        return slots

    async def validate_department(self, value, dispatcher, tracker, domain) -> dict[str, Any]:
        if _stop_requested(tracker):
            return self._stop("department")
        practitioners = common.entity_values(tracker, "practitioner")
        departments = common.entity_values(tracker, "department")
        async with common.sessions()() as session:
            if practitioners:
                prac = await session.scalar(select(Practitioner).options(selectinload(Practitioner.department))
                                            .where(Practitioner.code == practitioners[0]["value"]))
                if prac:
                    return {"department": prac.department.code, "practitioner": prac.code}
            if departments:
                return {"department": departments[0]["value"]}
            if await session.scalar(select(Department.id).where(Department.code == str(value))):
                return {"department": str(value)}
            dept_code, prac_code = await match_directory(session, str(value or ""))
        if dept_code:
            return {"department": dept_code, "practitioner": prac_code}
        say(dispatcher, tracker, "unknown_department")
        return {"department": None}

    async def validate_patient_name(self, value, dispatcher, tracker, domain) -> dict[str, Any]:
        if _stop_requested(tracker):
            return self._stop("patient_name")
        name = re.sub(r"^(my name is|i am|i'm|it's|name:?|اسمي|انا|أنا|الاسم)\s+", "", str(value or "").strip(),
                      flags=re.IGNORECASE).strip(" .،")
        parts = name.split()
        if not (1 <= len(parts) <= 6) or len(name) > 80 or not all(re.fullmatch(r"[^\W\d_][\w'\-]*", p) for p in parts):
            say(dispatcher, tracker, "bad_name")
            return {"patient_name": None}
        async with common.sessions()() as session:
            patient = await session.get(Patient, common.patient_id(tracker))
            arabic = bool(re.search(r"[\u0600-\u06ff]", name))
            setattr(patient, "given_name_ar" if arabic else "given_name_en", parts[0])
            setattr(patient, "family_name_ar" if arabic else "family_name_en", " ".join(parts[1:]) or None)
            await session.commit()
        return {"patient_name": name}

    async def validate_patient_dob(self, value, dispatcher, tracker, domain) -> dict[str, Any]:
        if _stop_requested(tracker):
            return self._stop("patient_dob")
        born = parse_birth_date(str(value or ""))
        if born is None:
            say(dispatcher, tracker, "bad_dob")
            return {"patient_dob": None}
        async with common.sessions()() as session:
            patient = await session.get(Patient, common.patient_id(tracker))
            patient.birth_date = born
            await session.commit()
        return {"patient_dob": born.isoformat()}


def parse_birth_date(raw: str) -> date | None:
    cleaned = normalize(raw)
    numeric = re.search(r"(\d{1,2})[/\-. ](\d{1,2})[/\-. ](\d{4})", cleaned)
    try:
        if numeric:  # Day first, as written across the Arab world and the UK.
            born = date(int(numeric.group(3)), int(numeric.group(2)), int(numeric.group(1)))
        elif iso := re.search(r"(\d{4})-(\d{1,2})-(\d{1,2})", cleaned):
            born = date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
        else:
            parsed = dateparser.parse(raw, languages=["ar", "en"], settings={
                "DATE_ORDER": "DMY", "PREFER_DATES_FROM": "past", "REQUIRE_PARTS": ["day", "month", "year"]})
            born = parsed.date() if parsed else None
    except ValueError:
        return None
    today = datetime.now(_zone()).date()
    return born if born and date(today.year - 120, 1, 1) <= born <= today else None


async def _patient_known(tracker: Tracker) -> bool:
    async with common.sessions()() as session:
        patient = await session.get(Patient, common.patient_id(tracker))
        return patient is not None and patient.has_identity_details


class ValidateRescheduleForm(FlowValidation):
    def name(self) -> str:
        return "validate_reschedule_form"

    async def validate_appointment_ref(self, value, dispatcher, tracker, domain) -> dict[str, Any]:
        return await _choose_appointment(value, dispatcher, tracker)


class ValidateCancelForm(FlowValidation):
    def name(self) -> str:
        return "validate_cancel_form"

    async def validate_appointment_ref(self, value, dispatcher, tracker, domain) -> dict[str, Any]:
        return await _choose_appointment(value, dispatcher, tracker)


async def _choose_appointment(value, dispatcher, tracker) -> dict[str, Any]:
    if _stop_requested(tracker):
        return {"appointment_ref": None, "flow_stopped": True}
    offered = tracker.get_slot("offered") or []
    raw = str(value or "")
    index = choice_index(raw, len(offered))
    if index is None:  # the reference itself, e.g. "SL-7K3Q9A"
        index = next((i for i, o in enumerate(offered, 1) if o["reference"].lower() in raw.lower()), None)
    if index is None:
        say(dispatcher, tracker, "unknown_appointment")
        return {"appointment_ref": None}
    chosen = offered[index - 1]
    return {"appointment_ref": chosen["reference"], "practitioner": chosen["practitioner"], "offered": None}


# ---- starting a flow -------------------------------------------------------------------------

class ActionStartBooking(Action):
    """Forget any earlier flow, then take what the patient already said (doctor, department, day)."""

    def name(self) -> str:
        return "action_start_booking"

    async def run(self, dispatcher, tracker, domain):
        events = common.reset_flow()
        practitioners = common.entity_values(tracker, "practitioner")
        departments = common.entity_values(tracker, "department")
        if practitioners:
            async with common.sessions()() as session:
                prac = await session.scalar(select(Practitioner).options(selectinload(Practitioner.department))
                                            .where(Practitioner.code == practitioners[0]["value"]))
            if prac:
                events += [SlotSet("practitioner", prac.code), SlotSet("department", prac.department.code)]
        elif departments:
            events.append(SlotSet("department", departments[0]["value"]))
        if common.entity_values(tracker, "time"):
            day = read_day(tracker, "")
            if day and date.fromisoformat(day[:10]) >= datetime.now(_zone()).date():
                events.append(SlotSet("appointment_day", day))
        return events


class _StartManaging(Action, ABC):
    """Reschedule and cancel start from the patient's upcoming appointments."""

    # Moving an appointment asks for a new day next, so the patient is first told which one moves.
    announce_single_appointment = False

    @abstractmethod
    def name(self) -> str: ...

    async def run(self, dispatcher, tracker, domain):
        events = common.reset_flow()
        pid = common.patient_id(tracker)
        async with common.sessions()() as session:
            upcoming = await appts.upcoming(session, pid) if pid is not None else []
        if not upcoming:
            say(dispatcher, tracker, "no_upcoming")
            return [*events, SlotSet("flow_stopped", True), SlotSet("offered", [])]
        offered = [_appointment_option(a) for a in upcoming]
        events.append(SlotSet("offered", offered))
        if len(upcoming) == 1:
            only = upcoming[0]
            lang = language(tracker)
            if self.announce_single_appointment:
                say(dispatcher, tracker, "your_appointment", reference=only.reference, doctor=only.practitioner.name(lang),
                    when=format_when(only.slot.start_at, common.settings().timezone, lang))
            events += [SlotSet("appointment_ref", offered[0]["reference"]),
                       SlotSet("practitioner", offered[0]["practitioner"])]
        return events


class ActionStartReschedule(_StartManaging):
    announce_single_appointment = True

    def name(self) -> str:
        return "action_start_reschedule"


class ActionStartCancel(_StartManaging):
    def name(self) -> str:
        return "action_start_cancel"


def _appointment_option(appointment: Appointment) -> dict[str, Any]:
    return {"reference": appointment.reference, "practitioner": appointment.practitioner.code,
            "start": appointment.slot.start_at.isoformat()}


# ---- asking ---------------------------------------------------------------------------------

class ActionAskDepartment(Action):
    def name(self) -> str:
        return "action_ask_department"

    async def run(self, dispatcher, tracker, domain):
        lang = language(tracker)
        async with common.sessions()() as session:
            depts = (await session.scalars(select(Department).order_by(Department.id))).all()
        say(dispatcher, tracker, "ask_department",
            buttons=[{"title": d.name(lang), "payload": d.name(lang)} for d in depts])
        return []


class ActionAskAppointmentDay(Action):
    def name(self) -> str:
        return "action_ask_appointment_day"

    async def run(self, dispatcher, tracker, domain):
        lang = language(tracker)
        zone = _zone()
        async with common.sessions()() as session:
            ids = await _practitioner_ids(session, tracker)
            now = datetime.now(zone)
            days: list[date] = []
            cursor = datetime.combine(now.date(), time(), zone)
            while len(days) < 3 and cursor < now + timedelta(days=SEARCH_DAYS):
                found = await appts.free_slots(session, practitioner_ids=ids, start=cursor,
                                               end=cursor + timedelta(days=SEARCH_DAYS), limit=1,
                                               holder=str(common.conversation_id(tracker)))
                if not found:
                    break
                day = found[0].start_at.astimezone(zone).date()
                days.append(day)
                cursor = datetime.combine(day + timedelta(days=1), time(), zone)
        say(dispatcher, tracker, "ask_day",
            buttons=[{"title": format_day(d, lang), "payload": d.isoformat()} for d in days])
        return []


class ActionAskSlotChoice(Action):
    def name(self) -> str:
        return "action_ask_slot_choice"

    async def run(self, dispatcher, tracker, domain):
        lang = language(tracker)
        zone = common.settings().timezone
        async with common.sessions()() as session:
            slots, on_requested_day = await _offers(session, tracker)
            who = await _who(session, tracker, lang)
            doctors = {s.practitioner_id: s.practitioner.name(lang) for s in slots}
        requested = format_day(date.fromisoformat(tracker.get_slot("appointment_day")[:10]), lang)
        if not slots:
            say(dispatcher, tracker, "no_slots", who=who)
            return [ActiveLoop(None), *common.reset_flow()]
        day = format_day(slots[0].start_at.astimezone(ZoneInfo(zone)).date(), lang)
        key = "offer_slots" if on_requested_day else "offer_slots_nearest"
        numbers = "١٢٣" if lang == "ar" else "123"
        buttons = [{"title": f"{format_time(s.start_at, zone, lang)} · {doctors[s.practitioner_id]}",
                    "payload": numbers[i] if lang == "ar" else str(i + 1)} for i, s in enumerate(slots)]
        buttons.append({"title": text("another_day", lang), "payload": text("another_day", lang)})
        say(dispatcher, tracker, key, buttons=buttons, who=who, day=day, requested=requested)
        offered = [{"id": s.id, "start": s.start_at.isoformat()} for s in slots]
        return [SlotSet("offered", offered)]


class ActionAskConfirmed(Action):
    def name(self) -> str:
        return "action_ask_confirmed"

    async def run(self, dispatcher, tracker, domain):
        lang = language(tracker)
        zone = common.settings().timezone
        buttons = [{"title": text("answer_yes", lang), "payload": "/affirm"}, {"title": text("answer_no", lang), "payload": "/deny"}]
        async with common.sessions()() as session:
            appointment = await _chosen_appointment(session, tracker)
            slot = await session.scalar(select(Slot).options(
                selectinload(Slot.practitioner).selectinload(Practitioner.department))
                .where(Slot.id == tracker.get_slot("held_slot"))) if tracker.get_slot("held_slot") else None
        form = _form(tracker)
        if form == "booking_form":
            say(dispatcher, tracker, "confirm_booking", buttons=buttons, doctor=slot.practitioner.name(lang),
                department=slot.practitioner.department.name(lang), when=format_when(slot.start_at, zone, lang))
        elif form == "reschedule_form":
            say(dispatcher, tracker, "confirm_reschedule", buttons=buttons,
                doctor=appointment.practitioner.name(lang), old=format_when(appointment.slot.start_at, zone, lang),
                new=format_when(slot.start_at, zone, lang))
        else:
            say(dispatcher, tracker, "confirm_cancel", buttons=buttons, doctor=appointment.practitioner.name(lang),
                when=format_when(appointment.slot.start_at, zone, lang))
        return []


async def _chosen_appointment(session, tracker: Tracker) -> Appointment | None:
    reference = tracker.get_slot("appointment_ref")
    if not reference:
        return None
    return await session.scalar(
        select(Appointment).options(selectinload(Appointment.slot),
                                    selectinload(Appointment.practitioner).selectinload(Practitioner.department))
        .where(Appointment.reference == reference, Appointment.patient_id == common.patient_id(tracker)))


class ActionAskPatientName(Action):
    def name(self) -> str:
        return "action_ask_patient_name"

    async def run(self, dispatcher, tracker, domain):
        say(dispatcher, tracker, "ask_name")
        return []


class ActionAskPatientDob(Action):
    def name(self) -> str:
        return "action_ask_patient_dob"

    async def run(self, dispatcher, tracker, domain):
        name = (tracker.get_slot("patient_name") or "").split()
        say(dispatcher, tracker, "ask_dob", name=f" {name[0]}" if name else "")
        return []


class ActionAskAppointmentRef(Action):
    def name(self) -> str:
        return "action_ask_appointment_ref"

    async def run(self, dispatcher, tracker, domain):
        lang = language(tracker)
        zone = common.settings().timezone
        offered = tracker.get_slot("offered") or []
        buttons = []
        for i, option in enumerate(offered, 1):
            when = format_when(datetime.fromisoformat(option["start"]), zone, lang)
            buttons.append({"title": f"{when} · {option['reference']}", "payload": option["reference"]})
        say(dispatcher, tracker, "ask_which_appointment", buttons=buttons)
        return []


# ---- doing ----------------------------------------------------------------------------------

class _Submit(Action, ABC):
    @abstractmethod
    def name(self) -> str: ...
    async def run(self, dispatcher, tracker, domain):
        if tracker.get_slot("flow_stopped"):
            if tracker.get_slot("offered") != []:  # [] means "nothing to manage", already said
                say(dispatcher, tracker, "stopped")
            return await self._release(tracker)
        if tracker.get_slot("confirmed") != "yes":
            say(dispatcher, tracker, "not_changed")
            return await self._release(tracker)
        await self.apply(dispatcher, tracker, language(tracker), common.settings().timezone)
        return common.reset_flow()

    async def _release(self, tracker: Tracker) -> list:
        if held := tracker.get_slot("held_slot"):
            async with common.sessions()() as session:
                await appts.release_hold(session, held, str(common.conversation_id(tracker)))
                await session.commit()
        return common.reset_flow()

    @abstractmethod
    async def apply(self, dispatcher, tracker, lang: str, zone: str) -> None: ...


def _channel(tracker: Tracker) -> str:
    return common.metadata(tracker).get("channel") or "unknown"


class ActionSubmitBooking(_Submit):
    def name(self) -> str:
        return "action_submit_booking"

    async def apply(self, dispatcher, tracker, lang, zone) -> None:
        async with common.sessions()() as session:
            appointment = await appts.book(session, patient_id=common.patient_id(tracker),
                                           slot_id=int(tracker.get_slot("held_slot")), channel=_channel(tracker),
                                           holder=str(common.conversation_id(tracker)))
            if appointment is None:
                await session.rollback()
                say(dispatcher, tracker, "booking_failed")
                return
            await session.commit()
            appointment = await _chosen_by_reference(session, appointment.reference)
        say(dispatcher, tracker, "booked", doctor=appointment.practitioner.name(lang),
            department=appointment.practitioner.department.name(lang),
            when=format_when(appointment.slot.start_at, zone, lang), reference=appointment.reference)


async def _chosen_by_reference(session, reference: str) -> Appointment:
    return await session.scalar(
        select(Appointment).options(selectinload(Appointment.slot),
                                    selectinload(Appointment.practitioner).selectinload(Practitioner.department))
        .where(Appointment.reference == reference).execution_options(populate_existing=True))


class ActionSubmitReschedule(_Submit):
    def name(self) -> str:
        return "action_submit_reschedule"

    async def apply(self, dispatcher, tracker, lang, zone) -> None:
        async with common.sessions()() as session:
            appointment = await _chosen_appointment(session, tracker)
            moved = appointment is not None and await appts.reschedule(
                session, appointment, slot_id=int(tracker.get_slot("held_slot")), channel=_channel(tracker),
                holder=str(common.conversation_id(tracker)))
            if not moved:
                await session.rollback()
                say(dispatcher, tracker, "booking_failed")
                return
            await session.commit()
            appointment = await _chosen_by_reference(session, appointment.reference)
        say(dispatcher, tracker, "rescheduled", doctor=appointment.practitioner.name(lang),
            when=format_when(appointment.slot.start_at, zone, lang), reference=appointment.reference)


class ActionSubmitCancel(_Submit):
    def name(self) -> str:
        return "action_submit_cancel"

    async def apply(self, dispatcher, tracker, lang, zone) -> None:
        async with common.sessions()() as session:
            appointment = await _chosen_appointment(session, tracker)
            if appointment is None or not await appts.cancel(session, appointment, channel=_channel(tracker)):
                say(dispatcher, tracker, "not_changed")
                return
            await session.commit()
        say(dispatcher, tracker, "cancelled", doctor=appointment.practitioner.name(lang),
            when=format_when(appointment.slot.start_at, zone, lang), reference=appointment.reference)


class ActionListAppointments(Action):
    def name(self) -> str:
        return "action_list_appointments"

    async def run(self, dispatcher, tracker, domain):
        lang = language(tracker)
        zone = common.settings().timezone
        pid = common.patient_id(tracker)
        async with common.sessions()() as session:
            upcoming = await appts.upcoming(session, pid) if pid is not None else []
        if not upcoming:
            say(dispatcher, tracker, "no_upcoming")
            return []
        lines = [text("appointment_line", lang, when=format_when(a.slot.start_at, zone, lang),
                      doctor=a.practitioner.name(lang), department=a.practitioner.department.name(lang),
                      reference=a.reference) for a in upcoming]
        dispatcher.utter_message(text=text("upcoming_header", lang) + "\n" + "\n".join(f"• {l}" for l in lines))
        return []
