"""Sending surveys: after a fulfilled visit (once, with its department and doctor, outside quiet
hours, not into a conversation in progress), after a conversation staff resolved in the console,
on a channel the patient can be reached on."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import yaml
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from channels.base import InboundMessage
from crm_store.models import (
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    Message,
    Practitioner,
    StaffRole,
    SurveyResponse,
    utcnow,
)
from surveys import catalogue, dispatch
from surveys.definitions import parse_yaml
from tests.surveys.conftest import (
    SmsPatient,
    add_patient,
    add_staff,
    csrf_of,
    fulfilled_visit,
    send_survey,
    settings_for,
    sign_in,
)


async def _responses(hub, patient_id: int) -> list[SurveyResponse]:
    async with hub.sessions() as session:
        return (await session.scalars(select(SurveyResponse).where(SurveyResponse.patient_id == patient_id)
                                      .order_by(SurveyResponse.id))).all()


async def test_a_fulfilled_visit_is_surveyed_once_with_its_department_and_doctor(hub, fake, runtime):
    pid = await add_patient(hub, "+966500000201", channels=("sms", "webchat"))
    visit = await fulfilled_visit(hub, pid, doctor_offset=2)
    recent = await fulfilled_visit(hub, pid, end=utcnow() - timedelta(minutes=30))  # too soon to ask
    closed, queued = await runtime.run_once()
    assert (closed, len(queued)) == (0, 1)
    [response] = await _responses(hub, pid)
    async with hub.sessions() as session:
        doctor = await session.scalar(select(Practitioner).options(selectinload(Practitioner.department))
                                      .where(Practitioner.id == visit.practitioner_id))
    assert (response.reason, response.occasion, response.appointment_id) == ("visit", f"visit:{visit.id}", visit.id)
    assert (response.department, response.practitioner, response.channel) == (
        doctor.department.code, doctor.code, "sms")
    assert response.context["doctor"]["en"] == doctor.name_en
    [opening] = SmsPatient(hub, fake, "+966500000201").inbox()
    assert opening.startswith("Thank you for visiting")

    await SmsPatient(hub, fake, "+966500000201").say("stop survey")
    assert (await runtime.run_once()) == (0, [])  # the visit is surveyed already; the recent one waits
    assert recent.id not in {r.appointment_id for r in await _responses(hub, pid)}


async def test_a_visit_survey_waits_out_quiet_hours_and_a_conversation_in_progress(hub, fake):
    pid = await add_patient(hub, "+966500000202")
    # 23:30 in Riyadh (the patient's zone, from their number) is inside the quiet hours 21-8.
    night = datetime(2026, 11, 30, 20, 30, tzinfo=timezone.utc)
    await fulfilled_visit(hub, pid, end=night - timedelta(hours=4))
    quiet = settings_for("sqlite://", fake, campaign_quiet_start=21, campaign_quiet_end=8)
    assert await dispatch.after_visits(hub.sessions, quiet, ["sms"], now=night) == []
    morning = night + timedelta(hours=11)  # 10:30 local
    async with hub.sessions() as session:  # … but the patient is chatting with the bot right now
        identity = await session.scalar(select(ChannelIdentity.id).where(ChannelIdentity.patient_id == pid))
        session.add(Conversation(patient_id=pid, identity_id=identity, channel="sms",
                                 last_inbound_at=morning - timedelta(minutes=10)))
        await session.commit()
    assert await dispatch.after_visits(hub.sessions, quiet, ["sms"], now=morning) == []
    later = morning + timedelta(hours=1)
    assert len(await dispatch.after_visits(hub.sessions, quiet, ["sms"], now=later)) == 1


async def test_automatic_surveys_leave_a_recently_surveyed_patient_alone(hub, fake, runtime):
    pid = await add_patient(hub, "+966500000203")
    first = await send_survey(hub, pid, "post-chat-csat")
    await SmsPatient(hub, fake, "+966500000203").say("5")
    await SmsPatient(hub, fake, "+966500000203").say("yes")
    assert first.status == "sent"
    await fulfilled_visit(hub, pid)
    assert await runtime.run_once() == (0, [])  # surveyed minutes ago: within the 7-day cooldown
    assert len(await _responses(hub, pid)) == 1


async def test_resolving_a_handled_conversation_sends_the_satisfaction_survey(client, hub):
    await add_staff(hub, "salma", StaffRole.supervisor)
    pid = await add_patient(hub, None, channels=("webchat",), seen_days_ago=0)
    received = await hub.router.receive(InboundMessage("webchat", f"webchat-{pid}", "I need a person", "w-1"))
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, received.conversation_id)
        conversation.status, conversation.team = ConversationStatus.human, "cardiology"
        await session.commit()
    await sign_in(client, "salma")
    path = f"/console/conversations/{received.conversation_id}"
    answer = await client.post(path + "/resolve", data={"_csrf": await csrf_of(client, path)}, allow_redirects=False)
    assert answer.status == 302
    [response] = await _responses(hub, pid)
    assert (response.survey_code, response.reason, response.conversation_id, response.department) == (
        "post-chat-csat", "chat", received.conversation_id, "cardiology")
    async with hub.sessions() as session:
        asked = await session.get(Message, response.last_message_id)
    assert "How satisfied are you" in asked.text and len(asked.buttons) == 5

    # Resolving again, with nothing handled in between, sends nothing more.
    await client.post(path + "/resolve", data={"_csrf": await csrf_of(client, path)}, allow_redirects=False)
    assert len(await _responses(hub, pid)) == 1


async def test_a_resolved_detractor_follow_up_gets_no_satisfaction_survey(client, hub):
    await add_staff(hub, "salma", StaffRole.supervisor)
    pid = await add_patient(hub, None, channels=("webchat",))
    received = await hub.router.receive(InboundMessage("webchat", f"webchat-{pid}", "hello", "w-1"))
    async with hub.sessions() as session:
        conversation = await session.get(Conversation, received.conversation_id)
        conversation.status, conversation.handoff_reason = ConversationStatus.human, "detractor"
        await session.commit()
    await sign_in(client, "salma")
    path = f"/console/conversations/{received.conversation_id}"
    await client.post(path + "/resolve", data={"_csrf": await csrf_of(client, path)}, allow_redirects=False)
    assert await _responses(hub, pid) == []


async def test_the_channel_is_one_the_patient_can_be_reached_on(hub):
    pid = await add_patient(hub, "+966500000204", channels=("sms", "webchat"))
    async with hub.sessions() as session:  # opted out of SMS
        session.add(Consent(patient_id=pid, channel="sms", purpose=ConsentPurpose.transactional,
                            status=ConsentStatus.revoked, source="keyword:STOP"))
        await session.commit()
    sent = await send_survey(hub, pid)
    assert (sent.status, sent.response.channel) == ("sent", "webchat")

    other = await add_patient(hub, "+966500000205", channels=("sms",))
    async with hub.sessions() as session:
        session.add(Consent(patient_id=other, channel="sms", purpose=ConsentPurpose.transactional,
                            status=ConsentStatus.revoked, source="keyword:STOP"))
        await session.commit()
    assert (await send_survey(hub, other)).reason == "opted_out"
    assert (await send_survey(hub, pid, "no-such-survey")).reason == "no_survey"


async def test_whatsapp_outside_its_window_needs_the_surveys_approved_template(hub):
    pid = await add_patient(hub, "+966500000206", channels=("whatsapp",))
    async with hub.sessions() as session:
        skipped = await dispatch.offer(session, pid, "post-visit-nps")
        assert (skipped.status, skipped.reason) == ("skipped", "whatsapp_window")
        definition = catalogue.definition_of(await catalogue.by_code(session, "post-visit-nps")).as_json()
        definition["whatsapp"] = {"content_sid": {"en": "HX" + "1" * 32, "ar": "HX" + "2" * 32},
                                  "variables": {"1": "{first_name}"}}
        survey = await catalogue.by_code(session, "post-visit-nps")
        await catalogue.save(session, parse_yaml(yaml.safe_dump(definition, allow_unicode=True)),
                             "salma", None, survey)
        sent = await dispatch.offer(session, pid, "post-visit-nps")
        message = await session.get(Message, sent.message_ids[0])
        await session.commit()
    assert message.template == {"content_sid": "HX" + "1" * 32, "variables": {"1": "Sara"}}
