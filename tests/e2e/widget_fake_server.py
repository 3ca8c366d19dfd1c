"""A small stand-in for Sila's web chat endpoint, for browser tests of the widget.

It serves the real widget files from channels/webchat_static, a host page that embeds the widget
with the one documented script tag, and a fake ``/webchat/ws`` that speaks the widget protocol
(hello → welcome with history; message → echo + typing + a scripted reply). The host page is served
on a second port, so the widget is always embedded cross-origin, as on a hospital's own site.

Run it by hand to play with the widget:  python tests/e2e/widget_fake_server.py [port]
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

STATIC_DIR = Path(__file__).resolve().parents[2] / "channels" / "webchat_static"
STATIC_FILES = {"sila-chat.js": "application/javascript", "sila-chat.css": "text/css"}
ARABIC = re.compile(r"[\u0600-\u06ff]")

BOOK_BUTTONS_EN = [
    {"title": "Cardiology", "payload": '/book_appointment{"department":"cardiology"}'},
    {"title": "Pediatrics", "payload": '/book_appointment{"department":"pediatrics"}'},
]
BOOK_BUTTONS_AR = [
    {"title": "أمراض القلب", "payload": '/book_appointment{"department":"cardiology"}'},
    {"title": "طب الأطفال", "payload": '/book_appointment{"department":"pediatrics"}'},
    {"title": "الجلدية", "payload": '/book_appointment{"department":"dermatology"}'},
]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Session:
    token: str
    language: str = "en"
    history: list[dict[str, Any]] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)


class FakeWidgetServer:
    """Fake web chat server. ``await start()``, then open ``host_url`` in a browser."""

    def __init__(self, pages: dict[str, str] | None = None, reply_delay: float = 0.05) -> None:
        self.pages = pages or {}          # extra pages served on the widget origin (path -> html)
        self.reply_delay = reply_delay
        self.sessions: dict[str, Session] = {}
        self.hellos: list[dict[str, Any]] = []      # every hello frame received, in order
        self.received: list[dict[str, Any]] = []    # every message frame received, in order
        self.sockets: set[web.WebSocketResponse] = set()
        self.refuse_until = 0.0
        self._out_seq = 0
        self._runners: list[web.AppRunner] = []
        self.base_url = ""   # origin serving the widget and the websocket
        self.host_url = ""   # another origin, serving a page that embeds the widget

    # ---------- lifecycle ----------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        widget_app = web.Application()
        widget_app.router.add_get("/webchat/ws", self._ws)
        widget_app.router.add_get("/webchat/{name}", self._static)
        widget_app.router.add_get("/{path:.*}", self._page)
        host_app = web.Application()
        host_app.router.add_get("/{path:.*}", self._host_page)
        self.base_url = await self._serve(widget_app, host, port)
        self.host_url = await self._serve(host_app, host, 0)
        return self.base_url

    async def _serve(self, app: web.Application, host: str, port: int) -> str:
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runners.append(runner)
        bound = runner.addresses[0]
        return f"http://{bound[0]}:{bound[1]}"

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def drop_all(self, refuse_for: float = 0.0) -> None:
        """Close every widget socket from the server side, and refuse new ones for a while."""
        self.refuse_until = time.monotonic() + refuse_for
        for ws in list(self.sockets):
            await ws.close(code=1012, message=b"restarting")

    # ---------- pages ----------
    def embed_page(self, lang: str = "en", open_: str = "true", title: str = "") -> str:
        attrs = f' data-lang="{html.escape(lang)}"' if lang else ""
        attrs += f' data-open="{html.escape(open_)}"' if open_ else ""
        attrs += f' data-title="{html.escape(title)}"' if title else ""
        return (
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>Clinic page</title></head><body><h1>A clinic's page</h1>"
            "<p>Questions? Use the chat button.</p>"
            f'<script src="{self.base_url}/webchat/sila-chat.js" defer{attrs}></script>'
            "</body></html>"
        )

    async def _host_page(self, request: web.Request) -> web.Response:
        q = request.query
        body = self.embed_page(q.get("lang", "en"), q.get("open", "true"), q.get("title", ""))
        return web.Response(text=body, content_type="text/html")

    async def _page(self, request: web.Request) -> web.Response:
        page = self.pages.get(request.path)
        if page is None:
            raise web.HTTPNotFound()
        return web.Response(text=page, content_type="text/html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        body = (STATIC_DIR / name).read_bytes()
        return web.Response(body=body, content_type=STATIC_FILES[name], charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    # ---------- websocket ----------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self.refuse_until:
            return web.Response(status=503, text="restarting")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.sockets.add(ws)
        session: Session | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    await ws.send_json({"type": "error", "message": "bad frame"})
                    continue
                if frame.get("type") == "hello":
                    self.hellos.append(frame)
                    session = self._session_for(frame)
                    await ws.send_json({"type": "welcome", "session": session.token,
                                        "language": session.language, "history": session.history})
                elif frame.get("type") == "message" and session is not None:
                    self.received.append(frame)
                    await self._on_message(ws, session, frame)
        finally:
            self.sockets.discard(ws)
        return ws

    def _session_for(self, hello: dict[str, Any]) -> Session:
        token = hello.get("session")
        if isinstance(token, str) and token in self.sessions:
            return self.sessions[token]
        token = f"sess-{uuid.uuid4().hex}"
        language = "ar" if hello.get("language") == "ar" else "en"
        self.sessions[token] = Session(token, language)
        return self.sessions[token]

    async def _on_message(self, ws: web.WebSocketResponse, session: Session, frame: dict[str, Any]) -> None:
        msg_id, text = str(frame.get("id") or ""), str(frame.get("text") or "")
        if not msg_id or msg_id in session.seen_ids:
            return  # idempotent: a re-sent message is neither stored nor answered twice
        session.seen_ids.add(msg_id)
        inbound = {"id": msg_id, "direction": "in", "text": text, "language": session.language,
                   "time": now_iso()}
        if frame.get("display"):
            inbound["display"] = str(frame["display"])
        session.history.append(inbound)
        await ws.send_json({"type": "message", **inbound})
        if text.lower().startswith("error"):
            await ws.send_json({"type": "error", "message": "Something went wrong, please try again."})
            return
        await ws.send_json({"type": "typing"})
        if text.lower().startswith("quiet"):  # the bot decides not to answer (e.g. handed to staff)
            await asyncio.sleep(0.6)
            await ws.send_json({"type": "idle", "id": msg_id})
            return
        await asyncio.sleep(1.0 if text.lower().startswith("slow") else self.reply_delay)
        for reply in self.replies_for(text, frame.get("display")):
            self._out_seq += 1
            out = {"id": f"out-{self._out_seq}", "direction": "out", "time": now_iso(), "buttons": [],
                   **reply}
            session.language = out["language"]
            session.history.append(out)
            if not ws.closed:
                await ws.send_json({"type": "message", **out})

    @staticmethod
    def replies_for(text: str, display: str | None) -> list[dict[str, Any]]:
        """The scripted bot: a few canned answers keyed on the text."""
        lower = text.lower()
        arabic = bool(ARABIC.search(text))
        if text.startswith("/book_appointment"):
            if display and ARABIC.search(display):
                return [{"language": "ar", "text": f"تم اختيار قسم {display}. ما اليوم المناسب لك؟"}]
            return [{"language": "en", "text": f"Booked: {display}. Which day suits you?"}]
        if arabic and "موعد" in text:
            return [{"language": "ar", "text": "بكل سرور! في أي قسم تريد الموعد؟", "buttons": BOOK_BUTTONS_AR}]
        if arabic:
            return [{"language": "ar", "text": "أهلاً بك في مستشفى النور التخصصي! كيف أقدر أساعدك اليوم؟"}]
        if "book" in lower:
            return [{"language": "en", "text": "Which department would you like?", "buttons": BOOK_BUTTONS_EN}]
        if "portal" in lower:
            return [{"language": "en",
                     "text": "Your results are in the patient portal:\nhttps://portal.example/results.\nSee you soon."}]
        return [{"language": "en", "text": f"You said: {text}"}]


async def _main(port: int) -> None:  # pragma: no cover - manual use
    server = FakeWidgetServer()
    await server.start(port=port)
    print(f"widget origin {server.base_url}\nhost page     {server.host_url}/?lang=en")
    await asyncio.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
