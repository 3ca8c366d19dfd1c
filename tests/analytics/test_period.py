"""The dashboard's days are the hospital's days, also where clocks change."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from analytics import queries
from crm_store.models import ChannelIdentity, Conversation, Message, Patient


async def test_days_follow_the_hospital_clock_through_daylight_saving(sessions):
    """Cairo moves its clocks in spring: a day's bounds there are 23 hours apart once a year."""
    cairo = ZoneInfo("Africa/Cairo")
    period = queries.Period(date(2026, 4, 20), date(2026, 5, 5), cairo)
    times = [datetime(2026, 4, 23, 21, 30, tzinfo=timezone.utc) + timedelta(hours=h) for h in range(0, 400, 7)]
    async with sessions() as session:
        patient = Patient()
        session.add(patient)
        await session.flush()
        identity = ChannelIdentity(patient_id=patient.id, channel="sms", address="+201000000000")
        session.add(identity)
        await session.flush()
        for at in times:
            conversation = Conversation(patient_id=patient.id, identity_id=identity.id, channel="sms")
            session.add(conversation)
            await session.flush()
            session.add(Message(conversation_id=conversation.id, channel="sms", direction="in", sender="patient",
                                text="hi", status="answered", created_at=at))
        await session.commit()
        figures = await queries.conversations_by_day(session, period)
    expected = {}
    for at in times:
        day = at.astimezone(cairo).date()
        if period.first <= day <= period.last:
            expected[day] = expected.get(day, 0) + 1
    assert {d: n for d, n in zip(figures["days"], figures["channels"]["sms"]) if n} == expected


def test_a_period_is_whole_local_days():
    period = queries.Period(date(2026, 1, 5), date(2026, 1, 18), ZoneInfo("Asia/Riyadh"))
    assert period.start == datetime(2026, 1, 4, 21, tzinfo=timezone.utc)
    assert period.end == datetime(2026, 1, 18, 21, tzinfo=timezone.utc)
    assert len(period.days) == 14
    with pytest.raises(ValueError):
        queries.Period(date(2026, 1, 5), date(2026, 1, 4), ZoneInfo("Asia/Riyadh"))
    with pytest.raises(ValueError):
        queries.Period(date(2025, 1, 1), date(2026, 1, 4), ZoneInfo("Asia/Riyadh"))
