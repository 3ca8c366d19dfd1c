"""The hospital's directory in Sila's FHIR store: the hospital and its departments (Organization),
its Location, the doctors (Practitioner, PractitionerRole), their Schedules and Slots.

Written by `sila seed demo` (and whenever the directory is reloaded); a slot's later changes
(booked, freed) reach the store through the EHR outbox like any other change. Ids are the CRM's
codes, so references stay readable: Practitioner/dr-khalid, Schedule/dr-khalid, Slot/42."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from crm_store.models import Department, Practitioner, Slot, utcnow
from ehr import store
from ehr.resources import location, organization, practitioner, practitioner_role, schedule
from ehr.resources import slot as slot_map


def department_id(code: str) -> str:
    return f"dept-{code}"


def slot_resource(slot: Slot) -> dict:
    code = slot.practitioner.code
    return slot_map.to_fhir(slot, schedule_ref=f"Schedule/{code}", practitioner_code=code,
                            resource_id=str(slot.id))


async def publish(session: AsyncSession, hospital: dict) -> int:
    """Write the directory into the store; what is unchanged is left alone. Returns how many
    resources were new or changed."""
    code = hospital["code"]
    hospital_ref = f"Organization/{code}"
    items: list[tuple[dict, int | None]] = [
        (organization.hospital_to_fhir(hospital, resource_id=code), None),
        (location.to_fhir(hospital, organization_ref=hospital_ref, resource_id=code), None),
    ]
    for department in (await session.scalars(select(Department))).all():
        items.append((organization.to_fhir(department, hospital_ref=hospital_ref,
                                           resource_id=department_id(department.code)), department.id))
    doctors = (await session.scalars(select(Practitioner).options(selectinload(Practitioner.department)))).all()
    for doctor in doctors:
        ref = f"Practitioner/{doctor.code}"
        items += [
            (practitioner.to_fhir(doctor, resource_id=doctor.code), doctor.id),
            (practitioner_role.to_fhir(doctor, practitioner_ref=ref, resource_id=doctor.code,
                                       organization_ref=f"Organization/{department_id(doctor.department.code)}",
                                       location_ref=f"Location/{code}"), doctor.id),
            (schedule.to_fhir(doctor, practitioner_ref=ref, resource_id=doctor.code), doctor.id),
        ]
    slots = (await session.scalars(select(Slot).options(selectinload(Slot.practitioner))
                                   .where(Slot.end_at > utcnow()))).all()
    items += [(slot_resource(s), s.id) for s in slots]
    written = await store.put_many(session, items)
    return sum(changed for _, changed in written)
