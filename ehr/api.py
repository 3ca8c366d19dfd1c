"""Sila's own FHIR R4 REST API at /fhir/R4: capability statement, read, search, create and update.

Every call but the capability statement needs a client's bearer token with SMART `system/` scopes
(FHIR allows /metadata to be public so that clients can discover how to authenticate). Every read
of patient data is written to the audit log, as the staff console's reads are."""
from __future__ import annotations

import json
import logging
import re
import uuid
from email.utils import format_datetime
from functools import lru_cache, wraps
from urllib.parse import urlencode

from aiohttp import web
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from multidict import MultiDict
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import FhirClient, FhirResource, utcnow
from ehr import store
from ehr.api_clients import allows, authenticate
from inbox.security import audit

log = logging.getLogger(__name__)

BASE = "/fhir/R4"
FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
SUPPORTED_TYPES = (
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "Schedule", "Slot",
    "Appointment", "Communication", "Consent", "Questionnaire", "QuestionnaireResponse", "Condition",
    "AllergyIntolerance", "MedicationRequest", "Observation", "DiagnosticReport", "Immunization", "CareTeam",
    "Coverage", "Encounter",
    # Synthea's bundles carry these too, so an imported record can be read back whole.
    "Claim", "ExplanationOfBenefit", "CarePlan", "Procedure",
)
_SET_UP = web.AppKey("fhir_api_set_up", bool)
# The paths this API serves, with the methods each allows (for 405 answers).
_KNOWN_PATHS = (
    (re.compile(r"metadata"), "GET"),
    (re.compile(r"[A-Za-z]+"), "GET, POST"),
    (re.compile(r"[A-Za-z]+/_search"), "POST"),
    (re.compile(r"[A-Za-z]+/[A-Za-z0-9\-.]{1,64}"), "GET, PUT"),
    (re.compile(r"[A-Za-z]+/[A-Za-z0-9\-.]{1,64}/_history/\d+"), "GET"),
)


class Failure(Exception):
    """An error answered with an OperationOutcome."""

    def __init__(self, status: int, code: str, diagnostics: str, headers: dict | None = None):
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics, self.headers = status, code, diagnostics, headers or {}


def _hub(request: web.Request):
    from bot.app import HUB

    return request.app[HUB]


def _base_url(request: web.Request) -> str:
    return _hub(request).settings.base_url + BASE


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict:
    return OperationOutcome.model_validate({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }).model_dump(mode="json", exclude_none=True)


def _json(body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), status=status,
                        headers=headers, content_type=FHIR_JSON, charset="utf-8")


def _failure_response(failure: Failure) -> web.Response:
    return _json(operation_outcome(failure.code, failure.diagnostics), failure.status, failure.headers)


def _resource_response(request: web.Request, row: FhirResource, status: int = 200,
                       location: bool = False) -> web.Response:
    headers = {"ETag": f'W/"{row.version_id}"', "Last-Modified": format_datetime(row.last_updated, usegmt=True)}
    if location:
        headers["Location"] = (f"{_base_url(request)}/{row.resource_type}/{row.resource_id}"
                               f"/_history/{row.version_id}")
    return _json(row.content, status, headers)


def _check_format(request: web.Request) -> None:
    wanted = request.query.get("_format") or ""
    accept = request.headers.get("Accept") or ""
    if (wanted and "json" not in wanted) or (accept and not any(
            kind in accept for kind in ("json", "*/*", "application/*"))):
        raise Failure(406, "not-supported", "this server speaks JSON only (application/fhir+json)")


# -- auditing -----------------------------------------------------------------------------------

def _is_patient_data(resource_type: str) -> bool:
    return resource_type not in store.NON_PATIENT_TYPES


async def _audit(session: AsyncSession, request: web.Request, client: FhirClient, action: str,
                 resource_type: str, rows: list[FhirResource], detail: dict, outcome: str = "ok") -> None:
    """One audit row per patient whose data was touched (one without a patient when there is none)."""
    if not _is_patient_data(resource_type):
        return
    refs = list(dict.fromkeys(row.patient_ref for row in rows if row.patient_ref))
    crm_ids = await store.crm_patient_ids(session, refs)
    for ref in refs or [None]:
        audit(session, request, None, action, outcome=outcome, patient_id=crm_ids.get(ref),
              detail={**detail, "patient": ref} if ref else detail, username=f"fhir:{client.name}"[:64])


# -- the request pipeline -----------------------------------------------------------------------

def fhir_handler(access: str):
    """Wrap a handler(request, session, client, resource_type): authenticate the bearer token, check
    the type and the client's scope for `access`, commit, and answer every error as an
    OperationOutcome."""

    def decorate(handler):
        @wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                _check_format(request)
                async with _hub(request).sessions() as session:
                    client = await _client(request, session)
                    resource_type = request.match_info["type"]
                    if resource_type not in SUPPORTED_TYPES:
                        raise Failure(404, "not-supported", f"this server does not serve {resource_type} resources")
                    if not allows(client.scopes, resource_type, access):
                        audit(session, request, None, f"fhir.{access}", outcome="forbidden",
                              detail={"type": resource_type, "path": request.path},
                              username=f"fhir:{client.name}"[:64])
                        await session.commit()
                        raise Failure(403, "forbidden", f"the client's scopes do not allow {access} on {resource_type}")
                    response = await handler(request, session, client, resource_type)
                    await session.commit()
                    return response
            except Failure as failure:
                return _failure_response(failure)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                return _failure_response(Failure(exc.status, "processing", exc.reason))
            except Exception:
                log.exception("FHIR API %s %s failed", request.method, request.path)
                return _failure_response(Failure(500, "exception", "the server failed to answer this request"))

        return wrapper

    return decorate


async def _client(request: web.Request, session: AsyncSession) -> FhirClient:
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    client = await authenticate(session, token.strip()) if scheme.lower() == "bearer" else None
    if client is None:
        challenge = 'Bearer realm="sila-fhir"' + (', error="invalid_token"' if token else "")
        problem = "the bearer token is not valid" if token else "a valid bearer token is required"
        raise Failure(401, "login", problem, {"WWW-Authenticate": challenge})
    return client


async def _body(request: web.Request, resource_type: str) -> dict:
    if request.content_type not in JSON_TYPES and request.content_type != "application/octet-stream":
        raise Failure(415, "not-supported", f"send {FHIR_JSON}, not {request.content_type}")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Failure(400, "structure", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Failure(400, "structure", "the body must be a JSON object (a FHIR resource)")
    if body.get("resourceType") != resource_type:
        raise Failure(400, "invalid", f"the body's resourceType {body.get('resourceType')!r} does not match the URL "
                                      f"({resource_type})")
    return body


# -- interactions -------------------------------------------------------------------------------

async def metadata(request: web.Request) -> web.Response:
    return _json(capability_statement(_base_url(request)))


@fhir_handler("read")
async def read(request, session, client, resource_type) -> web.Response:
    resource_id = request.match_info["id"]
    row = await store.get(session, resource_type, resource_id)
    version = request.match_info.get("vid")
    detail = {"resource": f"{resource_type}/{resource_id}" + (f"/_history/{version}" if version else "")}
    if row is None or (version is not None and version != str(row.version_id)):
        await _audit(session, request, client, "fhir.read", resource_type, [], detail, outcome="not-found")
        await session.commit()
        if row is None:
            raise Failure(404, "not-found", f"{resource_type}/{resource_id} is not known")
        raise Failure(404, "not-found", f"version {version} of {resource_type}/{resource_id} is not kept; "
                                        f"the current version is {row.version_id}")
    await _audit(session, request, client, "fhir.read", resource_type, [row], detail)
    return _resource_response(request, row)


@fhir_handler("read")
async def search(request, session, client, resource_type) -> web.Response:
    params = MultiDict(request.query)
    if request.method == "POST":
        params.extend(await request.post())
    try:
        result = await store.search(session, resource_type, params)
    except store.InvalidSearch as exc:
        raise Failure(400, "invalid", str(exc)) from None
    bundle = _searchset(request, resource_type, result)
    await _audit(session, request, client, "fhir.search", resource_type, result.rows,
                 {"type": resource_type, "query": _query(result.params), "total": result.total})
    return _json(bundle)


@fhir_handler("write")
async def create(request, session, client, resource_type) -> web.Response:
    body = await _body(request, resource_type)
    condition = request.headers.get("If-None-Exist")
    try:
        row, created = await store.create(session, body, condition)
    except store.InvalidResource as exc:
        raise Failure(400, "invalid", exc.diagnostics) from None
    except store.InvalidSearch as exc:
        raise Failure(400, "invalid", f"If-None-Exist: {exc}") from None
    except store.PreconditionFailed as exc:
        raise Failure(412, "multiple-matches", str(exc)) from None
    await _audit(session, request, client, "fhir.create", resource_type, [row],
                 {"resource": f"{resource_type}/{row.resource_id}", "created": created})
    return _resource_response(request, row, 201 if created else 200, location=True)


@fhir_handler("write")
async def update(request, session, client, resource_type) -> web.Response:
    resource_id = request.match_info["id"]
    body = await _body(request, resource_type)
    if body.get("id") != resource_id:
        raise Failure(400, "invalid", f"the body's id {body.get('id')!r} must be the id in the URL ({resource_id})")
    try:
        row, created = await store.update(session, resource_type, resource_id, body, request.headers.get("If-Match"))
    except store.InvalidResource as exc:
        raise Failure(400, "invalid", exc.diagnostics) from None
    except store.PreconditionFailed as exc:
        raise Failure(412, "conflict", str(exc)) from None
    await _audit(session, request, client, "fhir.update", resource_type, [row],
                 {"resource": f"{resource_type}/{resource_id}", "created": created})
    return _resource_response(request, row, 201 if created else 200, location=True)


async def unsupported(request: web.Request) -> web.Response:
    """Anything else under /fhir/R4: 405 for a known path with another method, 404 otherwise."""
    path = request.match_info.get("tail", "")
    if path == "":
        return _failure_response(Failure(405, "not-supported", "transaction, batch and system-level "
                                                               "interactions are not supported", {"Allow": ""}))
    for pattern, allowed in _KNOWN_PATHS:
        if pattern.fullmatch(path):
            return _failure_response(Failure(405, "not-supported", f"{request.method} is not supported on "
                                                                   f"{BASE}/{path}", {"Allow": allowed}))
    return _failure_response(Failure(404, "not-found", f"no FHIR endpoint at {BASE}/{path}"))


# -- bundles and the capability statement ---------------------------------------------------------

def _query(params: dict[str, list[str]]) -> str:
    return urlencode([(name, value) for name, values in params.items() for value in values], safe=":/|,")


def _searchset(request: web.Request, resource_type: str, result: store.SearchResult) -> dict:
    base = _base_url(request)
    criteria = {name: values for name, values in result.params.items() if name not in ("_count", "_offset")}

    def link(relation: str, offset: int) -> dict:
        page = {**criteria, "_count": [str(result.count)], "_offset": [str(offset)]}
        return {"relation": relation, "url": f"{base}/{resource_type}?{_query(page)}"}

    links = [link("self", result.offset)]
    if result.count and result.offset + result.count < result.total:
        links.append(link("next", result.offset + result.count))
    if result.offset > 0 and result.count:
        links.append(link("previous", max(0, result.offset - result.count)))
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"lastUpdated": store.instant(utcnow())},
              "type": "searchset", "total": result.total, "link": links}
    if result.rows:
        bundle["entry"] = [{"fullUrl": f"{base}/{row.resource_type}/{row.resource_id}", "resource": row.content,
                            "search": {"mode": "match"}} for row in result.rows]
    return bundle


@lru_cache(maxsize=8)
def capability_statement(base_url: str) -> dict:
    """What this server does, for clients to discover (FHIR's /metadata)."""
    resources = [{
        "type": resource_type,
        "interaction": [{"code": code} for code in ("read", "vread", "search-type", "create", "update")],
        "versioning": "versioned-update",
        "readHistory": False,
        "updateCreate": True,
        "conditionalCreate": True,
        "searchParam": [{"name": name, "type": kind} for name, kind in store.search_params(resource_type).items()],
    } for resource_type in SUPPORTED_TYPES]
    return CapabilityStatement.model_validate({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": store.instant(utcnow()),
        "publisher": "Sila",
        "kind": "instance",
        "software": {"name": "Sila"},
        "implementation": {"description": "Sila patient-relationship hub: FHIR R4 API", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": False,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"}]}],
                "description": "Bearer token per client, issued by Sila's administrators; SMART v1 system "
                               "scopes such as system/*.read, system/*.write or system/Appointment.write.",
            },
            "resource": resources,
        }],
    }).model_dump(mode="json", exclude_none=True)


def setup_fhir_api(app: web.Application) -> None:
    if app.get(_SET_UP):
        return
    app[_SET_UP] = True
    resource_type, resource_id = "{type:[A-Za-z]+}", r"{id:[A-Za-z0-9\-.]{1,64}}"
    app.router.add_routes([
        web.get(f"{BASE}/metadata", metadata),
        web.get(f"{BASE}/{resource_type}", search),
        web.post(f"{BASE}/{resource_type}/_search", search),
        web.post(f"{BASE}/{resource_type}", create),
        web.get(f"{BASE}/{resource_type}/{resource_id}", read),
        web.put(f"{BASE}/{resource_type}/{resource_id}", update),
        web.get(rf"{BASE}/{resource_type}/{resource_id}/_history/{{vid:\d+}}", read),
        web.route("*", BASE, unsupported),
        web.route("*", BASE + "/{tail:.*}", unsupported),
    ])
