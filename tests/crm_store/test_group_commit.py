"""Group commit on SQLite and PostgreSQL: concurrent writers share transactions, each answered only
once its rows are committed, and one bad item does not cost the others theirs."""
from __future__ import annotations

import asyncio

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import IntegrityError

from crm_store.db import create_engine, sessionmaker
from crm_store.group_commit import close_writer, writer
from crm_store.models import Base, JourneyEvent, Patient


def add_events(conn: Connection, items: list[tuple[int, str]]) -> list[int]:
    return [conn.execute(insert(JourneyEvent).values(patient_id=patient_id, kind=kind)
                         .returning(JourneyEvent.id)).scalar() for patient_id, kind in items]


def count_events(conn: Connection, kinds: list[str]) -> list[int]:
    return [conn.scalar(select(func.count(JourneyEvent.id)).where(JourneyEvent.kind == kind)) for kind in kinds]


async def _patient(sessions) -> int:
    async with sessions() as session:
        patient = Patient(preferred_language="en")
        session.add(patient)
        await session.commit()
        return patient.id


async def test_concurrent_writes_are_committed_before_their_callers_hear_back(sessions, store_url):
    patient_id = await _patient(sessions)
    committed: list[int] = []
    other = create_engine(store_url)  # another connection: it sees only what is committed

    async def write(n: int) -> None:
        await writer(sessions).run(add_events, (patient_id, f"event-{n}"))
        async with other.connect() as conn:
            committed.append(await conn.scalar(select(func.count(JourneyEvent.id))
                                               .where(JourneyEvent.kind == f"event-{n}")))

    try:
        await asyncio.gather(*(write(n) for n in range(120)))
    finally:
        await other.dispose()
        await close_writer(sessions)
    assert committed == [1] * 120


async def test_one_bad_item_fails_alone(sessions):
    patient_id = await _patient(sessions)
    items = [(patient_id, f"good-{n}") for n in range(10)] + [(10**9, "no such patient")]
    try:
        results = await asyncio.gather(*(writer(sessions).run(add_events, item) for item in items),
                                       return_exceptions=True)
        counted = await asyncio.gather(*(writer(sessions).run(count_events, kind) for _, kind in items))
    finally:
        await close_writer(sessions)
    assert all(isinstance(r, int) for r in results[:10])
    assert isinstance(results[10], IntegrityError)
    assert counted == [1] * 10 + [0]


async def test_different_work_in_one_batch_gets_its_own_results(sessions):
    patient_id = await _patient(sessions)
    try:
        # Counted in the transaction that adds the event, after it: the work is run kind by kind.
        added, a, b = await asyncio.gather(writer(sessions).run(add_events, (patient_id, "a")),
                                           writer(sessions).run(count_events, "a"),
                                           writer(sessions).run(count_events, "b"))
    finally:
        await close_writer(sessions)
    assert isinstance(added, int) and (a, b) == (1, 0)


async def test_an_in_memory_store_writes_through_its_async_engine():
    engine = create_engine("sqlite+aiosqlite://")
    factory = sessionmaker(engine)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    try:
        patient_id = await _patient(factory)
        assert await writer(factory).run(add_events, (patient_id, "x")) >= 1
        assert await writer(factory).run(count_events, "x") == 1
    finally:
        await close_writer(factory)
        await engine.dispose()
