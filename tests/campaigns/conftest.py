"""A Sila app on SQLite and PostgreSQL with SMS and WhatsApp pointed at the fake Twilio server."""
from __future__ import annotations

import asyncio

import pytest

from bot.app import HUB, create_app
from bot.settings import Settings
from campaigns.runtime import CAMPAIGNS
from tests.fakes.tcp_proxy import _free_port
from tests.fakes.twilio_server import FakeTwilio

SID, TOKEN = "AC" + "6" * 32, "campaign-auth-token"
SMS_FROM, WA_FROM = "+15005550006", "whatsapp:+14155238886"


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
                  campaign_lease=5, automation_interval=3600,
                  # No quiet hours unless a test asks for them (these tests run at any hour).
                  campaign_quiet_start=0, campaign_quiet_end=0)
    return Settings(**{**values, **extra})


@pytest.fixture
async def client(aiohttp_client, store_url, fake):
    return await aiohttp_client(create_app(settings_for(store_url, fake), channels=("sms", "whatsapp")))


@pytest.fixture
def hub(client):
    return client.app[HUB]


@pytest.fixture
def runtime(client):
    return client.app[CAMPAIGNS]


async def eventually(check, timeout: float = 20.0):
    """Poll an async check until it returns something truthy."""
    for _ in range(int(timeout / 0.05)):
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def patient_says(client, phone: str, text: str, channel: str = "sms"):
    """An SMS (or WhatsApp message) from the patient, signed as Twilio signs its webhooks."""
    from twilio.request_validator import RequestValidator
    import uuid

    sender = f"whatsapp:{phone}" if channel == "whatsapp" else phone
    params = {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": SID, "From": sender,
              "To": WA_FROM if channel == "whatsapp" else SMS_FROM, "Body": text, "NumMedia": "0"}
    path = "/webhooks/twilio/messages"
    signature = RequestValidator(TOKEN).compute_signature("https://sila.example" + path, params)
    response = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status == 200, await response.text()


def bodies_to(fake, phone: str) -> list[str]:
    return [m.get("Body") for m in fake.sent_to(phone)]
