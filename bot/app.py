"""The aiohttp application factory, used by `sila serve` and by the tests alike."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

import actions.common
from bot.action_endpoint import action_routes
from bot.events import EventBus, RedisEventBus
from bot.outbox import Outbox
from bot.rasa_client import RasaClient
from bot.router import Router
from bot.settings import ROOT, Settings
from campaigns.runtime import setup_campaigns
from channels.registry import adapter_class
from channels.base import ChannelAdapter
from crm_store.content import load_hospital
from crm_store.db import create_engine, sessionmaker
from crm_store.models import Department
from ehr import slots as ehr_slots
from ehr.api import setup_fhir_api
from ehr.client import BearerToken, FhirClient
from ehr.smart import SmartBackendAuth
from ehr.sync import EhrSync
from inbox.views import setup_console
from nlu_admin.views import setup_nlu_admin
from analytics.views import setup_analytics
from portal.views import setup_portal
from surveys.runtime import setup_surveys

log = logging.getLogger(__name__)


class Hub:
    """Everything a request or a background task needs; opened and closed with the app."""

    def __init__(self, settings: Settings, channels: tuple[str, ...]):
        self.settings = settings
        self.events = EventBus()
        self.adapters: dict[str, ChannelAdapter] = {n: adapter_class(n).from_settings(settings, self) for n in channels}
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker | None = None
        self.http: aiohttp.ClientSession | None = None
        self.outbox: Outbox | None = None
        self.router: Router | None = None
        self.ehr_sync: EhrSync | None = None
        self._ehr_key = Path(settings.ehr_private_key_file).read_text() if settings.ehr_private_key_file else ""

    async def open(self) -> None:
        if self.settings.redis_url:
            self.events = RedisEventBus(self.settings.redis_url)
            await self.events.start()
        self.engine = create_engine(self.settings.database_url)
        self.sessions = sessionmaker(self.engine)
        self.http = aiohttp.ClientSession()
        self.outbox = Outbox(self.sessions, self.adapters)
        hospital = load_hospital(self.settings.hospital_file)["hospital"]
        rasa = RasaClient(self.settings.rasa_url, self.settings.rasa_timeout, self.http)
        self.router = Router(
            self.sessions, rasa, self.outbox, self.events, self.settings.default_language,
            keyword_channels=frozenset(n for n, a in self.adapters.items() if a.honours_keywords),
            hospital=hospital)
        actions.common.configure(self.sessions, self.settings, self.events)
        self.ehr_sync = EhrSync(self.sessions, self._ehr_client(), hospital)
        for adapter in self.adapters.values():
            await adapter.start()

    def _ehr_client(self) -> FhirClient | None:
        s = self.settings
        if not s.ehr_fhir_url:
            return None
        auth = (SmartBackendAuth(s.ehr_token_url, s.ehr_client_id, self._ehr_key, s.ehr_key_id, s.ehr_scope)
                if s.ehr_token_url else BearerToken(s.ehr_token) if s.ehr_token else None)
        return FhirClient(s.ehr_fhir_url, self.http, auth=auth, timeout=s.ehr_timeout)

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.close()
        if isinstance(self.events, RedisEventBus):
            await self.events.close()
        await self.http.close()
        await self.router.close()
        await self.engine.dispose()


HUB = web.AppKey("hub", Hub)


async def home(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    content = load_hospital(hub.settings.hospital_file)
    async with hub.sessions() as session:
        departments = (await session.scalars(select(Department).order_by(Department.name_en))).all()
    lang = "en" if request.query.get("lang") == "en" else "ar"
    return aiohttp_jinja2.render_template("home.html", request, {
        "hospital": content["hospital"], "faq": content["faq"], "lang": lang,
        "departments": [{"name_en": d.name_en, "name_ar": d.name_ar} for d in departments],
    })


async def health(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response({"status": "ok", "rasa": await hub.router.rasa.is_ready()})


def create_app(settings: Settings, channels: tuple[str, ...] | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    aiohttp_jinja2.setup(app, autoescape=True, loader=jinja2.FileSystemLoader(
        [Path(__file__).with_name("templates"), ROOT / "inbox" / "templates"]))

    hub = Hub(settings, channels or settings.channel_names)
    app[HUB] = hub
    for adapter in hub.adapters.values():
        app.router.add_routes(adapter.routes())

    async def hub_ctx(app: web.Application):
        await hub.open()
        tasks = [asyncio.create_task(hub.outbox.run()),
                 asyncio.create_task(hub.router.run_replayer(settings.replay_interval)),
                 asyncio.create_task(hub.ehr_sync.run())]
        if hub.ehr_sync.client is not None:
            tasks.append(asyncio.create_task(ehr_slots.run(hub.sessions, hub.ehr_sync.client,
                                                           settings.ehr_slot_interval)))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await hub.close()

    app.cleanup_ctx.append(hub_ctx)
    app.router.add_get("/", home)
    app.router.add_get("/healthz", health)
    app.router.add_routes(action_routes())
    setup_console(app)
    setup_fhir_api(app)
    setup_campaigns(app)
    setup_nlu_admin(app)
    setup_analytics(app)
    setup_portal(app)
    setup_surveys(app)
    return app
