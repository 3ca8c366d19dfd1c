"""Rasa's action server protocol, served by Sila itself so actions share its CRM store engine.

Rasa posts {next_action, tracker, domain, …} and expects {events, responses}; a rejected form
slot is HTTP 400 with {error, action_name}, exactly as rasa-sdk's own Sanic server answers.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging

from aiohttp import web
from rasa_sdk.executor import ActionExecutor
from rasa_sdk.interfaces import ActionExecutionRejection, ActionNotFoundException

log = logging.getLogger(__name__)


def _allowed(request: web.Request, token: str) -> bool:
    if token:
        return hmac.compare_digest(request.query.get("token", ""), token)
    # Without a shared token only this machine may run actions.
    return request.remote is not None and ipaddress.ip_address(request.remote).is_loopback


def action_routes() -> list[web.RouteDef]:
    executor = ActionExecutor()
    executor.register_package("actions")

    async def webhook(request: web.Request) -> web.Response:
        from bot.app import HUB

        if not _allowed(request, request.app[HUB].settings.actions_token):
            raise web.HTTPForbidden(text="actions are for the Rasa server only")
        try:
            call = await request.json()
        except ValueError:
            return web.json_response({"error": "invalid JSON"}, status=400)
        try:
            result = await executor.run(call)
        except ActionExecutionRejection as exc:
            return web.json_response({"error": exc.message, "action_name": exc.action_name}, status=400)
        except ActionNotFoundException as exc:
            return web.json_response({"error": exc.message, "action_name": exc.action_name}, status=404)
        return web.json_response(result.model_dump() if result else None)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "actions": len(executor.list_actions())})

    return [web.post("/actions/webhook", webhook), web.get("/actions/health", health)]
