"""Every dashboard figure equals a hand-written SQL query over generated data, on SQLite and on
PostgreSQL. The hand-written queries pick the period by the local date (Riyadh, UTC+3 all year),
not by the UTC bounds the dashboard computes, so the two are independent."""
from __future__ import annotations

import asyncio
import statistics
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from analytics import extra, queries
from crm_store.db import create_engine, sessionmaker
from crm_store.migrate import upgrade
from crm_store.seed import seed_hospital
from tests.analytics.generate import generate
from tests.conftest import HOSPITAL, _reset_postgres

ZONE = ZoneInfo("Asia/Riyadh")
FIRST, LAST = date(2026, 1, 5), date(2026, 1, 18)
THRESHOLD = 0.6


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def generated(request, tmp_path_factory, postgres_url) -> str:
    """One generated store per backend for the whole module (the queries only read it)."""
    url = (f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('analytics')}/sila.db" if request.param == "sqlite"
           else postgres_url)

    async def prepare() -> None:
        if request.param == "postgres":
            await _reset_postgres(url)
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        try:
            async with sessionmaker(engine)() as session:
                await seed_hospital(session, HOSPITAL)
            await generate(sessionmaker(engine))
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:  # its own event loop: the tests' loops come and go
        pool.submit(asyncio.run, prepare()).result()
    return url


@pytest.fixture
async def store(generated):
    engine = create_engine(generated)
    yield sessionmaker(engine)
    await engine.dispose()


def sql(session, sqlite: str, postgres: str | None = None) -> str:
    """The dialect's spelling: {day:col} is the column's local date, {in:col} its test on the period."""
    dialect = session.bind.dialect.name
    query = sqlite if dialect == "sqlite" or postgres is None else postgres

    def day(column: str) -> str:
        return (f"date({column}, '+3 hours')" if dialect == "sqlite"
                else f"CAST(({column} AT TIME ZONE 'Asia/Riyadh') AS DATE)")

    import re

    query = re.sub(r"\{in:([\w.]+)\}", lambda m: f"{day(m.group(1))} BETWEEN :first AND :last", query)
    return re.sub(r"\{day:([\w.]+)\}", lambda m: day(m.group(1)), query)


async def fetch(session, sqlite: str, postgres: str | None = None) -> list[tuple]:
    params = {"first": FIRST.isoformat(), "last": LAST.isoformat()}
    if session.bind.dialect.name == "postgresql":
        params = {"first": FIRST, "last": LAST}
    return [tuple(r) for r in (await session.execute(text(sql(session, sqlite, postgres)), params)).all()]


PERIOD = queries.Period(FIRST, LAST, ZONE)
PATIENT_MESSAGE = "m.direction = 'in' AND m.sender = 'patient' AND {in:m.created_at}"
ACTIVE = f"SELECT DISTINCT m.conversation_id AS id FROM messages m WHERE {PATIENT_MESSAGE}"


async def test_conversations_by_day_and_channel(store):
    async with store() as session:
        figures = await queries.conversations_by_day(session, PERIOD)
        expected = await fetch(session, f"""
            SELECT {{day:m.created_at}} AS day, m.channel, COUNT(DISTINCT m.conversation_id)
            FROM messages m WHERE {PATIENT_MESSAGE} GROUP BY 1, 2""")
    got = {(day, channel): n for channel, counts in figures["channels"].items()
           for day, n in zip(figures["days"], counts) if n}
    assert got == {(date.fromisoformat(str(d)), c): n for d, c, n in expected}
    assert figures["days"] == [FIRST + timedelta(days=i) for i in range(14)]
    assert len(got) > 20


async def test_containment(store):
    async with store() as session:
        figures = await queries.containment(session, PERIOD)
        [(total, handed)] = await fetch(session, f"""
            WITH active AS ({ACTIVE})
            SELECT COUNT(*), SUM(CASE WHEN EXISTS (
                       SELECT 1 FROM journey_events j WHERE j.kind = 'handoff'
                       AND j.reference = CAST(a.id AS TEXT) AND {{in:j.occurred_at}})
                   OR EXISTS (
                       SELECT 1 FROM messages s WHERE s.conversation_id = a.id AND s.direction = 'out'
                       AND s.sender = 'staff' AND NOT s.private AND {{in:s.created_at}})
                   THEN 1 ELSE 0 END)
            FROM active a""")
    assert (figures["conversations"], figures["handed_over"], figures["contained"]) == (total, handed, total - handed)
    assert figures["rate"] == pytest.approx((total - handed) / total)
    assert 0 < handed < total


async def test_handoff_rate_and_reasons(store):
    async with store() as session:
        figures = await queries.handoffs(session, PERIOD)
        reasons = await fetch(session, """
            SELECT COALESCE(json_extract(j.data, '$.reason'), 'unknown'), COUNT(*) FROM journey_events j
            WHERE j.kind = 'handoff' AND {in:j.occurred_at} GROUP BY 1""", """
            SELECT COALESCE(j.data ->> 'reason', 'unknown'), COUNT(*) FROM journey_events j
            WHERE j.kind = 'handoff' AND {in:j.occurred_at} GROUP BY 1""")
        [(conversations, active)] = await fetch(session, f"""
            WITH active AS ({ACTIVE})
            SELECT (SELECT COUNT(DISTINCT j.reference) FROM journey_events j WHERE j.kind = 'handoff'
                    AND {{in:j.occurred_at}} AND j.reference IN (SELECT CAST(id AS TEXT) FROM active)),
                   (SELECT COUNT(*) FROM active)""")
    assert sorted(figures["reasons"]) == sorted(reasons)
    assert figures["events"] == sum(n for _, n in reasons)
    assert (figures["conversations"], figures["active"]) == (conversations, active)
    assert figures["rate"] == pytest.approx(conversations / active)
    assert "unknown" in dict(figures["reasons"])  # an event without a reason is counted, not lost


async def test_time_to_first_human_reply(store):
    first_reply = """(SELECT MIN(m.created_at) FROM messages m WHERE m.conversation_id = CAST(j.reference AS INTEGER)
                      AND m.direction = 'out' AND m.sender = 'staff' AND NOT m.private
                      AND m.created_at >= j.occurred_at)"""
    async with store() as session:
        figures = await queries.first_reply(session, PERIOD, target_minutes=5)
        waits = await fetch(session, f"""
            SELECT (julianday({first_reply}) - julianday(j.occurred_at)) * 86400 FROM journey_events j
            WHERE j.kind = 'handoff' AND {{in:j.occurred_at}}""", f"""
            SELECT EXTRACT(EPOCH FROM {first_reply} - j.occurred_at) FROM journey_events j
            WHERE j.kind = 'handoff' AND {{in:j.occurred_at}}""")
        if session.bind.dialect.name == "postgresql":
            [(median, p90)] = await fetch(session, "", f"""
                SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY w), percentile_cont(0.9) WITHIN GROUP (ORDER BY w)
                FROM (SELECT EXTRACT(EPOCH FROM {first_reply} - j.occurred_at) AS w FROM journey_events j
                      WHERE j.kind = 'handoff' AND {{in:j.occurred_at}}) x WHERE w IS NOT NULL""")
        else:  # SQLite has no percentile function: the median of the hand-computed waits
            answered = sorted(float(w) for (w,) in waits if w is not None)
            median = statistics.median(answered)
            p90 = statistics.quantiles(answered, n=10, method="inclusive")[-1]
    answered = [float(w) for (w,) in waits if w is not None]
    assert (figures["handoffs"], figures["answered"]) == (len(waits), len(answered))
    assert figures["unanswered"] > 0
    assert figures["median_seconds"] == pytest.approx(float(median), abs=0.01)
    assert figures["p90_seconds"] == pytest.approx(float(p90), abs=0.01)
    assert figures["within_target"] == pytest.approx(sum(w <= 300.005 for w in answered) / len(answered))


async def test_top_intents_and_misunderstandings(store):
    read = ("m.direction = 'in' AND m.sender = 'patient' AND {in:m.created_at} AND m.intent IS NOT NULL "
            "AND m.text NOT LIKE '/%'")
    async with store() as session:
        figures = await queries.intents(session, PERIOD, THRESHOLD)
        top = await fetch(session, f"""
            SELECT m.intent, COUNT(*) FROM messages m WHERE {read} AND m.intent <> 'nlu_fallback'
            GROUP BY m.intent ORDER BY 2 DESC, 1 LIMIT 10""")
        languages = await fetch(session, f"""
            SELECT COALESCE(m.language, '?'), COUNT(*),
                   SUM(CASE WHEN m.intent = 'nlu_fallback' OR (m.intent <> 'out_of_scope' AND m.confidence < 0.6)
                       THEN 1 ELSE 0 END),
                   SUM(CASE WHEN m.intent = 'out_of_scope' THEN 1 ELSE 0 END)
            FROM messages m WHERE {read} GROUP BY 1 ORDER BY 1""")
    assert figures["top"] == top
    assert {k: (v["messages"], v["misunderstood"], v["out_of_scope"]) for k, v in figures["by_language"].items()} == {
        lang: (n, int(m), int(o)) for lang, n, m, o in languages}
    assert set(figures["by_language"]) == {"ar", "en", "?"}
    assert figures["rate"] == pytest.approx(sum(int(m) for _, _, m, _ in languages) / sum(n for _, n, _, _ in languages))


async def test_booking_conversion(store):
    within = {"sqlite": "julianday(a.created_at) >= julianday(f.first) AND julianday(a.created_at) < julianday(f.first) + 1",
              "postgresql": "a.created_at >= f.first AND a.created_at < f.first + INTERVAL '1 day'"}
    query = """
        WITH f AS (SELECT m.conversation_id, MIN(m.created_at) AS first FROM messages m
                   WHERE m.direction = 'in' AND m.sender = 'patient' AND m.intent = 'book_appointment'
                   AND {{in:m.created_at}} GROUP BY m.conversation_id)
        SELECT COUNT(*), SUM(CASE WHEN EXISTS (
                   SELECT 1 FROM appointments a WHERE a.patient_id = c.patient_id AND a.source_channel = c.channel
                   AND {within}) THEN 1 ELSE 0 END)
        FROM f JOIN conversations c ON c.id = f.conversation_id"""
    async with store() as session:
        figures = await queries.bookings(session, PERIOD)
        [(requests, booked)] = await fetch(session, query.format(within=within["sqlite"]),
                                           query.format(within=within["postgresql"]))
        by_channel = await fetch(session, """
            SELECT a.source_channel, COUNT(*) FROM appointments a WHERE {in:a.created_at}
            GROUP BY 1 ORDER BY 2 DESC, 1""")
    assert (figures["requests"], figures["booked"]) == (requests, booked)
    assert 0 < booked < requests
    assert figures["appointments_by_channel"] == by_channel


async def test_no_show_rate(store):
    async with store() as session:
        figures = await queries.no_shows(session, PERIOD)
        rows = await fetch(session, """
            SELECT d.code, COUNT(*), SUM(CASE WHEN a.status = 'noshow' THEN 1 ELSE 0 END)
            FROM appointments a JOIN slots s ON s.id = a.slot_id JOIN practitioners p ON p.id = a.practitioner_id
            JOIN departments d ON d.id = p.department_id
            WHERE a.status IN ('fulfilled', 'noshow') AND {in:s.start_at} GROUP BY d.code ORDER BY d.code""")
    assert [(d["code"], d["outcomes"], d["no_shows"]) for d in figures["by_department"]] == [
        (code, n, int(m)) for code, n, m in rows]
    total, missed = sum(n for _, n, _ in rows), sum(int(m) for _, _, m in rows)
    assert (figures["outcomes"], figures["no_shows"]) == (total, missed)
    assert figures["rate"] == pytest.approx(missed / total)


async def test_campaign_summaries(store):
    async with store() as session:
        [summary] = await extra.campaign_summaries(session, PERIOD)
        [(recipients, skipped, messaged, delivered, failed)] = await fetch(session, """
            SELECT COUNT(*), SUM(CASE WHEN r.status = 'skipped' THEN 1 ELSE 0 END),
                   SUM(CASE WHEN r.message_id IS NOT NULL THEN 1 ELSE 0 END),
                   SUM(CASE WHEN m.status IN ('delivered', 'read') THEN 1 ELSE 0 END),
                   SUM(CASE WHEN m.status = 'failed' THEN 1 ELSE 0 END)
            FROM campaign_recipients r JOIN campaigns c ON c.id = r.campaign_id
            LEFT JOIN messages m ON m.id = r.message_id WHERE {in:c.started_at}""")
    assert summary["name"] == "flu season"
    assert (summary["recipients"], summary["skipped"], summary["messaged"], summary["delivered"], summary["failed"]) == (
        recipients, skipped, messaged, delivered, failed)


async def test_survey_summaries(store):
    async with store() as session:
        summaries = await extra.survey_summaries(session, PERIOD)
        rows = await fetch(session, """
            SELECT s.code, COUNT(*), SUM(CASE WHEN r.answered > 0 THEN 1 ELSE 0 END),
                   SUM(CASE WHEN r.status = 'completed' THEN 1 ELSE 0 END), COUNT(r.nps),
                   SUM(CASE WHEN r.nps >= 9 THEN 1 ELSE 0 END) - SUM(CASE WHEN r.nps <= 6 THEN 1 ELSE 0 END),
                   AVG(r.csat)
            FROM survey_responses r JOIN surveys s ON s.id = r.survey_id WHERE {in:r.offered_at}
            GROUP BY s.code ORDER BY s.code""")
    assert [(s["code"], s["sent"], s["responded"], s["completed"], s["nps_responses"]) for s in summaries] == [
        (code, sent, int(responded), int(completed), nps_n) for code, sent, responded, completed, nps_n, _, _ in rows]
    for summary, (*_, nps_n, net, csat) in zip(summaries, rows):
        assert summary["nps"] == pytest.approx(round(100 * int(net) / nps_n, 1))
        assert summary["csat_average"] == pytest.approx(float(csat))
