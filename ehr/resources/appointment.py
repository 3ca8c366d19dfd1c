"""Appointment ↔ appointments row: who, with whom, when, in which slot, and its status."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.appointment import Appointment as FhirAppointment

from crm_store.models import Appointment, AppointmentStatus
from ehr import identifiers
from ehr.resources import (
    as_dict,
    find_identifier,
    identifier,
    instant,
    listed,
    parse_datetime,
    ref_of,
    reference,
    translated,
    validated,
)
from ehr.resources.practitioner import code_of, reference_to

PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

_TO_FHIR = {AppointmentStatus.booked: "booked", AppointmentStatus.cancelled: "cancelled",
            AppointmentStatus.fulfilled: "fulfilled", AppointmentStatus.noshow: "noshow"}
# An EHR's arrived/checked-in visit is still the booking Sila knows; entered-in-error withdraws it.
# proposed/pending/waitlist are not bookings yet: None, the caller leaves them alone.
_FROM_FHIR = {"booked": AppointmentStatus.booked, "arrived": AppointmentStatus.booked,
              "checked-in": AppointmentStatus.booked, "fulfilled": AppointmentStatus.fulfilled,
              "cancelled": AppointmentStatus.cancelled, "entered-in-error": AppointmentStatus.cancelled,
              "noshow": AppointmentStatus.noshow}


def to_fhir(appointment: Appointment, *, patient_ref: str, practitioner_ref: str | None = None,
            slot_ref: str | None = None, resource_id: str | None = None) -> dict:
    """Build the FHIR Appointment of an appointments row.

    Needs `appointment.slot` and `appointment.practitioner.department` loaded. Without
    `practitioner_ref` the doctor is referenced by Sila's practitioner identifier alone."""
    slot, practitioner = appointment.slot, appointment.practitioner
    department = practitioner.department
    service = translated("text", department.name_en, department.name_ar)
    service["coding"] = [{"system": identifiers.DEPARTMENT, "code": department.code, "display": department.name_en}]
    specialty = translated("text", practitioner.specialty_en, practitioner.specialty_ar)
    status = AppointmentStatus(appointment.status or AppointmentStatus.booked)
    return validated(FhirAppointment, {
        "resourceType": "Appointment",
        **({"id": resource_id} if resource_id else {}),
        "identifier": [identifier(identifiers.APPOINTMENT, appointment.reference)],
        "status": _TO_FHIR[status],
        "serviceType": [service],
        **({"specialty": [specialty]} if specialty else {}),
        **translated("description", f"{department.name_en}: {practitioner.name_en}",
                     f"{department.name_ar}: {practitioner.name_ar}"),
        "start": instant(slot.start_at),
        "end": instant(slot.end_at),
        "minutesDuration": max(1, round((slot.end_at - slot.start_at).total_seconds() / 60)),
        **({"slot": [reference(slot_ref)]} if slot_ref else {}),
        **({"created": instant(appointment.created_at)} if appointment.created_at else {}),
        "participant": [
            {"actor": reference(patient_ref), "required": "required", "status": "accepted"},
            {"type": [{"coding": [{"system": PARTICIPATION_TYPE, "code": "PPRF", "display": "primary performer"}]}],
             "actor": reference_to(practitioner, practitioner_ref), "required": "required", "status": "accepted"},
        ],
    })


def from_fhir(resource: Any) -> dict:
    """Reference, status, times and participants of a FHIR Appointment.

    `status` is None for an appointment that is not a booking (proposed, pending, waitlist)."""
    res = as_dict(resource)
    patient_ref = practitioner_ref = practitioner_code = None
    for participant in listed(res.get("participant")):
        actor = participant.get("actor") if isinstance(participant.get("actor"), dict) else {}
        ref = ref_of(actor) or ""
        kind = actor.get("type") or (ref.split("/")[-2] if "/" in ref else None)
        if kind == "Patient" and not patient_ref:
            patient_ref = ref
        elif kind in ("Practitioner", "PractitionerRole") or code_of(actor):
            if not (practitioner_ref or practitioner_code):
                practitioner_ref, practitioner_code = ref or None, code_of(actor)
    slots = [ref_of(s) for s in listed(res.get("slot")) if ref_of(s)]
    return {
        "reference": find_identifier(res, identifiers.APPOINTMENT),
        "status": _FROM_FHIR.get(res.get("status")),
        "start_at": parse_datetime(res.get("start")),
        "end_at": parse_datetime(res.get("end")),
        "created_at": parse_datetime(res.get("created")),
        "patient_ref": patient_ref,
        "practitioner_ref": practitioner_ref,
        "practitioner_code": practitioner_code,
        "slot_ref": slots[0] if slots else None,
    }
