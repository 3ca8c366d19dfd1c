"""Messages with the care team, live: a staff reply appears on an open page (the server says
"something changed" on /portal/ws and the page re-reads its messages)."""
from __future__ import annotations

import asyncio
import uuid

from aiohttp import WSMsgType, web

from bot.formatting import format_when
from channels.portal import portal_topic
from portal import threads
from portal.views.base import VISIT, hub, patient_page, render


@patient_page
async def messages_page(request: web.Request) -> web.Response:
    visit, h = request[VISIT], hub(request)
    async with h.sessions() as session:
        rows = await threads.history(session, visit.acting_id)
    shown = [{"id": m.id, "mine": m.direction == "in", "text": m.display or m.text,
              "when": format_when(m.created_at, h.settings.timezone, visit.language)} for m in rows]
    return render(request, "portal_messages.html", messages=shown, nonce=uuid.uuid4().hex,
                  error=request.query.get("error"))


@patient_page
async def send(request: web.Request) -> web.StreamResponse:
    visit = request[VISIT]
    form = await request.post()
    text = str(form.get("text", "")).strip()
    nonce = str(form.get("nonce", ""))[:40] or uuid.uuid4().hex
    if not text or len(text) > threads.MAX_TEXT:
        raise web.HTTPFound("/portal/messages?error=length")
    await threads.post(hub(request), visit.acting_id, text, nonce, visit.language)
    raise web.HTTPFound("/portal/messages#latest")


@patient_page
async def live(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    with hub(request).events.subscribe(portal_topic(request[VISIT].acting_id)) as queue:
        async def forward():
            while not ws.closed:
                event = await queue.get()
                await ws.send_json({"type": "changed", "id": event.get("id")})

        task = asyncio.create_task(forward())
        try:
            async for frame in ws:
                if frame.type == WSMsgType.ERROR:
                    break
        finally:
            task.cancel()
    return ws


def setup(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/portal/messages", messages_page),
        web.post("/portal/messages", send),
        web.get("/portal/ws", live),
    ])
