"""E-mail without a bot: inbound-parse webhooks in, a real SMTP server with STARTTLS out.

Rasa is unreachable here, so every new inbound mail gets one real reply through the outbox
("the reply will follow"), which the SMTP server captures."""
from __future__ import annotations

import asyncio
import io
import re
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
import pytest
from sqlalchemy import func, select

from bot import consent
from bot.app import HUB, create_app
from bot.outbox import queue_reply
from bot.settings import Settings
from channels.email import EmailAdapter, sign, strip_quoted
from crm_store.models import (
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    Message,
    Patient,
)
from tests.fakes.smtp_server import SmtpServer
from tests.fakes.tcp_proxy import _free_port

SECRET = "inbound-secret-for-tests"
DOMAIN = "reply.alnoor.example"
FROM = "care@alnoor.example"
PUBLIC = "https://sila.alnoor.example"
PATIENT = "sarah@patients.example"


class EmailSettings(Settings):
    smtp_ca_file: str = ""  # until bot/settings.py has it: the CA the adapter trusts for SMTP


@pytest.fixture
def smtp(tmp_path):
    server = SmtpServer(tmp_path, username="sila", password="smtp-pass").start()
    yield server
    server.stop()


def settings_for(store_url: str, smtp: SmtpServer, **extra) -> EmailSettings:
    values = dict(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=2,
                  replay_interval=3600, public_url=PUBLIC, smtp_host="127.0.0.1", smtp_port=smtp.port,
                  smtp_username="sila", smtp_password="smtp-pass", email_from=FROM, email_reply_domain=DOMAIN,
                  email_inbound_secret=SECRET, smtp_ca_file=str(smtp.cert))
    return EmailSettings(**{**values, **extra})


@pytest.fixture
async def client(aiohttp_client, store_url, smtp):
    return await aiohttp_client(create_app(settings_for(store_url, smtp), channels=("email",)))


def sendgrid(text: str, *, sender: str = f"Sarah Thompson <{PATIENT}>", to: str = f"Al Noor <{FROM}>",
             message_id: str | None = None, headers: str = "", subject: str = "Appointment",
             **extra) -> aiohttp.FormData:
    """A SendGrid Inbound Parse post (multipart, with one attachment, as SendGrid sends it)."""
    message_id = message_id or make_msgid(domain="patients.example")
    form = aiohttp.FormData(default_to_multipart=True)
    fields = {"from": sender, "to": to, "subject": subject, "text": text,
              "headers": f"Message-ID: {message_id}\nFrom: {sender}\nTo: {to}\nSubject: {subject}\n{headers}",
              "envelope": f'{{"to": ["{FROM}"], "from": "{PATIENT}"}}', "charsets": '{"text": "UTF-8"}',
              "SPF": "pass", **extra}
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("attachment1", b"%PDF-1.4 referral", filename="referral.pdf", content_type="application/pdf")
    return form


async def post(client, form, *, secret: str | None = SECRET, query: bool = False):
    if secret is None:
        return await client.post("/webhooks/email", data=form)
    if query:
        return await client.post(f"/webhooks/email?secret={secret}", data=form)
    return await client.post("/webhooks/email", data=form, headers={"X-Sila-Email-Secret": secret})


async def rows(client, *where) -> list[Message]:
    async with client.app[HUB].sessions() as session:
        return (await session.scalars(select(Message).where(*where).order_by(Message.id))).all()


async def settle(client, timeout: float = 20) -> list[Message]:
    """Every message once the router and the outbox are done with it."""
    for _ in range(int(timeout * 10)):
        found = await rows(client)
        if found and not any(m.status in ("received", "queued", "sending") for m in found):
            return found
        await asyncio.sleep(0.1)
    return await rows(client)


def parts(mail: EmailMessage) -> tuple[str, str]:
    return (mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content())


async def email_patient(client, address: str = PATIENT, language: str = "en") -> tuple[int, int]:
    """A patient known by e-mail with an open e-mail conversation: (patient id, conversation id)."""
    async with client.app[HUB].sessions() as session:
        patient = Patient(preferred_language=language, given_name_en="Sarah")
        session.add(patient)
        await session.flush()
        identity = ChannelIdentity(patient_id=patient.id, channel="email", address=address)
        session.add(identity)
        await session.flush()
        conversation = Conversation(patient_id=patient.id, identity_id=identity.id, channel="email",
                                    language=language)
        session.add(conversation)
        await session.commit()
        return patient.id, conversation.id


async def queue(client, conversation_id: int, text: str, **kwargs) -> int:
    async with client.app[HUB].sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        message = queue_reply(session, conversation, text, **kwargs)
        await session.commit()
        message_id = message.id
    await client.app[HUB].outbox.deliver([message_id])
    return message_id


# --- start-up -------------------------------------------------------------------------------------

@pytest.mark.parametrize("missing, env", [("smtp_host", "SILA_SMTP_HOST"), ("email_from", "SILA_EMAIL_FROM"),
                                          ("email_reply_domain", "SILA_EMAIL_REPLY_DOMAIN"),
                                          ("email_inbound_secret", "SILA_EMAIL_INBOUND_SECRET")])
def test_the_channel_refuses_to_start_without_its_settings(missing, env):
    values = dict(smtp_host="smtp.example", email_from=FROM, email_reply_domain=DOMAIN, email_inbound_secret=SECRET)
    settings = Settings(**{**values, missing: ""})
    with pytest.raises(ValueError, match=env):
        EmailAdapter.from_settings(settings, None)


# --- inbound: who may post, and what ---------------------------------------------------------------

@pytest.mark.parametrize("secret, query", [(None, False), ("wrong", False), ("wrong", True), ("", False),
                                           (SECRET[:-1], True)])
async def test_a_forged_or_missing_secret_is_refused_and_nothing_stored(client, smtp, secret, query):
    response = await post(client, sendgrid("I'd like an appointment"), secret=secret, query=query)
    assert response.status == 403
    await asyncio.sleep(0.3)
    assert await rows(client) == [] and smtp.received == []
    async with client.app[HUB].sessions() as session:
        assert await session.scalar(select(func.count(Patient.id))) == 0


@pytest.mark.parametrize("form, why", [
    ({"to": FROM, "text": "hello"}, "sender"),
    ({"from": "not an address", "text": "hello"}, "sender"),
    ({"from": PATIENT, "to": FROM, "subject": "no body at all"}, "body"),
    ({"from": PATIENT, "text": "hello", "envelope": "{broken"}, "JSON"),
])
async def test_a_malformed_post_is_400_and_nothing_stored(client, smtp, form, why):
    response = await post(client, aiohttp.FormData(form, default_to_multipart=True))
    assert response.status == 400 and why in await response.text()
    assert await rows(client) == []


async def test_a_body_that_is_not_a_form_is_400(client):
    response = await client.post("/webhooks/email", json={"from": PATIENT, "text": "hi"},
                                 headers={"X-Sila-Email-Secret": SECRET})
    assert response.status == 400
    assert await rows(client) == []


# --- inbound: stored once, answered by e-mail -----------------------------------------------------

async def test_a_new_mail_is_stored_and_answered_by_a_threaded_mail_over_starttls(client, smtp):
    message_id = make_msgid(domain="patients.example")
    response = await post(client, sendgrid("I'd like to book an appointment\n\nSarah", message_id=message_id),
                          query=True, secret=SECRET)
    assert response.status == 200
    (reply,) = await smtp.wait_for(1, PATIENT)
    stored = await settle(client)
    inbound, outbound = [m for m in stored if m.direction == "in"], [m for m in stored if m.direction == "out"]
    assert [(m.channel, m.provider_message_id, m.text) for m in inbound] == [
        ("email", message_id, "I'd like to book an appointment\n\nSarah")]
    assert len(outbound) == 1 and outbound[0].status == "sent"

    received = smtp.received[0]
    assert received.tls and received.authenticated_as == "sila" and received.rcpt_tos == [PATIENT]
    assert reply["Message-ID"] == outbound[0].provider_message_id
    assert reply["In-Reply-To"] == message_id and message_id in reply["References"]
    assert reply.get_content_type() == "multipart/alternative"
    assert reply["Subject"] == "Your conversation with Al Noor Specialist Hospital"
    assert reply["Auto-Submitted"] == "auto-replied" and "List-Unsubscribe" not in reply
    token = sign(SECRET, "reply", outbound[0].conversation_id)
    assert reply["Reply-To"].addresses[0].addr_spec == f"reply+{token}@{DOMAIN}"
    text, html = parts(reply)
    assert "the reply will follow" in text and "the reply will follow" in html
    assert '<html lang="en" dir="ltr">' in html
    async with client.app[HUB].sessions() as session:
        identity = await session.scalar(select(ChannelIdentity))
    assert (identity.channel, identity.address) == ("email", PATIENT)


async def test_a_retried_mail_is_stored_once_and_answered_once(client, smtp):
    message_id = make_msgid(domain="patients.example")
    first = await post(client, sendgrid("Can I see a dermatologist?", message_id=message_id))
    assert first.status == 200
    await smtp.wait_for(1, PATIENT)
    await settle(client)
    # The provider did not see our 200 in time and posts it again, several times at once.
    retries = await asyncio.gather(*(post(client, sendgrid("Can I see a dermatologist?", message_id=message_id))
                                     for _ in range(8)))
    assert [r.status for r in retries] == [200] * 8
    await asyncio.sleep(1)
    stored = await settle(client)
    assert len([m for m in stored if m.direction == "in"]) == 1
    assert len([m for m in stored if m.direction == "out"]) == 1 and len(smtp.received) == 1


async def test_the_same_new_mail_posted_8_times_at_once_is_stored_and_answered_once(client, smtp):
    message_id = make_msgid(domain="patients.example")
    responses = await asyncio.gather(*(post(client, sendgrid("hello", message_id=message_id)) for _ in range(8)))
    assert [r.status for r in responses] == [200] * 8
    await smtp.wait_for(1, PATIENT)
    await asyncio.sleep(1)
    stored = await settle(client)
    assert len([m for m in stored if m.direction == "in"]) == 1
    assert len(smtp.received) == 1


async def test_an_arabic_mail_is_answered_with_rtl_multipart_in_arabic(client, smtp):
    response = await post(client, sendgrid("ابغى احجز موعد عند دكتور قلب بكرة", subject="موعد"))
    assert response.status == 200
    (reply,) = await smtp.wait_for(1, PATIENT)
    assert reply.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in reply.iter_parts()] == ["text/plain", "text/html"]
    assert reply["Subject"] == "محادثتك مع مستشفى النور التخصصي"
    assert reply["Content-Language"] == "ar"
    text, html = parts(reply)
    assert "سيصلك الرد" in text and "سيصلك الرد" in html
    assert '<html lang="ar" dir="rtl">' in html and 'dir="rtl"' in html.split("<body", 1)[1][:20]
    assert reply["From"].addresses[0].display_name == "مستشفى النور التخصصي"
    await settle(client)


async def test_mailgun_fields_are_understood_too(client, smtp):
    message_id = make_msgid(domain="patients.example")
    form = aiohttp.FormData({
        "sender": PATIENT, "from": f"Sarah <{PATIENT}>", "recipient": FROM, "subject": "Re: hours",
        "body-plain": "What time do you open?\n\nOn Mon, 30 Nov 2026, Al Noor <care@alnoor.example> wrote:\n> Hi",
        "stripped-text": "What time do you open?", "Message-Id": message_id,
        "message-headers": f'[["Message-Id", "{message_id}"], ["Subject", "Re: hours"]]',
        "timestamp": "1764500000", "token": "abc", "signature": "def"}, default_to_multipart=True)
    assert (await post(client, form)).status == 200
    await smtp.wait_for(1, PATIENT)
    (inbound,) = [m for m in await settle(client) if m.direction == "in"]
    assert (inbound.text, inbound.provider_message_id) == ("What time do you open?", message_id)


async def test_a_mail_with_a_large_attachment_is_accepted(client, smtp):
    form = sendgrid("Here is my referral letter")
    form.add_field("attachment2", io.BytesIO(b"x" * (3 * 1024 * 1024)), filename="scan.jpg", content_type="image/jpeg")
    assert (await post(client, form)).status == 200  # above the app's 1 MB default for other routes
    await smtp.wait_for(1, PATIENT)
    (inbound,) = [m for m in await settle(client) if m.direction == "in"]
    assert inbound.text == "Here is my referral letter"


async def test_automatic_replies_are_not_answered(client, smtp):
    form = sendgrid("I am out of the office until Sunday.", headers="Auto-Submitted: auto-replied\n")
    assert (await post(client, form)).status == 200
    await asyncio.sleep(0.5)
    assert await rows(client) == [] and smtp.received == []


# --- threading --------------------------------------------------------------------------------------

QUOTED_EN = ("Sarah Thompson\n\nOn Mon, 30 Nov 2026 at 10:02, Al Noor Specialist Hospital <\n"
             "care@alnoor.example> wrote:\n> What is your full name?\n>\n> -- \n> Al Noor Specialist Hospital\n")


async def test_a_reply_lands_in_the_conversation_with_only_the_new_text(client, smtp):
    patient_id, conversation_id = await email_patient(client)
    await queue(client, conversation_id, "What is your full name?")
    (asked,) = await smtp.wait_for(1, PATIENT)
    reply_to = asked["Reply-To"].addresses[0].addr_spec
    form = sendgrid(QUOTED_EN, to=reply_to, subject="Re: " + asked["Subject"],
                    headers=f"In-Reply-To: {asked['Message-ID']}\nReferences: {asked['Message-ID']}\n")
    assert (await post(client, form)).status == 200
    await smtp.wait_for(2, PATIENT)
    (inbound,) = [m for m in await settle(client) if m.direction == "in"]
    assert (inbound.conversation_id, inbound.text) == (conversation_id, "Sarah Thompson")


async def test_a_reply_from_another_address_is_tied_to_the_patient_the_token_names(client, smtp):
    patient_id, conversation_id = await email_patient(client)
    await queue(client, conversation_id, "What is your full name?")
    (asked,) = await smtp.wait_for(1, PATIENT)
    other = "sarah.work@office.example"
    form = sendgrid(QUOTED_EN, sender=other, to=asked["Reply-To"].addresses[0].addr_spec)
    assert (await post(client, form)).status == 200
    await smtp.wait_for(1, other)
    (inbound,) = [m for m in await settle(client) if m.direction == "in"]
    async with client.app[HUB].sessions() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.address == other))
        conversation = await session.get(Conversation, inbound.conversation_id)
        assert await session.scalar(select(func.count(Patient.id))) == 1
    assert identity.patient_id == patient_id and conversation.patient_id == patient_id
    assert inbound.text == "Sarah Thompson"


async def test_the_same_reply_from_a_new_address_posted_8_times_at_once_is_stored_once(client, smtp):
    patient_id, conversation_id = await email_patient(client)
    await queue(client, conversation_id, "What is your full name?")
    (asked,) = await smtp.wait_for(1, PATIENT)
    other, message_id = "sarah.work@office.example", make_msgid(domain="office.example")
    responses = await asyncio.gather(*(
        post(client, sendgrid("Sarah Thompson", sender=other, message_id=message_id,
                              to=asked["Reply-To"].addresses[0].addr_spec)) for _ in range(8)))
    assert [r.status for r in responses] == [200] * 8
    await smtp.wait_for(1, other)
    await asyncio.sleep(1)
    assert len([m for m in await settle(client) if m.direction == "in"]) == 1
    assert len(smtp.messages_to(other)) == 1
    async with client.app[HUB].sessions() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.address == other))
    assert identity.patient_id == patient_id


async def test_in_reply_to_alone_threads_a_reply_sent_to_the_main_address(client, smtp):
    patient_id, conversation_id = await email_patient(client)
    await queue(client, conversation_id, "What is your full name?")
    (asked,) = await smtp.wait_for(1, PATIENT)
    other = "family@patients.example"
    form = sendgrid("Sarah Thompson", sender=other, headers=f"In-Reply-To: {asked['Message-ID']}\n")
    assert (await post(client, form)).status == 200
    await smtp.wait_for(1, other)
    async with client.app[HUB].sessions() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.address == other))
    assert identity.patient_id == patient_id
    await settle(client)


async def test_a_forged_reply_token_ties_nothing(client, smtp):
    patient_id, conversation_id = await email_patient(client)
    stranger = "stranger@elsewhere.example"
    forged = f"reply+{conversation_id}.{'0' * 20}@{DOMAIN}"
    assert (await post(client, sendgrid("show me her appointments", sender=stranger, to=forged))).status == 200
    await smtp.wait_for(1, stranger)
    async with client.app[HUB].sessions() as session:
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.address == stranger))
    assert identity.patient_id != patient_id
    await settle(client)


async def test_options_are_numbered_in_arabic_and_a_numbered_reply_picks_one(client, smtp):
    patient_id, conversation_id = await email_patient(client, language="ar")
    buttons = [{"title": "الأحد ١٠:٠٠ صباحًا", "payload": "2026-12-06T10:00:00+03:00"},
               {"title": "الأحد ١١:٠٠ صباحًا", "payload": "2026-12-06T11:00:00+03:00"}]
    await queue(client, conversation_id, "اختر موعدًا:", buttons=buttons, language="ar")
    (offer,) = await smtp.wait_for(1, PATIENT)
    text, html = parts(offer)
    assert "١. الأحد ١٠:٠٠ صباحًا" in text and "٢. الأحد ١١:٠٠ صباحًا" in text
    assert html.count('href="mailto:reply+') == 2 and "body=%D9%A2" in html  # «٢», URL-encoded
    reply = "٢\n\nفي الاثنين، ٣٠ نوفمبر ٢٠٢٦ ١٠:٠٢ ص، مستشفى النور التخصصي <care@alnoor.example> كتب:\n> اختر موعدًا:"
    form = sendgrid(reply, to=offer["Reply-To"].addresses[0].addr_spec)
    assert (await post(client, form)).status == 200
    await smtp.wait_for(2, PATIENT)
    (inbound,) = [m for m in await settle(client) if m.direction == "in"]
    assert (inbound.text, inbound.display) == ("2026-12-06T11:00:00+03:00", "٢")


def test_quoted_history_is_stripped():
    assert strip_quoted(QUOTED_EN) == "Sarah Thompson"
    assert strip_quoted("yes please\n\n> Shall I book it?\n> 1. Yes") == "yes please"
    assert strip_quoted("نعم\r\n\r\n\u202bفي الأحد، ٦ ديسمبر ٢٠٢٦ كتب مستشفى النور <care@alnoor.example>:\u202c\r\n"
                        "> هل أؤكد الحجز؟") == "نعم"
    outlook = ("14/03/1985\n\n________________________________\nFrom: Al Noor <care@alnoor.example>\n"
               "Sent: Monday, November 30, 2026 10:00\nTo: Sarah\nSubject: Date of birth\n\nYour date of birth?")
    assert strip_quoted(outlook) == "14/03/1985"
    assert strip_quoted("1\n\nSent from my iPhone") == "1"
    assert strip_quoted("On Sunday at 10 if possible\nthanks") == "On Sunday at 10 if possible\nthanks"


async def test_an_html_only_mail_is_read_without_its_quoted_block(client, smtp):
    form = aiohttp.FormData({
        "from": PATIENT, "to": FROM, "subject": "Re: hello",
        "html": '<div dir="ltr">When is my appointment?<br></div><div class="gmail_quote">'
                '<div>On Mon, Al Noor wrote:</div><blockquote>Old text<br>more</blockquote></div>',
        "headers": f"Message-ID: {make_msgid()}\n"}, default_to_multipart=True)
    assert (await post(client, form)).status == 200
    await smtp.wait_for(1, PATIENT)
    (inbound,) = [m for m in await settle(client) if m.direction == "in"]
    assert inbound.text == "When is my appointment?"


# --- promotional mail and unsubscribing ------------------------------------------------------------

async def _marketing_patient(client) -> tuple[int, int]:
    patient_id, conversation_id = await email_patient(client)
    async with client.app[HUB].sessions() as session:
        session.add(Consent(patient_id=patient_id, channel="email", purpose=ConsentPurpose.marketing,
                            status=ConsentStatus.granted, source="portal"))
        await session.commit()
    return patient_id, conversation_id


async def _marketing_consent(client, patient_id: int):
    async with client.app[HUB].sessions() as session:
        return await consent.current(session, patient_id, "email", ConsentPurpose.marketing)


async def test_marketing_mail_has_list_unsubscribe_and_the_one_click_post_revokes_consent(client, smtp):
    patient_id, conversation_id = await _marketing_patient(client)
    await queue(client, conversation_id, "Free heart screening this week.", purpose="marketing")
    (news,) = await smtp.wait_for(1, PATIENT)
    assert news["Subject"] == "News from Al Noor Specialist Hospital"
    assert news["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    mailto, url = re.findall(r"<([^>]+)>", news["List-Unsubscribe"])
    token = sign(SECRET, "unsubscribe", patient_id)
    assert mailto == f"mailto:unsubscribe+{token}@{DOMAIN}?subject=unsubscribe"
    assert url == f"{PUBLIC}/webhooks/email/unsubscribe?token={token}"
    text, html = parts(news)
    assert url in text and url.replace("&", "&amp;") in html

    path = urlsplit(url)._replace(scheme="", netloc="").geturl()
    page = await client.get(path)  # a link scanner, or the patient, opening the link
    assert page.status == 200 and 'method="post"' in await page.text()
    assert await _marketing_consent(client, patient_id) == ConsentStatus.granted

    response = await client.post(path, data={"List-Unsubscribe": "One-Click"})  # what Gmail's button sends
    assert response.status == 200
    assert await _marketing_consent(client, patient_id) == ConsentStatus.revoked

    later = await queue(client, conversation_id, "Another offer.", purpose="marketing")
    assert [m.status for m in await rows(client, Message.id == later)] == ["suppressed"]
    await queue(client, conversation_id, "Your appointment is tomorrow at 10:00.")
    assert len(await smtp.wait_for(2, PATIENT)) == 2  # appointment mail still goes out


async def test_a_forged_unsubscribe_token_changes_nothing(client, smtp):
    patient_id, _ = await _marketing_patient(client)
    for method in (client.get, client.post):
        response = await method(f"/webhooks/email/unsubscribe?token={patient_id}.{'a' * 20}")
        assert response.status == 403
    assert (await client.post("/webhooks/email/unsubscribe")).status == 403
    assert await _marketing_consent(client, patient_id) == ConsentStatus.granted


async def test_a_mail_to_the_unsubscribe_address_revokes_consent(client, smtp):
    patient_id, _ = await _marketing_patient(client)
    to = f"unsubscribe+{sign(SECRET, 'unsubscribe', patient_id)}@{DOMAIN}"
    assert (await post(client, sendgrid("unsubscribe", to=to))).status == 200
    assert await _marketing_consent(client, patient_id) == ConsentStatus.revoked
    await asyncio.sleep(0.3)
    assert await rows(client, Message.direction == "in") == [] and smtp.received == []


# --- SMTP failures -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stage, reply", [("RCPT", "550 5.1.1 <sarah@patients.example>: User unknown"),
                                          ("DATA", "554 5.7.1 Message rejected as spam")])
async def test_a_permanent_smtp_refusal_fails_the_message_without_retry(client, smtp, stage, reply):
    _, conversation_id = await email_patient(client)
    smtp.fail(stage, reply)
    message_id = await queue(client, conversation_id, "Your appointment is confirmed.")
    (row,) = await rows(client, Message.id == message_id)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.error.startswith(reply[:3] + ": SMTP " + reply[:3])
    await client.app[HUB].outbox.deliver([message_id])  # the outbox does not pick it up again
    assert smtp.received == [] and (await rows(client, Message.id == message_id))[0].attempts == 1


async def test_a_temporary_smtp_refusal_is_retried(client, smtp):
    _, conversation_id = await email_patient(client)
    smtp.fail("RCPT", "451 4.7.1 Greylisted, try again later")
    message_id = await queue(client, conversation_id, "Your appointment is confirmed.")
    (row,) = await rows(client, Message.id == message_id)
    assert (row.status, row.attempts) == ("queued", 1) and row.error.startswith("451")
    await client.app[HUB].outbox.deliver([message_id])  # the retry, when it falls due
    assert (await rows(client, Message.id == message_id))[0].status == "sent"
    assert len(smtp.received) == 1


async def test_an_unreachable_smtp_server_is_retried(aiohttp_client, store_url, smtp):
    client = await aiohttp_client(create_app(settings_for(store_url, smtp, smtp_port=_free_port()),
                                             channels=("email",)))
    _, conversation_id = await email_patient(client)
    message_id = await queue(client, conversation_id, "Your appointment is confirmed.")
    (row,) = await rows(client, Message.id == message_id)
    assert (row.status, row.error.split(":")[0]) == ("queued", "connection")


async def test_an_untrusted_certificate_is_not_sent_to(aiohttp_client, store_url, smtp):
    client = await aiohttp_client(create_app(settings_for(store_url, smtp, smtp_ca_file=""), channels=("email",)))
    _, conversation_id = await email_patient(client)
    message_id = await queue(client, conversation_id, "Your appointment is confirmed.")
    (row,) = await rows(client, Message.id == message_id)
    assert row.status == "queued" and "CERTIFICATE_VERIFY_FAILED" in row.error and smtp.received == []


# --- the replies of one turn are one mail -------------------------------------------------------------

def plain(mail: EmailMessage) -> str:
    return parts(mail)[0].replace("\r\n", "\n")


TIMES = [{"title": "Sun 10:00", "payload": "2026-12-06T10:00:00+03:00"},
         {"title": "Sun 11:00", "payload": "2026-12-06T11:00:00+03:00"}]


async def queue_turn(client, conversation_id: int, replies: list[dict]) -> list[int]:
    """Queue a turn's replies in one transaction and hand them to the outbox together, as the router does."""
    hub = client.app[HUB]
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        queued = [queue_reply(session, conversation, **reply) for reply in replies]
        await session.commit()
        ids = [m.id for m in queued]
    await hub.outbox.deliver(ids)
    return ids


async def test_the_replies_of_one_turn_go_out_as_one_mail(client, smtp):
    _, conversation_id = await email_patient(client)
    ids = await queue_turn(client, conversation_id, [
        {"text": "Thank you, Sarah."}, {"text": "Dr Khalid is free on Sunday."},
        {"text": "Which time suits you?", "buttons": TIMES}])
    assert len(smtp.received) == 1
    (mail,) = smtp.messages_to(PATIENT)
    text, html = plain(mail), parts(mail)[1]
    assert re.search(r"Thank you, Sarah\.\n\nDr Khalid is free on Sunday\.\n\nWhich time suits you\?\n\n"
                     r"1\. Sun 10:00\n2\. Sun 11:00", text), text
    assert "<p>Thank you, Sarah.</p><p>Dr Khalid is free on Sunday.</p><p>Which time suits you?</p>" in html
    sent = await rows(client, Message.id.in_(ids))
    assert [(m.status, m.attempts) for m in sent] == [("sent", 0)] * 3
    assert [m.provider_message_id for m in sent] == [mail["Message-ID"], None, None]
    # The patient answers the mail with a number: it picks from the options of that turn.
    form = sendgrid("2", to=mail["Reply-To"].addresses[0].addr_spec,
                    headers=f"In-Reply-To: {mail['Message-ID']}\n")
    assert (await post(client, form)).status == 200
    await smtp.wait_for(2, PATIENT)
    (answer,) = [m for m in await settle(client) if m.direction == "in"]
    assert (answer.conversation_id, answer.text, answer.display) == (conversation_id, TIMES[1]["payload"], "2")


@pytest.mark.parametrize("reply, statuses", [("550 5.1.1 <sarah@patients.example>: User unknown", "failed"),
                                             ("451 4.7.1 Greylisted, try again later", "queued")])
async def test_a_turn_refused_by_the_smtp_server_fails_or_waits_as_a_whole(client, smtp, reply, statuses):
    _, conversation_id = await email_patient(client)
    smtp.fail("RCPT", reply)
    ids = await queue_turn(client, conversation_id, [{"text": "Your appointment is confirmed."},
                                                     {"text": "Anything else?"}])
    refused = await rows(client, Message.id.in_(ids))
    assert [(m.status, m.attempts, m.error[:3]) for m in refused] == [(statuses, 1, reply[:3])] * 2
    assert smtp.received == []
    await client.app[HUB].outbox.deliver(ids)  # the retry, when it falls due
    after = await rows(client, Message.id.in_(ids))
    if statuses == "failed":
        assert smtp.received == [] and [m.status for m in after] == ["failed"] * 2
    else:
        (mail,) = smtp.messages_to(PATIENT)
        assert "Your appointment is confirmed.\n\nAnything else?" in plain(mail)
        assert [m.status for m in after] == ["sent"] * 2


async def test_options_end_a_mail_and_a_staff_message_is_its_own(client, smtp):
    _, conversation_id = await email_patient(client)
    await queue_turn(client, conversation_id, [
        {"text": "Which time suits you?", "buttons": TIMES}, {"text": "Or tell me another day."},
        {"text": "Sarah, I can also call you.", "sender": "staff"}])
    mails = smtp.messages_to(PATIENT)
    assert [plain(m).split("\n")[0] for m in mails] == [
        "Which time suits you?", "Or tell me another day.", "Sarah, I can also call you."]
    assert "Auto-Submitted" not in mails[2]  # a person wrote it


@pytest.fixture
async def chatty_rasa(aiohttp_server):
    """Rasa's REST channel answering every message with three messages, the last with options."""
    async def webhook(request: web.Request) -> web.Response:
        sender = (await request.json())["sender"]
        return web.json_response([{"recipient_id": sender, "text": "Thank you, Sarah."},
                                  {"recipient_id": sender, "text": "Dr Khalid is free on Sunday."},
                                  {"recipient_id": sender, "text": "Which time suits you?", "buttons": TIMES}])

    app = web.Application()
    app.router.add_post("/webhooks/rest/webhook", webhook)
    return await aiohttp_server(app)


async def test_a_bot_turn_of_three_messages_is_one_mail(aiohttp_client, store_url, smtp, chatty_rasa):
    client = await aiohttp_client(create_app(settings_for(store_url, smtp, rasa_url=str(chatty_rasa.make_url(""))),
                                             channels=("email",)))
    assert (await post(client, sendgrid("I'd like to see a cardiologist"))).status == 200
    (mail,) = await smtp.wait_for(1, PATIENT)
    stored = await settle(client)
    assert [(m.direction, m.status) for m in stored] == [("in", "answered")] + [("out", "sent")] * 3
    assert len(smtp.received) == 1
    assert "Thank you, Sarah.\n\nDr Khalid is free on Sunday.\n\nWhich time suits you?" in plain(mail)
