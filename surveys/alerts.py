"""An unhappy answer (an NPS detractor, 0-6; a low satisfaction score where a survey asks for it)
raises an alert for patient relations to follow up: the patient's conversation waits for a person
in the inbox (team `patient_relations`, reason `detractor`), with an internal note of the answers,
and the console and Slack hear of it as of any handoff.

A person already handling the conversation keeps it: they get the note, and nothing else changes.
The "handoff" event is published after the transaction commits (whoever's transaction it is: the
router's, storing the patient's answer, or the expiry sweep's), so Slack reads the committed state."""
from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from crm_store.changes import CrmSession
from crm_store.models import (
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Message,
    SurveyResponse,
    utcnow,
)
from surveys.definitions import Definition

log = logging.getLogger(__name__)
TEAM = "patient_relations"
PENDING = "survey_events"
_publishers: list[Callable[[str, dict], object]] = []


def set_publisher(publish: Callable[[str, dict], object] | None) -> None:
    """Where committed alerts are announced (the hub's event bus); None: nowhere."""
    _publishers.clear()
    if publish is not None:
        _publishers.append(publish)


def publisher() -> Callable[[str, dict], object] | None:
    return _publishers[0] if _publishers else None


@event.listens_for(CrmSession, "after_commit")
def _announce(session: Session) -> None:
    for topic, payload in session.info.pop(PENDING, []):
        for publish in _publishers:
            try:
                publish(topic, payload)
            except Exception:  # an announcement is a nudge; the inbox reads the database anyway
                log.exception("announcing a survey alert failed")


@event.listens_for(CrmSession, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(PENDING, None)


def reason_for(definition: Definition, response: SurveyResponse) -> str | None:
    rule = definition.alert
    if rule.nps_at_most is not None and response.nps is not None and response.nps <= rule.nps_at_most:
        return "detractor"
    if rule.csat_at_most is not None and response.csat is not None and response.csat <= rule.csat_at_most:
        return "low_satisfaction"
    return None


def _note(definition: Definition, response: SurveyResponse, answers: list[tuple[str, object]], reason: str) -> str:
    scores = ", ".join(f"{k.upper()} {v}" for k, v in (("nps", response.nps), ("csat", response.csat)) if v is not None)
    lines = [f"Survey «{definition.title.en}» / «{definition.title.ar}»: {reason} ({scores}, {response.status})"]
    lines += [f"• {question}: {value}" for question, value in answers]
    return "\n".join(lines)


async def raise_alert(session: AsyncSession, definition: Definition, response: SurveyResponse,
                      answers: list[tuple[str, object]]) -> str | None:
    """Alert patient relations if the answers call for it; the reason, or None."""
    reason = reason_for(definition, response)
    if reason is None or response.alert is not None or response.conversation_id is None:
        return None
    conversation = await session.get(Conversation, response.conversation_id)
    response.alert = reason
    session.add(Message(conversation_id=conversation.id, channel=conversation.channel, direction="out",
                        sender="system", text=_note(definition, response, answers, reason), status="note",
                        private=True, language="en"))
    if conversation.status not in (ConversationStatus.pending_human, ConversationStatus.human):
        conversation.status = ConversationStatus.pending_human
        conversation.handoff_reason = reason
        conversation.team = TEAM
        conversation.assignee = None
        conversation.updated_at = utcnow()
        session.add(JourneyEvent(patient_id=conversation.patient_id, kind="handoff", reference=str(conversation.id),
                                 data={"reason": reason, "survey": response.survey_code, "response_id": response.id}))
    session.info.setdefault(PENDING, []).append(
        ("console", {"type": "handoff", "conversation_id": conversation.id, "urgent": False}))
    return reason
