"""Group commit: the writes of many concurrent requests in one transaction, each request answered
once that transaction is durable.

A webhook may only be acknowledged once its message is on disk, and on SQLite that costs one
fsync per commit (synchronous=FULL) plus a fight for the single write lock between connections.
Here the callers of one moment share a commit: while a batch is being written the next callers
queue, and they go together in the next one. Nobody waits for a timer, so a lone request costs
one transaction as before. On SQLite the whole batch runs in one thread with its own connection,
taking the write lock at BEGIN; on PostgreSQL it runs on the async engine, one batch at a time.

The hot path of a message (stored, read for the bot, answer and replies queued, each reply
claimed and recorded as sent) goes through here, its reads included: in a batch they cost
SQLite microseconds in the writer's thread, where each would otherwise take a pooled connection.
A caller hears back only after the commit, so it never acts on a row that could still vanish.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_store.db import sqlite_pragmas

log = logging.getLogger(__name__)
# (connection in a transaction, items) -> one result per item. Synchronous Core code: it runs in
# the writer's thread on SQLite and under `run_sync` on PostgreSQL.
Work = Callable[[Connection, list], list]
_writers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def writer(sessions: async_sessionmaker) -> GroupCommit:
    """The store's group committer (one per session factory, so one per hub)."""
    if (found := _writers.get(sessions)) is None:
        found = _writers[sessions] = GroupCommit(sessions.kw["bind"])
    return found


async def close_writer(sessions: async_sessionmaker) -> None:
    if (found := _writers.pop(sessions, None)) is not None:
        await found.close()


class GroupCommit:
    """Runs the work submitted concurrently in as few transactions as possible; the items of
    one kind of work in a transaction go to it together, in the order they came."""

    def __init__(self, engine: AsyncEngine, max_batch: int = 200):
        self.max_batch = max_batch
        self._queue: list[tuple[Work, Any, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self._sync, self._thread = _own_connection(engine)
        self._engine = engine

    async def run(self, work: Work, item: Any) -> Any:
        """`work`'s result for the item, once the transaction that wrote it is committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((work, item, future))
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._drain())
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for *_, future in self._queue:
            if not future.done():
                future.set_exception(RuntimeError("the store is closing"))
        self._queue.clear()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._sync.dispose)
            self._thread.shutdown()

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            try:
                results = await self._transaction([(work, item) for work, item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][2], exception=exc)
                    continue
                # One item's failure must not fail the others: each again, alone.
                log.warning("a group commit of %d items failed (%s); writing them one by one",
                            len(batch), type(exc).__name__)
                for work, item, future in batch:
                    try:
                        _settle(future, (await self._transaction([(work, item)]))[0])
                    except Exception as alone:
                        _settle(future, exception=alone)
                continue
            for (*_, future), result in zip(batch, results, strict=True):
                _settle(future, result)

    async def _transaction(self, entries: list[tuple[Work, Any]]) -> list:
        if self._sync is None:
            async with self._engine.begin() as conn:
                return await conn.run_sync(_apply, entries)
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run_sync, entries)

    def _run_sync(self, entries: list[tuple[Work, Any]]) -> list:
        with self._sync.begin() as conn:
            return _apply(conn, entries)


def _apply(conn: Connection, entries: list[tuple[Work, Any]]) -> list:
    by_work: dict[Work, list[int]] = {}
    for index, (work, _) in enumerate(entries):
        by_work.setdefault(work, []).append(index)
    results: list = [None] * len(entries)
    for work, indexes in by_work.items():
        for index, result in zip(indexes, work(conn, [entries[i][1] for i in indexes]), strict=True):
            results[index] = result
    return results


def _settle(future: asyncio.Future, result: Any = None, exception: BaseException | None = None) -> None:
    if future.done():  # the caller went away; what it sent is stored all the same
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


def _own_connection(engine: AsyncEngine) -> tuple[Engine | None, ThreadPoolExecutor | None]:
    """For an SQLite file: a synchronous engine on it and the one thread that uses it, so a batch
    costs one hand-over between threads instead of several per statement (aiosqlite)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None, None
    sync = create_sync_engine(url.set(drivername="sqlite+pysqlite"), pool_size=1, max_overflow=0,
                              connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(sync, "connect")
    def _connect(dbapi_connection, _record):
        sqlite_pragmas(dbapi_connection)
        dbapi_connection.isolation_level = None  # BEGIN is ours (below), not the sqlite3 module's

    @event.listens_for(sync, "begin")
    def _begin(conn):
        # Take the write lock at once: a deferred transaction that reads first could find, when it
        # writes, that another connection committed in between, and fail instead of waiting.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return sync, ThreadPoolExecutor(1, thread_name_prefix="sila-group-commit")
