"""Slot ↔ slots row: a bookable time of one practitioner's Schedule."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fhir.resources.R4B.slot import Slot as FhirSlot

from crm_store.models import Slot, SlotStatus
from ehr import identifiers
from ehr.resources import (
    as_dict,
    find_identifier,
    identifier,
    instant,
    int_or_none,
    parse_datetime,
    ref_of,
    reference,
    validated,
)
from ehr.resources.schedule import from_fhir as schedule_from_fhir

# A slot held while a patient confirms is "busy-tentative" to everyone else.
_TO_FHIR = {SlotStatus.free: "free", SlotStatus.held: "busy-tentative", SlotStatus.booked: "busy"}
# busy-unavailable (the doctor is away) cannot be booked either; entered-in-error is no slot at all.
_FROM_FHIR = {"free": SlotStatus.free, "busy-tentative": SlotStatus.held, "busy": SlotStatus.booked,
              "busy-unavailable": SlotStatus.booked}


def to_fhir(slot: Slot, *, schedule_ref: str | None = None, practitioner_code: str | None = None,
            resource_id: str | None = None, now: datetime | None = None) -> dict:
    """Build the FHIR Slot of a slots row in its practitioner's Schedule, referenced by id or, when
    the id is not known, by the Schedule's identifier (the practitioner's code)."""
    status = SlotStatus(slot.status or SlotStatus.free)
    # A hold that has run out is free again: the next patient may take it (crm_store/appointments.py).
    if status is SlotStatus.held and slot.held_until and slot.held_until < (now or datetime.now(timezone.utc)):
        status = SlotStatus.free
    return validated(FhirSlot, {
        "resourceType": "Slot",
        **({"id": resource_id} if resource_id else {}),
        **({"identifier": [identifier(identifiers.SLOT, slot.id)]} if slot.id is not None else {}),
        "schedule": reference(schedule_ref, ident=identifier(identifiers.PRACTITIONER, practitioner_code)
                              if practitioner_code else None),
        "status": _TO_FHIR[status],
        "start": instant(slot.start_at),
        "end": instant(slot.end_at),
    })


def from_fhir(resource: Any, schedule: Any = None) -> dict:
    """Start, end and status of a FHIR Slot (an EHR's free times), with the practitioner of its Schedule.

    `status` is None for a slot entered in error (or with a status Sila does not know): skip it."""
    res = as_dict(resource)
    owner = schedule_from_fhir(schedule) if schedule is not None else {}
    return {
        "sila_id": int_or_none(find_identifier(res, identifiers.SLOT)),
        "start_at": parse_datetime(res.get("start")),
        "end_at": parse_datetime(res.get("end")),
        "status": _FROM_FHIR.get(res.get("status")),
        "schedule_ref": ref_of(res.get("schedule")),
        "practitioner_code": owner.get("practitioner_code"),
        "practitioner_ref": owner.get("practitioner_ref"),
    }
