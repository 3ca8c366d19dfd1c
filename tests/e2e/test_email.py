"""A patient books an appointment by e-mail, in English and in Arabic, against the real Rasa server
and trained model: each answer is posted to the inbound-parse webhook as a reply quoting the mail
before it, and the bot's mails are read from a real SMTP server (STARTTLS)."""
from __future__ import annotations

import asyncio
import re
import time
from email.message import EmailMessage
from email.utils import make_msgid

import aiohttp
import pytest
from sqlalchemy import func, select

from crm_store.db import create_engine, sessionmaker
from crm_store.models import Appointment, AppointmentStatus, ChannelIdentity, Conversation, Message, Patient
from tests.e2e.test_webchat_flows import REFERENCE, SCRIPTS
from tests.fakes.smtp_server import SmtpServer
from tests.stack import Stack

pytestmark = pytest.mark.rasa
SECRET = "e2e-inbound-secret"
DOMAIN = "reply.alnoor.example"
HOSPITAL_MAIL = "care@alnoor.example"
QUOTE_HEADER = {
    "en": "On Mon, 30 Nov 2026 at 10:02, Al Noor Specialist Hospital <{sender}> wrote:",
    "ar": "في الاثنين، ٣٠ نوفمبر ٢٠٢٦ ١٠:٠٢ ص، مستشفى النور التخصصي <{sender}> كتب:",
}


@pytest.fixture(scope="module")
def smtp(tmp_path_factory):
    server = SmtpServer(tmp_path_factory.mktemp("smtp"), username="sila", password="smtp-pass").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def email_stack(tmp_path_factory, smtp):
    running = Stack.start(tmp_path_factory.mktemp("email-stack"), env={
        "SILA_CHANNELS": "webchat,email", "SILA_SMTP_HOST": "127.0.0.1", "SILA_SMTP_PORT": str(smtp.port),
        "SILA_SMTP_USERNAME": "sila", "SILA_SMTP_PASSWORD": "smtp-pass", "SILA_EMAIL_FROM": HOSPITAL_MAIL,
        "SILA_EMAIL_REPLY_DOMAIN": DOMAIN, "SILA_EMAIL_INBOUND_SECRET": SECRET,
        # The test server's self-signed certificate: the setting once it exists, OpenSSL's own
        # variable until then (the adapter's default SSL context reads it).
        "SILA_SMTP_CA_FILE": str(smtp.cert), "SSL_CERT_FILE": str(smtp.cert)})
    yield running
    running.stop()


@pytest.fixture
async def store(email_stack):
    engine = create_engine(email_stack.database_url)
    yield sessionmaker(engine)
    await engine.dispose()


class MailPatient:
    """A patient with a mail client: writes, then replies to the last mail, quoting it."""

    def __init__(self, http: aiohttp.ClientSession, stack: Stack, smtp: SmtpServer, store, address: str,
                 language: str):
        self.http, self.stack, self.smtp, self.store = http, stack, smtp, store
        self.address, self.language = address, language
        self.last: EmailMessage | None = None
        self.seen = 0

    async def write(self, text: str) -> list[EmailMessage]:
        """Send one mail (a reply to the last one, quoting it); the bot's answers to it."""
        message_id = make_msgid(domain="patients.example")
        headers = f"Message-ID: {message_id}\nFrom: {self.address}\n"
        to, subject = HOSPITAL_MAIL, "Appointment" if self.language == "en" else "موعد"
        if self.last is not None:
            to = self.last["Reply-To"].addresses[0].addr_spec
            subject = "Re: " + self.last["Subject"]
            quoted = "\n".join("> " + line for line in self.last.get_body(("plain",)).get_content().splitlines())
            header = QUOTE_HEADER[self.language].format(sender=HOSPITAL_MAIL)
            text = f"{text}\n\n{header}\n{quoted}\n"
            headers += f"In-Reply-To: {self.last['Message-ID']}\nReferences: {self.last['Message-ID']}\n"
        form = aiohttp.FormData(default_to_multipart=True)
        for name, value in {"from": self.address, "to": to, "subject": subject, "text": text,
                            "headers": headers + f"To: {to}\nSubject: {subject}\n",
                            "envelope": f'{{"to": ["{to}"], "from": "{self.address}"}}'}.items():
            form.add_field(name, value)
        async with self.http.post(f"{self.stack.base_url}/webhooks/email", data=form,
                                  headers={"X-Sila-Email-Secret": SECRET}) as response:
            assert response.status == 200, await response.text()
        await self._answered(message_id)
        replies = self.smtp.messages_to(self.address)[self.seen:]
        self.seen += len(replies)
        assert replies, f"no mail answered {text!r}"
        self.last = replies[-1]
        return replies

    async def _answered(self, message_id: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.store() as session:
                inbound = await session.scalar(select(Message).where(Message.channel == "email",
                                                                     Message.provider_message_id == message_id))
                if inbound is not None and inbound.status not in ("received", "pending_bot"):
                    pending = await session.scalar(select(func.count(Message.id)).where(
                        Message.conversation_id == inbound.conversation_id, Message.direction == "out",
                        Message.status.in_(("queued", "sending"))))
                    if pending == 0:
                        return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the bot did not answer {message_id} within {timeout}s")

    @staticmethod
    def text(replies: list[EmailMessage]) -> str:
        return "\n".join(r.get_body(("plain",)).get_content() for r in replies)


def _has_arabic(text: str) -> bool:
    return bool(re.search(r"[\u0600-\u06ff]", text))


@pytest.mark.parametrize("lang", ["en", "ar"])
async def test_a_patient_books_by_email(email_stack, smtp, store, lang):
    s = SCRIPTS[lang]
    address = f"patient.{lang}@patients.example"
    async with aiohttp.ClientSession() as http:
        patient = MailPatient(http, email_stack, smtp, store, address, lang)
        asked = MailPatient.text(await patient.write(s["book"]))
        assert any(w in asked.lower() for w in ("name", "اسم")), asked
        await patient.write(s["name"])
        offer = await patient.write(s["dob"])
        numbered = re.findall(r"^([1-9١-٩])\. ", MailPatient.text(offer), re.M)
        assert 1 <= len(numbered) <= 4, MailPatient.text(offer)
        assert numbered[0] == ("1" if lang == "en" else "١")
        html = offer[-1].get_body(("html",)).get_content()
        assert (f'<html lang="{lang}" dir="{"rtl" if lang == "ar" else "ltr"}">' in html) and "mailto:reply+" in html
        confirm = await patient.write(s["first"])
        assert len(re.findall(r"^[1-2١-٢]\. ", MailPatient.text(confirm), re.M)) == 2, MailPatient.text(confirm)
        booked_mails = await patient.write(s["yes"])
        booked = MailPatient.text(booked_mails)
        reference = REFERENCE.search(booked).group(0)
        assert _has_arabic(booked_mails[-1].get_body(("plain",)).get_content()) == (lang == "ar")
        assert booked_mails[-1]["Subject"] == (
            "Your conversation with Al Noor Specialist Hospital" if lang == "en" else "محادثتك مع مستشفى النور التخصصي")

    async with store() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.channel == "email",
                                                                      ChannelIdentity.address == address))
        patient_row = await session.get(Patient, identity.patient_id)
        appointments = (await session.scalars(select(Appointment).where(
            Appointment.patient_id == patient_row.id))).all()
        inbound = (await session.scalars(
            select(Message).join(Conversation).where(Conversation.patient_id == patient_row.id,
                                                     Message.direction == "in").order_by(Message.id))).all()
    assert patient_row.birth_date.isoformat() == "1985-03-14" and patient_row.display_name(lang) == s["name"]
    assert [(a.reference, a.status, a.source_channel) for a in appointments] == [
        (reference, AppointmentStatus.booked, "email")]
    # One conversation, five answered mails, each holding only what the patient wrote.
    assert len({m.conversation_id for m in inbound}) == 1 and len(inbound) == 5
    assert all(m.channel == "email" and m.status == "answered" for m in inbound)
    assert [m.display or m.text for m in inbound] == [s[k] for k in ("book", "name", "dob", "first", "yes")]
