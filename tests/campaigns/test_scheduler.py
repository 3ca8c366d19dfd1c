"""The job store's synchronous URL, and a job another worker already removed."""
from __future__ import annotations

import asyncio

import pytest
from apscheduler.jobstores.base import JobLookupError

from campaigns.scheduler import SharedJobStore, sync_engine, sync_url


def test_sync_url_for_the_same_database():
    assert sync_url("sqlite+aiosqlite:////var/sila/sila.db") == "sqlite:////var/sila/sila.db"
    assert sync_url("postgresql+asyncpg://sila:p%40ss@db:5432/sila?ssl=require") == \
        "postgresql+psycopg://sila:p%40ss@db:5432/sila?sslmode=require"
    with pytest.raises(ValueError):
        sync_url("mysql+aiomysql://db/sila")


async def test_a_job_removed_by_another_worker_is_not_an_error(store_url):
    engine = sync_engine(store_url)
    store = SharedJobStore(engine=engine)
    store.start(None, "default")
    try:
        await asyncio.to_thread(store.remove_job, "campaign:404")  # another worker ran and removed it
        with pytest.raises(JobLookupError):
            await asyncio.to_thread(SharedJobStore.__mro__[1].remove_job, store, "campaign:404")
    finally:
        engine.dispose()
