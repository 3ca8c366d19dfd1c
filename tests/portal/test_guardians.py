"""A guardian linked to a child's record switches to it; the link comes from the EHR import
(RelatedPerson, Patient.contact) or from staff; a parent's access ends when the child is 18."""
from __future__ import annotations

import subprocess
import sys
from datetime import date

from sqlalchemy import select, update

from bot.settings import ROOT
from crm_store.models import AuditEntry, GuardianLink, Patient, PortalSession
from ehr.importer import import_bundle
from portal import guardians
from tests.portal.conftest import add_patient
from tests.portal.helpers import PortalUser

MOTHER_PHONE, MOTHER_BORN = "+966501234567", date(1985, 3, 14)
CHILD = "a5c2d3e4-0000-4000-8000-00000000c41d"


def _family_bundle(child_born: str = "2016-05-20") -> dict:
    """A child's record as an EHR exports it: the mother as a RelatedPerson, the father and an
    emergency contact in Patient.contact."""
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:{CHILD}", "resource": {
            "resourceType": "Patient", "name": [{"given": ["Sami"], "family": "Saleh"}], "birthDate": child_born,
            "gender": "male",
            "contact": [
                {"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                               "code": "FTH"}]}],
                 "name": {"given": ["Khalid"], "family": "Saleh"},
                 "telecom": [{"system": "phone", "value": "0507654321"}]},
                {"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                               "code": "C"}]}],
                 "name": {"given": ["Noura"]}, "telecom": [{"system": "phone", "value": "0509990000"}]}]}},
        {"fullUrl": "urn:uuid:0b7d9a55-1111-4000-8000-000000000a11", "resource": {
            "resourceType": "RelatedPerson", "patient": {"reference": f"urn:uuid:{CHILD}"}, "active": True,
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                          "code": "MTH"}]}],
            "name": [{"given": ["Huda"], "family": "Saleh"}], "birthDate": "1985-03-14",
            "telecom": [{"system": "phone", "value": "+966 50 123 4567"}]}},
    ]}


async def test_links_from_the_ehr_and_switching_to_the_child(client, hub, fake):
    mother = await add_patient(hub, MOTHER_PHONE, MOTHER_BORN, first="Huda", family="Saleh")
    father = await add_patient(hub, "+966507654321", date(1980, 1, 2), first="Khalid", family="Saleh")
    neighbour = await add_patient(hub, "+966509990000", date(1970, 1, 1), first="Noura")
    async with hub.sessions() as session:
        await import_bundle(session, _family_bundle())
        made = await guardians.link_from_ehr(session)
        await session.commit()
        child = await session.scalar(select(Patient).where(Patient.given_name_en == "Sami"))
        links = {(link.guardian_id, link.relationship) for link in
                 (await session.scalars(select(GuardianLink).where(GuardianLink.child_id == child.id))).all()}
    assert made == 2 and links == {(mother.id, "MTH"), (father.id, "FTH")}  # an emergency contact is no guardian
    async with hub.sessions() as session:
        assert await guardians.link_from_ehr(session) == 0  # running it again changes nothing

    user = PortalUser(client, fake)
    await user.sign_in(MOTHER_PHONE, MOTHER_BORN)
    home = await (await client.get("/portal")).text()
    assert "Viewing the record of" in home and "Sami Saleh" in home
    switched = await user.post("/portal/switch", {"patient": str(child.id)})
    assert switched.status == 302
    home = await (await client.get("/portal")).text()
    assert "Hello, Sami Saleh" in home
    await user.post("/portal/messages", {"text": "Sami has a fever since yesterday", "nonce": "x"})
    async with hub.sessions() as session:
        row = await session.scalar(select(AuditEntry).where(AuditEntry.action == "portal:send"))
    # Audited as the mother, about the child's record.
    assert (row.username, row.patient_id, row.detail["for_child"]) == (f"patient:{mother.id}", child.id, True)
    # Not to a record she has no link to.
    assert (await user.post("/portal/switch", {"patient": str(neighbour.id)})).status == 404


async def test_a_parents_access_ends_when_the_child_turns_18(client, hub, fake):
    mother = await add_patient(hub, MOTHER_PHONE, MOTHER_BORN, first="Huda")
    child = await add_patient(hub, None, date(2010, 1, 1), first="Sami", channels=())
    adult_ward = await add_patient(hub, None, date(1990, 1, 1), first="Faris", channels=())
    async with hub.sessions() as session:
        await guardians.link(session, mother.id, child.id, "MTH")
        await guardians.link(session, mother.id, adult_ward.id, "GUARD")  # a court-appointed guardian
        await session.commit()
    user = PortalUser(client, fake)
    await user.sign_in(MOTHER_PHONE, MOTHER_BORN)
    await user.post("/portal/switch", {"patient": str(child.id)})
    assert "Hello, Sami" in await (await client.get("/portal")).text()

    async with hub.sessions() as session:  # Sami is now an adult: his record is his own
        await session.execute(update(Patient).where(Patient.id == child.id).values(birth_date=date(2000, 1, 1)))
        await session.commit()
    home = await (await client.get("/portal")).text()
    assert "Hello, Huda" in home and "Sami" not in home
    async with hub.sessions() as session:
        assert await session.scalar(select(PortalSession.acting_patient_id)) == mother.id
    assert (await user.post("/portal/switch", {"patient": str(child.id)})).status == 404
    assert (await user.post("/portal/switch", {"patient": str(adult_ward.id)})).status == 302


def test_staff_link_and_unlink_from_the_command_line(tmp_path):
    db = f"sqlite+aiosqlite:///{tmp_path}/sila.db"
    env = {"SILA_DATABASE_URL": db, "PATH": "/usr/bin:/bin"}

    def sila(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True)
    assert sila("migrate").returncode == 0
    import asyncio

    from crm_store.db import create_engine, sessionmaker

    async def two_patients():
        engine = create_engine(db)
        async with sessionmaker(engine)() as session:
            session.add_all([Patient(given_name_en="Huda"), Patient(given_name_en="Sami")])
            await session.commit()
        await engine.dispose()
    asyncio.run(two_patients())
    added = sila("portal", "guardian", "add", "--guardian", "1", "--child", "2", "--relationship", "MTH")
    assert added.returncode == 0, added.stderr
    assert "#1 → #2  MTH    active" in sila("portal", "guardian", "list").stdout
    assert sila("portal", "guardian", "add", "--guardian", "1", "--child", "9").returncode == 2
    assert sila("portal", "guardian", "remove", "--guardian", "1", "--child", "2").returncode == 0
    assert "ended" in sila("portal", "guardian", "list").stdout
