"""Location: where the hospital is (its address, phone and map link), from the hospital YAML."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.location import Location as FhirLocation

from ehr import identifiers
from ehr.resources import (
    as_dict,
    find_identifier,
    hospital_contact,
    identifier,
    listed,
    reference,
    text_pair,
    translated,
    validated,
)

LOCATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def to_fhir(hospital: dict, *, organization_ref: str | None = None, resource_id: str | None = None) -> dict:
    """Build the hospital's Location from `load_hospital(...)["hospital"]`, managed by its Organization."""
    telecom, address = hospital_contact(hospital)
    return validated(FhirLocation, {
        "resourceType": "Location",
        **({"id": resource_id} if resource_id else {}),
        "identifier": [identifier(identifiers.HOSPITAL, hospital["code"])],
        "status": "active",
        "mode": "instance",
        **translated("name", hospital.get("name_en"), hospital.get("name_ar")),
        **({"alias": [hospital["name_ar"]]} if hospital.get("name_ar") else {}),
        # HOSP: "a health care facility that provides ... diagnostic and treatment services".
        "type": [{"coding": [{"system": LOCATION_TYPE, "code": "HOSP", "display": "Hospital"}], "text": "Hospital"}],
        **({"telecom": telecom} if telecom else {}),
        **({"address": {"use": "work", "type": "physical", **address}} if address else {}),
        **({"managingOrganization": reference(organization_ref)} if organization_ref else {}),
    })


def from_fhir(resource: Any) -> dict:
    """The hospital fields of a Location: code, names, address, phone, e-mail."""
    res = as_dict(resource)
    name_en, name_ar = text_pair(res, "name")
    address = res.get("address") if isinstance(res.get("address"), dict) else {}
    address_en, address_ar = text_pair(address, "text")
    if not (address_en or address_ar):
        parts = [*(address.get("line") or []), address.get("city"), address.get("postalCode"), address.get("country")]
        address_en = ", ".join(p for p in parts if isinstance(p, str) and p) or None
    telecom = {t.get("system"): t.get("value") for t in reversed(list(listed(res.get("telecom"))))}
    return {"code": find_identifier(res, identifiers.HOSPITAL), "name_en": name_en, "name_ar": name_ar,
            "address_en": address_en, "address_ar": address_ar, "phone": telecom.get("phone"),
            "email": telecom.get("email"), "maps_url": telecom.get("url")}
