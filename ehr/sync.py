"""Writes what happens in Sila into FHIR: Sila's own store always (served at /fhir/R4), and the
hospital's EHR when one is configured.

The work comes from `ehr_outbox` (queued by crm_store.changes in the transaction of the change).
Each item maps the row as it is *now*, so a retry after an outage sends the latest state. An EHR
that is down, slow or refusing leaves the item pending with its error and a later attempt time;
nothing is dropped, and conditional creates on Sila's business identifiers mean a retried create
never duplicates.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from crm_store.models import (
    Appointment,
    Consent,
    Conversation,
    EhrLink,
    EhrOutbox,
    FhirResource,
    Message,
    Patient,
    Practitioner,
    Slot,
    utcnow,
)
from ehr import directory, identifiers, store
from ehr.client import EhrUnavailable, FhirClient, FhirError, PreconditionFailed, Unauthorized
from ehr.resources import appointment as appointment_map
from ehr.resources import communication as communication_map
from ehr.resources import consent as consent_map
from ehr.resources import patient as patient_map
from ehr.resources import practitioner as practitioner_map
from surveys import fhir as survey_fhir

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)
MAX_BACKOFF = 300.0
# Refusals that no retry will change end as failed, visible to staff: a resource the EHR finds
# invalid, or a 412 (a conditional create matching several resources: the EHR holds duplicates a
# person must merge; an update that lost the race twice). Everything else (down, 5xx, 429, an
# expired credential) waits and is retried.
PERMANENT = (400, 403, 404, 405, 409, 412, 422)
# Kept in Sila's own store only: the EHR owns its slots (see ehr/slots.py), and a messaging
# consent is Sila's business (the issue asks the EHR for appointments, messages and surveys).
LOCAL_ONLY = frozenset({"Slot", "Consent"})


_APPOINTMENT_LOADS = (selectinload(Appointment.slot), selectinload(Appointment.patient),
                      selectinload(Appointment.practitioner).selectinload(Practitioner.department))
_CONVERSATION_LOADS = (selectinload(Conversation.patient),)
_SLOT_LOADS = (selectinload(Slot.practitioner),)


async def _preload(session: AsyncSession, keys: list[tuple[str, int]]) -> list:
    """Load a batch's rows with a few IN queries; `_build` then finds them in the session (whose
    identity map holds them only while someone does: keep the returned list)."""
    wanted: dict[str, list[int]] = {}
    for kind, crm_id in keys:
        wanted.setdefault(kind, []).append(crm_id)
    loaded: list = []
    for start in range(0, len(wanted.get("Communication", [])), 500):
        messages = (await session.scalars(select(Message).where(
            Message.id.in_(wanted["Communication"][start:start + 500])))).all()
        loaded += messages
        loaded += (await session.scalars(select(Conversation).where(
            Conversation.id.in_({m.conversation_id for m in messages})).options(*_CONVERSATION_LOADS))).all()
    for model, kind, loads in ((Appointment, "Appointment", _APPOINTMENT_LOADS), (Slot, "Slot", _SLOT_LOADS)):
        for start in range(0, len(wanted.get(kind, [])), 500):
            loaded += (await session.scalars(select(model).where(
                model.id.in_(wanted[kind][start:start + 500])).options(*loads))).all()
    return loaded


@dataclass
class SyncStatus:
    pending: int
    failed: int
    done: int
    oldest_pending: datetime | None
    last_error: str | None


async def status(session: AsyncSession) -> SyncStatus:
    counts = dict((await session.execute(
        select(EhrOutbox.status, func.count()).group_by(EhrOutbox.status))).all())
    oldest = await session.scalar(select(func.min(EhrOutbox.created_at)).where(EhrOutbox.status == "pending"))
    error = await session.scalar(select(EhrOutbox.last_error).where(
        EhrOutbox.status != "done", EhrOutbox.last_error.is_not(None)).order_by(EhrOutbox.updated_at.desc()).limit(1))
    return SyncStatus(counts.get("pending", 0), counts.get("failed", 0), counts.get("done", 0), oldest, error)


class _LocalRefs:
    """References into Sila's own FHIR API. The directory (practitioners, slots, the hospital) is
    served straight from the CRM tables (ehr/directory.py); a patient is written to the store.

    The writes wait in `writes` until the batch is built: a SQLite write takes the one write lock,
    and building a batch must not hold it while the webhooks wait to store their messages."""

    def __init__(self, session: AsyncSession, hospital: dict):
        self.session = session
        self.hospital = hospital
        self.writes: list[tuple[dict, int]] = []
        self._patients: dict[int, str] = {}  # one write per patient per batch
        self._stored: dict[int, FhirResource | None] = {}

    async def prefetch(self, patient_ids: set[int]) -> None:
        """The stored Patient resources of a batch's patients, in one query."""
        found = await store.by_crm_ids(self.session, [("Patient", pid) for pid in patient_ids])
        self._stored.update({pid: found.get(("Patient", pid)) for pid in patient_ids})

    async def patient(self, patient: Patient) -> str:
        if patient.id not in self._patients:
            row = (self._stored[patient.id] if patient.id in self._stored
                   else await store.by_crm_id(self.session, "Patient", patient.id))
            if row is not None and row.resource_id != str(patient.id):
                # Imported from the EHR: its record is the richer one; Sila does not overwrite it.
                self._patients[patient.id] = f"Patient/{row.resource_id}"
            else:
                self.writes.append((patient_map.to_fhir(patient, resource_id=str(patient.id)), patient.id))
                self._patients[patient.id] = f"Patient/{patient.id}"
        return self._patients[patient.id]

    async def practitioner(self, practitioner: Practitioner) -> str:
        return f"Practitioner/{practitioner.code}"

    async def slot(self, slot: Slot, practitioner_ref: str) -> str | None:
        return f"Slot/{slot.id}"

    def organization(self) -> str | None:
        return f"Organization/{self.hospital['code']}" if self.hospital.get("code") else None


class _EhrRefs:
    """References into the hospital's EHR: found by identifier, created when the EHR lacks them,
    and remembered in `ehr_links`."""

    def __init__(self, session: AsyncSession, client: FhirClient):
        self.session = session
        self.client = client

    async def _linked(self, kind: str, crm_id: int) -> EhrLink | None:
        return await self.session.scalar(select(EhrLink).where(EhrLink.resource_type == kind, EhrLink.crm_id == crm_id)
                                         .execution_options(populate_existing=True))  # `_link` writes past the ORM

    async def _find_or_create(self, kind: str, crm_id: int, lookups: list[tuple[str, str]], build) -> str:
        if link := await self._linked(kind, crm_id):
            return f"{kind}/{link.ehr_id}"
        for system, value in lookups:
            async for found in self.client.search(kind, {"identifier": f"{system}|{value}"}):
                await self._link(kind, crm_id, found["id"], (found.get("meta") or {}).get("versionId"))
                return f"{kind}/{found['id']}"
        resource = build()
        resource.pop("id", None)
        system, value = lookups[-1]
        written = await self.client.create(resource, if_none_exist=f"identifier={system}|{value}")
        await self._link(kind, crm_id, written.id, written.version)
        return f"{kind}/{written.id}"

    async def _link(self, kind: str, crm_id: int, ehr_id: str, version: str | None) -> None:
        # An upsert: another worker writing a message of the same patient may link them first.
        dialect = postgresql if self.session.bind.dialect.name == "postgresql" else sqlite
        values = dict(ehr_id=ehr_id, ehr_version=version, updated_at=utcnow())
        await self.session.execute(dialect.insert(EhrLink).values(resource_type=kind, crm_id=crm_id, **values)
                                   .on_conflict_do_update(index_elements=["resource_type", "crm_id"], set_=values))
        await self.session.commit()

    async def patient(self, patient: Patient) -> str:
        # A patient imported from the EHR is found there by the identifiers the EHR gave them.
        imported = await store.by_crm_id(self.session, "Patient", patient.id)
        lookups = [(i.get("system", ""), i["value"]) for i in (imported.content.get("identifier") or [])
                   if imported and i.get("value") and i.get("system")] if imported else []
        lookups.append((identifiers.PATIENT, str(patient.id)))
        return await self._find_or_create("Patient", patient.id, lookups, lambda: patient_map.to_fhir(patient))

    async def practitioner(self, practitioner: Practitioner) -> str:
        return await self._find_or_create("Practitioner", practitioner.id,
                                          [(identifiers.PRACTITIONER, practitioner.code)],
                                          lambda: practitioner_map.to_fhir(practitioner))

    async def slot(self, slot: Slot, practitioner_ref: str) -> str | None:
        link = await self._linked("Slot", slot.id)
        return f"Slot/{link.ehr_id}" if link else None  # only slots read from the EHR exist there

    def organization(self) -> str | None:
        return None  # the hospital is named by its identifier (hospital_code) instead


class EhrSync:
    """Works through `ehr_outbox` in batches: each pass claims up to `limit` due rows at once,
    writes them into Sila's own store in one transaction, then to the EHR one by one."""

    def __init__(self, sessions: async_sessionmaker, client: FhirClient | None, hospital: dict):
        self.sessions = sessions
        self.client = client
        self.hospital = hospital
        self.wakeup = asyncio.Event()
        self.ehr_seconds = 0.0  # of the current pass, spent waiting on the EHR

    async def _build(self, session: AsyncSession, kind: str, crm_id: int, refs) -> dict | None:
        if kind == "Appointment":
            appointment = await session.get(Appointment, crm_id, options=_APPOINTMENT_LOADS)
            if appointment is None:
                return None
            practitioner_ref = await refs.practitioner(appointment.practitioner)
            return appointment_map.to_fhir(
                appointment, patient_ref=await refs.patient(appointment.patient),
                practitioner_ref=practitioner_ref, slot_ref=await refs.slot(appointment.slot, practitioner_ref))
        if kind == "Communication":
            message = await session.get(Message, crm_id)
            if message is None:
                return None
            conversation = await session.get(Conversation, message.conversation_id, options=_CONVERSATION_LOADS)
            return communication_map.to_fhir(
                message, conversation, patient_ref=await refs.patient(conversation.patient),
                organization_ref=refs.organization(), hospital_code=self.hospital.get("code"))
        if kind == "Consent":
            return await self._consent(session, crm_id, refs)
        if kind == "Slot":
            slot = await session.get(Slot, crm_id, options=_SLOT_LOADS)
            return directory.slot_resource(slot) if slot else None
        if kind in survey_fhir.KINDS:  # Questionnaire, QuestionnaireResponse (surveys/fhir.py)
            return await survey_fhir.build(session, kind, crm_id, refs.patient, self.hospital)
        raise ValueError(f"no FHIR mapping for outbox kind {kind!r}")

    async def _consent(self, session: AsyncSession, crm_id: int, refs) -> dict | None:
        consent = await session.get(Consent, crm_id)
        if consent is None:
            return None
        patient_ref = await refs.patient(await session.get(Patient, consent.patient_id))
        same_decision = (Consent.patient_id == consent.patient_id, Consent.channel == consent.channel,
                         Consent.purpose == consent.purpose)
        # The decision it replaces (same channel and purpose) is no longer in force; nor is this
        # one if a later decision (perhaps in the same batch) replaced it already.
        earlier = await session.scalar(select(Consent).where(*same_decision, Consent.id < consent.id)
                                       .order_by(Consent.id.desc()).limit(1))
        if earlier is not None and (row := await store.by_crm_id(session, "Consent", earlier.id)):
            refs.writes.append((consent_map.to_fhir(
                earlier, patient_ref=patient_ref, organization_ref=refs.organization(), in_force=False,
                resource_id=row.resource_id), earlier.id))
        superseded = await session.scalar(select(Consent.id).where(*same_decision, Consent.id > consent.id).limit(1))
        return consent_map.to_fhir(consent, patient_ref=patient_ref, organization_ref=refs.organization(),
                                   in_force=superseded is None)

    async def _claim(self, limit: int) -> dict[tuple[str, int], list[int]]:
        """Lease up to `limit` due rows in one statement (another worker skips them until the lease
        ends); several rows for one CRM row are one write of that row as it is now."""
        async with self.sessions() as session:
            now = utcnow()
            due = (select(EhrOutbox.id).where(EhrOutbox.status == "pending", EhrOutbox.next_attempt_at <= now)
                   .order_by(EhrOutbox.id).limit(limit)
                   .with_for_update(skip_locked=True)  # PostgreSQL: rows another worker is claiming
                   .scalar_subquery())
            rows = (await session.execute(
                update(EhrOutbox).where(EhrOutbox.id.in_(due), EhrOutbox.status == "pending",
                                        EhrOutbox.next_attempt_at <= now)
                .values(next_attempt_at=now + LEASE)
                .returning(EhrOutbox.id, EhrOutbox.kind, EhrOutbox.crm_id)
                .execution_options(synchronize_session=False))).all()
            await session.commit()
        claimed: dict[tuple[str, int], list[int]] = {}
        for item_id, kind, crm_id in sorted(rows):
            claimed.setdefault((kind, crm_id), []).append(item_id)
        return claimed

    async def run_once(self, limit: int = 100) -> int:
        """One pass over the due writes; returns how many CRM rows were written."""
        claimed = await self._claim(limit)
        if not claimed:
            return 0
        async with self.sessions() as session:
            failed = await self._write_local(session, list(claimed))
            await session.commit()
        if self.client is not None:
            waited = time.monotonic()
            failed |= await self._write_ehr_all([key for key in claimed
                                                 if key not in failed and key[0] not in LOCAL_ONLY])
            self.ehr_seconds += time.monotonic() - waited
        done = [item_id for key, ids in claimed.items() if key not in failed for item_id in ids]
        async with self.sessions() as session:
            for start in range(0, len(done), 500):
                await session.execute(update(EhrOutbox).where(EhrOutbox.id.in_(done[start:start + 500]))
                                      .values(status="done", last_error=None)
                                      .execution_options(synchronize_session=False))
            for key, exc in failed.items():
                await self._failed(session, key, claimed[key], exc)
            await session.commit()
        return len(claimed) - len(failed)

    async def _write_local(self, session: AsyncSession, keys: list[tuple[str, int]]) -> dict:
        """Write every claimed row into Sila's own store (the caller commits once); returns the
        rows whose mapping failed, with why."""
        loaded = await _preload(session, keys)  # held for the identity map
        refs = _LocalRefs(session, self.hospital)
        await refs.prefetch({row.patient_id for row in loaded if isinstance(row, (Conversation, Appointment))})
        stored = await store.by_crm_ids(session, keys)
        resources: list[tuple[dict, int]] = []
        failed: dict[tuple[str, int], Exception] = {}
        for key in keys:
            kind, crm_id = key
            await asyncio.sleep(0)  # rows found in the session never wait: let others run between them
            try:
                resource = await self._build(session, kind, crm_id, refs)
            except ValueError as exc:  # a row the mapping cannot express (pydantic's ValidationError too)
                failed[key] = exc
                continue
            if resource is not None:
                row = stored.get(key)
                resource["id"] = row.resource_id if row else str(crm_id)
                resources.append((resource, crm_id))
        # Built through fhir.resources models, so validated as they were made.
        await store.put_many(session, refs.writes + resources, validated=True)
        return failed

    async def _write_ehr_all(self, keys: list[tuple[str, int]]) -> dict:
        failed: dict[tuple[str, int], Exception] = {}
        for index, key in enumerate(keys):
            try:
                # No transaction is held open across the EHR's network calls (SQLite has one
                # writer): what is learnt from the EHR is committed as it arrives.
                async with self.sessions() as session:
                    await self._write_ehr(session, *key)
            except EhrUnavailable as exc:
                # Down or overloaded: the rest of this pass would only wait on it too.
                failed.update({rest: exc for rest in keys[index:]})
                break
            except (FhirError, ValueError) as exc:
                failed[key] = exc
        return failed

    async def _failed(self, session: AsyncSession, key: tuple[str, int], item_ids: list[int],
                      exc: Exception) -> None:
        permanent = isinstance(exc, ValueError) or (
            isinstance(exc, FhirError) and not isinstance(exc, Unauthorized) and exc.status in PERMANENT)
        attempts = 0
        for item in await session.scalars(select(EhrOutbox).where(EhrOutbox.id.in_(item_ids))):
            item.attempts += 1
            item.last_error = str(exc)[:2000]
            item.status = "failed" if permanent else "pending"
            item.next_attempt_at = utcnow() + timedelta(seconds=min(MAX_BACKOFF, 2.0 ** item.attempts))
            attempts = max(attempts, item.attempts)
        log.warning("EHR write of %s #%s %s (attempt %s): %s", key[0], key[1],
                    "failed for good" if permanent else "will be retried", attempts, type(exc).__name__)

    async def _write_ehr(self, session: AsyncSession, kind: str, crm_id: int) -> None:
        refs = _EhrRefs(session, self.client)
        resource = await self._build(session, kind, crm_id, refs)
        if resource is None:
            return
        link = await refs._linked(kind, crm_id)
        if link is None:
            # A list on most resources; one Identifier (0..1) on a QuestionnaireResponse.
            found = resource["identifier"] if isinstance(resource["identifier"], list) else [resource["identifier"]]
            system, value = next((i["system"], i["value"]) for i in found
                                 if i.get("system", "").startswith("urn:sila:"))
            resource.pop("id", None)
            written = await self.client.create(resource, if_none_exist=f"identifier={system}|{value}")
        else:
            resource["id"] = link.ehr_id
            try:
                written = await self.client.update(resource, if_match=link.ehr_version)
            except PreconditionFailed:
                # Someone at the hospital changed it since our last write. Sila owns the
                # appointments booked through it and every message it carried, so the write
                # is made again on top of the version the EHR holds now.
                current = await self.client.read(kind, link.ehr_id)
                written = await self.client.update(resource, if_match=(current.get("meta") or {}).get("versionId"))
        await refs._link(kind, crm_id, written.id, written.version)

    async def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                started, self.ehr_seconds = time.monotonic(), 0.0
                while await self.run_once():  # there may be more behind this batch
                    # Background work: with a backlog it pauses for as long as the pass took in
                    # Sila itself (a slow EHR's network waits do not count), so under a burst the
                    # patients' messages and replies go first, and the backlog drains once the
                    # burst is over.
                    await asyncio.sleep(max(0.0, time.monotonic() - started - self.ehr_seconds))
                    started, self.ehr_seconds = time.monotonic(), 0.0
            except Exception:  # a bug in one mapping must not stop the whole sync
                log.exception("EHR sync pass failed")
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
            self.wakeup.clear()

    async def retry_failed(self) -> int:
        """Put failed writes back in the queue (after the cause was fixed): `sila ehr retry`."""
        async with self.sessions() as session:
            result = await session.execute(update(EhrOutbox).where(EhrOutbox.status == "failed")
                                           .values(status="pending", next_attempt_at=utcnow(), attempts=0))
            await session.commit()
            return result.rowcount
