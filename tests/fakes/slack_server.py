"""A local Slack Web API: `POST /api/<method>` with a form or JSON body and `Authorization: Bearer`,
answering Slack's `{"ok": true, …}` / `{"ok": false, "error": …}` bodies (HTTP 200 either way, as
Slack does), recording every request, and failing on demand."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.http_server import LocalHttpServer

CHANNEL_ID = "C0SILASTAFF"
BOT = {"user_id": "U0SILABOT", "bot_id": "B0SILABOT", "team_id": "T0SILA", "team": "Sila Hospital"}


@dataclass
class FakeSlack(LocalHttpServer):
    token: str
    channels: dict[str, str] = field(default_factory=lambda: {"#patient-handoffs": CHANNEL_ID})
    requests: list[dict] = field(default_factory=list)
    failures: dict[str, list[str]] = field(default_factory=dict)
    port: int = 0

    def __post_init__(self):
        self._ts = itertools.count(100)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def fail(self, method: str, error: str = "channel_not_found") -> None:
        """The next call of `method` is refused with this Slack error code."""
        self.failures.setdefault(method, []).append(error)

    def posted(self) -> list[dict]:
        """The messages chat.postMessage accepted, oldest first (`params` plus the answer's `ts`)."""
        return [r for r in list(self.requests) if r["method"] == "chat.postMessage" and r.get("answer", {}).get("ok")]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            params = await request.json()
        else:
            params = dict(await request.post())
        record = {"method": method, "params": params, "authorization": request.headers.get("Authorization")}
        self.requests.append(record)
        answer = self._answer(method, params, request.headers.get("Authorization", ""))
        record["answer"] = answer
        return web.json_response(answer)

    def _answer(self, method: str, params: dict, authorization: str) -> dict:
        if authorization != f"Bearer {self.token}":
            return {"ok": False, "error": "not_authed" if not authorization else "invalid_auth"}
        if self.failures.get(method):
            return {"ok": False, "error": self.failures[method].pop(0)}
        if method == "auth.test":
            return {"ok": True, "url": "https://sila-hospital.slack.com/", "user": "sila", **BOT}
        if method == "chat.postMessage":
            channel = self.channels.get(params.get("channel")) or (
                params.get("channel") if params.get("channel") in self.channels.values() else None)
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
            if not params.get("text") and not params.get("blocks"):
                return {"ok": False, "error": "no_text"}
            ts = f"1700000000.{next(self._ts):06d}"
            message = {"type": "message", "subtype": "bot_message", "text": params.get("text", ""),
                       "ts": ts, "bot_id": BOT["bot_id"], "user": BOT["user_id"]}
            if params.get("thread_ts"):
                message["thread_ts"] = params["thread_ts"]
            return {"ok": True, "channel": channel, "ts": ts, "message": message}
        return {"ok": False, "error": "unknown_method"}


def signed_event(signing_secret: str, payload: dict, *, timestamp: int | None = None,
                 retry: int | None = None) -> tuple[bytes, dict[str, str]]:
    """A request body and headers as Slack's Events API sends them (v0 HMAC-SHA256 signature)."""
    body = json.dumps(payload).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(signing_secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": f"v0={digest}"}
    if retry is not None:
        headers.update({"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"})
    return body, headers


_event_ids = itertools.count(1)


def thread_reply(thread_ts: str, text: str, *, user: str = "U0NURSE01", channel: str = CHANNEL_ID,
                 event_id: str | None = None) -> dict:
    """An Events API `event_callback` for a human's reply in a thread."""
    ts = f"{time.time():.6f}"
    return {"token": "legacy-verification-token", "team_id": BOT["team_id"], "api_app_id": "A0SILA",
            "type": "event_callback", "event_id": event_id or f"Ev{next(_event_ids):08d}",
            "event_time": int(time.time()),
            "event": {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
                      "thread_ts": thread_ts, "channel_type": "channel", "event_ts": ts}}
