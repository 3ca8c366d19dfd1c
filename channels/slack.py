"""Slack for staff: a handoff posts a notice to the staff's channel, and a reply in the notice's
thread is relayed to the patient through the patient's own channel.

Slack is a staff-side channel: patients never have a Slack identity, and the notice carries no
clinical detail (Slack is outside the hospital's record system): first name, reason, waiting
time and a link to the console, nothing the patient wrote."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime

from aiohttp import ClientError, web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.outbox import queue_reply
from channels.base import ChannelAdapter, ChannelError, OutboundMessage, ProviderReceipt
from crm_store.models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Patient,
    SlackThread,
    utcnow,
)

log = logging.getLogger(__name__)

NOTICE = {
    "en": {"title": "{who} is waiting for a person", "urgent": ":rotating_light: *URGENT* ",
           "patient": "A patient", "reason": "Reason", "waiting": "Waiting", "minutes": "{n} min",
           "open": "Open in the console", "reply": "Reply in this thread to answer the patient.",
           "reasons": {"request_human": "asked for a person", "emergency": "possible emergency",
                       "misunderstanding": "the bot did not understand", "refill": "prescription refill",
                       "detractor": "unhappy after a visit (survey)",
                       "low_satisfaction": "unhappy with a conversation (survey)"}},
    "ar": {"title": "{who} بانتظار موظف", "urgent": ":rotating_light: *عاجل* ",
           "patient": "مريض", "reason": "السبب", "waiting": "مدة الانتظار", "minutes": "{n} دقيقة",
           "open": "افتح المحادثة في لوحة الموظفين", "reply": "للرد على المريض اكتب في هذا الخيط.",
           "reasons": {"request_human": "طلب التحدث مع موظف", "emergency": "حالة طارئة محتملة",
                       "misunderstanding": "لم يفهمه المساعد الآلي", "refill": "إعادة صرف وصفة",
                       "detractor": "غير راضٍ بعد الزيارة (استبيان)",
                       "low_satisfaction": "غير راضٍ عن المحادثة (استبيان)"}},
}


def _escape(value: str) -> str:
    # Slack's mrkdwn reserves exactly these three characters.
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unescape(value: str) -> str:
    return value.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class SlackAdapter(ChannelAdapter):
    name = "slack"

    def __init__(self, hub, token: str, signing_secret: str, channel: str, api_url: str):
        self.hub = hub
        self.token, self.channel, self.api_url = token, channel, api_url.rstrip("/") + "/"
        self.verifier = SignatureVerifier(signing_secret)
        self.client: AsyncWebClient | None = None
        self._subscription = contextlib.ExitStack()
        self._watcher: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def from_settings(cls, settings, hub) -> "SlackAdapter":
        missing = [key for key, value in (("SILA_SLACK_BOT_TOKEN", settings.slack_bot_token),
                                          ("SILA_SLACK_SIGNING_SECRET", settings.slack_signing_secret),
                                          ("SILA_SLACK_CHANNEL", settings.slack_channel)) if not value]
        if missing:
            raise ValueError(f"the slack channel needs {', '.join(missing)}")
        return cls(hub, settings.slack_bot_token, settings.slack_signing_secret, settings.slack_channel,
                   settings.slack_api_url)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/webhooks/slack/events", self.events)]

    async def start(self) -> None:
        self.client = AsyncWebClient(token=self.token, base_url=self.api_url, session=self.hub.http)
        # Subscribed before start() returns, so no handoff published after it is missed.
        queue = self._subscription.enter_context(self.hub.events.subscribe("console"))
        self._watcher = asyncio.create_task(self._watch(queue))

    async def close(self) -> None:
        self._subscription.close()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        # Replies already queued keep their place in the outbox if they cannot finish in time.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def deliver(self, message: OutboundMessage) -> ProviderReceipt:
        raise ChannelError("Slack is the staff's channel; a patient cannot be reached on it",
                           retryable=False, code="staff_channel")

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Handoffs → notices

    async def _watch(self, queue: asyncio.Queue) -> None:
        while True:
            event = await queue.get()
            if event.get("type") == "handoff" and event.get("conversation_id") is not None:
                try:
                    await self.post_notice(int(event["conversation_id"]))
                except Exception:  # one failed notice must not stop the next ones
                    log.exception("slack notice for conversation %s failed", event["conversation_id"])

    async def post_notice(self, conversation_id: int) -> None:
        """Post one notice per handoff; with several workers, the first to claim it posts."""
        async with self.hub.sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None or conversation.status != ConversationStatus.pending_human:
                return
            handoff = await session.scalar(
                select(JourneyEvent).where(JourneyEvent.kind == "handoff",
                                           JourneyEvent.reference == str(conversation_id))
                .order_by(JourneyEvent.id.desc()).limit(1))
            claim = SlackThread(conversation_id=conversation_id,
                                event_id=f"notice:{conversation_id}:{handoff.id if handoff else 0}")
            session.add(claim)
            try:
                await session.commit()
            except IntegrityError:
                return  # another worker posts this one
            patient = await session.get(Patient, conversation.patient_id)
            since = handoff.occurred_at if handoff else conversation.updated_at
            text = self._notice(conversation, patient, since)
            try:
                answer = await self.client.chat_postMessage(channel=self.channel, text=text, mrkdwn=True,
                                                            unfurl_links=False, unfurl_media=False)
            except (SlackApiError, ClientError, asyncio.TimeoutError) as error:
                reason = error.response.get("error") if isinstance(error, SlackApiError) else repr(error)
                log.error("Slack did not take the handoff notice: %s", reason)
                await session.delete(claim)
                await session.commit()
                return
            claim.channel_id, claim.thread_ts = answer["channel"], answer["ts"]
            await session.commit()

    def _notice(self, conversation: Conversation, patient: Patient | None, since: datetime) -> str:
        lang = self.hub.settings.default_language if self.hub.settings.default_language in NOTICE else "en"
        words = NOTICE[lang]
        first = ""
        if patient is not None:
            other = "en" if lang == "ar" else "ar"
            first = (patient.display_name(lang) or patient.display_name(other)).split(" ")[0]
        who = _escape(first) if first else words["patient"]
        reason = words["reasons"].get(conversation.handoff_reason or "", conversation.handoff_reason or "—")
        minutes = max(0, int((utcnow() - since).total_seconds() // 60))
        link = f"{self.hub.settings.base_url}/console/conversations/{conversation.id}"
        return "\n".join([
            (words["urgent"] if conversation.urgent else "") + words["title"].format(who=who),
            f"{words['reason']}: {reason}",
            f"{words['waiting']}: {words['minutes'].format(n=minutes)}",
            f"<{link}|{words['open']}>",
            words["reply"],
        ])

    # Staff replies in a notice's thread → the patient

    async def events(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        # The verifier also refuses timestamps more than five minutes off (replayed requests).
        if not timestamp.isdigit() or not signature or not self.verifier.is_valid(body, timestamp, signature):
            return web.json_response({"error": "invalid or missing Slack signature"}, status=403)
        try:
            payload = json.loads(body)
            kind = payload["type"]
        except (ValueError, TypeError, KeyError):
            return web.json_response({"error": "expected a Slack Events API JSON body"}, status=400)
        if kind == "url_verification":
            return web.json_response({"challenge": payload.get("challenge", "")})
        if kind == "event_callback" and isinstance(payload.get("event"), dict):
            message_ids = await self.relay(payload["event"], str(payload.get("event_id") or ""), request.remote)
            if message_ids:
                self._spawn(self.hub.outbox.deliver(message_ids))
        return web.json_response({"ok": True})

    async def relay(self, event: dict, event_id: str, remote: str | None = None) -> list[int]:
        """Queue a staff reply for the patient; Slack's retries of an event are relayed once."""
        thread_ts, user, text = event.get("thread_ts"), event.get("user"), event.get("text")
        if (event.get("type") != "message" or event.get("subtype") or event.get("bot_id") or not user
                or not thread_ts or thread_ts == event.get("ts") or not isinstance(text, str)
                or not text.strip() or not event_id):
            return []
        async with self.hub.sessions() as session:
            thread = await session.scalar(select(SlackThread).where(
                SlackThread.channel_id == event.get("channel"), SlackThread.thread_ts == thread_ts))
            if thread is None:
                return []  # a thread Sila did not start
            session.add(SlackThread(conversation_id=thread.conversation_id, event_id=event_id[:100]))
            try:
                await session.flush()
            except IntegrityError:
                await session.rollback()
                return []  # already relayed
            conversation = await session.get(Conversation, thread.conversation_id)
            staff = f"slack:{user}"[:100]
            conversation.status = ConversationStatus.human
            conversation.assignee = staff
            message = queue_reply(session, conversation, _unescape(text.strip()), sender="staff")
            await session.flush()
            session.add(JourneyEvent(patient_id=conversation.patient_id, kind="staff_reply",
                                     reference=str(conversation.id),
                                     data={"via": "slack", "staff": staff, "message_id": message.id,
                                           "slack_event_id": event_id, "slack_thread_ts": thread_ts}))
            session.add(AuditEntry(username=staff[:64], action="reply", patient_id=conversation.patient_id,
                                   conversation_id=conversation.id, outcome="ok", remote=remote,
                                   detail={"via": "slack", "message_id": message.id}))
            await session.commit()
            self.hub.events.publish("console", {"type": "activity", "conversation_id": conversation.id})
            return [message.id]
