"""A CRM patient's clinical summary, from what the EHR import stored for them (the console's
patient profile and the portal's "My health" show it)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import FhirResource
from ehr import store
from ehr.summary import build_summary

CLINICAL_TYPES = ("Patient", "Condition", "AllergyIntolerance", "MedicationRequest", "Observation",
                  "DiagnosticReport", "Immunization", "CareTeam", "Coverage", "Encounter", "Claim",
                  "ExplanationOfBenefit")
# Not about one patient, but named by their records: who treated them, which clinic, which payer.
REFERENCED_TYPES = ("Practitioner", "Organization", "PractitionerRole", "Location")


def named_references(node: Any, found: set[tuple[str, str]]) -> None:
    """Add to `found` every (type, id) of a practitioner, organisation or location `node` names."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref.count("/") == 1 and ref.split("/")[0] in REFERENCED_TYPES:
            found.add(tuple(ref.split("/")))
        for value in node.values():
            named_references(value, found)
    elif isinstance(node, list):
        for item in node:
            named_references(item, found)


async def patient_resources(session: AsyncSession, patient_id: int) -> list[dict]:
    """Every stored resource about the CRM patient, and the practitioners and organisations they name."""
    patient = await store.by_crm_id(session, "Patient", patient_id)
    if patient is None:
        return []
    rows = (await session.scalars(select(FhirResource.content).where(
        FhirResource.patient_ref == f"Patient/{patient.resource_id}", FhirResource.deleted.is_(False),
        FhirResource.resource_type.in_(CLINICAL_TYPES)))).all()
    named: set[tuple[str, str]] = set()
    named_references(rows, named)
    if named:
        rows += (await session.scalars(select(FhirResource.content).where(
            tuple_(FhirResource.resource_type, FhirResource.resource_id).in_(sorted(named)),
            FhirResource.deleted.is_(False)))).all()
    return list(rows)


async def clinical_summary(session: AsyncSession, patient_id: int, language: str) -> dict | None:
    """The summary's sections, or None when the EHR has told Sila nothing about this patient."""
    resources = await patient_resources(session, patient_id)
    if not any(r["resourceType"] != "Patient" for r in resources):
        return None
    return build_summary(resources, language)
