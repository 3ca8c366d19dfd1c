"""aiosqlite with one hand-over between threads per statement instead of four.

aiosqlite runs every sqlite3 call in the connection's own thread, and SQLAlchemy's adapter makes
four such calls per statement: open a cursor, execute, fetch the rows, close the cursor. Each is
a wake-up of that thread and a trip back through the event loop, and on a busy machine those
cost more CPU than SQLite's own work. Here one call executes the statement, fetches its rows and
closes its cursor; what SQLAlchemy reads afterwards (rows, description, rowcount, lastrowid) is
kept on the cursor object. Results are always read in full, as SQLAlchemy's adapter already does
for every cursor that is not server-side.
"""
from __future__ import annotations

import sqlite3
from collections import deque
from functools import partial
from typing import Any

import aiosqlite


def _run(conn: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> tuple:
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class Cursor:
    """The part of aiosqlite's cursor SQLAlchemy uses, one thread hand-over per execute."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self.description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: deque = deque()

    async def _self(self) -> Cursor:
        return self

    def __await__(self):
        return self._self().__await__()

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_exc) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> Cursor:
        return await self._call(sql, parameters, False)

    async def executemany(self, sql: str, parameters: Any) -> Cursor:
        return await self._call(sql, parameters, True)

    async def _call(self, sql: str, parameters: Any, many: bool) -> Cursor:
        self.description, self.rowcount, self.lastrowid, rows = await self._connection._execute(
            _run, self._connection._conn, sql, parameters, many)
        self._rows = deque(rows)
        return self

    async def fetchone(self):
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list:
        return [self._rows.popleft() for _ in range(min(size or self.arraysize, len(self._rows)))]

    async def fetchall(self) -> list:
        rows, self._rows = list(self._rows), deque()
        return rows

    async def close(self) -> None:
        self._rows.clear()


class Connection(aiosqlite.Connection):
    def cursor(self) -> Cursor:  # awaitable and an async context manager, as aiosqlite's is
        return Cursor(self)


def connect(database: str, *, iter_chunk_size: int = 64, **kwargs: Any) -> Connection:
    """As aiosqlite.connect; SQLAlchemy awaits the result (which starts the thread)."""
    connection = Connection(partial(sqlite3.connect, database, **kwargs), iter_chunk_size)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own connections
    return connection
