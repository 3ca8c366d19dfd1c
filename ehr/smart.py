"""SMART Backend Services authorization: Sila, a system with no user at the keyboard, gets an access
token by the OAuth client-credentials grant, proving who it is with a JWT signed by its private key
(the hospital registered the matching public key, usually as a JWKS, with `key_id` as its `kid`).
https://hl7.org/fhir/smart-app-launch/backend-services.html
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import aiohttp
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ehr.client import RETRY_STATUSES, FhirError, Unauthorized

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART servers must accept RS384 and ES384; other algorithms are not portable across EHRs.
ALGORITHMS = ("RS384", "ES384")
# SMART caps the assertion's lifetime at five minutes; staying under it leaves room for our clock
# running ahead of the EHR's.
ASSERTION_LIFETIME = 240
# A token is renewed this long before it expires (at most a tenth of its life), so a request never
# leaves with a token that dies on the way.
RENEW_EARLY = 30.0


class SmartBackendAuth:
    def __init__(self, token_url: str, client_id: str, private_key_pem: str | bytes, key_id: str, scope: str,
                 algorithm: str = "RS384", *, clock: Callable[[], float] = time.monotonic):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"SMART backend services sign with {' or '.join(ALGORITHMS)}, not {algorithm}")
        if not (token_url and client_id and key_id and scope):
            raise ValueError("SMART backend auth needs a token URL, client id, key id and scope")
        pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
        self._key = load_pem_private_key(pem, password=None)  # a bad key fails at start-up
        self.token_url = token_url
        self.client_id = client_id
        self.key_id = key_id
        self.scope = scope
        self.algorithm = algorithm
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def authorization(self, http: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> str:
        """The Authorization header: the cached access token, or a new one."""
        async with self._lock:  # concurrent requests wait for one token fetch
            if self._token is None or self._clock() >= self._renew_at:
                await self._fetch(http, timeout)
            return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        """Forget the token (the server refused it): the next request fetches another."""
        self._token = None
        return True

    def assertion(self) -> str:
        """The signed JWT that authenticates Sila to the token endpoint (single use: fresh jti)."""
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                  "exp": int(time.time()) + ASSERTION_LIFETIME, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers={"kid": self.key_id, "typ": "JWT"})

    async def _fetch(self, http: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> None:
        form = {"grant_type": "client_credentials", "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion()}
        started = self._clock()
        async with http.post(self.token_url, data=form, headers={"Accept": "application/json"},
                             timeout=timeout, raise_for_status=False, allow_redirects=False) as response:
            status = response.status
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
        body = body if isinstance(body, dict) else {}
        log.info("SMART token request -> %d", status)
        if status != 200:
            # OAuth 2.0 errors: {"error": "invalid_client", "error_description": "..."}
            reason = ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
            diagnostics = f"token endpoint refused the client ({reason or f'HTTP {status}'})"
            if status in RETRY_STATUSES:
                raise FhirError(status, diagnostics)
            raise Unauthorized(status, diagnostics)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise Unauthorized(status, "token endpoint answered without an access_token")
        try:
            lifetime = float(body.get("expires_in", 300))
        except (TypeError, ValueError):
            lifetime = 300.0
        self._token = token
        self._renew_at = started + lifetime - min(RENEW_EARLY, lifetime / 10)
