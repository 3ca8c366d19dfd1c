"""Everything Sila holds about a patient, as one FHIR R4 Bundle of type "collection" (the patient's
right of access: PDPL art. 4, GDPR art. 15 and 20 — a copy, in a common machine-readable format).

It holds what the FHIR store keeps about them (what the EHR import brought, what API clients
wrote, their surveys' answers), and Sila's own records mapped as ehr/sync.py writes them: every
appointment, every message in or out (staff's internal notes are not the patient's record), every
consent decision; plus the doctors and organisations those name, so every reference resolves."""
from __future__ import annotations

from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from crm_store.models import (
    Appointment,
    Consent,
    Conversation,
    FhirResource,
    Message,
    Patient,
    Practitioner,
    utcnow,
)
from ehr import store
from ehr.clinical import named_references
from ehr.resources import appointment as appointment_map
from ehr.resources import communication as communication_map
from ehr.resources import consent as consent_map
from ehr.resources import organization as organization_map
from ehr.resources import patient as patient_map
from ehr.resources import practitioner as practitioner_map

# Sila's own rows are mapped afresh from the CRM (their copies in the store may lag behind).
MAPPED = ("Appointment", "Communication", "Consent")


async def _ids(session: AsyncSession, kind: str, crm_ids: list[int]) -> dict[int, str]:
    """The ids Sila's store already uses for these rows (so the export matches /fhir/R4)."""
    if not crm_ids:
        return {}
    rows = await session.execute(select(FhirResource.crm_id, FhirResource.resource_id).where(
        FhirResource.resource_type == kind, FhirResource.crm_id.in_(crm_ids)))
    return dict(rows.all())


async def patient_bundle(session: AsyncSession, patient_id: int, hospital: dict, base_url: str) -> dict:
    patient = await session.get(Patient, patient_id)
    stored = await store.by_crm_id(session, "Patient", patient_id)
    resources: list[dict] = []
    if stored is not None:
        patient_ref = f"Patient/{stored.resource_id}"
        rows = (await session.scalars(select(FhirResource).where(
            FhirResource.patient_ref == patient_ref, FhirResource.deleted.is_(False)))).all()
        resources += [r.content for r in rows if not (r.resource_type in MAPPED and r.crm_id is not None)]
    else:
        patient_ref = f"Patient/{patient.id}"
        resources.append(patient_map.to_fhir(patient, resource_id=str(patient.id)))
    organization = f"Organization/{hospital['code']}" if hospital.get("code") else None

    appointments = (await session.scalars(select(Appointment).where(Appointment.patient_id == patient_id).options(
        selectinload(Appointment.slot), selectinload(Appointment.practitioner).selectinload(Practitioner.department))
        .order_by(Appointment.id))).all()
    ids = await _ids(session, "Appointment", [a.id for a in appointments])
    practitioners = {}
    for appointment in appointments:
        practitioners[appointment.practitioner.code] = appointment.practitioner
        resources.append(appointment_map.to_fhir(
            appointment, patient_ref=patient_ref, practitioner_ref=f"Practitioner/{appointment.practitioner.code}",
            slot_ref=f"Slot/{appointment.slot_id}", resource_id=ids.get(appointment.id, str(appointment.id))))

    rows = (await session.execute(select(Message, Conversation).join(Conversation).where(
        Conversation.patient_id == patient_id, Message.private.is_(False)).order_by(Message.id))).all()
    ids = await _ids(session, "Communication", [m.id for m, _ in rows])
    for message, conversation in rows:
        resources.append(communication_map.to_fhir(
            message, conversation, patient_ref=patient_ref, organization_ref=organization,
            hospital_code=hospital.get("code"), resource_id=ids.get(message.id, str(message.id))))

    consents = (await session.scalars(select(Consent).where(Consent.patient_id == patient_id)
                                      .order_by(Consent.recorded_at, Consent.id))).all()
    latest = {(c.channel, c.purpose): c.id for c in consents}
    for row in consents:
        resources.append(consent_map.to_fhir(
            row, patient_ref=patient_ref, organization_ref=organization,
            in_force=latest[(row.channel, row.purpose)] == row.id, resource_id=str(row.id)))

    for code, practitioner in sorted(practitioners.items()):
        resources.append(practitioner_map.to_fhir(practitioner, resource_id=code))
    if organization:
        resources.append(organization_map.hospital_to_fhir(hospital, resource_id=hospital["code"]))
    present = {(r["resourceType"], r.get("id")) for r in resources}
    named: set[tuple[str, str]] = set()
    named_references(resources, named)
    missing = sorted(n for n in named if n not in present)
    if missing:
        resources += (await session.scalars(select(FhirResource.content).where(
            FhirResource.deleted.is_(False),
            tuple_(FhirResource.resource_type, FhirResource.resource_id).in_(missing)))).all()

    base = base_url.rstrip("/") + "/fhir/R4"
    seen, entries = set(), []
    for resource in resources:
        key = (resource["resourceType"], resource.get("id"))
        if key in seen:
            continue
        seen.add(key)
        entries.append({"fullUrl": f"{base}/{key[0]}/{key[1]}", "resource": resource})
    bundle = Bundle.model_validate({"resourceType": "Bundle", "type": "collection",
                                    "timestamp": utcnow().isoformat(), "entry": entries})
    return bundle.model_dump(mode="json", exclude_none=True)
