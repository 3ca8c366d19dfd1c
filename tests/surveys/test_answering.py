"""Answering a survey over SMS (through the fake Twilio) and web chat, on SQLite and PostgreSQL:
branching, answers asked again then skipped, stopping, expiry, breaks, one survey at a time, and
the bot (or staff) getting every message that is not an answer."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from crm_store.models import (
    Conversation,
    ConversationStatus,
    EhrOutbox,
    JourneyEvent,
    Message,
    SurveyAnswer,
    SurveyResponse,
    utcnow,
)
from tests.surveys.conftest import (
    SmsPatient,
    add_patient,
    answers_of,
    last_inbound,
    options,
    response_of,
    send_survey,
)


async def test_an_english_promoter_is_asked_about_punctuality_then_for_a_comment(hub, fake):
    pid = await add_patient(hub, "+966500000101")
    sent = await send_survey(hub, pid)
    patient = SmsPatient(hub, fake, "+966500000101")
    [opening] = patient.inbox()
    assert "Al Noor" in opening and "0 (not at all likely) to 10" in opening and 'stop survey' in opening

    asked = await patient.say("nine")
    assert "seen on time" in asked and options(asked) == ["Yes", "No"]  # numbered: SMS has no buttons
    asked = await patient.say("1")
    assert "anything you would like to tell us" in asked
    thanks = await patient.say("The nurse was lovely, thank you")
    assert thanks.startswith("Thank you for your answers")

    response = await response_of(hub, sent.response.id)
    assert (response.status, response.nps, response.answered, response.alert) == ("completed", 9, 3, None)
    assert await answers_of(hub, response.id) == {
        "recommend": 9, "on_time": "yes", "comment": "The nurse was lovely, thank you"}
    async with hub.sessions() as session:
        queued = await session.scalar(select(EhrOutbox).where(EhrOutbox.kind == "QuestionnaireResponse",
                                                              EhrOutbox.crm_id == response.id))
        journey = (await session.scalars(select(JourneyEvent.kind).where(JourneyEvent.patient_id == pid))).all()
    assert queued is not None and {"survey_sent", "survey_completed"} <= set(journey)
    assert (await last_inbound(hub, "+966500000101")).status == "survey"


async def test_an_arabic_detractor_is_asked_what_went_wrong_and_patient_relations_are_alerted(hub, fake):
    pid = await add_patient(hub, "+966500000102", language="ar")
    sent = await send_survey(hub, pid)
    patient = SmsPatient(hub, fake, "+966500000102")
    [opening] = patient.inbox()
    assert "النور" in opening and "من ٠" in opening and "إيقاف الاستبيان" in opening

    asked = await patient.say("٣")
    assert "ما أكثر ما لم يعجبك" in asked and options(asked)[0] == "وقت الانتظار"
    asked = await patient.say("الانتظار")  # the option by its word, not its number
    assert "أخبرنا باختصار" in asked
    thanks = await patient.say("انتظرت ساعتين بعد موعدي ولم يعتذر أحد")
    assert "علاقات المرضى" in thanks

    response = await response_of(hub, sent.response.id)
    assert (response.status, response.nps, response.alert) == ("completed", 3, "detractor")
    assert await answers_of(hub, response.id) == {
        "recommend": 3, "went_wrong": "waiting", "details": "انتظرت ساعتين بعد موعدي ولم يعتذر أحد"}
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, response.conversation_id)
        note = await session.scalar(select(Message).where(Message.conversation_id == conversation.id,
                                                          Message.private.is_(True)))
        language = await session.scalar(select(SurveyAnswer.language).where(
            SurveyAnswer.response_id == response.id, SurveyAnswer.question_id == "details"))
    assert (conversation.status, conversation.handoff_reason, conversation.team) == (
        ConversationStatus.pending_human, "detractor", "patient_relations")
    assert "NPS 3" in note.text and "waiting" in note.text and language == "ar"
    # Staff now own it: the patient's next message waits for them, not for the bot.
    await patient.say("متى يتصلون بي؟")
    assert (await last_inbound(hub, "+966500000102")).status == "routed_human"


async def test_an_unreadable_answer_is_asked_again_once_then_skipped(hub, fake):
    pid = await add_patient(hub, "+966500000103")
    sent = await send_survey(hub, pid)
    patient = SmsPatient(hub, fake, "+966500000103")

    again = await patient.say("I waited two hours and the doctor was in a hurry the whole time")
    assert again.startswith("Sorry, I didn't catch that answer.") and "from 0 (not at all likely) to 10" in again
    skipped = await patient.say("hmm, hard to say")
    assert skipped.startswith("No problem, let's move on.") and "seen on time" in skipped  # skipped: default branch
    assert (await response_of(hub, sent.response.id)).current_question == "on_time"

    again = await patient.say("maybe")
    assert "Please answer yes or no." in again and options(again) == ["Yes", "No"]
    asked = await patient.say("no")
    assert "anything you would like to tell us" in asked
    await patient.say("skip")
    response = await response_of(hub, sent.response.id)
    assert (response.status, response.nps, response.answered) == ("completed", None, 1)
    assert await answers_of(hub, response.id) == {"recommend": None, "on_time": "no", "comment": None}


async def test_stopping_mid_survey_ends_it_and_the_bot_answers_again(hub, fake):
    pid = await add_patient(hub, "+966500000104", language="ar")
    sent = await send_survey(hub, pid)
    patient = SmsPatient(hub, fake, "+966500000104")
    await patient.say("١٠")
    stopped = await patient.say("خلاص")
    assert "أوقفت الاستبيان" in stopped
    response = await response_of(hub, sent.response.id)
    assert (response.status, response.stop_reason, response.nps, response.open_patient_id) == (
        "stopped", "patient", 10, None)

    await patient.say("نعم")  # would have answered "were you seen on time?"
    assert (await last_inbound(hub, "+966500000104")).status == "pending_bot"  # the bot's (Rasa is down here)
    assert await answers_of(hub, response.id) == {"recommend": 10}
    async with hub.sessions() as session:  # the score given before stopping still reaches the EHR
        assert await session.scalar(select(EhrOutbox.id).where(EhrOutbox.kind == "QuestionnaireResponse",
                                                               EhrOutbox.crm_id == response.id))


async def test_stop_alone_on_sms_is_the_opt_out_and_ends_the_survey(hub, fake):
    pid = await add_patient(hub, "+966500000105")
    sent = await send_survey(hub, pid)
    patient = SmsPatient(hub, fake, "+966500000105")
    await patient.say("STOP")
    assert (await last_inbound(hub, "+966500000105")).status == "consent"
    await patient.say("8")
    response = await response_of(hub, sent.response.id)
    assert (response.status, response.stop_reason, response.nps) == ("stopped", "opted_out", None)
    assert (await last_inbound(hub, "+966500000105")).status != "survey"


async def test_an_expired_survey_accepts_no_answer(hub, fake, runtime):
    pid = await add_patient(hub, "+966500000106")
    sent = await send_survey(hub, pid, expiry_days=2)
    patient = SmsPatient(hub, fake, "+966500000106")
    async with hub.sessions() as session:
        await session.execute(update(SurveyResponse).where(SurveyResponse.id == sent.response.id)
                              .values(expires_at=utcnow() - timedelta(minutes=1)))
        await session.commit()

    closed = await patient.say("9")
    assert "survey has closed" in closed
    response = await response_of(hub, sent.response.id)
    assert (response.status, response.nps, response.answered) == ("expired", None, 0)
    assert await answers_of(hub, response.id) == {}
    assert (await last_inbound(hub, "+966500000106")).status == "survey_closed"
    await patient.say("10")  # no longer anything to do with the survey: the bot's
    assert (await last_inbound(hub, "+966500000106")).status == "pending_bot"


async def test_the_sweep_closes_expired_surveys_and_a_silent_detractor_still_alerts(hub, fake, runtime):
    pid = await add_patient(hub, "+966500000107")
    sent = await send_survey(hub, pid)
    patient = SmsPatient(hub, fake, "+966500000107")
    await patient.say("2")  # a detractor who never answers the next question
    assert await runtime.run_once(utcnow() + timedelta(days=4)) == (1, [])
    response = await response_of(hub, sent.response.id)
    assert (response.status, response.alert) == ("expired", "detractor")
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, response.conversation_id)
    assert conversation.status == ConversationStatus.pending_human and conversation.team == "patient_relations"


async def test_one_survey_at_a_time_and_a_break_is_welcomed_back(hub, fake):
    pid = await add_patient(hub, "+966500000108")
    first = await send_survey(hub, pid)
    second = await send_survey(hub, pid, "post-chat-csat")
    assert (second.status, second.reason) == ("skipped", "busy")
    patient = SmsPatient(hub, fake, "+966500000108")
    await patient.say("8")
    async with hub.sessions() as session:  # the patient went quiet for a day
        await session.execute(update(SurveyResponse).where(SurveyResponse.id == first.response.id)
                              .values(last_activity_at=utcnow() - timedelta(days=1)))
        await session.commit()
    back = await patient.say("hello?")
    assert back.startswith("Welcome back!") and "seen on time" in back
    await patient.say("yes")
    await patient.say("skip")
    assert (await response_of(hub, first.response.id)).status == "completed"
    third = await send_survey(hub, pid, "post-chat-csat", unless_active_within=None)
    assert third.status == "sent"


async def test_an_emergency_mid_survey_goes_to_the_bot(hub, fake):
    pid = await add_patient(hub, "+966500000109")
    sent = await send_survey(hub, pid)
    patient = SmsPatient(hub, fake, "+966500000109")
    await patient.say("I have chest pain right now")
    response = await response_of(hub, sent.response.id)
    assert (response.status, response.stop_reason) == ("stopped", "emergency")
    assert (await last_inbound(hub, "+966500000109")).status == "pending_bot"


async def test_staff_talking_with_the_patient_take_precedence(hub, fake):
    pid = await add_patient(hub, "+966500000110")
    sent = await send_survey(hub, pid)
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, sent.response.conversation_id)
        conversation.status, conversation.assignee = ConversationStatus.human, "amal"
        await session.commit()
    patient = SmsPatient(hub, fake, "+966500000110")
    assert await patient.say("7") == ""
    assert (await last_inbound(hub, "+966500000110")).status == "routed_human"
    assert (await response_of(hub, sent.response.id)).answered == 0


async def test_web_chat_buttons_carry_the_answers(hub):
    pid = await add_patient(hub, None, channels=("webchat",))
    sent = await send_survey(hub, pid, "post-chat-csat")
    async with hub.sessions() as session:
        opening = await session.get(Message, sent.message_ids[0])
    assert [b["payload"] for b in opening.buttons] == ["1", "2", "3", "4", "5"]
    assert opening.buttons[4]["title"] == "Very satisfied"
    from channels.base import InboundMessage

    token = f"webchat-{pid}"
    await hub.router.receive(InboundMessage("webchat", token, "4", "w-1", metadata={"display": "Satisfied"}))
    async with hub.sessions() as session:
        asked = await session.scalar(select(Message).where(Message.conversation_id == opening.conversation_id,
                                                           Message.direction == "out").order_by(Message.id.desc()))
    assert "resolved" in asked.text and [b["payload"] for b in asked.buttons] == ["Yes", "No"]
    await hub.router.receive(InboundMessage("webchat", token, "No", "w-2", metadata={"display": "No"}))
    await hub.router.receive(InboundMessage("webchat", token, "The refill is still not sent", "w-3"))
    response = await response_of(hub, sent.response.id)
    assert (response.status, response.csat, response.alert) == ("completed", 4, None)
    assert await answers_of(hub, response.id) == {
        "satisfaction": 4, "resolved": "no", "what_missing": "The refill is still not sent"}
