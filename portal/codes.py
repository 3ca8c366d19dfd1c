"""One-time sign-in codes: issued per phone number, kept only as argon2 hashes, valid 10 minutes,
used once. A number gets at most 5 codes an hour; 5 wrong tries burn a code and put the number
in a 15-minute cool-down (no new code, no sign-in) — a six-digit code must not be guessable.

The same rows and the same work (hashing included) are done for numbers Sila does not know, so
neither the answer nor its timing tells whether a number is registered."""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Awaitable, Callable, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import PortalCode, utcnow

CODE_TTL = timedelta(minutes=10)
CODES_PER_HOUR = 5
WRONG_TRIES = 5
COOLDOWN = timedelta(minutes=15)
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("000000")
T = TypeVar("T")


@dataclass
class Issued:
    outcome: str  # sent | throttled | locked
    code: str | None = None
    row: PortalCode | None = None


def new_code() -> str:
    return f"{secrets.randbelow(10 ** 6):06d}"


def _matches(code_hash: str, code: str) -> bool:
    try:
        return _hasher.verify(code_hash, code)
    except (VerificationError, InvalidHashError):
        return False


async def refusal(session: AsyncSession, phone: str) -> str | None:
    """"locked" during a cool-down, "throttled" after 5 codes in the past hour, else None."""
    now = utcnow()
    locked_at = await session.scalar(select(func.max(PortalCode.finished_at)).where(
        PortalCode.phone == phone, PortalCode.status == "locked"))
    if locked_at is not None and now - locked_at < COOLDOWN:
        return "locked"
    recent = await session.scalar(select(func.count()).select_from(PortalCode).where(
        PortalCode.phone == phone, PortalCode.created_at > now - timedelta(hours=1)))
    return "throttled" if recent >= CODES_PER_HOUR else None


async def issue(session: AsyncSession, phone: str, remote: str | None) -> Issued:
    """A new code for the number (older live ones stop working), unless a limit refuses it."""
    if refused := await refusal(session, phone):
        return Issued(refused)
    code = new_code()
    digest = await asyncio.to_thread(_hasher.hash, code)
    now = utcnow()
    await session.execute(update(PortalCode).where(PortalCode.phone == phone, PortalCode.status == "live")
                          .values(status="superseded", finished_at=now))
    row = PortalCode(phone=phone, code_hash=digest, created_at=now, expires_at=now + CODE_TTL,
                     remote=(remote or "")[:64] or None)
    session.add(row)
    await session.flush()
    return Issued("sent", code, row)


async def verify(session: AsyncSession, phone: str, code: str,
                 second_check: Callable[[], Awaitable[T | None]]) -> tuple[str, T | None]:
    """("ok", what `second_check` found), or ("wrong" | "locked", None).

    The code must be the number's latest, unexpired and unused; `second_check` (the date of
    birth) must then find the patient. Either failing is one wrong try; the fifth locks."""
    if await refusal(session, phone) == "locked":
        return "locked", None
    now = utcnow()
    row = await session.scalar(select(PortalCode).where(PortalCode.phone == phone, PortalCode.status == "live")
                               .order_by(PortalCode.id.desc()).limit(1))
    matched = await asyncio.to_thread(_matches, row.code_hash if row else _DUMMY_HASH, code)
    if row is None or row.expires_at <= now:
        return "wrong", None
    found = await second_check() if matched else None
    if found is None:
        await session.execute(update(PortalCode).where(PortalCode.id == row.id)
                              .values(attempts=PortalCode.attempts + 1))
        locked = await session.execute(
            update(PortalCode).where(PortalCode.id == row.id, PortalCode.status == "live",
                                     PortalCode.attempts >= WRONG_TRIES)
            .values(status="locked", finished_at=now))
        return ("locked" if locked.rowcount == 1 else "wrong"), None
    # One conditional UPDATE: of two requests racing with the same code, one signs in.
    used = await session.execute(
        update(PortalCode).where(PortalCode.id == row.id, PortalCode.status == "live",
                                 PortalCode.attempts < WRONG_TRIES)
        .values(status="used", finished_at=now))
    return ("ok", found) if used.rowcount == 1 else ("wrong", None)
