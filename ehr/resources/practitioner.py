"""Practitioner ↔ practitioners row: the doctor's code and name in English and Arabic."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.practitioner import Practitioner as FhirPractitioner

from crm_store.models import Practitioner
from ehr import identifiers
from ehr.resources import (
    LANGUAGE_EXT,
    as_dict,
    clean,
    find_identifier,
    has_arabic,
    identifier,
    listed,
    reference,
    validated,
)

# Titles written before a doctor's name in the hospital's directory ("Dr. Khalid", «د. خالد»).
_PREFIXES = ("dr.", "dr", "prof.", "prof", "د.", "د", "أ.د.", "الدكتور", "الدكتورة", "دكتور", "دكتورة")


def to_fhir(practitioner: Practitioner, *, resource_id: str | None = None) -> dict:
    """Build the FHIR Practitioner of a practitioners row."""
    names = [n for n in (human_name(practitioner.name_en), human_name(practitioner.name_ar, "ar")) if n]
    return validated(FhirPractitioner, {
        "resourceType": "Practitioner",
        **({"id": resource_id} if resource_id else {}),
        "identifier": [identifier(identifiers.PRACTITIONER, practitioner.code)],
        "active": practitioner.active is not False,
        **({"name": names} if names else {}),
    })


def from_fhir(resource: Any) -> dict:
    """CRM column values of a FHIR Practitioner (`code` is None unless Sila's identifier is on it)."""
    res = as_dict(resource)
    en = ar = None
    for name in listed(res.get("name")):
        text = display_name(name)
        if not text:
            continue
        lang = next((e.get("valueCode") for e in listed(name.get("extension")) if e.get("url") == LANGUAGE_EXT), None)
        arabic = (lang or "").lower().startswith("ar") if lang else has_arabic(text)
        if arabic:
            ar = ar or text
        else:
            en = en or text
    return {"code": find_identifier(res, identifiers.PRACTITIONER), "name_en": en, "name_ar": ar,
            "active": res.get("active") is not False}


def human_name(full: str | None, language: str | None = None) -> dict | None:
    """A HumanName from a directory name: the title as prefix, the last word as family name."""
    full = clean(full)
    if not full:
        return None
    words = full.split(" ")
    prefix = [words.pop(0)] if len(words) > 1 and words[0].lower() in _PREFIXES else []
    name: dict = {"text": full}
    if len(words) > 1:
        name["family"] = words[-1]
        name["given"] = words[:-1]
    else:
        name["family"] = words[0]
    if prefix:
        name["prefix"] = prefix
    if language:
        name["extension"] = [{"url": LANGUAGE_EXT, "valueCode": language}]
    return name


def display_name(name: Any) -> str | None:
    """A HumanName as people read it: its text, else prefix, given and family names."""
    if not isinstance(name, dict):
        return None
    if isinstance(name.get("text"), str) and name["text"].strip():
        return clean(name["text"])
    parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family")]
    return clean(" ".join(p for p in parts if isinstance(p, str)))


def reference_to(practitioner: Practitioner, ref: str | None = None) -> dict:
    """A Reference to a practitioner: by id when known, always with Sila's identifier and the name."""
    return reference(ref, display=practitioner.name_en,
                     ident=identifier(identifiers.PRACTITIONER, practitioner.code))


def code_of(ref: Any) -> str | None:
    """The practitioner code a Reference carries in Sila's identifier, if any."""
    ident = ref.get("identifier") if isinstance(ref, dict) else None
    if isinstance(ident, dict) and ident.get("system") == identifiers.PRACTITIONER and ident.get("value"):
        return str(ident["value"])
    return None
