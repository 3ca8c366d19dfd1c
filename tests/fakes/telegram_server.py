"""A local Telegram Bot API: `POST /bot<token>/<method>` with JSON, form or query parameters,
answering `{"ok": true, "result": …}` with real Bot API objects, recording every request, and
failing on demand with the Bot API's own error bodies."""
from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.http_server import LocalHttpServer

BOT_USER = {"id": 7000000001, "is_bot": True, "first_name": "Sila", "username": "sila_hospital_bot",
            "can_join_groups": False, "can_read_all_group_messages": False, "supports_inline_queries": False}
# Parameters that are strings on the wire; everything else python-telegram-bot sends JSON-encoded.
STRINGS = {"text", "callback_query_id", "url", "secret_token", "parse_mode"}
BLOCKED = (403, "Forbidden: bot was blocked by the user")


@dataclass
class Failure:
    status: int
    description: str
    times: int
    after: int = 0  # calls that succeed first


@dataclass
class FakeTelegram(LocalHttpServer):
    token: str
    requests: list[dict] = field(default_factory=list)
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    # Private chats whose user blocked the bot: sendMessage there gets 403, as from Telegram.
    blocked: set[int] = field(default_factory=set)
    port: int = 0

    def __post_init__(self):
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, method: str, status: int = 500, description: str = "Internal Server Error",
             times: int = 1, after: int = 0) -> None:
        """The next `times` calls of `method` (after `after` that succeed) get this Bot API error
        (status 0: the connection drops)."""
        self.failures.setdefault(method, []).append(Failure(status, description, times, after))

    def block(self, chat_id: int, update_id: int, date: int | None = None) -> dict:
        """The user blocks the bot; returns the my_chat_member update Telegram posts about it."""
        self.blocked.add(chat_id)
        return member_update(update_id, chat_id, "member", "kicked", date)

    def unblock(self, chat_id: int, update_id: int, date: int | None = None) -> dict:
        """The user unblocks (restarts) the bot; returns Telegram's my_chat_member update."""
        self.blocked.discard(chat_id)
        return member_update(update_id, chat_id, "kicked", "member", date)

    def sent(self, method: str = "sendMessage", chat_id: int | None = None) -> list[dict]:
        """The parameters of every `method` call (to one chat), oldest first."""
        return [r["params"] for r in list(self.requests) if r["method"] == method
                and (chat_id is None or r["params"].get("chat_id") == chat_id)]

    def delivered(self, chat_id: int) -> list[dict]:
        """The Message objects this Bot API returned for messages sent to a chat, oldest first."""
        return [r["result"] for r in list(self.requests) if r["method"] == "sendMessage" and "result" in r
                and r["params"].get("chat_id") == chat_id]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        self.requests.append({"method": method, "token": request.match_info["token"], "params": params})
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        pending = self.failures.get(method)
        if pending and pending[0].after:
            pending[0].after -= 1
        elif pending:
            failure = pending[0]
            failure.times -= 1
            if failure.times <= 0:
                pending.pop(0)
            if failure.status == 0:
                request.transport.abort()
                raise asyncio.CancelledError
            return _error(failure.status, failure.description)
        if method == "getMe":
            return _ok(BOT_USER)
        if method in ("setWebhook", "deleteWebhook", "answerCallbackQuery"):
            return _ok(True)
        if method == "sendMessage":
            if not params.get("text"):
                return _error(400, "Bad Request: message text is empty")
            if len(params["text"].encode("utf-16-le")) // 2 > 4096:
                return _error(400, "Bad Request: message is too long")
            if not isinstance(params.get("chat_id"), int):
                return _error(400, "Bad Request: chat not found")
            if params["chat_id"] in self.blocked:
                return _error(*BLOCKED)
            message = {"message_id": next(self._ids), "from": BOT_USER, "date": int(time.time()),
                       "chat": {"id": params["chat_id"], "type": "private"}, "text": params["text"]}
            if "reply_markup" in params:
                message["reply_markup"] = params["reply_markup"]
            self.requests[-1]["result"] = message
            return _ok(message)
        return _error(404, "Not Found")


def member_update(update_id: int, chat_id: int, old: str, new: str, date: int | None = None) -> dict:
    """A my_chat_member update: the bot's status in a private chat changed from `old` to `new`."""
    def member(status: str) -> dict:
        return {"user": BOT_USER, "status": status, **({"until_date": 0} if status == "kicked" else {})}

    return {"update_id": update_id, "my_chat_member": {
        "chat": {"id": chat_id, "type": "private", "first_name": "Sarah"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Sarah"},
        "date": date or int(time.time()), "old_chat_member": member(old), "new_chat_member": member(new)}}


async def _params(request: web.Request) -> dict:
    if request.content_type == "application/json":
        return await request.json()
    raw = dict(request.query)
    if request.can_read_body:
        raw.update(await request.post())
    params = {}
    for key, value in raw.items():
        try:
            params[key] = value if key in STRINGS else json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _ok(result) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "error_code": status, "description": description}, status=status)
