"""Telegram: Bot API updates at /webhooks/telegram, replies through the Bot API.

A patient's address on this channel is their private chat id. A Telegram account says nothing
about who its owner is at the hospital, so it is tied to a patient record only by a signed link
code (`/start <code>`, from a t.me deep link the portal or web chat shows) or by the patient
sharing their own phone number, which Telegram has verified.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import time

import aiohttp
import phonenumbers
from aiohttp import web
from sqlalchemy import select, update as sql_update
from sqlalchemy.exc import IntegrityError
from telegram import Bot, ChatMember, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import BaseRequest

from bot import consent
from bot.outbox import queue_reply
from bot.router import Received
from bot.texts import text as say
from channels import splitting
from channels.base import AcceptedParts, ChannelAdapter, ChannelError, InboundMessage, OutboundMessage, ProviderReceipt
from crm_store import changes
from crm_store.models import (
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Message,
    Patient,
)

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Telegram keeps at most 64 bytes of a button's callback_data; a longer payload travels as
# "~<message id>.<button index>" and is read back from the stored message's buttons.
CALLBACK_LIMIT = 64
# sendMessage refuses a text over 4,096 characters ("message is too long"), counted in UTF-16 units.
TEXT_LIMIT = 4096
LONG_PAYLOAD = re.compile(r"~(\d+)\.(\d+)")
# Telegram allows a secret token of 1-256 characters from this set only.
SECRET_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,256}")
# A link code travels as a deep link's start parameter: at most 64 characters of [A-Za-z0-9_-].
# It expires, because a code copied from a screen must not tie a stranger's account for ever.
LINK_DAYS = 7
MAC_CHARS = 16  # 96 bits of HMAC-SHA256
# A patient who blocks the bot makes Telegram answer every message with 403 "bot was blocked by
# the user" until they unblock it; Telegram tells the bot both ways with a my_chat_member update.
# Consent revoked from one of these sources means "blocked", not "said STOP".
BLOCK_SOURCES = ("telegram:blocked", "provider:403")
BLOCKED_ERROR = "blocked: the patient blocked the bot on Telegram"
MEMBER_EVENTS = {ChatMember.BANNED: "telegram_blocked", ChatMember.MEMBER: "telegram_unblocked"}


def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:MAC_CHARS]


def link_code(patient_id: int, secret: str, *, days: int = LINK_DAYS, now: float | None = None) -> str:
    """A short code that links a Telegram chat to this patient, valid for `days` days."""
    expires = int((now or time.time()) // 86400) + days
    return f"{patient_id}-{expires}-{_mac(secret, f'sila-telegram-link:{patient_id}:{expires}')}"


def read_link_code(code: str, secret: str, *, now: float | None = None) -> int | None:
    """The patient id a link code stands for, or None when forged, garbled or expired."""
    match = re.fullmatch(r"([0-9]{1,18})-([0-9]{1,9})-([A-Za-z0-9_-]{%d})" % MAC_CHARS, code.strip())
    if not match:
        return None
    patient_id, expires, mac = int(match[1]), int(match[2]), match[3]
    if not hmac.compare_digest(mac, _mac(secret, f"sila-telegram-link:{patient_id}:{expires}")):
        return None
    return patient_id if (now or time.time()) // 86400 <= expires else None


def deep_link(bot_username: str, code: str) -> str:
    """The t.me link that opens the bot and sends `/start <code>`."""
    return f"https://t.me/{bot_username}?start={code}"


def e164(phone: str) -> str | None:
    """A Telegram contact's number (international digits, "+" often left out) in E.164."""
    digits = re.sub(r"[^\d+]", "", phone or "")
    try:
        number = phonenumbers.parse(digits if digits.startswith("+") else f"+{digits}")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class HubRequest(BaseRequest):
    """python-telegram-bot's transport over the hub's aiohttp session, so it closes with the hub."""

    def __init__(self, hub, timeout: float = 15.0):
        self.hub = hub
        self.timeout = timeout

    @property
    def read_timeout(self) -> float:
        return self.timeout

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass  # the session belongs to the hub

    async def do_request(self, url, method, request_data=None, read_timeout=None, write_timeout=None,
                         connect_timeout=None, pool_timeout=None) -> tuple[int, bytes]:
        if request_data is not None and request_data.contains_files:
            raise TelegramError("file uploads are not supported by this hub")
        data = request_data.json_parameters if request_data is not None else None
        try:
            async with self.hub.http.request(method, url, data=data,
                                             timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                return response.status, await response.read()
        except asyncio.TimeoutError as exc:
            raise TimedOut("the Bot API did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"cannot reach the Bot API: {exc}") from exc


class TelegramAdapter(ChannelAdapter):
    name = "telegram"
    renders_buttons = True
    honours_keywords = True
    # The Bot API accepts about 30 messages per second from one bot.
    rate_per_second = 30.0

    def __init__(self, hub, token: str, secret: str, api_url: str):
        self.hub = hub
        self.secret = secret
        self._chat_locks = [asyncio.Lock() for _ in range(64)]
        self._accepted = AcceptedParts()  # the parts of long messages sent before a failure
        request = HubRequest(hub)
        self.bot = Bot(token, base_url=f"{api_url.rstrip('/')}/bot", request=request, get_updates_request=request)

    @classmethod
    def from_settings(cls, settings, hub) -> "TelegramAdapter":
        if not settings.telegram_bot_token:
            raise ValueError("the telegram channel needs SILA_TELEGRAM_BOT_TOKEN (from @BotFather)")
        if not SECRET_FORMAT.fullmatch(settings.telegram_secret_token or ""):
            raise ValueError("the telegram channel needs SILA_TELEGRAM_SECRET_TOKEN: 1-256 characters "
                             "of A-Z, a-z, 0-9, _ and -, set on the webhook and checked on every update")
        return cls(hub, settings.telegram_bot_token, settings.telegram_secret_token, settings.telegram_api_url)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/webhooks/telegram", self.webhook)]

    async def set_webhook(self, url: str) -> bool:
        """Point Telegram at this hub; every update will carry the secret token."""
        return await self.bot.set_webhook(url, secret_token=self.secret,
                                          allowed_updates=["message", "callback_query", "my_chat_member"])

    # Inbound

    async def webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            raise web.HTTPForbidden(text="missing or wrong secret token")
        try:
            data = await request.json()
            update = Update.de_json(data, self.bot) if isinstance(data, dict) else None
        except (ValueError, TypeError, KeyError, AttributeError):
            update = None
        if update is None or not isinstance(update.update_id, int):
            raise web.HTTPBadRequest(text="expected a Telegram Update object")
        if update.callback_query is not None:
            await self._button(update)
        elif update.message is not None and update.message.chat.type == "private":
            await self._message(update)
        elif update.my_chat_member is not None and update.my_chat_member.chat.type == "private":
            await self._member_status(update)
        # Anything else (edits, groups, others' member changes) is acknowledged, or Telegram resends it.
        return web.Response(status=200)

    async def _message(self, update: Update) -> None:
        message = update.message
        chat = str(message.chat.id)
        text = (message.text or message.caption or "").strip()
        if message.contact is not None:
            await self._link_by_phone(update)
        elif text == "/start" or text.startswith("/start "):
            code = text.removeprefix("/start").strip()
            if code:
                patient_id = read_link_code(code, self.secret)
                await self._link(update, patient_id, None if patient_id else "telegram_link_invalid")
            else:  # opening the bot for the first time: a greeting
                await self._receive(InboundMessage(
                    self.name, chat, "/greet", str(update.update_id), metadata={"display": "/start"}))
        elif text:
            await self._receive(InboundMessage(self.name, chat, text, str(update.update_id)))

    async def _receive(self, inbound: InboundMessage) -> Received:
        return await self.hub.router.receive(inbound, wait=False)  # a retried update is a no-op there

    async def _button(self, update: Update) -> None:
        query = update.callback_query
        chat = str(query.message.chat.id if query.message is not None else query.from_user.id)
        private = query.message is None or query.message.chat.type == "private"
        payload, display = await self._payload(chat, query) if private else (None, None)
        stored = None
        if payload:
            stored = await self._receive(InboundMessage(
                self.name, chat, payload, str(update.update_id), metadata={"display": display or payload}))
        if stored is None or not stored.duplicate:
            try:  # the patient's app shows a spinner on the button until it is answered
                await self.bot.answer_callback_query(query.id)
            except TelegramError as exc:
                log.warning("answering a Telegram button tap failed: %s", exc)

    async def _payload(self, chat: str, query) -> tuple[str | None, str | None]:
        """The payload behind a tapped button and the title the patient saw."""
        data = query.data or ""
        markup = getattr(query.message, "reply_markup", None)
        title = next((b.text for row in (markup.inline_keyboard if markup else ()) for b in row
                      if b.callback_data == data), None)
        long = LONG_PAYLOAD.fullmatch(data)
        if not long:
            return data or None, title
        async with self.hub.sessions() as session:
            buttons = await session.scalar(
                select(Message.buttons).join(Conversation).join(ChannelIdentity)
                .where(Message.id == int(long[1]), Message.channel == self.name,
                       ChannelIdentity.address == chat))
        index = int(long[2])
        if not buttons or index >= len(buttons):
            return None, None
        return buttons[index]["payload"], title or buttons[index].get("title")

    async def _link_by_phone(self, update: Update) -> None:
        message = update.message
        contact = message.contact
        if message.from_user is None or contact.user_id != message.from_user.id:
            # Anyone can forward a contact card; only one's own number is proof of anything.
            await self._link(update, None, "telegram_contact_not_own")
            return
        phone = e164(contact.phone_number)
        async with self.hub.sessions() as session:
            patients = (await session.scalars(select(Patient.id).where(Patient.phone == phone).limit(2))).all() \
                if phone else []
        if len(patients) == 1:
            await self._link(update, patients[0], None)
        else:  # family members often share one phone: then the number identifies nobody
            await self._link(update, None, "telegram_phone_shared" if patients else "telegram_phone_unknown")

    async def _link(self, update: Update, patient_id: int | None, refusal: str | None) -> None:
        """Tie this chat to a patient (or refuse), and have the reply sent."""
        for attempt in range(3):  # a concurrent copy of the same update may win a unique constraint
            try:
                reply_id = await self._link_once(update, patient_id, refusal)
            except IntegrityError:
                if attempt == 2:
                    raise
                continue
            if reply_id is not None:
                self.hub.outbox.wakeup.set()  # the sender picks the reply up; the webhook answers now
            return

    async def _link_once(self, update: Update, patient_id: int | None, refusal: str | None) -> int | None:
        """Link, store the command and queue the reply in one transaction; None for a retried update."""
        message = update.message
        chat, provider_id = str(message.chat.id), str(update.update_id)
        hint = ((message.from_user.language_code or "") if message.from_user else "")[:2]
        hint = hint if hint in ("ar", "en") else None
        async with self.hub.sessions() as session:
            if await session.scalar(select(Message.id).where(Message.channel == self.name,
                                                             Message.provider_message_id == provider_id)):
                return None
            if patient_id is not None and await session.get(Patient, patient_id) is None:
                patient_id, refusal = None, "telegram_link_invalid"
            if patient_id is not None:
                await self._attach(session, chat, patient_id)
            _, conversation = await self.hub.router.identify(session, self.name, chat, hint)
            language = hint or conversation.language
            # Stored like any message, so a retried update is a no-op, but never shown to the bot;
            # the link code itself is a credential and is not kept.
            session.add(Message(conversation_id=conversation.id, channel=self.name, direction="in",
                                sender="patient", text="/contact" if message.contact else "/start",
                                provider_message_id=provider_id, language=language,
                                status="link_refused" if refusal else "linked"))
            reply = queue_reply(session, conversation, say(refusal or "telegram_linked", language),
                                sender="system", language=language)
            await session.commit()
            return reply.id

    async def _attach(self, session, chat: str, patient_id: int) -> None:
        """Move this chat's identity and its open conversation to the patient (created when new)."""
        identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.channel == self.name,
                                                                      ChannelIdentity.address == chat))
        if identity is not None and identity.patient_id == patient_id:
            return
        if identity is None:
            session.add(ChannelIdentity(patient_id=patient_id, channel=self.name, address=chat))
        else:
            # The router made a placeholder patient on the first message; it stays, empty of this chat.
            session.add(JourneyEvent(patient_id=identity.patient_id, kind="identity_moved",
                                     reference=self.name, data={"to_patient": patient_id}))
            identity.patient_id = patient_id
            # The open conversation goes along; closed ones stay with whom they happened.
            await session.execute(sql_update(Conversation).where(
                Conversation.identity_id == identity.id, Conversation.status != ConversationStatus.closed)
                .values(patient_id=patient_id))
        if await consent.current(session, patient_id, self.name, ConsentPurpose.transactional) is None:
            # Writing to us is consent to be answered on the same channel (transactional only).
            session.add(Consent(patient_id=patient_id, channel=self.name, purpose=ConsentPurpose.transactional,
                                status=ConsentStatus.granted, source=f"link:{self.name}"))
        session.add(JourneyEvent(patient_id=patient_id, kind="identity_linked", reference=self.name))
        await session.flush()

    # Blocked and unblocked

    async def _member_status(self, update: Update) -> None:
        """The patient blocked the bot ("kicked") or opened it again ("member"): record it."""
        change = update.my_chat_member
        kind = MEMBER_EVENTS.get(change.new_chat_member.status)
        chat = str(change.chat.id)
        if kind is None:
            return
        async with self._chat_locks[hash(chat) % len(self._chat_locks)], self.hub.sessions() as session:
            identity = await session.scalar(select(ChannelIdentity).where(ChannelIdentity.channel == self.name,
                                                                          ChannelIdentity.address == chat))
            if identity is None or await session.scalar(select(JourneyEvent.id).where(
                    JourneyEvent.patient_id == identity.patient_id, JourneyEvent.kind.in_(MEMBER_EVENTS.values()),
                    JourneyEvent.reference == str(update.update_id))):
                return  # a chat Sila never spoke with, or a retried update
            session.add(JourneyEvent(patient_id=identity.patient_id, kind=kind, reference=str(update.update_id),
                                     occurred_at=change.date))
            await session.flush()
            # Updates may arrive out of order: the newest by Telegram's clock says how things stand.
            newest = await session.scalar(
                select(JourneyEvent.kind).where(JourneyEvent.patient_id == identity.patient_id,
                                                JourneyEvent.kind.in_(MEMBER_EVENTS.values()))
                .order_by(JourneyEvent.occurred_at.desc(), JourneyEvent.id.desc()).limit(1))
            blocked = await self._blocked(session, identity.patient_id)
            if newest == "telegram_blocked" and not blocked:
                consent.record(session, identity.patient_id, self.name, ConsentStatus.revoked,
                               source="telegram:blocked")
                await self._fail_queued(session, identity.id)
            elif newest == "telegram_unblocked" and blocked:
                await self._restore_consent(session, identity.patient_id)
            await session.commit()

    async def _blocked(self, session, patient_id: int) -> bool:
        latest = (await session.execute(
            select(Consent.status, Consent.source).where(
                Consent.patient_id == patient_id, Consent.channel == self.name,
                Consent.purpose == ConsentPurpose.transactional)
            .order_by(Consent.recorded_at.desc(), Consent.id.desc()).limit(1))).first()
        return latest is not None and latest.status == ConsentStatus.revoked and latest.source in BLOCK_SOURCES

    async def _fail_queued(self, session, identity_id: int) -> None:
        """Nothing waiting for this chat is sent (or retried): Telegram would refuse each with 403."""
        waiting = (await session.scalars(
            select(Message.id).join(Conversation).where(Conversation.identity_id == identity_id,
                                                        Message.direction == "out", Message.status == "queued"))).all()
        if waiting:
            await session.execute(sql_update(Message).where(Message.id.in_(waiting), Message.status == "queued")
                                  .values(status="failed", error=BLOCKED_ERROR))
            for message_id in waiting:
                changes.queue(session, "Communication", message_id)

    async def _restore_consent(self, session, patient_id: int) -> None:
        """Consent as it was before the block: a STOP said earlier still holds; a patient who was
        simply talking to us may be answered again."""
        for purpose in (ConsentPurpose.transactional, ConsentPurpose.marketing):
            before = await session.scalar(
                select(Consent.status).where(Consent.patient_id == patient_id, Consent.channel == self.name,
                                             Consent.purpose == purpose, Consent.source.not_in(BLOCK_SOURCES))
                .order_by(Consent.recorded_at.desc(), Consent.id.desc()).limit(1))
            if before is None and purpose == ConsentPurpose.transactional:
                before = ConsentStatus.granted  # writing to us is consent to be answered
            if before is not None:
                consent.record(session, patient_id, self.name, before, source="telegram:unblocked", purposes=(purpose,))

    # Outbound

    async def deliver(self, message: OutboundMessage) -> ProviderReceipt:
        """Send the message, as several in order when it is over Telegram's 4,096 characters (the
        buttons ride on the last part); parts sent before a transient failure are not sent again."""
        try:
            chat_id = int(message.recipient)
        except ValueError:
            raise ChannelError(f"not a Telegram chat id: {message.recipient!r}", retryable=False) from None
        markup = InlineKeyboardMarkup(
            [[InlineKeyboardButton(b["title"], callback_data=_callback_data(message.message_id, i, b["payload"]))]
             for i, b in enumerate(message.buttons)]) if message.buttons else None
        parts = splitting.split(message.text, TEXT_LIMIT)
        accepted = self._accepted.take(message.message_id)
        for index in range(len(accepted), len(parts)):
            last = index == len(parts) - 1
            try:
                sent = await self.bot.send_message(chat_id, parts[index], reply_markup=markup if last else None)
            except TelegramError as exc:
                error = _channel_error(exc)
                if error.retryable:
                    self._accepted.keep(message.message_id, accepted)
                if len(parts) > 1:
                    error.args = (f"part {index + 1} of {len(parts)}: {error}",)
                raise error from exc
            # Message ids are counted per chat, so the chat is part of the provider id.
            accepted.append(f"{sent.chat.id}:{sent.message_id}")
        return ProviderReceipt("sent", accepted[-1])


def _channel_error(exc: TelegramError) -> ChannelError:
    if isinstance(exc, Forbidden):
        # The patient blocked the bot: like STOP on SMS, nothing more may be sent until they return.
        blocked = "blocked by the user" in str(exc).lower()
        return ChannelError(str(exc), retryable=False, code="403", opted_out=blocked)
    if isinstance(exc, RetryAfter):
        return ChannelError(str(exc), retryable=True, code="429")
    if isinstance(exc, (BadRequest, InvalidToken, Conflict, ChatMigrated)):
        return ChannelError(str(exc), retryable=False, code=type(exc).__name__)
    if isinstance(exc, (TimedOut, NetworkError)):  # 5xx and unreachable
        return ChannelError(str(exc), retryable=True)
    return ChannelError(str(exc), retryable=False)


def _callback_data(message_id: int, index: int, payload: str) -> str:
    if len(payload.encode()) <= CALLBACK_LIMIT and not LONG_PAYLOAD.fullmatch(payload):
        return payload
    return f"~{message_id}.{index}"
