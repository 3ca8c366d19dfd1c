"""What the bot is asked about a stored message, and its answer recorded: Core statements run by
the group commit (`crm_store.group_commit`) with the other webhooks' and answers' rows. The reads
go that way too: a batch of them costs one hand-over to the writer's thread (SQLite) or a few
statements on its connection (PostgreSQL), where each would otherwise take a pooled connection.

Each function does what the ORM code it replaces did, row for row: an answered message's status,
and its replies queued in the outbox (the columns `bot.outbox.reply_values` gives), which the
outbox then sends; a queued reply owes nothing to the EHR until its delivery is settled."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, insert, select, update

from crm_store.models import Conversation, Message

_TO_ANSWER = (select(Message.id, Message.text, Message.language, Message.channel, Message.conversation_id,
                    Conversation.patient_id, Conversation.status.label("conversation_status"),
                    Conversation.channel.label("conversation_channel"),
                    Conversation.language.label("conversation_language"))
             .join(Conversation, Conversation.id == Message.conversation_id))
_TURN = _TO_ANSWER.where(Message.id == bindparam("id"))
_WAITING = _TO_ANSWER.where(Message.conversation_id == bindparam("conversation_id"), Message.direction == "in",
                            Message.status.in_(("received", "pending_bot"))).order_by(Message.id)
_STATUS = update(Message).where(Message.id == bindparam("b_id")).values(status=bindparam("b_status"))


@dataclass(frozen=True)
class Answer:
    message_id: int
    replies: list[dict]  # the rows of the queued replies, in order


def waiting(conn: Connection, conversation_ids: list[int]) -> list[list]:
    """Each conversation's messages still to be answered, oldest first, as `turns` gives them."""
    return [conn.execute(_WAITING, {"conversation_id": i}).all() for i in conversation_ids]


def turns(conn: Connection, message_ids: list[int]):
    """What the bot needs to answer each message (and whether a person owns its conversation)."""
    return [conn.execute(_TURN, {"id": i}).one() for i in message_ids]


def set_status(conn: Connection, changes: list[tuple[int, str]]) -> list[None]:
    """(message id, status) for each item."""
    conn.execute(_STATUS, [{"b_id": i, "b_status": status} for i, status in changes])
    return [None] * len(changes)


def record(conn: Connection, answers: list[Answer]) -> list[list[int]]:
    """Each message answered and its replies queued; the ids of the replies, per answer."""
    conn.execute(_STATUS, [{"b_id": a.message_id, "b_status": "answered"} for a in answers])
    rows = [row for a in answers for row in a.replies]
    ids = iter(conn.execute(insert(Message).returning(Message.id, sort_by_parameter_order=True), rows)
               .scalars().all() if rows else ())
    return [[next(ids) for _ in a.replies] for a in answers]
