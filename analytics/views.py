"""The analytics dashboard in the staff console, and its CSV export.

Admins, supervisors and marketers see it (DESIGN.md's marketer works with analytics); agents work
the inbox and do not. Everything shown is an aggregate: no patient's name, number or words.
"""
from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web

from analytics import charts, extra, queries
from analytics.export import SECTIONS, rows, to_csv
from analytics.ui import strings
from crm_store.models import StaffRole
from inbox.security import CSRF, STAFF, audit, requires
from inbox.views import SERVICE_TARGET_MINUTES
from inbox.views import STRINGS as CONSOLE_STRINGS

VIEWERS = (StaffRole.admin, StaffRole.supervisor, StaffRole.marketer)
PRESETS = (7, 30, 90)


def _hub(request: web.Request):
    from bot.app import HUB

    return request.app[HUB]


def period_of(request: web.Request) -> queries.Period:
    zone = ZoneInfo(_hub(request).settings.timezone)
    try:
        if "from" in request.query or "to" in request.query:
            default = queries.Period.ending_today(30, zone)
            first = date.fromisoformat(request.query.get("from") or default.first.isoformat())
            last = date.fromisoformat(request.query.get("to") or default.last.isoformat())
            return queries.Period(first, last, zone)
        return queries.Period.ending_today(int(request.query.get("days", 30)), zone)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"bad period: {exc}") from None


async def figures(session, period: queries.Period, threshold: float) -> dict:
    return {
        "period": period,
        "conversations": await queries.conversations_by_day(session, period),
        "containment": await queries.containment(session, period),
        "handoffs": await queries.handoffs(session, period),
        "first_reply": await queries.first_reply(session, period, SERVICE_TARGET_MINUTES),
        "intents": await queries.intents(session, period, threshold),
        "bookings": await queries.bookings(session, period),
        "no_shows": await queries.no_shows(session, period),
        "campaigns": await extra.campaign_summaries(session, period),
        "surveys": await extra.survey_summaries(session, period),
    }


def _duration(seconds: float | None, lang: str) -> str:
    if seconds is None:
        return "—"
    minutes = seconds / 60
    if minutes < 1:
        return f"{seconds:.0f} " + ("ث" if lang == "ar" else "s")
    if minutes < 120:
        return f"{minutes:.1f} " + ("د" if lang == "ar" else "min")
    return f"{minutes / 60:.1f} " + ("س" if lang == "ar" else "h")


@requires(*VIEWERS)
async def dashboard(request: web.Request) -> web.Response:
    hub = _hub(request)
    period = period_of(request)
    async with hub.sessions() as session:
        data = await figures(session, period, hub.settings.nlu_review_confidence)
    user = request[STAFF]
    lang = "ar" if user.language == "ar" else "en"
    s = strings(lang)
    conv = data["conversations"]
    departments = [(d["name_ar"] if lang == "ar" else d["name_en"], d["rate"] or 0.0)
                   for d in data["no_shows"]["by_department"]]
    pictures = {
        "conversations": charts.stacked_days(conv["days"], conv["channels"], s["by_day"], "chart-conversations"),
        "reasons": charts.bars([(s["reasons"].get(r, r), n) for r, n in data["handoffs"]["reasons"]],
                               s["handoff_reasons"], "chart-reasons", colour="#d97706"),
        "intents": charts.bars([(s["intents"].get(i, i), n) for i, n in data["intents"]["top"]], s["top_intents"],
                               "chart-intents"),
        "languages": charts.bars([(s["languages"].get(k, k), v["rate"] or 0.0)
                                  for k, v in data["intents"]["by_language"].items()],
                                 s["misunderstood_by_language"], "chart-languages", "{:.0%}", "#b91c1c"),
        "booking_channels": charts.bars(data["bookings"]["appointments_by_channel"], s["appointments_by_channel"],
                                        "chart-bookings"),
        "no_shows": charts.bars(departments, s["no_show_by_department"], "chart-noshows", "{:.0%}", "#d97706"),
        "containment": charts.share(data["containment"]["rate"], "share-containment"),
        "handoff": charts.share(data["handoffs"]["rate"], "share-handoff", good_high=False),
        "conversion": charts.share(data["bookings"]["rate"], "share-conversion"),
        "noshow": charts.share(data["no_shows"]["rate"], "share-noshow", good_high=False),
    }
    return aiohttp_jinja2.render_template("analytics_dashboard.html", request, {
        "t": CONSOLE_STRINGS[lang], "a": s, "lang": lang, "user": user, "csrf": request.get(CSRF), "f": data,
        "charts": pictures, "presets": PRESETS, "period": period, "query": request.query_string,
        "reply_median": _duration(data["first_reply"]["median_seconds"], lang),
        "reply_p90": _duration(data["first_reply"]["p90_seconds"], lang), "sections": SECTIONS})


@requires(*VIEWERS)
async def export(request: web.Request) -> web.Response:
    section = request.match_info["section"]
    if section not in SECTIONS:
        raise web.HTTPNotFound(text="no such section")
    hub = _hub(request)
    period = period_of(request)
    async with hub.sessions() as session:
        data = await figures(session, period, hub.settings.nlu_review_confidence)
        # Figures leaving the system are recorded, as any export is.
        audit(session, request, request[STAFF], "analytics_export",
              detail={"section": section, "from": period.first.isoformat(), "to": period.last.isoformat()})
        await session.commit()
    name = f"sila-{section}-{period.first.isoformat()}-{period.last.isoformat()}.csv"
    return web.Response(text=to_csv(rows(section, data)), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def setup_analytics(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/console/analytics", dashboard),
        web.get("/console/analytics/{section}.csv", export),
    ])
