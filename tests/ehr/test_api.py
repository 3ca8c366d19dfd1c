"""Sila's FHIR R4 API through the real app: auth and scopes, read, search with paging, conditional
create, versioned update, OperationOutcome errors, and the audit trail of every patient read."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from sqlalchemy import select

from bot.app import HUB, create_app
from bot.settings import Settings
from crm_store.models import AuditEntry, Patient
from ehr import api_clients, store
from ehr.api import SUPPORTED_TYPES, setup_fhir_api
from tests.ehr.test_store import GAYLA, appointment, synthea_resources
from tests.fakes.tcp_proxy import _free_port

PUBLIC = "https://sila.example.org"
FHIR_JSON = "application/fhir+json"


@pytest.fixture
async def client(aiohttp_client, store_url):
    settings = Settings(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=2,
                        replay_interval=3600, public_url=PUBLIC)
    app = create_app(settings)
    setup_fhir_api(app)  # a no-op when the app factory has set the API up already
    client = await aiohttp_client(app)
    async with app[HUB].sessions() as session:
        client.tokens = {
            "ehr": await api_clients.add_client(session, "ehr", ["system/*.*"]),
            "reader": await api_clients.add_client(session, "reader", ["system/*.read"]),
            "patients": await api_clients.add_client(session, "patients", ["system/Patient.read"]),
            "booker": await api_clients.add_client(session, "booker", ["system/Appointment.write"]),
        }
        await session.commit()
    return client


def auth(client, name: str = "ehr") -> dict:
    return {"Authorization": f"Bearer {client.tokens[name]}"}


async def outcome(response, status: int, code: str) -> str:
    """Assert an OperationOutcome error answer; return its diagnostics."""
    assert response.status == status, await response.text()
    assert response.content_type == FHIR_JSON
    body = OperationOutcome.model_validate(await response.json(content_type=None))
    issue = body.issue[0]
    assert issue.severity == "error" and issue.code == code and issue.diagnostics
    return issue.diagnostics


async def audit_rows(client, action: str | None = None) -> list[AuditEntry]:
    async with client.app[HUB].sessions() as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        return list(await session.scalars(query))


async def post(client, resource: dict, name: str = "ehr", **headers):
    return await client.post(f"/fhir/R4/{resource['resourceType']}", data=json.dumps(resource),
                             headers={**auth(client, name), "Content-Type": FHIR_JSON, **headers})


async def put(client, resource: dict, name: str = "ehr", **headers):
    return await client.put(f"/fhir/R4/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                            headers={**auth(client, name), "Content-Type": FHIR_JSON, **headers})


async def test_the_capability_statement_needs_no_token(client):
    response = await client.get("/fhir/R4/metadata")
    assert response.status == 200 and response.content_type == FHIR_JSON
    statement = CapabilityStatement.model_validate(await response.json(content_type=None))
    rest = statement.rest[0]
    assert rest.security.service[0].coding[0].code == "SMART-on-FHIR"
    assert {r.type for r in rest.resource} == set(SUPPORTED_TYPES)
    appointment_entry = next(r for r in rest.resource if r.type == "Appointment")
    assert {p.name for p in appointment_entry.searchParam} >= {"identifier", "patient", "date", "status"}
    assert statement.implementation.url == f"{PUBLIC}/fhir/R4"


async def test_every_other_call_needs_a_valid_active_token(client):
    response = await client.get("/fhir/R4/Patient")
    await outcome(response, 401, "login")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await outcome(await client.get("/fhir/R4/Patient", headers={"Authorization": "Bearer forged"}), 401, "login")
    await outcome(await client.get("/fhir/R4/Patient/x", headers={"Authorization": f"Basic {client.tokens['ehr']}"}),
                  401, "login")
    async with client.app[HUB].sessions() as session:
        assert await api_clients.deactivate_client(session, "reader")
        await session.commit()
    await outcome(await client.get("/fhir/R4/Patient", headers=auth(client, "reader")), 401, "login")
    assert (await client.get("/fhir/R4/Patient", headers=auth(client))).status == 200


async def test_scopes_limit_what_a_client_may_do(client):
    await outcome(await post(client, appointment("a", "2026-12-01T09:00:00Z"), "reader"), 403, "forbidden")
    await outcome(await client.get("/fhir/R4/Observation", headers=auth(client, "patients")), 403, "forbidden")
    assert (await client.get("/fhir/R4/Patient", headers=auth(client, "patients"))).status == 200
    booked = await post(client, appointment("a", "2026-12-01T09:00:00Z"), "booker")
    assert booked.status == 201
    await outcome(await client.get(urlsplit(booked.headers["Location"]).path, headers=auth(client, "booker")),
                  403, "forbidden")
    refused = await audit_rows(client, "fhir.write")
    assert [(r.username, r.outcome) for r in refused] == [("fhir:reader", "forbidden")]


async def test_create_then_read_with_version_headers(client):
    response = await post(client, appointment("mine", "2026-12-01T09:00:00+03:00", identifier="AB12"))
    assert response.status == 201 and response.content_type == FHIR_JSON
    created = await response.json(content_type=None)
    assert created["id"] != "mine" and created["meta"]["versionId"] == "1"
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"] == f"{PUBLIC}/fhir/R4/Appointment/{created['id']}/_history/1"

    read = await client.get(f"/fhir/R4/Appointment/{created['id']}", headers=auth(client))
    assert read.status == 200 and read.headers["ETag"] == 'W/"1"' and read.headers["Last-Modified"].endswith("GMT")
    assert await read.json(content_type=None) == created
    version = await client.get(urlsplit(response.headers["Location"]).path, headers=auth(client))
    assert version.status == 200 and (await version.json(content_type=None))["id"] == created["id"]


async def test_conditional_create_returns_the_match_and_refuses_ambiguity(client):
    condition = {"If-None-Exist": "identifier=urn:sila:appointment|AB12"}
    first = await post(client, appointment("x", "2026-12-01T09:00:00Z", identifier="AB12"), **condition)
    retry = await post(client, appointment("x", "2026-12-01T09:00:00Z", identifier="AB12"), **condition)
    assert first.status == 201 and retry.status == 200
    assert (await first.json(content_type=None))["id"] == (await retry.json(content_type=None))["id"]
    assert retry.headers["ETag"] == 'W/"1"'
    # A second resource carrying the identifier, written without the condition, makes it ambiguous.
    assert (await post(client, appointment("y", "2026-12-02T09:00:00Z", identifier="AB12"))).status == 201
    await outcome(await post(client, appointment("z", "2026-12-03T09:00:00Z", identifier="AB12"), **condition),
                  412, "multiple-matches")
    await outcome(await post(client, appointment("z", "2026-12-03T09:00:00Z"), **{"If-None-Exist": "colour=red"}),
                  400, "invalid")


async def test_update_with_if_match(client):
    created = await put(client, appointment("a1", "2026-12-01T09:00:00Z"))
    assert created.status == 201 and created.headers["ETag"] == 'W/"1"'
    moved = await put(client, appointment("a1", "2026-12-02T09:00:00Z"), **{"If-Match": 'W/"1"'})
    assert moved.status == 200 and moved.headers["ETag"] == 'W/"2"'
    assert moved.headers["Location"].endswith("/Appointment/a1/_history/2")
    diagnostics = await outcome(await put(client, appointment("a1", "2026-12-03T09:00:00Z"), **{"If-Match": 'W/"1"'}),
                                412, "conflict")
    assert "version 2" in diagnostics
    same = await put(client, appointment("a1", "2026-12-02T09:00:00Z"))
    assert same.status == 200 and same.headers["ETag"] == 'W/"2"'  # nothing changed, no new version
    read = await client.get("/fhir/R4/Appointment/a1", headers=auth(client))
    assert (await read.json(content_type=None))["start"] == "2026-12-02T09:00:00Z"
    await outcome(await client.get("/fhir/R4/Appointment/a1/_history/1", headers=auth(client)), 404, "not-found")


async def test_errors_are_operation_outcomes(client):
    headers = {**auth(client), "Content-Type": FHIR_JSON}
    await outcome(await client.post("/fhir/R4/Appointment", data="{not json", headers=headers), 400, "structure")
    diagnostics = await outcome(await post(client, {"resourceType": "Appointment", "status": "booked"}), 400, "invalid")
    assert "participant" in diagnostics
    await outcome(await post(client, appointment("a", "2026-12-01T09:00:00Z", status="canceled")), 400, "invalid")
    await outcome(await client.post("/fhir/R4/Patient", data=json.dumps(appointment("a", "2026-12-01T09:00:00Z")),
                                    headers=headers), 400, "invalid")
    await outcome(await client.put("/fhir/R4/Appointment/b", data=json.dumps(appointment("c", "2026-12-01T09:00:00Z")),
                                   headers=headers), 400, "invalid")
    await outcome(await client.get("/fhir/R4/Spaceship", headers=auth(client)), 404, "not-supported")
    await outcome(await client.get("/fhir/R4/Patient/nobody", headers=auth(client)), 404, "not-found")
    await outcome(await client.get("/fhir/R4/Patient?colour=red", headers=auth(client)), 400, "invalid")
    await outcome(await client.get("/fhir/R4/Observation?date=yesterday", headers=auth(client)), 400, "invalid")
    deleted = await client.delete("/fhir/R4/Patient/x", headers=auth(client))
    await outcome(deleted, 405, "not-supported")
    assert deleted.headers["Allow"] == "GET, PUT"
    await outcome(await client.post("/fhir/R4", data="{}", headers=headers), 405, "not-supported")
    await outcome(await client.get("/fhir/R4/Patient/x/y/z", headers=auth(client)), 404, "not-found")
    await outcome(await client.post("/fhir/R4/Patient", data="<Patient/>",
                                    headers={**auth(client), "Content-Type": "application/fhir+xml"}),
                  415, "not-supported")
    await outcome(await client.get("/fhir/R4/Patient", headers={**auth(client), "Accept": "application/fhir+xml"}),
                  406, "not-supported")
    async with client.app[HUB].sessions() as session:
        assert (await store.search(session, "Appointment", {})).total == 0  # nothing invalid was written


async def _import_gayla(client) -> str:
    resources = synthea_resources(GAYLA)
    async with client.app[HUB].sessions() as session:
        crm_patient = Patient(given_name_en="Gayla", preferred_language="en")
        session.add(crm_patient)
        await session.flush()
        await store.put_many(session, [(r, crm_patient.id if r["resourceType"] == "Patient" else None)
                                       for r in resources])
        await session.commit()
    client.crm_patient_id = crm_patient.id
    return resources[0]["id"]


async def test_search_pages_through_a_real_patients_observations(client):
    patient_id = await _import_gayla(client)
    url = f"/fhir/R4/Observation?patient={patient_id}&date=ge2013-01-01&_count=20"
    seen, pages = [], 0
    while url:
        response = await client.get(url, headers=auth(client, "reader"))
        assert response.status == 200 and response.content_type == FHIR_JSON
        body = await response.json(content_type=None)
        bundle = Bundle.model_validate(body)
        assert bundle.type == "searchset" and bundle.total == 91
        seen += [entry.resource.id for entry in bundle.entry]
        assert all(e.search.mode == "match" and e.fullUrl == f"{PUBLIC}/fhir/R4/Observation/{e.resource.id}"
                   for e in bundle.entry)
        links = {link.relation: link.url for link in bundle.link}
        assert links["self"].startswith(f"{PUBLIC}/fhir/R4/Observation?")
        url = links.get("next") and links["next"].removeprefix(PUBLIC)
        pages += 1
    assert pages == 5 and len(seen) == len(set(seen)) == 91
    dates = [e["resource"]["effectiveDateTime"] for e in body["entry"]]
    assert dates == sorted(dates, reverse=True)

    posted = await client.post("/fhir/R4/Observation/_search", data={"patient": patient_id, "date": "2019-08-15"},
                               headers=auth(client, "reader"))
    assert (await posted.json(content_type=None))["total"] == 22
    empty = await client.get("/fhir/R4/Observation?patient=nobody", headers=auth(client, "reader"))
    assert "entry" not in await empty.json(content_type=None)


async def test_patient_reads_are_audited_with_the_crm_patient(client):
    patient_id = await _import_gayla(client)
    assert (await client.get(f"/fhir/R4/Patient/{patient_id}", headers=auth(client, "reader"))).status == 200
    assert (await client.get(f"/fhir/R4/Observation?subject=Patient/{patient_id}&_count=5",
                             headers=auth(client, "reader"))).status == 200
    assert (await client.get("/fhir/R4/Condition/missing", headers=auth(client, "reader"))).status == 404
    assert (await client.get("/fhir/R4/Practitioner", headers=auth(client, "reader"))).status == 200

    rows = await audit_rows(client)
    assert [(r.action, r.username, r.patient_id, r.outcome) for r in rows] == [
        ("fhir.read", "fhir:reader", client.crm_patient_id, "ok"),
        ("fhir.search", "fhir:reader", client.crm_patient_id, "ok"),
        ("fhir.read", "fhir:reader", None, "not-found"),
    ]  # hospital directory reads (Practitioner) are not patient data
    assert rows[0].detail["resource"] == f"Patient/{patient_id}" and rows[1].detail["total"] == 105
    assert rows[0].remote


async def test_a_patient_not_in_the_crm_is_audited_by_reference(client):
    await post(client, {"resourceType": "Patient", "identifier": [{"system": "urn:ehr", "value": "9"}]})
    response = await client.get("/fhir/R4/Patient?identifier=urn:ehr|9", headers=auth(client, "reader"))
    found = (await response.json(content_type=None))["entry"][0]["resource"]
    [row] = await audit_rows(client, "fhir.search")
    assert row.patient_id is None and row.detail["patient"] == f"Patient/{found['id']}"
    [written] = await audit_rows(client, "fhir.create")
    assert written.username == "fhir:ehr" and written.outcome == "ok"
