"""Surveys: the time to take one answer through the router (stored, read, next question queued and
delivered; web chat, no Rasa needed), and the time of the console's analytics over many responses.

In process, on SQLite in a temporary directory (PostgreSQL too when --postgres URL is given: a
scratch database there is created and dropped). Prints figures; asserts nothing.
Usage: python -m bench.surveys [--patients 100] [--responses 20000 50000] [--postgres URL]
"""
from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from aiohttp.test_utils import TestServer
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bot.app import HUB, create_app
from bot.settings import ROOT, Settings
from channels.base import InboundMessage
from crm_store.migrate import upgrade
from crm_store.models import ChannelIdentity, Patient, Practitioner, Survey, SurveyResponse
from crm_store.seed import seed_hospital
from surveys import analytics, dispatch
from tests.fakes.tcp_proxy import _free_port

HOSPITAL = ROOT / "crm_store" / "demo" / "hospital.yml"


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def answers(hub, patients: int) -> None:
    async with hub.sessions() as session:
        ids = []
        for n in range(patients):
            patient = Patient(given_name_en=f"P{n}", preferred_language="en" if n % 2 else "ar")
            session.add(patient)
            await session.flush()
            session.add(ChannelIdentity(patient_id=patient.id, channel="webchat", address=f"bench-{patient.id}"))
            ids.append(patient.id)
        await session.flush()
        for pid in ids:
            await dispatch.offer(session, pid, "post-visit-nps", channels=["webchat"], unless_active_within=None)
        await session.commit()
    timings: list[float] = []
    script = ["It was fine", "8", "yes", "Everything was on time"]  # one re-ask, then three answers
    for step, said in enumerate(script):
        for pid in ids:
            started = time.perf_counter()
            await hub.router.receive(InboundMessage("webchat", f"bench-{pid}", said, f"b-{pid}-{step}"))
            timings.append(time.perf_counter() - started)
    print(f"  survey answer through the router (stored, read, next question delivered): "
          f"p50 {_p(timings, .5):.1f} ms, p95 {_p(timings, .95):.1f} ms (n={len(timings)})")


async def figures(hub, count: int, total: int) -> None:
    """Add `count` generated responses (over 90 days), then time the analytics over all `total`."""
    rng = random.Random(count)
    async with hub.sessions() as session:
        survey = await session.scalar(select(Survey).where(Survey.code == "post-visit-nps"))
        doctors = (await session.scalars(select(Practitioner))).all()
        patient = Patient(given_name_en="Bench", preferred_language="en")
        session.add(patient)
        await session.flush()
        start = datetime.now(timezone.utc) - timedelta(days=89)
        rows = []
        for _ in range(count):
            doctor = rng.choice(doctors)
            offered = start + timedelta(minutes=rng.randrange(0, 89 * 24 * 60))
            answered = rng.random() < 0.6
            rows.append(dict(
                survey_id=survey.id, survey_code=survey.code, survey_version=1,
                patient_id=patient.id, channel=rng.choice(["sms", "webchat", "whatsapp"]), language="en",
                reason="visit", practitioner=doctor.code, department=f"d{doctor.department_id}", context={},
                status="completed" if answered else "expired", attempts=0, answered=int(answered),
                nps=rng.randrange(0, 11) if answered else None, offered_at=offered, last_activity_at=offered,
                expires_at=offered + timedelta(days=3)))
        for i in range(0, len(rows), 5000):
            await session.execute(insert(SurveyResponse), rows[i:i + 5000])
        await session.commit()
    for label, filters in (("90 days, weekly", analytics.Filters(start=date.today() - timedelta(days=90))),
                           ("one survey, one channel, daily", analytics.Filters(
                               survey="post-visit-nps", channel="sms", period="day"))):
        samples = []
        for _ in range(5):
            async with hub.sessions() as session:
                started = time.perf_counter()
                report = await analytics.report(session, filters, "Asia/Riyadh", comments=True)
                samples.append(time.perf_counter() - started)
        print(f"  analytics over {total} responses ({label}; {report.overall.sent} in range): "
              f"median {_p(samples, .5):.0f} ms")


async def run(url: str, patients: int, counts: list[int]) -> None:
    await asyncio.to_thread(upgrade, url)
    settings = Settings(database_url=url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=1,
                        replay_interval=3600, campaigns_enabled=False, survey_interval=3600, log_level="ERROR")
    server = TestServer(create_app(settings, channels=("webchat",)))
    await server.start_server()
    try:
        hub = server.app[HUB]
        async with hub.sessions() as session:
            await seed_hospital(session, HOSPITAL)
        await answers(hub, patients)
        done = 0
        for count in counts:
            await figures(hub, count - done, count)
            done = count
    finally:
        await server.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--responses", type=int, nargs="+", default=[20000, 50000])
    parser.add_argument("--postgres", help="a PostgreSQL server URL (postgresql+asyncpg://…/db)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        print("SQLite:")
        await run(f"sqlite+aiosqlite:///{Path(workdir) / 'sila.db'}", args.patients, args.responses)
    if args.postgres:
        server = make_url(args.postgres)
        name = f"sila_bench_surveys_{random.randrange(10**6)}"
        admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            print("PostgreSQL:")
            await run(server.set(database=name).render_as_string(hide_password=False), args.patients, args.responses)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
