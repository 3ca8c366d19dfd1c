"""Sila's FHIR store on SQLite and PostgreSQL: idempotent writes, versions, search, conditional writes."""
from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from crm_store.db import create_engine, sessionmaker
from crm_store.models import FhirIdentifier, FhirResource
from ehr import store

FIXTURES = Path("/work/shared/fixtures/fhir")
GAYLA = FIXTURES / "Gayla_Ferry_259bc6c6-9c1d-43e9-bd25-7539cf07f8ac.json"


def synthea_resources(path: Path) -> list[dict]:
    """A Synthea transaction bundle's resources with ids from their urn:uuid fullUrls (references
    rewritten to match), as an importer would store them."""
    bundle = json.loads(path.read_text())
    text = json.dumps(bundle)
    for entry in bundle["entry"]:
        text = text.replace(f'"{entry["fullUrl"]}"',
                            f'"{entry["resource"]["resourceType"]}/{entry["fullUrl"].rsplit(":", 1)[1]}"')
    resources = []
    for entry in json.loads(text)["entry"]:
        resource = entry["resource"]
        resource["id"] = entry["fullUrl"].rsplit("/", 1)[1]
        resources.append(resource)
    return resources


@pytest.fixture
async def fhir(store_url):
    engine = create_engine(store_url)
    yield sessionmaker(engine)
    await engine.dispose()


def patient(pid: str = "p1", **extra) -> dict:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": "Al-Harbi", "given": ["Noura"]}],
            "birthDate": "1990-04-02", **extra}


def appointment(aid: str, start: str, patient_ref: str = "Patient/p1", status: str = "booked",
                identifier: str | None = None) -> dict:
    resource = {"resourceType": "Appointment", "id": aid, "status": status, "start": start,
                "participant": [{"actor": {"reference": patient_ref}, "status": "accepted"}]}
    if identifier:
        resource["identifier"] = [{"system": "urn:sila:appointment", "value": identifier}]
    return resource


async def test_putting_the_same_resource_twice_changes_nothing(fhir):
    async with fhir() as session:
        row, changed = await store.put(session, patient(identifier=[{"system": "urn:sila:patient", "value": "7"}]))
        await session.commit()
    assert changed and row.version_id == 1 and row.content["meta"]["versionId"] == "1"
    first_update = row.last_updated
    async with fhir() as session:
        # Same content; a different meta (as another server would send it) does not count.
        foreign_meta = {"versionId": "9", "lastUpdated": "2020-01-01T00:00:00Z"}
        again, changed = await store.put(session, patient(identifier=[{"system": "urn:sila:patient", "value": "7"}],
                                                          meta=foreign_meta))
        await session.commit()
    assert not changed and again.version_id == 1 and again.last_updated == first_update
    async with fhir() as session:
        stored = await store.get(session, "Patient", "p1")
        identifiers = await session.scalar(select(func.count(FhirIdentifier.id)))
    assert stored.content["meta"]["versionId"] == "1" and identifiers == 1


async def test_a_changed_resource_gets_version_two_and_its_new_identifiers(fhir):
    async with fhir() as session:
        await store.put(session, patient(identifier=[{"system": "urn:sila:patient", "value": "7"}]))
        await session.commit()
    async with fhir() as session:
        row, changed = await store.put(session, patient(identifier=[{"system": "urn:sila:patient", "value": "8"}],
                                                        gender="female"), crm_id=8)
        await session.commit()
    assert changed and row.version_id == 2
    assert row.content["meta"]["versionId"] == "2" and row.content["gender"] == "female"
    assert row.content["meta"]["lastUpdated"].endswith("Z")
    async with fhir() as session:
        assert await store.find_by_identifier(session, "Patient", "urn:sila:patient", "7") == []
        [found] = await store.find_by_identifier(session, "Patient", "urn:sila:patient", "8")
        by_crm = await store.by_crm_id(session, "Patient", 8)
    assert found.resource_id == "p1" and by_crm.resource_id == "p1" and by_crm.version_id == 2


async def test_invalid_resources_are_refused_with_the_validators_words(fhir):
    no_participant = {"resourceType": "Appointment", "id": "a1", "status": "booked"}
    misspelt_status = appointment("a2", "2026-12-01T09:00:00+03:00", status="canceled")
    unknown_field = patient(favouriteColour="blue")
    async with fhir() as session:
        for resource, words in ((no_participant, "Appointment.participant"), (misspelt_status, "canceled"),
                                (unknown_field, "favouriteColour"), ({"resourceType": "Patient"}, "no id"),
                                ({"resourceType": "Nonsense", "id": "x"}, "unknown resourceType")):
            with pytest.raises(store.InvalidResource) as error:
                await store.put(session, resource)
            assert words in error.value.diagnostics
        # A batch with one bad resource writes none of them.
        with pytest.raises(store.InvalidResource):
            await store.put_many(session, [(patient("ok"), None), (no_participant, None)])
        await session.commit()
        assert await session.scalar(select(func.count(FhirResource.id))) == 0


async def test_the_patient_and_the_date_are_found_in_each_kind_of_resource(fhir):
    resources = [
        appointment("a1", "2026-12-01T09:00:00+03:00", patient_ref="https://ehr.example.org/fhir/Patient/p9"),
        {"resourceType": "Communication", "id": "c1", "status": "completed", "sent": "2026-12-01T10:00:00Z",
         "subject": {"reference": "Patient/p9"}},
        {"resourceType": "Coverage", "id": "cov", "status": "active", "beneficiary": {"reference": "Patient/p9"},
         "payor": [{"display": "Bupa"}]},
        {"resourceType": "Immunization", "id": "i1", "status": "completed", "patient": {"reference": "Patient/p9"},
         "vaccineCode": {"text": "flu"}, "occurrenceDateTime": "2020-10"},
        patient("p9"),
    ]
    async with fhir() as session:
        rows = [row for row, _ in await store.put_many(session, [(r, None) for r in resources])]
        await session.commit()
    assert [row.patient_ref for row in rows] == ["Patient/p9"] * 5
    assert rows[0].date == datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)
    assert rows[1].date == datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    assert rows[2].date is None
    assert rows[3].date == datetime(2020, 10, 1, tzinfo=timezone.utc)
    assert rows[4].date == datetime(1990, 4, 2, tzinfo=timezone.utc)


async def test_search_by_identifier_in_its_three_forms(fhir):
    async with fhir() as session:
        await store.put(session, patient("p1", identifier=[{"system": "urn:sila:patient", "value": "42"}]))
        await store.put(session, patient("p2", identifier=[{"value": "42"}]))
        await store.put(session, patient("p3", identifier=[{"system": "urn:other", "value": "42"}]))
        await session.commit()

        async def ids(**params) -> list[str]:
            found = await store.search(session, "Patient", {k: [v] for k, v in params.items()})
            assert found.total == len(found.rows)
            return sorted(row.resource_id for row in found.rows)

        assert await ids(identifier="urn:sila:patient|42") == ["p1"]
        assert await ids(identifier="|42") == ["p2"]  # explicitly no system
        assert await ids(identifier="42") == ["p1", "p2", "p3"]
        assert await ids(identifier="urn:other|") == ["p3"]
        assert await ids(identifier="urn:sila:patient|42,urn:other|42") == ["p1", "p3"]
        assert await ids(identifier="urn:sila:patient|43") == []
        assert await ids(_id="p2,p3") == ["p2", "p3"]


async def test_a_real_patients_observations_by_date(fhir):
    resources = synthea_resources(GAYLA)
    async with fhir() as session:
        await store.put_many(session, [(r, None) for r in resources])
        await session.commit()
    patient_id = resources[0]["id"]
    observed = [datetime.fromisoformat(r["effectiveDateTime"]).astimezone(timezone.utc)
                for r in resources if r["resourceType"] == "Observation"]

    def expected(test) -> int:
        return sum(1 for when in observed if test(when))

    async with fhir() as session:
        async def total(*dates: str, patient: str = f"Patient/{patient_id}") -> int:
            found = await store.search(session, "Observation", {"patient": [patient], "date": list(dates),
                                                                "_count": ["500"]})
            assert found.total == len(found.rows)
            return found.total

        assert await total() == len(observed) == 105
        assert await total(patient=patient_id) == 105  # a bare id means the same Patient
        assert await total(patient="Patient/someone-else") == 0
        assert await total("2019-08-15") == expected(lambda w: w.date().isoformat() == "2019-08-15") == 22
        assert await total("2019") == await total("2019-08") == 22
        assert await total("ge2019-01-01", "lt2020-01-01") == 22
        assert await total("gt2019-08-15") == expected(lambda w: w.date().isoformat() > "2019-08-15")
        assert await total("le2011-06-30") == expected(lambda w: w.date().isoformat() <= "2011-06-30")
        cut = datetime(2014, 7, 17, tzinfo=timezone.utc)
        assert await total("lt2014-07-17T00:00:00Z") == expected(lambda w: w < cut)
        riyadh_midnight = datetime(2014, 7, 16, 21, tzinfo=timezone.utc)
        assert await total("ge2014-07-17T00:00:00+03:00") == expected(lambda w: w >= riyadh_midnight)
        assert await total("ne2019-08-15") == 105 - 22
        with pytest.raises(store.InvalidSearch):
            await total("ap2019")
        with pytest.raises(store.InvalidSearch):
            await total("yesterday")


async def test_paging_walks_every_match_once_newest_first(fhir):
    async with fhir() as session:
        await store.put(session, patient())
        for day in range(1, 24):
            status = "cancelled" if day % 4 == 0 else "booked"
            await store.put(session, appointment(f"a{day:02}", f"2026-12-{day:02}T09:00:00Z", status=status))
        await session.commit()
        seen, offset = [], 0
        while True:
            page = await store.search(session, "Appointment", {"patient": ["p1"], "_count": ["10"],
                                                                "_offset": [str(offset)]})
            assert page.total == 23
            if not page.rows:
                break
            seen += [row.resource_id for row in page.rows]
            offset += 10
        assert seen == [f"a{day:02}" for day in range(23, 0, -1)]
        booked = await store.search(session, "Appointment", {"status": ["booked"], "_count": ["3"]})
        assert booked.total == 18 and [r.resource_id for r in booked.rows] == ["a23", "a22", "a21"]
        either = await store.search(session, "Appointment", {"status": ["booked,cancelled"],
                                                              "start": ["ge2026-12-20"]})
        assert either.total == 4
        just_count = await store.search(session, "Appointment", {"_count": ["0"]})
        assert just_count.total == 23 and just_count.rows == []
        capped = await store.search(session, "Appointment", {"_count": ["100000"]})
        assert capped.count == store.MAX_COUNT
        for bad in ({"_count": ["ten"]}, {"colour": ["red"]}, {"status:not": ["booked"]}):
            with pytest.raises(store.InvalidSearch):
                await store.search(session, "Appointment", bad)


async def test_deleted_resources_are_never_returned(fhir):
    async with fhir() as session:
        await store.put(session, patient("gone", identifier=[{"system": "urn:sila:patient", "value": "1"}]))
        await session.commit()
        await session.execute(update(FhirResource).values(deleted=True))
        await session.commit()
        assert await store.get(session, "Patient", "gone") is None
        assert (await store.search(session, "Patient", {})).total == 0
        assert await store.find_by_identifier(session, "Patient", "urn:sila:patient", "1") == []


async def test_importing_a_bundle_twice_changes_nothing(fhir):
    resources = synthea_resources(GAYLA)
    async with fhir() as session:
        first = await store.put_many(session, [(copy.deepcopy(r), None) for r in resources])
        await session.commit()
    async with fhir() as session:
        second = await store.put_many(session, [(copy.deepcopy(r), None) for r in resources])
        await session.commit()
        versions = set(await session.scalars(select(FhirResource.version_id)))
        rows = await session.scalar(select(func.count(FhirResource.id)))
    assert all(changed for _, changed in first) and not any(changed for _, changed in second)
    assert versions == {1} and rows == len(resources)


async def test_conditional_create_with_none_one_and_two_matches(fhir):
    query = "identifier=urn:sila:appointment|AB12"
    async with fhir() as session:
        row, created = await store.create(session, appointment("client-chosen", "2026-12-01T09:00:00Z",
                                                               identifier="AB12"), query)
        await session.commit()
    assert created and row.resource_id != "client-chosen" and row.version_id == 1
    async with fhir() as session:
        again, created = await store.create(session, appointment("x", "2026-12-02T09:00:00Z", identifier="AB12"),
                                            f"Appointment?{query}")
        await session.commit()
        assert not created and again.resource_id == row.resource_id
        assert again.content["start"] == "2026-12-01T09:00:00Z"  # the match is returned unchanged
        await store.put(session, appointment("dup", "2026-12-03T09:00:00Z", identifier="AB12"))
        await session.commit()
        with pytest.raises(store.PreconditionFailed):
            await store.create(session, appointment("y", "2026-12-04T09:00:00Z", identifier="AB12"), query)
        assert (await store.search(session, "Appointment", {})).total == 2


async def test_concurrent_retries_of_one_conditional_create_make_one_resource(fhir):
    async def attempt(n: int):
        async with fhir() as session:
            row, created = await store.create(
                session, appointment(f"try{n}", "2026-12-01T09:00:00Z", identifier="RACE"),
                "identifier=urn:sila:appointment|RACE")
            await asyncio.sleep(0.01)  # the transaction stays open while the others try
            await session.commit()
            return created

    outcomes = await asyncio.gather(*(attempt(n) for n in range(5)))
    assert sorted(outcomes) == [False] * 4 + [True]
    async with fhir() as session:
        assert len(await store.find_by_identifier(session, "Appointment", "urn:sila:appointment", "RACE")) == 1


async def test_update_checks_if_match_and_creates_a_new_id(fhir):
    async with fhir() as session:
        row, created = await store.update(session, "Appointment", "a1", appointment("a1", "2026-12-01T09:00:00Z"))
        await session.commit()
    assert created and row.version_id == 1
    async with fhir() as session:
        moved = appointment("a1", "2026-12-02T09:00:00Z")
        row, created = await store.update(session, "Appointment", "a1", moved, 'W/"1"')
        await session.commit()
    assert not created and row.version_id == 2
    async with fhir() as session:
        with pytest.raises(store.PreconditionFailed):
            await store.update(session, "Appointment", "a1", appointment("a1", "2026-12-03T09:00:00Z"), 'W/"1"')
        with pytest.raises(store.PreconditionFailed):
            await store.update(session, "Appointment", "new", appointment("new", "2026-12-03T09:00:00Z"), 'W/"1"')
        with pytest.raises(store.InvalidResource):
            await store.update(session, "Appointment", "a1", appointment("other", "2026-12-03T09:00:00Z"))
        await session.rollback()
        current = await store.get(session, "Appointment", "a1")
    assert current.version_id == 2 and current.content["start"] == "2026-12-02T09:00:00Z"


async def test_within_one_batch_the_last_write_of_a_resource_wins(fhir):
    first = appointment("a1", "2026-12-01T09:00:00Z", patient_ref="Patient/p1")
    async with fhir() as session:
        await store.put(session, first)
        await session.commit()
    moved = appointment("a1", "2026-12-05T09:00:00Z", patient_ref="Patient/p2")
    async with fhir() as session:
        results = await store.put_many(session, [(moved, None), (copy.deepcopy(first), None)])
        await session.commit()
    assert [changed for _, changed in results] == [True, True]
    async with fhir() as session:
        row = await store.get(session, "Appointment", "a1")
        by_patient = await store.search(session, "Appointment", {"patient": ["p1"], "date": ["2026-12-01"]})
    assert row.version_id == 3 and row.content["start"] == "2026-12-01T09:00:00Z"
    assert [r.resource_id for r in by_patient.rows] == ["a1"]
