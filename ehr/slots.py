"""When the hospital has an EHR, its free slots are the truth: Sila reads them and offers patients
only those.

Each doctor's Schedule is found in the EHR by Sila's practitioner identifier; its free Slots in the
booking horizon become (or stay) free slots in the CRM, linked to their EHR ids so an appointment
names the EHR's slot. A CRM slot that is free here but not in the EHR was taken at the hospital
(front desk, another system) and is no longer offered. Slots a patient holds or has booked
through Sila are never touched: the EHR hears of those through the appointment write-back."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from crm_store.models import EhrLink, Practitioner, Slot, SlotStatus, utcnow
from ehr import identifiers
from ehr.client import EhrUnavailable, FhirClient, FhirError
from ehr.resources import slot as slot_map

log = logging.getLogger(__name__)
# Taken at the hospital, not through Sila: not offered, and never freed by Sila.
TAKEN_IN_EHR = "ehr"


@dataclass
class SlotPull:
    practitioners: int = 0
    free_in_ehr: int = 0
    added: int = 0
    taken: int = 0


def _instant(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


async def pull_free_slots(sessions: async_sessionmaker, client: FhirClient, *, days: int = 28) -> SlotPull:
    result = SlotPull()
    start, end = utcnow(), utcnow() + timedelta(days=days)
    async with sessions() as session:
        doctors = (await session.scalars(select(Practitioner).where(Practitioner.active))).all()
    for doctor in doctors:
        schedule = await client.search_one("Schedule", {"identifier": f"{identifiers.PRACTITIONER}|{doctor.code}"})
        if schedule is None:
            continue  # the EHR does not manage this doctor's diary: Sila's own slots stand
        result.practitioners += 1
        free = {}
        async for resource in client.search("Slot", {"schedule": f"Schedule/{schedule['id']}", "status": "free",
                                                     "start": [f"ge{_instant(start)}", f"lt{_instant(end)}"],
                                                     "_count": "500"}):
            fields = slot_map.from_fhir(resource)
            if fields["status"] == SlotStatus.free and fields["start_at"] and fields["end_at"]:
                free[fields["start_at"]] = (resource["id"], fields["end_at"])
        result.free_in_ehr += len(free)
        added, taken = await _apply(sessions, doctor.id, free, start, end)
        result.added += added
        result.taken += taken
    return result


async def _apply(sessions: async_sessionmaker, practitioner_id: int, free: dict, start, end) -> tuple[int, int]:
    async with sessions() as session:
        ours = {s.start_at: s for s in (await session.scalars(select(Slot).where(
            Slot.practitioner_id == practitioner_id, Slot.start_at >= start, Slot.start_at < end))).all()}
        links = {link.crm_id: link for link in (await session.scalars(select(EhrLink).where(
            EhrLink.resource_type == "Slot", EhrLink.crm_id.in_([s.id for s in ours.values()])))).all()}
        added = 0
        for start_at, (ehr_id, end_at) in free.items():
            slot = ours.get(start_at)
            if slot is None:
                slot = Slot(practitioner_id=practitioner_id, start_at=start_at, end_at=end_at)
                session.add(slot)
                await session.flush()
                added += 1
            elif slot.status == SlotStatus.booked and slot.held_by == TAKEN_IN_EHR:
                slot.status, slot.held_by = SlotStatus.free, None  # freed again at the hospital
            if (link := links.get(slot.id)) is None:
                session.add(EhrLink(resource_type="Slot", crm_id=slot.id, ehr_id=ehr_id))
            elif link.ehr_id != ehr_id:
                link.ehr_id = ehr_id
        gone = [s.id for at, s in ours.items() if at not in free and s.status == SlotStatus.free]
        if gone:
            # Conditional: a patient who started holding one meanwhile keeps it.
            await session.execute(update(Slot).where(Slot.id.in_(gone), Slot.status == SlotStatus.free)
                                  .values(status=SlotStatus.booked, held_by=TAKEN_IN_EHR))
        await session.commit()
        return added, len(gone)


async def run(sessions: async_sessionmaker, client: FhirClient, interval: float = 300.0) -> None:
    """Read the EHR's free slots now and every `interval` seconds (started by the app)."""
    while True:
        try:
            pulled = await pull_free_slots(sessions, client)
            log.info("EHR slots: %s doctors, %s free in the EHR, %s added, %s taken at the hospital",
                     pulled.practitioners, pulled.free_in_ehr, pulled.added, pulled.taken)
        except (FhirError, EhrUnavailable) as exc:
            log.warning("reading free slots from the EHR failed (%s); the last known slots stand",
                        type(exc).__name__)
        await asyncio.sleep(interval)
