"""The portal's pages under /portal, with their own templates (portal/templates)."""
from __future__ import annotations

import asyncio

import aiohttp_jinja2
import jinja2
from aiohttp import web

from channels.registry import adapter_class
from portal.views import account, appointments, health, messages, signin
from portal.views.base import JINJA, TEMPLATES, fhir_day


def setup_portal(app: web.Application) -> None:
    """Serve the portal, and make sure the "portal" channel exists for staff replies to go out."""
    from bot.app import HUB

    hub = app[HUB]
    if not hub.settings.portal_enabled:
        return
    if "portal" not in hub.adapters:
        hub.adapters["portal"] = adapter_class("portal").from_settings(hub.settings, hub)
    env = aiohttp_jinja2.setup(app, app_key=JINJA, loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                               autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["day"] = fhir_day
    for module in (signin, appointments, health, messages, account):
        module.setup(app)

    async def finish_sends(app: web.Application) -> None:
        """Sign-in codes still on their way are sent before the hub closes."""
        if pending := list(app[signin.TASKS]):
            await asyncio.gather(*pending, return_exceptions=True)

    app.on_shutdown.append(finish_sends)
