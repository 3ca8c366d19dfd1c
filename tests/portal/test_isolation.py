"""Every portal route, tried by one signed-in patient with another patient's identifiers (their
appointment reference, their held slot, their patient id, their phone, their message nonce),
returns nothing of theirs and changes nothing of theirs; and every access is audited as the
patient who made it.

One world per database (SQLite, PostgreSQL) is shared by the module: Gayla Ferry is signed in,
Royal DuBuque's record (imported from the EHR) is the one she must never see."""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.app import HUB, create_app
from crm_store import appointments as appts
from crm_store.migrate import upgrade
from crm_store.models import (
    Appointment,
    AuditEntry,
    Consent,
    Conversation,
    Message,
    Patient,
    PortalSession,
    Slot,
    utcnow,
)
from crm_store.seed import seed_hospital
from ehr.importer import import_path
from portal import threads
from tests.conftest import _reset_postgres
from tests.fakes.twilio_server import FakeTwilio
from tests.portal.conftest import (
    BUNDLES,
    GAYLA_BORN,
    GAYLA_PHONE,
    HOSPITAL,
    ROYAL_PHONE,
    SID,
    TOKEN,
    settings_for,
)
from tests.portal.helpers import PortalUser, csrf_in

pytestmark = pytest.mark.asyncio(loop_scope="module")
ROYAL_RESOURCE = "6d750ddc-ee20-40df-bf83-30461dc641e4"  # his Patient.id in the Synthea bundle
SECRET = "my private question about the biopsy"


@dataclass
class World:
    client: TestClient
    user: PortalUser
    hub: object
    me: int
    other: int
    reference: str  # the other patient's appointment
    booked_slot: int
    held_slot: int  # a time the other patient is confirming in their own portal session
    free_slot: int

    def markers(self) -> list[str]:
        return ["Royal", "DuBuque", ROYAL_PHONE, ROYAL_RESOURCE, self.reference, SECRET]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def world(request, tmp_path_factory, postgres_url):
    fake = FakeTwilio(SID, TOKEN).start()
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('isolation')}/sila.db"
    else:
        url = postgres_url
        await _reset_postgres(url)
    await asyncio.to_thread(upgrade, url)
    client = TestClient(TestServer(create_app(settings_for(url, fake), channels=("webchat", "sms", "whatsapp"))))
    await client.start_server()
    hub = client.app[HUB]
    async with hub.sessions() as session:
        await seed_hospital(session, HOSPITAL)
    await import_path(hub.sessions, BUNDLES)
    async with hub.sessions() as session:
        me = await session.scalar(select(Patient.id).where(Patient.phone == GAYLA_PHONE))
        other = await session.scalar(select(Patient.id).where(Patient.phone == ROYAL_PHONE))
        slots = (await session.scalars(select(Slot.id).where(Slot.start_at > utcnow() + timedelta(days=2))
                                       .order_by(Slot.start_at).limit(3))).all()
        assert await appts.hold_slot(session, slots[0], "web-royal")
        booked = await appts.book(session, patient_id=other, slot_id=slots[0], channel="webchat", holder="web-royal")
        assert await appts.hold_slot(session, slots[1], "portal:999999")  # his own portal session's hold
        await session.commit()
    await threads.post(hub, other, SECRET, "royal-nonce", "en")
    user = PortalUser(client, fake)
    await user.sign_in(GAYLA_PHONE, GAYLA_BORN)
    yield World(client, user, hub, me, other, booked.reference, slots[0], slots[1], slots[2])
    await client.close()
    fake.stop()


async def _other_state(w: World) -> tuple:
    async with w.hub.sessions() as session:
        appointment = await session.scalar(select(Appointment).where(Appointment.reference == w.reference)
                                           .execution_options(populate_existing=True))
        held = await session.get(Slot, w.held_slot, populate_existing=True)
        consents = await session.scalar(select(func.count()).select_from(Consent).where(Consent.patient_id == w.other))
        messages = (await session.scalars(select(Message.text).join(
            Conversation, Conversation.id == Message.conversation_id).where(
            Conversation.patient_id == w.other, Conversation.channel == "portal").order_by(Message.id))).all()
        language = await session.scalar(select(Patient.preferred_language).where(Patient.id == w.other))
        sessions = await session.scalar(select(func.count()).select_from(PortalSession).where(
            (PortalSession.patient_id == w.other) | (PortalSession.acting_patient_id == w.other)))
        return (appointment.status, appointment.slot_id, held.status, held.held_by, consents,
                list(messages), language, sessions)


async def _pre_csrf(w: World) -> str:
    await w.client.get("/portal/sign-in")
    return w.client.session.cookie_jar.filter_cookies(w.client.make_url("/portal/"))["sila_portal_pre"].value


# (method, path, form) with {ref} {held} {booked} {free} {other} {other_phone} filled from the world.
ROUTES = [
    ("GET", "/portal", None),
    ("GET", "/portal?patient={other}", None),
    ("GET", "/portal/health", None),
    ("GET", "/portal/health?patient={other}", None),
    ("GET", "/portal/appointments", None),
    ("GET", "/portal/appointments/new?move={ref}", None),
    ("GET", "/portal/appointments/new?department=cardiology&move={ref}", None),
    ("GET", "/portal/appointments/confirm?slot={held}", None),
    ("GET", "/portal/appointments/confirm?slot={booked}&move={ref}", None),
    ("POST", "/portal/appointments/hold", {"slot": "{held}"}),
    ("POST", "/portal/appointments/hold", {"slot": "{booked}"}),
    ("POST", "/portal/appointments/hold", {"slot": "{free}", "move": "{ref}"}),
    ("POST", "/portal/appointments/book", {"slot": "{held}"}),
    ("POST", "/portal/appointments/book", {"slot": "{booked}"}),
    ("POST", "/portal/appointments/book", {"slot": "{free}", "move": "{ref}"}),
    ("GET", "/portal/appointments/{ref}/cancel", None),
    ("POST", "/portal/appointments/{ref}/cancel", {}),
    ("GET", "/portal/appointments/{ref}.ics", None),
    ("GET", "/portal/messages", None),
    ("GET", "/portal/messages?patient={other}", None),
    ("POST", "/portal/messages", {"text": "hello", "nonce": "royal-nonce"}),
    ("WS", "/portal/ws?patient={other}", None),
    ("GET", "/portal/preferences", None),
    ("POST", "/portal/preferences/consent?patient={other}", {"channel": "sms", "purpose": "marketing",
                                                             "status": "granted", "patient": "{other}"}),
    ("POST", "/portal/preferences/language", {"language": "ar", "scope": "record", "patient": "{other}"}),
    ("GET", "/portal/data", None),
    ("GET", "/portal/data/export", None),
    ("GET", "/portal/data/export?patient={other}", None),
    ("POST", "/portal/switch", {"patient": "{other}"}),
    ("GET", "/portal/sign-in?next=/portal/appointments/{ref}.ics", None),
    ("PRE", "/portal/verify", {"phone": "{other_phone}", "code": "123456", "birth_date": "1997-06-27"}),
    ("PRE", "/portal/sign-in", {"phone": "{other_phone}"}),
    ("POST", "/portal/sign-out", {}),  # last: it ends the session the others use
]


def _fill(value: str, w: World) -> str:
    return value.format(ref=w.reference, held=w.held_slot, booked=w.booked_slot, free=w.free_slot,
                        other=w.other, other_phone=ROYAL_PHONE)


@pytest.mark.parametrize("method,path,form", ROUTES, ids=[f"{m} {p}" + (f" {sorted(f)}" if f else "")
                                                          for m, p, f in ROUTES])
async def test_another_patients_identifiers_return_nothing_of_theirs(world, method, path, form):
    w = world
    before = await _other_state(w)
    async with w.hub.sessions() as session:
        audited = await session.scalar(select(func.count()).select_from(AuditEntry))
    url = _fill(path, w)
    data = {k: _fill(v, w) for k, v in (form or {}).items()}
    if method == "GET":
        response = await w.client.get(url, allow_redirects=False)
    elif method == "WS":
        async with w.client.ws_connect(url) as ws:  # it listens for her messages, never his
            for _ in range(100):
                if w.hub.events.watchers(f"portal:{w.me}"):
                    break
                await asyncio.sleep(0.02)
            assert w.hub.events.watchers(f"portal:{w.me}") == 1 and w.hub.events.watchers(f"portal:{w.other}") == 0
            await ws.close()
        response = None
    elif method == "PRE":  # the sign-in forms, before a session
        response = await w.client.post(url, data={"_csrf": await _pre_csrf(w), **data}, allow_redirects=False)
    else:
        csrf = csrf_in(await (await w.client.get("/portal")).text())
        response = await w.client.post(url, data={"_csrf": csrf, **data}, allow_redirects=False)

    if response is not None:
        body = (await response.read()).decode(errors="replace")
        # The sign-in form carries back the address that was asked for: an echo, not a leak.
        body = re.sub(r'name="next" value="[^"]*"', "", body)
        shown = body + response.headers.get("Location", "") + response.headers.get("Content-Disposition", "")
        assert response.status in (200, 302, 400, 401, 404, 429), (response.status, body[:300])
        # …and so is the number typed on the sign-in forms (whose answer is the same for any number).
        leaked = [m for m in w.markers() if m in shown and not (method == "PRE" and m == ROYAL_PHONE)]
        assert not leaked, leaked
        if response.status == 302 and response.headers["Location"].startswith("/portal") \
                and "sign-in" not in response.headers["Location"]:
            followed = await (await w.client.get(response.headers["Location"])).text()
            assert not [m for m in w.markers() if m in followed]
    assert await _other_state(w) == before  # nothing of his changed

    async with w.hub.sessions() as session:
        rows = (await session.scalars(select(AuditEntry).where(AuditEntry.id > audited)
                                      .order_by(AuditEntry.id))).all()
        acting = await session.scalar(select(PortalSession.acting_patient_id).where(
            PortalSession.patient_id == w.me).order_by(PortalSession.id.desc()).limit(1))
    assert acting == w.me
    if not (method == "GET" and path.startswith("/portal/sign-in")):  # a blank form shows no one's data
        assert rows, "every portal access is in the audit log"
    for row in rows:
        if row.username.startswith("patient:"):
            assert row.username == f"patient:{w.me}" and row.patient_id == w.me
            assert row.action.startswith("portal:")
