"""The adapter contract every channel follows (see docs/DESIGN.md, "Contracts")."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web


@dataclass(frozen=True)
class InboundMessage:
    channel: str
    sender: str  # the patient's address on this channel
    text: str
    provider_message_id: str
    media: list[dict[str, str]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMessage:
    message_id: int
    channel: str
    recipient: str
    text: str
    buttons: list[dict[str, str]] = field(default_factory=list)
    language: str = "ar"
    conversation_id: int | None = None
    # A pre-approved template (WhatsApp: {"content_sid": "HX…", "variables": {"1": "…"}}).
    template: dict | None = None


@dataclass(frozen=True)
class ProviderReceipt:
    status: str  # sent | delivered (never "queued": that means "ours to send" in the outbox)
    provider_message_id: str | None = None


class ChannelError(Exception):
    """A provider refused a message; the text is what staff will see on the failed message.

    `retryable` for transient failures (5xx, timeouts); `opted_out` when the provider says the
    recipient has unsubscribed (Twilio 21610): the identity is marked opted out, never retried."""

    def __init__(self, message: str, *, retryable: bool = True, code: str | None = None,
                 opted_out: bool = False):
        super().__init__(message)
        self.retryable = retryable and not opted_out
        self.code = code
        self.opted_out = opted_out


class ChannelAdapter(ABC):
    name: ClassVar[str]
    renders_buttons: ClassVar[bool] = False
    # STOP/START/HELP are honoured on channels where carriers and patients expect them.
    honours_keywords: ClassVar[bool] = False
    # Messages per second this hub may send on the channel (None: no limit).
    rate_per_second: float | None = None

    @classmethod
    @abstractmethod
    def from_settings(cls, settings, hub) -> "ChannelAdapter":
        """Build from settings; raise at start-up when a required secret is missing."""

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes of this channel's webhooks."""

    async def start(self) -> None:
        """Called once the hub is open (database, router, events); background work starts here."""

    async def close(self) -> None:
        """Called before the hub closes."""

    @abstractmethod
    async def deliver(self, message: OutboundMessage) -> ProviderReceipt:
        """Hand one message to the provider (never a blocking call in the event loop)."""

    async def send(self, message: OutboundMessage) -> ProviderReceipt:
        if message.buttons and not self.renders_buttons:
            message = with_numbered_options(message)
        return await self.deliver(message)


class AcceptedParts:
    """The parts of long messages a provider accepted before a transient failure, by message id,
    so that the retry sends only the rest (the oldest are forgotten past `limit`)."""

    def __init__(self, limit: int = 1000):
        self.limit = limit
        self._parts: OrderedDict[int, list[str]] = OrderedDict()

    def take(self, message_id: int) -> list[str]:
        return self._parts.pop(message_id, [])

    def keep(self, message_id: int, accepted: list[str]) -> None:
        if accepted:
            self._parts[message_id] = accepted
            while len(self._parts) > self.limit:
                self._parts.popitem(last=False)


def with_numbered_options(message: OutboundMessage) -> OutboundMessage:
    """Channels without buttons get the choices as numbered lines the patient can answer with."""
    lines = [message.text, ""] + [f"{i}. {b['title']}" for i, b in enumerate(message.buttons, 1)]
    return OutboundMessage(message.message_id, message.channel, message.recipient,
                           "\n".join(lines).strip(), [], message.language, message.conversation_id,
                           message.template)
