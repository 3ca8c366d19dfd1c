"""What every action needs: the CRM store, the patient behind the conversation, their language,
and reading a choice the way patients answer ("2", «٢», "the second one", «الثاني»)."""
from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.nlu.arabic import normalize
from bot.nlu.choices import choice_index  # noqa: F401  (actions read choices through here)
from bot.settings import Settings, get_settings
from bot.texts import text

_runtime: dict[str, Any] = {}

FLOW_SLOTS = ("department", "practitioner", "appointment_day", "slot_choice", "confirmed", "patient_name",
              "patient_dob", "appointment_ref", "offered", "held_slot", "flow_stopped")


def configure(sessions: async_sessionmaker, settings: Settings, events=None) -> None:
    """Called by the hub at start-up: actions run inside Sila and share its engine and events."""
    _runtime["sessions"] = sessions
    _runtime["settings"] = settings
    _runtime["events"] = events


def publish(topic: str, event: dict) -> None:
    if (events := _runtime.get("events")) is not None:
        events.publish(topic, event)


def sessions() -> async_sessionmaker:
    return _runtime["sessions"]


def settings() -> Settings:
    return _runtime.get("settings") or get_settings()


def metadata(tracker: Tracker) -> dict[str, Any]:
    return (tracker.latest_message or {}).get("metadata") or {}


def language(tracker: Tracker) -> str:
    return tracker.get_slot("language") or metadata(tracker).get("language") or settings().default_language


def patient_id(tracker: Tracker) -> int | None:
    value = metadata(tracker).get("patient_id")
    return int(value) if value is not None else None


def conversation_id(tracker: Tracker) -> int | None:
    try:
        return int(tracker.sender_id)
    except (TypeError, ValueError):
        return None


def say(dispatcher, tracker: Tracker, key: str, buttons: list[dict] | None = None, **values) -> None:
    dispatcher.utter_message(text=text(key, language(tracker), **values), buttons=buttons or [])


def reset_flow() -> list[dict]:
    return [SlotSet(slot, None) for slot in FLOW_SLOTS]


def words(value: str) -> str:
    """Normalised words with a space either side, so a phrase matches only whole words."""
    return " " + " ".join(re.findall(r"\w+", normalize(value))) + " "


def latest_intent(tracker: Tracker) -> tuple[str | None, float]:
    intent = (tracker.latest_message or {}).get("intent") or {}
    return intent.get("name"), float(intent.get("confidence") or 0.0)


def entity_values(tracker: Tracker, entity: str) -> list[dict]:
    return [e for e in (tracker.latest_message or {}).get("entities") or [] if e.get("entity") == entity]


_YES = {"yes", "yeah", "yep", "yup", "y", "ok", "okay", "sure", "confirm", "correct", "right", "please do",
        "نعم", "ايوه", "ايوا", "اي", "أي", "اه", "آه", "اكيد", "تمام", "موافق", "اكد", "تاكيد", "ماشي", "طيب",
        "يس", "اوكي", "akeed", "aywa", "ah", "tamam", "na3am"}
_NO = {"no", "nope", "nah", "n", "not", "dont", "cancel", "لا", "لأ", "لاء", "مش", "مو", "ما", "بلاش", "الغاء",
       "la", "la2"}


def yes_no(tracker: Tracker, options: int = 2) -> bool | None:
    """True for yes, False for no, None when the answer is neither (by intent, number or word)."""
    intent, confidence = latest_intent(tracker)
    if intent in ("affirm", "deny") and confidence >= 0.6:
        return intent == "affirm"
    raw = (tracker.latest_message or {}).get("text") or ""
    index = choice_index(raw, options)
    if index is not None:
        return index == 1
    words = set(re.findall(r"\w+", normalize(raw)))
    yes = bool(words & {normalize(w) for w in _YES})
    no = bool(words & {normalize(w) for w in _NO})
    return yes if yes != no else None
