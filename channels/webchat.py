"""Web chat: the embeddable widget (one <script> tag) and its websocket at /webchat/ws.

A browser keeps a random session token in localStorage; that token is the patient's address on
this channel, so a reconnect (or a reload) finds the same conversation and its history.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path

from aiohttp import WSMsgType, web
from sqlalchemy import select

from bot.router import message_event, topic
from channels.base import ChannelAdapter, InboundMessage, OutboundMessage, ProviderReceipt
from crm_store.models import ChannelIdentity, Conversation, Message, utcnow

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("webchat_static")
MAX_TEXT = 2000
HISTORY = 200


class WebChatAdapter(ChannelAdapter):
    name = "webchat"
    renders_buttons = True

    def __init__(self, hub):
        self.hub = hub

    @classmethod
    def from_settings(cls, settings, hub) -> "WebChatAdapter":
        return cls(hub)  # no provider, no secret

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/webchat/ws", self.websocket),
            web.get("/webchat/{name:sila-chat\\.(js|css)}", self.static),
        ]

    async def static(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / request.match_info["name"],
                                headers={"Cache-Control": "no-cache"})

    async def deliver(self, message: OutboundMessage) -> ProviderReceipt:
        event = {"type": "message", "id": str(message.message_id), "direction": "out", "sender": "bot",
                 "text": message.text, "buttons": message.buttons, "language": message.language,
                 "time": utcnow().isoformat()}
        watchers = self.hub.events.publish(f"webchat:{message.recipient}", event)
        # With no browser open the message waits in the history the widget loads on reconnect.
        return ProviderReceipt("delivered" if watchers else "sent")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024)
        await ws.prepare(request)
        token, conversation_id = await self._hello(ws)
        if token is None:
            return ws
        with self.hub.events.subscribe(topic(conversation_id)) as inbound_echo, \
                self.hub.events.subscribe(f"webchat:{token}") as outbound:
            forwarders = [asyncio.create_task(self._forward(ws, q)) for q in (inbound_echo, outbound)]
            try:
                await self._read(ws, token)
            finally:
                for task in forwarders:
                    task.cancel()
        return ws

    async def _hello(self, ws: web.WebSocketResponse) -> tuple[str | None, int | None]:
        try:
            frame = await ws.receive_json(timeout=30)
        except (TypeError, ValueError, asyncio.TimeoutError):
            await ws.close(code=4400, message=b"expected a hello frame")
            return None, None
        language = frame.get("language") if frame.get("language") in ("ar", "en") else None
        token = frame.get("session")
        async with self.hub.sessions() as session:
            known = isinstance(token, str) and await session.scalar(
                select(ChannelIdentity.id).where(ChannelIdentity.channel == self.name,
                                                 ChannelIdentity.address == token))
            if not known:
                token = secrets.token_urlsafe(24)
            identity, conversation = await self.hub.router.identify(session, self.name, token, language)
            await session.commit()
            history = (await session.scalars(
                select(Message).join(Conversation)
                .where(Conversation.identity_id == identity.id, Message.private.is_(False))
                .order_by(Message.id.desc()).limit(HISTORY)
            )).all()
        await ws.send_json({"type": "welcome", "session": token, "language": conversation.language,
                            "history": [message_event(m) for m in reversed(history)]})
        return token, conversation.id

    async def _read(self, ws: web.WebSocketResponse, token: str) -> None:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(frame.data)
                text = str(data.get("text", "")).strip()
                message_id = str(data.get("id") or "")
                display = str(data["display"])[:200] if data.get("display") else None
            except (ValueError, AttributeError):
                await ws.send_json({"type": "error", "message": "malformed frame"})
                continue
            if data.get("type") != "message" or not text or not message_id or len(text) > MAX_TEXT:
                await ws.send_json({"type": "error", "message": "a message needs an id and 1-2000 characters"})
                continue
            await ws.send_json({"type": "typing"})
            await self.hub.router.receive(InboundMessage(
                self.name, token, text, message_id[:100], metadata={"display": display} if display else {}))
            # Through the same queue as the replies, so "idle" always arrives after the last one.
            self.hub.events.publish(f"webchat:{token}", {"type": "idle", "id": message_id})

    @staticmethod
    async def _forward(ws: web.WebSocketResponse, queue: asyncio.Queue) -> None:
        while not ws.closed:
            event = await queue.get()
            try:
                await ws.send_json(event)
            except ConnectionResetError:
                return
