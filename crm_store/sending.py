"""The outbox's claim on queued messages and the record of their sending: Core statements, in a
group commit (`crm_store.group_commit`) with the other writes of the moment.

The rows are those the ORM code wrote: a claim moves `queued` to `sending` (only one worker gets
a message); a send the provider accepted moves `sending` to its status, keeps the provider's id
and owes the EHR the settled message (a Communication, as `crm_store.changes` would queue)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, insert, select, update

from crm_store.models import ChannelIdentity, Consent, ConsentPurpose, Conversation, EhrOutbox, Message

_CLAIM = (update(Message).where(Message.id.in_(bindparam("ids", expanding=True)), Message.status == "queued")
          .values(status="sending").returning(Message.id))
# The patient's latest marketing decision on the message's channel, read with the claim: consent
# is checked at send time, so an opt-out between scheduling and sending still counts.
_MARKETING_CONSENT = (select(Consent.status).where(Consent.patient_id == Conversation.patient_id,
                                                   Consent.channel == Message.channel,
                                                   Consent.purpose == ConsentPurpose.marketing)
                      .order_by(Consent.recorded_at.desc(), Consent.id.desc()).limit(1)
                      .correlate(Conversation, Message).scalar_subquery())
_CLAIMED = (select(Message.id, Message.channel, Message.text, Message.buttons, Message.language, Message.template,
                   Message.purpose, Message.conversation_id, Conversation.patient_id, ChannelIdentity.address,
                   _MARKETING_CONSENT.label("marketing_consent"))
            .join(Conversation, Conversation.id == Message.conversation_id)
            .join(ChannelIdentity, ChannelIdentity.id == Conversation.identity_id)
            .where(Message.id.in_(bindparam("ids", expanding=True))).order_by(Message.id))
# Conditional: a provider's status callback may already have moved the message on.
_SENT = (update(Message).where(Message.id == bindparam("b_id"), Message.status == "sending")
         .values(status=bindparam("b_status"), error=None, provider_message_id=bindparam("b_provider_id")))
_SENT_KEEPING_ID = (update(Message).where(Message.id == bindparam("b_id"), Message.status == "sending")
                    .values(status=bindparam("b_status"), error=None))


@dataclass(frozen=True)
class Sent:
    message_ids: list[int]  # one provider message; the first row carries the provider's id
    status: str
    provider_message_id: str | None


def claim(conn: Connection, batches: list[list[int]]) -> list[list]:
    """For each batch of message ids, the rows this worker claimed (with the recipient's address
    and the patient), in id order; empty when another worker has them or they are out. The
    batches of one group commit are claimed by one statement and read by another."""
    taken = set(conn.execute(_CLAIM, {"ids": [i for ids in batches for i in ids]}).scalars().all())
    rows = conn.execute(_CLAIMED, {"ids": sorted(taken)}).all() if taken else []
    by_id = {row.id: row for row in rows}
    claimed = []
    for ids in batches:  # a message two callers asked for at once goes to the first of them
        claimed.append([by_id.pop(i) for i in sorted(ids) if i in by_id])
    return claimed


def sent(conn: Connection, sends: list[Sent]) -> list[None]:
    """Each provider message recorded; its first row keeps the provider's id (where it gave one)."""
    with_id = [{"b_id": s.message_ids[0], "b_status": s.status, "b_provider_id": s.provider_message_id}
               for s in sends if s.provider_message_id]
    keeping = [{"b_id": i, "b_status": s.status} for s in sends
               for i in (s.message_ids[1:] if s.provider_message_id else s.message_ids)]
    if with_id:
        conn.execute(_SENT, with_id)
    if keeping:
        conn.execute(_SENT_KEEPING_ID, keeping)
    conn.execute(insert(EhrOutbox), [{"kind": "Communication", "crm_id": i} for s in sends for i in s.message_ids])
    return [None] * len(sends)
