"""Console pages for campaigns (/console/campaigns): the list, a new campaign, a campaign's funnel
with pause, resume and cancel. Segments, templates and automations are in campaigns/library.py.

Marketers and admins only. Nothing here shows a patient: segments give counts, previews use a
sample patient, funnels are aggregates; every change is audited.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import func, select

from campaigns import metrics
from campaigns.segments import CHANNELS
from crm_store.models import Campaign, CampaignRecipient, CampaignTemplate, Segment, StaffRole
from inbox.security import CSRF, STAFF, audit, requires
from inbox.views import STRINGS as CONSOLE_STRINGS

MARKETING = (StaffRole.marketer, StaffRole.admin)
# The order channels are offered in (and so tried in): the richest a patient usually reads first.
PREFERENCE = ("whatsapp", "sms", "telegram", "email", "webchat", "voice")

STRINGS = {
    "en": {"campaigns": "Campaigns", "new_campaign": "New campaign", "segments": "Segments", "templates": "Templates",
           "automations": "Automations", "name": "Name", "status": "Status", "segment": "Segment",
           "template": "Template", "channels": "Channels (the first one the patient is reachable on)",
           "when": "Send at",
           "when_hint": "hospital time; empty: send now", "schedule": "Schedule", "send_now": "Send now",
           "pause": "Pause", "resume": "Resume", "cancel": "Cancel campaign", "recipients": "Recipients",
           "messaged": "Messaged", "sent": "Sent", "delivered": "Delivered", "replied": "Replied",
           "booked": "Booked", "failed": "Failed", "opted_out": "Opted out", "skipped": "Skipped",
           "deferred": "Waiting for quiet hours to end", "in_flight": "Being sent",
           "suppressed": "Withheld at send time",
           "reasons": "Reasons", "funnel": "Funnel", "conversion_days": "Count replies and bookings within (days)",
           "run_at": "Start", "started": "Started", "finished": "Finished", "none": "No campaigns yet.",
           "create": "Create", "purpose": "Purpose", "marketing": "promotion (needs marketing consent)",
           "transactional": "care message (no marketing consent needed)", "count": "Patients in segment",
           "save": "Save", "preview": "Preview", "edit": "Edit", "enabled": "On", "disabled": "Off",
           "note": "Note", "back": "All campaigns", "reason_opted_out": "opted out",
           "reason_no_consent": "no marketing consent", "reason_unreachable": "not reachable on these channels",
           "reason_frequency_cap": "frequency cap", "reason_cancelled": "campaign cancelled",
           "reason_too_late": "too late", "missing": "Choose a segment, a template and at least one channel."},
    "ar": {"campaigns": "الحملات", "new_campaign": "حملة جديدة", "segments": "الشرائح", "templates": "القوالب",
           "automations": "الأتمتة", "name": "الاسم", "status": "الحالة", "segment": "الشريحة",
           "template": "القالب", "channels": "القنوات (أول قناة يمكن الوصول بها إلى المريض)", "when": "موعد الإرسال",
           "when_hint": "بتوقيت المستشفى؛ فارغ: الإرسال الآن", "schedule": "جدولة", "send_now": "أرسل الآن",
           "pause": "إيقاف مؤقت", "resume": "استئناف", "cancel": "إلغاء الحملة", "recipients": "المستلمون",
           "messaged": "أُعدّت رسائلهم", "sent": "أُرسلت", "delivered": "وصلت", "replied": "ردّوا",
           "booked": "حجزوا موعدًا", "failed": "فشلت", "opted_out": "ألغوا الاشتراك", "skipped": "استُبعدوا",
           "deferred": "بانتظار انتهاء ساعات الهدوء", "in_flight": "قيد الإرسال", "suppressed": "حُجبت عند الإرسال",
           "reasons": "الأسباب", "funnel": "مسار التحويل", "conversion_days": "احتساب الردود والحجوزات خلال (أيام)",
           "run_at": "البدء", "started": "بدأت", "finished": "انتهت", "none": "لا توجد حملات بعد.",
           "create": "إنشاء", "purpose": "الغرض", "marketing": "ترويجي (يتطلب موافقة تسويقية)",
           "transactional": "رسالة رعاية (لا تتطلب موافقة تسويقية)", "count": "عدد المرضى في الشريحة",
           "save": "حفظ", "preview": "معاينة", "edit": "تعديل", "enabled": "مفعّل", "disabled": "متوقف",
           "note": "ملاحظة", "back": "كل الحملات", "reason_opted_out": "ألغى الاشتراك",
           "reason_no_consent": "لا توجد موافقة تسويقية", "reason_unreachable": "لا يمكن الوصول عبر هذه القنوات",
           "reason_frequency_cap": "الحد الأقصى للرسائل", "reason_cancelled": "أُلغيت الحملة",
           "reason_too_late": "فات الأوان", "missing": "اختر شريحة وقالبًا وقناة واحدة على الأقل."},
}
STATUS = {"en": {}, "ar": {"draft": "مسودة", "scheduled": "مجدولة", "running": "قيد الإرسال", "paused": "متوقفة مؤقتًا",
                           "done": "اكتملت", "cancelled": "ملغاة", "missed": "فات موعدها"}}


def runtime_of(request: web.Request):
    from campaigns.runtime import CAMPAIGNS

    return request.app[CAMPAIGNS]


def ctx(request: web.Request, **values) -> dict:
    user = request[STAFF]
    lang = "ar" if user.language == "ar" else "en"
    zone = ZoneInfo(runtime_of(request).settings.timezone)

    def local(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else "—"

    return {"t": {**CONSOLE_STRINGS[lang], **STRINGS[lang]}, "lang": lang, "user": user, "csrf": request.get(CSRF),
            "local": local, "status_name": lambda s: STATUS[lang].get(s, s), "all_channels": CHANNELS,
            "enabled_channels": [c for c in PREFERENCE if c in runtime_of(request).policy.available], **values}


def local_time(value: str, zone: str) -> datetime:
    """A datetime-local form value in the hospital's zone, as an aware datetime."""
    return datetime.fromisoformat(value).replace(tzinfo=ZoneInfo(zone))


@requires(*MARKETING)
async def campaign_list(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    async with runtime.sessions() as session:
        campaigns = (await session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(200))).all()
        counts = dict((await session.execute(select(CampaignRecipient.campaign_id, func.count()).group_by(
            CampaignRecipient.campaign_id))).all())
    return aiohttp_jinja2.render_template("campaigns_list.html", request, ctx(request, campaigns=campaigns,
                                                                              counts=counts))


@requires(*MARKETING)
async def new_campaign(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    async with runtime.sessions() as session:
        segments = (await session.scalars(select(Segment).order_by(Segment.name))).all()
        templates = (await session.scalars(select(CampaignTemplate).order_by(CampaignTemplate.name))).all()
    return aiohttp_jinja2.render_template("campaigns_new.html", request, ctx(
        request, segments=segments, templates=templates, error=request.query.get("error"),
        segment_id=request.query.get("segment", "")))


@requires(*MARKETING)
async def create_campaign(request: web.Request) -> web.StreamResponse:
    runtime = runtime_of(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()[:100]
    channels = [c for c in form.getall("channel", []) if c in CHANNELS]
    try:
        segment_id, template_id = int(form.get("segment_id", "")), int(form.get("template_id", ""))
        days = max(1, min(90, int(form.get("conversion_days") or 7)))
        run_at = local_time(str(form["run_at"]), runtime.settings.timezone) if form.get("run_at") else runtime.now()
    except (ValueError, KeyError):
        raise web.HTTPFound("/console/campaigns/new?error=missing") from None
    if not name or not channels:
        raise web.HTTPFound("/console/campaigns/new?error=missing")
    async with runtime.sessions() as session:
        if not (await session.get(Segment, segment_id) and await session.get(CampaignTemplate, template_id)):
            raise web.HTTPFound("/console/campaigns/new?error=missing")
        campaign = Campaign(name=name, segment_id=segment_id, template_id=template_id, channels=channels,
                            conversion_days=days, created_by=request[STAFF].username)
        session.add(campaign)
        await session.flush()
        audit(session, request, request[STAFF], "campaign_create", detail={
            "campaign": campaign.id, "segment": segment_id, "template": template_id, "channels": channels})
        await session.commit()
    await runtime.broadcasts.schedule(campaign.id, run_at)
    async with runtime.sessions() as session:
        audit(session, request, request[STAFF], "campaign_schedule", detail={"campaign": campaign.id,
                                                                             "run_at": run_at.isoformat()})
        await session.commit()
    raise web.HTTPFound(f"/console/campaigns/{campaign.id}")


@requires(*MARKETING)
async def campaign_view(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    async with runtime.sessions() as session:
        campaign = await session.get(Campaign, int(request.match_info["id"]))
        if campaign is None:
            raise web.HTTPNotFound(text="no such campaign")
        segment = await session.get(Segment, campaign.segment_id)
        template = await session.get(CampaignTemplate, campaign.template_id)
        funnel = await metrics.funnel(session, campaign.id)
    return aiohttp_jinja2.render_template("campaigns_detail.html", request, ctx(
        request, campaign=campaign, segment=segment, template=template, funnel=funnel,
        widest=max(funnel.recipients, 1)))


@requires(*MARKETING)
async def campaign_funnel(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    async with runtime.sessions() as session:
        campaign = await session.get(Campaign, int(request.match_info["id"]))
        if campaign is None:
            raise web.HTTPNotFound(text="no such campaign")
        funnel = await metrics.funnel(session, campaign.id)
    return web.json_response({"status": campaign.status, **funnel.as_dict()})


def _action(name: str):
    @requires(*MARKETING)
    async def handler(request: web.Request) -> web.StreamResponse:
        runtime = runtime_of(request)
        campaign_id = int(request.match_info["id"])
        form = await request.post()
        if name == "schedule":
            try:
                run_at = local_time(str(form["run_at"]), runtime.settings.timezone) if form.get("run_at") \
                    else runtime.now()
            except (ValueError, KeyError):
                raise web.HTTPBadRequest(text="a start time like 2026-12-01T10:00") from None
            done = await runtime.broadcasts.schedule(campaign_id, run_at)
        else:
            done = await getattr(runtime.broadcasts, name)(campaign_id)
        async with runtime.sessions() as session:
            audit(session, request, request[STAFF], f"campaign_{name}", outcome="ok" if done else "refused:409",
                  detail={"campaign": campaign_id})
            await session.commit()
        if not done:
            raise web.HTTPConflict(text=f"this campaign cannot {name} in its current state")
        raise web.HTTPFound(f"/console/campaigns/{campaign_id}")

    handler.__name__ = f"campaign_{name}"
    return handler


def setup_views(app: web.Application) -> None:
    from campaigns import library

    app.router.add_routes([
        web.get("/console/campaigns", campaign_list),
        web.get("/console/campaigns/new", new_campaign),
        web.post("/console/campaigns", create_campaign),
        web.get(r"/console/campaigns/{id:\d+}", campaign_view),
        web.get(r"/console/campaigns/{id:\d+}/funnel", campaign_funnel),
        *[web.post(rf"/console/campaigns/{{id:\d+}}/{name}", _action(name))
          for name in ("schedule", "pause", "resume", "cancel")],
        *library.routes(),
    ])
