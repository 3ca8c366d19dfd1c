"""A patient's phone for end-to-end tests: signed Twilio webhooks into Sila, replies read from
what the fake Twilio REST API was asked to send."""
from __future__ import annotations

import asyncio
import re
import time
import uuid

import aiohttp
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from crm_store.models import Message
from tests.fakes.twilio_server import FakeTwilio
from tests.stack import Stack

SID, TOKEN = "AC" + "e" * 32, "e2e-auth-token"
PUBLIC = "https://sila.example"  # Sila sits behind a proxy; Twilio signs the public URL
SMS_FROM, WA_FROM = "+15005550006", "whatsapp:+14155238886"
REFERENCE = re.compile(r"SL-[A-Z0-9]{6}")
OPTION = re.compile(r"^(\d+)\. (.+)$", re.M)


def options(reply: str) -> list[str]:
    return [title for _, title in OPTION.findall(reply)]


def twilio_env(fake: FakeTwilio, channels: str = "webchat,sms,whatsapp") -> dict[str, str]:
    """The settings of a Sila that serves SMS and WhatsApp through the fake Twilio."""
    return {"SILA_CHANNELS": channels, "SILA_PUBLIC_URL": PUBLIC,
            "SILA_TWILIO_ACCOUNT_SID": SID, "SILA_TWILIO_AUTH_TOKEN": TOKEN, "SILA_TWILIO_API_URL": fake.url,
            "SILA_TWILIO_SMS_FROM": SMS_FROM, "SILA_TWILIO_WHATSAPP_FROM": WA_FROM, "SILA_SMS_RATE": "10"}


class Phone:
    """A patient's phone writing to the hospital's number (SMS) or WhatsApp sender."""

    def __init__(self, stack: Stack, fake: FakeTwilio, store, channel: str, number: str):
        self.stack, self.fake, self.store, self.number = stack, fake, store, number
        self.address = ("whatsapp:" if channel == "whatsapp" else "") + number
        self.to = WA_FROM if channel == "whatsapp" else SMS_FROM

    async def say(self, text: str, timeout: float = 60) -> list[str]:
        """Send one message through the signed webhook; the replies Twilio was asked to send."""
        before = len(self.fake.sent_to(self.address))
        sid = "SM" + uuid.uuid4().hex
        params = {"MessageSid": sid, "SmsMessageSid": sid, "AccountSid": SID, "From": self.address,
                  "To": self.to, "Body": text, "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01"}
        path = "/webhooks/twilio/messages"
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
        async with aiohttp.ClientSession() as http:
            async with http.post(self.stack.base_url + path, data=params,
                                 headers={"X-Twilio-Signature": signature}) as response:
                assert response.status == 200 and response.content_type == "text/xml", await response.text()
        await self._answered(sid, timeout)
        return [m.get("Body") for m in self.fake.sent_to(self.address)[before:]]

    async def _answered(self, sid: str, timeout: float) -> None:
        """Wait until the bot has answered `sid` and the outbox has handed every reply to Twilio."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.store() as session:
                message = await session.scalar(select(Message).where(Message.provider_message_id == sid))
                pending = message is not None and await session.scalar(
                    select(Message.id).where(Message.conversation_id == message.conversation_id,
                                             Message.direction == "out",
                                             Message.status.in_(("queued", "sending"))).limit(1))
            if message is not None and message.status != "received" and not pending:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"no answer to {sid} within {timeout}s")
