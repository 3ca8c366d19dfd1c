"""The review queue: patient messages the bot understood poorly, to be labelled into training data.

A message is in the queue while nobody has labelled or set it aside, when the bot read it (it has
an intent; a tapped button's payload such as "/affirm" is not the patient's wording) and
- the classifier gave up (`nlu_fallback`) or called it out of scope, or
- its confidence was below SILA_NLU_REVIEW_CONFIDENCE, or
- its conversation was handed to a person (a handoff reason, or a person owns it), unless the
  message itself asked for that (asking for a person, an emergency, a refill).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.logs import redact
from crm_store.models import Conversation, ConversationStatus, Message, NluReview
from nlu_admin.yamlfile import Annotation, format_example, parse_example

REASONS = ("fallback", "out_of_scope", "low_confidence", "handoff")
MISUNDERSTOOD = ("nlu_fallback", "out_of_scope")
# Intents that ask for (or cause) a handoff: the bot understood them.
HANDOFF_INTENTS = ("request_human", "emergency", "request_refill")
ENTITY_KINDS = ("time", "department", "practitioner")


class PersonalData(ValueError):
    """Training data is kept in version control: no phone numbers, e-mail addresses or ID numbers."""


@dataclass
class QueueItem:
    message_id: int
    conversation_id: int
    patient_id: int
    at: datetime
    channel: str
    language: str
    text: str
    intent: str
    confidence: float | None
    reason: str
    suggestion: str  # the text with the entities the bot found, annotated

    @property
    def suggested_intent(self) -> str:
        return "" if self.intent in MISUNDERSTOOD else self.intent


def _handed_over():
    return or_(Conversation.handoff_reason.is_not(None),
               Conversation.status.in_((ConversationStatus.pending_human, ConversationStatus.human)))


def _criteria(reason: str | None, threshold: float):
    by_reason = {
        "fallback": Message.intent == "nlu_fallback",
        "out_of_scope": Message.intent == "out_of_scope",
        "low_confidence": and_(Message.intent.not_in(MISUNDERSTOOD), Message.confidence < threshold),
        "handoff": and_(_handed_over(), Message.intent.not_in(MISUNDERSTOOD + HANDOFF_INTENTS),
                        or_(Message.confidence.is_(None), Message.confidence >= threshold)),
    }
    return by_reason[reason] if reason in by_reason else or_(*by_reason.values())


def _base(threshold: float, reason: str | None, language: str | None):
    query = (select(Message, Conversation).join(Conversation, Message.conversation_id == Conversation.id)
             .outerjoin(NluReview, NluReview.message_id == Message.id)
             .where(Message.direction == "in", Message.sender == "patient", Message.intent.is_not(None),
                    NluReview.id.is_(None), not_(Message.text.startswith("/")), _criteria(reason, threshold)))
    if language:
        query = query.where(Message.language == language)
    return query


def reason_of(message: Message, conversation: Conversation, threshold: float) -> str:
    if message.intent == "nlu_fallback":
        return "fallback"
    if message.intent == "out_of_scope":
        return "out_of_scope"
    if message.confidence is not None and message.confidence < threshold:
        return "low_confidence"
    return "handoff"


def suggestion(text: str, entities: list | None) -> str:
    """The message with the entities the bot found annotated (`[بكرة](time)`), for the admin to
    keep, correct or drop. Values are left out: a time's value is a date only for that day."""
    found = []
    for e in entities or []:
        if not isinstance(e, dict) or e.get("entity") not in ENTITY_KINDS:
            continue
        start, end = e.get("start"), e.get("end")
        if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text):
            found.append(Annotation(start, end, e["entity"]))
    found.sort(key=lambda a: (a.start, -a.end))
    kept, last = [], -1
    for a in found:
        if a.start >= last:
            kept.append(a)
            last = a.end
    plain = text.replace("[", "(").replace("]", ")")
    return format_example(plain, kept)


async def queue(session: AsyncSession, threshold: float, *, reason: str | None = None,
                language: str | None = None, limit: int = 50) -> list[QueueItem]:
    rows = (await session.execute(_base(threshold, reason, language)
                                  .order_by(Message.id.desc()).limit(limit))).all()
    return [QueueItem(m.id, c.id, c.patient_id, m.created_at, m.channel, m.language or c.language, m.text,
                      m.intent, m.confidence, reason_of(m, c, threshold), suggestion(m.text, m.entities))
            for m, c in rows]


async def counts(session: AsyncSession, threshold: float, language: str | None = None) -> dict[str, int]:
    found = {}
    for reason in (None, *REASONS):
        query = _base(threshold, reason, language).with_only_columns(func.count(Message.id))
        found[reason or "all"] = await session.scalar(query)
    return found


async def pending(session: AsyncSession, message_id: int) -> tuple[Message, Conversation] | None:
    """The message if it is still waiting for review (not labelled or set aside yet)."""
    row = (await session.execute(
        select(Message, Conversation).join(Conversation, Message.conversation_id == Conversation.id)
        .outerjoin(NluReview, NluReview.message_id == Message.id)
        .where(Message.id == message_id, Message.direction == "in", NluReview.id.is_(None)))).first()
    return (row[0], row[1]) if row else None


def check_personal_data(raw: str) -> None:
    plain, _ = parse_example(raw)
    if redact(plain) != plain:
        raise PersonalData("remove phone numbers, e-mail addresses, dates of birth and ID numbers first: "
                           "the training data is kept in version control")
