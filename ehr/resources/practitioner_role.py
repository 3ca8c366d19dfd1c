"""PractitionerRole: a doctor in their department, with their specialty in English and Arabic."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.practitionerrole import PractitionerRole as FhirPractitionerRole

from crm_store.models import Practitioner
from ehr import identifiers
from ehr.resources import (
    as_dict,
    find_identifier,
    identifier,
    listed,
    ref_of,
    reference,
    text_pair,
    translated,
    validated,
)
from ehr.resources.practitioner import code_of, reference_to

PRACTITIONER_ROLE = "http://terminology.hl7.org/CodeSystem/practitioner-role"


def to_fhir(practitioner: Practitioner, *, practitioner_ref: str | None = None, organization_ref: str | None = None,
            location_ref: str | None = None, resource_id: str | None = None) -> dict:
    """Build the role of a practitioners row (its `department` loaded) in its department's Organization.

    A practitioner has one role in Sila, so the role carries the practitioner's identifier."""
    department = practitioner.department
    organization = reference(organization_ref, display=department.name_en,
                             ident=identifier(identifiers.DEPARTMENT, department.code))
    specialty = translated("text", practitioner.specialty_en, practitioner.specialty_ar)
    return validated(FhirPractitionerRole, {
        "resourceType": "PractitionerRole",
        **({"id": resource_id} if resource_id else {}),
        "identifier": [identifier(identifiers.PRACTITIONER, practitioner.code)],
        "active": practitioner.active is not False,
        "practitioner": reference_to(practitioner, practitioner_ref),
        "organization": organization,
        "code": [{"coding": [{"system": PRACTITIONER_ROLE, "code": "doctor", "display": "Doctor"}], "text": "Doctor"}],
        **({"specialty": [specialty]} if specialty else {}),
        **({"location": [reference(location_ref)]} if location_ref else {}),
    })


def from_fhir(resource: Any) -> dict:
    """The practitioner, department and specialty (English, Arabic) of a PractitionerRole."""
    res = as_dict(resource)
    org = res.get("organization") if isinstance(res.get("organization"), dict) else {}
    org_ident = org.get("identifier") if isinstance(org.get("identifier"), dict) else {}
    specialty_en = specialty_ar = None
    for concept in listed(res.get("specialty")):
        specialty_en, specialty_ar = text_pair(concept, "text")
        if specialty_en or specialty_ar:
            break
    return {
        "practitioner_code": code_of(res.get("practitioner")) or find_identifier(res, identifiers.PRACTITIONER),
        "practitioner_ref": ref_of(res.get("practitioner")),
        "department_code": org_ident.get("value") if org_ident.get("system") == identifiers.DEPARTMENT else None,
        "organization_ref": ref_of(org),
        "specialty_en": specialty_en, "specialty_ar": specialty_ar,
        "active": res.get("active") is not False,
    }
