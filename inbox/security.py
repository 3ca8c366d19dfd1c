"""Staff sign-in, sessions, CSRF, roles and the audit log.

Hospital rules this follows: sessions end after 30 idle minutes (a shared front-desk screen must
not stay signed in), every read of a patient's data is audited, and each role sees only what it
needs (least privilege).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from functools import wraps

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from crm_store.models import AuditEntry, StaffRole, StaffSession, StaffUser, utcnow

COOKIE = "sila_console"
IDLE = timedelta(minutes=30)
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
INBOX_ROLES = {StaffRole.agent, StaffRole.supervisor, StaffRole.admin}
_hasher = PasswordHasher()
STAFF = web.RequestKey("staff", StaffUser)
CSRF = web.RequestKey("csrf", str)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A hash to verify against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


async def authenticate(session: AsyncSession, username: str, password: str) -> tuple[StaffUser | None, str]:
    """(user, outcome); outcome is "ok", "bad_credentials" or "locked"."""
    user = await session.scalar(select(StaffUser).where(StaffUser.username == username, StaffUser.active))
    now = utcnow()
    if user is not None and user.locked_until and user.locked_until > now:
        return None, "locked"
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
        ok = user is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        if user is not None:
            user.failed_logins += 1
            if user.failed_logins >= MAX_FAILURES:
                user.locked_until, user.failed_logins = now + LOCKOUT, 0
        return None, "bad_credentials"
    user.failed_logins, user.locked_until = 0, None
    return user, "ok"


async def start_session(session: AsyncSession, user: StaffUser) -> tuple[str, StaffSession]:
    """A new session id at every sign-in (no fixation); the cookie carries it, the DB its hash."""
    token = secrets.token_urlsafe(32)
    staff_session = StaffSession(token_hash=_digest(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32))
    session.add(staff_session)
    await session.flush()
    return token, staff_session


async def current_session(session: AsyncSession, token: str | None) -> StaffSession | None:
    if not token:
        return None
    found = await session.scalar(select(StaffSession).options(selectinload(StaffSession.user))
                                 .where(StaffSession.token_hash == _digest(token), StaffSession.ended_at.is_(None)))
    if found is None:
        return None
    now = utcnow()
    if now - found.last_seen_at > IDLE or not found.user.active:
        found.ended_at = now
        return None
    found.last_seen_at = now
    return found


def set_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https")


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given)


def audit(session: AsyncSession, request: web.Request, user: StaffUser | None, action: str, *,
          outcome: str = "ok", patient_id: int | None = None, conversation_id: int | None = None,
          detail: dict | None = None, username: str | None = None) -> None:
    session.add(AuditEntry(user_id=user.id if user else None, username=user.username if user else (username or ""),
                           action=action, patient_id=patient_id, conversation_id=conversation_id,
                           outcome=outcome, detail=detail, remote=request.remote))


def requires(*roles: StaffRole):
    """Route decorator: a signed-in user with one of `roles`; CSRF checked on every POST."""

    def decorate(handler):
        @wraps(handler)
        async def wrapper(request: web.Request):
            from bot.app import HUB

            hub = request.app[HUB]
            async with hub.sessions() as session:
                staff_session = await current_session(session, request.cookies.get(COOKIE))
                await session.commit()
            if staff_session is None:
                if request.method == "GET" and not request.path.startswith("/console/api"):
                    raise web.HTTPFound(f"/console/login?next={request.path}")
                raise web.HTTPUnauthorized(text="sign in again")
            if request.method == "POST":
                form = await request.post() if request.content_type != "application/json" else {}
                given = request.headers.get("X-CSRF-Token") or form.get("_csrf")
                if not csrf_ok(staff_session.csrf_token, given):
                    raise web.HTTPForbidden(text="missing or wrong CSRF token")
            user = staff_session.user
            if user.role not in roles:
                async with hub.sessions() as session:
                    audit(session, request, user, f"denied:{handler.__name__}", outcome="forbidden",
                          detail={"path": request.path})
                    await session.commit()
                raise web.HTTPForbidden(text="your role does not allow this")
            request[STAFF] = user
            request[CSRF] = staff_session.csrf_token
            return await handler(request)

        return wrapper

    return decorate
