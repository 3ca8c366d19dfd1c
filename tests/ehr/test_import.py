"""`sila ehr import`: the Synthea bundles import completely and idempotently, their patients become
CRM patients who are recognised when they write from their phone, and a bundle shaped differently
(collection, absolute fullUrls, conditional references, no ids) imports just as well."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import func, select

from bot.router import Router
from bot.settings import ROOT
from crm_store.models import FhirIdentifier, FhirResource, JourneyEvent, Patient
from ehr import store
from ehr.importer import BundleError, import_bundle, import_path

BUNDLES = ROOT / "tests" / "fixtures" / "fhir"
GAYLA = "77155e2b-5d21-4b47-86f0-4004183d68b2"


def _expected() -> tuple[Counter, int]:
    """Entries per type, and how many distinct resources: the bundles share a clinic and its doctor."""
    counts: Counter = Counter()
    distinct = set()
    for path in BUNDLES.glob("*.json"):
        entries = json.loads(path.read_text())["entry"]
        counts.update(e["resource"]["resourceType"] for e in entries)
        distinct |= {e["fullUrl"] for e in entries}
    return counts, len(distinct)


async def _count(sessions, kind: str | None = None) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(FhirResource)
        return await session.scalar(query.where(FhirResource.resource_type == kind) if kind else query)


async def test_the_synthea_bundles_import_completely_and_twice_changes_nothing(sessions):
    expected, distinct = _expected()
    first = await import_path(sessions, BUNDLES)
    assert (first.files, first.resources, first.created) == (3, sum(expected.values()), distinct)
    assert first.by_type == dict(expected)
    assert await _count(sessions) == distinct == 480

    async with sessions() as session:
        patients = (await session.scalars(select(Patient).order_by(Patient.id))).all()
        observation = (await store.search(session, "Observation", {"patient": [f"Patient/{GAYLA}"]})).total
        versions = set((await session.scalars(select(FhirResource.version_id))).all())
    by_name = {p.family_name_en: p for p in patients}
    assert set(by_name) == {"Ferry", "DuBuque", "Weissnat"}
    gayla = by_name["Ferry"]
    assert (gayla.given_name_en, gayla.birth_date.isoformat(), gayla.sex, gayla.phone) == (
        "Gayla", "1937-06-03", "female", "+15556058177")
    assert observation == 105  # every reference to her was rewritten from urn:uuid: to Patient/<id>

    second = await import_path(sessions, BUNDLES)
    assert (second.created, second.updated, second.unchanged) == (0, 0, sum(expected.values()))
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Patient)) == len(patients)
        assert set((await session.scalars(select(FhirResource.version_id))).all()) == versions == {1}
        imported = await session.scalar(select(func.count()).select_from(JourneyEvent).where(
            JourneyEvent.kind == "imported_from_ehr"))
    assert imported == 3


async def test_a_patient_the_ehr_knows_is_recognised_on_sms(sessions):
    await import_path(sessions, BUNDLES / "Gayla_Ferry_259bc6c6-9c1d-43e9-bd25-7539cf07f8ac.json")
    router = Router(sessions, rasa=None, outbox=None, events=None, default_language="ar")
    async with sessions() as session:
        identity, conversation = await router.identify(session, "sms", "+15556058177")
        patient = await session.get(Patient, identity.patient_id)
        stranger, _ = await router.identify(session, "sms", "+15550000000")
    assert (patient.given_name_en, patient.family_name_en) == ("Gayla", "Ferry")
    assert conversation.patient_id == patient.id
    assert stranger.patient_id != patient.id


FOREIGN = {
    "resourceType": "Bundle", "type": "collection",
    "entry": [
        {"fullUrl": "https://ehr.example.org/fhir/Patient/p-1",
         "resource": {"resourceType": "Patient", "id": "p-1",
                      "identifier": [{"system": "https://ehr.example.org/mrn", "value": "MRN-0042",
                                      "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                           "code": "MR"}]}}],
                      "name": [{"text": "Huda Al-Harbi"},
                               {"family": "الحربي", "given": ["هدى"]}],
                      "telecom": [{"system": "phone", "value": "0501234567"}], "birthDate": "1990-02-07",
                      "gender": "female"}},
        {"resource": {"resourceType": "Practitioner",
                      "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "999"}],
                      "name": [{"family": "Saleh", "given": ["Omar"]}]}},
        {"fullUrl": "https://ehr.example.org/fhir/Condition/c-1",
         "resource": {"resourceType": "Condition",
                      "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                     "code": "active"}]},
                      "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}],
                               "text": "Diabetes mellitus type 2"},
                      "subject": {"reference": "https://ehr.example.org/fhir/Patient/p-1"},
                      "asserter": {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|999"}}},
    ],
}


async def test_a_bundle_shaped_differently_imports_just_as_well(sessions):
    async with sessions() as session:
        report = await import_bundle(session, json.loads(json.dumps(FOREIGN)))
        await session.commit()
    assert (report.resources, report.created) == (3, 3)
    async with sessions() as session:
        condition = (await store.search(session, "Condition", {"patient": ["Patient/p-1"]})).rows
        practitioner = await store.find_by_identifier(session, "Practitioner", "http://hl7.org/fhir/sid/us-npi", "999")
        patient = await session.scalar(select(Patient).where(Patient.mrn == "MRN-0042"))
    assert len(condition) == 1 and len(practitioner) == 1
    assert condition[0].content["asserter"]["reference"] == f"Practitioner/{practitioner[0].resource_id}"
    assert (patient.given_name_ar, patient.phone) == ("هدى", "+966501234567")

    # Again, as a transaction the EHR sends later with the patient's phone changed: one patient, updated.
    again = json.loads(json.dumps(FOREIGN))
    again["entry"][0]["resource"]["telecom"][0]["value"] = "0559876543"
    async with sessions() as session:
        report = await import_bundle(session, again)
        await session.commit()
        patients = (await session.scalars(select(Patient).where(Patient.mrn == "MRN-0042"))).all()
    assert (report.updated, report.unchanged) == (1, 2)
    assert [p.phone for p in patients] == ["+966559876543"]


async def test_the_same_patient_under_a_new_id_is_linked_to_the_one_crm_patient(sessions):
    """A second export where the EHR gave the patient another id (same MRN): it imports, the CRM
    still has one patient, and the record imported last is the one linked to them."""
    async with sessions() as session:
        await import_bundle(session, json.loads(json.dumps(FOREIGN)))
        await session.commit()
    renamed = json.loads(json.dumps(FOREIGN).replace("Patient/p-1", "Patient/p-9").replace('"p-1"', '"p-9"'))
    async with sessions() as session:
        report = await import_bundle(session, renamed)
        await session.commit()
    async with sessions() as session:
        [patient] = (await session.scalars(select(Patient).where(Patient.mrn == "MRN-0042"))).all()
        linked = await store.by_crm_id(session, "Patient", patient.id)
        condition = (await store.search(session, "Condition", {"patient": ["Patient/p-9"]})).rows
    assert report.patients == [patient.id] and linked.resource_id == "p-9"
    assert await _count(sessions, "Patient") == 2 and len(condition) == 1

    # Both records in one bundle: the same again, within it.
    both = json.loads(json.dumps(renamed))
    both["entry"] += [{"fullUrl": "https://ehr.example.org/fhir/Patient/p-5",
                       "resource": {**renamed["entry"][0]["resource"], "id": "p-5"}}]
    async with sessions() as session:
        await import_bundle(session, both)
        await session.commit()
        assert (await store.by_crm_id(session, "Patient", patient.id)).resource_id == "p-5"
        assert await session.scalar(select(func.count()).select_from(Patient)) == 1


async def test_a_record_that_would_merge_two_crm_patients_is_refused_with_its_name(sessions, tmp_path):
    """Its MRN is one patient's and its national id another's: Sila cannot tell which person it is."""
    async with sessions() as session:
        session.add_all([Patient(mrn="MRN-0042", given_name_en="Huda"), Patient(national_id="1012345678")])
        await session.commit()
    record = json.loads(json.dumps(FOREIGN))
    record["entry"][0]["resource"]["identifier"].append({
        "system": "urn:sila:national-id", "value": "1012345678",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]}})
    (tmp_path / "merge.json").write_text(json.dumps(record))
    with pytest.raises(BundleError, match="merge.json: conflicts with records Sila holds"):
        await import_path(sessions, tmp_path)
    assert await _count(sessions) == 0


async def test_a_file_that_is_not_fhir_is_refused_with_its_name(sessions, tmp_path):
    good = tmp_path / "a.json"
    good.write_text(json.dumps(FOREIGN))
    bad = tmp_path / "b.json"
    bad.write_text('{"hello": "world"}')
    with pytest.raises(BundleError, match="b.json: not a FHIR resource"):
        await import_path(sessions, tmp_path)
    # The file before it stays imported; nothing of the bad one is.
    assert await _count(sessions) == 3
    invalid = tmp_path / "c.json"
    bad.unlink()
    invalid.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}}}]}))
    with pytest.raises(BundleError, match="c.json"):
        await import_path(sessions, tmp_path)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(FhirIdentifier)) >= 2
    assert await _count(sessions, "Observation") == 0


async def test_without_spare_cores_a_folder_is_read_one_file_at_a_time(sessions, tmp_path, monkeypatch):
    """No worker processes (one core): each file is read and validated just before it is written,
    so a folder larger than memory still imports."""
    import ehr.importer as importer

    for n in range(5):
        (tmp_path / f"{n}.json").write_text(json.dumps(FOREIGN))
    events = []
    checked = importer.load_checked
    monkeypatch.setattr(importer.os, "cpu_count", lambda: 1)
    monkeypatch.setattr(importer, "load_checked", lambda path: events.append(f"read {path.name}") or checked(path))
    await import_path(sessions, tmp_path, progress=lambda n, total, file, report: events.append(f"wrote {file.name}"))
    assert events == [f"{what} {n}.json" for n in range(5) for what in ("read", "wrote")]


async def test_a_large_folder_is_validated_by_worker_processes_in_order(sessions, tmp_path):
    for path in sorted(BUNDLES.glob("*.json")):
        (tmp_path / f"1-{path.name}").write_text(path.read_text())
    (tmp_path / "2-foreign.json").write_text(json.dumps(FOREIGN))
    (tmp_path / "3-broken.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/p-1"}, "onsetDateTime": "soon"}}]}))
    (tmp_path / "4-never-reached.json").write_text(json.dumps(FOREIGN))
    done = []
    with pytest.raises(BundleError, match="3-broken.json: Condition.onset"):
        await import_path(sessions, tmp_path, progress=lambda n, total, file, report: done.append(file.name))
    assert done == sorted(p.name for p in tmp_path.glob("[12]-*.json"))
    assert await _count(sessions, "Patient") == 4
