"""The EHR link end to end. A second Sila process plays the hospital's EHR through its /fhir/R4 API;
both import the same Synthea bundles. A patient the EHR knows writes from their phone, books, moves
and cancels over SMS with the real bot; every change and every message is read back from the EHR
side — including what happened while the EHR was unreachable."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.settings import ROOT
from crm_store.db import create_engine, sessionmaker
from crm_store.models import Conversation, EhrOutbox, Message, Patient
from ehr import identifiers
from tests.e2e.phone import Phone, REFERENCE, SID, TOKEN, options, twilio_env
from tests.fakes.tcp_proxy import SwitchableProxy
from tests.fakes.twilio_server import FakeTwilio
from tests.stack import Stack

pytestmark = pytest.mark.rasa
BUNDLES = ROOT / "tests" / "fixtures" / "fhir"
GAYLA = "77155e2b-5d21-4b47-86f0-4004183d68b2"  # Patient.id in Gayla_Ferry_….json
GAYLA_PHONE = "+15556058177"  # her Synthea telecom "555-605-8177", a US number (her address's country)


class Fhir:
    """An API client of one Sila's /fhir/R4, with its bearer token."""

    def __init__(self, base_url: str, token: str):
        self.url, self.headers = base_url + "/fhir/R4", {"Authorization": f"Bearer {token}"}

    async def search(self, kind: str, **params: str) -> dict:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/{kind}", params=params, headers=self.headers) as response:
                assert response.status == 200, await response.text()
                return await response.json(content_type=None)

    async def entries(self, kind: str, **params: str) -> list[dict]:
        return [e["resource"] for e in (await self.search(kind, **params)).get("entry", [])]

    async def until(self, check, timeout: float = 90.0):
        """Poll until `check()` returns something truthy (EHR writes are asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            if result := await check():
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"the EHR did not get there within {timeout}s")
            await asyncio.sleep(0.5)


def _prepare(tokens: dict, name: str):
    def run(sila, env):
        import subprocess

        subprocess.run([*sila, "ehr", "import", str(BUNDLES)], env=env, cwd=ROOT, check=True, capture_output=True)
        added = subprocess.run([*sila, "fhir", "client", "add", name, "--scope", "system/*.*"], env=env, cwd=ROOT,
                               check=True, capture_output=True, text=True)
        tokens[name] = added.stdout.strip().splitlines()[-1]
    return run


@pytest.fixture(scope="module")
def link(tmp_path_factory):
    tokens: dict[str, str] = {}
    ehr = Stack.start(tmp_path_factory.mktemp("ehr"), rasa=False, before_serve=_prepare(tokens, "hub"))
    gate = SwitchableProxy(ehr.sila_port).start()  # the network between the hub and the EHR
    fake = FakeTwilio(SID, TOKEN).start()
    hub = Stack.start(tmp_path_factory.mktemp("hub"), before_serve=_prepare(tokens, "tests"), env={
        **twilio_env(fake, "sms"), "SILA_EHR_FHIR_URL": f"http://127.0.0.1:{gate.port}/fhir/R4",
        "SILA_EHR_TOKEN": tokens["hub"], "SILA_EHR_TIMEOUT": "3"})
    yield hub, fake, gate, Fhir(ehr.base_url, tokens["hub"]), Fhir(hub.base_url, tokens["tests"])
    hub.stop()
    fake.stop()
    gate.stop()
    ehr.stop()


async def test_book_move_cancel_and_messages_reach_the_ehr(link):
    hub, fake, gate, ehr, own = link
    engine = create_engine(hub.database_url)
    store = sessionmaker(engine)
    phone = Phone(hub, fake, store, "sms", GAYLA_PHONE)

    # Known to the EHR: she is not asked her name or date of birth, she is offered times at once.
    offer = await phone.say("I'd like to book an appointment with a cardiologist tomorrow")
    assert options(offer[-1]), offer
    await phone.say("1")
    booked = "\n".join(await phone.say("1"))
    reference = REFERENCE.search(booked).group(0)
    async with store() as session:
        patient = await session.scalar(select(Patient).where(Patient.phone == GAYLA_PHONE))
    assert (patient.given_name_en, patient.family_name_en, patient.birth_date.isoformat()) == (
        "Gayla", "Ferry", "1937-06-03")

    by_reference = {"identifier": f"{identifiers.APPOINTMENT}|{reference}"}

    async def appointment(**expected):
        found = await ehr.entries("Appointment", **by_reference)
        return found[0] if len(found) == 1 and all(found[0].get(k) == v for k, v in expected.items()) else None

    first = await ehr.until(lambda: appointment(status="booked"))
    assert {p["actor"]["reference"] for p in first["participant"]} >= {f"Patient/{GAYLA}"}

    await phone.say("I need to reschedule my appointment")
    await phone.say("next Sunday")
    await phone.say("2")
    moved = "\n".join(await phone.say("1"))
    assert reference in moved or "moved" in moved.lower(), moved
    second = await ehr.until(lambda: _moved(appointment, first["start"]))
    assert second["id"] == first["id"] and int(second["meta"]["versionId"]) > int(first["meta"]["versionId"])

    # The EHR goes away: the cancellation is kept, visible as pending, and delivered once it is back.
    gate.set_up(False)
    try:
        await phone.say("please cancel my appointment")
        cancelled = "\n".join(await phone.say("1"))
        assert "cancel" in cancelled.lower(), cancelled

        async def pending():
            async with store() as session:
                return await session.scalar(select(func.count()).select_from(EhrOutbox).where(
                    EhrOutbox.kind == "Appointment", EhrOutbox.status == "pending", EhrOutbox.attempts > 0))
        await ehr.until(pending, timeout=60)
        status = hub.sila("ehr", "status").stdout
        assert "pending" in status and "0 pending" not in status, status
    finally:
        gate.set_up(True)
    final = await ehr.until(lambda: appointment(status="cancelled"))
    assert final["id"] == first["id"]
    assert len(await ehr.entries("Appointment", **by_reference)) == 1  # retried, never duplicated

    # Every message in and out of her conversation is a Communication in the EHR, exactly once.
    async with store() as session:
        rows = (await session.execute(select(Message.display, Message.text).join(Conversation).where(
            Conversation.patient_id == patient.id, Message.private.is_(False)).order_by(Message.id))).all()
    texts = [display or text for display, text in rows]  # what the patient typed or tapped, not the payload

    async def communications():
        found = await ehr.entries("Communication", patient=f"Patient/{GAYLA}", _count="200")
        return found if len(found) == len(texts) else None
    written = await ehr.until(communications)
    assert sorted(c["payload"][0]["contentString"] for c in written) == sorted(texts)

    # Sila's own FHIR API tells the same story.
    mine = await own.entries("Appointment", **by_reference)
    assert [a["status"] for a in mine] == ["cancelled"]
    assert "0 pending" in hub.sila("ehr", "status").stdout
    await engine.dispose()


async def _moved(appointment, old_start: str):
    found = await appointment(status="booked")
    return found if found and found["start"] != old_start else None
