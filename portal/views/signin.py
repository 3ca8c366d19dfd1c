"""Signing in: a phone number, a one-time code sent to it, and the date of birth.

The page answers the same whether or not the number is registered ("if this number is
registered, a code is on its way"), the limits apply to every number alike, and the code is sent
in the background so the answer takes as long either way."""
from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import defaultdict, deque
from urllib.parse import urlsplit

from aiohttp import web
from sqlalchemy import select, update

from actions.booking import parse_birth_date
from bot.outbox import queue_reply
from bot.texts import text
from crm_store import changes
from crm_store.content import load_hospital
from crm_store.models import Message, PortalCode, utcnow
from portal import codes, reach, sessions
from portal.phones import ascii_digits, masked, normalise
from portal.views.base import (LANGUAGES, anonymous_language, hub, patient_page, protect, render, safe_next,
                               strings)

PRE_CSRF = "sila_portal_pre"
# Sign-in requests per remote address in a sliding window, on top of the per-number limits.
WINDOW, PER_WINDOW = 300.0, 30
ATTEMPTS = web.AppKey("portal_sign_in_attempts", dict)
TASKS = web.AppKey("portal_tasks", set)
MASK = "••••••"
UNSENT = ("queued", "sending")


def _language(request: web.Request, form=None) -> str:
    lang = (form or {}).get("lang")
    return lang if lang in LANGUAGES else anonymous_language(request)


def _page(request: web.Request, template: str, lang: str, status: int = 200, **values) -> web.Response:
    token = request.cookies.get(PRE_CSRF) or secrets.token_urlsafe(24)
    response = render(request, template, status=status, lang=lang, pre_csrf=token, **values)
    response.set_cookie(PRE_CSRF, token, httponly=True, samesite="Strict", path="/portal")
    response.set_cookie("sila_portal_lang", lang, httponly=True, samesite="Lax", path="/portal")
    return protect(response)


async def _checked_form(request: web.Request):
    form = await request.post()
    if not sessions.csrf_ok(request.cookies.get(PRE_CSRF, ""), form.get("_csrf")):
        raise web.HTTPForbidden(text="missing or wrong CSRF token")
    window = request.app[ATTEMPTS][request.remote or "?"]
    now = time.monotonic()
    while window and now - window[0] > WINDOW:
        window.popleft()
    if len(window) >= PER_WINDOW:
        raise web.HTTPTooManyRequests(text=strings()[_language(request, form)]["too_many_requests"])
    window.append(now)
    return form


async def sign_in_page(request: web.Request) -> web.Response:
    return _page(request, "portal_sign_in.html", _language(request), next=safe_next(request.query.get("next")),
                 phone="", error=None)


def _code_text(hub_, code: str, lang: str) -> str:
    hospital = load_hospital(hub_.settings.hospital_file)["hospital"]
    host = urlsplit(hub_.settings.public_url).hostname
    # WebOTP: "@host #code" on the last line lets the phone offer the code on that site alone.
    return text("portal_code", lang, code=code, hospital=hospital[f"name_{lang}"],
                bind=f"\n\n@{host} #{code}" if host else "")


async def request_code(request: web.Request) -> web.Response:
    form = await _checked_form(request)
    lang = _language(request, form)
    h = hub(request)
    target = safe_next(form.get("next"))
    phone = normalise(str(form.get("phone", ""))[:40], h.settings.portal_phone_region)
    if phone is None:
        return _page(request, "portal_sign_in.html", lang, status=400, next=target, phone=form.get("phone", ""),
                     error="bad_phone")
    async with h.sessions() as session:
        issued = await codes.issue(session, phone, request.remote)
        patients = await reach.reachable_at(session, phone)
        sessions.audit(session, request, "portal", "portal:code_requested", outcome=issued.outcome,
                       patient_id=patients[0].id if patients else None, detail={"phone": masked(phone)})
        await session.commit()
    if issued.outcome != "sent":
        return _page(request, "portal_sign_in.html", lang, status=429, next=target, phone=phone,
                     error=issued.outcome)
    # Who the number belongs to and where the code goes is worked out after the answer, so the
    # answer takes as long for a number Sila knows as for one it does not.
    task = asyncio.create_task(_send_code(h, issued.row.id, issued.code, phone, lang))
    request.app[TASKS].add(task)
    task.add_done_callback(request.app[TASKS].discard)
    return _page(request, "portal_code.html", lang, next=target, phone=phone, error=None)


async def _send_code(h, code_id: int, code: str, phone: str, lang: str) -> None:
    """Queue the code on the number's SMS or WhatsApp (if anyone is registered with it), send it,
    then redact the stored copy."""
    async with h.sessions() as session:
        await redact_dead_codes(session)
        if await session.scalar(select(PortalCode.status).where(PortalCode.id == code_id)) != "live":
            await session.commit()
            return  # already replaced by a newer code (the patient asked twice in a hurry)
        patients = await reach.reachable_at(session, phone)
        route = await reach.code_route(session, phone, patients, h.adapters,
                                       h.settings.portal_whatsapp_code_template, lang)
        if route is None:
            await session.commit()
            return
        conversation, template = route
        filled = {**template, "variables": {"1": code}} if template else None
        message = queue_reply(session, conversation, _code_text(h, code, lang), sender="system", language=lang,
                              template=filled)
        await session.flush()
        await session.execute(update(PortalCode).where(PortalCode.id == code_id).values(message_id=message.id))
        await session.commit()
    await h.outbox.deliver([message.id])
    async with h.sessions() as session:
        await _redact(session, code_id, message.id, code)
        await session.commit()


async def _redact(session, code_id: int, message_id: int, code: str | None) -> None:
    """Once a code's message is out (or will never be), the stored copy — which staff and the EHR
    may read — loses the code."""
    message = await session.get(Message, message_id)
    if message is None or message.status in UNSENT:
        return  # still to be sent: the sweep comes back for it
    pattern = re.escape(code) if code else r"(?<!\d)\d{6}(?!\d)"
    redacted = re.sub(pattern, MASK, message.text or "")
    template = message.template
    if template and template.get("variables"):
        template = {**template, "variables": {k: MASK for k in template["variables"]}}
    if redacted != message.text or template != message.template:
        message.text, message.template = redacted, template
        changes.queue(session, "Communication", message.id)  # the copy already written is replaced
    await session.execute(update(PortalCode).where(PortalCode.id == code_id).values(redacted_at=utcnow()))


async def redact_dead_codes(session) -> None:
    """Codes that died (used, replaced, locked, expired) before their message was redacted: a
    message still waiting to go is never sent, and what was sent is redacted."""
    now = utcnow()
    dead = (await session.execute(select(PortalCode.id, PortalCode.message_id).where(
        PortalCode.message_id.is_not(None), PortalCode.redacted_at.is_(None),
        (PortalCode.status != "live") | (PortalCode.expires_at < now)))).all()
    if not dead:
        return
    await session.execute(update(Message).where(Message.id.in_([m for _, m in dead]), Message.status == "queued")
                          .values(status="failed", error="sign-in code no longer valid; not sent"))
    for code_id, message_id in dead:
        await _redact(session, code_id, message_id, None)


async def verify(request: web.Request) -> web.StreamResponse:
    form = await _checked_form(request)
    lang = _language(request, form)
    h = hub(request)
    target = safe_next(form.get("next"))
    phone = normalise(str(form.get("phone", ""))[:40], h.settings.portal_phone_region)
    if phone is None:
        return _page(request, "portal_sign_in.html", lang, status=400, next=target, phone="", error="bad_phone")
    code = re.sub(r"\D", "", ascii_digits(str(form.get("code", ""))))[:6]
    born = parse_birth_date(ascii_digits(str(form.get("birth_date", ""))[:40]))
    async with h.sessions() as session:
        async def same_birth_date():
            if born is None:
                return None
            return next((p for p in await reach.reachable_at(session, phone) if p.birth_date == born), None)

        outcome, patient = await codes.verify(session, phone, code, same_birth_date)
        token = None
        if outcome == "ok":
            await sessions.end(session, request.cookies.get(sessions.COOKIE))
            token, _ = await sessions.start(session, patient.id, lang)
        sessions.audit(session, request, f"patient:{patient.id}" if patient else "portal", "portal:sign_in",
                       outcome=outcome, patient_id=patient.id if patient else None, detail={"phone": masked(phone)})
        await session.commit()
    if token is None:
        return _page(request, "portal_code.html", lang, status=429 if outcome == "locked" else 401,
                     next=target, phone=phone, error=outcome)
    response = web.HTTPFound(target)
    sessions.set_cookie(response, request, token)
    response.del_cookie(PRE_CSRF, path="/portal")
    raise response


@patient_page
async def sign_out(request: web.Request) -> web.StreamResponse:
    async with hub(request).sessions() as session:
        await sessions.end(session, request.cookies.get(sessions.COOKIE))
        await session.commit()
    response = web.HTTPFound("/portal/sign-in")
    response.del_cookie(sessions.COOKIE, path="/portal")
    raise response


def setup(app: web.Application) -> None:
    app[ATTEMPTS] = defaultdict(deque)
    app[TASKS] = set()
    app.router.add_routes([
        web.get("/portal/sign-in", sign_in_page),
        web.post("/portal/sign-in", request_code),
        web.post("/portal/verify", verify),
        web.post("/portal/sign-out", sign_out),
    ])
