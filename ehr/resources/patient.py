"""Patient ↔ patients row: names in English and Arabic, birth date, sex, phone, e-mail, language, MRN."""
from __future__ import annotations

from typing import Any

import phonenumbers
from fhir.resources.R4B.patient import Patient as FhirPatient

from crm_store.models import Patient
from ehr import identifiers
from ehr.resources import (
    BCP47,
    LANGUAGE_EXT,
    V2_0203,
    as_dict,
    clean,
    find_identifier,
    has_arabic,
    identifier,
    int_or_none,
    listed,
    parse_date,
    parse_datetime,
    validated,
)

DEFAULT_MRN_SYSTEM = "urn:sila:mrn"
# No national registry URI is assumed: a deployment whose EHR names one (e.g. its country's national
# id namespace) passes it as `national_id_system`.
DEFAULT_NATIONAL_ID_SYSTEM = "urn:sila:national-id"

# v2 table 0203 identifier types read as a national id, best first: NI (national unique individual
# identifier), NNxxx (national person identifier of country xxx), SS (US social security number,
# what Synthea writes).
_NATIONAL_TYPES = ("NI", "NN", "SS")
_NATIONAL_SYSTEMS = {"http://hl7.org/fhir/sid/us-ssn": "SS"}

# administrative-gender codes are stored as they are; a few legacy spellings are accepted going out.
_GENDERS = {"male": "male", "m": "male", "female": "female", "f": "female", "other": "other",
            "o": "other", "unknown": "unknown", "u": "unknown"}
_LANGUAGE_NAMES = {"ar": ("Arabic", "العربية"), "en": ("English", "الإنجليزية")}
_SKIPPED_NAME_USES = ("old", "maiden")


def to_fhir(patient: Patient, *, resource_id: str | None = None, mrn_system: str = DEFAULT_MRN_SYSTEM,
            national_id_system: str = DEFAULT_NATIONAL_ID_SYSTEM) -> dict:
    """Build the FHIR Patient of a patients row."""
    idents = []
    if patient.id is not None:
        idents.append(identifier(identifiers.PATIENT, patient.id))
    if patient.mrn:
        idents.append(identifier(mrn_system, patient.mrn, type_code="MR", type_text="Medical record number"))
    if patient.national_id:
        idents.append(identifier(national_id_system, patient.national_id, type_code="NI",
                                 type_text="National identifier"))
    names = [n for n in (_name(patient.given_name_en, patient.family_name_en, None),
                         _name(patient.given_name_ar, patient.family_name_ar, "ar")) if n]
    telecom = []
    if patient.phone:
        telecom.append({"system": "phone", "value": patient.phone, "use": "mobile"})
    if patient.email:
        telecom.append({"system": "email", "value": patient.email})
    data: dict[str, Any] = {"resourceType": "Patient", "id": resource_id, "identifier": idents or None,
                            "name": names or None, "telecom": telecom or None,
                            "gender": _GENDERS.get((patient.sex or "").strip().lower()),
                            "birthDate": patient.birth_date.isoformat() if patient.birth_date else None}
    if patient.preferred_language in _LANGUAGE_NAMES:
        en = _LANGUAGE_NAMES[patient.preferred_language][0]
        data["communication"] = [{"language": {"coding": [{"system": BCP47, "code": patient.preferred_language,
                                                           "display": en}], "text": en}, "preferred": True}]
    return validated(FhirPatient, {k: v for k, v in data.items() if v is not None})


def from_fhir(resource: Any, *, region: str = "SA", mrn_system: str | None = None) -> dict:
    """CRM column values of a FHIR Patient from any system; what it lacks comes back as None.

    `region` is the hospital's country, used to read phone numbers written without a country code;
    `mrn_system` picks the hospital's MRN when the patient carries several. Only columns a caller may
    write are returned (never `id`: see `sila_id`)."""
    res = as_dict(resource)
    en, ar = _names(res)
    country = _address_country(res)
    return {
        "mrn": _mrn(res, mrn_system),
        "national_id": _national_id(res),
        "given_name_en": en[0], "family_name_en": en[1],
        "given_name_ar": ar[0], "family_name_ar": ar[1],
        "birth_date": parse_date(res.get("birthDate")),
        "sex": res.get("gender") if res.get("gender") in ("male", "female", "other", "unknown") else None,
        "preferred_language": _language(res),
        "phone": _phone(res, region, country),
        "email": _email(res),
    }


def sila_id(resource: Any) -> int | None:
    """The patients.id a Patient carries in Sila's identifier: it names a row of the Sila that wrote
    it, which is this Sila's only when the resource came from here."""
    return int_or_none(find_identifier(as_dict(resource), identifiers.PATIENT))


def normalise_phone(raw: str | None, region: str = "SA", country: str | None = None) -> str | None:
    """E.164 form of a phone number as people and EHRs write it ("0501234567", "555-605-8177").

    A number written without its country code is read as the hospital's (`region`) or as the patient's
    own address country. phonenumbers calls a number "possible" on its length alone, so a US
    "555-605-8177" is a possible Saudi number too (+9665556058177): a reading where the number is
    valid wins, and among merely possible readings the address country comes first, since the number
    was written in that country's national format."""
    if not raw or not isinstance(raw, str):
        return None
    regions = [r for r in dict.fromkeys([country, region]) if r]
    readings = []
    for reg in regions or [None]:
        try:
            parsed = phonenumbers.parse(raw, reg)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(parsed):
            readings.append((not phonenumbers.is_valid_number(parsed), regions.index(reg) if reg else 0, parsed))
    if not readings:
        return None
    best = min(readings, key=lambda r: (r[0], r[1]))[2]
    return phonenumbers.format_number(best, phonenumbers.PhoneNumberFormat.E164)


def _name(given: str | None, family: str | None, language: str | None) -> dict | None:
    given, family = clean(given), clean(family)
    if not (given or family):
        return None
    name: dict = {"use": "official", "text": " ".join(p for p in (given, family) if p)}
    if family:
        name["family"] = family
    if given:
        name["given"] = [given]
    if language:
        name["extension"] = [{"url": LANGUAGE_EXT, "valueCode": language}]
    return name


def _names(res: dict) -> tuple[tuple[str | None, str | None], tuple[str | None, str | None]]:
    """((given, family) in English, (given, family) in Arabic), the best name in each language."""
    english, arabic = [], []
    for name in listed(res.get("name")):
        parts = _name_parts(name)
        if parts == (None, None):
            continue
        lang = next((e.get("valueCode") for e in listed(name.get("extension")) if e.get("url") == LANGUAGE_EXT), None)
        is_arabic = (lang or "").split("-")[0].lower() == "ar" if lang else has_arabic(" ".join(p for p in parts if p))
        (arabic if is_arabic else english).append((_rank(name), parts))
    return _best(english), _best(arabic)


def _best(found: list[tuple[int, tuple[str | None, str | None]]]) -> tuple[str | None, str | None]:
    return min(found, key=lambda f: f[0])[1] if found else (None, None)


def _rank(name: dict) -> int:
    use = name.get("use")
    ended = isinstance(name.get("period"), dict) and name["period"].get("end")
    if use in _SKIPPED_NAME_USES or ended:
        return 3
    return {"official": 0, "usual": 1, None: 1}.get(use, 2)


def _name_parts(name: dict) -> tuple[str | None, str | None]:
    given = clean(" ".join(g for g in name.get("given") or [] if isinstance(g, str)))
    family = clean(name.get("family")) if isinstance(name.get("family"), str) else None
    if given or family:
        return given, family
    # A name given only as text: the last word is taken as the family name ("Noura Al-Otaibi").
    words = (clean(name.get("text")) or "").split(" ") if isinstance(name.get("text"), str) else []
    words = [w for w in words if w]
    if not words:
        return None, None
    return (" ".join(words[:-1]) or None, words[-1]) if len(words) > 1 else (words[0], None)


def _is_type(ident: dict, code: str) -> bool:
    """Whether a v2-0203 type has this code ("NN" stands for every NNxxx country code)."""
    type_ = ident.get("type")
    return isinstance(type_, dict) and any(
        c.get("system") in (V2_0203, None)
        and (str(c.get("code")) == code or (code == "NN" and str(c.get("code", "")).startswith("NN")))
        for c in listed(type_.get("coding")))


def _mrn(res: dict, mrn_system: str | None) -> str | None:
    idents = [i for i in listed(res.get("identifier")) if i.get("value")]
    typed = [i for i in idents if _is_type(i, "MR")]
    for ident in typed + idents:
        if mrn_system and ident.get("system") == mrn_system:
            return str(ident["value"])
    return str(typed[0]["value"]) if typed else None


def _national_id(res: dict) -> str | None:
    idents = [i for i in listed(res.get("identifier")) if i.get("value")]
    for code in _NATIONAL_TYPES:
        for ident in idents:
            if _is_type(ident, code) or _NATIONAL_SYSTEMS.get(ident.get("system")) == code:
                return str(ident["value"])
    return None


def _language(res: dict) -> str | None:
    comms = list(listed(res.get("communication")))
    comms.sort(key=lambda c: not c.get("preferred"))
    for comm in comms:
        concept = comm.get("language") if isinstance(comm.get("language"), dict) else {}
        for coding in listed(concept.get("coding")):
            code = str(coding.get("code") or "").split("-")[0].lower()
            if code in _LANGUAGE_NAMES:
                return code
        text = (concept.get("text") or "").strip().lower()
        for code, (en, ar) in _LANGUAGE_NAMES.items():
            if text in (en.lower(), ar):
                return code
    return None


def _current(point: dict) -> bool:
    period = point.get("period")
    end = parse_datetime(period.get("end")) if isinstance(period, dict) else None
    return point.get("use") != "old" and end is None


def _phone(res: dict, region: str, country: str | None) -> str | None:
    points = [p for p in listed(res.get("telecom")) if p.get("system") in ("phone", "sms") and p.get("value")]
    points.sort(key=lambda p: (not _current(p), p.get("use") != "mobile", p.get("rank") or 99))
    for point in points:
        number = normalise_phone(str(point["value"]), region, country)
        if number:
            return number
    return None


def _email(res: dict) -> str | None:
    for point in listed(res.get("telecom")):
        if point.get("system") == "email" and isinstance(point.get("value"), str) and _current(point):
            return point["value"].strip() or None
    return None


# Country names and alpha-3 codes seen in address.country besides alpha-2 codes (a short list:
# the hospital's region and its neighbours, and the countries Synthea-style test data uses).
_COUNTRY_NAMES = {
    "saudi arabia": "SA", "kingdom of saudi arabia": "SA", "ksa": "SA", "sau": "SA", "السعودية": "SA",
    "المملكة العربية السعودية": "SA", "united arab emirates": "AE", "uae": "AE", "are": "AE",
    "kuwait": "KW", "kwt": "KW", "qatar": "QA", "qat": "QA", "bahrain": "BH", "bhr": "BH", "oman": "OM",
    "omn": "OM", "jordan": "JO", "jor": "JO", "egypt": "EG", "egy": "EG", "lebanon": "LB", "lbn": "LB",
    "syria": "SY", "syr": "SY", "iraq": "IQ", "irq": "IQ", "yemen": "YE", "yem": "YE", "sudan": "SD",
    "sdn": "SD", "pakistan": "PK", "pak": "PK", "india": "IN", "ind": "IN", "philippines": "PH",
    "phl": "PH", "bangladesh": "BD", "bgd": "BD", "indonesia": "ID", "idn": "ID",
    "united states": "US", "united states of america": "US", "usa": "US", "united kingdom": "GB",
    "uk": "GB", "gbr": "GB", "canada": "CA", "can": "CA",
}


def _address_country(res: dict) -> str | None:
    """The ISO 3166 alpha-2 code of the patient's current address country ("US", "Saudi Arabia" → SA)."""
    for address in sorted(listed(res.get("address")), key=lambda a: a.get("use") == "old"):
        country = address.get("country").strip() if isinstance(address.get("country"), str) else ""
        if len(country) == 2 and country.upper() in phonenumbers.SUPPORTED_REGIONS:
            return country.upper()
        if country.lower() in _COUNTRY_NAMES:
            return _COUNTRY_NAMES[country.lower()]
    return None
