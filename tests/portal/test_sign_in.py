"""Signing in to the portal: a code by SMS or WhatsApp plus the date of birth; wrong, expired and
reused codes refused; five wrong tries lock the sixth; sessions, CSRF and the audit trail."""
from __future__ import annotations

import re
from datetime import date, timedelta
from urllib.parse import unquote

from sqlalchemy import func, select, update

from crm_store.models import AuditEntry, Conversation, Message, PortalCode, PortalSession, utcnow
from tests.portal.conftest import add_patient, eventually
from tests.portal.helpers import PortalUser, csrf_in

PHONE, BORN = "+966501234567", date(1985, 3, 14)


async def test_a_code_by_sms_and_the_date_of_birth_sign_a_patient_in(client, hub, fake):
    patient = await add_patient(hub, PHONE, BORN, language="ar", first="Amal", first_ar="أمل")
    user = PortalUser(client, fake)
    # Typed the way Saudi patients write it: national format, Arabic-Indic digits.
    page = await user.request_code("٠٥٠ ١٢٣ ٤٥٦٧", lang="ar")
    assert page.status == 200 and "6" in await page.text()
    sms = (await fake.wait_for(lambda m: m))[0]
    assert sms.get("To") == PHONE and "بوابة المريض" in sms.get("Body")
    assert sms.get("Body").rstrip().endswith("@sila.example #" + await user.code_for(PHONE))  # WebOTP binding
    code = await user.code_for(PHONE)

    response = await user.verify("0501234567", code, "14/03/1985", lang="ar")
    assert response.status == 302 and response.headers["Location"] == "/portal"
    cookie = response.cookies["sila_portal"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/portal"
    home = await client.get("/portal")
    assert home.status == 200 and "أمل" in await home.text()

    async with hub.sessions() as session:
        row = await session.scalar(select(PortalCode))
        assert code not in row.code_hash and row.code_hash.startswith("$argon2id$") and row.status == "used"

        async def redacted():
            message = await session.scalar(select(Message).where(Message.id == row.message_id)
                                           .execution_options(populate_existing=True))
            return code not in message.text and "••••••" in message.text
        await eventually(redacted)  # staff and the EHR never read a live code
        actions = [(a.action, a.outcome, a.patient_id, a.username) for a in
                   (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()]
    assert ("portal:code_requested", "sent", patient.id, "portal") in actions
    assert ("portal:sign_in", "ok", patient.id, f"patient:{patient.id}") in actions
    assert ("portal:home", "ok", patient.id, f"patient:{patient.id}") in actions


async def test_an_unregistered_number_gets_the_same_answer_and_no_message(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    known = await (await user.request_code(PHONE)).text()
    unknown = await (await user.request_code("+966509999999")).text()

    def visible(html: str) -> str:
        return re.sub(r'value="[^"]*"|\+\d+', "", html)
    assert visible(known) == visible(unknown)
    await fake.wait_for(lambda m: len(m) == 1)
    assert not fake.sent_to("+966509999999")
    # Whatever is typed for it, no one signs in with an unregistered number.
    wrong = await user.verify("+966509999999", "123456", BORN)
    assert wrong.status == 401
    async with hub.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(PortalCode)) == 2


async def test_wrong_expired_and_reused_codes_are_refused(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.request_code(PHONE)
    code = await user.code_for(PHONE)
    wrong = f"{(int(code) + 1) % 10 ** 6:06d}"
    refused = await user.verify(PHONE, wrong, BORN)
    assert refused.status == 401 and "not right" in await refused.text()

    async with hub.sessions() as session:  # ten minutes later
        await session.execute(update(PortalCode).values(expires_at=utcnow() - timedelta(seconds=1)))
        await session.commit()
    assert (await user.verify(PHONE, code, BORN)).status == 401

    await user.request_code(PHONE)
    fresh = await user.code_for(PHONE, 2)
    assert (await user.verify(PHONE, fresh, BORN)).status == 302
    user.sign_out_locally()
    await client.get("/portal/sign-in")
    again = await user.verify(PHONE, fresh, BORN)
    assert again.status == 401 and "sila_portal" not in again.cookies


async def test_a_new_code_replaces_the_old_one(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.request_code(PHONE)
    first = await user.code_for(PHONE)
    await user.request_code(PHONE)
    second = await user.code_for(PHONE, 2)
    if first != second:
        assert (await user.verify(PHONE, first, BORN)).status == 401
    assert (await user.verify(PHONE, second, BORN)).status == 302


async def test_five_wrong_tries_lock_out_the_sixth_then_a_cool_down(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.request_code(PHONE)
    code = await user.code_for(PHONE)
    wrong = f"{(int(code) + 7) % 10 ** 6:06d}"
    statuses = [(await user.verify(PHONE, wrong, BORN)).status for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    sixth = await user.verify(PHONE, code, BORN)  # the right code, too late
    assert sixth.status == 429 and "15 minutes" in await sixth.text()
    # No new code during the cool-down either, whoever asks.
    asked = await user.request_code(PHONE)
    assert asked.status == 429 and len(fake.sent_to(PHONE)) == 1

    async with hub.sessions() as session:  # a quarter of an hour later
        await session.execute(update(PortalCode).values(finished_at=utcnow() - timedelta(minutes=16)))
        await session.commit()
    await user.request_code(PHONE)
    assert (await user.verify(PHONE, await user.code_for(PHONE, 2), BORN)).status == 302
    async with hub.sessions() as session:
        outcomes = (await session.scalars(select(AuditEntry.outcome).where(AuditEntry.action == "portal:sign_in")
                                          .order_by(AuditEntry.id))).all()
    assert outcomes == ["wrong"] * 4 + ["locked", "locked", "ok"]


async def test_a_wrong_date_of_birth_is_a_wrong_try(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.request_code(PHONE)
    code = await user.code_for(PHONE)
    refused = await user.verify(PHONE, code, date(1985, 3, 15))
    assert refused.status == 401
    async with hub.sessions() as session:
        assert await session.scalar(select(PortalCode.attempts)) == 1
    assert (await user.verify(PHONE, code, BORN)).status == 302


async def test_at_most_five_codes_an_hour_per_number(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    for _ in range(5):
        assert (await user.request_code(PHONE)).status == 200
    sixth = await user.request_code(PHONE)
    assert sixth.status == 429 and "in an hour" in await sixth.text()
    await fake.wait_for(lambda m: len(m) == 5)
    # The same for a number nobody registered: the limit tells nothing about who is known.
    for _ in range(5):
        await user.request_code("+966509999999")
    assert (await user.request_code("+966509999999")).status == 429


async def test_a_family_phone_the_date_of_birth_says_who(client, hub, fake):
    mother = await add_patient(hub, PHONE, BORN, first="Huda")
    child = await add_patient(hub, PHONE, date(2015, 9, 1), first="Sami", channels=())
    user = PortalUser(client, fake)
    await user.request_code(PHONE)
    assert (await user.verify(PHONE, await user.code_for(PHONE), date(2015, 9, 1))).status == 302
    home = await (await client.get("/portal")).text()
    assert "Sami" in home and "Huda" not in home
    async with hub.sessions() as session:
        assert await session.scalar(select(PortalSession.patient_id)) == child.id != mother.id


async def test_every_sign_in_starts_a_new_session_and_sign_out_ends_it(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    first = client.session.cookie_jar.filter_cookies(client.make_url("/portal/"))["sila_portal"].value
    await user.sign_in(PHONE, BORN)
    second = client.session.cookie_jar.filter_cookies(client.make_url("/portal/"))["sila_portal"].value
    assert first != second
    async with hub.sessions() as session:
        rows = (await session.scalars(select(PortalSession).order_by(PortalSession.id))).all()
    assert [r.ended_at is None for r in rows] == [False, True]  # signing in again ended the first

    out = await user.post("/portal/sign-out")
    assert out.status == 302 and out.headers["Location"] == "/portal/sign-in"
    client.session.cookie_jar.update_cookies({"sila_portal": second})  # a stolen copy of the cookie
    assert (await client.get("/portal", allow_redirects=False)).status == 302


async def test_idle_sessions_end(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    assert (await client.get("/portal/appointments", allow_redirects=False)).status == 200
    async with hub.sessions() as session:
        await session.execute(update(PortalSession).values(last_seen_at=utcnow() - timedelta(minutes=16)))
        await session.commit()
    response = await client.get("/portal/appointments", allow_redirects=False)
    assert response.status == 302
    assert unquote(response.headers["Location"]) == "/portal/sign-in?next=/portal/appointments"


async def test_state_changes_need_the_csrf_token(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    # The sign-in forms carry their own token (double submit): a forged form sends no code.
    assert (await client.post("/portal/sign-in", data={"phone": PHONE})).status == 403
    assert not fake.messages
    await user.sign_in(PHONE, BORN)
    for data in ({}, {"_csrf": "forged"}):
        response = await client.post("/portal/messages", data={"text": "hello", **data}, allow_redirects=False)
        assert response.status == 403
    async with hub.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Message).where(Message.direction == "in")) == 0
        refused = await session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "portal:send", AuditEntry.outcome == "refused:403"))
    assert refused == 2
    assert (await user.post("/portal/messages", {"text": "hello", "nonce": "n1"})).status == 302


async def test_a_portal_session_is_not_a_staff_session(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    token = client.session.cookie_jar.filter_cookies(client.make_url("/portal/"))["sila_portal"].value
    client.session.cookie_jar.update_cookies({"sila_console": token})
    assert (await client.get("/console", allow_redirects=False)).status == 302  # to the staff sign-in


async def test_the_code_goes_by_whatsapp_when_the_patient_writes_there(client, hub, fake):
    patient = await add_patient(hub, PHONE, BORN, channels=("sms", "whatsapp"))
    async with hub.sessions() as session:  # they wrote on WhatsApp an hour ago: the window is open
        from portal.reach import open_conversation
        from crm_store.models import ChannelIdentity
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.channel == "whatsapp"))
        identity.last_seen_at = utcnow()
        conversation = await open_conversation(session, identity, "en")
        conversation.last_inbound_at = utcnow() - timedelta(hours=1)
        await session.commit()
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN, address="whatsapp:" + PHONE)
    assert not fake.sent_to(PHONE)

    async with hub.sessions() as session:  # two days later the window is closed: SMS instead
        await session.execute(update(Conversation).where(Conversation.patient_id == patient.id)
                              .values(last_inbound_at=utcnow() - timedelta(days=2)))
        await session.commit()
    user.sign_out_locally()
    await user.sign_in(PHONE, BORN)
    assert len(fake.sent_to(PHONE)) == 1 and len(fake.sent_to("whatsapp:" + PHONE)) == 1


async def test_sign_in_pages_are_right_to_left_in_arabic(client):
    arabic = await (await client.get("/portal/sign-in?lang=ar")).text()
    english = await (await client.get("/portal/sign-in?lang=en")).text()
    assert 'dir="rtl"' in arabic and "رقم الجوال" in arabic
    assert 'dir="ltr"' in english and "Mobile number" in english
    assert csrf_in(arabic)


async def test_outside_the_whatsapp_window_an_approved_template_carries_the_code(aiohttp_client, store_url, fake):
    from bot.app import HUB, create_app
    from tests.portal.conftest import settings_for

    app = create_app(settings_for(store_url, fake, portal_whatsapp_code_template="HX" + "c" * 32),
                     channels=("sms", "whatsapp"))
    client = await aiohttp_client(app)
    hub = client.app[HUB]
    await add_patient(hub, PHONE, BORN, channels=("whatsapp",))  # last seen on WhatsApp, long ago
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN, address="whatsapp:" + PHONE)
    sent = fake.sent_to("whatsapp:" + PHONE)[0]
    assert sent.get("ContentSid") == "HX" + "c" * 32 and sent.get("Body") is None
    async with hub.sessions() as session:
        async def redacted():
            message = await session.scalar(select(Message).where(Message.template.is_not(None))
                                           .execution_options(populate_existing=True))
            return message.template["variables"] == {"1": "••••••"}
        await eventually(redacted)


async def test_a_code_that_died_before_it_could_be_sent_is_never_sent(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    fake.fail_next(1)  # Twilio has a bad moment: the first code waits in the outbox for a retry
    await user.request_code(PHONE)

    async def waiting():
        async with hub.sessions() as session:
            return await session.scalar(select(Message).where(Message.status == "queued", Message.attempts == 1))
    first = await eventually(waiting)
    await user.request_code(PHONE)  # the patient asks again: the first code is replaced
    await user.code_for(PHONE)
    async with hub.sessions() as session:
        dead = await session.get(Message, first.id)
    assert dead.status == "failed" and "not sent" in dead.error and "••••••" in dead.text
    assert not re.search(r"(?<!\d)\d{6}(?!\d)", dead.text)
    await hub.outbox.deliver([first.id])
    assert len(fake.sent_to(PHONE)) == 1  # only the new code ever went out


async def test_portal_pages_are_not_cached_or_framed(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    for path in ("/portal/sign-in", "/portal", "/portal/health", "/portal/data/export"):
        response = await client.get(path)
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["X-Frame-Options"] == "DENY", path
