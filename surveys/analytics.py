"""Survey analytics for the console: NPS, CSAT and response rate overall, by department, doctor,
channel and period, and the free-text comments with their language.

A survey counts in the period it was sent (in the hospital's zone); weeks start on Sunday, as the
hospital's do. The figures are counted in one streamed pass over the responses' columns, the same way on
SQLite and PostgreSQL (bench/surveys.py times it)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import Department, Practitioner, SurveyAnswer, SurveyResponse
from surveys import scoring
from surveys.render import fill
from surveys.versions import version

PERIODS = ("day", "week", "month")
MAX_BUCKETS = 120
MAX_COMMENTS = 200


@dataclass
class Filters:
    survey: str | None = None
    start: date | None = None
    end: date | None = None  # inclusive
    department: str | None = None
    practitioner: str | None = None
    channel: str | None = None
    period: str = "week"


@dataclass
class Figures:
    """Counts that add up as responses are read (one pass over them, whatever the grouping)."""

    sent: int = 0
    responded: int = 0
    nps_n: int = 0
    promoters: int = 0
    detractors: int = 0
    csat_n: int = 0
    csat_total: int = 0
    satisfied: int = 0

    def add(self, answered: int, nps: int | None, csat: int | None) -> None:
        self.sent += 1
        self.responded += answered > 0
        if nps is not None:
            self.nps_n += 1
            self.promoters += nps >= scoring.PROMOTER
            self.detractors += nps <= scoring.DETRACTOR
        if csat is not None:
            self.csat_n += 1
            self.csat_total += csat
            self.satisfied += csat >= 4

    @property
    def nps(self) -> scoring.Nps:
        return scoring.Nps(self.nps_n, self.promoters, self.nps_n - self.promoters - self.detractors, self.detractors)

    @property
    def csat(self) -> scoring.Csat:
        return scoring.Csat(self.csat_n, self.csat_total, self.satisfied)

    @property
    def response_rate(self) -> float | None:
        return scoring.rate(self.responded, self.sent)


@dataclass
class Row:
    key: str | None
    label: str
    figures: Figures


@dataclass
class Comment:
    at: datetime
    survey: str
    question: str
    text: str
    language: str | None
    nps: int | None
    csat: int | None
    channel: str
    department: str | None
    conversation_id: int | None
    alert: str | None


@dataclass
class Report:
    overall: Figures
    by_department: list[Row]
    by_practitioner: list[Row]
    by_channel: list[Row]
    trend: list[Row]
    comments: list[Comment]


def bucket(moment: datetime, zone: ZoneInfo, period: str) -> date:
    """The first day of the day, week (from Sunday) or month `moment` falls in, locally."""
    day = moment.astimezone(zone).date()
    if period == "day":
        return day
    if period == "month":
        return day.replace(day=1)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def _step(day: date, period: str) -> date:
    if period == "day":
        return day + timedelta(days=1)
    if period == "week":
        return day + timedelta(days=7)
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _conditions(filters: Filters, zone: ZoneInfo) -> list:
    where = []
    if filters.survey:
        where.append(SurveyResponse.survey_code == filters.survey)
    if filters.start:
        where.append(SurveyResponse.offered_at >= datetime.combine(filters.start, time(), zone)
                     .astimezone(timezone.utc))
    if filters.end:
        where.append(SurveyResponse.offered_at < datetime.combine(filters.end + timedelta(days=1), time(), zone)
                     .astimezone(timezone.utc))
    for column, value in ((SurveyResponse.department, filters.department),
                          (SurveyResponse.practitioner, filters.practitioner),
                          (SurveyResponse.channel, filters.channel)):
        if value:
            where.append(column == value)
    return where


def _rows(groups: dict, labels: dict) -> list[Row]:
    out = [Row(key, labels.get(key, key) if key else "—", figures) for key, figures in groups.items()]
    return sorted(out, key=lambda r: (-r.figures.sent, r.label))


def _trend(groups: dict[date, Figures], period: str) -> list[Row]:
    if not groups:
        return []
    out, day, last = [], min(groups), max(groups)
    while day <= last and len(out) < MAX_BUCKETS:
        out.append(Row(day.isoformat(), day.isoformat(), groups.get(day) or Figures()))
        day = _step(day, period)
    return out


async def report(session: AsyncSession, filters: Filters, zone_name: str, language: str = "en",
                 comments: bool = True) -> Report:
    zone = ZoneInfo(zone_name)
    period = filters.period if filters.period in PERIODS else "week"
    where = _conditions(filters, zone)
    overall = Figures()
    groups: tuple[dict, ...] = (defaultdict(Figures), defaultdict(Figures), defaultdict(Figures), defaultdict(Figures))
    result = await session.stream(select(
        SurveyResponse.department, SurveyResponse.practitioner, SurveyResponse.channel, SurveyResponse.offered_at,
        SurveyResponse.answered, SurveyResponse.nps, SurveyResponse.csat).where(*where)
        .execution_options(yield_per=5000))
    async for rows in result.partitions():
        for department, doctor, channel, offered_at, answered, nps, csat in rows:
            for figures in (overall, groups[0][department], groups[1][doctor], groups[2][channel],
                            groups[3][bucket(offered_at, zone, period)]):
                figures.add(answered, nps, csat)
    departments = {d.code: d.name(language) for d in (await session.scalars(select(Department))).all()}
    doctors = {p.code: p.name(language) for p in (await session.scalars(select(Practitioner))).all()}
    return Report(
        overall=overall,
        by_department=_rows(groups[0], departments),
        by_practitioner=_rows(groups[1], doctors),
        by_channel=_rows(groups[2], {}),
        trend=_trend(groups[3], period),
        comments=await _comments(session, where, language) if comments else [],
    )


async def _comments(session: AsyncSession, where: list, language: str) -> list[Comment]:
    found = (await session.execute(
        select(SurveyAnswer, SurveyResponse).join(SurveyResponse, SurveyResponse.id == SurveyAnswer.response_id)
        .where(SurveyAnswer.kind == "text", SurveyAnswer.skipped.is_(False), *where)
        .order_by(SurveyAnswer.answered_at.desc(), SurveyAnswer.id.desc()).limit(MAX_COMMENTS))).all()
    out, definitions = [], {}
    for answer, response in found:
        key = (response.survey_id, response.survey_version)
        if key not in definitions:
            definitions[key] = await version(session, *key)
        definition = definitions[key]
        asked = next((fill(q.text(language), response.context, language) for q in definition.questions
                      if q.id == answer.question_id), answer.question_id)
        out.append(Comment(answer.answered_at, response.survey_code, asked, answer.value_text or "", answer.language,
                           response.nps, response.csat, response.channel, response.department,
                           response.conversation_id, response.alert))
    return out
