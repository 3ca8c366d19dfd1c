"""The EHR client against a local FHIR server that fails on demand: what the hospital's EHR ends up
holding, and what Sila is told, when the EHR refuses, is busy, is slow or is down."""
from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ehr import identifiers
from ehr.client import (
    BearerToken,
    EhrUnavailable,
    FhirClient,
    Invalid,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    identifier_query,
)
from ehr.smart import ASSERTION_TYPE, SmartBackendAuth
from tests.fakes.fhir_server import FakeFhir

CLIENT_ID = "sila-hub"
SCOPE = "system/Appointment.write system/Patient.read"


def _pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return _pem_pair()


@pytest.fixture
async def ehr(keys):
    server = await FakeFhir(smart_clients={CLIENT_ID: keys[1]}).start()
    yield server
    await server.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def client(server: FakeFhir, http: aiohttp.ClientSession, **options) -> FhirClient:
    options.setdefault("auth", BearerToken(server.token))
    options.setdefault("backoff", 0.01)
    return FhirClient(server.url, http, **options)


def smart(server: FakeFhir, private_pem: str, **options) -> SmartBackendAuth:
    return SmartBackendAuth(server.token_url, CLIENT_ID, private_pem, "sila-key-1", SCOPE, **options)


def appointment(code: str = "AB12CD", status: str = "booked") -> dict:
    return {"resourceType": "Appointment", "status": status,
            "identifier": [{"system": identifiers.APPOINTMENT, "value": code}],
            "start": "2025-03-02T09:00:00+03:00", "end": "2025-03-02T09:20:00+03:00",
            "participant": [{"actor": {"reference": "Patient/p1", "display": "Fatima Al-Harbi"},
                             "status": "accepted"}]}


def patient(number: int) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": identifiers.PATIENT, "value": f"P{number:03}"}],
            "name": [{"family": "Al-Harbi", "given": [f"Fatima{number}"]}], "birthDate": "1984-05-17"}


# --- errors the EHR states -------------------------------------------------------------------------

async def test_a_wrong_token_is_unauthorized_with_the_servers_diagnostics_and_not_retried(ehr, http):
    fhir = client(ehr, http, auth=BearerToken("not-the-token"))
    with pytest.raises(Unauthorized) as caught:
        await fhir.read("Patient", "1")
    assert caught.value.status == 401
    assert "Invalid, expired or missing bearer token" in str(caught.value)
    assert caught.value.outcome["resourceType"] == "OperationOutcome"
    assert len(ehr.calls()) == 1
    assert ehr.calls()[0].headers["Authorization"] == "Bearer not-the-token"


async def test_a_missing_or_deleted_resource_is_not_found(ehr, http):
    fhir = client(ehr, http)
    with pytest.raises(NotFound) as missing:
        await fhir.read("Appointment", "404")
    assert missing.value.status == 404 and "Appointment/404 is not known" in str(missing.value)

    stored = ehr.put(appointment())
    ehr.delete("Appointment", stored["id"])
    with pytest.raises(NotFound) as gone:
        await fhir.read("Appointment", stored["id"])
    assert gone.value.status == 410 and "deleted" in gone.value.diagnostics
    assert len(ehr.calls("GET")) == 2  # neither was retried


async def test_a_bad_request_is_invalid_and_not_retried(ehr, http):
    ehr.fail_next(422, diagnostics="Appointment.participant: a Patient participant is required")
    with pytest.raises(Invalid) as caught:
        await client(ehr, http).create(appointment())
    assert caught.value.status == 422
    assert "a Patient participant is required" in str(caught.value)
    assert len(ehr.calls("POST")) == 1 and ehr.resources("Appointment") == []


async def test_a_resource_that_is_not_valid_r4_never_leaves_sila(ehr, http):
    broken = {**appointment(), "start": "2nd of March"}
    broken["participant"] = [{"actor": {"reference": "Patient/p1"}}]  # participant.status is required
    with pytest.raises(Invalid) as caught:
        await client(ehr, http).create(broken)
    assert caught.value.status is None
    assert "start" in str(caught.value) and "participant.0.status" in str(caught.value)
    assert "2nd of March" not in str(caught.value)  # values are patient data; field paths are not
    assert ehr.calls() == []

    with pytest.raises(Invalid):
        await client(ehr, http).update({"resourceType": "Sppointment", "id": "1", "status": "booked"})
    with pytest.raises(Invalid):
        await client(ehr, http).read("Patient", "../Appointment/1")
    assert ehr.calls() == []


# --- writes: conditional create and versioned update -----------------------------------------------

async def test_create_then_update_on_the_version_the_ehr_returned(ehr, http):
    fhir = client(ehr, http)
    created = await fhir.create(appointment(), if_none_exist=identifier_query(identifiers.APPOINTMENT, "AB12CD"))
    assert (created.created, created.version) == (True, "1")
    assert created.resource["identifier"][0]["value"] == "AB12CD"
    assert ehr.calls("POST")[0].headers["Content-Type"].startswith("application/fhir+json")

    moved = {**created.resource, "start": "2025-03-03T10:00:00+03:00", "end": "2025-03-03T10:20:00+03:00"}
    updated = await fhir.update(moved, if_match=created.version)
    assert (updated.id, updated.version, updated.created) == (created.id, "2", False)
    assert ehr.calls("PUT")[0].headers["If-Match"] == 'W/"1"'
    assert (await fhir.read("Appointment", created.id))["start"] == "2025-03-03T10:00:00+03:00"


async def test_an_update_over_a_version_that_moved_on_is_a_precondition_failure(ehr, http):
    fhir = client(ehr, http)
    created = await fhir.create(appointment())
    ehr.put({**created.resource, "status": "arrived"})  # someone at the hospital changed it: version 2
    with pytest.raises(PreconditionFailed) as caught:
        await fhir.update({**created.resource, "status": "cancelled"}, if_match=created.etag)
    assert "current version is 2" in str(caught.value)
    assert ehr.resources("Appointment")[0]["status"] == "arrived"


async def test_a_conditional_create_matching_two_resources_is_refused_and_creates_nothing(ehr, http):
    ehr.put(appointment("DUP1"))
    ehr.put(appointment("DUP1"))
    with pytest.raises(PreconditionFailed) as caught:
        await client(ehr, http).create(appointment("DUP1"), if_none_exist=f"identifier={identifiers.APPOINTMENT}|DUP1")
    assert caught.value.status == 412 and "match 2 resources" in str(caught.value)
    assert len(ehr.resources("Appointment")) == 2
    assert len(ehr.calls("POST")) == 1


async def test_a_conditional_create_retried_after_a_lost_response_does_not_duplicate(ehr, http):
    ehr.lose_next_response(method="POST")  # the EHR stores it, the answer never arrives
    written = await client(ehr, http).create(
        appointment("LOST1"), if_none_exist=identifier_query(identifiers.APPOINTMENT, "LOST1"))
    assert [c.status for c in ehr.calls("POST")] == [0, 200]
    assert len(ehr.resources("Appointment")) == 1
    assert written.created is False
    assert written.id == ehr.resources("Appointment")[0]["id"] and written.version == "1"


async def test_an_update_retried_after_a_lost_response_succeeds_without_a_second_version(ehr, http):
    fhir = client(ehr, http)
    created = await fhir.create(appointment())
    ehr.lose_next_response(method="PUT")
    cancelled = {**created.resource, "status": "cancelled"}
    written = await fhir.update(cancelled, if_match=created.version)
    # The retry's If-Match names version 1, the lost write made version 2: the EHR already holds it.
    assert [c.status for c in ehr.calls("PUT")] == [0, 412]
    assert written.version == "2"
    assert ehr.resources("Appointment")[0]["status"] == "cancelled"
    assert ehr.resources("Appointment")[0]["meta"]["versionId"] == "2"


async def test_a_lost_update_answer_does_not_hide_someone_elses_change(ehr, http):
    fhir = client(ehr, http)
    created = await fhir.create(appointment())
    ehr.put({**created.resource, "status": "noshow"})
    ehr.fail_next(0, method="PUT")  # connection dropped; the write never happened
    with pytest.raises(PreconditionFailed):
        await fhir.update({**created.resource, "status": "cancelled"}, if_match=created.version)
    assert ehr.resources("Appointment")[0]["status"] == "noshow"


# --- retries ---------------------------------------------------------------------------------------

async def test_a_500_then_success_writes_once(ehr, http):
    ehr.fail_next(500, method="POST")
    query = f"identifier={identifiers.APPOINTMENT}|AB12CD"
    written = await client(ehr, http).create(appointment(), if_none_exist=query)
    assert written.created is True
    assert [c.status for c in ehr.calls("POST")] == [500, 201]
    assert len(ehr.resources("Appointment")) == 1


async def test_429_waits_as_long_as_retry_after_says(ehr, http):
    ehr.fail_next(429, retry_after=1)
    started = time.monotonic()
    await client(ehr, http).capabilities()
    assert time.monotonic() - started >= 1.0  # the backoff alone would have retried after 10 ms
    assert [c.status for c in ehr.calls()] == [429, 200]


async def test_a_retry_after_too_long_to_wait_is_handed_to_the_caller(ehr, http):
    ehr.fail_next(503, retry_after=120)
    with pytest.raises(EhrUnavailable) as caught:
        await client(ehr, http, max_retry_after=30).create(appointment())
    assert caught.value.retry_after == 120
    assert len(ehr.calls()) == 1 and ehr.resources("Appointment") == []


async def test_failing_every_attempt_is_unavailable_not_an_error(ehr, http):
    ehr.fail_next(503, times=10)
    with pytest.raises(EhrUnavailable) as caught:
        await client(ehr, http, attempts=4).create(appointment())
    assert "after 4 attempts" in str(caught.value)
    assert len(ehr.calls("POST")) == 4


async def test_a_slow_ehr_times_out_and_is_asked_again(ehr, http):
    stored = ehr.put(appointment())
    ehr.slow_next(1.0, method="GET")
    started = time.monotonic()
    read = await client(ehr, http, timeout=0.2).read("Appointment", stored["id"])
    assert read["id"] == stored["id"]
    assert len(ehr.calls("GET")) == 2
    assert time.monotonic() - started < 0.9


async def test_an_ehr_that_is_down_is_unavailable_and_works_again_when_back(ehr, http):
    fhir = client(ehr, http, attempts=3)
    await fhir.create(appointment("BEFORE"))  # a pooled keep-alive connection now exists
    port = ehr.port
    await ehr.down()
    with pytest.raises(EhrUnavailable) as caught:
        await fhir.create(appointment("DURING"))
    assert "after 3 attempts" in str(caught.value)

    await ehr.up()
    assert ehr.port == port
    written = await fhir.create(appointment("AFTER"))
    assert written.created
    codes = sorted(a["identifier"][0]["value"] for a in ehr.resources("Appointment"))
    assert codes == ["AFTER", "BEFORE"]


async def test_a_request_made_while_the_ehr_restarts_goes_through_when_it_is_back(ehr, http):
    fhir = client(ehr, http, attempts=8, backoff=0.05)  # waits 0.05 + 0.1 + 0.2 + … between tries
    await ehr.down()

    async def restart():
        await asyncio.sleep(0.3)
        await ehr.up()

    restarting = asyncio.create_task(restart())
    written = await fhir.create(appointment("X1"), if_none_exist=identifier_query(identifiers.APPOINTMENT, "X1"))
    await restarting
    assert written.created and len(ehr.resources("Appointment")) == 1


# --- search and paging -----------------------------------------------------------------------------

async def test_paging_over_three_pages_yields_every_resource_once(ehr, http):
    for number in range(7):
        ehr.put(patient(number))
    ehr.put({"resourceType": "Practitioner", "name": [{"family": "Khalid"}]})
    found = [p async for p in client(ehr, http).search("Patient", {"_count": "3"})]
    assert sorted(p["identifier"][0]["value"] for p in found) == [f"P{n:03}" for n in range(7)]
    pages = ehr.calls("GET")
    assert len(pages) == 3
    assert pages[0].path == "Patient" and pages[0].query == {"_count": ["3"]}
    assert pages[1].path == "" and pages[1].query["_getpagesoffset"] == ["3"]  # the link, as given
    assert pages[2].query["_getpagesoffset"] == ["6"]


async def test_search_by_identifier_and_search_one(ehr, http):
    for number in range(3):
        ehr.put(patient(number))
    fhir = client(ehr, http)
    found = await fhir.find_by_identifier("Patient", identifiers.PATIENT, "P001")
    assert found["name"][0]["given"] == ["Fatima1"]
    assert await fhir.find_by_identifier("Patient", identifiers.PATIENT, "P999") is None
    assert await fhir.find_by_identifier("Patient", "urn:other", "P001") is None
    ehr.put(patient(1))
    with pytest.raises(PreconditionFailed):
        await fhir.search_one("Patient", {"identifier": f"{identifiers.PATIENT}|P001"})


async def test_a_page_that_fails_once_is_fetched_again(ehr, http):
    for number in range(4):
        ehr.put(patient(number))
    fhir = client(ehr, http)
    found = []
    async for resource in fhir.search("Patient", {"_count": "2"}):
        if not found:
            ehr.fail_next(502)  # the second page
        found.append(resource["id"])
    assert len(found) == 4 and len(set(found)) == 4
    assert [c.status for c in ehr.calls("GET")] == [200, 502, 200]


# --- SMART backend services ------------------------------------------------------------------------

async def test_smart_token_is_fetched_once_and_reused(ehr, http, keys):
    fhir = client(ehr, http, auth=smart(ehr, keys[0]))
    await asyncio.gather(*(fhir.create(appointment(f"S{n}")) for n in range(5)))
    await fhir.capabilities()
    assert len(ehr.token_requests) == 1
    request = ehr.token_requests[0]
    assert request.status == 200
    assert request.form["grant_type"] == "client_credentials"
    assert request.form["client_assertion_type"] == ASSERTION_TYPE
    assert request.form["scope"] == SCOPE
    claims, header = request.claims, request.header
    assert claims["iss"] == claims["sub"] == CLIENT_ID and claims["aud"] == ehr.token_url
    assert 0 < claims["exp"] - time.time() <= 300
    assert (header["alg"], header["kid"]) == ("RS384", "sila-key-1")
    tokens = {c.headers["Authorization"] for c in ehr.calls()}
    assert len(tokens) == 1 and tokens != {f"Bearer {ehr.token}"}
    assert len(ehr.resources("Appointment")) == 5


async def test_smart_token_is_fetched_again_when_it_expires(ehr, http, keys):
    now = [1000.0]
    fhir = client(ehr, http, auth=smart(ehr, keys[0], clock=lambda: now[0]))
    await fhir.capabilities()
    now[0] += ehr.token_lifetime - 60  # still well inside its life
    await fhir.capabilities()
    assert len(ehr.token_requests) == 1
    now[0] += 55  # within the last moments of its life
    await fhir.capabilities()
    assert len(ehr.token_requests) == 2
    jtis = {r.claims["jti"] for r in ehr.token_requests}
    assert len(jtis) == 2  # every assertion is single-use


async def test_smart_token_refused_by_the_ehr_is_renewed_once(ehr, http, keys):
    fhir = client(ehr, http, auth=smart(ehr, keys[0]))
    stored = ehr.put(appointment())
    await fhir.read("Appointment", stored["id"])
    ehr.revoke_tokens()
    assert (await fhir.read("Appointment", stored["id"]))["id"] == stored["id"]
    assert len(ehr.token_requests) == 2
    assert [c.status for c in ehr.calls()] == [200, 401, 200]

    ehr.fail_next(401, times=2, diagnostics="token revoked")
    with pytest.raises(Unauthorized) as caught:
        await fhir.read("Appointment", stored["id"])
    assert "token revoked" in str(caught.value)
    assert len(ehr.token_requests) == 3  # one renewal, then the refusal stands


async def test_an_assertion_signed_with_the_wrong_key_is_refused(ehr, http):
    stranger, _ = _pem_pair()
    fhir = client(ehr, http, auth=smart(ehr, stranger))
    with pytest.raises(Unauthorized) as caught:
        await fhir.read("Patient", "1")
    assert "invalid_client" in str(caught.value) and "Signature verification failed" in str(caught.value)
    assert len(ehr.token_requests) == 1 and ehr.token_requests[0].status == 401
    assert ehr.calls() == []  # no FHIR request went out without a token


async def test_the_token_endpoint_checks_audience_and_lifetime(ehr, http, keys):
    def assertion(**claims) -> str:
        base = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": ehr.token_url, "exp": int(time.time()) + 120,
                "jti": str(claims)}
        return jwt.encode({**base, **claims}, keys[0], algorithm="RS384", headers={"kid": "sila-key-1"})

    answers = []
    for token in (assertion(aud="https://elsewhere.example/token"), assertion(exp=int(time.time()) - 10),
                  assertion(exp=int(time.time()) + 3600), assertion(iss="someone-else")):
        form = {"grant_type": "client_credentials", "scope": SCOPE, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": token}
        async with http.post(ehr.token_url, data=form) as response:
            answers.append((response.status, (await response.json())["error"]))
    assert answers == [(401, "invalid_client")] * 4
    replayed = assertion()
    statuses = []
    for _ in range(2):
        form = {"grant_type": "client_credentials", "scope": SCOPE, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": replayed}
        async with http.post(ehr.token_url, data=form) as response:
            statuses.append(response.status)
    assert statuses == [200, 401]


async def test_a_token_endpoint_outage_is_retried(ehr, http, keys):
    fhir = client(ehr, http, auth=smart(ehr, keys[0]))
    await ehr.down()
    with pytest.raises(EhrUnavailable):
        await fhir.capabilities()
    await ehr.up()
    assert (await fhir.capabilities())["resourceType"] == "CapabilityStatement"


# --- logs ------------------------------------------------------------------------------------------

async def test_logs_name_the_interaction_but_carry_no_patient_data(ehr, http, caplog):
    caplog.set_level(logging.DEBUG, logger="ehr")
    ehr.fail_next(500)
    fhir = client(ehr, http)
    written = await fhir.create(patient(42), if_none_exist=identifier_query(identifiers.PATIENT, "P042"))
    with pytest.raises(NotFound):
        await fhir.read("Patient", "gone-7731")
    text = caplog.text
    assert "POST Patient -> 500" in text and "POST Patient -> 201" in text and "GET Patient -> 404" in text
    for phi in ("Fatima42", "Al-Harbi", "P042", "1984", "gone-7731", f"Patient/{written.id}", "urn:sila"):
        assert phi not in text
