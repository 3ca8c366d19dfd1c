"""Portal sessions, kept apart from staff sessions: the cookie carries a random id, the database
its SHA-256; a new id at every sign-in; idle sessions end (a phone is easily left unlocked or a
family computer shared), and none outlives 12 hours."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import AuditEntry, PortalSession, utcnow
from portal import guardians

COOKIE = "sila_portal"
LONGEST = timedelta(hours=12)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(session: AsyncSession, patient_id: int, language: str) -> tuple[str, PortalSession]:
    token = secrets.token_urlsafe(32)
    row = PortalSession(token_hash=digest(token), patient_id=patient_id, acting_patient_id=patient_id,
                        csrf_token=secrets.token_urlsafe(32), language=language)
    session.add(row)
    await session.flush()
    return token, row


async def current(session: AsyncSession, token: str | None, idle: timedelta) -> PortalSession | None:
    """The live session of this cookie (its last use moved to now), or None."""
    if not token:
        return None
    row = await session.scalar(select(PortalSession).where(PortalSession.token_hash == digest(token),
                                                           PortalSession.ended_at.is_(None)))
    if row is None:
        return None
    now = utcnow()
    if now - row.last_seen_at > idle or now - row.created_at > LONGEST:
        row.ended_at = now
        return None
    row.last_seen_at = now
    # A link ended by staff, or a child come of age, ends the guardian's view at once.
    if row.acting_patient_id != row.patient_id and not await guardians.may_act_for(
            session, row.patient_id, row.acting_patient_id):
        row.acting_patient_id = row.patient_id
    return row


async def end(session: AsyncSession, token: str | None) -> None:
    if token and (row := await session.scalar(select(PortalSession).where(
            PortalSession.token_hash == digest(token), PortalSession.ended_at.is_(None)))):
        row.ended_at = utcnow()


def set_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    # Lax, not Strict: patients arrive from a link in an SMS or an e-mail, a cross-site navigation
    # that Strict would show signed out. Every state change is a POST with a CSRF token.
    response.set_cookie(COOKIE, token, httponly=True, samesite="Lax", path="/portal",
                        secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https")


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(expected, str(given))


def audit(session: AsyncSession, request: web.Request, username: str, action: str, *, outcome: str = "ok",
          patient_id: int | None = None, conversation_id: int | None = None, detail: dict | None = None) -> None:
    """Every portal access is in the audit log, as "patient:<id>" (who signed in), about the
    record shown (theirs, or a child's)."""
    session.add(AuditEntry(user_id=None, username=username[:64], action=action[:50], patient_id=patient_id,
                           conversation_id=conversation_id, outcome=outcome[:20], detail=detail,
                           remote=request.remote))
