"""With an EHR, its free slots are what patients are offered: new free times appear, times taken
at the hospital disappear, and what a patient holds or booked through Sila is left alone."""
from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import select

from crm_store import appointments
from crm_store.models import EhrLink, Patient, Practitioner, Slot, SlotStatus, utcnow
from ehr import identifiers
from ehr.client import BearerToken, FhirClient
from ehr.slots import pull_free_slots
from tests.fakes.fhir_server import FakeFhir


def _z(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def ehr():
    server = await FakeFhir().start()
    yield server
    await server.close()


async def test_free_slots_come_from_the_ehr(sessions, ehr):
    async with sessions() as session:
        doctor = await session.scalar(select(Practitioner).order_by(Practitioner.id).limit(1))
        ours = (await session.scalars(select(Slot).where(Slot.practitioner_id == doctor.id,
                                                         Slot.start_at > utcnow() + timedelta(days=1))
                                      .order_by(Slot.start_at).limit(3))).all()
        patient = Patient(given_name_en="Huda")
        session.add(patient)
        await session.flush()
        # A patient books the third through Sila before the EHR is read.
        booked = await appointments.book(session, patient_id=patient.id, slot_id=ours[2].id, channel="sms",
                                         holder="t")
        await session.commit()
    schedule = ehr.put({"resourceType": "Schedule", "id": "sch-1", "actor": [{"reference": "Practitioner/x"}],
                        "identifier": [{"system": identifiers.PRACTITIONER, "value": doctor.code}]})
    new_time = ours[0].start_at + timedelta(days=2, minutes=7)

    def slot(sid, start):
        return {"resourceType": "Slot", "id": sid, "schedule": {"reference": f"Schedule/{schedule['id']}"},
                "status": "free", "start": _z(start), "end": _z(start + timedelta(minutes=20))}
    # The EHR: the first of our times is still free, the second was taken at the front desk,
    # and a time Sila never had is free.
    ehr.put(slot("s-1", ours[0].start_at))
    ehr.put(slot("s-new", new_time))
    ehr.put({**slot("s-2", ours[1].start_at), "status": "busy"})

    async with aiohttp.ClientSession() as http:
        pulled = await pull_free_slots(sessions, FhirClient(ehr.url, http, auth=BearerToken(ehr.token)))
    assert (pulled.practitioners, pulled.free_in_ehr, pulled.added) == (1, 2, 1)

    async with sessions() as session:
        offered = await appointments.free_slots(session, practitioner_ids=[doctor.id], start=utcnow(),
                                                end=utcnow() + timedelta(days=40), limit=1000)
        links = {link.crm_id: link.ehr_id for link in (await session.scalars(select(EhrLink))).all()}
        still_booked = await session.get(Slot, booked.slot_id)
    assert [s.start_at for s in offered] == sorted([ours[0].start_at, new_time])
    assert sorted(links.values()) == ["s-1", "s-new"]
    assert still_booked.status == SlotStatus.booked and still_booked.held_by is None  # Sila's booking stands
