"""Booking actions with a hand-built tracker and rasa-sdk's CollectingDispatcher, on both stores."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher


from actions import common
from actions.booking import ActionAskSlotChoice, ValidateBookingForm, parse_birth_date
from actions.common import choice_index
from bot.settings import Settings
from crm_store.models import Patient, Slot, SlotStatus


@pytest.mark.parametrize("said, expected", [
    ("2", 2), ("٢", 2), ("the second one", 2), ("الثاني", 2), ("رقم ٣", 3), (" 1. ", 1),
    ("4", None), ("0", None), ("hello", None), ("10:30", None),
])
def test_choices_read_the_way_patients_answer(said, expected):
    assert choice_index(said, 3) == expected


@pytest.mark.parametrize("said, expected", [
    ("14/03/1985", date(1985, 3, 14)), ("١٤/٠٣/١٩٨٥", date(1985, 3, 14)), ("1985-03-14", date(1985, 3, 14)),
    ("14 March 1985", date(1985, 3, 14)), ("14-3-1985", date(1985, 3, 14)),
    ("31/02/1990", None), ("14/03/2090", None), ("yesterday-ish", None), ("1/1/1850", None),
])
def test_birth_dates(said, expected):
    assert parse_birth_date(said) == expected


def tracker(conversation_id: int, patient_id: int, text: str, slots: dict, intent="out_of_scope") -> Tracker:
    return Tracker(
        sender_id=str(conversation_id), slots={"language": "en", **slots},
        latest_message={"text": text, "intent": {"name": intent, "confidence": 0.9}, "entities": [],
                        "metadata": {"patient_id": patient_id, "channel": "webchat"}},
        events=[], paused=False, followup_action=None, active_loop={"name": "booking_form"},
        latest_action_name="action_listen")


@pytest.fixture
async def configured(sessions):
    common.configure(sessions, Settings())
    async with sessions() as session:
        patients = [Patient(given_name_en=n, preferred_language="en") for n in ("Ann", "Bob")]
        session.add_all(patients)
        await session.commit()
    yield sessions, [p.id for p in patients]


async def test_offer_then_hold_the_chosen_slot_and_refuse_it_to_another(configured):
    sessions, (ann, bob) = configured
    day = (datetime.now(timezone.utc) + timedelta(days=7)).date()
    while day.weekday() in (4, 5):  # Friday has no clinics, Saturday only mornings
        day += timedelta(days=1)
    slots = {"department": "dermatology", "appointment_day": day.isoformat()}

    dispatcher = CollectingDispatcher()
    events = await ActionAskSlotChoice().run(dispatcher, tracker(1, ann, "", slots), {})
    offered = events[0]["value"]
    assert 1 <= len(offered) <= 3 and "Dermatology" in dispatcher.messages[0]["text"]
    assert len(dispatcher.messages[0]["buttons"]) == len(offered) + 1  # the times, and "another day"

    form = ValidateBookingForm()
    chosen = await form.validate_slot_choice("1", CollectingDispatcher(),
                                             tracker(1, ann, "1", {**slots, "offered": offered}), {})
    assert chosen == {"slot_choice": str(offered[0]["id"]), "held_slot": offered[0]["id"]}

    refused = CollectingDispatcher()
    lost = await form.validate_slot_choice("1", refused, tracker(2, bob, "1", {**slots, "offered": offered}), {})
    assert lost == {"slot_choice": None, "offered": None}
    assert "just taken" in refused.messages[0]["text"]
    async with sessions() as session:
        slot = await session.get(Slot, offered[0]["id"])
    assert slot.status == SlotStatus.held and slot.held_by == "1"


async def test_department_answer_without_an_entity_is_found_in_the_directory(configured):
    sessions, (ann, _) = configured
    form = ValidateBookingForm()
    result = await form.validate_department("I need the skin doctor please", CollectingDispatcher(),
                                            tracker(1, ann, "I need the skin doctor please", {}), {})
    assert result == {"department": "dermatology", "practitioner": None}
    unknown = CollectingDispatcher()
    assert await form.validate_department("astrology", unknown, tracker(1, ann, "astrology", {}), {}) == \
        {"department": None}
    assert unknown.messages


async def test_name_and_birth_date_are_saved_once(configured):
    sessions, (ann, _) = configured
    form = ValidateBookingForm()
    await form.validate_patient_name("اسمي نورة القحطاني", CollectingDispatcher(),
                                     tracker(1, ann, "اسمي نورة القحطاني", {}), {})
    await form.validate_patient_dob("٢/٩/١٩٩١", CollectingDispatcher(), tracker(1, ann, "٢/٩/١٩٩١", {}), {})
    async with sessions() as session:
        patient = await session.get(Patient, ann)
    assert (patient.given_name_ar, patient.family_name_ar, patient.birth_date) == ("نورة", "القحطاني", date(1991, 9, 2))
    required = await form.required_slots(["patient_name", "patient_dob", "department", "appointment_day",
                                          "slot_choice", "confirmed"], CollectingDispatcher(),
                                         tracker(1, ann, "", {}), {})
    assert required == ["department", "appointment_day", "slot_choice", "confirmed"]
