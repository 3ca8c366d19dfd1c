"""A campaign's funnel: recipients → messaged → sent → delivered → replied → booked, with why
recipients were skipped and why messages failed.

Replies, opt-outs and bookings count when they come within the campaign's `conversion_days` of the
patient's own message: a reply is any message from the patient on any channel (STOP and other
consent keywords are opt-outs, not replies); an opt-out is a consent revoked on the channel the
campaign used; a booking is an appointment created in that window, by any channel.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import (
    Appointment,
    Campaign,
    CampaignRecipient,
    Consent,
    ConsentStatus,
    Conversation,
    Message,
)

IN_FLIGHT = ("queued", "sending", "paused")
SENT = ("sent", "delivered", "read")
DELIVERED = ("delivered", "read")
FAILED = ("failed", "undelivered")


@dataclass
class Funnel:
    recipients: int = 0
    pending: int = 0
    deferred: int = 0
    skipped: Counter = field(default_factory=Counter)
    messaged: int = 0
    in_flight: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    failures: Counter = field(default_factory=Counter)
    suppressed: int = 0
    cancelled: int = 0
    replied: int = 0
    opted_out: int = 0
    booked: int = 0
    conversion_days: int = 7

    def stages(self) -> list[tuple[str, int]]:
        return [("recipients", self.recipients), ("messaged", self.messaged), ("sent", self.sent),
                ("delivered", self.delivered), ("replied", self.replied), ("booked", self.booked)]

    def as_dict(self) -> dict:
        return {"recipients": self.recipients, "pending": self.pending, "deferred": self.deferred,
                "skipped": dict(self.skipped), "messaged": self.messaged, "in_flight": self.in_flight,
                "sent": self.sent, "delivered": self.delivered, "failed": self.failed,
                "failures": dict(self.failures), "suppressed": self.suppressed, "cancelled": self.cancelled,
                "replied": self.replied, "opted_out": self.opted_out, "booked": self.booked,
                "conversion_days": self.conversion_days}


def _within(times: list[datetime], start: datetime, end: datetime) -> bool:
    return any(start < t <= end for t in times)


async def funnel(session: AsyncSession, campaign_id: int) -> Funnel:
    campaign = await session.get(Campaign, campaign_id)
    result = Funnel(conversion_days=campaign.conversion_days)
    window = timedelta(days=campaign.conversion_days)
    rows = (await session.execute(
        select(CampaignRecipient.patient_id, CampaignRecipient.status, CampaignRecipient.reason,
               CampaignRecipient.channel, Message.status.label("message_status"), Message.error,
               Message.created_at)
        .outerjoin(Message, Message.id == CampaignRecipient.message_id)
        .where(CampaignRecipient.campaign_id == campaign_id))).all()
    messaged_at: dict[int, tuple[datetime, str]] = {}
    for row in rows:
        result.recipients += 1
        if row.status == "pending":
            result.pending += 1
            result.deferred += row.reason == "quiet_hours"
        elif row.status == "skipped":
            result.skipped[row.reason or "unknown"] += 1
        elif row.message_status is not None:
            result.messaged += 1
            status = row.message_status
            result.in_flight += status in IN_FLIGHT
            result.sent += status in SENT
            result.delivered += status in DELIVERED
            result.suppressed += status == "suppressed"
            result.cancelled += status == "cancelled"
            if status in FAILED:
                result.failed += 1
                result.failures[(row.error or status)[:120]] += 1
            if status in SENT:
                messaged_at[row.patient_id] = (row.created_at, row.channel)
    if not messaged_at:
        return result
    since = min(at for at, _ in messaged_at.values())
    of_campaign = (CampaignRecipient.campaign_id == campaign_id)
    replies: dict[int, list[datetime]] = {}
    for patient_id, at in (await session.execute(
            select(Conversation.patient_id, Message.created_at)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .join(CampaignRecipient, CampaignRecipient.patient_id == Conversation.patient_id)
            .where(of_campaign, Message.direction == "in", Message.status != "consent",
                   Message.created_at > since))).all():
        replies.setdefault(patient_id, []).append(at)
    opt_outs: dict[tuple[int, str], list[datetime]] = {}
    for patient_id, channel, at in (await session.execute(
            select(Consent.patient_id, Consent.channel, Consent.recorded_at)
            .join(CampaignRecipient, CampaignRecipient.patient_id == Consent.patient_id)
            .where(of_campaign, Consent.status == ConsentStatus.revoked, Consent.recorded_at > since))).all():
        opt_outs.setdefault((patient_id, channel), []).append(at)
    bookings: dict[int, list[datetime]] = {}
    for patient_id, at in (await session.execute(
            select(Appointment.patient_id, Appointment.created_at)
            .join(CampaignRecipient, CampaignRecipient.patient_id == Appointment.patient_id)
            .where(of_campaign, Appointment.created_at > since))).all():
        bookings.setdefault(patient_id, []).append(at)
    for patient_id, (at, channel) in messaged_at.items():
        end = at + window
        result.replied += _within(replies.get(patient_id, []), at, end)
        result.opted_out += _within(opt_outs.get((patient_id, channel), []), at, end)
        result.booked += _within(bookings.get(patient_id, []), at, end)
    return result
