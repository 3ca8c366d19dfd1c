"""A Sila app (SQLite and PostgreSQL) serving web chat and SMS through the fake Twilio, with the demo
hospital seeded; patients written straight into the store as the router and the EHR import would
leave them. Rasa is not running: a message the survey does not take waits for the bot
(`pending_bot`), which is how these tests see that it went to the bot."""
from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bot.app import HUB, create_app
from bot.settings import Settings
from channels.base import InboundMessage
from crm_store.models import (
    Appointment,
    AppointmentStatus,
    ChannelIdentity,
    Conversation,
    Message,
    Patient,
    Practitioner,
    Slot,
    SlotStatus,
    SurveyAnswer,
    SurveyResponse,
    utcnow,
)
from crm_store.db import create_engine, sessionmaker
from crm_store.migrate import upgrade
from crm_store.seed import seed_hospital
from surveys import dispatch
from surveys.runtime import SURVEYS
from tests.conftest import HOSPITAL
from tests.fakes.tcp_proxy import _free_port
from tests.fakes.twilio_server import FakeTwilio

SID, TOKEN = "AC" + "7" * 32, "survey-auth-token"
SMS_FROM = "+15005550006"
OPTION = re.compile(r"^(\d+)\. (.+)$", re.M)


def _in_thread(coroutine) -> None:  # pytest-asyncio may already run a loop in this thread
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


async def _migrate_and_seed(url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    try:
        async with sessionmaker(engine)() as session:
            await seed_hospital(session, HOSPITAL)
    finally:
        await engine.dispose()


async def _admin(server_url: str, *statements: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def seeded_sqlite(tmp_path_factory) -> str:
    """A migrated, seeded SQLite file made once; each test gets a copy (seeding takes seconds)."""
    path = tmp_path_factory.mktemp("surveys-template") / "sila.db"
    _in_thread(_migrate_and_seed(f"sqlite+aiosqlite:///{path}"))
    return str(path)


@pytest.fixture(scope="session")
def seeded_postgres(postgres_url) -> str:
    """The same on PostgreSQL: a template database each test's database is created from."""
    template = make_url(postgres_url).database + "_surveys_template"
    _in_thread(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)',
                      f'CREATE DATABASE "{template}"'))
    url = make_url(postgres_url).set(database=template).render_as_string(hide_password=False)
    _in_thread(_migrate_and_seed(url))
    yield template
    _in_thread(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)',
                      f'DROP DATABASE IF EXISTS "{make_url(postgres_url).database}_surveys" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request, tmp_path, postgres_url, seeded_sqlite, seeded_postgres) -> str:
    """A migrated store with the demo hospital, fresh for each test, on both backends."""
    if request.param == "sqlite":
        shutil.copy(seeded_sqlite, tmp_path / "sila.db")
        return f"sqlite+aiosqlite:///{tmp_path}/sila.db"
    name = make_url(postgres_url).database + "_surveys"
    await _admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                 f'CREATE DATABASE "{name}" TEMPLATE "{seeded_postgres}"')
    return make_url(postgres_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
async def sessions(store_url):
    engine = create_engine(store_url)
    yield sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def fake():
    server = FakeTwilio(SID, TOKEN).start()
    yield server
    server.stop()


def settings_for(store_url: str, fake: FakeTwilio, **extra) -> Settings:
    values = dict(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=1,
                  replay_interval=3600, public_url="https://sila.example", twilio_account_sid=SID,
                  twilio_auth_token=TOKEN, twilio_api_url=fake.url, twilio_sms_from=SMS_FROM, sms_rate=0,
                  campaigns_enabled=False, automation_interval=3600, survey_interval=3600,
                  campaign_quiet_start=0, campaign_quiet_end=0)
    return Settings(**{**values, **extra})


@pytest.fixture
async def client(aiohttp_client, sessions, store_url, fake):
    return await aiohttp_client(create_app(settings_for(store_url, fake), channels=("webchat", "sms")))


@pytest.fixture
def hub(client):
    return client.app[HUB]


@pytest.fixture
def runtime(client):
    return client.app[SURVEYS]


async def add_patient(hub, phone: str | None, *, language: str = "en", channels=("sms",), name=("Sara", "سارة"),
                      seen_days_ago: float = 2) -> int:
    """A known patient with identities on `channels` (their phone, or a web chat token)."""
    async with hub.sessions() as session:
        patient = Patient(given_name_en=name[0], given_name_ar=name[1], preferred_language=language, phone=phone)
        session.add(patient)
        await session.flush()
        for n, channel in enumerate(channels):
            address = phone if channel in ("sms", "whatsapp") else f"{channel}-{patient.id}"
            seen = utcnow() - timedelta(days=seen_days_ago, minutes=n)
            session.add(ChannelIdentity(patient_id=patient.id, channel=channel, address=address,
                                        created_at=seen, last_seen_at=seen))
        await session.commit()
        return patient.id


async def send_survey(hub, patient_id: int, code: str = "post-visit-nps", **options) -> dispatch.Offer:
    async with hub.sessions() as session:
        result = await dispatch.offer(session, patient_id, code, hospital={"name_en": "Al Noor", "name_ar": "النور"},
                                      **options)
        await session.commit()
    await hub.outbox.deliver(result.message_ids)
    return result


class SmsPatient:
    """A patient texting the hospital: messages through the router, replies from the fake Twilio."""

    def __init__(self, hub, fake: FakeTwilio, number: str):
        self.hub, self.fake, self.number = hub, fake, number

    def inbox(self) -> list[str]:
        return [m.get("Body") for m in self.fake.sent_to(self.number)]

    async def say(self, text: str) -> str:
        before = len(self.fake.sent_to(self.number))
        await self.hub.router.receive(InboundMessage("sms", self.number, text, "SM" + uuid.uuid4().hex))
        return "\n".join(self.inbox()[before:])


def options(body: str) -> list[str]:
    return [title for _, title in OPTION.findall(body)]


async def response_of(hub, response_id: int) -> SurveyResponse:
    async with hub.sessions() as session:
        return await session.get(SurveyResponse, response_id)


async def answers_of(hub, response_id: int) -> dict:
    async with hub.sessions() as session:
        rows = (await session.scalars(select(SurveyAnswer).where(SurveyAnswer.response_id == response_id)
                                      .order_by(SurveyAnswer.id))).all()
    return {a.question_id: (None if a.skipped else a.value_int if a.value_int is not None else a.value_text)
            for a in rows}


async def last_inbound(hub, number: str, channel: str = "sms") -> Message:
    async with hub.sessions() as session:
        return await session.scalar(select(Message).join(Conversation).join(
            ChannelIdentity, ChannelIdentity.id == Conversation.identity_id).where(
            ChannelIdentity.address == number, ChannelIdentity.channel == channel, Message.direction == "in")
            .order_by(Message.id.desc()).limit(1))


async def fulfilled_visit(hub, patient_id: int, *, end=None, doctor_offset: int = 0) -> Appointment:
    """An appointment the patient attended, ending at `end` (default: three hours ago)."""
    async with hub.sessions() as session:
        doctor = (await session.scalars(select(Practitioner).order_by(Practitioner.id)
                                        .offset(doctor_offset).limit(1))).one()
        end = end or utcnow() - timedelta(hours=3)
        slot = Slot(practitioner_id=doctor.id, start_at=end - timedelta(minutes=20), end_at=end,
                    status=SlotStatus.booked)
        session.add(slot)
        await session.flush()
        appointment = Appointment(reference=f"SL-{uuid.uuid4().hex[:6].upper()}", patient_id=patient_id,
                                  practitioner_id=doctor.id, slot_id=slot.id, status=AppointmentStatus.fulfilled,
                                  source_channel="sms")
        session.add(appointment)
        await session.commit()
        return appointment


PASSWORD = "correct horse battery"


async def add_staff(hub, username: str, role, language: str = "en") -> None:
    from crm_store.models import StaffUser
    from inbox.security import hash_password

    async with hub.sessions() as session:
        session.add(StaffUser(username=username, display_name=username.title(), password_hash=hash_password(PASSWORD),
                              role=role, language=language))
        await session.commit()


async def sign_in(client, username: str) -> None:
    page = await (await client.get("/console/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    response = await client.post("/console/login", data={"_csrf": token, "username": username, "password": PASSWORD},
                                 allow_redirects=False)
    assert response.status == 302, await response.text()


async def csrf_of(client, path: str) -> str:
    page = await (await client.get(path)).text()
    return re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
