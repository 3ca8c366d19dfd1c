"""Storing what patients Sila already talks to write, many messages in one transaction.

Most inbound messages come from a known address with an open conversation and need nothing but
rows: the message (once per provider id), the conversation's and patient's language, when the
address was last seen, a journey event and the write owed to the EHR. This module writes exactly
those rows with Core statements, as the router's ORM path would, for a whole batch at a time (see
`crm_store.group_commit`). Anything else (a new address, a closed conversation) is left to the
router's ORM path: `store_batch` answers None for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from crm_store.models import (
    ChannelIdentity,
    Conversation,
    ConversationStatus,
    EhrOutbox,
    JourneyEvent,
    Message,
    Patient,
    utcnow,
)

# INSERT … ON CONFLICT DO NOTHING: a retried webhook, even one racing its copy, stores nothing.
_INSERT = {name: dialect.insert(Message).on_conflict_do_nothing(index_elements=["channel", "provider_message_id"])
           .returning(Message.id) for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))}


@dataclass(frozen=True)
class Arrival:
    """An inbound message the router found plain: no keyword, no numbered choice, no handler's."""

    channel: str
    sender: str
    text: str
    display: str | None
    provider_message_id: str
    entities: list | None
    # Some pre-bot handler may want it if the patient is in a state that handler claims.
    check_claims: bool = False


@dataclass(frozen=True)
class StoredInbound:
    """The stored row, with what the router's `message_event` reads."""

    id: int
    conversation_id: int
    duplicate: bool
    provider_message_id: str | None = None
    text: str = ""
    display: str | None = None
    language: str | None = None
    created_at: datetime | None = None
    direction: str = "in"
    sender: str = "patient"
    buttons: None = None


_OPEN = (select(ChannelIdentity.channel, ChannelIdentity.address, ChannelIdentity.id.label("identity_id"),
                Conversation.id.label("conversation_id"), Conversation.patient_id, Conversation.language,
                Patient.preferred_language)
         .join(Conversation, Conversation.identity_id == ChannelIdentity.id)
         .join(Patient, Patient.id == Conversation.patient_id)
         .where(Conversation.status != ConversationStatus.closed,
                ChannelIdentity.channel.in_(bindparam("channels", expanding=True)),
                ChannelIdentity.address.in_(bindparam("addresses", expanding=True))))
_EXISTING = select(Message.id, Message.conversation_id).where(
    Message.channel == bindparam("channel"), Message.provider_message_id == bindparam("sid"))
# Rows are updated in id order, table after table, so two batches (two workers on PostgreSQL)
# always lock them in the same order and never deadlock each other.
_PATIENT = update(Patient).where(Patient.id == bindparam("b_id")).values(preferred_language=bindparam("b_language"))
_IDENTITY = update(ChannelIdentity).where(ChannelIdentity.id == bindparam("b_id")).values(
    last_seen_at=bindparam("b_now"))
_CONVERSATION = update(Conversation).where(Conversation.id == bindparam("b_id")).values(
    language=bindparam("b_language"), updated_at=bindparam("b_now"), last_inbound_at=bindparam("b_now"))


def store_batch(conn: Connection, arrivals: list[Arrival], language_of: Callable[[Arrival, str], str],
                claimed: Callable[[Connection, set[int]], set[int]]) -> list[StoredInbound | None]:
    """Store each arrival in the caller's transaction; None for one the ORM path must store.
    `language_of(arrival, conversation_language)` is the language the message is written in;
    `claimed(conn, patient_ids)` the patients some pre-bot handler may want a message from."""
    if (insert_message := _INSERT.get(conn.dialect.name)) is None:
        return [None] * len(arrivals)
    found: dict[tuple[str, str], dict] = {}
    for row in conn.execute(_OPEN, {"channels": sorted({a.channel for a in arrivals}),
                                    "addresses": sorted({a.sender for a in arrivals})}).mappings():
        key = (row["channel"], row["address"])
        if key not in found or row["conversation_id"] > found[key]["conversation_id"]:
            found[key] = dict(row)  # an address's newest open conversation, as Router.identify picks
    to_check = {found[k]["patient_id"] for a in arrivals if a.check_claims and (k := (a.channel, a.sender)) in found}
    taken = claimed(conn, to_check) if to_check else set()
    conversation_language: dict[int, str] = {}
    patient_language: dict[int, str] = {}
    patients: dict[int, str] = {}
    identities: dict[int, datetime] = {}
    conversations: dict[int, tuple[str, datetime]] = {}
    journey: list[dict] = []
    owed: list[dict] = []
    results: list[StoredInbound | None] = []
    for arrival in arrivals:
        open_ = found.get((arrival.channel, arrival.sender))
        if open_ is None or arrival.check_claims and open_["patient_id"] in taken:
            results.append(None)
            continue
        conversation_id, patient_id = open_["conversation_id"], open_["patient_id"]
        language = language_of(arrival, conversation_language.get(conversation_id, open_["language"]))
        now = utcnow()
        message_id = conn.execute(insert_message, dict(
            conversation_id=conversation_id, channel=arrival.channel, direction="in", sender="patient",
            text=arrival.text, display=arrival.display, provider_message_id=arrival.provider_message_id,
            status="received", language=language, entities=arrival.entities, created_at=now)).scalar()
        if message_id is None:
            existing = conn.execute(_EXISTING, {"channel": arrival.channel,
                                                "sid": arrival.provider_message_id}).one()
            results.append(StoredInbound(existing.id, existing.conversation_id, duplicate=True))
            continue
        conversation_language[conversation_id] = language
        if patient_language.get(patient_id, open_["preferred_language"]) != language:
            patients[patient_id] = language  # the ORM writes a column only when its value changes
        patient_language[patient_id] = language
        identities[open_["identity_id"]] = now
        conversations[conversation_id] = (language, now)
        journey.append({"patient_id": patient_id, "kind": "message_in", "reference": arrival.provider_message_id,
                        "data": {"channel": arrival.channel}})
        owed.append({"kind": "Communication", "crm_id": message_id})  # what crm_store.changes queues
        results.append(StoredInbound(message_id, conversation_id, False, arrival.provider_message_id,
                                     arrival.text, arrival.display, language, now))
    if patients:
        conn.execute(_PATIENT, [{"b_id": i, "b_language": patients[i]} for i in sorted(patients)])
    if identities:
        conn.execute(_IDENTITY, [{"b_id": i, "b_now": identities[i]} for i in sorted(identities)])
    if conversations:
        conn.execute(_CONVERSATION, [{"b_id": i, "b_language": conversations[i][0], "b_now": conversations[i][1]}
                                     for i in sorted(conversations)])
    if journey:
        conn.execute(insert(JourneyEvent), journey)
        conn.execute(insert(EhrOutbox), owed)
    return results
