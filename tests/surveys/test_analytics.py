"""Survey analytics equal a hand computation on generated responses (SQLite and PostgreSQL): NPS,
CSAT, response rate, by department, doctor, channel and week; the console page shows them, with
a trend chart and the comments in their language to patient relations, and figures only to
marketers."""
from __future__ import annotations

import random
import re
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from crm_store.models import (
    AuditEntry,
    Patient,
    Practitioner,
    StaffRole,
    Survey,
    SurveyAnswer,
    SurveyResponse,
)
from surveys import analytics, catalogue, scoring
from tests.surveys.conftest import add_staff, sign_in

RIYADH = timedelta(hours=3)  # Asia/Riyadh keeps UTC+3 all year
START = datetime(2026, 9, 6, 6, 0, tzinfo=timezone.utc)  # a Sunday morning in Riyadh


def test_the_scores_of_a_small_hand_worked_example():
    # promoters 10, 9, 9, 10 (4); passives 8, 7 (2); detractors 6, 3, 0, 5 (4): (4 - 4) / 10 = 0
    assert scoring.nps([10, 9, 9, 8, 7, 6, 3, 0, 10, 5]).score == 0.0
    # 3 promoters, 1 detractor of 5: (3 - 1) / 5 = 40
    assert scoring.nps([9, 10, 10, 2, 8, None]).score == 40.0
    assert scoring.nps([6, 6]).score == -100.0 and scoring.nps([]).score is None
    assert scoring.csat([5, 4, 4, 3, 1]).average == 3.4 and scoring.csat([5, 4, 4, 3, 1]).satisfied_share == 60.0
    assert scoring.rate(7, 20) == 35.0 and scoring.rate(0, 0) is None


async def _generate(sessions) -> list[dict]:
    """Ninety surveys over five weeks: two surveys, three departments, two channels, some unanswered,
    some with comments in Arabic or English."""
    rng = random.Random(20261130)
    async with sessions() as session:
        await catalogue.sync_files(session, None)
        surveys = {s.code: s for s in (await session.scalars(select(Survey))).all()}
        doctors = (await session.scalars(select(Practitioner).options(selectinload(Practitioner.department))
                                         .order_by(Practitioner.id).limit(3))).all()
        patient = Patient(given_name_en="Test", preferred_language="en")
        session.add(patient)
        await session.flush()
        made = []
        for n in range(90):
            code = "post-visit-nps" if n % 3 else "post-chat-csat"
            doctor = rng.choice(doctors)
            channel = rng.choice(["sms", "webchat"])
            offered = START + timedelta(hours=rng.randrange(0, 35 * 24))
            answered = rng.random() < 0.7
            nps = rng.randrange(0, 11) if answered and code == "post-visit-nps" else None
            csat = rng.randrange(1, 6) if answered and code == "post-chat-csat" else None
            survey = surveys[code]
            response = SurveyResponse(
                survey_id=survey.id, survey_code=code, survey_version=1,
                patient_id=patient.id, channel=channel, language="en", reason="visit",
                department=doctor.department.code, practitioner=doctor.code,
                status="completed" if answered else "expired",
                current_question=None, answered=1 if answered else 0, nps=nps, csat=csat, offered_at=offered,
                last_activity_at=offered, expires_at=offered + timedelta(days=3), context={})
            session.add(response)
            await session.flush()
            comment = None
            if answered and rng.random() < 0.4:
                language = rng.choice(["ar", "en"])
                comment = ("الانتظار كان طويلاً" if language == "ar" else "The wait was long") + f" #{n}"
                question = "details" if code == "post-visit-nps" else "what_wrong"
                session.add(SurveyAnswer(response_id=response.id, question_id=question, kind="text",
                                         value_text=comment, language=language,
                                         answered_at=offered + timedelta(minutes=5)))
            made.append({"code": code, "department": doctor.department.code, "doctor": doctor.code, "channel": channel,
                         "offered": offered, "answered": answered, "nps": nps, "csat": csat, "comment": comment})
        await session.commit()
    return made


def _by_hand(rows: list[dict]) -> dict:
    """The figures as a patient-relations officer would work them out on paper."""
    sent = len(rows)
    responded = sum(1 for r in rows if r["answered"])
    scores = [r["nps"] for r in rows if r["nps"] is not None]
    ratings = [r["csat"] for r in rows if r["csat"] is not None]
    promoters = len([s for s in scores if s in (9, 10)])
    detractors = len([s for s in scores if s in (0, 1, 2, 3, 4, 5, 6)])
    return {
        "sent": sent, "responded": responded,
        "rate": round(responded * 100 / sent, 1) if sent else None,
        "nps": round((promoters / len(scores) - detractors / len(scores)) * 100, 1) if scores else None,
        "nps_n": len(scores),
        "csat": round(sum(ratings) / len(ratings), 2) if ratings else None,
        "csat_n": len(ratings),
    }


def _figures(f: analytics.Figures) -> dict:
    return {"sent": f.sent, "responded": f.responded, "rate": f.response_rate, "nps": f.nps.score,
            "nps_n": f.nps.n, "csat": f.csat.average, "csat_n": f.csat.n}


def _week(moment: datetime) -> date:
    local = (moment + RIYADH).date()
    return local - timedelta(days=(local.isoweekday() % 7))  # back to Sunday


async def test_figures_equal_a_hand_computation(sessions):
    made = await _generate(sessions)
    async with sessions() as session:
        everything = await analytics.report(session, analytics.Filters(), "Asia/Riyadh")
        visits = await analytics.report(session, analytics.Filters(survey="post-visit-nps"), "Asia/Riyadh")
        middle = await analytics.report(session, analytics.Filters(
            start=date(2026, 9, 13), end=date(2026, 9, 26), channel="sms"), "Asia/Riyadh")
    assert _figures(everything.overall) == _by_hand(made)
    assert _figures(visits.overall) == _by_hand([r for r in made if r["code"] == "post-visit-nps"])
    assert everything.overall.nps.score is not None and everything.overall.csat.average is not None

    for rows, key in ((everything.by_department, "department"), (everything.by_practitioner, "doctor"),
                      (everything.by_channel, "channel")):
        groups = defaultdict(list)
        for r in made:
            groups[r[key]].append(r)
        assert {row.key: _figures(row.figures) for row in rows} == {k: _by_hand(g) for k, g in groups.items()}

    weeks = defaultdict(list)
    for r in made:
        weeks[_week(r["offered"])].append(r)
    trend = {row.key: _figures(row.figures) for row in everything.trend}
    assert trend == {w.isoformat(): _by_hand(g) for w, g in weeks.items()}
    assert all(date.fromisoformat(k).isoweekday() == 7 for k in trend)  # weeks start on Sunday

    window = [r for r in made if r["channel"] == "sms"
              and date(2026, 9, 13) <= (r["offered"] + RIYADH).date() <= date(2026, 9, 26)]
    assert _figures(middle.overall) == _by_hand(window)
    assert {c.text for c in middle.comments} == {r["comment"] for r in window if r["comment"]}
    assert all(c.language in ("ar", "en") for c in everything.comments)
    assert {c.text: c.language for c in everything.comments if "الانتظار" in c.text} and all(
        c.language == "ar" for c in everything.comments if "الانتظار" in c.text)


@pytest.fixture
async def staff(client, hub):
    for name, role in (("salma", StaffRole.supervisor), ("mariam", StaffRole.marketer), ("amal", StaffRole.agent)):
        await add_staff(hub, name, role)
    return client


def _cell(page: str, row_key: str, css: str) -> str:
    row = re.search(rf'<tr data-key="{re.escape(row_key)}">(.*?)</tr>', page, re.S).group(1)
    return re.search(rf'<td class="num {css}">([^<]*)</td>', row).group(1)


async def test_the_console_page_shows_the_figures_a_chart_and_the_comments(staff, hub):
    made = await _generate(hub.sessions)
    visits = [r for r in made if r["code"] == "post-visit-nps"]
    expected = _by_hand(visits)
    await sign_in(staff, "salma")
    page = await (await staff.get("/console/surveys/analytics?survey=post-visit-nps&from=2026-09-01"
                                  "&to=2026-10-31&period=week")).text()
    assert re.search(r'<span id="nps">([^<]+)</span>', page).group(1) == str(expected["nps"])
    assert re.search(r'<span id="rate">([^<]+)</span>', page).group(1) == f"{expected['rate']:.1f}%"
    department = visits[0]["department"]
    by_hand = _by_hand([r for r in visits if r["department"] == department])
    assert _cell(page, department, "nps") == str(by_hand["nps"])
    assert _cell(page, department, "sent") == str(by_hand["sent"])
    assert page.count("<svg") == 2 and 'class="point"' in page  # NPS and CSAT trends
    comments = [r["comment"] for r in visits if r["comment"]]
    assert comments and all(c in page for c in comments)
    assert 'data-language="ar"' in page and 'lang="ar"' in page
    async with hub.sessions() as session:
        audited = await session.scalar(select(AuditEntry).where(AuditEntry.action == "view_survey_analytics"))
    assert audited.username == "salma" and audited.detail["comments"] == len(comments)


async def test_marketers_see_figures_without_comments_and_agents_see_nothing(staff, hub):
    made = await _generate(hub.sessions)
    await sign_in(staff, "mariam")
    page = await (await staff.get("/console/surveys/analytics?from=2026-09-01&to=2026-10-31")).text()
    assert re.search(r'<span id="nps">([^<]+)</span>', page).group(1) == str(_by_hand(made)["nps"])
    assert not any(r["comment"] in page for r in made if r["comment"])
    assert (await staff.get("/console/surveys/post-visit-nps")).status == 403  # no editor either
    await sign_in(staff, "amal")
    assert (await staff.get("/console/surveys/analytics")).status == 403
    assert (await staff.get("/console/surveys")).status == 403
