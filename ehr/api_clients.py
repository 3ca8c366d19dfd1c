"""Clients of Sila's FHIR API: one bearer token each (only its SHA-256 is kept) and SMART scopes.

Scopes follow SMART App Launch v1 for backend services: `system/<Type or *>.<read, write or *>`,
e.g. `system/*.read` or `system/Appointment.write`."""
from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import FhirClient

_SCOPE = re.compile(r"system/(\*|[A-Z][A-Za-z]+)\.(read|write|\*)")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def add_client(session: AsyncSession, name: str, scopes: list[str]) -> str:
    """Register a client and return its new token (shown once: only its hash is stored)."""
    bad = [scope for scope in scopes if not _SCOPE.fullmatch(scope)]
    if bad or not scopes:
        raise ValueError(f"scopes must look like system/*.read or system/Appointment.write: {bad or scopes}")
    if await session.scalar(select(FhirClient.id).where(FhirClient.name == name)) is not None:
        raise ValueError(f"a FHIR client named {name!r} exists already")
    token = secrets.token_urlsafe(32)
    session.add(FhirClient(name=name, token_hash=_digest(token), scopes=list(scopes), active=True))
    await session.flush()
    return token


async def deactivate_client(session: AsyncSession, name: str) -> bool:
    """Revoke a client's token; False when there is no such client."""
    client = await session.scalar(select(FhirClient).where(FhirClient.name == name))
    if client is None:
        return False
    client.active = False
    return True


async def authenticate(session: AsyncSession, token: str | None) -> FhirClient | None:
    """The active client holding `token`, if any."""
    if not token:
        return None
    return await session.scalar(select(FhirClient).where(FhirClient.token_hash == _digest(token),
                                                         FhirClient.active.is_(True)))


def allows(client_scopes: Iterable[str], resource_type: str, access: str) -> bool:
    """Whether the scopes grant `access` ("read" or "write") to `resource_type`."""
    for scope in client_scopes:
        match = _SCOPE.fullmatch(scope)
        if match and match.group(1) in ("*", resource_type) and match.group(2) in ("*", access):
            return True
    return False
