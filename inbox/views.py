"""The staff console: sign-in, the handoff inbox, a conversation with the patient's profile,
replies, internal notes, claim and resolve, live updates, and the audit log for admins."""
from __future__ import annotations

import asyncio
import inspect
import re
import secrets
import time
from collections import defaultdict, deque
from functools import lru_cache
from pathlib import Path

import aiohttp_jinja2
import yaml
from aiohttp import WSMsgType, web
from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from bot.outbox import queue_reply
from bot.router import topic
from crm_store.models import (
    Appointment,
    AuditEntry,
    ChannelIdentity,
    Consent,
    Conversation,
    ConversationStatus,
    Department,
    JourneyEvent,
    Message,
    Patient,
    Practitioner,
    StaffRole,
    StaffUser,
    utcnow,
)
from crm_store.content import load_hospital
from ehr.clinical import clinical_summary
from inbox import security
from inbox.security import CSRF, INBOX_ROLES, STAFF, audit, requires
import surveys.dispatch

CONSOLE_TOPIC = "console"
TEMPLATES = Path(__file__).with_name("templates")
LOGIN_CSRF = "sila_login_csrf"
# Sign-in attempts per remote address in a sliding window, on top of the per-account lockout.
LOGIN_WINDOW, LOGIN_ATTEMPTS = 300.0, 20
ATTEMPTS = web.AppKey("login_attempts", dict)
STRINGS = {
    "en": {"inbox": "Inbox", "needs_human": "Needs a person", "mine": "Mine", "unassigned": "Unassigned",
           "urgent": "Urgent", "all": "All open", "search": "Search name or phone", "claim": "Claim",
           "reply": "Send to patient", "note": "Add internal note", "resolve": "Resolve (bot takes over)",
           "waiting": "waiting", "sign_in": "Sign in", "sign_out": "Sign out", "username": "Username",
           "password": "Password", "bad_login": "Wrong username or password.",
           "locked": "Too many failed attempts. Try again in 15 minutes.", "profile": "Patient",
           "clinical": "Clinical summary (from the EHR)", "patient_relations": "Patient relations",
           "appointments": "Appointments", "identities": "Channels and consent", "journey": "Journey",
           "empty": "No conversations here.", "audit": "Audit log", "assigned": "Assigned to",
           "note_label": "Internal note (never sent)", "over_target": "over target",
           "canned": "Canned reply…", "assign": "Assign to", "assign_button": "Assign",
           "team": "Team", "all_teams": "All teams", "transfer": "Transfer to team"},
    "ar": {"inbox": "صندوق المحادثات", "needs_human": "بانتظار موظف", "mine": "محادثاتي", "unassigned": "غير مسندة",
           "urgent": "عاجلة", "all": "كل المفتوحة", "search": "ابحث بالاسم أو الجوال", "claim": "استلام",
           "reply": "إرسال للمريض", "note": "إضافة ملاحظة داخلية", "resolve": "إنهاء (يعود المساعد)",
           "waiting": "انتظار", "sign_in": "تسجيل الدخول", "sign_out": "تسجيل الخروج", "username": "اسم المستخدم",
           "password": "كلمة المرور", "bad_login": "اسم المستخدم أو كلمة المرور غير صحيحة.",
           "locked": "محاولات كثيرة فاشلة. حاول بعد ١٥ دقيقة.", "profile": "المريض",
           "clinical": "الملخص السريري (من السجل الطبي)", "patient_relations": "علاقات المرضى",
           "appointments": "المواعيد", "identities": "القنوات والموافقات", "journey": "رحلة المريض",
           "empty": "لا توجد محادثات هنا.", "audit": "سجل التدقيق", "assigned": "مسندة إلى",
           "note_label": "ملاحظة داخلية (لا تُرسل)", "over_target": "تجاوز الهدف",
           "canned": "رد جاهز…", "assign": "إسناد إلى", "assign_button": "إسناد",
           "team": "الفريق", "all_teams": "كل الفرق", "transfer": "تحويل إلى فريق"},
}
SERVICE_TARGET_MINUTES = 5
CANNED_FILE = Path(__file__).with_name("canned.yml")
# Handing a conversation to someone else is a supervisor's call; an agent only claims for themself.
ASSIGNERS = (StaffRole.supervisor, StaffRole.admin)


@lru_cache
def load_canned(path: Path = CANNED_FILE) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


class _Blank(dict):
    """A variable the record lacks reads as empty rather than failing the page."""

    def __missing__(self, key: str) -> str:
        return ""


def fill(template: str, values: dict) -> str:
    try:
        text = template.format_map(_Blank(values))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template  # a malformed template is shown as written, for the agent to fix by hand
    # An empty variable leaves "Hello , …": close the gap before punctuation.
    return re.sub(r" {2,}", " ", re.sub(r"\s+([,.،؛؟?!])", r"\1", text)).strip()


def canned_replies(language: str, patient: Patient, agent: StaffUser, hospital: dict) -> list[dict]:
    """The canned replies in the patient's language, variables filled from their record."""
    lang = "ar" if language == "ar" else "en"
    first_name = getattr(patient, f"given_name_{lang}") or ""
    values = {"first_name": first_name, "agent": agent.display_name or agent.username,
              "hospital": hospital.get(f"name_{lang}") or "", "hospital_phone": hospital.get("phone") or "",
              "address": hospital.get(f"address_{lang}") or "", "maps_url": hospital.get("maps_url") or ""}
    return [{"key": key, "title": (entry.get("title") or {}).get(agent.language, key),
             "text": fill(str(entry.get(lang) or ""), values)}
            for key, entry in load_canned().items()]


def _hub(request: web.Request):
    from bot.app import HUB

    return request.app[HUB]


def _ctx(request: web.Request, **values) -> dict:
    user = request.get(STAFF)
    lang = user.language if user else request.query.get("lang", "ar")
    return {"t": STRINGS["ar" if lang == "ar" else "en"], "lang": lang, "user": user,
            "csrf": request.get(CSRF), **values}


async def login_page(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = aiohttp_jinja2.render_template("console_login.html", request,
                                              _ctx(request, login_csrf=token, error=None))
    response.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="Strict", path="/console")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not security.csrf_ok(request.cookies.get(LOGIN_CSRF, ""), form.get("_csrf")):
        raise web.HTTPForbidden(text="missing or wrong CSRF token")
    remote = request.remote or "?"
    window = request.app[ATTEMPTS][remote]
    now = time.monotonic()
    while window and now - window[0] > LOGIN_WINDOW:
        window.popleft()
    if len(window) >= LOGIN_ATTEMPTS:
        raise web.HTTPTooManyRequests(text="too many sign-in attempts; wait a few minutes")
    window.append(now)
    hub = _hub(request)
    username = str(form.get("username", ""))[:64]
    async with hub.sessions() as session:
        user, outcome = await security.authenticate(session, username, str(form.get("password", "")))
        audit(session, request, user, "login", outcome=outcome, username=username)
        token = None
        if user is not None:
            token, _ = await security.start_session(session, user)
        await session.commit()
    if user is None:
        key = "locked" if outcome == "locked" else "bad_login"
        response = aiohttp_jinja2.render_template("console_login.html", request, _ctx(
            request, login_csrf=request.cookies.get(LOGIN_CSRF), error=STRINGS["en"][key] + " · " + STRINGS["ar"][key]),
            status=401)
        return response
    home = "/console/campaigns" if user.role == StaffRole.marketer else "/console"  # marketers have no inbox
    target = request.query.get("next", home)
    response = web.HTTPFound(target if target.startswith("/console") else home)
    security.set_cookie(response, request, token)
    raise response


@requires(*StaffRole)
async def logout(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    async with hub.sessions() as session:
        staff_session = await security.current_session(session, request.cookies.get(security.COOKIE))
        if staff_session is not None:
            staff_session.ended_at = utcnow()
        audit(session, request, request[STAFF], "logout")
        await session.commit()
    response = web.HTTPFound("/console/login")
    response.del_cookie(security.COOKIE, path="/")
    raise response


def _filtered(query, request: web.Request):
    view = request.query.get("view", "needs_human")
    user = request[STAFF]
    if view == "needs_human":
        query = query.where(Conversation.status.in_((ConversationStatus.pending_human, ConversationStatus.human)))
    elif view == "mine":
        query = query.where(Conversation.assignee == user.username, Conversation.status != ConversationStatus.closed)
    elif view == "unassigned":
        query = query.where(Conversation.assignee.is_(None), Conversation.status == ConversationStatus.pending_human)
    elif view == "urgent":
        query = query.where(Conversation.urgent, Conversation.status != ConversationStatus.closed)
    else:
        query = query.where(Conversation.status != ConversationStatus.closed)
    if channel := request.query.get("channel"):
        query = query.where(Conversation.channel == channel)
    if language := request.query.get("language"):
        query = query.where(Conversation.language == language)
    if team := request.query.get("department"):
        query = query.where(Conversation.team == team)
    if search := request.query.get("q", "").strip():
        like = f"%{search}%"
        query = query.where(or_(Patient.given_name_en.ilike(like), Patient.family_name_en.ilike(like),
                                Patient.given_name_ar.like(like), Patient.family_name_ar.like(like),
                                Patient.phone.like(like)))
    return query


@requires(*INBOX_ROLES)
async def inbox(request: web.Request) -> web.Response:
    hub = _hub(request)
    async with hub.sessions() as session:
        query = (select(Conversation).join(Patient).options(selectinload(Conversation.patient))
                 .order_by(Conversation.urgent.desc(), Conversation.updated_at))
        conversations = (await session.scalars(_filtered(query, request).limit(200))).all()
        departments = (await session.scalars(select(Department).order_by(Department.id))).all()
        audit(session, request, request[STAFF], "view_inbox", detail={"view": request.query.get("view"),
                                                                           "count": len(conversations)})
        await session.commit()
    now = utcnow()
    rows = [{"c": c, "name": c.patient.display_name(request[STAFF].language) or f"#{c.patient_id}",
             "waiting": int((now - (c.last_inbound_at or c.updated_at)).total_seconds() // 60)} for c in conversations]
    return aiohttp_jinja2.render_template("console_inbox.html", request, _ctx(
        request, rows=rows, view=request.query.get("view", "needs_human"), target=SERVICE_TARGET_MINUTES,
        departments=departments, department=request.query.get("department", "")))


@requires(*INBOX_ROLES)
async def conversation_view(request: web.Request) -> web.Response:
    hub = _hub(request)
    conversation_id = int(request.match_info["id"])
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise web.HTTPNotFound(text="no such conversation")
        patient = await session.get(Patient, conversation.patient_id)
        messages = (await session.scalars(select(Message).join(Conversation)
                                          .where(Conversation.patient_id == patient.id).order_by(Message.id))).all()
        identities = (await session.scalars(select(ChannelIdentity).where(ChannelIdentity.patient_id == patient.id))).all()
        consents = (await session.scalars(select(Consent).where(Consent.patient_id == patient.id)
                                          .order_by(Consent.recorded_at))).all()
        appointments = (await session.scalars(
            select(Appointment).options(selectinload(Appointment.slot), selectinload(Appointment.practitioner)
                                        .selectinload(Practitioner.department))
            .where(Appointment.patient_id == patient.id).order_by(Appointment.id.desc()))).all()
        journey = (await session.scalars(select(JourneyEvent).where(JourneyEvent.patient_id == patient.id)
                                         .order_by(JourneyEvent.id.desc()).limit(50))).all()
        staff = []
        departments = (await session.scalars(select(Department).order_by(Department.id))).all()
        if request[STAFF].role in ASSIGNERS:
            staff = (await session.scalars(select(StaffUser).where(StaffUser.active, StaffUser.role.in_(INBOX_ROLES))
                                           .order_by(StaffUser.display_name))).all()
        clinical = await clinical_summary(session, patient.id, request[STAFF].language)
        # Every staff read of a patient record is audited.
        audit(session, request, request[STAFF], "view_conversation", patient_id=patient.id,
              conversation_id=conversation.id)
        await session.commit()
    latest_consent = {}
    for c in consents:
        latest_consent[(c.channel, c.purpose.value)] = c.status.value
    hospital = load_hospital(hub.settings.hospital_file).get("hospital") or {}
    return aiohttp_jinja2.render_template("console_conversation.html", request, _ctx(
        request, conversation=conversation, patient=patient, messages=messages, identities=identities,
        consents=latest_consent, appointments=appointments, journey=journey, staff=staff, departments=departments,
        clinical=clinical,
        can_assign=request[STAFF].role in ASSIGNERS,
        canned=canned_replies(conversation.language, patient, request[STAFF], hospital)))


async def _change(request: web.Request, action: str, apply) -> web.StreamResponse:
    hub = _hub(request)
    conversation_id = int(request.match_info["id"])
    form = await request.post()
    queued = None
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise web.HTTPNotFound(text="no such conversation")
        patient_id, previous, previous_team = conversation.patient_id, conversation.assignee, conversation.team
        try:
            queued = apply(session, conversation, form, request[STAFF])
            if inspect.isawaitable(queued):
                queued = await queued
        except web.HTTPException as refused:
            # A refused action is audited too, with nothing else of it kept.
            await session.rollback()
            audit(session, request, request[STAFF], action, outcome=f"refused:{refused.status}",
                  patient_id=patient_id, conversation_id=conversation_id, detail={"reason": refused.text})
            await session.commit()
            raise
        detail = {"assign": {"assignee": conversation.assignee, "previous": previous},
                  "transfer": {"team": conversation.team, "previous": previous_team}}.get(action)
        audit(session, request, request[STAFF], action, patient_id=patient_id,
              conversation_id=conversation_id, detail=detail)
        await session.commit()
    if queued is not None and not queued.private:
        await hub.outbox.deliver([queued.id])
    hub.events.publish(CONSOLE_TOPIC, {"type": "activity", "conversation_id": conversation_id})
    if queued is not None:
        hub.events.publish(topic(conversation_id), {"type": "staff", "id": queued.id})
    if request.headers.get("Accept") == "application/json":
        return web.json_response({"ok": True})
    raise web.HTTPFound(f"/console/conversations/{conversation_id}")


@requires(*INBOX_ROLES)
async def claim(request: web.Request) -> web.StreamResponse:
    def apply(session, conversation, form, user):
        conversation.assignee, conversation.status = user.username, ConversationStatus.human
    return await _change(request, "claim", apply)


@requires(*ASSIGNERS)
async def assign(request: web.Request) -> web.StreamResponse:
    """A supervisor hands a conversation to a named colleague, who then owns it (the bot is silent)."""
    async def apply(session, conversation, form, user):
        username = str(form.get("assignee", "")).strip()[:64]
        assignee = username and await session.scalar(
            select(StaffUser).where(StaffUser.username == username, StaffUser.active))
        if not assignee or assignee.role not in INBOX_ROLES:
            raise web.HTTPBadRequest(text="assign to an active staff member who works the inbox")
        conversation.assignee, conversation.status = assignee.username, ConversationStatus.human
    return await _change(request, "assign", apply)


@requires(*ASSIGNERS)
async def transfer(request: web.Request) -> web.StreamResponse:
    """A supervisor sends a conversation to another team's queue, unowned, waiting for a person."""
    async def apply(session, conversation, form, user):
        team = str(form.get("team", "")).strip()[:50]
        if not team or not await session.scalar(select(Department.id).where(Department.code == team)):
            raise web.HTTPBadRequest(text="transfer to one of the hospital's departments")
        conversation.team, conversation.assignee = team, None
        conversation.status = ConversationStatus.pending_human
    return await _change(request, "transfer", apply)


@requires(*INBOX_ROLES)
async def reply(request: web.Request) -> web.StreamResponse:
    def apply(session, conversation, form, user):
        text = str(form.get("text", "")).strip()
        if not text or len(text) > 2000:
            raise web.HTTPBadRequest(text="a reply needs 1-2000 characters")
        conversation.assignee = conversation.assignee or user.username
        conversation.status = ConversationStatus.human
        return queue_reply(session, conversation, text, sender="staff")
    return await _change(request, "reply", apply)


@requires(*INBOX_ROLES)
async def note(request: web.Request) -> web.StreamResponse:
    def apply(session, conversation, form, user):
        text = str(form.get("text", "")).strip()
        if not text:
            raise web.HTTPBadRequest(text="an empty note")
        message = Message(conversation_id=conversation.id, channel=conversation.channel, direction="out",
                          sender="staff", text=text, status="note", private=True, language=user.language)
        session.add(message)
        return message
    return await _change(request, "note", apply)


@requires(*INBOX_ROLES)
async def resolve(request: web.Request) -> web.StreamResponse:
    async def apply(session, conversation, form, user):
        handled = conversation.status in (ConversationStatus.pending_human, ConversationStatus.human)
        conversation.status, conversation.assignee, conversation.urgent = ConversationStatus.bot, None, False
        session.add(JourneyEvent(patient_id=conversation.patient_id, kind="handoff_resolved",
                                 reference=str(conversation.id), data={"by": user.username}))
        if handled:  # how satisfied the patient was with the people who helped (surveys/, issue 7)
            await surveys.dispatch.after_chat(session, conversation, _hub(request).settings)
    return await _change(request, "resolve", apply)


@requires(StaffRole.admin)
async def audit_log(request: web.Request) -> web.Response:
    hub = _hub(request)
    async with hub.sessions() as session:
        entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(500))).all()
        audit(session, request, request[STAFF], "view_audit_log")
        await session.commit()
    return aiohttp_jinja2.render_template("console_audit.html", request, _ctx(request, entries=entries))


@requires(*INBOX_ROLES)
async def live(request: web.Request) -> web.WebSocketResponse:
    """Pushes "something changed" to open consoles; the page re-reads from the database, so a
    console that reconnects is never behind."""
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    with _hub(request).events.subscribe(CONSOLE_TOPIC) as queue:
        async def forward():
            while not ws.closed:
                await ws.send_json(await queue.get())

        task = asyncio.create_task(forward())
        try:
            async for frame in ws:
                if frame.type == WSMsgType.ERROR:
                    break
        finally:
            task.cancel()
    return ws


def setup_console(app: web.Application) -> None:
    app[ATTEMPTS] = defaultdict(deque)
    app.router.add_routes([
        web.get("/console/login", login_page),
        web.post("/console/login", login),
        web.post("/console/logout", logout),
        web.get("/console", inbox),
        web.get("/console/ws", live),
        web.get("/console/audit", audit_log),
        web.get(r"/console/conversations/{id:\d+}", conversation_view),
        web.post(r"/console/conversations/{id:\d+}/claim", claim),
        web.post(r"/console/conversations/{id:\d+}/assign", assign),
        web.post(r"/console/conversations/{id:\d+}/reply", reply),
        web.post(r"/console/conversations/{id:\d+}/note", note),
        web.post(r"/console/conversations/{id:\d+}/resolve", resolve),
        web.post(r"/console/conversations/{id:\d+}/transfer", transfer),
    ])
