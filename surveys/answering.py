"""Answering a survey in the conversation, on any channel.

The router calls `SurveyAnswers` for every stored patient message, in the transaction that stores
it, after the consent keywords (STOP on SMS, WhatsApp and Telegram stays an opt-out, and ends the
survey at the next message) and after the other pre-bot handlers (an answer to an appointment
reminder sent meanwhile is the reminder's). While the patient has a survey open on this channel,
their messages answer it:

- a valid answer is recorded and the next question (by the survey's branching) is asked, or the
  thanks said and the survey completed;
- an answer that cannot be read is asked again once, with a hint; a second one skips the question
  ("skip" skips it at once); after a break (SILA_SURVEY_BREAK_HOURS) the question is asked again
  with a "welcome back" instead;
- "stop survey", «إيقاف الاستبيان», «خلاص»… stop it; an emergency stops it too and goes to the bot;
- after the survey has expired no answer is recorded: a score or choice answering its last
  question is told so, anything else goes to the bot.

Staff talking with the patient (a conversation owned by a person) take precedence: messages go
to them and the survey waits. Afterwards the bot answers as usual."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import consent
from bot.outbox import queue_reply
from bot.texts import text
from bot.triage import is_emergency
from crm_store import changes
from crm_store.models import (
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Message,
    SurveyAnswer,
    SurveyResponse,
    utcnow,
)
from surveys import alerts, parsing
from surveys.definitions import Definition, Question
from surveys.render import fill, question_message
from surveys.versions import asked

HUMAN_OWNED = (ConversationStatus.pending_human, ConversationStatus.human)
OPEN = ("sent", "in_progress")


async def open_response(session: AsyncSession, patient_id: int, *, lock: bool = False) -> SurveyResponse | None:
    """The patient's open survey; `lock` holds its row (PostgreSQL) against a racing answer."""
    query = select(SurveyResponse).where(SurveyResponse.open_patient_id == patient_id)
    return await session.scalar(query.with_for_update() if lock else query)


def record(session: AsyncSession, definition: Definition, response: SurveyResponse, question: Question, value, *,
           language: str | None, message_id: int | None, now) -> None:
    """Store one answer (None: the question was skipped) and the scores it carries."""
    session.add(SurveyAnswer(response_id=response.id, question_id=question.id, kind=question.type,
                             value_int=value if isinstance(value, int) else None,
                             value_text=value if isinstance(value, str) else None, skipped=value is None,
                             language=language, message_id=message_id, answered_at=now))
    if value is not None:
        response.answered += 1
        if question.type == "nps" and definition.first_of("nps").id == question.id:
            response.nps = value
        if question.type == "csat" and definition.first_of("csat").id == question.id:
            response.csat = value
    response.status = "in_progress"
    response.attempts = 0
    response.last_activity_at = now


async def finish(session: AsyncSession, response: SurveyResponse, status: str, *, reason: str | None = None,
                 now=None) -> str | None:
    """Close a survey (completed, stopped, expired); the alert it raised, if any."""
    now = now or utcnow()
    response.status, response.stop_reason, response.finished_at = status, reason, now
    response.open_patient_id = None
    await session.flush()
    rows = (await session.scalars(select(SurveyAnswer).where(
        SurveyAnswer.response_id == response.id, SurveyAnswer.skipped.is_(False)).order_by(SurveyAnswer.id))).all()
    answers = [(a.question_id, a.value_int if a.value_int is not None else a.value_text) for a in rows]
    alert = await alerts.raise_alert(session, await asked(session, response), response, answers)
    if response.answered:
        changes.queue(session, "QuestionnaireResponse", response.id)
    session.add(JourneyEvent(patient_id=response.patient_id, kind=f"survey_{status}", reference=str(response.id),
                             data={"survey": response.survey_code, "reason": reason, "alert": alert}))
    return alert


async def ask(session: AsyncSession, conversation: Conversation, response: SurveyResponse, body: str,
              buttons: list | None, language: str) -> Message:
    queued = queue_reply(session, conversation, body, buttons=buttons, language=language)
    await session.flush()
    response.last_message_id = queued.id
    return queued


class SurveyAnswers:
    """The router's pre-bot handler for survey answers."""

    def __init__(self, break_hours: float):
        self.break_after = timedelta(hours=break_hours)

    @staticmethod
    def claims(conn, patient_ids: set[int]) -> set[int]:
        """Of these patients, those with a survey open: the router stores the others' messages on
        its fast path, without this handler (Core, in the storing transaction)."""
        return set(conn.scalars(select(SurveyResponse.open_patient_id)
                                .where(SurveyResponse.open_patient_id.in_(patient_ids))))

    async def __call__(self, session: AsyncSession, conversation: Conversation, message: Message) -> list[Message]:
        if conversation.status in HUMAN_OWNED:
            return []
        response = await open_response(session, conversation.patient_id, lock=True)
        if response is None or response.channel != conversation.channel:
            return []
        await session.flush()
        now = utcnow()
        language = message.language or response.language
        definition = await asked(session, response)
        question = definition.question(response.current_question)
        if response.expires_at <= now:
            return await self._expired(session, conversation, message, response, question, language, now)
        if await consent.current(session, conversation.patient_id, conversation.channel,
                                 ConsentPurpose.transactional) == ConsentStatus.revoked:
            await finish(session, response, "stopped", reason="opted_out", now=now)
            return []
        if is_emergency(message.text):
            await finish(session, response, "stopped", reason="emergency", now=now)
            return []  # the bot gives the emergency guidance and calls staff
        message.status = "survey"
        response.conversation_id, response.language = conversation.id, language
        if parsing.is_stop(message.text):
            await finish(session, response, "stopped", reason="patient", now=now)
            return [queue_reply(session, conversation, text("survey_stopped", language), language=language)]
        before: tuple[str, ...] = ()
        if parsing.is_skip(message.text):
            value = None
        elif (parsed := parsing.parse(question, message.text)) is not None:
            value = parsed.value
        elif response.attempts == 0:
            welcome = now - response.last_activity_at > self.break_after
            response.attempts, response.last_activity_at = 1, now
            body, buttons = question_message(definition, question, language, response.context, invalid=True, before=(
                text("survey_welcome_back" if welcome else "survey_invalid", language),))
            return [await ask(session, conversation, response, body, buttons, language)]
        else:
            value, before = None, (text("survey_skipped", language),)
        record(session, definition, response, question, value, language=language, message_id=message.id, now=now)
        following = definition.next_after(question.id, value)
        if following is None:
            alert = await finish(session, response, "completed", now=now)
            thanks = definition.thanks_alert if alert and definition.thanks_alert else definition.thanks
            body = "\n\n".join([*before, fill(thanks(language), response.context, language)])
            return [queue_reply(session, conversation, body, language=language)]
        response.current_question = following.id
        body, buttons = question_message(definition, following, language, response.context, before=before)
        return [await ask(session, conversation, response, body, buttons, language)]

    @staticmethod
    async def _expired(session: AsyncSession, conversation: Conversation, message: Message,
                       response: SurveyResponse, question: Question, language: str, now) -> list[Message]:
        """No answer after the survey closed; the patient hears so if they were answering it."""
        await finish(session, response, "expired", reason="expired", now=now)
        last = await session.scalar(select(Message.id).where(
            Message.conversation_id == conversation.id, Message.direction == "out", Message.private.is_(False))
            .order_by(Message.id.desc()).limit(1))
        # Free text could be anything (a new request, say): only a score or a choice is clearly an answer.
        if last != response.last_message_id or question.type == "text" or is_emergency(message.text) \
                or parsing.parse(question, message.text) is None:
            return []
        message.status = "survey_closed"
        return [queue_reply(session, conversation, text("survey_closed", language), language=language)]
