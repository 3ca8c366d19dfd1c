"""A Sila app (SQLite and PostgreSQL) with SMS and WhatsApp through the fake Twilio server, the
demo hospital, and patients the way the EHR import and the router leave them."""
from __future__ import annotations

import asyncio
import re
from datetime import date

import pytest
from sqlalchemy import select

from bot.app import HUB, create_app
from bot.settings import ROOT, Settings
from crm_store.models import ChannelIdentity, Consent, ConsentPurpose, ConsentStatus, Patient
from crm_store.seed import seed_hospital
from ehr.importer import import_path
from tests.fakes.tcp_proxy import _free_port
from tests.fakes.twilio_server import FakeTwilio

SID, TOKEN = "AC" + "8" * 32, "portal-auth-token"
SMS_FROM, WA_FROM = "+15005550006", "whatsapp:+14155238886"
HOSPITAL = ROOT / "crm_store" / "demo" / "hospital.yml"
BUNDLES = ROOT / "tests" / "fixtures" / "fhir"
GAYLA_PHONE, GAYLA_BORN = "+15556058177", date(1937, 6, 3)
ROYAL_PHONE, ROYAL_BORN = "+15558046642", date(1997, 6, 27)
CODE = re.compile(r"(?<![\d#])(\d{6})(?!\d)")


@pytest.fixture
def fake():
    server = FakeTwilio(SID, TOKEN).start()
    yield server
    server.stop()


def settings_for(store_url: str, fake: FakeTwilio, **extra) -> Settings:
    values = dict(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=2,
                  replay_interval=3600, public_url="https://sila.example", twilio_account_sid=SID,
                  twilio_auth_token=TOKEN, twilio_api_url=fake.url, twilio_sms_from=SMS_FROM,
                  twilio_whatsapp_from=WA_FROM, sms_rate=0, whatsapp_rate=0, campaign_poll=0.2,
                  campaign_lease=5, automation_interval=3600, campaign_quiet_start=0, campaign_quiet_end=0)
    return Settings(**{**values, **extra})


@pytest.fixture
async def client(aiohttp_client, store_url, fake):
    app = create_app(settings_for(store_url, fake), channels=("webchat", "sms", "whatsapp"))
    client = await aiohttp_client(app)
    async with client.app[HUB].sessions() as session:
        await seed_hospital(session, HOSPITAL)
    return client


@pytest.fixture
def hub(client):
    return client.app[HUB]


@pytest.fixture
async def imported(hub):
    """The three Synthea patients of tests/fixtures/fhir, imported as `sila ehr import` does."""
    await import_path(hub.sessions, BUNDLES)
    async with hub.sessions() as session:
        return {p.given_name_en: p for p in (await session.scalars(select(Patient))).all()}


async def add_patient(hub, phone: str | None, born: date | None, *, first: str = "Amal", first_ar: str = "أمل",
                      family: str = "Saleh", language: str = "en", channels: tuple[str, ...] = ("sms",),
                      marketing: bool | None = None) -> Patient:
    """A patient who wrote to the hospital before (an identity per channel, as the router leaves it)."""
    async with hub.sessions() as session:
        patient = Patient(given_name_en=first, given_name_ar=first_ar, family_name_en=family, phone=phone,
                          birth_date=born, preferred_language=language)
        session.add(patient)
        await session.flush()
        for channel in channels:
            address = ("" if channel != "webchat" else "web-") + (phone or str(patient.id))
            session.add(ChannelIdentity(patient_id=patient.id, channel=channel, address=address))
            session.add(Consent(patient_id=patient.id, channel=channel, purpose=ConsentPurpose.transactional,
                                status=ConsentStatus.granted, source=f"inbound:{channel}"))
            if marketing is not None:
                session.add(Consent(patient_id=patient.id, channel=channel, purpose=ConsentPurpose.marketing,
                                    status=ConsentStatus.granted if marketing else ConsentStatus.revoked,
                                    source="test"))
        await session.commit()
        return patient


async def eventually(check, timeout: float = 20.0):
    """Poll an async check until it returns something truthy."""
    for _ in range(int(timeout / 0.05)):
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")
