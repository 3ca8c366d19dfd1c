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
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from crm_store.models import (
    Appointment,
    Consent,
    Conversation,
    EhrLink,
    EhrOutbox,
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


def _json(model) -> dict:
    return model.model_dump(mode="json")


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
    served straight from the CRM tables (ehr/directory.py); a patient is written to the store."""

    def __init__(self, session: AsyncSession, hospital: dict):
        self.session = session
        self.hospital = hospital

    async def patient(self, patient: Patient) -> str:
        row = await store.by_crm_id(self.session, "Patient", patient.id)
        if row is not None and row.resource_id != str(patient.id):
            # Imported from the EHR: its record is the richer one; Sila does not overwrite it.
            return f"Patient/{row.resource_id}"
        await store.put(self.session, _json(patient_map.to_fhir(patient, resource_id=str(patient.id))),
                        crm_id=patient.id)
        return f"Patient/{patient.id}"

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
        return await self.session.scalar(select(EhrLink).where(EhrLink.resource_type == kind, EhrLink.crm_id == crm_id))

    async def _find_or_create(self, kind: str, crm_id: int, lookups: list[tuple[str, str]], build) -> str:
        if link := await self._linked(kind, crm_id):
            return f"{kind}/{link.ehr_id}"
        for system, value in lookups:
            async for found in self.client.search(kind, {"identifier": f"{system}|{value}"}):
                await self._link(kind, crm_id, found["id"], (found.get("meta") or {}).get("versionId"))
                return f"{kind}/{found['id']}"
        resource = _json(build())
        resource.pop("id", None)
        system, value = lookups[-1]
        written = await self.client.create(resource, if_none_exist=f"identifier={system}|{value}")
        await self._link(kind, crm_id, written.id, written.version)
        return f"{kind}/{written.id}"

    async def _link(self, kind: str, crm_id: int, ehr_id: str, version: str | None) -> None:
        link = await self._linked(kind, crm_id)
        if link is None:
            self.session.add(EhrLink(resource_type=kind, crm_id=crm_id, ehr_id=ehr_id, ehr_version=version))
        else:
            link.ehr_id, link.ehr_version = ehr_id, version
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
    def __init__(self, sessions: async_sessionmaker, client: FhirClient | None, hospital: dict):
        self.sessions = sessions
        self.client = client
        self.hospital = hospital
        self.wakeup = asyncio.Event()

    async def _build(self, session: AsyncSession, kind: str, crm_id: int, refs) -> dict | None:
        if kind == "Appointment":
            appointment = await session.scalar(
                select(Appointment).where(Appointment.id == crm_id).options(
                    selectinload(Appointment.slot), selectinload(Appointment.patient),
                    selectinload(Appointment.practitioner).selectinload(Practitioner.department)))
            if appointment is None:
                return None
            practitioner_ref = await refs.practitioner(appointment.practitioner)
            return _json(appointment_map.to_fhir(
                appointment, patient_ref=await refs.patient(appointment.patient),
                practitioner_ref=practitioner_ref, slot_ref=await refs.slot(appointment.slot, practitioner_ref)))
        if kind == "Communication":
            message = await session.get(Message, crm_id)
            if message is None:
                return None
            conversation = await session.scalar(select(Conversation).where(
                Conversation.id == message.conversation_id).options(selectinload(Conversation.patient)))
            return _json(communication_map.to_fhir(
                message, conversation, patient_ref=await refs.patient(conversation.patient),
                organization_ref=refs.organization(), hospital_code=self.hospital.get("code")))
        if kind == "Consent":
            return await self._consent(session, crm_id, refs)
        if kind == "Slot":
            slot = await session.scalar(select(Slot).where(Slot.id == crm_id).options(selectinload(Slot.practitioner)))
            return directory.slot_resource(slot) if slot else None
        if kind in survey_fhir.KINDS:  # Questionnaire, QuestionnaireResponse (surveys/fhir.py)
            return await survey_fhir.build(session, kind, crm_id, refs.patient, self.hospital)
        raise ValueError(f"no FHIR mapping for outbox kind {kind!r}")

    async def _consent(self, session: AsyncSession, crm_id: int, refs) -> dict | None:
        consent = await session.get(Consent, crm_id)
        if consent is None:
            return None
        patient_ref = await refs.patient(await session.get(Patient, consent.patient_id))
        # The decision it replaces (same channel and purpose) is no longer in force.
        earlier = await session.scalar(select(Consent).where(
            Consent.patient_id == consent.patient_id, Consent.channel == consent.channel,
            Consent.purpose == consent.purpose, Consent.id < consent.id).order_by(Consent.id.desc()).limit(1))
        if earlier is not None and (row := await store.by_crm_id(session, "Consent", earlier.id)):
            await store.put(session, _json(consent_map.to_fhir(
                earlier, patient_ref=patient_ref, in_force=False, resource_id=row.resource_id)), crm_id=earlier.id)
        return _json(consent_map.to_fhir(consent, patient_ref=patient_ref, organization_ref=refs.organization()))

    async def _claim(self, item_id: int) -> bool:
        async with self.sessions() as session:
            now = utcnow()
            claimed = await session.execute(
                update(EhrOutbox).where(EhrOutbox.id == item_id, EhrOutbox.status == "pending",
                                        EhrOutbox.next_attempt_at <= now)
                .values(next_attempt_at=now + LEASE))
            await session.commit()
            return claimed.rowcount == 1

    async def process(self, item_id: int) -> bool:
        """Write one queued change; True when it is done (or superseded)."""
        if not await self._claim(item_id):
            return False
        async with self.sessions() as session:
            item = await session.get(EhrOutbox, item_id)
            kind, crm_id = item.kind, item.crm_id
            # Everything queued for this row so far is covered by writing the row as it is now.
            covered = await session.scalar(select(func.max(EhrOutbox.id)).where(
                EhrOutbox.kind == kind, EhrOutbox.crm_id == crm_id, EhrOutbox.status == "pending"))
        try:
            async with self.sessions() as session:
                await self._write_local(session, kind, crm_id)
                await session.commit()
            if self.client is not None and kind not in LOCAL_ONLY:
                # No transaction is held open across the EHR's network calls (SQLite has one
                # writer): what is learnt from the EHR is committed as it arrives.
                async with self.sessions() as session:
                    await self._write_ehr(session, kind, crm_id)
        except (FhirError, EhrUnavailable, store.InvalidResource) as exc:
            await self._failed(item_id, exc)
            return False
        async with self.sessions() as session:
            await session.execute(
                update(EhrOutbox).where(EhrOutbox.kind == kind, EhrOutbox.crm_id == crm_id,
                                        EhrOutbox.status == "pending", EhrOutbox.id <= max(covered or 0, item_id))
                .values(status="done", last_error=None))
            await session.commit()
        return True

    async def _failed(self, item_id: int, exc: Exception) -> None:
        permanent = isinstance(exc, store.InvalidResource) or (
            isinstance(exc, FhirError) and not isinstance(exc, Unauthorized) and exc.status in PERMANENT)
        async with self.sessions() as session:
            item = await session.get(EhrOutbox, item_id)
            item.attempts += 1
            item.last_error = str(exc)[:2000]
            item.status = "failed" if permanent else "pending"
            item.next_attempt_at = utcnow() + timedelta(seconds=min(MAX_BACKOFF, 2.0 ** item.attempts))
            await session.commit()
        log.warning("EHR write of %s #%s %s (attempt %s): %s", item.kind, item.crm_id,
                    "failed for good" if permanent else "will be retried", item.attempts, type(exc).__name__)

    async def _write_local(self, session: AsyncSession, kind: str, crm_id: int) -> None:
        resource = await self._build(session, kind, crm_id, _LocalRefs(session, self.hospital))
        if resource is None:
            return
        existing = await store.by_crm_id(session, kind, crm_id)
        resource["id"] = existing.resource_id if existing else str(crm_id)
        await store.put(session, resource, crm_id=crm_id)

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

    async def run_once(self, limit: int = 200) -> int:
        async with self.sessions() as session:
            due = (await session.scalars(select(EhrOutbox.id).where(
                EhrOutbox.status == "pending", EhrOutbox.next_attempt_at <= utcnow())
                .order_by(EhrOutbox.id).limit(limit))).all()
        done = 0
        for item_id in due:
            done += await self.process(item_id)
        return done

    async def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                await self.run_once()
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
