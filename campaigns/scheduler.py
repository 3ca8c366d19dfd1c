"""APScheduler 3 with a persistent SQLAlchemy job store, inside an asyncio application.

APScheduler 3's SQLAlchemy job store is synchronous: every look at the schedule is a blocking
database call. Run by AsyncIOScheduler those calls would happen on the event loop and stall every
webhook and socket for their duration. So the scheduler here is a BackgroundScheduler: its own
thread does all job-store I/O (and Sila's code adds or removes jobs with `asyncio.to_thread`), and
its executor only hands each due job's coroutine to the hub's event loop, where it runs like any
other task. The job store gets its own synchronous engine (sqlite, or postgresql+psycopg) for the
same database as the async one.

Several Sila workers share the job store, which APScheduler 3 itself does not coordinate: each
worker's scheduler may fire the same due job. Every job therefore starts with a claim in the
database (a conditional UPDATE: a campaign goes from scheduled to running once; a recurring job's
run is claimed once by its scheduled time), and the worker that loses the claim does nothing.
A job another worker already ran and removed is not an error here either.

Missed runs: a job whose time passed while no worker was up runs when one starts, at most once
(coalesce), and is logged with how late it is; later than its grace time it is not run but
reported as missed (a campaign is then marked "missed" for a person to reschedule).
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
LATE = 5.0  # seconds: a run later than this is logged (the scheduler itself is on time to the millisecond)


def sync_url(url: str) -> str:
    """The synchronous SQLAlchemy URL of the same database (for the job store)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite")
    elif backend == "postgresql":
        query = dict(parsed.query)
        if "ssl" in query:  # asyncpg's name for libpq's sslmode
            query["sslmode"] = query.pop("ssl")
        parsed = parsed.set(drivername="postgresql+psycopg", query=query)
    else:
        raise ValueError(f"no synchronous driver known for {backend}")
    return parsed.render_as_string(hide_password=False)


def sync_engine(url: str) -> Engine:
    target = sync_url(url)
    if not target.startswith("sqlite"):
        return create_engine(target, pool_pre_ping=True, pool_size=2, max_overflow=2)
    engine = create_engine(target, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):  # as crm_store.db: WAL, wait for writers
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


class SharedJobStore(SQLAlchemyJobStore):
    """The job table shared by every worker: a job gone because another worker ran it is fine."""

    def remove_job(self, job_id):
        try:
            super().remove_job(job_id)
        except JobLookupError:
            log.debug("job %s was already removed (by another worker)", job_id)

    def update_job(self, job):
        try:
            super().update_job(job)
        except JobLookupError:
            log.debug("job %s was removed while it ran", job.id)


class _Scheduler(BackgroundScheduler):
    def _process_jobs(self):
        # An error here (the database away) would end the scheduler's thread for good.
        try:
            return super()._process_jobs()
        except Exception:
            log.exception("scheduler pass failed; trying again in %s s", self.jobstore_retry_interval)
            return self.jobstore_retry_interval


class LoopExecutor(BaseExecutor):
    """Runs a job's coroutine function on the event loop: `await func(*args, runtime=context,
    run_time=when it was due)`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context):
        super().__init__()
        self.loop = loop
        self.context = context

    def _do_submit_job(self, job, run_times):
        future = asyncio.run_coroutine_threadsafe(self._run(job, run_times), self.loop)

        def done(f):
            try:
                events = f.result()
            except BaseException as exc:  # cancelled at shutdown, or a bug in _run itself
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)

        future.add_done_callback(done)

    async def _run(self, job, run_times):
        events = []
        for run_time in run_times:
            late = (datetime.now(timezone.utc) - run_time).total_seconds()
            if job.misfire_grace_time is not None and late > job.misfire_grace_time:
                log.warning("job %s missed its run at %s by %.0f s", job.id, run_time.isoformat(), late)
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time))
                await self.context.missed(job.id, run_time)
                continue
            if late > LATE:
                log.warning("job %s runs %.0f s late (due %s); missed runs coalesce into this one", job.id, late,
                            run_time.isoformat())
            try:
                result = await job.func(*job.args, runtime=self.context, run_time=run_time, **job.kwargs)
            except Exception as exc:
                log.exception("job %s failed", job.id)
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time,
                                                exception=exc, traceback=None))
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time,
                                                retval=result))
        return events


class Scheduler:
    """The process's scheduler and its shared job store."""

    def __init__(self, database_url: str, loop: asyncio.AbstractEventLoop, context, *, misfire_grace: float):
        self.engine = sync_engine(database_url)
        self._scheduler = _Scheduler(
            jobstores={"default": SharedJobStore(engine=self.engine)},
            executors={"default": LoopExecutor(loop, context)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire_grace},
            timezone=timezone.utc)

    # Everything below blocks on the job store: call it with asyncio.to_thread from async code.

    def start(self, *, paused: bool = False) -> None:
        self._scheduler.start(paused=paused)

    def wake(self) -> None:
        """Look at the shared store again now (jobs other workers added); never blocks."""
        if self._scheduler.running:
            self._scheduler.wakeup()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self.engine.dispose()

    def add_once(self, job_id: str, func: str, run_at: datetime, args: tuple = ()) -> None:
        self._scheduler.add_job(func, "date", run_date=run_at, args=args, id=job_id, replace_existing=True)

    def add_every(self, job_id: str, func: str, seconds: float) -> None:
        """A recurring job; added by every worker at start, kept once in the store."""
        existing = self._scheduler.get_job(job_id)
        if existing is not None and getattr(existing.trigger, "interval", None) is not None \
                and existing.trigger.interval.total_seconds() == seconds:
            return  # keep its next run time: a restart must not postpone it
        self._scheduler.add_job(func, "interval", seconds=seconds, id=job_id, replace_existing=True,
                                misfire_grace_time=None)

    def remove(self, job_id: str) -> None:
        try:
            self._scheduler.remove_job(job_id)
        except JobLookupError:
            pass

    def next_run(self, job_id: str) -> datetime | None:
        job = self._scheduler.get_job(job_id)
        return job.next_run_time if job else None
