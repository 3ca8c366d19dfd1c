"""Console pages for what campaigns are made of: segments (filter builder with a live count),
templates (Arabic and English, per channel, WhatsApp ContentSid, preview) and automations (on/off,
timing, template, channels)."""
from __future__ import annotations

import json

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from campaigns import segments, templates
from campaigns.automations import KINDS
from campaigns.segments import CHANNELS
from campaigns.views import MARKETING, ctx, runtime_of
from crm_store.content import load_hospital
from crm_store.models import AutomationRule, CampaignTemplate, Segment, utcnow
from inbox.security import STAFF, audit, requires

LIST_FIELDS = ("sex", "languages", "channels")


def _filters_from_form(form) -> dict:
    data = {key: form.get(key, "") for key in ("age_min", "age_max", "conditions", "last_visit_after",
                                                "last_visit_before", "departments", "practitioners", "tags")}
    for key in LIST_FIELDS:
        data[key] = form.getall(key, [])
    data["marketing_consent"] = bool(form.get("marketing_consent"))
    return data


async def _body(request: web.Request) -> dict:
    if request.content_type == "application/json":
        return await request.json()
    return _filters_from_form(await request.post())


# -- segments -------------------------------------------------------------------------------------

@requires(*MARKETING)
async def segment_page(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    segment_id = request.match_info.get("id")
    async with runtime.sessions() as session:
        saved = (await session.scalars(select(Segment).order_by(Segment.name))).all()
        current = await session.get(Segment, int(segment_id)) if segment_id else None
        known = await segments.known_values(session)
        filters = segments.parse_filters(current.filters if current else {})
        count = await segments.count(session, filters, runtime.settings.timezone)
    return aiohttp_jinja2.render_template("campaigns_segments.html", request, ctx(
        request, saved=saved, current=current, filters=filters, known=known, count=count,
        error=request.query.get("error")))


@requires(*MARKETING)
async def segment_count(request: web.Request) -> web.Response:
    """The live count while the marketer builds a segment."""
    runtime = runtime_of(request)
    try:
        filters = segments.parse_filters(await _body(request))
    except (ValueError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    async with runtime.sessions() as session:
        count = await segments.count(session, filters, runtime.settings.timezone)
    return web.json_response({"count": count})


@requires(*MARKETING)
async def segment_save(request: web.Request) -> web.StreamResponse:
    runtime = runtime_of(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()[:100]
    try:
        filters = segments.parse_filters(_filters_from_form(form))
    except ValueError:
        raise web.HTTPFound("/console/campaigns/segments?error=filters") from None
    if not name:
        raise web.HTTPFound("/console/campaigns/segments?error=name")
    async with runtime.sessions() as session:
        segment = await session.get(Segment, int(form["id"])) if form.get("id") else None
        if segment is None:
            segment = Segment(name=name, created_by=request[STAFF].username)
            session.add(segment)
        segment.name, segment.filters = name, filters.model_dump(mode="json")
        try:
            await session.flush()
        except IntegrityError:
            raise web.HTTPFound("/console/campaigns/segments?error=name") from None
        audit(session, request, request[STAFF], "segment_save", detail={"segment": segment.id,
                                                                         "filters": segment.filters})
        await session.commit()
    raise web.HTTPFound(f"/console/campaigns/segments/{segment.id}")


# -- templates ------------------------------------------------------------------------------------

def _template_from_form(form, template: CampaignTemplate) -> list[str]:
    """Apply the form to `template`; the problems found (unknown variables)."""
    template.name = str(form.get("name", "")).strip()[:100]
    template.purpose = "transactional" if form.get("purpose") == "transactional" else "marketing"
    template.body_en = str(form.get("body_en", "")).strip()
    template.body_ar = str(form.get("body_ar", "")).strip()
    bodies = {}
    for channel in CHANNELS:
        for lang in ("en", "ar"):
            if text := str(form.get(f"{channel}_{lang}", "")).strip():
                bodies.setdefault(channel, {})[lang] = text
    template.channel_bodies = bodies
    sids = {lang: sid for lang in ("en", "ar") if (sid := str(form.get(f"wa_sid_{lang}", "")).strip())}
    variables = {}
    for line in str(form.get("wa_variables", "")).splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            variables[key.strip()] = value.strip()
    template.whatsapp = {"content_sid": sids, "variables": variables} if sids else None
    texts = [template.body_en, template.body_ar, *variables.values(),
             *[t for per in bodies.values() for t in per.values()]]
    unknown = sorted({name for text in texts for name in templates.unknown_variables(text)})
    problems = [f"unknown variable {{{name}}}" for name in unknown]
    if not template.name:
        problems.append("a name is needed")
    if not (template.body_en or template.body_ar):
        problems.append("write the message in at least one language")
    return problems


@requires(*MARKETING)
async def template_page(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    template_id = request.match_info.get("id")
    async with runtime.sessions() as session:
        saved = (await session.scalars(select(CampaignTemplate).order_by(CampaignTemplate.name))).all()
        current = await session.get(CampaignTemplate, int(template_id)) if template_id else None
    return aiohttp_jinja2.render_template("campaigns_templates.html", request, ctx(
        request, saved=saved, current=current, variables=templates.VARIABLES,
        problems=[p for p in request.query.getall("problem", [])]))


@requires(*MARKETING)
async def template_save(request: web.Request) -> web.StreamResponse:
    runtime = runtime_of(request)
    form = await request.post()
    async with runtime.sessions() as session:
        template = await session.get(CampaignTemplate, int(form["id"])) if form.get("id") else None
        if template is None:
            template = CampaignTemplate()
            session.add(template)
        problems = _template_from_form(form, template)
        if not problems:
            try:
                await session.flush()
            except IntegrityError:
                problems = ["another template has this name"]
        if problems:
            await session.rollback()
            query = "&".join(f"problem={p}" for p in problems)
            target = f"/console/campaigns/templates/{form['id']}" if form.get("id") else "/console/campaigns/templates"
            raise web.HTTPFound(f"{target}?{query}")
        audit(session, request, request[STAFF], "template_save", detail={"template": template.id})
        await session.commit()
    raise web.HTTPFound(f"/console/campaigns/templates/{template.id}")


@requires(*MARKETING)
async def template_preview(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    form = await request.post()
    draft = CampaignTemplate()
    problems = _template_from_form(form, draft)
    hospital = load_hospital(runtime.settings.hospital_file)["hospital"]
    channel = form.get("channel") if form.get("channel") in CHANNELS else "sms"
    language = "ar" if form.get("language") == "ar" else "en"
    shown = templates.preview(draft, channel, language, hospital, runtime.settings.timezone)
    return web.json_response({"text": shown.text, "template": shown.template,
                              "problems": [p for p in problems if p.startswith("unknown")]})


# -- automations ----------------------------------------------------------------------------------

@requires(*MARKETING)
async def automation_page(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    async with runtime.sessions() as session:
        rules = (await session.scalars(select(AutomationRule).order_by(AutomationRule.id))).all()
        all_templates = (await session.scalars(select(CampaignTemplate).order_by(CampaignTemplate.name))).all()
        saved_segments = (await session.scalars(select(Segment).order_by(Segment.name))).all()
    return aiohttp_jinja2.render_template("campaigns_automations.html", request, ctx(
        request, rules=rules, templates=all_templates, segments=saved_segments, kinds=KINDS,
        dumps=lambda v: json.dumps(v, ensure_ascii=False), error=request.query.get("error")))


@requires(*MARKETING)
async def automation_save(request: web.Request) -> web.StreamResponse:
    runtime = runtime_of(request)
    form = await request.post()
    try:
        config = json.loads(str(form.get("config") or "{}"))
        if not isinstance(config, dict):
            raise ValueError("settings must be a JSON object")
    except ValueError:
        raise web.HTTPFound("/console/campaigns/automations?error=config") from None
    async with runtime.sessions() as session:
        rule = await session.get(AutomationRule, int(request.match_info["id"]))
        if rule is None:
            raise web.HTTPNotFound(text="no such automation")
        before = {"enabled": rule.enabled, "config": rule.config}
        rule.enabled = bool(form.get("enabled"))
        rule.config = config
        rule.channels = [c for c in form.getall("channel", []) if c in CHANNELS]
        rule.template_id = int(form["template_id"]) if form.get("template_id") else rule.template_id
        rule.segment_id = int(form["segment_id"]) if form.get("segment_id") else None
        rule.updated_by, rule.updated_at = request[STAFF].username, utcnow()
        audit(session, request, request[STAFF], "automation_save", detail={
            "rule": rule.key, "before": before, "after": {"enabled": rule.enabled, "config": rule.config}})
        await session.commit()
    raise web.HTTPFound("/console/campaigns/automations")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console/campaigns/segments", segment_page),
        web.get(r"/console/campaigns/segments/{id:\d+}", segment_page),
        web.post("/console/campaigns/segments", segment_save),
        web.post("/console/campaigns/segments/count", segment_count),
        web.get("/console/campaigns/templates", template_page),
        web.get(r"/console/campaigns/templates/{id:\d+}", template_page),
        web.post("/console/campaigns/templates", template_save),
        web.post("/console/campaigns/templates/preview", template_preview),
        web.get("/console/campaigns/automations", automation_page),
        web.post(r"/console/campaigns/automations/{id:\d+}", automation_save),
    ]
