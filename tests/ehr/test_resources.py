"""The FHIR mapping of CRM rows (built in memory, no database) and of resources from other systems."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fhir.resources.R4B.appointment import Appointment as FhirAppointment
from pydantic import ValidationError

from crm_store.content import load_hospital
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    Department,
    Message,
    Patient,
    Practitioner,
    Slot,
    SlotStatus,
)
from ehr import identifiers
from ehr.resources import (
    LANGUAGE_EXT,
    appointment,
    communication,
    consent,
    location,
    organization,
    patient,
    practitioner,
    practitioner_role,
    questionnaire,
    questionnaire_response,
    schedule,
    slot,
    translation_of,
)

FIXTURES = Path("/work/shared/fixtures/fhir")
HOSPITAL = load_hospital(Path(__file__).parents[2] / "crm_store" / "demo" / "hospital.yml")["hospital"]
T0 = datetime(2025, 3, 2, 6, 30, tzinfo=timezone.utc)


def bundle_patient(stem: str) -> dict:
    path = next(FIXTURES.glob(f"{stem}_*.json"))
    bundle = json.loads(path.read_text(encoding="utf-8"))
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def as_json(resource: dict) -> dict:
    """The resource as it travels, as JSON text (which only JSON values survive)."""
    return json.loads(json.dumps(resource))


def cardiology() -> Department:
    return Department(id=1, code="cardiology", name_en="Cardiology", name_ar="أمراض القلب")


def khalid(department: Department | None = None) -> Practitioner:
    return Practitioner(id=2, code="dr-khalid-alharbi", name_en="Dr. Khalid Al-Harbi", name_ar="د. خالد الحربي",
                        specialty_en="Consultant Cardiologist", specialty_ar="استشاري أمراض القلب",
                        department=department or cardiology(), active=True)


def noura() -> Patient:
    return Patient(id=41, mrn="MRN-0041", national_id="1012345678", given_name_en="Noura",
                   family_name_en="Al-Otaibi", given_name_ar="نورة", family_name_ar="العتيبي",
                   birth_date=date(1990, 2, 3), sex="female", preferred_language="ar",
                   phone="+966501234567", email="noura@example.com")


def booked(status: AppointmentStatus = AppointmentStatus.booked) -> Appointment:
    doctor = khalid()
    the_slot = Slot(id=9, practitioner=doctor, start_at=T0, end_at=T0 + timedelta(minutes=30),
                    status=SlotStatus.booked)
    return Appointment(id=3, reference="AB12CD", patient=noura(), practitioner=doctor, slot=the_slot,
                       status=status, source_channel="whatsapp", created_at=T0 - timedelta(days=2))


# --- Patient ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stem, given, family, born, sex, phone, ssn", [
    ("Gayla_Ferry", "Gayla", "Ferry", date(1937, 6, 3), "female", "+15556058177", "999-91-1202"),
    ("Royal_DuBuque", "Royal", "DuBuque", date(1997, 6, 27), "male", "+15558046642", "999-20-2863"),
    ("Yi_Weissnat", "Yi", "Weissnat", date(2002, 12, 22), "female", "+15558763430", "999-84-7653"),
])
def test_synthea_patients_map_to_their_names_birth_date_and_e164_phone(stem, given, family, born, sex, phone, ssn):
    res = bundle_patient(stem)
    row = patient.from_fhir(res)
    assert (row["given_name_en"], row["family_name_en"]) == (given, family)
    assert row["given_name_ar"] is None and row["family_name_ar"] is None
    assert row["birth_date"] == born and row["sex"] == sex
    # "555-605-8177" is a possible Saudi number by length; the US address decides it is American,
    # in the E.164 form a Twilio webhook would give as the sender.
    assert row["phone"] == phone
    assert row["mrn"] == next(i["value"] for i in res["identifier"]
                              if i.get("type", {}).get("coding", [{}])[0].get("code") == "MR")
    assert row["national_id"] == ssn
    assert row["preferred_language"] == "en"
    assert "id" not in row and patient.sila_id(res) is None  # not one of Sila's patients
    # Every key is a patients column, so an importer can build the row from it.
    assert Patient(**row).phone == phone


def test_the_hospitals_mrn_is_chosen_among_several():
    res = {"resourceType": "Patient", "identifier": [
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
         "system": "urn:other-clinic", "value": "X-1"},
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
         "system": "urn:sila:mrn", "value": "H-77"},
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NNSAU"}]},
         "system": "urn:moi", "value": "2123456789"}]}
    row = patient.from_fhir(res, mrn_system="urn:sila:mrn")
    assert row["mrn"] == "H-77"
    assert row["national_id"] == "2123456789"
    assert patient.from_fhir(res)["mrn"] == "X-1"


@pytest.mark.parametrize("raw, region, country, expected", [
    ("0501234567", "SA", None, "+966501234567"),
    ("050 123 4567", "SA", "US", "+966501234567"),       # valid in Saudi Arabia, not in the US
    ("555-605-8177", "SA", "US", "+15556058177"),
    ("+44 20 7946 0958", "SA", None, "+442079460958"),
    ("00966112345678", "SA", None, "+966112345678"),
    ("12", "SA", "US", None),
    ("call me", "SA", None, None),
    (None, "SA", None, None),
])
def test_phone_numbers_are_normalised_to_e164(raw, region, country, expected):
    assert patient.normalise_phone(raw, region, country) == expected


def test_a_saudi_patient_written_in_national_format_gets_the_number_the_router_looks_up():
    res = {"resourceType": "Patient", "name": [{"family": "Al-Ghamdi", "given": ["Fahad"]}],
           "telecom": [{"system": "phone", "value": "(011) 234-5678", "use": "home"},
                       {"system": "phone", "value": "055 000 1111", "use": "mobile"}],
           "address": [{"country": "Saudi Arabia"}]}
    assert patient.from_fhir(res)["phone"] == "+966550001111"


@pytest.mark.parametrize("res", [
    {"resourceType": "Patient"},
    {"resourceType": "Patient", "name": [], "telecom": [], "identifier": [], "communication": []},
    {"resourceType": "Patient", "name": [{"use": "nickname"}], "telecom": [{"system": "fax", "value": "1"}]},
    {"resourceType": "Patient", "birthDate": "1980", "gender": "unknown", "name": "not a list",
     "telecom": [{"system": "phone"}], "address": [{"country": 7}], "identifier": [{"system": "x"}]},
])
def test_a_patient_from_a_system_never_seen_maps_without_crashing(res):
    row = patient.from_fhir(res)
    assert row["given_name_en"] is None and row["phone"] is None and row["mrn"] is None
    assert row["birth_date"] is None  # a year alone is no birth date


def test_text_only_and_arabic_names_are_read():
    res = {"resourceType": "Patient", "name": [
        {"text": "محمد عبدالله القحطاني"},
        {"use": "old", "family": "Oldname", "given": ["Mo"]},
        {"text": "Mohammed Abdullah Al-Qahtani"}]}
    row = patient.from_fhir(res)
    assert (row["given_name_ar"], row["family_name_ar"]) == ("محمد عبدالله", "القحطاني")
    assert (row["given_name_en"], row["family_name_en"]) == ("Mohammed Abdullah", "Al-Qahtani")


def test_patient_to_fhir_carries_both_names_identifiers_and_contact():
    res = as_json(patient.to_fhir(noura(), resource_id="p41"))
    assert res["id"] == "p41"
    names = res["name"]
    assert names[0]["given"] == ["Noura"] and "extension" not in names[0]
    assert names[1]["family"] == "العتيبي"
    assert names[1]["extension"] == [{"url": LANGUAGE_EXT, "valueCode": "ar"}]
    idents = {i["system"]: i for i in res["identifier"]}
    assert idents[identifiers.PATIENT]["value"] == "41"
    assert idents["urn:sila:mrn"]["type"]["coding"][0]["code"] == "MR"
    assert idents[patient.DEFAULT_NATIONAL_ID_SYSTEM]["value"] == "1012345678"
    assert {"system": "phone", "value": "+966501234567", "use": "mobile"} in res["telecom"]
    assert res["communication"][0]["language"]["coding"][0]["code"] == "ar"
    assert patient.sila_id(res) == 41
    assert res["gender"] == "female" and res["birthDate"] == "1990-02-03"


def test_a_new_patient_with_nothing_known_is_still_a_valid_patient():
    res = as_json(patient.to_fhir(Patient(phone="+966501234567")))
    assert res == {"resourceType": "Patient",
                   "telecom": [{"system": "phone", "value": "+966501234567", "use": "mobile"}]}


# --- Appointment ------------------------------------------------------------------------------

@pytest.mark.parametrize("status", list(AppointmentStatus))
def test_appointment_status_and_business_identifier(status):
    res = as_json(appointment.to_fhir(booked(status), patient_ref="Patient/41", practitioner_ref="Practitioner/p2",
                                      slot_ref="Slot/9"))
    assert res["identifier"] == [{"system": identifiers.APPOINTMENT, "value": "AB12CD"}]
    assert res["status"] == status.value
    assert appointment.from_fhir(res)["status"] is status


def test_appointment_times_participants_and_service_come_from_the_booking():
    res = as_json(appointment.to_fhir(booked(), patient_ref="Patient/41", slot_ref="Slot/9"))
    assert res["start"] == "2025-03-02T06:30:00Z" and res["end"] == "2025-03-02T07:00:00Z"
    assert res["minutesDuration"] == 30
    assert res["slot"] == [{"reference": "Slot/9"}]
    assert res["created"] == "2025-02-28T06:30:00Z"
    patient_part, doctor = res["participant"]
    assert patient_part["actor"] == {"reference": "Patient/41"} and patient_part["status"] == "accepted"
    # Without the EHR's id of the doctor, the doctor is referenced by Sila's identifier.
    assert doctor["actor"]["identifier"] == {"system": identifiers.PRACTITIONER, "value": "dr-khalid-alharbi"}
    assert doctor["status"] == "accepted"
    assert res["serviceType"][0]["coding"][0] == {"system": identifiers.DEPARTMENT, "code": "cardiology",
                                                 "display": "Cardiology"}
    assert translation_of(res["serviceType"][0], "text") == "أمراض القلب"
    assert res["description"] == "Cardiology: Dr. Khalid Al-Harbi"


@pytest.mark.parametrize("fhir_status, crm", [("arrived", AppointmentStatus.booked),
                                               ("checked-in", AppointmentStatus.booked),
                                               ("entered-in-error", AppointmentStatus.cancelled),
                                               ("proposed", None), ("waitlist", None)])
def test_appointment_statuses_of_an_ehr(fhir_status, crm):
    res = {"resourceType": "Appointment", "status": fhir_status,
           "participant": [{"actor": {"reference": "https://ehr.example/fhir/Patient/9"}, "status": "accepted"},
                           {"actor": {"reference": "Practitioner/7"}, "status": "accepted"}]}
    row = appointment.from_fhir(res)
    assert row["status"] == crm
    assert row["patient_ref"] == "https://ehr.example/fhir/Patient/9"
    assert row["practitioner_ref"] == "Practitioner/7" and row["reference"] is None


def test_naive_times_are_refused():
    appt = booked()
    appt.slot.start_at = datetime(2025, 3, 2, 9, 30)
    with pytest.raises(ValueError):
        appointment.to_fhir(appt, patient_ref="Patient/41")


def test_an_appointment_without_a_patient_reference_is_not_built():
    with pytest.raises((ValueError, ValidationError)):
        appointment.to_fhir(booked(), patient_ref="")
    # The mapping builds resources the model accepts as they are.
    assert FhirAppointment.model_validate(appointment.to_fhir(booked(), patient_ref="Patient/41")).status == "booked"


# --- Communication ----------------------------------------------------------------------------

def conversation(channel: str = "whatsapp") -> Conversation:
    return Conversation(id=5, patient_id=41, identity_id=1, channel=channel)


def test_an_outbound_message_is_sent_by_the_hospital_to_the_patient():
    msg = Message(id=77, conversation_id=5, channel="whatsapp", direction="out", sender="bot",
                  text="Your appointment is booked for Sunday 9:30.", purpose="transactional", status="delivered",
                  created_at=T0, language="en")
    res = as_json(communication.to_fhir(msg, conversation(), patient_ref="Patient/41",
                                        organization_ref="Organization/h1"))
    assert res["identifier"] == [{"system": identifiers.MESSAGE, "value": "77"}]
    assert res["status"] == "completed"
    assert res["payload"] == [{"contentString": "Your appointment is booked for Sunday 9:30."}]
    assert res["medium"][0]["coding"][0]["code"] == "MSGWRIT" and res["medium"][0]["text"] == "whatsapp"
    assert res["sender"] == {"reference": "Organization/h1"}
    assert res["recipient"] == [{"reference": "Patient/41"}]
    assert res["sent"] == "2025-03-02T06:30:00Z" and "received" not in res
    assert res["language"] == "en" and "category" not in res
    back = communication.from_fhir(res)
    assert (back["sila_id"], back["direction"], back["channel"], back["created_at"]) == (77, "out", "whatsapp", T0)


def test_an_inbound_message_is_received_from_the_patient_as_they_saw_it():
    msg = Message(id=78, conversation_id=5, channel="sms", direction="in", sender="patient", text="/affirm",
                  display="نعم", status="received", created_at=T0)
    res = as_json(communication.to_fhir(msg, conversation("sms"), patient_ref="Patient/41", hospital_code="al-noor"))
    assert res["sender"] == {"reference": "Patient/41"}
    assert res["recipient"] == [{"identifier": {"system": identifiers.HOSPITAL, "value": "al-noor"}}]
    assert res["received"] == "2025-03-02T06:30:00Z" and "sent" not in res
    assert res["payload"] == [{"contentString": "نعم"}]
    assert communication.from_fhir(res)["direction"] == "in"


@pytest.mark.parametrize("channel, code", [("email", "EMAILWRIT"), ("voice", "PHONE"), ("telegram", "MSGWRIT"),
                                           ("pigeon", "ELECTRONIC")])
def test_the_medium_follows_the_channel(channel, code):
    msg = Message(id=1, conversation_id=5, channel=channel, direction="out", sender="staff", text="Hello",
                  status="sent", created_at=T0)
    res = as_json(communication.to_fhir(msg, conversation(channel), patient_ref="Patient/41"))
    assert res["medium"][0]["coding"][0]["code"] == code and res["medium"][0]["text"] == channel
    assert communication.from_fhir(res)["channel"] == channel


def test_campaign_and_failed_messages():
    campaign = Message(id=2, conversation_id=5, channel="sms", direction="out", sender="system", text="Flu shots",
                       purpose="marketing", status="failed", created_at=T0)
    res = as_json(communication.to_fhir(campaign, conversation("sms"), patient_ref="Patient/41"))
    assert res["category"][0]["coding"][0]["code"] == "notification"
    assert res["status"] == "not-done" and "sent" not in res
    assert communication.from_fhir(res)["purpose"] == "marketing"
    queued = Message(id=3, conversation_id=5, channel="sms", direction="out", sender="bot", text="Hi",
                     status="queued", created_at=T0)
    assert communication.to_fhir(queued, conversation("sms"), patient_ref="Patient/41")["status"] == "in-progress"


# --- Consent ----------------------------------------------------------------------------------

def test_a_stop_keyword_is_an_active_opt_out_for_marketing_on_that_channel():
    row = Consent(id=4, patient_id=41, channel="sms", purpose=ConsentPurpose.marketing,
                  status=ConsentStatus.revoked, source="keyword:STOP", recorded_at=T0)
    res = as_json(consent.to_fhir(row, patient_ref="Patient/41", organization_ref="Organization/h1"))
    assert res["status"] == "active"
    assert res["scope"]["coding"][0]["code"] == "patient-privacy"
    assert res["policyRule"]["coding"][0]["code"] == "OPTOUT"
    assert res["provision"]["type"] == "deny"
    assert res["provision"]["purpose"][0]["code"] == "HMARKT"
    assert res["provision"]["code"][0]["text"] == "sms"
    assert res["dateTime"] == "2025-03-02T06:30:00Z"
    back = consent.from_fhir(res)
    assert back == {"sila_id": 4, "patient_ref": "Patient/41", "channel": "sms", "purpose": ConsentPurpose.marketing,
                    "status": ConsentStatus.revoked, "source": "keyword:STOP", "recorded_at": T0, "in_force": True}


def test_a_superseded_grant_is_inactive_but_still_a_grant():
    row = Consent(id=5, patient_id=41, channel="whatsapp", purpose=ConsentPurpose.transactional,
                  status=ConsentStatus.granted, source="first-contact", recorded_at=T0)
    res = as_json(consent.to_fhir(row, patient_ref="Patient/41", in_force=False))
    assert res["status"] == "inactive" and res["provision"]["type"] == "permit"
    back = consent.from_fhir(res)
    assert back["status"] is ConsentStatus.granted and back["in_force"] is False
    assert back["purpose"] is ConsentPurpose.transactional


def test_a_consent_from_an_ehr_without_provision():
    assert consent.from_fhir({"resourceType": "Consent", "status": "rejected"})["status"] is ConsentStatus.revoked
    assert consent.from_fhir({"resourceType": "Consent", "status": "active"})["status"] is ConsentStatus.granted


# --- Questionnaire ----------------------------------------------------------------------------

SURVEY = {
    "code": "after-visit",
    "title": {"en": "After your visit", "ar": "بعد زيارتك"},
    "questions": [
        {"id": "nps", "type": "nps",
         "text": {"en": "How likely are you to recommend us?", "ar": "ما مدى احتمال أن توصي بنا؟"}},
        {"id": "sat", "type": "csat", "text": {"en": "How satisfied were you?", "ar": "ما مدى رضاك؟"}},
        {"id": "on_time", "type": "yes_no", "text": {"en": "Were you seen on time?", "ar": "هل تمت رؤيتك في الموعد؟"}},
        {"id": "best", "type": "choice", "text": {"en": "What did you like most?", "ar": "ما الذي أعجبك أكثر؟"},
         "options": [{"value": "staff", "text": {"en": "The staff", "ar": "الطاقم"}},
                     {"value": "wait", "text": {"en": "Short wait", "ar": "قصر الانتظار"}}]},
        {"id": "comments", "type": "text", "text": {"en": "Anything else?", "ar": "هل من شيء آخر؟"}},
    ],
}


def test_a_survey_becomes_a_questionnaire_with_typed_items_and_arabic_translations():
    res = as_json(questionnaire.to_fhir(SURVEY))
    assert res["url"] == questionnaire.canonical("after-visit")
    assert res["title"] == "After your visit" and translation_of(res, "title") == "بعد زيارتك"
    items = {i["linkId"]: i for i in res["item"]}
    assert [i["type"] for i in res["item"]] == ["integer", "integer", "boolean", "choice", "string"]
    assert {e["valueInteger"] for e in items["nps"]["extension"]} == {0, 10}
    assert translation_of(items["on_time"], "text") == "هل تمت رؤيتك في الموعد؟"
    option = items["best"]["answerOption"][1]["valueCoding"]
    assert option["code"] == "wait" and option["display"] == "Short wait"
    assert translation_of(option, "display") == "قصر الانتظار"
    assert questionnaire.from_fhir(res) == SURVEY


def test_survey_answers_become_a_completed_response_and_back():
    answers = {"nps": 9, "sat": 4, "on_time": False, "best": "staff", "comments": "شكرا"}
    response = {"id": 12, "survey_code": "after-visit", "answers": answers, "authored": T0}
    res = as_json(questionnaire_response.to_fhir(response, patient_ref="Patient/41", survey=SURVEY))
    assert res["status"] == "completed" and res["questionnaire"] == "urn:sila:survey:after-visit"
    assert res["subject"] == {"reference": "Patient/41"} and res["authored"] == "2025-03-02T06:30:00Z"
    assert res["identifier"] == {"system": identifiers.SURVEY_RESPONSE, "value": "12"}
    values = {i["linkId"]: i["answer"][0] for i in res["item"]}
    assert values["nps"] == {"valueInteger": 9} and values["on_time"] == {"valueBoolean": False}
    assert values["best"]["valueCoding"]["code"] == "staff"
    back = questionnaire_response.from_fhir(res)
    assert back["answers"] == answers and back["survey_code"] == "after-visit"
    assert back["id"] == 12 and back["authored"] == T0 and back["patient_ref"] == "Patient/41"


def test_answers_without_the_survey_are_typed_by_their_values():
    res = as_json(questionnaire_response.to_fhir(
        {"survey_code": "quick", "answers": {"a": 3, "b": True, "c": "ok", "d": None}}, patient_ref="Patient/1"))
    assert [list(i["answer"][0]) for i in res["item"]] == [["valueInteger"], ["valueBoolean"], ["valueString"]]


def test_nested_answers_from_another_system_are_flattened():
    res = {"resourceType": "QuestionnaireResponse", "status": "completed",
           "questionnaire": "https://forms.example/Questionnaire/pain|2",
           "item": [{"linkId": "g", "item": [{"linkId": "score", "answer": [{"valueInteger": 3}]},
                                             {"linkId": "where", "answer": [{"valueCoding": {"code": "back"}}]}]}]}
    back = questionnaire_response.from_fhir(res)
    assert back["survey_code"] == "pain" and back["answers"] == {"score": 3, "where": "back"}


# --- Directory: Practitioner, PractitionerRole, Organization, Location, Schedule, Slot -----------

def test_practitioner_names_in_both_languages():
    res = as_json(practitioner.to_fhir(khalid()))
    assert res["identifier"] == [{"system": identifiers.PRACTITIONER, "value": "dr-khalid-alharbi"}]
    assert res["name"][0] == {"text": "Dr. Khalid Al-Harbi", "family": "Al-Harbi", "given": ["Khalid"],
                              "prefix": ["Dr."]}
    assert res["name"][1]["prefix"] == ["د."] and res["name"][1]["family"] == "الحربي"
    assert practitioner.from_fhir(res) == {"code": "dr-khalid-alharbi", "name_en": "Dr. Khalid Al-Harbi",
                                           "name_ar": "د. خالد الحربي", "active": True}


def test_a_synthea_practitioner_has_no_sila_code():
    res = {"resourceType": "Practitioner", "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "110"}],
           "name": [{"family": "Yundt", "given": ["Keeley"], "prefix": ["Dr."]}]}
    assert practitioner.from_fhir(res) == {"code": None, "name_en": "Dr. Keeley Yundt", "name_ar": None,
                                           "active": True}


def test_practitioner_role_in_its_department_with_specialty_in_both_languages():
    res = as_json(practitioner_role.to_fhir(khalid(), practitioner_ref="Practitioner/p2",
                                            organization_ref="Organization/d1"))
    assert res["practitioner"]["reference"] == "Practitioner/p2"
    assert res["organization"]["identifier"] == {"system": identifiers.DEPARTMENT, "value": "cardiology"}
    assert practitioner_role.from_fhir(res) == {
        "practitioner_code": "dr-khalid-alharbi", "practitioner_ref": "Practitioner/p2",
        "department_code": "cardiology", "organization_ref": "Organization/d1",
        "specialty_en": "Consultant Cardiologist", "specialty_ar": "استشاري أمراض القلب", "active": True}


def test_the_hospital_and_its_departments():
    hospital = as_json(organization.hospital_to_fhir(HOSPITAL, resource_id="h1"))
    assert hospital["identifier"] == [{"system": identifiers.HOSPITAL, "value": "al-noor"}]
    assert hospital["name"] == "Al Noor Specialist Hospital"
    assert translation_of(hospital, "name") == "مستشفى النور التخصصي"
    assert {"system": "phone", "value": "+966112345678", "use": "work"} in hospital["telecom"]
    dept = as_json(organization.to_fhir(cardiology(), hospital_ref="Organization/h1"))
    assert dept["partOf"] == {"reference": "Organization/h1"}
    assert dept["type"][0]["coding"][0]["code"] == "dept"
    assert organization.from_fhir(dept) == {"code": "cardiology", "kind": "department", "name_en": "Cardiology",
                                            "name_ar": "أمراض القلب", "part_of_ref": "Organization/h1"}
    assert organization.from_fhir(hospital)["kind"] == "hospital"


def test_the_hospital_location_has_its_address_in_both_languages():
    res = as_json(location.to_fhir(HOSPITAL, organization_ref="Organization/h1"))
    assert res["address"]["text"] == HOSPITAL["address_en"]
    assert res["managingOrganization"] == {"reference": "Organization/h1"}
    back = location.from_fhir(res)
    assert back["address_ar"] == HOSPITAL["address_ar"] and back["phone"] == HOSPITAL["phone"]


def test_schedule_belongs_to_the_practitioner():
    res = as_json(schedule.to_fhir(khalid(), practitioner_ref="Practitioner/p2"))
    assert res["actor"][0]["reference"] == "Practitioner/p2"
    assert res["serviceType"][0]["coding"][0]["code"] == "cardiology"
    assert schedule.from_fhir(res)["practitioner_code"] == "dr-khalid-alharbi"


@pytest.mark.parametrize("status, held_until, fhir", [
    (SlotStatus.free, None, "free"),
    (SlotStatus.held, T0 + timedelta(minutes=5), "busy-tentative"),
    (SlotStatus.held, T0 - timedelta(minutes=1), "free"),   # the hold ran out
    (SlotStatus.booked, None, "busy"),
])
def test_slot_status(status, held_until, fhir):
    row = Slot(id=9, practitioner_id=2, start_at=T0, end_at=T0 + timedelta(minutes=30), status=status,
               held_until=held_until)
    res = as_json(slot.to_fhir(row, schedule_ref="Schedule/s2", now=T0))
    assert res["status"] == fhir and res["identifier"] == [{"system": identifiers.SLOT, "value": "9"}]
    assert res["start"] == "2025-03-02T06:30:00Z" and res["schedule"] == {"reference": "Schedule/s2"}
    assert slot.from_fhir(res)["sila_id"] == 9


def test_a_slot_can_name_its_schedule_by_the_practitioner_code():
    row = Slot(id=9, practitioner_id=2, start_at=T0, end_at=T0 + timedelta(minutes=30), status=SlotStatus.free)
    res = as_json(slot.to_fhir(row, practitioner_code="dr-khalid-alharbi"))
    assert res["schedule"] == {"identifier": {"system": identifiers.PRACTITIONER, "value": "dr-khalid-alharbi"}}
    with pytest.raises(ValueError):
        slot.to_fhir(row)


def test_free_slots_read_from_an_ehr_name_their_practitioner():
    sched = {"resourceType": "Schedule", "actor": [
        {"reference": "Location/1"},
        {"reference": "Practitioner/77",
         "identifier": {"system": identifiers.PRACTITIONER, "value": "dr-mona-alsaeed"}}]}
    ehr_slot = {"resourceType": "Slot", "schedule": {"reference": "Schedule/5"}, "status": "free",
                "start": "2025-03-02T12:00:00+03:00", "end": "2025-03-02T12:30:00+03:00"}
    row = slot.from_fhir(ehr_slot, sched)
    assert row["start_at"] == datetime(2025, 3, 2, 9, 0, tzinfo=timezone.utc)
    assert row["end_at"] == datetime(2025, 3, 2, 9, 30, tzinfo=timezone.utc)
    assert row["status"] is SlotStatus.free
    assert (row["practitioner_code"], row["practitioner_ref"]) == ("dr-mona-alsaeed", "Practitioner/77")
    assert slot.from_fhir({**ehr_slot, "status": "entered-in-error"})["status"] is None
