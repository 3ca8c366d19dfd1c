"""Surveys inside a Sila worker: definitions loaded at start, the router's handler for answers,
and a sweep every SILA_SURVEY_INTERVAL seconds that closes expired surveys and sends the visit
survey. Opened after the hub (and after campaigns, so a reminder's answer is the reminder's)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from crm_store.content import load_hospital
from crm_store.models import Survey
from surveys import alerts, catalogue, dispatch, fhir
from surveys.answering import SurveyAnswers

log = logging.getLogger(__name__)


class SurveyRuntime:
    def __init__(self, hub):
        self.hub = hub
        self.settings = hub.settings
        self._task: asyncio.Task | None = None

    async def open(self) -> None:
        hospital = load_hospital(self.settings.hospital_file).get("hospital")
        for attempt in (1, 2):
            async with self.hub.sessions() as session:
                try:
                    await catalogue.sync_files(session, hospital, self.settings.survey_definitions_dir)
                    # The hospital's name may have changed: the store keeps every Questionnaire current.
                    for survey in (await session.scalars(select(Survey))).all():
                        await fhir.publish(session, survey, hospital)
                    await session.commit()
                    break
                except IntegrityError:  # another worker loaded the same files at the same moment
                    await session.rollback()
                    if attempt == 2:
                        raise
        alerts.set_publisher(self.hub.events.publish)
        self.hub.router.pre_bot.append(SurveyAnswers(self.settings.survey_break_hours))
        self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if alerts.publisher() == self.hub.events.publish:
            alerts.set_publisher(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self, now: datetime | None = None) -> tuple[int, list[int]]:
        """Close what expired and send what visits owe: (closed, queued message ids)."""
        closed = await dispatch.expire_due(self.hub.sessions, now)
        queued = await dispatch.after_visits(self.hub.sessions, self.settings, list(self.hub.adapters), now)
        if queued:
            await self.hub.outbox.deliver(queued)
        if closed or queued:
            self.hub.ehr_sync.wakeup.set()
        return closed, queued

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.survey_interval)
            try:
                await self.run_once()
            except Exception:  # keep the sweep alive whatever one survey does
                log.exception("survey sweep failed")


SURVEYS = web.AppKey("surveys", SurveyRuntime)


def setup_surveys(app: web.Application) -> None:
    """Console pages, and the runtime opened after the hub (its cleanup context comes later)."""
    from bot.app import HUB
    from surveys.views import setup_views

    runtime = SurveyRuntime(app[HUB])
    app[SURVEYS] = runtime

    async def surveys_ctx(app: web.Application):
        await runtime.open()
        yield
        await runtime.close()

    app.cleanup_ctx.append(surveys_ctx)
    setup_views(app)
