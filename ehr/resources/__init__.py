"""FHIR R4 (R4B models) views of Sila's CRM rows: one module per resource.

Each module's `to_fhir(...)` builds its resource as FHIR JSON in one validated step (`validated`:
the fhir.resources model checks it), and `from_fhir(resource)` reads a resource (a JSON dict, or a
model) back into CRM column values. References to other resources are given by the caller as
strings ("Patient/123"), because the same row is written once with Sila's own ids and once with the
hospital EHR's ids. Nothing here touches the database: callers pass loaded ORM rows.

The helpers below are shared by the resource modules."""
from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from typing import Any, Iterable

# A HumanName, Address or string "in" a language. FHIR's own comment on it: "used where an item may
# repeat to indicate the language of each repeat" — exactly a patient's English and Arabic names.
LANGUAGE_EXT = "http://hl7.org/fhir/StructureDefinition/language"
# A translation of a primitive string, carried on its `_field` sibling: the English text stays the
# value every FHIR client shows, the Arabic rides beside it.
TRANSLATION_EXT = "http://hl7.org/fhir/StructureDefinition/translation"
BCP47 = "urn:ietf:bcp:47"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"

_ARABIC = re.compile(r"[\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFF]")

# How each channel carries a message, in v3 ParticipationMode (the binding of Communication.medium).
# MSGWRIT is "messaging, typically from a mobile phone ... includes online chat" (SMS, WhatsApp,
# Telegram, web chat); the channel's own name stays in the concept's text.
CHANNEL_MODES = {
    "sms": ("MSGWRIT", "messaging"),
    "whatsapp": ("MSGWRIT", "messaging"),
    "telegram": ("MSGWRIT", "messaging"),
    "webchat": ("MSGWRIT", "messaging"),
    "slack": ("MSGWRIT", "messaging"),
    "email": ("EMAILWRIT", "email"),
    "voice": ("PHONE", "telephone"),
    "portal": ("ONLINEWRIT", "online written"),
}
_MODE_CHANNEL = {"EMAILWRIT": "email", "PHONE": "voice", "ONLINEWRIT": "portal"}


def as_dict(resource: Any) -> dict:
    """Return a resource as a JSON dict, whether given as a dict or a fhir.resources model."""
    if isinstance(resource, dict):
        return resource
    if hasattr(resource, "model_dump_json"):
        return json.loads(resource.model_dump_json())
    raise TypeError(f"not a FHIR resource: {type(resource).__name__}")


def has_arabic(text: str | None) -> bool:
    return bool(text and _ARABIC.search(text))


def clean(text: Any) -> str | None:
    """Collapse whitespace; FHIR strings may not be empty or padded."""
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text or None


def identifier(system: str, value: Any, *, type_code: str | None = None, type_text: str | None = None) -> dict:
    ident: dict = {"system": system, "value": str(value)}
    if type_code:
        ident["type"] = {"coding": [{"system": V2_0203, "code": type_code}], "text": type_text or type_code}
    return ident


def find_identifier(resource: dict, system: str) -> str | None:
    """The value of the resource's identifier in `system`, if any."""
    for ident in _list(resource.get("identifier")):
        if isinstance(ident, dict) and ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def reference(ref: str | None = None, *, display: str | None = None, ident: dict | None = None) -> dict:
    """A Reference by literal id, by business identifier (when the target's id is not known), or both."""
    out: dict = {}
    if ref:
        out["reference"] = ref
    if ident:
        out["identifier"] = ident
    if display:
        out["display"] = display
    if not out:
        raise ValueError("a reference needs an id or an identifier")
    return out


def ref_of(value: Any) -> str | None:
    return value.get("reference") if isinstance(value, dict) else None


def translated(element: str, en: str | None, ar: str | None) -> dict:
    """`{element: en, "_element": <Arabic translation>}`; Arabic alone when there is no English."""
    en, ar = clean(en), clean(ar)
    if not en:
        return {element: ar} if ar else {}
    out: dict = {element: en}
    if ar and ar != en:
        out["_" + element] = {"extension": [{"url": TRANSLATION_EXT, "extension": [
            {"url": "lang", "valueCode": "ar"}, {"url": "content", "valueString": ar}]}]}
    return out


def translation_of(parent: dict, element: str, language: str = "ar") -> str | None:
    """The `language` translation of `parent[element]`, read from `parent["_" + element]`."""
    meta = parent.get("_" + element)
    for ext in _list(meta.get("extension") if isinstance(meta, dict) else None):
        if not isinstance(ext, dict) or ext.get("url") != TRANSLATION_EXT:
            continue
        parts = {p.get("url"): p for p in _list(ext.get("extension")) if isinstance(p, dict)}
        lang = (parts.get("lang") or {}).get("valueCode") or ""
        if lang.split("-")[0].lower() == language:
            return clean((parts.get("content") or {}).get("valueString"))
    return None


def text_pair(parent: dict, element: str) -> tuple[str | None, str | None]:
    """(English, Arabic) of a translated string: an Arabic-script value with no translation is Arabic."""
    value = clean(parent.get(element)) if isinstance(parent.get(element), str) else None
    ar = translation_of(parent, element)
    if value and has_arabic(value) and not ar:
        return None, value
    return value, ar


def concept_text(concept: Any) -> str | None:
    """The human text of a CodeableConcept: its text, else the first coding's display or code."""
    if not isinstance(concept, dict):
        return None
    if isinstance(concept.get("text"), str) and concept["text"].strip():
        return concept["text"].strip()
    for coding in _list(concept.get("coding")):
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return None


def codes(concept: Any) -> list[tuple[str | None, str]]:
    """(system, code) of every coding of a CodeableConcept."""
    if not isinstance(concept, dict):
        return []
    return [(c.get("system"), str(c["code"])) for c in _list(concept.get("coding"))
            if isinstance(c, dict) and c.get("code") is not None]


def has_code(concept: Any, system: str, code: str) -> bool:
    return (system, code) in codes(concept)


def instant(value: datetime) -> str:
    """A CRM time as FHIR JSON writes it ("2025-03-02T06:30:00Z"). FHIR instants need a zone; the
    CRM stores aware UTC times and a naive one is a bug upstream."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: CRM times are aware UTC")
    return value.isoformat().replace("+00:00", "Z")


def validated(model: type, data: dict) -> dict:
    """`data`, once `model` (fhir.resources) has accepted it. The mappings build plain JSON values
    (times with `instant`), so `data` is already the resource's FHIR JSON: the model's own
    serialisation, which costs more than the validation, is not needed (the round-trip tests check
    that the two agree)."""
    model.model_validate(data)
    return data


def parse_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime from a FHIR dateTime/instant; a date alone is midnight UTC. Partial or
    zone-less values (FHIR allows "2020", "2020-05", and local times) come back as None or UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, date):
        result = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) < 10:
            return None
        try:
            result = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if result.tzinfo is None:
        result = result.replace(tzinfo=timezone.utc)
    return result.astimezone(timezone.utc)


def parse_date(value: Any) -> date | None:
    """A full date; FHIR's partial dates ("1970", "1970-05") are not a birth date Sila can use."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value.strip()) >= 10:
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


def channel_medium(channel: str) -> dict:
    code, display = CHANNEL_MODES.get(channel, ("ELECTRONIC", "electronic data"))
    return {"coding": [{"system": PARTICIPATION_MODE, "code": code, "display": display}], "text": channel}


def medium_channel(concept: Any) -> str | None:
    """The Sila channel a medium stands for: its text when Sila wrote it, else the nearest channel."""
    if not isinstance(concept, dict):
        return None
    text = (concept.get("text") or "").strip().lower()
    if text in CHANNEL_MODES:
        return text
    for system, code in codes(concept):
        if system == PARTICIPATION_MODE and code in _MODE_CHANNEL:
            return _MODE_CHANNEL[code]
    return text or None


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def listed(value: Any) -> Iterable[dict]:
    """The dict items of a FHIR list element (anything else in it is skipped)."""
    return (v for v in _list(value) if isinstance(v, dict))


def hospital_contact(hospital: dict) -> tuple[list[dict], dict]:
    """The hospital's telecom list and address (text in English with its Arabic translation)."""
    telecom = [{"system": system, "value": hospital[key], "use": "work"}
               for system, key in (("phone", "phone"), ("email", "email"), ("url", "maps_url")) if hospital.get(key)]
    address = translated("text", hospital.get("address_en"), hospital.get("address_ar"))
    if address and hospital.get("country"):
        address["country"] = hospital["country"]
    return telecom, address
