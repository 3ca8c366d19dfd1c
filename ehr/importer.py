"""`sila ehr import PATH`: FHIR bundles from the hospital's EHR into Sila.

Every resource lands in Sila's FHIR store (the patient's clinical summary among them); each Patient
also becomes, or updates, a CRM patient, so that a patient the EHR knows is recognised when they
write from their phone. Importing the same bundle twice changes nothing.
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import multiprocessing
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_store.models import FhirResource, JourneyEvent, Patient
from ehr import store
from ehr.resources import patient as patient_map

log = logging.getLogger(__name__)
BUNDLE_TYPES = {"transaction", "batch", "collection", "searchset", "document", "message",
                "transaction-response", "batch-response", "history"}
# Stable ids for resources that come without any: the same content always gets the same id.
CONTENT_NAMESPACE = uuid.UUID("6f1c1d43-4a51-4b7e-9a3e-5f1d3c2b9a10")


class BundleError(ValueError):
    """A file that is not a FHIR bundle or resource Sila can import; names the file and why."""


@dataclass
class ImportReport:
    files: int = 0
    resources: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    patients: list[int] = field(default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)

    def add(self, other: "ImportReport") -> None:
        self.files += other.files
        self.resources += other.resources
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.patients += other.patients
        for kind, count in other.by_type.items():
            self.by_type[kind] = self.by_type.get(kind, 0) + count


def bundle_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.json") if p.is_file())
    if path.is_file():
        return [path]
    raise BundleError(f"{path}: no such file or folder")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or "resourceType" not in data:
        raise BundleError(f"{path}: not a FHIR resource (no resourceType)")
    return data


def load_checked(path: Path) -> dict:
    """Read a bundle and validate every resource in it (BundleError on the first bad one)."""
    data = _read(path)
    for entry in _entries(data, str(path)):
        try:
            store.validate(entry["resource"])
        except store.InvalidResource as exc:
            raise BundleError(f"{path}: {exc}") from None
    return data


def check_file(path: Path) -> None:
    """`load_checked` in a worker process. Nothing comes back: the importing process reads the
    file again, which costs it less than taking the parsed bundle through a pipe that its busy
    event loop would be slow to drain."""
    load_checked(path)


def _entries(data: dict, source: str) -> list[dict]:
    """The bundle's entries as {fullUrl, resource, request}; a lone resource is one entry."""
    if data["resourceType"] != "Bundle":
        return [{"resource": data}]
    if data.get("type") not in BUNDLE_TYPES:
        raise BundleError(f"{source}: bundle type {data.get('type')!r} cannot be imported")
    entries = [e for e in data.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    # Deletions in a transaction have no resource to import.
    return [e for e in entries if (e.get("request") or {}).get("method", "POST") != "DELETE"]


def _identifier_query(query: str) -> tuple[str, str] | None:
    """`identifier=system|value` (the only conditional form EHR exports use in practice)."""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "identifier" and value:
            system, bar, code = value.partition("|")
            return (system, code) if bar else ("", system)
    return None


def _identifiers(resource: dict) -> Iterable[tuple[str, str]]:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            yield ident.get("system") or "", ident["value"]


class _Resolver:
    """Gives each entry its id and turns the bundle's internal references into `Type/id`.

    FHIR bundles point at each other's entries by fullUrl (`urn:uuid:…` in a transaction, an
    absolute URL in a collection) or by a conditional reference (`Patient?identifier=s|v`); once
    stored, they must be plain `Type/id` references that Sila's FHIR API can follow."""

    def __init__(self, session: AsyncSession):
        self.session = session
        self.by_full_url: dict[str, str] = {}
        self.by_identifier: dict[tuple[str, str, str], str] = {}

    async def assign(self, entries: list[dict]) -> list[dict]:
        resources = []
        for entry in entries:
            resource = entry["resource"]  # rewritten in place: the bundle is the caller's to give up
            kind = resource["resourceType"]
            resource_id = await self._id_for(entry, resource)
            resource["id"] = resource_id
            if full_url := entry.get("fullUrl"):
                self.by_full_url[full_url] = f"{kind}/{resource_id}"
            for system, value in _identifiers(resource):
                self.by_identifier.setdefault((kind, system, value), resource_id)
            resources.append(resource)
        for resource in resources:
            self._rewrite(resource)
        return resources

    async def _id_for(self, entry: dict, resource: dict) -> str:
        kind = resource["resourceType"]
        full_url = entry.get("fullUrl") or ""
        request = entry.get("request") or {}
        # An update in a transaction names the id it is for.
        if request.get("method") == "PUT" and "?" not in request.get("url", ""):
            return request["url"].rstrip("/").rsplit("/", 1)[-1]
        # Conditional create or update: the resource the EHR would have matched, if Sila holds it.
        query = request.get("ifNoneExist") or (request.get("url", "").partition("?")[2])
        if match := _identifier_query(query):
            if found := await self._stored_with(kind, *match):
                return found
        if full_url.startswith("urn:uuid:"):
            return full_url[len("urn:uuid:"):]
        if resource.get("id"):
            return str(resource["id"])
        if full_url.rstrip("/").rsplit("/", 2)[-2:-1] == [kind]:
            return full_url.rstrip("/").rsplit("/", 1)[-1]
        for system, value in _identifiers(resource):
            if found := await self._stored_with(kind, system, value):
                return found
        canonical = json.dumps(resource, sort_keys=True, ensure_ascii=False)
        return str(uuid.uuid5(CONTENT_NAMESPACE, canonical))

    async def _stored_with(self, kind: str, system: str, value: str) -> str | None:
        rows = await store.find_by_identifier(self.session, kind, system, value)
        return rows[0].resource_id if len(rows) == 1 else None

    def _rewrite(self, resource: dict) -> None:
        containers: list = [resource]
        while containers:
            node = containers.pop()
            for key, value in (node.items() if type(node) is dict else enumerate(node)):
                if type(value) is dict or type(value) is list:
                    containers.append(value)
                elif key == "reference" and type(value) is str:
                    node[key] = self._target(value)

    def _target(self, reference: str) -> str:
        if reference in self.by_full_url:
            return self.by_full_url[reference]
        kind, question, query = reference.partition("?")
        if question and (match := _identifier_query(query)):
            if found := self.by_identifier.get((kind, *match)):
                return f"{kind}/{found}"
        return reference


async def _upsert_crm_patient(session: AsyncSession, resource: dict, region: str) -> int:
    fields = patient_map.from_fhir(resource, region=region)
    existing = await session.scalar(select(FhirResource.crm_id).where(
        FhirResource.resource_type == "Patient", FhirResource.resource_id == resource["id"]))
    patient = await session.get(Patient, existing) if existing else None
    for column in ("mrn", "national_id"):
        if patient is None and fields.get(column):
            patient = await session.scalar(select(Patient).where(getattr(Patient, column) == fields[column]))
    if patient is None:
        patient = Patient(**{k: v for k, v in fields.items() if v is not None})
        session.add(patient)
        await session.flush()
        session.add(JourneyEvent(patient_id=patient.id, kind="imported_from_ehr", reference=resource["id"]))
        return patient.id
    for column, value in fields.items():
        # The EHR is the record of truth for demographics; what it leaves empty Sila keeps.
        if value is not None and getattr(patient, column) != value:
            setattr(patient, column, value)
    # The same person under another Patient id (another export, ids changed at the hospital, or
    # Sila's own record of a patient who first wrote from their phone): the one imported now is
    # the record linked to them; the other stays in the store, unlinked.
    await session.execute(update(FhirResource).where(
        FhirResource.resource_type == "Patient", FhirResource.crm_id == patient.id,
        FhirResource.resource_id != resource["id"]).values(crm_id=None).execution_options(synchronize_session=False))
    return patient.id


async def import_bundle(session: AsyncSession, data: dict, *, source: str = "bundle",
                        region: str = "SA", validated: bool = False) -> ImportReport:
    """Import one bundle (or lone resource) in the caller's transaction (`validated`: every
    resource in it already passed `store.validate`). The bundle's resources are given their ids
    and plain references in place, and stored as they are: pass a bundle not used afterwards."""
    report = ImportReport(files=1)
    resources = await _Resolver(session).assign(_entries(data, source))
    items = []
    linking: dict[int, int] = {}  # CRM patient -> the item linked to them
    for resource in resources:
        crm_id = None
        if resource["resourceType"] == "Patient":
            crm_id = await _upsert_crm_patient(session, resource, region)
            report.patients.append(crm_id)
            if (earlier := linking.get(crm_id)) is not None and items[earlier][0]["id"] != resource["id"]:
                items[earlier] = (items[earlier][0], None)  # one of this bundle's records is linked: the last
            linking[crm_id] = len(items)
        items.append((resource, crm_id))
    try:
        results = await store.put_many(session, items, validated=validated)
    except store.InvalidResource as exc:
        raise BundleError(f"{source}: {exc}") from None
    for (resource, _), (row, changed) in zip(items, results):
        kind = resource["resourceType"]
        report.resources += 1
        report.by_type[kind] = report.by_type.get(kind, 0) + 1
        if not changed:
            report.unchanged += 1
        elif row.version_id == 1:
            report.created += 1
        else:
            report.updated += 1
    return report


async def import_path(sessions: async_sessionmaker, path: Path, *, region: str = "SA",
                      progress=None) -> ImportReport:
    """Import every bundle under `path`, one transaction per file: a bad file is reported and
    leaves nothing half-imported, and the files before it stay imported."""
    total = ImportReport()
    files = bundle_files(path)
    with _few_collections(), _Checks(files) as checks:
        for number, file in enumerate(files, 1):
            data = await checks.bundle(number - 1)
            try:
                async with sessions() as session:
                    report = await import_bundle(session, data, source=str(file), region=region, validated=True)
                    await session.commit()
            except IntegrityError as exc:  # e.g. two CRM patients already hold this record's MRN and national id
                raise BundleError(f"{file}: conflicts with records Sila holds ({exc.orig})") from None
            total.add(report)
            if progress:
                progress(number, len(files), file, report)
    return total


@contextmanager
def _few_collections():
    """An import makes millions of short-lived objects (parsed JSON, validation models). With the
    collector's default thresholds it would walk the whole heap (fhir.resources' thousands of
    model classes in it) every few thousand of them; instead what exists now is frozen out of its
    reach and young collections are rarer while the import runs (measured: a fifth faster)."""
    threshold = gc.get_threshold()
    _collect_less()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def _collect_less() -> None:
    """For the whole life of a validation worker (its initializer), and while an import runs."""
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


class _Checks:
    """The files' validation, taken in order by worker processes while this process writes, and
    by this process too whenever it would otherwise wait for them (the first file among them,
    while the workers start): validation is the larger half of an import's work, and this way
    both halves keep every core busy. Workers are started only when there are enough files to
    repay their start (a second or so); this process validates in a thread, off the event loop."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.checks: dict[int, asyncio.Future] = {}
        self.here: set[int] = set()  # the files this process validates
        self.taken = 0
        self.workers = (os.cpu_count() or 1) - 1 if len(files) >= 4 else 0
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "_Checks":
        self.loop = asyncio.get_running_loop()
        if self.workers > 0:
            # forkserver: workers do not inherit this process's threads (aiosqlite's, the event loop's).
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                            initializer=_collect_less)
            self._take(None)
            for _ in range(self.workers):
                self._to_pool()
        return self

    def __exit__(self, *_exc) -> None:
        pool, self.pool = self.pool, None  # no more files for the workers
        for check in self.checks.values():  # files after a bad one: not wanted any more
            check.cancel()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)  # the event loop does not wait on it

    def _take(self, executor) -> int | None:
        if self.taken == len(self.files):
            return None
        number, self.taken = self.taken, self.taken + 1
        if executor is None:
            self.here.add(number)
        work = load_checked if executor is None else check_file
        self.checks[number] = self.loop.run_in_executor(executor, work, self.files[number])
        return number

    def _to_pool(self, _done=None) -> None:
        if self.pool is not None and (number := self._take(self.pool)) is not None:
            self.checks[number].add_done_callback(self._to_pool)

    async def bundle(self, number: int) -> dict:
        """File `number` (from 0), validated; raises its BundleError."""
        if number not in self.checks:
            self._take(None)
        while number not in self.here and not self.checks[number].done() and (ahead := self._take(None)) is not None:
            # A worker is on this file: validate the next one here meanwhile (its error, if any,
            # is raised when its turn comes).
            await asyncio.wait([self.checks[ahead]])
        data = await self.checks.pop(number)
        return data if data is not None else await self.loop.run_in_executor(None, _read, self.files[number])
