"""CRM → FHIR → JSON → FHIR model → CRM gives back the original row, for generated rows."""
from __future__ import annotations

import json

from datetime import date, datetime, timedelta, timezone

from fhir.resources.R4B.appointment import Appointment as FhirAppointment
from fhir.resources.R4B.communication import Communication as FhirCommunication
from fhir.resources.R4B.patient import Patient as FhirPatient
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_store.models import (
    Appointment,
    AppointmentStatus,
    Conversation,
    Department,
    Message,
    Patient,
    Practitioner,
    Slot,
    SlotStatus,
)
from ehr.resources import appointment, communication, patient

ARABIC_LETTERS = "ءآأؤإئابةتثجحخدذرزسشصضطظعغفقكلمنهوىي"
PATIENT_COLUMNS = ("mrn", "national_id", "given_name_en", "family_name_en", "given_name_ar", "family_name_ar",
                   "birth_date", "sex", "preferred_language", "phone", "email")

english_word = st.from_regex(r"[A-Z][a-z]{1,10}(-[A-Z][a-z]{1,10})?", fullmatch=True)
arabic_word = st.text(alphabet=ARABIC_LETTERS, min_size=2, max_size=8)
english_name = st.lists(english_word, min_size=1, max_size=3).map(" ".join)
arabic_name = st.lists(arabic_word, min_size=1, max_size=3).map(" ".join)
# Mobile numbers of the region in E.164: Saudi Arabia, the UAE and Egypt.
phones = st.one_of(st.from_regex(r"\+9665[0-9]{8}", fullmatch=True), st.from_regex(r"\+9715[0-9]{8}", fullmatch=True),
                   st.from_regex(r"\+201[0-2][0-9]{8}", fullmatch=True))
emails = st.from_regex(r"[a-z0-9][a-z0-9._]{0,15}@[a-z]{2,12}\.(com|sa|org|net)", fullmatch=True)
utc_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                         timezones=st.just(timezone.utc))


@st.composite
def crm_patients(draw) -> Patient:
    return Patient(
        id=draw(st.none() | st.integers(1, 10**9)),
        mrn=draw(st.none() | st.from_regex(r"[A-Z0-9][A-Z0-9-]{2,15}", fullmatch=True)),
        national_id=draw(st.none() | st.from_regex(r"[12][0-9]{9}", fullmatch=True)),
        given_name_en=draw(st.none() | english_name), family_name_en=draw(st.none() | english_name),
        given_name_ar=draw(st.none() | arabic_name), family_name_ar=draw(st.none() | arabic_name),
        birth_date=draw(st.none() | st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31))),
        sex=draw(st.sampled_from([None, "male", "female", "other", "unknown"])),
        preferred_language=draw(st.sampled_from(["ar", "en"])),
        phone=draw(st.none() | phones),
        email=draw(st.none() | emails),
    )


@settings(max_examples=100, deadline=None)
@given(crm_patients(), st.sampled_from(["SA", "AE", "GB"]))
def test_patient_round_trip(row: Patient, region: str):
    resource = patient.to_fhir(row, mrn_system="urn:sila:mrn")
    # The JSON the mapping writes is the JSON the model itself would write.
    assert resource == FhirPatient.model_validate(resource).model_dump(mode="json")
    model = FhirPatient.model_validate_json(json.dumps(resource))
    back = patient.from_fhir(model, region=region, mrn_system="urn:sila:mrn")
    assert back == {column: getattr(row, column) for column in PATIENT_COLUMNS}
    assert patient.sila_id(model) == row.id


@st.composite
def crm_appointments(draw) -> tuple[Appointment, dict]:
    department = Department(code=draw(st.from_regex(r"[a-z]{3,12}", fullmatch=True)),
                            name_en=draw(english_name), name_ar=draw(arabic_name))
    doctor = Practitioner(code=draw(st.from_regex(r"dr-[a-z]{2,10}-[a-z]{2,10}", fullmatch=True)),
                          name_en="Dr. " + draw(english_name), name_ar="د. " + draw(arabic_name),
                          specialty_en=draw(english_name), specialty_ar=draw(arabic_name), department=department)
    start = draw(utc_times)
    the_slot = Slot(id=draw(st.integers(1, 10**6)), practitioner=doctor, start_at=start,
                    end_at=start + timedelta(minutes=draw(st.sampled_from([10, 15, 20, 30, 45, 60, 90]))),
                    status=SlotStatus.booked)
    row = Appointment(reference=draw(st.from_regex(r"[A-Z0-9]{6,8}", fullmatch=True)),
                      status=draw(st.sampled_from(list(AppointmentStatus))), practitioner=doctor, slot=the_slot,
                      source_channel=draw(st.sampled_from(["sms", "whatsapp", "webchat", "voice"])),
                      created_at=draw(utc_times))
    refs = {"patient_ref": f"Patient/{draw(st.integers(1, 10**6))}",
            "practitioner_ref": draw(st.none() | st.from_regex(r"Practitioner/[A-Za-z0-9-]{1,20}", fullmatch=True)),
            "slot_ref": draw(st.none() | st.just(f"Slot/{the_slot.id}"))}
    return row, refs


@settings(max_examples=100, deadline=None)
@given(crm_appointments())
def test_appointment_round_trip(case):
    row, refs = case
    resource = appointment.to_fhir(row, **refs)
    assert resource == FhirAppointment.model_validate(resource).model_dump(mode="json")
    model = FhirAppointment.model_validate_json(json.dumps(resource))
    back = appointment.from_fhir(model)
    assert back == {"reference": row.reference, "status": row.status, "start_at": row.slot.start_at,
                    "end_at": row.slot.end_at, "created_at": row.created_at, **refs,
                    "practitioner_code": row.practitioner.code}


@st.composite
def crm_messages(draw) -> tuple[Message, Conversation]:
    channel = draw(st.sampled_from(["sms", "whatsapp", "telegram", "webchat", "email", "voice"]))
    inbound = draw(st.booleans())
    message = Message(id=draw(st.integers(1, 10**9)), conversation_id=1, channel=channel,
                      direction="in" if inbound else "out", sender="patient" if inbound else "bot",
                      text=draw(st.one_of(english_name, arabic_name)), created_at=draw(utc_times),
                      status="received" if inbound else draw(st.sampled_from(["sent", "delivered", "failed"])),
                      language=draw(st.sampled_from(["ar", "en"])),
                      purpose="transactional" if inbound else draw(st.sampled_from(["transactional", "marketing"])))
    return message, Conversation(id=1, patient_id=41, channel=channel, language=message.language)


@settings(max_examples=100, deadline=None)
@given(crm_messages(), st.none() | st.just("Organization/h1"))
def test_communication_round_trip(case, organization_ref):
    message, conversation = case
    resource = communication.to_fhir(message, conversation, patient_ref="Patient/41",
                                     organization_ref=organization_ref, hospital_code="al-noor")
    assert resource == FhirCommunication.model_validate(resource).model_dump(mode="json")
    back = communication.from_fhir(FhirCommunication.model_validate_json(json.dumps(resource)))
    assert (back["direction"], back["channel"], back["text"], back["purpose"]) == (
        message.direction, message.channel, message.text, message.purpose)
    # A message that never reached the patient was not sent at any time.
    assert back["created_at"] == (None if message.status == "failed" else message.created_at)
