"""A survey question as a message: its text in the patient's language, a hint on how to answer, and
buttons for the answers where there are few (channels without buttons show them as numbered lines).

A 0-10 score has no buttons: as numbered lines, "2" would be the second option, a score of 1.
The 1-5 scale's buttons are in order, so their numbers are the scores themselves."""
from __future__ import annotations

import re

from bot.texts import text
from surveys.definitions import Definition, Question
from surveys.parsing import CSAT_LABELS


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def fill(template: str, context: dict, language: str) -> str:
    """Fill {hospital}, {department}, {doctor}, {first_name}; what is unknown reads as empty."""
    lang = "ar" if language == "ar" else "en"
    values = _Blank({key: (names or {}).get(lang) or (names or {}).get("en") or ""
                     for key, names in (context or {}).items() if isinstance(names, dict)})
    filled = template.format_map(values)
    return re.sub(r" {2,}", " ", re.sub(r"\s+([,.،؛؟?!])", r"\1", filled)).strip()


def buttons(question: Question, language: str) -> list[dict] | None:
    lang = "ar" if language == "ar" else "en"
    if question.type == "csat":
        return [{"title": label, "payload": str(value)} for value, label in enumerate(CSAT_LABELS[lang], 1)]
    if question.type == "yes_no":
        return [{"title": text(key, lang), "payload": text(key, lang)} for key in ("survey_yes", "survey_no")]
    if question.type == "choice":
        return [{"title": o.text(lang), "payload": o.text(lang)} for o in question.options]
    return None


def hint(question: Question, language: str, *, invalid: bool = False) -> str | None:
    """How to answer: always for a 0-10 score; for the others only after an answer we could not read."""
    if question.type == "nps" or (invalid and question.type == "csat"):
        return text(f"survey_hint_{question.type}", language)
    if invalid and question.type in ("yes_no", "choice"):
        return text(f"survey_invalid_{question.type}", language)
    return None


def question_message(definition: Definition, question: Question, language: str, context: dict, *,
                     before: tuple[str, ...] = (), opening: bool = False,
                     invalid: bool = False) -> tuple[str, list[dict] | None]:
    """The text and buttons that ask `question`; `opening` adds the survey's intro and how to stop."""
    parts = [*before]
    if opening and definition.intro:
        parts.append(fill(definition.intro(language), context, language))
    ask = fill(question.text(language), context, language)
    if how := hint(question, language, invalid=invalid):
        ask += "\n" + how
    parts.append(ask)
    if opening:
        parts.append(text("survey_stop_hint", language))
    return "\n\n".join(p for p in parts if p), buttons(question, language)


def whatsapp_template(definition: Definition, language: str, context: dict) -> dict | None:
    """The approved opening template, for a WhatsApp patient outside the 24-hour window."""
    if definition.whatsapp is None:
        return None
    lang = "ar" if language == "ar" else "en"
    sid = definition.whatsapp.content_sid.get(lang) or next(iter(definition.whatsapp.content_sid.values()))
    return {"content_sid": sid,
            "variables": {k: fill(v, context, language) for k, v in definition.whatsapp.variables.items()}}
