"""Deciding, for a batch of patients, whether and how each gets a message now, and queueing it in
the outbox (the `messages` table) in the caller's transaction.

For each patient, in order: a channel from the preference list that is on, where the patient is
reachable and has not opted out (marketing also needs marketing consent granted: promotions are
opt-in, reminders and other care messages are not); the frequency cap on marketing; quiet hours in
the recipient's zone (deferred to their end, or skipped when that is too late to matter). The
outbox checks marketing consent again at send time, so an opt-out in between still counts.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.outbox import queue_reply
from campaigns import quiet, templates
from crm_store.models import (
    Appointment,
    CampaignTemplate,
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

# Outbound statuses that never reached the patient and so do not count against the cap.
NOT_SENT = ("suppressed", "cancelled", "failed")
PHONE_CHANNELS = ("sms", "whatsapp", "voice")


@dataclass
class Item:
    patient_id: int
    appointment: Appointment | None = None  # loaded with slot, practitioner and department
    not_after: datetime | None = None


@dataclass
class Decision:
    status: str  # queued | deferred | skipped
    reason: str | None = None
    channel: str | None = None
    message: Message | None = None
    due_at: datetime | None = None


@dataclass
class Policy:
    """The hub's rules for a send: what is on, quiet hours, the cap, whose zone by default."""

    available: frozenset[str]
    hospital: dict
    zone: str
    quiet_start: int = 21
    quiet_end: int = 8
    cap: int = 3
    cap_days: int = 7

    @classmethod
    def from_settings(cls, settings, available, hospital: dict) -> "Policy":
        return cls(frozenset(available), hospital, settings.timezone, settings.campaign_quiet_start,
                   settings.campaign_quiet_end, settings.campaign_frequency_cap, settings.campaign_frequency_days)


class Batch:
    """What one batch needs about its patients, loaded in a few queries rather than per patient."""

    def __init__(self, session: AsyncSession, policy: Policy, now: datetime):
        self.session, self.policy, self.now = session, policy, now

    async def load(self, patient_ids: list[int], channels: list[str], marketing: bool) -> None:
        s = self.session
        self.patients = {p.id: p for p in (await s.scalars(select(Patient).where(Patient.id.in_(patient_ids)))).all()}
        rows = (await s.scalars(select(ChannelIdentity).where(
            ChannelIdentity.patient_id.in_(patient_ids), ChannelIdentity.channel.in_(channels))
            .order_by(ChannelIdentity.last_seen_at, ChannelIdentity.id))).all()
        self.identities = {(i.patient_id, i.channel): i for i in rows}  # the most recently seen wins
        phones = [p.phone for p in self.patients.values() if p.phone]
        self.sms_taken = set()
        if "sms" in channels and phones:
            self.sms_taken = set((await s.scalars(select(ChannelIdentity.address).where(
                ChannelIdentity.channel == "sms", ChannelIdentity.address.in_(phones)))).all())
        self.consent: dict[tuple[int, str, str], ConsentStatus] = {}
        for row in (await s.execute(
                select(Consent.patient_id, Consent.channel, Consent.purpose, Consent.status)
                .where(Consent.patient_id.in_(patient_ids), Consent.channel.in_(channels))
                .order_by(Consent.recorded_at, Consent.id))).all():
            self.consent[(row.patient_id, row.channel, row.purpose.value)] = row.status
        self.sent_recently: Counter = Counter()
        if marketing:
            since = self.now - timedelta(days=self.policy.cap_days)
            for patient_id, n in (await s.execute(
                    select(Conversation.patient_id, func.count(Message.id))
                    .join(Conversation, Conversation.id == Message.conversation_id)
                    .where(Conversation.patient_id.in_(patient_ids), Message.direction == "out",
                           Message.purpose == ConsentPurpose.marketing.value, Message.created_at >= since,
                           Message.status.not_in(NOT_SENT))
                    .group_by(Conversation.patient_id))).all():
                self.sent_recently[patient_id] = n

    def choose_channel(self, patient: Patient, channels: list[str], marketing: bool) -> tuple[str | None, str]:
        """(channel, "") or (None, why not)."""
        why = set()
        for channel in channels:
            if (patient.id, channel) not in self.identities and not (
                    channel == "sms" and patient.phone and patient.phone not in self.sms_taken):
                continue
            if self.consent.get((patient.id, channel, "transactional")) == ConsentStatus.revoked:
                why.add("opted_out")
                continue
            if marketing:
                status = self.consent.get((patient.id, channel, "marketing"))
                if status != ConsentStatus.granted:
                    why.add("opted_out" if status == ConsentStatus.revoked else "no_consent")
                    continue
            return channel, ""
        return None, "opted_out" if "opted_out" in why else "no_consent" if why else "unreachable"

    def recipient_zone(self, patient: Patient, channel: str) -> str:
        identity = self.identities.get((patient.id, channel))
        phone = patient.phone or (identity.address if identity and channel in PHONE_CHANNELS else None)
        return quiet.zone_for(phone, self.policy.zone)


async def plan(session: AsyncSession, policy: Policy, items: list[Item], template: CampaignTemplate,
               channels: list[str], now: datetime, *,
               buttons: Callable[[str], list[dict]] | None = None,
               journey: tuple[str, str] | None = None) -> list[Decision]:
    """A decision per item, in order; queued ones have their message added to the session (flushed,
    so `decision.message.id` is known and can be written beside it in this transaction)."""
    channels = [c for c in channels if c in policy.available]
    marketing = template.purpose == ConsentPurpose.marketing.value
    batch = Batch(session, policy, now)
    await batch.load(sorted({i.patient_id for i in items}), channels, marketing)
    decisions: list[Decision] = []
    chosen: list[tuple[int, Item, Patient, str]] = []
    for index, item in enumerate(items):
        patient = batch.patients.get(item.patient_id)
        if patient is None:
            decisions.append(Decision("skipped", "unreachable"))
            continue
        if item.not_after is not None and now >= item.not_after:
            decisions.append(Decision("skipped", "too_late"))
            continue
        channel, why = batch.choose_channel(patient, channels, marketing)
        if channel is None:
            decisions.append(Decision("skipped", why))
            continue
        if marketing and batch.sent_recently[patient.id] >= policy.cap:
            decisions.append(Decision("skipped", "frequency_cap", channel))
            continue
        resume = quiet.quiet_until(now, batch.recipient_zone(patient, channel), policy.quiet_start, policy.quiet_end)
        if resume is not None:
            if item.not_after is not None and resume >= item.not_after:
                decisions.append(Decision("skipped", "too_late", channel))
            else:
                decisions.append(Decision("deferred", "quiet_hours", channel, due_at=resume))
            continue
        batch.sent_recently[patient.id] += 1
        decisions.append(Decision("queued", None, channel))
        chosen.append((index, item, patient, channel))
    if chosen:
        await _queue(session, batch, policy, template, chosen, decisions, buttons, journey)
    return decisions


async def _queue(session, batch: Batch, policy: Policy, template, chosen, decisions, buttons, journey) -> None:
    new_identities = []
    for _, _, patient, channel in chosen:
        if (patient.id, channel) not in batch.identities:  # an SMS number known from the record
            identity = ChannelIdentity(patient_id=patient.id, channel=channel, address=patient.phone)
            batch.identities[(patient.id, channel)] = identity
            batch.sms_taken.add(patient.phone)
            new_identities.append(identity)
            session.add(JourneyEvent(patient_id=patient.id, kind="identity_created", reference=channel,
                                     data={"source": "patient record"}))
    session.add_all(new_identities)
    if new_identities:
        await session.flush()
    identity_ids = [batch.identities[(p.id, c)].id for _, _, p, c in chosen]
    open_conversations = {}
    for conversation in (await session.scalars(
            select(Conversation).where(Conversation.identity_id.in_(identity_ids),
                                       Conversation.status != ConversationStatus.closed)
            .order_by(Conversation.id))).all():
        open_conversations[conversation.identity_id] = conversation  # the newest, as the router picks
    new_conversations = []
    for _, _, patient, channel in chosen:
        identity = batch.identities[(patient.id, channel)]
        if identity.id not in open_conversations:
            conversation = Conversation(patient_id=patient.id, identity_id=identity.id, channel=channel,
                                        language=patient.preferred_language or "ar")
            open_conversations[identity.id] = conversation
            new_conversations.append(conversation)
    session.add_all(new_conversations)
    if new_conversations:
        await session.flush()
    for index, item, patient, channel in chosen:
        language = patient.preferred_language or "ar"
        values = templates.patient_values(patient, language, policy.hospital, policy.zone, item.appointment)
        rendered = templates.render(template, channel, language, values)
        conversation = open_conversations[batch.identities[(patient.id, channel)].id]
        decisions[index].message = queue_reply(
            session, conversation, rendered.text, buttons=buttons(language) if buttons else None, sender="system",
            language=language, purpose=template.purpose, template=rendered.template)
        if journey:
            session.add(JourneyEvent(patient_id=patient.id, kind=journey[0], reference=journey[1],
                                     data={"channel": channel}))
    await session.flush()
