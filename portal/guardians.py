"""Guardians acting for a child's record in the portal.

A link is made by staff (`sila portal guardian add`) or read from what the EHR import stored
(`sila portal guardian from-ehr`): a RelatedPerson, or a Patient.contact, whose relationship is a
parent or a legal guardian and whose phone number belongs to a patient Sila knows. An emergency
contact or next of kin is not a guardian and is never linked.

A parent's access ends when the child turns 18: an adult's record is theirs alone. A legal
guardian (GUARD, appointed for a person who cannot manage their own affairs) keeps access.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import FhirResource, GuardianLink, JourneyEvent, Patient, utcnow
from ehr import store
from ehr.resources import concept_text, listed, parse_date
from ehr.resources import patient as patient_map

ADULT = 18
LEGAL_GUARDIAN = "GUARD"
# v3 RoleCode relationships that make someone responsible for a child's care.
PARENTAL = {"PRN", "MTH", "FTH", "NPRN", "NMTH", "NFTH", "STPPRN", "STPMTH", "STPFTH", "ADOPTP", "ADOPTM",
            "ADOPTF", "PRNFOST", "MTHFOST", "FTHFOST", LEGAL_GUARDIAN}
_WORDS = {"parent": "PRN", "mother": "MTH", "father": "FTH", "guardian": LEGAL_GUARDIAN,
          "legal guardian": LEGAL_GUARDIAN}


def age_on(born: date | None, today: date) -> int | None:
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def honoured(link: GuardianLink, child: Patient, today: date | None = None) -> bool:
    if link.ended_at is not None:
        return False
    if link.relationship.upper() == LEGAL_GUARDIAN:
        return True
    age = age_on(child.birth_date, today or utcnow().date())
    return age is None or age < ADULT


async def wards(session: AsyncSession, guardian_id: int) -> list[Patient]:
    """The records this patient may act for besides their own, by name."""
    rows = (await session.execute(select(GuardianLink, Patient).join(Patient, Patient.id == GuardianLink.child_id)
                                  .where(GuardianLink.guardian_id == guardian_id, GuardianLink.ended_at.is_(None))
                                  .order_by(Patient.id))).all()
    return [child for link, child in rows if honoured(link, child)]


async def may_act_for(session: AsyncSession, guardian_id: int, patient_id: int) -> bool:
    return patient_id == guardian_id or any(c.id == patient_id for c in await wards(session, guardian_id))


async def guardians_of(session: AsyncSession, child_id: int) -> list[Patient]:
    child = await session.get(Patient, child_id)
    rows = (await session.execute(select(GuardianLink, Patient).join(Patient, Patient.id == GuardianLink.guardian_id)
                                  .where(GuardianLink.child_id == child_id, GuardianLink.ended_at.is_(None)))).all()
    return [guardian for link, guardian in rows if child and honoured(link, child)]


async def link(session: AsyncSession, guardian_id: int, child_id: int, relationship: str = "PRN",
               source: str = "staff") -> GuardianLink:
    """Link (or link again) a guardian to a child's record."""
    if guardian_id == child_id:
        raise ValueError("a patient is not their own guardian")
    for patient_id in (guardian_id, child_id):
        if await session.get(Patient, patient_id) is None:
            raise ValueError(f"no patient #{patient_id}")
    found = await session.scalar(select(GuardianLink).where(GuardianLink.guardian_id == guardian_id,
                                                            GuardianLink.child_id == child_id))
    if found is None:
        found = GuardianLink(guardian_id=guardian_id, child_id=child_id)
        session.add(found)
    found.relationship, found.source, found.ended_at = relationship.upper()[:40], source[:100], None
    session.add(JourneyEvent(patient_id=child_id, kind="guardian_linked", reference=str(guardian_id),
                             data={"relationship": found.relationship, "source": found.source}))
    await session.flush()
    return found


async def unlink(session: AsyncSession, guardian_id: int, child_id: int) -> bool:
    found = await session.scalar(select(GuardianLink).where(
        GuardianLink.guardian_id == guardian_id, GuardianLink.child_id == child_id, GuardianLink.ended_at.is_(None)))
    if found is None:
        return False
    found.ended_at = utcnow()
    session.add(JourneyEvent(patient_id=child_id, kind="guardian_unlinked", reference=str(guardian_id)))
    return True


# --- from the EHR ----------------------------------------------------------------------------

@dataclass
class _Person:
    """A parent or guardian as the EHR describes them."""

    relationship: str
    phones: list[str]
    given: str | None
    birth_date: date | None
    source: str
    name: dict | None


def _relationship(concepts) -> str | None:
    for concept in listed(concepts):
        for coding in listed(concept.get("coding")):
            if str(coding.get("code", "")).upper() in PARENTAL:
                return str(coding["code"]).upper()
        if (word := (concept_text(concept) or "").strip().lower()) in _WORDS:
            return _WORDS[word]
    return None


def _phones(telecom, region: str, country: str | None) -> list[str]:
    found = [patient_map.normalise_phone(t.get("value"), region, country) for t in listed(telecom)
             if t.get("system") in ("phone", "sms")]
    return list(dict.fromkeys(p for p in found if p))


def _names(name) -> list[dict]:
    """HumanNames: RelatedPerson.name is a list, Patient.contact.name a single one."""
    return list(listed(name)) if isinstance(name, list) else [name] if isinstance(name, dict) else []


def _given(name) -> str | None:
    for human in _names(name):
        for given in human.get("given") or []:
            if isinstance(given, str) and given.strip():
                return given.strip().lower()
    return None


def _people(resource: dict, region: str, country: str | None) -> list[_Person]:
    kind = resource["resourceType"]
    if kind == "RelatedPerson":
        relationship = _relationship(resource.get("relationship"))
        return [_Person(relationship, _phones(resource.get("telecom"), region, country), _given(resource.get("name")),
                        parse_date(resource.get("birthDate")), f"ehr:RelatedPerson/{resource['id']}",
                        resource.get("name"))] if relationship and resource.get("active", True) else []
    people = []
    for number, contact in enumerate(listed(resource.get("contact"))):
        relationship = _relationship(contact.get("relationship"))
        if relationship:
            people.append(_Person(relationship, _phones(contact.get("telecom"), region, country),
                                  _given(contact.get("name")), None,
                                  f"ehr:Patient/{resource['id']}#contact{number}", contact.get("name")))
    return people


async def _guardian_for(session: AsyncSession, person: _Person) -> Patient | None:
    """The CRM patient this parent is: by phone, told apart by birth date or first name."""
    if not person.phones:
        return None
    candidates = (await session.scalars(select(Patient).where(Patient.phone.in_(person.phones))
                                        .order_by(Patient.id))).all()
    if person.birth_date:
        candidates = [p for p in candidates if p.birth_date == person.birth_date]
    elif person.given:
        named = [p for p in candidates if (p.given_name_en or "").lower() == person.given
                 or (p.given_name_ar or "") == person.given]
        candidates = named or (candidates if len(candidates) == 1 else [])
    if len(candidates) == 1:
        return candidates[0]
    if not candidates and person.birth_date and person.source.startswith("ehr:RelatedPerson/"):
        # A parent who is not a patient here still needs to sign in for their child: with a
        # phone and a birth date from the EHR they can, as a record of their own.
        fields = patient_map.from_fhir({"resourceType": "Patient", "name": _names(person.name),
                                        "birthDate": person.birth_date.isoformat()})
        guardian = Patient(**{k: v for k, v in fields.items() if v is not None}, phone=person.phones[0])
        session.add(guardian)
        await session.flush()
        session.add(JourneyEvent(patient_id=guardian.id, kind="created_as_guardian", reference=person.source))
        return guardian
    return None


async def link_from_ehr(session: AsyncSession, region: str = "SA") -> int:
    """Link the parents and guardians the imported records name; returns how many links are new."""
    rows = (await session.scalars(select(FhirResource).where(
        FhirResource.resource_type.in_(("RelatedPerson", "Patient")), FhirResource.deleted.is_(False)))).all()
    children = await store.crm_patient_ids(session, [r.patient_ref for r in rows if r.patient_ref])
    made = 0
    for row in rows:
        child_id = children.get(row.patient_ref)
        child = await session.get(Patient, child_id) if child_id else None
        if child is None:
            continue
        country = _country(row.content)
        for person in _people(row.content, region, country):
            guardian = await _guardian_for(session, person)
            if guardian is None or guardian.id == child.id:
                continue
            existing = await session.scalar(select(GuardianLink).where(
                GuardianLink.guardian_id == guardian.id, GuardianLink.child_id == child.id))
            if existing is None:
                await link(session, guardian.id, child.id, person.relationship, person.source)
                made += 1
    return made


def _country(resource: dict) -> str | None:
    for address in listed(resource.get("address")):
        if isinstance(address.get("country"), str) and len(address["country"]) == 2:
            return address["country"].upper()
    return None
