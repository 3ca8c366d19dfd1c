"""A local FHIR R4 server (JSON) playing the hospital's EHR for the EHR client's tests.

It keeps an in-memory, versioned store per resource type and answers read, vread, search (by
`_id`, `identifier`, `status`, `patient`, paged with `_count` and absolute next links), create
(with If-None-Exist), update (with If-Match) and `metadata`, the way HAPI does: ETag W/"n",
Location .../_history/n, meta.versionId, errors as OperationOutcome. Every FHIR call needs a bearer
token: the static `token`, or one its SMART token endpoint issued after verifying the client's
signed JWT assertion. It records every request, fails on demand (`fail_next`, `lose_next_response`,
`slow_next`) and can go down and come back on the same port (`down()`, `up()`).
"""
from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qsl

import jwt
from aiohttp import web
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from tests.fakes.http_server import LocalHttpServer

BASE_PATH = "/fhir/R4"
TOKEN_PATH = "/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FHIR_JSON = "application/fhir+json"
SEARCH_PARAMS = {"_id", "identifier", "status", "patient", "schedule", "start", "_count"}


@dataclass
class Recorded:
    method: str
    path: str  # below the base: "Appointment", "Appointment/3", "" for a page link, "metadata"
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict | None
    status: int = 0  # what the server answered; 0 when it dropped the connection

    @property
    def resource_type(self) -> str | None:
        return self.path.split("/", 1)[0] or None


@dataclass
class TokenRequest:
    form: dict[str, str]
    claims: dict | None  # the verified assertion's claims; None when it was refused
    header: dict | None
    status: int = 0


@dataclass
class Failure:
    status: int  # an HTTP status; 0 drops the connection before the request is handled
    times: int
    method: str | None = None
    retry_after: str | None = None
    diagnostics: str | None = None
    lose_response: bool = False  # handle the request, then drop the connection instead of answering
    delay: float = 0.0  # answer normally, this many seconds late


def outcome(code: str, diagnostics: str, severity: str = "error") -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]}


ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 409: "conflict",
               410: "deleted", 412: "conflict", 422: "processing", 429: "throttled", 500: "exception",
               502: "transient", 503: "transient", 504: "timeout"}


@dataclass
class FakeFhir(LocalHttpServer):
    token: str | None = "ehr-static-token"  # the static bearer token it accepts (None: none is)
    # SMART backend clients: client_id -> the PEM public key registered for it.
    smart_clients: dict[str, str] = field(default_factory=dict)
    token_lifetime: int = 300  # expires_in of the tokens its token endpoint issues
    default_count: int = 20
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    token_requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self):
        # type -> id -> versions, oldest first; None marks a deletion.
        self.store: dict[str, dict[str, list[dict | None]]] = {}
        self.failures: list[Failure] = []
        self._next_id = 1
        self._issued: dict[str, float] = {}  # access token -> wall-clock expiry
        self._seen_jti: set[str] = set()
        self._pages: dict[str, tuple[str, list[dict], int]] = {}
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The FHIR base URL."""
        return self.origin + BASE_PATH

    @property
    def token_url(self) -> str:
        return self.origin + TOKEN_PATH

    async def start(self):
        """Serve on a free port the first time, on the same port after `down()`."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def down(self) -> None:
        """Stop listening and drop every open connection: clients get "connection refused"."""
        await self.close()

    async def up(self) -> None:
        """Come back on the same port with the same data."""
        await self.start()

    def set_up(self, up: bool) -> None:
        """`up()` or `down()` for a server run by `start_in_thread` (one a Sila subprocess talks to)."""
        asyncio.run_coroutine_threadsafe(self.up() if up else self.down(), self._loop).result(10)

    # --- scripting and inspection ------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1, *, method: str | None = None,
                  retry_after: int | str | None = None, diagnostics: str | None = None) -> None:
        """Answer the next `times` FHIR requests (of `method`) with this status and an OperationOutcome
        (status 0: drop the connection before handling the request)."""
        self.failures.append(Failure(status, times, method, None if retry_after is None else str(retry_after),
                                     diagnostics))

    def lose_next_response(self, times: int = 1, *, method: str | None = None) -> None:
        """Handle the next requests (of `method`) fully, then drop the connection: the write is done
        but the client never hears of it."""
        self.failures.append(Failure(0, times, method, lose_response=True))

    def slow_next(self, seconds: float, times: int = 1, *, method: str | None = None) -> None:
        self.failures.append(Failure(200, times, method, delay=seconds))

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (as after an EHR restart or key rotation)."""
        self._issued.clear()

    def put(self, resource: dict) -> dict:
        """Store a resource directly (test set-up), as a new version; returns what is stored."""
        return self._store(dict(resource), resource.get("id") or self._new_id())

    def delete(self, resource_type: str, resource_id: str) -> None:
        self.store[resource_type][resource_id].append(None)

    def resources(self, resource_type: str) -> list[dict]:
        """The current version of every resource of a type."""
        return [versions[-1] for versions in self.store.get(resource_type, {}).values() if versions[-1]]

    def calls(self, method: str | None = None, resource_type: str | None = None) -> list[Recorded]:
        return [r for r in list(self.requests) if (method is None or r.method == method)
                and (resource_type is None or r.resource_type == resource_type)]

    # --- the app -----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._token_endpoint)
        app.router.add_get(BASE_PATH, self._fhir)  # page links
        app.router.add_route("*", BASE_PATH + "/{path:.*}", self._fhir)
        return app

    async def _fhir(self, request: web.Request) -> web.StreamResponse:
        body = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = None
        path = request.match_info.get("path", "")
        recorded = Recorded(request.method, path, {k: request.query.getall(k) for k in request.query},
                            dict(request.headers), body)
        self.requests.append(recorded)

        failure = self._take_failure(request.method)
        if failure and failure.delay:
            await asyncio.sleep(failure.delay)
        elif failure and failure.status == 0 and not failure.lose_response:
            return _drop(request)
        elif failure and not failure.lose_response:
            recorded.status = failure.status
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return _outcome(failure.status, failure.diagnostics or f"scripted failure {failure.status}", headers)

        if path != "metadata" and not self._authorised(request):
            recorded.status = 401
            return _outcome(401, "Invalid, expired or missing bearer token",
                            {"WWW-Authenticate": 'Bearer realm="fhir", error="invalid_token"'})
        response = self._handle(request, path, body)
        recorded.status = response.status
        if failure and failure.lose_response:
            recorded.status = 0
            return _drop(request)
        return response

    def _take_failure(self, method: str) -> Failure | None:
        for failure in self.failures:
            if failure.method in (None, method):
                failure.times -= 1
                if failure.times <= 0:
                    self.failures.remove(failure)
                return failure
        return None

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if self.token is not None and secrets.compare_digest(token, self.token):
            return True
        return self._issued.get(token, 0) > time.time()

    def _handle(self, request: web.Request, path: str, body: dict | None) -> web.Response:
        parts = path.split("/") if path else []
        method = request.method
        if method == "GET" and not parts:
            return self._page(request)
        if method == "GET" and parts == ["metadata"]:
            return _resource(200, self._capabilities())
        resource_type = parts[0]
        try:
            get_fhir_model_class(resource_type)
        except (ValueError, KeyError):
            return _outcome(404, f"Unknown resource type '{resource_type}'")
        if method == "GET" and len(parts) == 1:
            return self._search(request, resource_type)
        if method == "POST" and len(parts) == 1:
            return self._create(request, resource_type, body)
        if method == "GET" and len(parts) == 2:
            return self._read(resource_type, parts[1])
        if method == "GET" and len(parts) == 4 and parts[2] == "_history":
            return self._read(resource_type, parts[1], parts[3])
        if method == "PUT" and len(parts) == 2:
            return self._update(request, resource_type, parts[1], body)
        return _outcome(405, f"{method} {path} is not supported", code="not-supported")

    # --- interactions ------------------------------------------------------------------------------

    def _read(self, resource_type: str, resource_id: str, version: str | None = None) -> web.Response:
        versions = self.store.get(resource_type, {}).get(resource_id)
        if not versions:
            return _outcome(404, f"Resource {resource_type}/{resource_id} is not known")
        if version is not None:
            found = next((v for v in versions if v and v["meta"]["versionId"] == version), None)
            if found is None:
                return _outcome(404, f"Version {version} of {resource_type}/{resource_id} is not known")
            return _resource(200, found)
        if versions[-1] is None:
            return _outcome(410, f"Resource {resource_type}/{resource_id} was deleted")
        return _resource(200, versions[-1])

    def _search(self, request: web.Request, resource_type: str) -> web.Response:
        unknown = set(request.query) - SEARCH_PARAMS
        if unknown:
            return _outcome(400, f"Unknown search parameter(s) for {resource_type}: {', '.join(sorted(unknown))}")
        query = [(k, v) for k, v in request.query.items() if k != "_count"]
        matches = self._matching(resource_type, query)
        count = int(request.query.get("_count", self.default_count))
        snapshot = uuid.uuid4().hex
        self._pages[snapshot] = (resource_type, matches, count)
        return self._bundle(request, snapshot, 0)

    def _page(self, request: web.Request) -> web.Response:
        """A further page of a search, by HAPI-style `_getpages` / `_getpagesoffset` links."""
        snapshot = request.query.get("_getpages", "")
        if snapshot not in self._pages:
            return _outcome(410, "The search has expired; search again")
        return self._bundle(request, snapshot, int(request.query.get("_getpagesoffset", "0")))

    def _bundle(self, request: web.Request, snapshot: str, offset: int) -> web.Response:
        resource_type, matches, count = self._pages[snapshot]
        page = matches[offset:offset + count]
        links = [{"relation": "self", "url": str(request.url)}]
        if offset + count < len(matches):
            links.append({"relation": "next", "url": f"{self.url}?_getpages={snapshot}"
                                                     f"&_getpagesoffset={offset + count}&_count={count}"})
        return _resource(200, {
            "resourceType": "Bundle", "id": uuid.uuid4().hex, "type": "searchset", "total": len(matches),
            "link": links,
            "entry": [{"fullUrl": f"{self.url}/{resource_type}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in page],
        })

    def _create(self, request: web.Request, resource_type: str, body: dict | None) -> web.Response:
        problem = self._invalid(resource_type, body)
        if problem:
            return problem
        condition = request.headers.get("If-None-Exist")
        if condition:
            matches = self._matching(resource_type, parse_qsl(condition))
            if len(matches) > 1:
                return _outcome(412, f"Failed to create {resource_type}: the If-None-Exist criteria "
                                     f"match {len(matches)} resources", code="duplicate")
            if matches:
                return _resource(200, matches[0], location=self.url)
        body.pop("id", None)
        return _resource(201, self._store(body, self._new_id()), location=self.url)

    def _update(self, request: web.Request, resource_type: str, resource_id: str,
                body: dict | None) -> web.Response:
        problem = self._invalid(resource_type, body)
        if problem:
            return problem
        if body.get("id") != resource_id:
            return _outcome(400, f"The resource id ({body.get('id')}) does not match the URL ({resource_id})")
        versions = self.store.get(resource_type, {}).get(resource_id)
        current = versions[-1]["meta"]["versionId"] if versions and versions[-1] else None
        expected = request.headers.get("If-Match")
        if expected is not None:
            wanted = expected.removeprefix("W/").strip('"')
            if wanted != current:
                return _outcome(412, f"{resource_type}/{resource_id}: If-Match names version {wanted}, "
                                     f"the current version is {current}", code="conflict")
        stored = self._store(body, resource_id)
        return _resource(201 if current is None else 200, stored, location=self.url)

    def _invalid(self, resource_type: str, body: dict | None) -> web.Response | None:
        if not isinstance(body, dict) or body.get("resourceType") != resource_type:
            return _outcome(400, f"The body is not a {resource_type} resource")
        try:
            get_fhir_model_class(resource_type).model_validate(body)
        except ValidationError as exc:
            return _outcome(422, f"{resource_type} failed validation: {exc.error_count()} error(s)",
                            code="processing")
        return None

    def _matching(self, resource_type: str, query: list[tuple[str, str]]) -> list[dict]:
        return [r for r in self.resources(resource_type) if all(_matches(r, k, v) for k, v in query)]

    def _store(self, resource: dict, resource_id: str) -> dict:
        versions = self.store.setdefault(resource["resourceType"], {}).setdefault(resource_id, [])
        last = next((v for v in reversed(versions) if v), None)
        version = str(int(last["meta"]["versionId"]) + 1) if last else "1"
        stored = {**resource, "id": resource_id,
                  "meta": {**(resource.get("meta") or {}), "versionId": version,
                           "lastUpdated": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}}
        versions.append(stored)
        return stored

    def _new_id(self) -> str:
        resource_id = str(self._next_id)
        self._next_id += 1
        return resource_id

    def _capabilities(self) -> dict:
        return {
            "resourceType": "CapabilityStatement", "status": "active", "date": "2024-01-01",
            "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
            "rest": [{"mode": "server", "security": {"service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"}]}]},
                "resource": [{"type": t, "versioning": "versioned", "conditionalCreate": True,
                              "interaction": [{"code": c} for c in ("read", "vread", "update", "create",
                                                                       "search-type")],
                              "searchParam": [{"name": "identifier", "type": "token"}]}
                             for t in ("Patient", "Appointment", "Communication", "Practitioner", "Slot")]}],
        }

    # --- SMART backend services token endpoint -----------------------------------------------------

    async def _token_endpoint(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        recorded = TokenRequest({k: str(v) for k, v in form.items()}, None, None)
        self.token_requests.append(recorded)
        status, answer = self._grant(recorded)
        recorded.status = status
        return web.json_response(answer, status=status, headers={"Cache-Control": "no-store"})

    def _grant(self, recorded: TokenRequest) -> tuple[int, dict]:
        form = recorded.form
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            return 400, {"error": "invalid_request", "error_description": "a JWT client assertion is required"}
        if not form.get("scope"):
            return 400, {"error": "invalid_scope", "error_description": "scope is required"}
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
            client_id = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return 401, {"error": "invalid_client", "error_description": "the assertion is not a JWT"}
        key = self.smart_clients.get(client_id)
        if key is None:
            return 401, {"error": "invalid_client", "error_description": "unknown client"}
        try:
            claims = jwt.decode(assertion, key, algorithms=["RS384", "ES384"], audience=self.token_url,
                                issuer=client_id, options={"require": ["iss", "sub", "aud", "exp", "jti"]})
        except jwt.PyJWTError as exc:
            return 401, {"error": "invalid_client", "error_description": f"assertion refused: {exc}"}
        if claims["sub"] != client_id:
            return 401, {"error": "invalid_client", "error_description": "sub must equal iss"}
        if claims["exp"] > time.time() + 300 + 5:
            return 401, {"error": "invalid_client", "error_description": "exp is more than 5 minutes ahead"}
        if claims["jti"] in self._seen_jti:
            return 401, {"error": "invalid_client", "error_description": "jti was used before"}
        self._seen_jti.add(claims["jti"])
        recorded.claims, recorded.header = claims, header
        token = secrets.token_urlsafe(24)
        self._issued[token] = time.time() + self.token_lifetime
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime,
                     "scope": form["scope"]}


def _matches(resource: dict, name: str, value: str) -> bool:
    """One FHIR search parameter; a comma separates alternatives."""
    return any(_matches_one(resource, name, one) for one in value.split(","))


def _matches_one(resource: dict, name: str, value: str) -> bool:
    if name == "_id":
        return resource.get("id") == value
    if name == "status":
        return resource.get("status") == value
    if name == "patient":
        wanted = value if "/" in value else f"Patient/{value}"
        refs = [resource.get("subject"), resource.get("patient")]
        refs += [p.get("actor") for p in resource.get("participant") or [] if isinstance(p, dict)]
        return any(isinstance(r, dict) and (r.get("reference") or "").endswith(wanted) for r in refs)
    if name == "schedule":
        return ((resource.get("schedule") or {}).get("reference") or "").endswith(value)
    if name == "start":
        prefix, moment = (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", value)
        start, wanted = resource.get("start"), datetime.fromisoformat(moment.replace("Z", "+00:00"))
        if not start:
            return False
        start = datetime.fromisoformat(start.replace("Z", "+00:00"))
        return {"ge": start >= wanted, "gt": start > wanted, "le": start <= wanted, "lt": start < wanted,
                "eq": start == wanted}[prefix]
    if name == "identifier":
        system, bar, code = value.rpartition("|")
        for identifier in resource.get("identifier") or []:
            if bar and system and identifier.get("system") != system:
                continue
            if bar and not system and identifier.get("system"):
                continue  # "|value" means an identifier without a system
            if not code or identifier.get("value") == code:
                return True
        return False
    return False


def _resource(status: int, resource: dict, *, location: str | None = None) -> web.Response:
    headers = {}
    version = (resource.get("meta") or {}).get("versionId")
    if version:
        headers["ETag"] = f'W/"{version}"'
    if location:
        headers["Location"] = f"{location}/{resource['resourceType']}/{resource['id']}/_history/{version}"
    return web.json_response(resource, status=status, headers=headers, content_type=FHIR_JSON)


def _outcome(status: int, diagnostics: str, headers: dict | None = None, code: str | None = None) -> web.Response:
    return web.json_response(outcome(code or ISSUE_CODES.get(status, "exception"), diagnostics), status=status,
                             headers=headers or {}, content_type=FHIR_JSON)


def _drop(request: web.Request):
    request.transport.abort()
    raise asyncio.CancelledError
