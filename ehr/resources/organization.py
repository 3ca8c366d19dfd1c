"""Organization: the hospital (from its YAML) and each department (a departments row), part of it."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.organization import Organization as FhirOrganization

from crm_store.models import Department
from ehr import identifiers
from ehr.resources import (as_dict, find_identifier, has_arabic, hospital_contact, identifier, reference, text_pair,
                           translated, validated)

ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"


def hospital_to_fhir(hospital: dict, *, resource_id: str | None = None) -> dict:
    """Build the hospital's Organization from `load_hospital(...)["hospital"]`."""
    telecom, address = hospital_contact(hospital)
    return validated(FhirOrganization, {
        "resourceType": "Organization",
        **({"id": resource_id} if resource_id else {}),
        "identifier": [identifier(identifiers.HOSPITAL, hospital["code"])],
        "active": True,
        "type": [_type("prov", "Healthcare Provider")],
        **translated("name", hospital.get("name_en"), hospital.get("name_ar")),
        # The Arabic name also as an alias, so a search by name finds it on servers that ignore
        # translation extensions.
        **({"alias": [hospital["name_ar"]]} if hospital.get("name_ar") else {}),
        **({"telecom": telecom} if telecom else {}),
        **({"address": [{"use": "work", "type": "physical", **address}]} if address else {}),
    })


def to_fhir(department: Department, *, hospital_ref: str | None = None, hospital_code: str | None = None,
            resource_id: str | None = None) -> dict:
    """Build a department's Organization, part of the hospital (by id, or by its code when the id is not known)."""
    part_of = None
    if hospital_ref or hospital_code:
        by_code = identifier(identifiers.HOSPITAL, hospital_code) if hospital_code else None
        part_of = reference(hospital_ref, ident=by_code)
    return validated(FhirOrganization, {
        "resourceType": "Organization",
        **({"id": resource_id} if resource_id else {}),
        "identifier": [identifier(identifiers.DEPARTMENT, department.code)],
        "active": True,
        "type": [_type("dept", "Hospital Department")],
        **translated("name", department.name_en, department.name_ar),
        **({"alias": [department.name_ar]} if department.name_ar else {}),
        **({"partOf": part_of} if part_of else {}),
    })


def from_fhir(resource: Any) -> dict:
    """Department (or hospital) columns of an Organization: `kind` says which Sila identifier it carries."""
    res = as_dict(resource)
    name_en, name_ar = text_pair(res, "name")
    if not name_ar:
        name_ar = next((a for a in res.get("alias") or [] if isinstance(a, str) and has_arabic(a)), None)
    department = find_identifier(res, identifiers.DEPARTMENT)
    hospital = find_identifier(res, identifiers.HOSPITAL)
    return {"code": department or hospital, "kind": "department" if department else "hospital" if hospital else None,
            "name_en": name_en, "name_ar": name_ar,
            "part_of_ref": (res.get("partOf") or {}).get("reference") if isinstance(res.get("partOf"), dict) else None}


def _type(code: str, display: str) -> dict:
    return {"coding": [{"system": ORGANIZATION_TYPE, "code": code, "display": display}], "text": display}
