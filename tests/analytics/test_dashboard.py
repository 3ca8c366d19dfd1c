"""The dashboard in the console: who may see it, the figures it shows, its CSV, and that no patient
is identified anywhere on it."""
from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import select

from analytics import queries
from analytics.export import SECTIONS
from bot.app import HUB, create_app
from bot.settings import Settings
from crm_store.models import AuditEntry, StaffRole, StaffUser
from inbox.security import hash_password
from tests.analytics.generate import generate
from tests.analytics.test_figures import FIRST, LAST, PERIOD, THRESHOLD
from tests.fakes.tcp_proxy import _free_port

PASSWORD = "correct horse battery"
RANGE = f"from={FIRST.isoformat()}&to={LAST.isoformat()}"


@pytest.fixture
async def console(aiohttp_client, store_url):
    settings = Settings(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=2,
                        replay_interval=3600, campaigns_enabled=False)
    client = await aiohttp_client(create_app(settings))
    async with client.app[HUB].sessions() as session:
        for name, role, language in (("root", StaffRole.admin, "en"), ("salma", StaffRole.supervisor, "ar"),
                                     ("mariam", StaffRole.marketer, "en"), ("amal", StaffRole.agent, "en")):
            session.add(StaffUser(username=name, display_name=name.title(), password_hash=hash_password(PASSWORD),
                                  role=role, language=language))
        await session.commit()
    from crm_store.seed import seed_hospital
    from tests.conftest import HOSPITAL

    async with client.app[HUB].sessions() as session:
        await seed_hospital(session, HOSPITAL)
    client.generated = await generate(client.app[HUB].sessions, patients=30)
    return client


async def sign_in(client, username: str) -> None:
    page = await (await client.get("/console/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    await client.post("/console/login", data={"_csrf": token, "username": username, "password": PASSWORD},
                      allow_redirects=False)


async def test_agents_do_not_see_analytics(console):
    await sign_in(console, "amal")
    assert (await console.get("/console/analytics")).status == 403
    assert (await console.get("/console/analytics/summary.csv")).status == 403


@pytest.mark.parametrize("username", ["root", "salma", "mariam"])
async def test_the_dashboard_shows_the_figures_and_no_patient(console, username):
    await sign_in(console, username)
    response = await console.get(f"/console/analytics?{RANGE}")
    assert response.status == 200
    page = await response.text()
    async with console.app[HUB].sessions() as session:
        containment = await queries.containment(session, PERIOD)
        bookings = await queries.bookings(session, PERIOD)
        no_shows = await queries.no_shows(session, PERIOD)
    tile = re.search(r'id="tile-containment">.*?<span class="big">(\d+)%</span>', page, re.S).group(1)
    assert int(tile) == round(containment["rate"] * 100)
    assert f'{bookings["booked"]} {"من" if username == "salma" else "of"} {bookings["requests"]}' in page
    assert f'{no_shows["no_shows"]} {"من" if username == "salma" else "of"} {no_shows["outcomes"]}' in page
    assert page.count("<svg") >= 8 and 'id="chart-conversations"' in page
    assert 'id="campaigns"' in page and "flu season" in page
    assert 'data-survey="after_visit"' in page and 'data-survey="chat_feedback"' in page
    for name in console.generated["names"]:
        assert name not in page
    for phone in console.generated["phones"]:
        assert phone not in page and phone[1:] not in page
    if username == "salma":
        assert 'dir="rtl"' in page and "أداء المستشفى" in page


async def test_each_chart_has_its_csv_and_exports_are_audited(console):
    await sign_in(console, "mariam")
    page = await (await console.get(f"/console/analytics?{RANGE}")).text()
    for section in SECTIONS:
        assert f"/console/analytics/{section}.csv?{RANGE}" in page, section
    response = await console.get(f"/console/analytics/conversations.csv?{RANGE}")
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="sila-conversations-2026-01-05-2026-01-18.csv"' in response.headers["Content-Disposition"]
    body = await response.text()
    assert body.startswith("\ufeff")
    table = list(csv.reader(io.StringIO(body[1:])))
    async with console.app[HUB].sessions() as session:
        figures = await queries.conversations_by_day(session, PERIOD)
    assert table[0] == ["day", "channel", "conversations"]
    assert {(d, c): int(n) for d, c, n in table[1:] if int(n)} == {
        (day.isoformat(), channel): counts[i] for channel, counts in figures["channels"].items()
        for i, day in enumerate(figures["days"]) if counts[i]}
    summary = dict(csv.reader(io.StringIO((await (await console.get(f"/console/analytics/summary.csv?{RANGE}")).text())[1:])))
    async with console.app[HUB].sessions() as session:
        intents = await queries.intents(session, PERIOD, THRESHOLD)
    assert int(summary["misunderstood"]) == intents["misunderstood"]
    assert float(summary["misunderstood_rate"]) == pytest.approx(intents["rate"], abs=1e-4)
    async with console.app[HUB].sessions() as session:
        rows = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "analytics_export"))).all()
    assert [(r.username, r.detail["section"]) for r in rows] == [("mariam", "conversations"), ("mariam", "summary")]


async def test_a_spreadsheet_never_runs_a_campaign_name_as_a_formula(console):
    from crm_store.models import Campaign

    async with console.app[HUB].sessions() as session:
        campaign = await session.scalar(select(Campaign).where(Campaign.name == "flu season"))
        campaign.name = '=HYPERLINK("http://evil.example","x")'
        await session.commit()
    await sign_in(console, "root")
    body = await (await console.get(f"/console/analytics/campaigns.csv?{RANGE}")).text()
    [header, row] = list(csv.reader(io.StringIO(body[1:])))
    assert row[0] == "'" + '=HYPERLINK("http://evil.example","x")'


async def test_a_nonsense_period_is_refused(console):
    await sign_in(console, "root")
    assert (await console.get("/console/analytics?from=2026-02-01&to=2026-01-01")).status == 400
    assert (await console.get("/console/analytics?from=yesterday")).status == 400
    assert (await console.get("/console/analytics?days=30")).status == 200
