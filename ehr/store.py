"""Sila's FHIR R4 resource store: validated resources by (type, id), versioned, searchable.

Search columns are extracted on write (the patient a resource is about, its main date, its
identifiers), so a search is one indexed SQL query on SQLite and PostgreSQL alike."""
from __future__ import annotations

import calendar
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from urllib.parse import parse_qs

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import FhirIdentifier, FhirResource, utcnow

DEFAULT_COUNT, MAX_COUNT = 50, 500
MAX_ID_LENGTH = 64  # FHIR ids are [A-Za-z0-9\-\.]{1,64}

# The main date of each type: what `date` searches and what orders results (first present wins).
DATE_PATHS: dict[str, tuple[str, ...]] = {
    "Appointment": ("start",),
    "Slot": ("start",),
    "Observation": ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"),
    "Encounter": ("period.start",),
    "Communication": ("sent", "received"),
    "Condition": ("onsetDateTime", "onsetPeriod.start", "recordedDate"),
    "Immunization": ("occurrenceDateTime",),
    "MedicationRequest": ("authoredOn",),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod.start", "issued"),
    "QuestionnaireResponse": ("authored",),
    "Consent": ("dateTime",),
    "Claim": ("created",),
    "ExplanationOfBenefit": ("created",),
    "Patient": ("birthDate",),
    "Procedure": ("performedDateTime", "performedPeriod.start"),
    "CarePlan": ("period.start", "created"),
    "AllergyIntolerance": ("recordedDate", "onsetDateTime"),
    "CareTeam": ("period.start",),
    "Coverage": ("period.start",),
    "Questionnaire": ("date",),
}

# `status` has a required binding in FHIR R4 for these types; fhir.resources checks only that it
# is a code, so the value sets are checked here (an EHR rejects "canceled" for "cancelled").
_EVENT = ("preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error",
          "unknown")
_FINANCIAL = ("active", "cancelled", "draft", "entered-in-error")
STATUS_CODES: dict[str, frozenset[str]] = {t: frozenset(codes) for t, codes in {
    "Appointment": ("proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
                    "entered-in-error", "checked-in", "waitlist"),
    "Slot": ("busy", "free", "busy-unavailable", "busy-tentative", "entered-in-error"),
    "Communication": _EVENT,
    "Procedure": _EVENT,
    "Consent": ("draft", "proposed", "active", "rejected", "inactive", "entered-in-error"),
    "Questionnaire": ("draft", "active", "retired", "unknown"),
    "QuestionnaireResponse": ("in-progress", "completed", "amended", "entered-in-error", "stopped"),
    "Observation": ("registered", "preliminary", "final", "amended", "corrected", "cancelled",
                    "entered-in-error", "unknown"),
    "DiagnosticReport": ("registered", "partial", "preliminary", "final", "amended", "corrected", "appended",
                         "cancelled", "entered-in-error", "unknown"),
    "Encounter": ("planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
                  "entered-in-error", "unknown"),
    "Immunization": ("completed", "entered-in-error", "not-done"),
    "MedicationRequest": ("active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft",
                          "unknown"),
    "CarePlan": ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"),
    "CareTeam": ("proposed", "active", "suspended", "inactive", "entered-in-error"),
    "Coverage": _FINANCIAL,
    "Claim": _FINANCIAL,
    "ExplanationOfBenefit": _FINANCIAL,
    "Location": ("active", "suspended", "inactive"),
}.items()}

# Types that describe the hospital rather than a patient: reading them is not reading patient data.
NON_PATIENT_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization", "Location", "Schedule",
                               "Slot", "Questionnaire"})


class InvalidResource(ValueError):
    """The resource is not valid FHIR R4 (the message is the validator's diagnostics)."""

    def __init__(self, diagnostics: str):
        super().__init__(diagnostics)
        self.diagnostics = diagnostics


class InvalidSearch(ValueError):
    """A search parameter or value this store does not understand."""


class PreconditionFailed(Exception):
    """If-Match names another version, or a conditional create matches more than one resource."""


@dataclass
class SearchResult:
    rows: list[FhirResource]
    total: int
    count: int = DEFAULT_COUNT
    offset: int = 0
    params: dict[str, list[str]] = field(default_factory=dict)


# -- validation and extraction ------------------------------------------------------------------

@dataclass(slots=True)
class _Prepared:
    resource: dict
    type: str
    id: str
    crm_id: int | None
    patient_ref: str | None = None
    date: datetime | None = None
    identifiers: set[tuple[str, str]] = field(default_factory=set)
    validated: bool = True


@lru_cache(maxsize=None)
def _model(resource_type: str):
    try:
        return get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError, ImportError):
        return None


def validate(resource: dict) -> None:
    """Raise InvalidResource unless `resource` is a valid FHIR R4 resource."""
    if not isinstance(resource, dict):
        raise InvalidResource("a resource must be a JSON object")
    resource_type = resource.get("resourceType")
    model = _model(resource_type) if isinstance(resource_type, str) and resource_type.isalpha() else None
    if model is None:
        raise InvalidResource(f"unknown resourceType {resource_type!r}")
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise InvalidResource(_diagnostics(resource_type, exc)) from None
    except (ValueError, TypeError) as exc:
        raise InvalidResource(f"{resource_type}: {exc}") from None
    status = resource.get("status")
    codes = STATUS_CODES.get(resource_type)
    if codes is not None and status is not None and status not in codes:
        raise InvalidResource(f"{resource_type}.status: {status!r} is not one of {', '.join(sorted(codes))}")


def _diagnostics(resource_type: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:10]:
        where = ".".join(str(part) for part in error["loc"] if part != "__root__")
        problems.append(f"{resource_type}.{where}: {error['msg']}" if where else f"{resource_type}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def _prepare(resource: dict, crm_id: int | None, validated: bool = False) -> _Prepared:
    if not validated:
        validate(resource)
    resource_id = resource.get("id")
    if not resource_id:
        raise InvalidResource(f"{resource['resourceType']}: the resource has no id")
    if len(resource_id) > MAX_ID_LENGTH:
        raise InvalidResource(f"{resource['resourceType']}.id: longer than {MAX_ID_LENGTH} characters")
    return _Prepared(resource=resource, type=resource["resourceType"],
                     id=resource_id, crm_id=crm_id, patient_ref=patient_ref_of(resource),
                     date=date_of(resource), identifiers=_identifiers(resource))


def _same_content(stored: dict, resource: dict) -> bool:
    """Equal but for `meta` (the store's version and time): what "unchanged" compares."""
    return (stored.keys() - {"meta"}) == (resource.keys() - {"meta"}) and all(
        value == resource[key] for key, value in stored.items() if key != "meta")


_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")


def normalise_patient_ref(reference: str | None) -> str | None:
    """'Patient/<id>' from a relative or absolute reference to a Patient, else None."""
    if not reference:
        return None
    match = _PATIENT_REFERENCE.search(reference)
    return f"Patient/{match.group(1)}" if match else None


def patient_ref_of(resource: dict) -> str | None:
    """The patient a resource is about ("Patient/<id>"); a Patient is about itself."""
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource['id']}" if resource.get("id") else None
    for key in ("subject", "patient", "beneficiary"):
        value = resource.get(key)
        if isinstance(value, dict) and (ref := normalise_patient_ref(value.get("reference"))):
            return ref
    if resource.get("resourceType") == "Appointment":
        for participant in resource.get("participant") or ():
            if ref := normalise_patient_ref((participant.get("actor") or {}).get("reference")):
                return ref
    return None


def date_of(resource: dict) -> datetime | None:
    """The resource's main date as an aware UTC datetime (the start of a partial date)."""
    for path in DATE_PATHS.get(resource.get("resourceType"), ()):
        value = resource
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and (span := parse_date(value)):
            return span[0]
    return None


def _identifiers(resource: dict) -> set[tuple[str, str]]:
    found = resource.get("identifier") or ()
    if isinstance(found, dict):  # a few types (QuestionnaireResponse) carry a single identifier
        found = (found,)
    return {(i.get("system") or "", i["value"]) for i in found
            if isinstance(i, dict) and i.get("value") and len(i["value"]) <= 255 and len(i.get("system") or "") <= 255}


_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
                   r"(Z|[+\- ]\d{2}:\d{2})?)?)?)?")


def parse_date(value: str) -> tuple[datetime, datetime] | None:
    """The UTC interval [start, end) a FHIR date, dateTime or instant stands for.

    A date without a time is the whole day (or month, or year); a time without a zone is UTC.
    A '+' in a zone offset arrives as a space when a client did not encode it in the URL."""
    match = _DATE.fullmatch(value)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        y = int(year)
        if month is None:
            start = datetime(y, 1, 1, tzinfo=timezone.utc)
            return start, start.replace(year=y + 1)
        m = int(month)
        if day is None:
            start = datetime(y, m, 1, tzinfo=timezone.utc)
            return start, start + timedelta(days=calendar.monthrange(y, m)[1])
        if hour is None:
            start = datetime(y, m, int(day), tzinfo=timezone.utc)
            return start, start + timedelta(days=1)
        tz = timezone.utc
        if zone and zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        start = datetime(y, m, int(day), int(hour), int(minute), int(second or 0), micro, tzinfo=tz)
    except ValueError:
        return None
    step = timedelta(minutes=1) if second is None else timedelta(seconds=1) if fraction is None \
        else timedelta(milliseconds=1)
    start = start.astimezone(timezone.utc)
    return start, start + step


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- writes -------------------------------------------------------------------------------------

async def put(session: AsyncSession, resource: dict, *, crm_id: int | None = None) -> tuple[FhirResource, bool]:
    """Store `resource` by (resourceType, id); (row, False) when its content is unchanged."""
    return (await put_many(session, [(resource, crm_id)]))[0]


async def put_many(session: AsyncSession, resources: Iterable[tuple[dict, int | None]], *,
                   validated: bool = False) -> list[tuple[FhirResource, bool]]:
    """`put` for many resources with one lookup per type; all are validated before any is written
    (`validated`: the caller already did, with `validate`, e.g. in a worker process)."""
    items = list(resources)
    existing = await _existing(session, [_key(resource) for resource, _ in items])
    prepared = []
    for resource, crm_id in items:
        row = existing.get(_key(resource))
        if row is not None and not row.deleted and _same_content(row.content, resource):
            # Identical to what is stored, which was valid when it was written: importing a bundle
            # again costs a comparison, not a validation.
            prepared.append(_Prepared(resource=resource, type=row.resource_type,
                                      id=row.resource_id, crm_id=crm_id, validated=False))
        else:
            prepared.append(_prepare(resource, crm_id, validated))
    return await _store(session, prepared, existing)


def _key(resource) -> tuple[str, str] | None:
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str) \
            and isinstance(resource.get("id"), str):
        return resource["resourceType"], resource["id"]
    return None


async def _store(session: AsyncSession, prepared: list[_Prepared],
                 existing: dict[tuple[str, str], FhirResource] | None = None) -> list[tuple[FhirResource, bool]]:
    if existing is None:
        existing = await _existing(session, [(item.type, item.id) for item in prepared])
    now = utcnow()
    results: list[tuple[FhirResource, bool]] = []
    written: dict[int, tuple[FhirResource, set[tuple[str, str]]]] = {}
    stale_pks: set[int] = set()
    # New rows go in with one multi-row INSERT (an import creates thousands): the objects handed
    # back carry their ids but stay outside the session; a later read loads them from the table.
    new_rows: list[tuple[FhirResource, dict]] = []
    for item in prepared:
        key = (item.type, item.id)
        row = existing.get(key)
        if row is not None and not row.deleted and _same_content(row.content, item.resource):
            if item.crm_id is not None and row.crm_id != item.crm_id:
                row.crm_id = item.crm_id
            results.append((row, False))
            continue
        if not item.validated:  # it matched what was stored, then an earlier item of this batch changed that
            item = _prepare(item.resource, item.crm_id)
        version = 1 if row is None else row.version_id + 1
        meta = {k: v for k, v in (item.resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        content = {**item.resource, "meta": {**meta, "versionId": str(version), "lastUpdated": instant(now)}}
        if row is None:
            values = dict(resource_type=item.type, resource_id=item.id, version_id=1, crm_id=item.crm_id,
                          deleted=False, last_updated=now, patient_ref=item.patient_ref, date=item.date,
                          content=content)
            row = FhirResource(**values)
            new_rows.append((row, values))
            existing[key] = row
        else:
            row.version_id, row.deleted, row.last_updated = version, False, now
            row.patient_ref, row.date, row.content = item.patient_ref, item.date, content
            if item.crm_id is not None:
                row.crm_id = item.crm_id
            if row.id is not None:
                stale_pks.add(row.id)
        written[id(row)] = (row, item.identifiers)
        results.append((row, True))
    if not written:
        return results
    if new_rows:
        ids = (await session.execute(
            insert(FhirResource).returning(FhirResource.id, sort_by_parameter_order=True),
            [values for _, values in new_rows])).scalars().all()
        for (row, _), pk in zip(new_rows, ids):
            row.id = pk
    await session.flush()
    if stale_pks:
        await session.execute(delete(FhirIdentifier).where(FhirIdentifier.resource_pk.in_(stale_pks))
                              .execution_options(synchronize_session=False))
    identifier_rows = [{"resource_pk": row.id, "resource_type": row.resource_type, "system": system, "value": value}
                       for row, identifiers in written.values() for system, value in sorted(identifiers)]
    if identifier_rows:
        await session.execute(insert(FhirIdentifier), identifier_rows)
    return results


_BY_IDS = select(FhirResource).where(FhirResource.resource_type == bindparam("type"),
                                     FhirResource.resource_id.in_(bindparam("ids", expanding=True)))


async def _existing(session: AsyncSession,
                    keys: Iterable[tuple[str, str] | None]) -> dict[tuple[str, str], FhirResource]:
    wanted: dict[str, set[str]] = {}
    for key in keys:
        if key is not None:
            wanted.setdefault(key[0], set()).add(key[1])
    found: dict[tuple[str, str], FhirResource] = {}
    for resource_type, ids in wanted.items():
        ids = sorted(ids)
        for start in range(0, len(ids), 500):
            rows = await session.scalars(_BY_IDS, {"type": resource_type, "ids": ids[start:start + 500]})
            found.update(((row.resource_type, row.resource_id), row) for row in rows)
    return found


async def _one_writer(session: AsyncSession, key: str) -> None:
    """Make read-then-write sequences on `key` run one at a time across connections and workers, so
    two retries of one conditional create cannot both find nothing and both create."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": number})
    else:
        # SQLite has a single writer: a write statement (even one matching no row) takes the write
        # lock until commit, so the read that follows sees every committed create.
        await session.execute(text("UPDATE fhir_resources SET version_id = version_id WHERE 0 = 1"))


async def create(session: AsyncSession, resource: dict,
                 if_none_exist: str | None = None) -> tuple[FhirResource, bool]:
    """FHIR create: the server assigns the id. With `if_none_exist` (a search query such as
    "identifier=urn:sila:appointment|AB12"), a single match is returned as it is (created False)."""
    if not isinstance(resource, dict):
        raise InvalidResource("a resource must be a JSON object")
    resource_type = resource.get("resourceType")
    item = _prepare({**resource, "id": str(uuid.uuid4())}, None)
    if if_none_exist:
        # Some clients send the whole search URL ("Appointment?identifier=…"), as FHIR's examples do.
        params = parse_qs(if_none_exist.split("?", 1)[-1], keep_blank_values=True)
        if not params:
            raise InvalidSearch(f"If-None-Exist is not a search query: {if_none_exist!r}")
        params.pop("_count", None)
        params.pop("_offset", None)
        _search_conditions(resource_type, params)  # a bad query fails before any lock is taken
        await _one_writer(session, f"{resource_type}?{if_none_exist}")
        found = await search(session, resource_type, {**params, "_count": ["2"]})
        if found.total > 1:
            raise PreconditionFailed(f"If-None-Exist {if_none_exist!r} matches {found.total} {resource_type} resources")
        if found.total == 1:
            return found.rows[0], False
    [(row, _)] = await _store(session, [item])
    return row, True


async def update(session: AsyncSession, resource_type: str, resource_id: str, resource: dict,
                 if_match: str | None = None) -> tuple[FhirResource, bool]:
    """FHIR update (update-as-create for a new id); (row, created). `if_match` is an ETag
    (W/"3", "3" or 3): another current version raises PreconditionFailed."""
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        raise InvalidResource(f"the body is not a {resource_type}")
    if resource.get("id") != resource_id:
        raise InvalidResource(f"{resource_type}.id: the resource's id must be the id in the URL ({resource_id})")
    item = _prepare(resource, None)
    await _one_writer(session, f"{resource_type}/{resource_id}")
    row = await session.scalar(select(FhirResource).where(
        FhirResource.resource_type == resource_type, FhirResource.resource_id == resource_id))
    current = None if row is None or row.deleted else row
    if if_match is not None:
        wanted = etag_version(if_match)
        if current is None or str(current.version_id) != wanted:
            have = f"version {current.version_id}" if current else "no such resource"
            raise PreconditionFailed(f"If-Match asks for version {wanted} of {resource_type}/{resource_id}; "
                                     f"the server has {have}")
    [(row, _)] = await _store(session, [item], {(resource_type, resource_id): row} if row else {})
    return row, current is None


def etag_version(etag: str) -> str:
    """The version id in an ETag: W/"3" → 3."""
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


# -- reads --------------------------------------------------------------------------------------

async def get(session: AsyncSession, resource_type: str, resource_id: str) -> FhirResource | None:
    return await session.scalar(select(FhirResource).where(
        FhirResource.resource_type == resource_type, FhirResource.resource_id == resource_id,
        FhirResource.deleted.is_(False)))


async def by_crm_id(session: AsyncSession, resource_type: str, crm_id: int) -> FhirResource | None:
    return await session.scalar(select(FhirResource).where(
        FhirResource.resource_type == resource_type, FhirResource.crm_id == crm_id,
        FhirResource.deleted.is_(False)))


async def by_crm_ids(session: AsyncSession,
                     keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], FhirResource]:
    """`by_crm_id` for many (resourceType, crm_id) pairs, with one query per type."""
    wanted: dict[str, list[int]] = {}
    for resource_type, crm_id in keys:
        wanted.setdefault(resource_type, []).append(crm_id)
    found: dict[tuple[str, int], FhirResource] = {}
    for resource_type, crm_ids in wanted.items():
        for start in range(0, len(crm_ids), 500):
            rows = await session.scalars(select(FhirResource).where(
                FhirResource.resource_type == resource_type, FhirResource.crm_id.in_(crm_ids[start:start + 500]),
                FhirResource.deleted.is_(False)))
            found.update(((row.resource_type, row.crm_id), row) for row in rows)
    return found


async def find_by_identifier(session: AsyncSession, resource_type: str, system: str | None,
                             value: str) -> list[FhirResource]:
    """Resources of a type carrying the identifier (`system` None: any system)."""
    match = [FhirIdentifier.resource_pk == FhirResource.id, FhirIdentifier.resource_type == resource_type,
             FhirIdentifier.value == value]
    if system is not None:
        match.append(FhirIdentifier.system == system)
    rows = await session.scalars(select(FhirResource).where(
        FhirResource.resource_type == resource_type, FhirResource.deleted.is_(False), exists().where(*match))
        .order_by(FhirResource.resource_id))
    return list(rows)


async def crm_patient_ids(session: AsyncSession, patient_refs: Iterable[str]) -> dict[str, int]:
    """{"Patient/<id>": patients.id} for the referenced Patients that mirror a CRM patient."""
    ids = sorted({ref.split("/", 1)[1] for ref in patient_refs if ref and ref.startswith("Patient/")})
    if not ids:
        return {}
    rows = await session.execute(select(FhirResource.resource_id, FhirResource.crm_id).where(
        FhirResource.resource_type == "Patient", FhirResource.resource_id.in_(ids),
        FhirResource.crm_id.is_not(None)))
    return {f"Patient/{resource_id}": crm_id for resource_id, crm_id in rows}


# -- search -------------------------------------------------------------------------------------

def search_params(resource_type: str) -> dict[str, str]:
    """The search parameters this store supports for a type, with their FHIR types."""
    params = {"_id": "token", "identifier": "token", "_lastUpdated": "date"}
    if resource_type not in NON_PATIENT_TYPES and resource_type != "Patient":
        params |= {"patient": "reference", "subject": "reference"}
    if resource_type == "Patient":
        params["birthdate"] = "date"
    elif resource_type in DATE_PATHS:
        params["date"] = "date"
    if resource_type in ("Appointment", "Slot"):
        params["start"] = "date"
    if resource_type in STATUS_CODES:
        params["status"] = "token"
    if resource_type == "Slot":
        params["schedule"] = "reference"
    return params


# Result parameters that change nothing in what matches.
_IGNORED = frozenset({"_format", "_pretty"})


def _as_lists(params) -> dict[str, list[str]]:
    if hasattr(params, "getall"):
        return {key: list(params.getall(key)) for key in dict.fromkeys(params.keys())}
    return {key: [value] if isinstance(value, str) else list(value) for key, value in params.items()}


def _split(value: str, separator: str) -> list[str]:
    """Split a token on `separator`, honouring FHIR's backslash escapes (\\, \\| \\$ \\\\)."""
    parts, current, escaped = [], [], False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _or_values(value: str) -> list[str]:
    return [v for v in (value.split(",") if "\\" not in value else _split(value, ",")) if v != ""]


def _identifier_condition(token: str):
    if "|" in token:
        system, value = token.split("|", 1) if "\\" not in token else _split(token, "|")[:2]
        match = [FhirIdentifier.system == system]
        if value:
            match.append(FhirIdentifier.value == value)
    else:
        match = [FhirIdentifier.value == token]
    return exists().where(FhirIdentifier.resource_pk == FhirResource.id, *match)


def _patient_values(values: list[str]) -> list[str]:
    refs = []
    for value in values:
        ref = normalise_patient_ref(value if "/" in value else f"Patient/{value}")
        if ref is None:
            raise InvalidSearch(f"not a Patient reference: {value!r}")
        refs.append(ref)
    return refs


_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def _date_condition(column, value: str):
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    text_value = value[2:] if value[:2] in _PREFIXES else value
    span = parse_date(text_value)
    if span is None:
        raise InvalidSearch(f"not a FHIR date: {text_value!r}")
    start, end = span
    conditions = {"eq": and_(column >= start, column < end), "ne": or_(column < start, column >= end),
                  "ge": column >= start, "gt": column >= end, "le": column < end, "lt": column < start}
    if prefix not in conditions:
        raise InvalidSearch(f"the date prefix {prefix!r} is not supported (use eq, ne, gt, ge, lt, le)")
    return and_(column.is_not(None), conditions[prefix])


def _search_conditions(resource_type: str, params: Mapping[str, list[str]]) -> list:
    supported = search_params(resource_type)
    conditions = [FhirResource.resource_type == resource_type, FhirResource.deleted.is_(False)]
    for name, values in params.items():
        if name in ("_count", "_offset") or name in _IGNORED:
            continue
        if ":" in name:
            raise InvalidSearch(f"search modifiers are not supported: {name!r}")
        if name not in supported:
            raise InvalidSearch(f"unknown search parameter {name!r} for {resource_type}; "
                                f"supported: {', '.join(sorted(supported))}")
        for value in values:
            options = _or_values(value)
            if not options:
                continue
            if name == "_id":
                conditions.append(FhirResource.resource_id.in_(options))
            elif name == "identifier":
                conditions.append(or_(*(_identifier_condition(token) for token in options)))
            elif name in ("patient", "subject"):
                conditions.append(FhirResource.patient_ref.in_(_patient_values(options)))
            elif name in ("date", "start", "birthdate"):
                conditions.append(or_(*(_date_condition(FhirResource.date, v) for v in options)))
            elif name == "_lastUpdated":
                conditions.append(or_(*(_date_condition(FhirResource.last_updated, v) for v in options)))
            elif name == "status":
                conditions.append(FhirResource.content["status"].as_string().in_(options))
            elif name == "schedule":
                refs = [v if "/" in v else f"Schedule/{v}" for v in options]
                conditions.append(FhirResource.content[("schedule", "reference")].as_string().in_(refs))
    return conditions


def _paging(params: Mapping[str, list[str]]) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        values = params.get(name) or [str(default)]
        try:
            value = int(values[-1])
        except ValueError:
            raise InvalidSearch(f"{name} must be a whole number, not {values[-1]!r}") from None
        if value < 0:
            raise InvalidSearch(f"{name} must not be negative")
        return value

    return min(number("_count", DEFAULT_COUNT), MAX_COUNT), number("_offset", 0)


async def search(session: AsyncSession, resource_type: str, params) -> SearchResult:
    """Resources of a type matching FHIR search `params` (str → list of str; a repeated parameter is
    an AND, a comma inside a value an OR), newest date first, then by id."""
    params = _as_lists(params)
    conditions = _search_conditions(resource_type, params)
    count, offset = _paging(params)
    total = await session.scalar(select(func.count()).select_from(FhirResource).where(*conditions))
    rows: list[FhirResource] = []
    if count and offset < total:
        rows = list(await session.scalars(
            select(FhirResource).where(*conditions)
            .order_by(FhirResource.date.desc().nulls_last(), FhirResource.resource_id)
            .limit(count).offset(offset)))
    return SearchResult(rows=rows, total=total, count=count, offset=offset, params=params)

