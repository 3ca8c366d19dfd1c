"""The dashboard's figures, each one SQL aggregate over the CRM store (no patient identities leave
this module: only counts, rates and durations).

Days are the hospital's days (SILA_TIMEZONE): a period runs from local midnight of its first day
to local midnight after its last, and a timestamp falls on the day whose bounds contain it. The
bounds are computed here, in UTC, so SQLite and PostgreSQL bucket alike and zones with daylight
saving are right.

Definitions (docs/DESIGN.md):
- an *active conversation* had at least one patient message in the period;
- it was *handed over* when it had a handoff (the bot passed it to staff) or a staff reply in the
  period, and *contained* otherwise;
- *time to first human reply* runs from a handoff to the first staff message sent to the patient
  (internal notes do not count) in that conversation;
- *misunderstood*: the classifier gave up (nlu_fallback) or was less sure than
  SILA_NLU_REVIEW_CONFIDENCE; out of scope is counted apart (the bot understood it cannot help);
- *booking conversion*: of the conversations in which the patient asked to book, the share where an
  appointment was booked for that patient on that channel within 24 hours of the first request;
- *no-show rate*: of the appointments in the period that were attended or missed, the share missed
  (cancelled ones, and those not yet marked either way, are left out).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import String, and_, case, cast, distinct, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import (
    Appointment,
    AppointmentStatus,
    Conversation,
    Department,
    JourneyEvent,
    Message,
    Practitioner,
    Slot,
)

BOOKING_WINDOW = timedelta(hours=24)
MISUNDERSTOOD = "nlu_fallback"
OUT_OF_SCOPE = "out_of_scope"
MAX_DAYS = 366


@dataclass(frozen=True)
class Period:
    first: date
    last: date
    zone: ZoneInfo

    def __post_init__(self):
        if self.last < self.first:
            raise ValueError("the period ends before it starts")
        if (self.last - self.first).days >= MAX_DAYS:
            raise ValueError(f"a period is at most {MAX_DAYS} days")

    @classmethod
    def ending_today(cls, days: int, zone: ZoneInfo, now: datetime | None = None) -> "Period":
        today = (now or datetime.now(timezone.utc)).astimezone(zone).date()
        return cls(today - timedelta(days=days - 1), today, zone)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), self.zone).astimezone(timezone.utc)

    @property
    def start(self) -> datetime:
        return self.midnight(self.first)

    @property
    def end(self) -> datetime:
        return self.midnight(self.last + timedelta(days=1))

    def within(self, column):
        return and_(column >= self.start, column < self.end)

    def day_of(self, column):
        """The period's day index (0 = first day) of a timestamp inside the period."""
        bounds = [self.midnight(day) for day in self.days[1:]]
        return case(*((column < bound, i) for i, bound in enumerate(bounds)), else_=len(bounds))


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _patient_messages(period: Period):
    return and_(Message.direction == "in", Message.sender == "patient", period.within(Message.created_at))


def _active(period: Period):
    return select(Message.conversation_id).where(_patient_messages(period)).distinct()


def _handoffs(period: Period):
    """Handoff journey events of the period with the conversation they name."""
    return and_(JourneyEvent.kind == "handoff", period.within(JourneyEvent.occurred_at))


def _conversation_of_event():
    return cast(Conversation.id, String) == JourneyEvent.reference


async def conversations_by_day(session: AsyncSession, period: Period) -> dict:
    """Active conversations per day and channel: {"days": [...], "channels": {channel: [n per day]}}."""
    day = period.day_of(Message.created_at).label("day")
    rows = (await session.execute(
        select(day, Message.channel, func.count(distinct(Message.conversation_id)))
        .where(_patient_messages(period)).group_by(day, Message.channel))).all()
    channels: dict[str, list[int]] = {}
    for index, channel, count in rows:
        channels.setdefault(channel, [0] * len(period.days))[index] = count
    return {"days": period.days, "channels": dict(sorted(channels.items()))}


async def containment(session: AsyncSession, period: Period) -> dict:
    active = _active(period).subquery()
    by_bot = select(Conversation.id).join(JourneyEvent, _conversation_of_event()).where(_handoffs(period))
    by_staff = select(Message.conversation_id).where(
        Message.direction == "out", Message.sender == "staff", Message.private.is_(False),
        period.within(Message.created_at))
    total = await session.scalar(select(func.count()).select_from(active))
    handed = await session.scalar(select(func.count()).select_from(active).where(
        or_(active.c.conversation_id.in_(by_bot), active.c.conversation_id.in_(by_staff))))
    return {"conversations": total, "handed_over": handed, "contained": total - handed,
            "rate": _rate(total - handed, total)}


async def handoffs(session: AsyncSession, period: Period) -> dict:
    reason = func.coalesce(JourneyEvent.data["reason"].as_string(), "unknown").label("reason")
    rows = (await session.execute(select(reason, func.count()).where(_handoffs(period))
                                  .group_by(reason).order_by(func.count().desc(), reason))).all()
    active = _active(period).subquery()
    conversations = await session.scalar(
        select(func.count(distinct(Conversation.id))).join(JourneyEvent, _conversation_of_event())
        .where(_handoffs(period), Conversation.id.in_(select(active.c.conversation_id))))
    total = await session.scalar(select(func.count()).select_from(active))
    return {"events": sum(n for _, n in rows), "conversations": conversations, "active": total,
            "rate": _rate(conversations, total), "reasons": [(r, n) for r, n in rows]}


async def first_reply(session: AsyncSession, period: Period, target_minutes: int = 5) -> dict:
    """Waits from each handoff of the period to the first staff reply after it, in seconds."""
    reply = (select(func.min(Message.created_at))
             .where(Message.conversation_id == Conversation.id, Message.direction == "out",
                    Message.sender == "staff", Message.private.is_(False),
                    Message.created_at >= JourneyEvent.occurred_at)
             .correlate(Conversation, JourneyEvent).scalar_subquery())
    rows = (await session.execute(select(JourneyEvent.occurred_at, reply).join(Conversation, _conversation_of_event())
                                  .where(_handoffs(period)))).all()
    waits = sorted((answered - asked).total_seconds() for asked, answered in rows if answered is not None)
    return {"handoffs": len(rows), "answered": len(waits), "unanswered": len(rows) - len(waits),
            "median_seconds": statistics.median(waits) if waits else None,
            "p90_seconds": _percentile(waits, 0.9),
            "within_target": _rate(sum(w <= target_minutes * 60 for w in waits), len(waits)),
            "target_minutes": target_minutes}


def _percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not values:
        return None
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


async def intents(session: AsyncSession, period: Period, threshold: float, limit: int = 10) -> dict:
    """Top intents of patient messages the bot read, and how many it misunderstood, per language."""
    read = and_(_patient_messages(period), Message.intent.is_not(None), ~Message.text.startswith("/"))
    top = (await session.execute(
        select(Message.intent, func.count()).where(read, Message.intent.not_in((MISUNDERSTOOD,)))
        .group_by(Message.intent).order_by(func.count().desc(), Message.intent).limit(limit))).all()
    misunderstood = or_(Message.intent == MISUNDERSTOOD,
                        and_(Message.intent != OUT_OF_SCOPE, Message.confidence < threshold))
    language = func.coalesce(Message.language, "?").label("language")
    rows = (await session.execute(
        select(language, func.count(), func.sum(case((misunderstood, 1), else_=0)),
               func.sum(case((Message.intent == OUT_OF_SCOPE, 1), else_=0)))
        .where(read).group_by(language).order_by(language))).all()
    by_language = {lang: {"messages": n, "misunderstood": int(m or 0), "out_of_scope": int(o or 0),
                          "rate": _rate(int(m or 0), n)} for lang, n, m, o in rows}
    total = sum(v["messages"] for v in by_language.values())
    missed = sum(v["misunderstood"] for v in by_language.values())
    return {"top": [(i, n) for i, n in top], "messages": total, "misunderstood": missed,
            "out_of_scope": sum(v["out_of_scope"] for v in by_language.values()),
            "rate": _rate(missed, total), "by_language": by_language}


async def bookings(session: AsyncSession, period: Period) -> dict:
    first = (select(Message.conversation_id, func.min(Message.created_at).label("first"))
             .where(_patient_messages(period), Message.intent == "book_appointment")
             .group_by(Message.conversation_id).subquery())
    requests = (await session.execute(
        select(Conversation.patient_id, Conversation.channel, first.c.first)
        .join(first, first.c.conversation_id == Conversation.id))).all()
    patients = {p for p, _, _ in requests}
    made: dict[tuple[int, str], list[datetime]] = {}
    if patients:
        for patient_id, channel, at in (await session.execute(
                select(Appointment.patient_id, Appointment.source_channel, Appointment.created_at)
                .where(Appointment.patient_id.in_(patients), Appointment.created_at >= period.start,
                       Appointment.created_at < period.end + BOOKING_WINDOW))).all():
            made.setdefault((patient_id, channel), []).append(at)
    booked = sum(any(asked <= at < asked + BOOKING_WINDOW for at in made.get((patient, channel), []))
                 for patient, channel, asked in requests)
    by_channel = (await session.execute(
        select(Appointment.source_channel, func.count()).where(period.within(Appointment.created_at))
        .group_by(Appointment.source_channel).order_by(func.count().desc(), Appointment.source_channel))).all()
    return {"requests": len(requests), "booked": booked, "rate": _rate(booked, len(requests)),
            "appointments_by_channel": [(c, n) for c, n in by_channel]}


async def no_shows(session: AsyncSession, period: Period) -> dict:
    outcome = Appointment.status.in_((AppointmentStatus.fulfilled, AppointmentStatus.noshow))
    missed = func.sum(case((Appointment.status == AppointmentStatus.noshow, 1), else_=0))
    rows = (await session.execute(
        select(Department.code, Department.name_en, Department.name_ar, func.count(), missed)
        .select_from(Appointment).join(Slot, Slot.id == Appointment.slot_id)
        .join(Practitioner, Practitioner.id == Appointment.practitioner_id)
        .join(Department, Department.id == Practitioner.department_id)
        .where(outcome, period.within(Slot.start_at))
        .group_by(Department.code, Department.name_en, Department.name_ar).order_by(Department.code))).all()
    departments = [{"code": code, "name_en": en, "name_ar": ar, "outcomes": n, "no_shows": int(m or 0),
                    "rate": _rate(int(m or 0), n)} for code, en, ar, n, m in rows]
    total, missed_all = sum(d["outcomes"] for d in departments), sum(d["no_shows"] for d in departments)
    return {"outcomes": total, "no_shows": missed_all, "attended": total - missed_all,
            "rate": _rate(missed_all, total), "by_department": departments}
