"""A local Twilio REST API (Messages) speaking Twilio's wire format, for the official client.

It runs in a background thread with its own loop, so it serves an in-process test app and a
Sila subprocess alike. Every request is recorded; it can be told to fail the next requests with
a 500 or a given Twilio error code, and to send signed status callbacks like Twilio does.
"""
from __future__ import annotations

import asyncio
import base64
import email.utils
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import ClientSession, web
from twilio.request_validator import RequestValidator

from tests.fakes.tcp_proxy import _free_port

# Twilio's status and message for the errors the tests provoke.
BODY_LIMIT = 1600  # characters of Body; one outside the BMP (an emoji) counts as two
PASS = "pass"  # in the failure queue: answer this request normally
ERRORS = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    21211: (400, "Invalid 'To' Phone Number"),
    21602: (400, "Message body is required."),
    21603: (400, "The 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
    63016: (400, "Failed to send freeform message because you are outside the allowed window."),
}


def error_body(code: int) -> dict:
    status, message = ERRORS[code]
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


@dataclass
class Recorded:
    path: str
    form: dict[str, list[str]]
    authorised: bool
    answered: int = 0
    sid: str | None = None  # the Message sid Twilio answered with

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.form.get(key, [default])[0]


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    port: int = field(default_factory=_free_port)
    requests: list[Recorded] = field(default_factory=list)
    # Numbers that replied STOP to the sender: Twilio refuses them with 21610.
    unsubscribed: set[str] = field(default_factory=set)
    # Where signed status callbacks go (a public URL's origin is replaced by this one), or None.
    callback_target: str | None = None

    def __post_init__(self):
        # None: a bare 500; PASS: no failure; otherwise a Twilio error code
        self._failures: list[int | str | None] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._http: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Recorded]:
        """Requests Twilio accepted (201)."""
        return [r for r in self.requests if r.answered == 201]

    def sent_to(self, to: str) -> list[Recorded]:
        return [m for m in self.messages if m.get("To") == to]

    def fail_next(self, count: int = 1, code: int | None = None, *, after: int = 0) -> None:
        """Answer the next `count` message requests (after `after` accepted ones) with a 500, or
        with Twilio error `code`."""
        self._failures.extend([PASS] * after + [code] * count)

    def start(self) -> "FakeTwilio":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        async def close():
            await self._http.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def wait_for(self, predicate, timeout: float = 20.0) -> list[Recorded]:
        """The accepted messages once `predicate(messages)` holds (polled from the test's loop)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"Twilio fake: condition not met; got {[m.form for m in self.messages]}")
            await asyncio.sleep(0.05)
        return self.messages

    async def _start(self) -> None:
        self._http = ClientSession()
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._create_message)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        return scheme == "Basic" and (user, password) == (self.account_sid, self.auth_token)

    async def _create_message(self, request: web.Request) -> web.Response:
        form = await request.post()
        recorded = Recorded(request.path, {k: form.getall(k) for k in form}, self._authorised(request))
        self.requests.append(recorded)
        status, body = self._answer(request, recorded)
        recorded.answered, recorded.sid = status, body.get("sid")
        if status == 201 and self.callback_target and recorded.get("StatusCallback"):
            asyncio.get_running_loop().create_task(self._callbacks(recorded, body))
        return web.json_response(body, status=status)

    def _answer(self, request: web.Request, recorded: Recorded) -> tuple[int, dict]:
        if not recorded.authorised:
            return 401, error_body(20003)
        if request.match_info["account"] != self.account_sid:
            return 404, error_body(20404)
        code = self._failures.pop(0) if self._failures else PASS
        if code != PASS:
            if code is None:
                return 500, error_body(20500)
            return ERRORS[code][0], error_body(code)
        to, sender = recorded.get("To"), recorded.get("From") or recorded.get("MessagingServiceSid")
        if not to:
            return 400, error_body(21604)
        if not sender:
            return 400, error_body(21603)
        if not (recorded.get("Body") or recorded.get("ContentSid") or recorded.get("MediaUrl")):
            return 400, error_body(21602)
        if len((recorded.get("Body") or "").encode("utf-16-le")) // 2 > BODY_LIMIT:
            return 400, error_body(21617)
        if to.removeprefix("whatsapp:") in self.unsubscribed:
            return 400, error_body(21610)
        return 201, self._resource(recorded)

    def _resource(self, recorded: Recorded) -> dict:
        sid = "SM" + uuid.uuid4().hex
        now = email.utils.formatdate(usegmt=True)
        return {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": recorded.get("Body", ""),
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": recorded.get("From"),
            "messaging_service_sid": recorded.get("MessagingServiceSid"), "num_media": "0",
            "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid, "status": "queued",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
            "to": recorded.get("To"), "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }

    async def _callbacks(self, recorded: Recorded, resource: dict) -> None:
        """Twilio's status callbacks for an accepted message: sent, then delivered, each signed."""
        url = recorded.get("StatusCallback")
        parts = urlsplit(url)
        target = self.callback_target.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
        validator = RequestValidator(self.auth_token)
        for status in ("sent", "delivered"):
            await asyncio.sleep(0.05)
            params = {"AccountSid": self.account_sid, "MessageSid": resource["sid"], "SmsSid": resource["sid"],
                      "MessageStatus": status, "SmsStatus": status, "To": resource["to"],
                      "From": resource["from"] or "", "ApiVersion": "2010-04-01"}
            headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
            try:
                async with self._http.post(target, data=params, headers=headers) as response:
                    await response.read()
            except OSError:
                return
