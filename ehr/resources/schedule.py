"""Schedule: one per practitioner, the container of their Slots."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.schedule import Schedule as FhirSchedule

from crm_store.models import Practitioner
from ehr import identifiers
from ehr.resources import as_dict, find_identifier, identifier, listed, ref_of, translated, validated
from ehr.resources.practitioner import code_of, reference_to


def to_fhir(practitioner: Practitioner, *, practitioner_ref: str | None = None,
            resource_id: str | None = None) -> dict:
    """Build a practitioner's Schedule (`department` loaded); it carries the practitioner's identifier."""
    department = practitioner.department
    service = translated("text", department.name_en, department.name_ar)
    service["coding"] = [{"system": identifiers.DEPARTMENT, "code": department.code, "display": department.name_en}]
    return validated(FhirSchedule, {
        "resourceType": "Schedule",
        **({"id": resource_id} if resource_id else {}),
        "identifier": [identifier(identifiers.PRACTITIONER, practitioner.code)],
        "active": practitioner.active is not False,
        "serviceType": [service],
        "actor": [reference_to(practitioner, practitioner_ref)],
    })


def from_fhir(resource: Any) -> dict:
    """Whose Schedule this is: the practitioner's code (Sila's identifier) and reference."""
    res = as_dict(resource)
    actors = [a for a in listed(res.get("actor")) if code_of(a) or a.get("type") == "Practitioner"
              or "Practitioner/" in str(a.get("reference") or "")]
    actor = actors[0] if actors else {}
    return {"practitioner_code": code_of(actor) or find_identifier(res, identifiers.PRACTITIONER),
            "practitioner_ref": ref_of(actor), "active": res.get("active") is not False}
