"""An async client for the hospital's FHIR R4 server: read, search with paging, conditional create,
versioned update, with retries on the failures an EHR has when it is slow, busy or down.

Errors the server states (an OperationOutcome) become `FhirError` subclasses carrying its
diagnostics; exhausted retries become `EhrUnavailable`, which the caller queues and retries later.
Logs carry the method, resource type, status and timing only: URLs, ids and bodies can be PHI.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# FHIR's id datatype; checking it keeps an id from turning into another path or query.
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_VERSION_IN_LOCATION = re.compile(r"/([^/]+)/([^/]+)/_history/([^/]+)/?$")

Params = Mapping[str, "str | Sequence[str]"] | Sequence[tuple[str, str]]


class FhirError(Exception):
    """The FHIR server refused a request; `status` is None when Sila refused it before sending."""

    def __init__(self, status: int | None, diagnostics: str, outcome: dict | None = None):
        self.status = status
        self.diagnostics = diagnostics
        self.outcome = outcome
        super().__init__(f"FHIR {status if status is not None else 'local'}: {diagnostics}")


class Unauthorized(FhirError):
    """401/403: the token is missing, expired, revoked or lacks the scope."""


class NotFound(FhirError):
    """404 (never existed) or 410 (deleted)."""


class PreconditionFailed(FhirError):
    """412: If-Match names an old version, or a conditional create matched more than one resource."""


class Conflict(FhirError):
    """409: the server refused the write as conflicting with its current state."""


class Invalid(FhirError):
    """400/422, or a resource that fails R4 validation before it is sent."""


_ERRORS: dict[int, type[FhirError]] = {
    400: Invalid, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict, 410: NotFound,
    412: PreconditionFailed, 422: Invalid,
}


def error_for(status: int | None, diagnostics: str, outcome: dict | None = None) -> FhirError:
    return _ERRORS.get(status, FhirError)(status, diagnostics, outcome)


class EhrUnavailable(Exception):
    """The EHR could not be reached or kept failing; nothing was decided, so try again later."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after  # seconds the server asked us to wait, when it said so


@dataclass(frozen=True)
class Written:
    """The result of a create or update: the id and version the EHR holds now."""

    id: str
    version: str | None
    created: bool  # False when a conditional create found the resource already there
    resource: dict | None  # the server's representation, when it returned one

    @property
    def etag(self) -> str | None:
        return f'W/"{self.version}"' if self.version else None


class Auth(Protocol):
    async def authorization(self, http: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> str: ...

    def invalidate(self) -> bool: ...


class BearerToken:
    """A static bearer token issued by the hospital."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("an EHR bearer token is required")
        self._token = token

    async def authorization(self, http: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> str:
        return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        return False  # a static token cannot be renewed: a 401 stands


def identifier_query(system: str, value: str) -> str:
    """The search (and If-None-Exist) query for one business identifier."""
    return urlencode({"identifier": f"{system}|{value}"}, safe=":/|")


@dataclass
class _Response:
    status: int
    headers: Mapping[str, str]
    body: dict | None


class FhirClient:
    def __init__(self, base_url: str, http: aiohttp.ClientSession, *, auth: Auth | None = None,
                 timeout: float = 10.0, attempts: int = 4, backoff: float = 0.5,
                 max_retry_after: float = 30.0):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("the EHR's FHIR base URL must be an absolute http(s) URL")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.auth = auth
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.attempts = attempts
        self.backoff = backoff
        # A Retry-After longer than this is not waited out in-line: the caller's queue waits instead.
        self.max_retry_after = max_retry_after

    # --- the FHIR interactions -------------------------------------------------------------------

    async def capabilities(self) -> dict:
        """The server's CapabilityStatement."""
        return (await self._request("GET", f"{self.base_url}/metadata", "CapabilityStatement")).body or {}

    async def read(self, resource_type: str, resource_id: str) -> dict:
        """The current version of one resource (NotFound when absent or deleted)."""
        response = await self._request("GET", self._url(resource_type, resource_id), resource_type)
        if not response.body:
            raise FhirError(response.status, f"read {resource_type}: the server returned no resource")
        return response.body

    async def search(self, resource_type: str, params: Params | None = None, *,
                     includes: bool = False) -> AsyncIterator[dict]:
        """Every matching resource, page after page (`_include`d ones too when `includes`)."""
        url = self._url(resource_type)
        query = params or {}
        seen: set[str] = set()
        while url:
            bundle = (await self._request("GET", url, resource_type, params=query)).body or {}
            if bundle.get("resourceType") != "Bundle":
                raise FhirError(200, f"search {resource_type}: the server answered without a Bundle")
            for entry in bundle.get("entry") or []:
                mode = (entry.get("search") or {}).get("mode", "match")
                if "resource" in entry and (mode == "match" or (includes and mode == "include")):
                    yield entry["resource"]
            seen.add(url)
            url = self._next_page(bundle)
            if url in seen:  # a server that links a page to itself would loop forever
                break
            query = None  # the next link carries the whole query

    async def search_one(self, resource_type: str, params: Params) -> dict | None:
        """The one matching resource, None when there is none; PreconditionFailed when several."""
        found = None
        async for resource in self.search(resource_type, params):
            if found is not None:
                raise PreconditionFailed(None, f"search {resource_type}: more than one resource matches")
            found = resource
        return found

    async def find_by_identifier(self, resource_type: str, system: str, value: str) -> dict | None:
        return await self.search_one(resource_type, {"identifier": f"{system}|{value}"})

    async def create(self, resource: dict, if_none_exist: str | None = None) -> Written:
        """POST a resource; with `if_none_exist` (a search query such as
        `identifier=urn:sila:appointment|AB12`) the server creates it only when nothing matches, so a
        retry after a lost response never duplicates it. Without it, a retry may."""
        resource_type = _validated(resource)
        body = dict(resource)
        # The server assigns the id and version on create; HAPI refuses a create that carries an id.
        body.pop("id", None)
        if isinstance(body.get("meta"), dict):
            meta = {k: v for k, v in body["meta"].items() if k not in ("versionId", "lastUpdated")}
            if meta:
                body["meta"] = meta
            else:
                body.pop("meta")
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = await self._request("POST", self._url(resource_type), resource_type, body=body,
                                       headers=headers)
        return _written(response, resource_type, created=response.status == 201)

    async def update(self, resource: dict, if_match: str | None = None) -> Written:
        """PUT a resource by its id; with `if_match` (a version or an ETag) only over that version."""
        resource_type = _validated(resource)
        resource_id = resource.get("id")
        if not resource_id:
            raise Invalid(None, f"update {resource_type}: the resource has no id")
        headers = {"Prefer": "return=representation"}
        if if_match:
            headers["If-Match"] = if_match if if_match.startswith(("W/", '"')) else f'W/"{if_match}"'
        url = self._url(resource_type, resource_id)
        try:
            response = await self._request("PUT", url, resource_type, body=resource, headers=headers)
        except PreconditionFailed:
            # A retry whose first try went through unheard (aiohttp itself resends a PUT on a
            # dropped keep-alive connection) finds the version moved on by our own write. When the
            # EHR holds exactly what we sent, the update is done; otherwise the 412 stands.
            current = await self.read(resource_type, resource_id)
            if _content(current) != _content(resource):
                raise
            version = (current.get("meta") or {}).get("versionId")
            return Written(resource_id, version, created=False, resource=current)
        return _written(response, resource_type, created=response.status == 201)

    # --- the transport -----------------------------------------------------------------------------

    def _url(self, resource_type: str, resource_id: str | None = None) -> str:
        _check_type(resource_type)
        if resource_id is None:
            return f"{self.base_url}/{resource_type}"
        if not _ID.fullmatch(resource_id):
            raise Invalid(None, f"{resource_type}: not a valid FHIR id")
        return f"{self.base_url}/{resource_type}/{quote(resource_id)}"

    def _next_page(self, bundle: dict) -> str | None:
        url = next((link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), None)
        if not url:
            return None
        base, link = urlsplit(self.base_url), urlsplit(url)
        if (link.scheme, link.netloc) != (base.scheme, base.netloc):
            # Behind a reverse proxy an EHR often writes its internal address into page links; the
            # page lives on the address we were given, and our token must not go anywhere else.
            url = urlunsplit((base.scheme, base.netloc, link.path, link.query, ""))
        return url

    async def _request(self, method: str, url: str, resource_type: str, *, params: Params | None = None,
                       body: dict | None = None, headers: Mapping[str, str] | None = None) -> _Response:
        """Send one interaction, retrying what may succeed on a later try."""
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        attempt, renewed = 0, False
        while True:
            attempt += 1
            started = time.monotonic()
            retry_after = None
            try:
                response = await self._send(method, url, params, data, headers)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
                failure = type(exc).__name__
                log.warning("FHIR %s %s failed after %.0f ms (attempt %d/%d): %s", method, resource_type,
                            _ms(started), attempt, self.attempts, failure)
            except FhirError as exc:  # from the token endpoint
                if exc.status not in RETRY_STATUSES:
                    raise
                failure = f"token endpoint {exc.status}"
            else:
                status = response.status
                level = (logging.DEBUG if status < 400 else
                         logging.WARNING if status in RETRY_STATUSES else logging.INFO)
                log.log(level, "FHIR %s %s -> %d in %.0f ms (attempt %d/%d)", method, resource_type, status,
                        _ms(started), attempt, self.attempts)
                if status < 400:
                    return response
                if status == 401 and not renewed and self.auth is not None and self.auth.invalidate():
                    renewed = True  # the token may have expired early or been revoked: renew it once
                    attempt -= 1
                    continue
                if status not in RETRY_STATUSES:
                    raise _error(response)
                failure = f"HTTP {status}"
                retry_after = _retry_after(response.headers.get("Retry-After"))
                if retry_after is not None and retry_after > self.max_retry_after:
                    raise EhrUnavailable(f"FHIR {method} {resource_type}: the EHR asks to wait "
                                         f"{retry_after:.0f} s", retry_after=retry_after)
            if attempt >= self.attempts:
                raise EhrUnavailable(f"FHIR {method} {resource_type}: EHR unavailable after {attempt} "
                                     f"attempts ({failure})", retry_after=retry_after)
            delay = self.backoff * 2 ** (attempt - 1)
            await asyncio.sleep(max(delay, retry_after or 0.0))

    async def _send(self, method: str, url: str, params: Params | None, data: bytes | None,
                    headers: Mapping[str, str] | None) -> _Response:
        sent = {"Accept": FHIR_JSON, **(headers or {})}
        if data is not None:
            sent["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
        if self.auth is not None:
            sent["Authorization"] = await self.auth.authorization(self.http, self.timeout)
        async with self.http.request(method, url, params=_query(params), data=data, headers=sent,
                                     timeout=self.timeout, raise_for_status=False,
                                     allow_redirects=False) as response:
            raw = await response.read()
            return _Response(response.status, response.headers, _json_body(raw))


def _query(params: Params | None) -> list[tuple[str, str]] | None:
    if not params:
        return None
    items = params.items() if isinstance(params, Mapping) else params
    query = []
    for key, value in items:
        # A repeated parameter is an AND in FHIR search; a comma inside one value is an OR.
        for one in ([value] if isinstance(value, str) else value):
            query.append((key, str(one)))
    return query


def _json_body(raw: bytes) -> dict | None:
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error(response: _Response) -> FhirError:
    body = response.body
    if body and body.get("resourceType") == "OperationOutcome":
        messages = []
        for issue in body.get("issue") or []:
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
            if text:
                messages.append(text)
        diagnostics = "; ".join(messages) or "; ".join(i.get("code", "") for i in body.get("issue") or [])
        return error_for(response.status, diagnostics or "OperationOutcome without diagnostics", body)
    return error_for(response.status, f"HTTP {response.status} without an OperationOutcome")


def _check_type(resource_type: str) -> None:
    try:
        get_fhir_model_class(resource_type)
    except (ValueError, KeyError):
        raise Invalid(None, f"{resource_type!r} is not an R4 resource type") from None


def _validated(resource: dict) -> str:
    """The resource's type, once it is valid R4: a mapping bug must not reach the hospital's EHR."""
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str):
        raise Invalid(None, "the resource has no resourceType")
    _check_type(resource_type)
    try:
        get_fhir_model_class(resource_type).model_validate(resource)
    except ValidationError as exc:
        # Field paths and rules only: the offending values are patient data.
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or resource_type}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False, include_context=False))
        raise Invalid(None, f"{resource_type} is not valid R4: {problems}") from None
    return resource_type


def _written(response: _Response, resource_type: str, *, created: bool) -> Written:
    body = response.body if response.body and response.body.get("resourceType") == resource_type else None
    resource_id = body.get("id") if body else None
    version = (body.get("meta") or {}).get("versionId") if body else None
    location = response.headers.get("Location") or response.headers.get("Content-Location")
    if location and (match := _VERSION_IN_LOCATION.search(urlsplit(location).path)):
        resource_id = resource_id or match.group(2)
        version = version or match.group(3)
    elif location and not resource_id:
        resource_id = urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1]
    etag = response.headers.get("ETag")
    if etag and not version:
        version = etag.removeprefix("W/").strip('"') or None
    if not resource_id:
        raise FhirError(response.status, f"write {resource_type}: the server named no id (no Location, no body)")
    return Written(resource_id, version, created, body)


def _content(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k not in ("meta", "text")}
