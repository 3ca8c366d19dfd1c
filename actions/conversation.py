"""Small talk, FAQ, finding a doctor, handing over to a person, emergencies, misunderstandings."""
from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, SlotSet
from rasa_sdk.forms import ValidationAction
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from actions import common
from actions.common import language, say
from bot.texts import text
from crm_store.content import load_hospital
from crm_store.models import (
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    Department,
    JourneyEvent,
    Message,
    Patient,
    Practitioner,
)

MISUNDERSTOOD = {"nlu_fallback", "out_of_scope"}


class ValidateSlotMappings(ValidationAction):
    """Runs on every patient message: records what the NLU understood on the stored message and
    keeps the `language` slot on the language Sila detected for this message."""

    async def extract_language(self, dispatcher, tracker: Tracker, domain) -> dict[str, Any]:
        meta = common.metadata(tracker)
        latest = tracker.latest_message or {}
        if meta.get("message_id"):
            intent = latest.get("intent") or {}
            entities = [{k: e.get(k) for k in ("entity", "value", "start", "end", "extractor")}
                        for e in latest.get("entities") or []]
            async with common.sessions()() as session:
                message = await session.get(Message, int(meta["message_id"]))
                if message is not None:
                    # The photos and voice notes the patient sent are kept beside what the NLU read.
                    media = [e for e in message.entities or [] if "media" in e]
                    message.intent, message.confidence = intent.get("name"), intent.get("confidence")
                    message.entities = media + entities
                    await session.commit()
        detected = meta.get("language") or latest.get("language")
        return {"language": detected} if detected in ("ar", "en") else {}

    async def validate_language(self, value, dispatcher, tracker, domain) -> dict[str, Any]:
        return {"language": value}


class ActionGreet(Action):
    def name(self) -> str:
        return "action_greet"

    async def run(self, dispatcher, tracker, domain):
        lang = language(tracker)
        name = ""
        if (pid := common.patient_id(tracker)) is not None:
            async with common.sessions()() as session:
                patient = await session.get(Patient, pid)
                if patient and patient.display_name(lang):
                    name = " " + patient.display_name(lang).split()[0]
        hospital = load_hospital(common.settings().hospital_file)["hospital"]
        titles = text("greet_buttons", lang).split("|")
        say(dispatcher, tracker, "greet", buttons=[{"title": t, "payload": t} for t in titles],
            name=name, hospital=hospital[f"name_{lang}"])
        return []


class ActionGoodbye(Action):
    def name(self) -> str:
        return "action_goodbye"

    async def run(self, dispatcher, tracker, domain):
        say(dispatcher, tracker, "goodbye")
        return [ActiveLoop(None), *common.reset_flow()]


class ActionThank(Action):
    def name(self) -> str:
        return "action_thank"

    async def run(self, dispatcher, tracker, domain):
        say(dispatcher, tracker, "thank")
        return []


class ActionYesNo(Action):
    """A yes or no outside any flow: the answer to "would you like a person?", or nothing to do."""

    def name(self) -> str:
        return "action_yes_no"

    async def run(self, dispatcher, tracker, domain):
        if tracker.get_slot("offered_human") and common.yes_no(tracker):
            return await ActionHandoff().run(dispatcher, tracker, domain)
        say(dispatcher, tracker, "anything_else")
        return [SlotSet("offered_human", None)]


class ActionAnswerFaq(Action):
    def name(self) -> str:
        return "action_answer_faq"

    async def run(self, dispatcher, tracker, domain):
        lang = language(tracker)
        content = load_hospital(common.settings().hospital_file)
        intent, _ = common.latest_intent(tracker)
        if intent == "ask_insurance":
            self._insurance(dispatcher, tracker, content, lang)
        elif intent == "request_refill":
            dispatcher.utter_message(text=content["faq"]["refill"][lang])
            return await hand_over(dispatcher, tracker, reason="refill", announce=False)
        else:
            key = {"ask_hours": "hours", "ask_location": "location", "ask_test_results": "test_results"}
            dispatcher.utter_message(text=content["faq"][key.get(intent, "hours")][lang])
        return []

    @staticmethod
    def _insurance(dispatcher, tracker, content, lang) -> None:
        message = common.words((tracker.latest_message or {}).get("text") or "")
        for insurer in content["insurers"]:
            if any(common.words(alias) in message for alias in insurer["aliases"]):
                say(dispatcher, tracker, "insurance_yes", insurer=insurer[f"name_{lang}"])
                return
        names = "\n".join(f"• {i[f'name_{lang}']}" for i in content["insurers"])
        dispatcher.utter_message(text=f"{content['faq']['insurance_intro'][lang]}\n{names}")


class ActionFindDoctor(Action):
    def name(self) -> str:
        return "action_find_doctor"

    async def run(self, dispatcher, tracker, domain):
        lang = language(tracker)
        practitioners = [e["value"] for e in common.entity_values(tracker, "practitioner")]
        departments = [e["value"] for e in common.entity_values(tracker, "department")]
        async with common.sessions()() as session:
            query = select(Practitioner).options(selectinload(Practitioner.department)).where(Practitioner.active)
            if practitioners:
                doctors = (await session.scalars(query.where(Practitioner.code.in_(practitioners)))).all()
                for doc in doctors:
                    say(dispatcher, tracker, "doctor_profile", buttons=[self._book_button(doc, lang)],
                        name=doc.name(lang), specialty=doc.specialty(lang), department=doc.department.name(lang))
                return []
            if departments:
                dept = await session.scalar(select(Department).where(Department.code == departments[0]))
                doctors = (await session.scalars(query.where(Practitioner.department_id == dept.id))).all()
                lines = "\n".join(f"• {d.name(lang)} — {d.specialty(lang)}" for d in doctors)
                dispatcher.utter_message(
                    text=text("doctors_in_department", lang, department=dept.name(lang)) + "\n" + lines,
                    buttons=[self._book_button(d, lang) for d in doctors])
                return []
            depts = (await session.scalars(select(Department).order_by(Department.id))).all()
        dispatcher.utter_message(text=text("departments_list", lang) + "\n" +
                                 "\n".join(f"• {d.name(lang)}" for d in depts))
        return []

    @staticmethod
    def _book_button(doctor: Practitioner, lang: str) -> dict:
        title = text("book_with", lang, name=doctor.name(lang))
        return {"title": title, "payload": title}


async def hand_over(dispatcher, tracker, *, reason: str, urgent: bool = False, announce: bool = True) -> list:
    """Give the conversation to staff: the bot stays silent until they resolve it."""
    conversation_id = common.conversation_id(tracker)
    if conversation_id is not None:
        async with common.sessions()() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is not None:
                conversation.status = ConversationStatus.pending_human
                conversation.handoff_reason = reason
                conversation.team = tracker.get_slot("department") or conversation.team
                conversation.urgent = conversation.urgent or urgent
                session.add(JourneyEvent(patient_id=conversation.patient_id, kind="handoff",
                                         reference=str(conversation.id), data={"reason": reason, "urgent": urgent}))
                await session.commit()
                common.publish("console", {"type": "handoff", "conversation_id": conversation.id, "urgent": urgent})
    if announce:
        say(dispatcher, tracker, "handoff")
    return [ActiveLoop(None), *common.reset_flow(), SlotSet("offered_human", None)]


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    async def run(self, dispatcher, tracker, domain):
        intent, _ = common.latest_intent(tracker)
        reason = "misunderstanding" if tracker.get_slot("offered_human") else "request_human"
        return await hand_over(dispatcher, tracker, reason=reason if intent != "request_refill" else "refill")


class ActionEmergency(Action):
    def name(self) -> str:
        return "action_emergency"

    async def run(self, dispatcher, tracker, domain):
        # Safety first: the guidance goes out before anything else, then staff are alerted.
        say(dispatcher, tracker, "emergency")
        return await hand_over(dispatcher, tracker, reason="emergency", urgent=True, announce=False)


class ActionOptOut(Action):
    def name(self) -> str:
        return "action_opt_out"

    async def run(self, dispatcher, tracker, domain):
        pid = common.patient_id(tracker)
        channel = common.metadata(tracker).get("channel")
        if pid is not None and channel:
            async with common.sessions()() as session:
                session.add(Consent(patient_id=pid, channel=channel, purpose=ConsentPurpose.marketing,
                                    status=ConsentStatus.revoked, source="bot:opt_out"))
                session.add(JourneyEvent(patient_id=pid, kind="consent_revoked", reference=channel,
                                         data={"purpose": "marketing"}))
                await session.commit()
        say(dispatcher, tracker, "opt_out")
        return [ActiveLoop(None), *common.reset_flow()]


class ActionFallback(Action):
    """Two misunderstandings in a row and the patient is offered a person."""

    def name(self) -> str:
        return "action_fallback"

    async def run(self, dispatcher, tracker, domain):
        recent = [e for e in tracker.events if e.get("event") == "user"][-2:]
        missed = [((e.get("parse_data") or {}).get("intent") or {}).get("name") in MISUNDERSTOOD for e in recent]
        if len(missed) == 2 and all(missed):
            lang = language(tracker)
            say(dispatcher, tracker, "offer_human", buttons=[
                {"title": text("talk_to_person", lang), "payload": "/request_human"},
                {"title": text("answer_no", lang), "payload": "/deny"},
            ])
            return [SlotSet("offered_human", True)]
        say(dispatcher, tracker, "not_understood")
        return []
