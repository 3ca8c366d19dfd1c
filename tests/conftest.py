"""Shared fixtures: a migrated, seeded CRM store on SQLite and on PostgreSQL."""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bot.settings import ROOT
from crm_store.db import create_engine, sessionmaker
from crm_store.migrate import upgrade
from crm_store.seed import seed_hospital

POSTGRES_URL = os.environ.get("SILA_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
HOSPITAL = ROOT / "crm_store" / "demo" / "hospital.yml"


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """A scratch database of this test run on the PostgreSQL server of SILA_TEST_POSTGRES_URL, so
    concurrent runs on one server never drop each other's tables."""
    server = make_url(POSTGRES_URL)
    name = f"sila_test_{os.getpid()}"

    async def admin(statement: str) -> None:
        engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    def run(statement: str) -> None:  # in a thread: pytest-asyncio may already run a loop here
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, admin(statement)).result()

    run(f'DROP DATABASE IF EXISTS "{name}"')
    run(f'CREATE DATABASE "{name}"')
    yield server.set(database=name).render_as_string(hide_password=False)
    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request, tmp_path, postgres_url) -> str:
    """A freshly migrated database: the same tests run on both backends."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/sila.db"
    else:
        url = postgres_url
        await _reset_postgres(url)
    await asyncio.to_thread(upgrade, url)
    return url


@pytest.fixture
async def sessions(store_url):
    engine = create_engine(store_url)
    factory = sessionmaker(engine)
    async with factory() as session:
        await seed_hospital(session, HOSPITAL)
    yield factory
    await engine.dispose()


def pytest_terminal_summary(terminalreporter):
    """Print the NLU held-out evaluation in the test log (CI keeps the figures)."""
    import sys

    from bot.nlu.worker import print_report

    module = sys.modules.get("tests.nlu.test_model")
    if module is not None and module.REPORT:
        terminalreporter.section("NLU evaluation on held-out utterances")
        print_report(module.REPORT)
