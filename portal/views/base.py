"""What every portal page shares: the signed-in visit, CSRF, the audit row, rendering."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache, wraps
from pathlib import Path
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
import yaml
from aiohttp import web

from bot.formatting import MONTHS, arabic_digits
from crm_store.content import load_hospital
from crm_store.models import Patient
from portal import guardians, sessions

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STRINGS_FILE = Path(__file__).resolve().parent.parent / "strings.yml"
JINJA = web.AppKey("portal_jinja", jinja2.Environment)
LANGUAGES = ("ar", "en")


@dataclass(frozen=True)
class Visit:
    """A signed-in request: who signed in, whose record they are looking at, in which language."""

    session_id: int
    patient_id: int
    acting_id: int
    csrf: str
    language: str
    me: Patient
    acting: Patient
    wards: tuple[Patient, ...]

    @property
    def holder(self) -> str:
        """Who holds a slot while this patient confirms (the bot uses the conversation id)."""
        return f"portal:{self.session_id}"

    @property
    def username(self) -> str:
        return f"patient:{self.patient_id}"


VISIT = web.RequestKey("portal_visit", Visit)


@lru_cache
def strings() -> dict[str, dict[str, str]]:
    with open(STRINGS_FILE, encoding="utf-8") as fh:
        entries = yaml.safe_load(fh)
    return {lang: {key: entry[lang] for key, entry in entries.items()} for lang in LANGUAGES}


def fhir_day(value, lang: str) -> str:
    """A FHIR date or dateTime of any precision ("2019", "2019-05", full instants) as a day."""
    lang = "ar" if lang == "ar" else "en"
    text = str(value or "")
    try:
        if len(text) == 4:
            shown = text
        elif len(text) == 7:
            month = date.fromisoformat(text + "-01")
            shown = f"{MONTHS[lang][month.month - 1]} {month.year}"
        else:
            day = date.fromisoformat(text[:10])
            shown = f"{day.day} {MONTHS[lang][day.month - 1]} {day.year}"
    except ValueError:
        return text or "—"
    return arabic_digits(shown) if lang == "ar" else shown


def hub(request: web.Request):
    from bot.app import HUB

    return request.app[HUB]


def anonymous_language(request: web.Request) -> str:
    """Before sign-in: the language asked for, else the one used last, else the browser's."""
    lang = request.query.get("lang") or request.cookies.get("sila_portal_lang")
    if lang in LANGUAGES:
        return lang
    for part in request.headers.get("Accept-Language", "").split(","):
        if (code := part.split(";")[0].strip()[:2].lower()) in LANGUAGES:
            return code
    return hub(request).settings.default_language


def render(request: web.Request, template: str, status: int = 200, **values) -> web.Response:
    visit = request.get(VISIT)
    lang = visit.language if visit else values.pop("lang", None) or anonymous_language(request)
    settings = hub(request).settings
    context = {"t": strings()[lang], "lang": lang, "visit": visit, "csrf": visit.csrf if visit else None,
               "hospital": load_hospital(settings.hospital_file)["hospital"], "path": request.path, **values}
    return aiohttp_jinja2.render_template(template, request, context, status=status, app_key=JINJA)


def protect(response: web.StreamResponse) -> web.StreamResponse:
    """Health pages are not kept by the browser (the back button after signing out on a shared
    computer shows nothing), framed by another site, or named in another site's Referer."""
    if not response.prepared:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        response.headers["Referrer-Policy"] = "same-origin"
    return response


def audit(session, request: web.Request, visit: Visit, action: str, *, outcome: str = "ok",
          conversation_id: int | None = None, detail: dict | None = None) -> None:
    sessions.audit(session, request, visit.username, f"portal:{action}", outcome=outcome,
                   patient_id=visit.acting_id, conversation_id=conversation_id,
                   detail={**({"for_child": True} if visit.acting_id != visit.patient_id else {}),
                           "path": request.path, **(detail or {})})


def patient_page(handler):
    """A page for a signed-in patient: a live session (idle ones end), CSRF on every POST, and an
    audit row for every access, however it ends."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        h = hub(request)
        idle = timedelta(minutes=h.settings.portal_idle_minutes)
        async with h.sessions() as session:
            row = await sessions.current(session, request.cookies.get(sessions.COOKIE), idle)
            if row is not None:
                me = await session.get(Patient, row.patient_id)
                acting = me if row.acting_patient_id == me.id else await session.get(Patient, row.acting_patient_id)
                wards = tuple(await guardians.wards(session, me.id))
                visit = Visit(row.id, me.id, acting.id, row.csrf_token, row.language, me, acting, wards)
            await session.commit()
        if row is None:
            if request.method == "GET" and request.path != "/portal/ws":
                lang = request.query.get("lang")
                raise web.HTTPFound("/portal/sign-in?next=" + quote(request.path_qs, safe="")
                                    + (f"&lang={lang}" if lang in LANGUAGES else ""))
            raise web.HTTPUnauthorized(text="sign in again")
        request[VISIT] = visit

        async def record(outcome: str) -> None:
            async with h.sessions() as session:
                audit(session, request, visit, handler.__name__, outcome=outcome)
                await session.commit()

        # A live connection is audited when it opens: it may stay open for as long as the page.
        live = request.headers.get("Upgrade", "").lower() == "websocket"
        if live:
            await record("opened")
        outcome = "ok"
        try:
            if request.method == "POST":
                form = await request.post()
                if not sessions.csrf_ok(row.csrf_token, request.headers.get("X-CSRF-Token") or form.get("_csrf")):
                    raise web.HTTPForbidden(text="missing or wrong CSRF token")
            return protect(await handler(request))
        except web.HTTPException as exc:
            outcome = "ok" if exc.status < 400 else f"refused:{exc.status}"
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            if not live or outcome != "ok":
                await record(outcome)

    return wrapper


def not_found(request: web.Request) -> web.HTTPNotFound:
    """The same answer for "no such thing" and "not yours": nothing tells another patient's apart."""
    return web.HTTPNotFound(text=strings()[request[VISIT].language]["not_found"])


def safe_next(target: str | None) -> str:
    return target if target and target.startswith("/portal") and not target.startswith("//") else "/portal"
