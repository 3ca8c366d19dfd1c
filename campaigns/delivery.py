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

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.outbox import reply_values
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
    message_id: int | None = None
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
    """A decision per item, in order; queued ones have their message inserted in the session's
    transaction (`decision.message_id`, to be written beside it with `mark`)."""
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
    """Core inserts (a campaign queues hundreds of messages a batch): what is queued owes the EHR
    nothing until it is sent, so none of it needs the ORM's flush hooks (crm_store.changes)."""
    conn = await session.connection()
    identity_ids = {key: identity.id for key, identity in batch.identities.items()}
    events = []
    # An SMS number known only from the patient record becomes the patient's identity now.
    fresh = list(dict.fromkeys((p.id, c, p.phone) for _, _, p, c in chosen if (p.id, c) not in identity_ids))
    if fresh:
        new_ids = await _insert(conn, ChannelIdentity, [
            {"patient_id": patient_id, "channel": channel, "address": phone} for patient_id, channel, phone in fresh])
        for (patient_id, channel, phone), identity_id in zip(fresh, new_ids):
            identity_ids[(patient_id, channel)] = identity_id
            batch.sms_taken.add(phone)
            events.append({"patient_id": patient_id, "kind": "identity_created", "reference": channel,
                           "data": {"source": "patient record"}})
    wanted = {identity_ids[(p.id, c)] for _, _, p, c in chosen}
    open_conversations: dict[int, tuple[int, str, str]] = {}  # identity -> (id, channel, language)
    for row in (await conn.execute(
            select(Conversation.id, Conversation.identity_id, Conversation.channel, Conversation.language)
            .where(Conversation.identity_id.in_(wanted), Conversation.status != ConversationStatus.closed)
            .order_by(Conversation.id))).all():
        open_conversations[row.identity_id] = (row.id, row.channel, row.language)  # the newest, as the router picks
    opening = list(dict.fromkeys((identity_ids[(p.id, c)], p.id, c, p.preferred_language or "ar")
                                 for _, _, p, c in chosen if identity_ids[(p.id, c)] not in open_conversations))
    if opening:
        new_ids = await _insert(conn, Conversation, [
            {"patient_id": patient_id, "identity_id": identity_id, "channel": channel, "language": language}
            for identity_id, patient_id, channel, language in opening])
        for (identity_id, _, channel, language), conversation_id in zip(opening, new_ids):
            open_conversations[identity_id] = (conversation_id, channel, language)
    messages = []
    for _, item, patient, channel in chosen:
        language = patient.preferred_language or "ar"
        values = templates.patient_values(patient, language, policy.hospital, policy.zone, item.appointment)
        rendered = templates.render(template, channel, language, values)
        conversation_id, conversation_channel, conversation_language = \
            open_conversations[identity_ids[(patient.id, channel)]]
        messages.append(reply_values(
            conversation_id, conversation_channel, conversation_language, rendered.text,
            buttons=buttons(language) if buttons else None, sender="system", language=language,
            purpose=template.purpose, template=rendered.template))
        if journey:
            events.append({"patient_id": patient.id, "kind": journey[0], "reference": journey[1],
                           "data": {"channel": channel}})
    for (index, *_), message_id in zip(chosen, await _insert(conn, Message, messages)):
        decisions[index].message_id = message_id
    if events:
        await conn.execute(insert(JourneyEvent), events)


async def _insert(conn, model, rows: list[dict]) -> list[int]:
    """The new rows' ids, in the order of `rows`."""
    result = await conn.execute(insert(model).returning(model.id, sort_by_parameter_order=True), rows)
    return list(result.scalars().all())


async def mark(session: AsyncSession, model, row_ids: list[int], decisions: list[Decision],
               now: datetime) -> list[int]:
    """Write each decision on its pending row of `model` (campaign recipients, automation sends):
    one UPDATE per kind of decision, each conditional on the rows still being pending. Returns the
    queued messages' ids, in order."""
    groups: dict[tuple, list[tuple[int, int | None]]] = {}
    for row_id, decision in zip(row_ids, decisions):
        key = (decision.status, decision.reason, decision.channel, decision.due_at)
        groups.setdefault(key, []).append((row_id, decision.message_id))
    for (status, reason, channel, due_at), rows in groups.items():
        values: dict = {"channel": channel, "reason": reason}
        if status == "queued":
            values.update(status="queued", queued_at=now, message_id=case(dict(rows), value=model.id))
        elif status == "deferred":
            values.update(due_at=due_at)
        else:
            values.update(status="skipped")
        ids = [row_id for row_id, _ in rows]
        result = await session.execute(update(model).where(model.id.in_(ids), model.status == "pending")
                                       .values(**values).execution_options(synchronize_session=False))
        if result.rowcount != len(ids):
            raise RuntimeError(f"{model.__tablename__}: rows {ids} changed under this batch")
    return [d.message_id for d in decisions if d.status == "queued"]
