"""Engine and sessions for the CRM store (SQLite by default, PostgreSQL in production)."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine, AsyncSession

from crm_store import sqlite_async
from crm_store.changes import CrmSession


def sqlite_pragmas(dbapi_connection) -> None:
    """WAL lets the Rasa process read the directory while Sila writes; busy_timeout makes
    concurrent writers wait instead of failing with "database is locked". synchronous=FULL (the
    default, said out loud): a commit is on disk when it returns, even across a power loss, which
    NORMAL does not promise in WAL mode; group commit (crm_store/group_commit.py) pays for it."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    pool = {}
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Each pooled connection is a thread (aiosqlite): enough of them stay open that a burst
        # does not start and stop threads (the hot path writes through crm_store/group_commit.py).
        pool = {"pool_size": 20, "max_overflow": 20}
    engine = create_async_engine(url, connect_args={"timeout": 30}, **pool)

    @event.listens_for(engine.sync_engine, "do_connect")
    def _one_hop_per_statement(dialect, _record, cargs, cparams):
        return dialect.dbapi.connect(*cargs, async_creator_fn=sqlite_async.connect, **cparams)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        sqlite_pragmas(dbapi_connection)

    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=CrmSession)
