"""X-Twilio-Signature: every Twilio webhook (messages, status callbacks, voice) is checked here.

Twilio signs the full public URL it called plus the sorted POST parameters with the account's
auth token. Behind a proxy the URL Sila sees is not the one Twilio called, so the public URL
(SILA_PUBLIC_URL) is used to rebuild it."""
from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy
from twilio.request_validator import RequestValidator


def public_url(request: web.Request, base: str) -> str:
    return (base.rstrip("/") + request.rel_url.path_qs) if base else str(request.url)


async def verified_form(request: web.Request, auth_token: str, base_url: str) -> MultiDictProxy:
    """The webhook's form parameters, or 403 when the signature is missing or wrong."""
    form = await request.post()
    signature = request.headers.get("X-Twilio-Signature", "")
    params = {key: form.getall(key)[0] if len(form.getall(key)) == 1 else form.getall(key) for key in form}
    if not signature or not RequestValidator(auth_token).validate(public_url(request, base_url), params, signature):
        raise web.HTTPForbidden(text="invalid Twilio signature")
    return form
