"""The EHR write-back against a fake EHR that fails on command: an appointment booked, moved and
cancelled is one Appointment in the EHR, versioned; messages become Communications; an EHR that is
down, failing or losing answers delays writes but never loses or duplicates them."""
from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import select, update

from bot import consent
from bot.settings import ROOT
from crm_store import appointments, changes
from crm_store.content import load_hospital
from crm_store.models import (
    Appointment,
    ChannelIdentity,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    EhrOutbox,
    Message,
    Patient,
    Practitioner,
    Slot,
    SlotStatus,
    utcnow,
)
from ehr import directory, identifiers, store, sync
from ehr.client import BearerToken, FhirClient
from ehr.importer import import_path
from ehr.sync import EhrSync
from tests.conftest import HOSPITAL
from tests.fakes.fhir_server import FakeFhir

GAYLA_BUNDLE = ROOT / "tests" / "fixtures" / "fhir" / "Gayla_Ferry_259bc6c6-9c1d-43e9-bd25-7539cf07f8ac.json"
GAYLA = "77155e2b-5d21-4b47-86f0-4004183d68b2"


@pytest.fixture
async def ehr():
    server = await FakeFhir().start()
    # The hospital's EHR knows Gayla (under its own id) by the identifiers the bundle carries.
    patient = json.loads(GAYLA_BUNDLE.read_text())["entry"][0]["resource"]
    server.put({**patient, "id": "ehr-gayla"})
    yield server
    await server.close()


@pytest.fixture
async def hub(sessions, ehr):
    await import_path(sessions, GAYLA_BUNDLE)
    async with aiohttp.ClientSession() as http:
        client = FhirClient(ehr.url, http, auth=BearerToken(ehr.token), backoff=0.01, attempts=2, timeout=2)
        yield EhrSync(sessions, client, load_hospital(HOSPITAL)["hospital"])


async def _book(sessions, slot_offset: int = 0) -> Appointment:
    """Gayla books one of the first doctor's free slots."""
    async with sessions() as session:
        patient = await session.scalar(select(Patient).where(Patient.phone == "+15556058177"))
        doctor = await session.scalar(select(Practitioner.id).order_by(Practitioner.id).limit(1))
        slot = (await session.scalars(select(Slot).where(Slot.start_at > utcnow() + timedelta(days=1),
                                                         Slot.practitioner_id == doctor)
                                      .order_by(Slot.start_at).offset(slot_offset).limit(1))).one()
        booked = await appointments.book(session, patient_id=patient.id, slot_id=slot.id, channel="sms",
                                         holder="test")
        await session.commit()
        return booked


async def _due_now(sessions) -> None:
    """Skip the backoff wait: make every pending write due."""
    async with sessions() as session:
        await session.execute(update(EhrOutbox).where(EhrOutbox.status == "pending").values(next_attempt_at=utcnow()))
        await session.commit()


async def _drain(hub: EhrSync) -> None:
    for _ in range(5):
        await _due_now(hub.sessions)
        await hub.run_once()


def _appointments(ehr: FakeFhir, reference: str) -> list[dict]:
    return [a for a in ehr.resources("Appointment")
            if {"system": identifiers.APPOINTMENT, "value": reference} in a.get("identifier", [])]


async def test_booked_moved_cancelled_is_one_versioned_appointment_in_the_ehr(hub, ehr, sessions):
    booked = await _book(sessions)
    await hub.run_once()
    [written] = _appointments(ehr, booked.reference)
    actors = {p["actor"].get("reference") for p in written["participant"]}
    assert "Patient/ehr-gayla" in actors  # found by her Synthea identifier, not created again
    assert len(ehr.resources("Patient")) == 1
    [doctor] = ehr.resources("Practitioner")  # unknown to the EHR: created once, by conditional create
    assert f"Practitioner/{doctor['id']}" in actors
    assert written["status"] == "booked"

    async with sessions() as session:
        appointment = await session.get(Appointment, booked.id)
        new_slot = await session.scalar(select(Slot).where(Slot.status == SlotStatus.free,
                                                           Slot.practitioner_id == appointment.practitioner_id,
                                                           Slot.start_at > utcnow() + timedelta(days=3)).limit(1))
        assert await appointments.reschedule(session, appointment, slot_id=new_slot.id, channel="sms", holder="t")
        await session.commit()
    await hub.run_once()
    [moved] = _appointments(ehr, booked.reference)
    assert moved["id"] == written["id"] and moved["meta"]["versionId"] == "2"
    assert moved["start"].startswith(new_slot.start_at.strftime("%Y-%m-%dT%H:%M"))

    async with sessions() as session:
        assert await appointments.cancel(session, await session.get(Appointment, booked.id), channel="sms")
        await session.commit()
    await hub.run_once()
    [cancelled] = _appointments(ehr, booked.reference)
    assert (cancelled["status"], cancelled["meta"]["versionId"]) == ("cancelled", "3")
    assert len(ehr.calls("POST", "Appointment")) == 1

    # Sila's own store mirrors it, and the freed slot is free there too.
    async with sessions() as session:
        mine = await store.by_crm_id(session, "Appointment", booked.id)
        slot = await store.by_crm_id(session, "Slot", booked.slot_id)
        state = await sync.status(session)
    assert mine.content["status"] == "cancelled" and mine.patient_ref == f"Patient/{GAYLA}"
    assert slot.content["status"] == "free"
    assert (state.pending, state.failed) == (0, 0)


async def test_an_ehr_down_for_a_while_gets_every_change_once_it_is_back(hub, ehr, sessions):
    await ehr.down()
    booked = await _book(sessions)
    await hub.run_once()
    async with sessions() as session:
        state = await sync.status(session)
        item = await session.scalar(select(EhrOutbox).where(EhrOutbox.kind == "Appointment"))
    assert state.pending >= 1 and state.last_error
    assert item.attempts == 1 and item.next_attempt_at > utcnow()

    async with sessions() as session:  # cancelled while the EHR is still away
        assert await appointments.cancel(session, await session.get(Appointment, booked.id), channel="sms")
        await session.commit()
    await _drain(hub)
    assert ehr.resources("Appointment") == []

    await ehr.up()
    await _drain(hub)
    [written] = _appointments(ehr, booked.reference)
    assert written["status"] == "cancelled"  # the latest state, written once
    async with sessions() as session:
        assert (await sync.status(session)).pending == 0


async def test_failures_and_lost_answers_never_duplicate(hub, ehr, sessions):
    await _book(sessions)
    await hub.run_once()  # the doctor is now known to the EHR: the next POSTs are appointments

    ehr.fail_next(500, method="POST")  # then success on the client's own retry
    first = await _book(sessions, slot_offset=1)
    await hub.run_once()
    assert len(_appointments(ehr, first.reference)) == 1

    ehr.lose_next_response(method="POST")  # written, but the answer never arrives
    second = await _book(sessions, slot_offset=2)
    await _drain(hub)
    assert len(_appointments(ehr, second.reference)) == 1
    assert len(ehr.resources("Appointment")) == 3
    assert len(ehr.calls("POST", "Appointment")) == 5  # 1 + (500, retry) + (lost, retried → 200)


async def test_a_change_made_at_the_hospital_meanwhile_is_not_silently_lost(hub, ehr, sessions):
    booked = await _book(sessions)
    await hub.run_once()
    [written] = _appointments(ehr, booked.reference)
    ehr.put({**written, "comment": "patient called the front desk"})  # version 2, behind Sila's back
    async with sessions() as session:
        assert await appointments.cancel(session, await session.get(Appointment, booked.id), channel="sms")
        await session.commit()
    await hub.run_once()
    [final] = _appointments(ehr, booked.reference)
    assert final["status"] == "cancelled" and final["meta"]["versionId"] == "3"
    assert len(ehr.calls("PUT", "Appointment")) == 2  # refused once (412), then written on version 2


async def test_an_invalid_resource_fails_visibly_and_can_be_retried(hub, ehr, sessions):
    ehr.fail_next(422, method="POST", diagnostics="Appointment.participant: required by local profile")
    booked = await _book(sessions)
    await hub.run_once()
    async with sessions() as session:
        state = await sync.status(session)
    assert state.failed == 1 and "local profile" in state.last_error
    assert _appointments(ehr, booked.reference) == []
    assert await hub.retry_failed() == 1
    await hub.run_once()
    assert len(_appointments(ehr, booked.reference)) == 1


async def _gayla_on_sms(session) -> Conversation:
    """A new SMS conversation with Gayla."""
    patient = await session.scalar(select(Patient).where(Patient.phone == "+15556058177"))
    identity = ChannelIdentity(patient_id=patient.id, channel="sms", address=patient.phone)
    session.add(identity)
    await session.flush()
    conversation = Conversation(patient_id=patient.id, identity_id=identity.id, channel="sms", language="en")
    session.add(conversation)
    await session.flush()
    return conversation


async def test_messages_in_and_out_become_communications(hub, ehr, sessions):
    async with sessions() as session:
        conversation = await _gayla_on_sms(session)
        session.add_all([
            Message(conversation_id=conversation.id, channel="sms", direction="in", sender="patient",
                    text="When is my appointment?", status="received", provider_message_id="SM1"),
            Message(conversation_id=conversation.id, channel="sms", direction="out", sender="bot",
                    text="You have no upcoming appointments.", status="queued"),
            Message(conversation_id=conversation.id, channel="sms", direction="out", sender="staff",
                    text="internal: call her daughter", status="sent", private=True),
        ])
        await session.commit()
    await hub.run_once()
    assert [c["payload"][0]["contentString"] for c in ehr.resources("Communication")] == ["When is my appointment?"]

    async with sessions() as session:  # the reply is handed to Twilio: now it is written too
        await session.execute(update(Message).where(Message.direction == "out", Message.private.is_(False))
                              .values(status="sent"))
        reply = await session.scalar(select(Message).where(Message.status == "sent", Message.private.is_(False)))
        changes.queue(session, "Communication", reply.id)
        await session.commit()
    await hub.run_once()
    texts = sorted(c["payload"][0]["contentString"] for c in ehr.resources("Communication"))
    assert texts == ["When is my appointment?", "You have no upcoming appointments."]  # never the private note
    assert all(c["subject"]["reference"] == "Patient/ehr-gayla" for c in ehr.resources("Communication"))


async def test_the_directory_is_served_from_sila_own_store(sessions):
    hospital = load_hospital(HOSPITAL)["hospital"]
    async with sessions() as session:
        written = await directory.publish(session, hospital)
        await session.commit()
        again = await directory.publish(session, hospital)
        doctors = (await session.scalars(select(Practitioner))).all()
        free = await store.search(session, "Slot", {"schedule": [f"Schedule/{doctors[0].code}"], "status": ["free"],
                                                    "_count": ["0"]})
        slots = await session.scalar(select(Slot.id).where(Slot.practitioner_id == doctors[0].id,
                                                           Slot.end_at > utcnow()).limit(1))
    assert written > len(doctors) * 3 and again == 0
    assert free.total > 0 and slots is not None


async def test_consent_decisions_are_kept_as_fhir_consents_in_sila_only(hub, ehr, sessions):
    async with sessions() as session:
        patient = await session.scalar(select(Patient).where(Patient.phone == "+15556058177"))
        consent.record(session, patient.id, "sms", ConsentStatus.granted, source="portal",
                       purposes=(ConsentPurpose.marketing,))
        await session.commit()
        consent.record(session, patient.id, "sms", ConsentStatus.revoked, source="keyword:STOP",
                       purposes=(ConsentPurpose.marketing,))
        await session.commit()
    await hub.run_once()
    async with sessions() as session:
        stored = (await store.search(session, "Consent", {"patient": [f"Patient/{GAYLA}"]})).rows
    by_status = {row.content["status"]: row.content for row in stored}
    assert set(by_status) == {"active", "inactive"}
    assert by_status["active"]["provision"]["type"] == "deny"  # the opt-out in force
    assert by_status["inactive"]["provision"]["type"] == "permit"  # the opt-in it replaced
    assert ehr.resources("Consent") == []


async def test_duplicates_in_the_ehr_stop_the_write_with_the_reason(hub, ehr, sessions):
    await _book(sessions)
    await hub.run_once()  # the doctor is known to the EHR now
    ehr.fail_next(412, method="POST", diagnostics="Multiple resources match this search")
    booked = await _book(sessions, slot_offset=1)
    await hub.run_once()
    async with sessions() as session:
        state = await sync.status(session)
    assert state.failed == 1 and "Multiple resources match" in state.last_error
    assert _appointments(ehr, booked.reference) == []


async def _conversation_with(sessions, texts: list[str]) -> None:
    async with sessions() as session:
        conversation = await _gayla_on_sms(session)
        session.add_all([Message(conversation_id=conversation.id, channel="sms", direction="in", sender="patient",
                                 text=text, status="received", provider_message_id=f"SM-batch-{n}")
                         for n, text in enumerate(texts)])
        await session.commit()


async def test_two_workers_share_the_queue_and_write_each_message_once(hub, ehr, sessions):
    texts = [f"message {n}" for n in range(30)]
    await _conversation_with(sessions, texts)
    other = EhrSync(sessions, hub.client, hub.hospital)
    written = sum(await asyncio.gather(hub.run_once(limit=10), other.run_once(limit=10),
                                       hub.run_once(limit=10), other.run_once(limit=10)))
    assert written == 30
    assert sorted(c["payload"][0]["contentString"] for c in ehr.resources("Communication")) == sorted(texts)
    assert len(ehr.calls("POST", "Communication")) == 30
    async with sessions() as session:
        assert len((await store.search(session, "Communication", {"_count": ["100"]})).rows) == 30
        assert (await sync.status(session)).pending == 0


async def test_a_row_sila_cannot_map_fails_alone_and_the_rest_of_its_batch_is_written(hub, ehr, sessions):
    async with sessions() as session:
        changes.queue(session, "Nonsense", 1)  # e.g. a kind queued by a newer version of Sila
        await session.commit()
    await _conversation_with(sessions, ["Is the clinic open on Friday?"])
    assert await hub.run_once() == 1
    async with sessions() as session:
        state = await sync.status(session)
    assert (state.pending, state.failed) == (0, 1) and "Nonsense" in state.last_error
    assert [c["payload"][0]["contentString"] for c in ehr.resources("Communication")] == \
        ["Is the clinic open on Friday?"]


async def test_an_ehr_that_is_down_is_tried_once_per_pass_not_once_per_change(hub, ehr, sessions):
    await ehr.down()
    await _conversation_with(sessions, ["one", "two", "three"])
    assert await hub.run_once() == 0
    async with sessions() as session:
        items = (await session.scalars(select(EhrOutbox))).all()
        mirrored = (await store.search(session, "Communication", {"_count": ["10"]})).rows
    assert [(i.status, i.attempts) for i in items] == [("pending", 1)] * 3
    assert len(mirrored) == 3  # Sila's own store has them already; the EHR gets them when back
    await ehr.up()
    await _drain(hub)
    assert sorted(c["payload"][0]["contentString"] for c in ehr.resources("Communication")) == ["one", "three", "two"]
