"""SMS and WhatsApp through Twilio's Programmable Messaging.

Both channels arrive on the same two Twilio URLs: WhatsApp addresses carry a "whatsapp:" prefix,
SMS addresses do not. Inbound webhooks are acknowledged with an empty TwiML <Response/> and the
reply goes out later through the outbox and the REST API, so a slow bot never makes Twilio time
out (it gives a webhook 15 seconds) and retry.

Twilio's own opt-out handling also answers STOP on long codes and then blocks the number (error
21610); Sila records the opt-out in the patient's consent either way, so a blocked confirmation
only confirms it.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
from datetime import timedelta

import aiohttp
import phonenumbers
from aiohttp import web
from sqlalchemy import select
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from bot import consent
from channels import splitting
from channels.base import AcceptedParts, ChannelAdapter, ChannelError, InboundMessage, OutboundMessage, ProviderReceipt
from channels.twilio_signature import verified_form
from crm_store.models import ChannelIdentity, ConsentStatus, Conversation, Message, utcnow

log = logging.getLogger(__name__)

MESSAGES_PATH = "/webhooks/twilio/messages"
STATUS_PATH = "/webhooks/twilio/status"
WHATSAPP = "whatsapp:"
EMPTY_TWIML = str(MessagingResponse())
# WhatsApp lets a business answer freely for 24 hours after the customer's last message;
# after that only a template Meta has approved may be sent.
WHATSAPP_WINDOW = timedelta(hours=24)
UNSUBSCRIBED = 21610  # Twilio: the recipient replied STOP to this sender
# Twilio's own interim statuses (accepted, queued, sending…) are not stored: in the outbox
# "queued" and "sending" mean "ours to send", and writing them back would send the message twice.
# A later callback never moves a message backwards (callbacks may arrive out of order).
STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3, "undelivered": 4, "failed": 4}
SEND_TIMEOUT = 15.0


class TwilioHttpClient(AsyncTwilioHttpClient):
    """Twilio's async client on the hub's session, with Basic auth as a header: the client's own
    aiohttp.BasicAuth is deprecated in aiohttp 3.14 and goes away in 4.0."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float):
        super().__init__(pool_connections=False, timeout=timeout)
        self.session = session  # opened and closed with the app

    async def request(self, method, url, params=None, data=None, headers=None, auth=None, timeout=None,
                      allow_redirects=False):
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        return await super().request(method, url, params, data, headers, None, timeout, allow_redirects)


@functools.lru_cache(maxsize=4096)  # the same patients write again and again; parsing is not cheap
def e164(address: str) -> str:
    """The E.164 form of a Twilio address ("whatsapp:+9665…" or "+9665…"); ValueError if not a number."""
    number = address.removeprefix(WHATSAPP).strip()
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError("not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class TwilioMessagingAdapter(ChannelAdapter):
    """What SMS and WhatsApp share: Twilio credentials, the webhooks, the REST client."""

    honours_keywords = True
    prefix = ""
    sender_setting = ""

    def __init__(self, hub, account_sid: str, auth_token: str, sender: str, api_url: str,
                 public_url: str, rate: float | None):
        self.hub = hub
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sender = sender
        self.api_url = api_url
        self.public_url = public_url
        self.rate_per_second = rate
        self._client: Client | None = None
        self._accepted = AcceptedParts()  # the sids of long messages' parts, for their retry

    @classmethod
    def from_settings(cls, settings, hub) -> "TwilioMessagingAdapter":
        sender = getattr(settings, cls.sender_setting)
        for value, env in ((settings.twilio_account_sid, "SILA_TWILIO_ACCOUNT_SID"),
                           (settings.twilio_auth_token, "SILA_TWILIO_AUTH_TOKEN"),
                           (sender, f"SILA_{cls.sender_setting.upper()}")):
            if not value:
                raise ValueError(f"the {cls.name} channel needs {env}")
        cls.check_sender(sender)
        return cls(hub, settings.twilio_account_sid, settings.twilio_auth_token, sender,
                   settings.twilio_api_url, settings.public_url, cls.rate(settings))

    @classmethod
    def check_sender(cls, sender: str) -> None:
        """Raise ValueError when the configured sender cannot be this channel's."""

    @classmethod
    def rate(cls, settings) -> float | None:
        raise NotImplementedError

    def routes(self) -> list[web.RouteDef]:
        # SMS and WhatsApp share the URLs: the first of them that is enabled registers them.
        first = next(a for a in self.hub.adapters.values() if isinstance(a, TwilioMessagingAdapter))
        if first is not self:
            return []
        return [web.post(MESSAGES_PATH, self.inbound), web.post(STATUS_PATH, self.status)]

    def _adapter_for(self, address: str) -> "TwilioMessagingAdapter":
        name = "whatsapp" if address.startswith(WHATSAPP) else "sms"
        adapter = self.hub.adapters.get(name)
        if not isinstance(adapter, TwilioMessagingAdapter):
            raise web.HTTPBadRequest(text=f"the {name} channel is not enabled on this hub")
        return adapter

    async def inbound(self, request: web.Request) -> web.Response:
        form = await verified_form(request, self.auth_token, self.public_url)
        sid, sender = form.get("MessageSid") or form.get("SmsMessageSid"), form.get("From")
        if not sid or not sender or "Body" not in form:
            raise web.HTTPBadRequest(text="a Twilio message needs MessageSid, From and Body")
        adapter = self._adapter_for(sender)
        try:
            address = e164(sender)
            count = int(form.get("NumMedia") or 0)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"malformed Twilio message: {exc}") from None
        media = [{"url": form[f"MediaUrl{i}"], "content_type": form.get(f"MediaContentType{i}", "")}
                 for i in range(min(count, 10)) if form.get(f"MediaUrl{i}")]
        metadata = {key: form[field] for key, field in (("to", "To"), ("profile_name", "ProfileName"))
                    if form.get(field)}
        message = InboundMessage(adapter.name, address, form["Body"].strip()[:4000], sid[:100], media, metadata)
        await self.hub.router.receive(message, wait=False)  # a retried webhook is a no-op there
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    async def status(self, request: web.Request) -> web.Response:
        form = await verified_form(request, self.auth_token, self.public_url)
        sid, status = form.get("MessageSid"), form.get("MessageStatus")
        if not sid or not status:
            raise web.HTTPBadRequest(text="a Twilio status callback needs MessageSid and MessageStatus")
        if status in STATUS_RANK:
            await self._record_status(sid, status, form.get("ErrorCode"), form.get("ErrorMessage"))
        return web.Response(status=204)

    async def _record_status(self, sid: str, status: str, code: str | None, text: str | None) -> None:
        async with self.hub.sessions() as session:
            message = await session.scalar(select(Message).where(Message.provider_message_id == sid,
                                                                 Message.direction == "out"))
            if message is None or STATUS_RANK.get(message.status, 0) >= STATUS_RANK[status]:
                return
            message.status = status
            if code:
                message.error = f"{code}: {text or 'reported by Twilio'}"
            if code == str(UNSUBSCRIBED):
                conversation = await session.get(Conversation, message.conversation_id)
                consent.record(session, conversation.patient_id, message.channel, ConsentStatus.revoked,
                               source=f"provider:{code}")
            await session.commit()

    def client(self) -> Client:
        """The official REST client, sending through the hub's aiohttp session."""
        if self._client is None:
            self._client = Client(self.account_sid, self.auth_token,
                                  http_client=TwilioHttpClient(self.hub.http, SEND_TIMEOUT))
            if self.api_url:
                self._client.api.base_url = self.api_url.rstrip("/")
        return self._client

    async def deliver(self, message: OutboundMessage) -> ProviderReceipt:
        """Send the message, as several Twilio messages in order when its body is over the limit.

        The row keeps the last part's sid (it carries the answer options, and its delivery
        completes the reply), so only that part asks for status callbacks. Parts Twilio accepted
        before a transient failure are remembered, so the retry sends only the rest."""
        params = await self.content(message)
        if self.sender.startswith("MG"):  # a Messaging Service picks the number itself
            params["messaging_service_sid"] = self.sender
        else:
            params["from_"] = self.sender
        bodies = self.split(params.pop("body")) if "body" in params else [None]
        accepted = self._accepted.take(message.message_id)
        for index in range(len(accepted), len(bodies)):
            part = dict(params) if bodies[index] is None else {**params, "body": bodies[index]}
            if self.public_url and index == len(bodies) - 1:
                part["status_callback"] = self.public_url.rstrip("/") + STATUS_PATH
            try:
                sent = await self.client().api.account.messages.create_async(to=self.prefix + message.recipient, **part)
            except TwilioException as exc:
                error = provider_error(exc)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = ChannelError(f"Twilio unreachable: {exc.__class__.__name__} {exc}".strip())
            else:
                accepted.append(sent.sid)
                continue
            if error.retryable:
                self._accepted.keep(message.message_id, accepted)
            if len(bodies) > 1:
                error.args = (f"part {index + 1} of {len(bodies)}: {error}",)
            raise error
        return ProviderReceipt("sent", accepted[-1])

    @staticmethod
    def split(body: str) -> list[str]:
        """The body as parts Twilio accepts on this channel."""
        return splitting.split_body(body)

    async def content(self, message: OutboundMessage) -> dict:
        """Body, or an approved template's ContentSid and variables."""
        if message.template:
            return {"content_sid": message.template["content_sid"],
                    "content_variables": json.dumps(message.template.get("variables") or {}, ensure_ascii=False)}
        return {"body": message.text}


def provider_error(exc: TwilioException) -> ChannelError:
    """Twilio's refusal as a ChannelError: 5xx and 429 are retried, other refusals are final."""
    status, code = getattr(exc, "status", None), getattr(exc, "code", None)
    text = str(getattr(exc, "msg", None) or getattr(exc, "detail", None) or exc).removeprefix(
        "Unable to create record: ")
    if code == UNSUBSCRIBED:
        return ChannelError(f"recipient unsubscribed: {text}", code=str(code), opted_out=True)
    retryable = status is None or status >= 500 or status == 429
    return ChannelError(text, retryable=retryable, code=str(code) if code else None)


class TwilioSmsAdapter(TwilioMessagingAdapter):
    name = "sms"
    sender_setting = "twilio_sms_from"

    @classmethod
    def check_sender(cls, sender: str) -> None:
        if sender.startswith(WHATSAPP):
            raise ValueError("SILA_TWILIO_SMS_FROM is a WhatsApp sender; give the SMS number (+…) or an MG… sid")

    @classmethod
    def rate(cls, settings) -> float | None:
        return settings.sms_rate or None

    @staticmethod
    def split(body: str) -> list[str]:
        return splitting.split_sms(body)


class TwilioWhatsAppAdapter(TwilioMessagingAdapter):
    name = "whatsapp"
    prefix = WHATSAPP
    sender_setting = "twilio_whatsapp_from"

    @classmethod
    def check_sender(cls, sender: str) -> None:
        if not sender.startswith(WHATSAPP):
            raise ValueError('SILA_TWILIO_WHATSAPP_FROM must look like "whatsapp:+9665…"')

    @classmethod
    def rate(cls, settings) -> float | None:
        return settings.whatsapp_rate or None

    async def content(self, message: OutboundMessage) -> dict:
        if not message.template and not await self._window_open(message):
            raise ChannelError("outside WhatsApp's 24-hour window: send an approved template",
                               retryable=False, code="whatsapp_window")
        return await super().content(message)

    async def _window_open(self, message: OutboundMessage) -> bool:
        async with self.hub.sessions() as session:
            if message.conversation_id is not None:
                last = await session.scalar(select(Conversation.last_inbound_at)
                                            .where(Conversation.id == message.conversation_id))
            else:
                last = await session.scalar(
                    select(Conversation.last_inbound_at).join(ChannelIdentity)
                    .where(ChannelIdentity.channel == self.name, ChannelIdentity.address == message.recipient)
                    .order_by(Conversation.last_inbound_at.desc()).limit(1))
        return last is not None and utcnow() - last < WHATSAPP_WINDOW
