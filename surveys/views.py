"""Console pages for surveys: the list, the editor (YAML with a live-checked preview) and the
analytics.

Roles (patient relations are supervisors and admins): supervisors and admins edit surveys, read
the analytics with the patients' comments (their own words: every view is audited) and follow up
detractors from the inbox. Marketers read the aggregate figures only (no comments, no editor).
Agents have no survey pages; detractor alerts reach them as inbox conversations."""
from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import func, select

from crm_store.content import load_hospital
from crm_store.models import Department, Practitioner, StaffRole, Survey, SurveyResponse, utcnow
from inbox.security import CSRF, STAFF, audit, requires
from inbox.views import STRINGS as CONSOLE_STRINGS
from surveys import analytics, catalogue
from surveys.chart import line_chart
from surveys.definitions import END, DefinitionError, parse_yaml
from surveys.dispatch import SURVEY_CHANNELS

EDITORS = (StaffRole.supervisor, StaffRole.admin)
READERS = (StaffRole.supervisor, StaffRole.admin, StaffRole.marketer)
DEFAULT_DAYS = 90
RESERVED = frozenset({"new", "analytics"})  # /console/surveys/<code> would be these pages

STRINGS = {
    "en": {"surveys": "Surveys", "analytics": "Survey analytics", "new": "New survey", "code": "Code",
           "title": "Title", "version": "Version", "source": "Source", "active": "Active", "inactive": "Off",
           "responses": "Sent", "edit": "Edit", "save": "Save", "turn_on": "Turn on", "turn_off": "Turn off",
           "definition": "Definition (YAML)", "preview": "Preview", "problems": "This definition cannot be saved:",
           "saved": "Saved as version {v}.", "file": "file", "console": "console", "question": "Question",
           "type": "Type", "then": "Then", "next": "next question", "end": "end", "survey": "Survey",
           "all": "All", "from": "From", "to": "To", "department": "Department", "doctor": "Doctor",
           "channel": "Channel", "period": "Period", "day": "Day", "week": "Week", "month": "Month",
           "show": "Show", "sent": "Sent", "responded": "Answered", "rate": "Response rate", "nps": "NPS",
           "csat": "CSAT", "promoters": "Promoters", "passives": "Passives", "detractors": "Detractors",
           "satisfied": "Satisfied (4-5)", "n": "n", "by_department": "By department", "by_doctor": "By doctor",
           "by_channel": "By channel", "trend": "Trend", "comments": "Comments", "language": "Language",
           "answer": "Comment", "when": "When", "alert": "Alert", "no_comments": "No comments in this selection.",
           "nps_trend": "NPS by period (-100 to 100)", "csat_trend": "CSAT by period (1 to 5)",
           "comments_hidden": "Patients' comments are shown to supervisors and admins.",
           "options": "Options", "branching": "Branching", "conversation": "Conversation"},
    "ar": {"surveys": "الاستبيانات", "analytics": "تحليلات الاستبيانات", "new": "استبيان جديد", "code": "الرمز",
           "title": "العنوان", "version": "الإصدار", "source": "المصدر", "active": "مفعّل", "inactive": "متوقف",
           "responses": "المرسلة", "edit": "تعديل", "save": "حفظ", "turn_on": "تفعيل", "turn_off": "إيقاف",
           "definition": "التعريف (YAML)", "preview": "معاينة", "problems": "لا يمكن حفظ هذا التعريف:",
           "saved": "حُفظ بالإصدار {v}.", "file": "ملف", "console": "لوحة الموظفين", "question": "السؤال",
           "type": "النوع", "then": "بعده", "next": "السؤال التالي", "end": "النهاية", "survey": "الاستبيان",
           "all": "الكل", "from": "من", "to": "إلى", "department": "القسم", "doctor": "الطبيب",
           "channel": "القناة", "period": "الفترة", "day": "يوم", "week": "أسبوع", "month": "شهر",
           "show": "عرض", "sent": "المرسلة", "responded": "المُجابة", "rate": "نسبة الاستجابة", "nps": "NPS",
           "csat": "CSAT", "promoters": "المروّجون", "passives": "المحايدون", "detractors": "المنتقدون",
           "satisfied": "الراضون (٤-٥)", "n": "العدد", "by_department": "حسب القسم", "by_doctor": "حسب الطبيب",
           "by_channel": "حسب القناة", "trend": "الاتجاه", "comments": "التعليقات", "language": "اللغة",
           "answer": "التعليق", "when": "التاريخ", "alert": "تنبيه", "no_comments": "لا توجد تعليقات في هذا الاختيار.",
           "nps_trend": "NPS حسب الفترة (-١٠٠ إلى ١٠٠)", "csat_trend": "CSAT حسب الفترة (١ إلى ٥)",
           "comments_hidden": "تعليقات المرضى تظهر للمشرفين ومديري النظام.",
           "options": "الخيارات", "branching": "التفرع", "conversation": "المحادثة"},
}

NEW_SURVEY = """code: my-survey
title: {en: "My survey", ar: "استبياني"}
intro: {en: "Thank you for choosing {hospital}.", ar: "شكرًا لاختيارك {hospital}."}
thanks: {en: "Thank you for your answers!", ar: "شكرًا لإجاباتك!"}
alert: {nps_at_most: 6}
questions:
  - id: recommend
    type: nps
    text: {en: "How likely are you to recommend us to a friend?", ar: "ما مدى احتمال أن توصي بنا لصديق؟"}
    next:
      - when: {at_most: 6}
        goto: improve
      - goto: end
  - id: improve
    type: text
    text: {en: "What should we improve?", ar: "ما الذي ينبغي أن نحسّنه؟"}
"""


def _hub(request: web.Request):
    from bot.app import HUB

    return request.app[HUB]


def _hospital(request: web.Request) -> dict:
    return load_hospital(_hub(request).settings.hospital_file).get("hospital") or {}


def _ctx(request: web.Request, **values) -> dict:
    user = request[STAFF]
    lang = "ar" if user.language == "ar" else "en"
    return {"t": CONSOLE_STRINGS[lang], "s": STRINGS[lang], "lang": lang, "user": user, "csrf": request.get(CSRF),
            "can_edit": user.role in EDITORS, **values}


def _flow(definition, lang: str) -> list[dict]:
    """The questions with where each answer leads, for the preview."""
    words = STRINGS[lang]
    out = []
    for index, question in enumerate(definition.questions):
        rules = ([{"when": None, "goto": question.next}] if isinstance(question.next, str)
                 else [r.model_dump(by_alias=True) for r in question.next or []])
        branches = []
        for rule in rules:
            condition = ", ".join(f"{k} {v}" for k, v in (rule["when"] or {}).items() if v is not None)
            target = words["end"] if rule["goto"] == END else rule["goto"]
            branches.append(f"{condition} → {target}" if condition else f"→ {target}")
        if not any(r["when"] is None for r in rules):
            following = definition.questions[index + 1].id if index + 1 < len(definition.questions) else words["end"]
            branches.append(f"→ {following}")
        out.append({"q": question, "branches": branches})
    return out


@requires(*READERS)
async def survey_list(request: web.Request) -> web.Response:
    async with _hub(request).sessions() as session:
        surveys = (await session.scalars(select(Survey).order_by(Survey.code))).all()
        sent = dict((await session.execute(select(SurveyResponse.survey_id, func.count())
                                           .group_by(SurveyResponse.survey_id))).all())
    return aiohttp_jinja2.render_template("surveys_list.html", request, _ctx(request, surveys=surveys, sent=sent))


async def _editor(request: web.Request, *, survey: Survey | None, source: str, problems: list[str] | None = None,
                  notice: str | None = None, status: int = 200) -> web.Response:
    definition = None
    try:
        definition = parse_yaml(source)
    except DefinitionError as exc:
        problems = problems or exc.problems
    lang = "ar" if request[STAFF].language == "ar" else "en"
    return aiohttp_jinja2.render_template("surveys_edit.html", request, _ctx(
        request, survey=survey, source=source, problems=problems, notice=notice, definition=definition,
        flow=_flow(definition, lang) if definition else []), status=status)


@requires(*EDITORS)
async def edit_page(request: web.Request) -> web.Response:
    code = request.match_info.get("code")
    if code is None:
        return await _editor(request, survey=None, source=NEW_SURVEY)
    async with _hub(request).sessions() as session:
        survey = await catalogue.by_code(session, code)
    if survey is None:
        raise web.HTTPNotFound(text="no such survey")
    notice = STRINGS["ar" if request[STAFF].language == "ar" else "en"]["saved"].format(v=survey.version) \
        if request.query.get("saved") else None
    return await _editor(request, survey=survey, source=catalogue.definition_of(survey).to_yaml(), notice=notice)


@requires(*EDITORS)
async def save(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    source = str(form.get("definition", ""))[:50_000]
    code = request.match_info.get("code")
    hub = _hub(request)
    async with hub.sessions() as session:
        survey = await catalogue.by_code(session, code) if code else None
        if code and survey is None:
            raise web.HTTPNotFound(text="no such survey")
        try:
            definition = parse_yaml(source)
        except DefinitionError as exc:
            return await _editor(request, survey=survey, source=source, problems=exc.problems, status=400)
        if code and definition.code != code:
            return await _editor(request, survey=survey, source=source, status=400,
                                 problems=[f"code: a survey keeps its code ({code})"])
        if not code and definition.code in RESERVED:
            return await _editor(request, survey=None, source=source, status=400,
                                 problems=[f"code: {definition.code} names a console page; choose another"])
        if not code and await catalogue.by_code(session, definition.code):
            return await _editor(request, survey=None, source=source, status=409,
                                 problems=[f"code: {definition.code} is already taken"])
        survey = await catalogue.save(session, definition, request[STAFF].username, _hospital(request), survey)
        audit(session, request, request[STAFF], "survey_save", detail={"survey": survey.code,
                                                                       "version": survey.version})
        await session.commit()
    hub.ehr_sync.wakeup.set()
    raise web.HTTPFound(f"/console/surveys/{survey.code}?saved=1")


@requires(*EDITORS)
async def toggle(request: web.Request) -> web.StreamResponse:
    code = request.match_info["code"]
    async with _hub(request).sessions() as session:
        survey = await catalogue.by_code(session, code)
        if survey is None:
            raise web.HTTPNotFound(text="no such survey")
        survey.active = not survey.active
        audit(session, request, request[STAFF], "survey_active" if survey.active else "survey_inactive",
              detail={"survey": code})
        await session.commit()
    raise web.HTTPFound("/console/surveys")


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise web.HTTPBadRequest(text="dates are YYYY-MM-DD") from None


@requires(*READERS)
async def analytics_page(request: web.Request) -> web.Response:
    hub = _hub(request)
    query = request.query
    user = request[STAFF]
    lang = "ar" if user.language == "ar" else "en"
    today = utcnow().astimezone(ZoneInfo(hub.settings.timezone)).date()
    filters = analytics.Filters(
        survey=query.get("survey") or None, start=_date(query.get("from")) or today - timedelta(days=DEFAULT_DAYS),
        end=_date(query.get("to")), department=query.get("department") or None,
        practitioner=query.get("practitioner") or None, channel=query.get("channel") or None,
        period=query.get("period") if query.get("period") in analytics.PERIODS else "week")
    with_comments = user.role in EDITORS
    async with hub.sessions() as session:
        report = await analytics.report(session, filters, hub.settings.timezone, lang, comments=with_comments)
        surveys = (await session.scalars(select(Survey).order_by(Survey.code))).all()
        departments = (await session.scalars(select(Department).order_by(Department.id))).all()
        doctors = (await session.scalars(select(Practitioner).order_by(Practitioner.name_en))).all()
        # Comments are the patients' own words: reading them is audited like any patient record.
        audit(session, request, user, "view_survey_analytics", detail={
            "survey": filters.survey, "comments": len(report.comments) if with_comments else None})
        await session.commit()
    words = STRINGS[lang]
    charts = [line_chart([(r.label, r.figures.nps.score) for r in report.trend], low=-100, high=100,
                         title=words["nps_trend"], ticks=[-100, -50, 0, 50, 100]),
              line_chart([(r.label, r.figures.csat.average) for r in report.trend], low=1, high=5,
                         title=words["csat_trend"], ticks=[1, 2, 3, 4, 5], color="#1d4ed8")]
    return aiohttp_jinja2.render_template("surveys_analytics.html", request, _ctx(
        request, report=report, filters=filters, surveys=surveys, departments=departments, doctors=doctors,
        channels=SURVEY_CHANNELS, charts=charts, with_comments=with_comments))


def setup_views(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/console/surveys", survey_list),
        web.get("/console/surveys/analytics", analytics_page),
        web.get("/console/surveys/new", edit_page),
        web.post("/console/surveys/new", save),
        web.get(r"/console/surveys/{code:[a-z0-9][a-z0-9-]{1,48}}", edit_page),
        web.post(r"/console/surveys/{code:[a-z0-9][a-z0-9-]{1,48}}", save),
        web.post(r"/console/surveys/{code:[a-z0-9][a-z0-9-]{1,48}}/active", toggle),
    ])
