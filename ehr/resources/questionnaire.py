"""Questionnaire ↔ survey definition (a plain dict until surveys are built):

    {"code": "after-visit", "title": {"en": ..., "ar": ...},
     "questions": [{"id": "q1", "type": "nps" | "csat" | "yes_no" | "choice" | "text",
                    "text": {"en": ..., "ar": ...},
                    "options": [{"value": "a", "text": {"en": ..., "ar": ...}}]}]}   # options: choice only

English is each text's value and Arabic its translation extension."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.questionnaire import Questionnaire as FhirQuestionnaire

from ehr import identifiers
from ehr.resources import as_dict, find_identifier, listed, text_pair, translated, validated

MIN_VALUE_EXT = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE_EXT = "http://hl7.org/fhir/StructureDefinition/maxValue"

# Question type → (FHIR item type, answer range). NPS is "how likely are you to recommend us, 0-10";
# CSAT is a 1-5 satisfaction score.
ITEM_TYPES = {"nps": ("integer", (0, 10)), "csat": ("integer", (1, 5)), "yes_no": ("boolean", None),
              "choice": ("choice", None), "text": ("string", None)}


def canonical(code: str) -> str:
    """The canonical URL of a survey's Questionnaire, which its responses point to."""
    return f"{identifiers.SURVEY}:{code}"


def survey_code(url: str | None) -> str | None:
    """The survey code of a Questionnaire canonical (a `|version` suffix is ignored)."""
    if not url:
        return None
    url = url.split("|")[0]
    prefix = identifiers.SURVEY + ":"
    return url[len(prefix):] if url.startswith(prefix) else url.rstrip("/").rsplit("/", 1)[-1] or None


def to_fhir(survey: dict, *, resource_id: str | None = None) -> dict:
    """Build the Questionnaire of a survey definition."""
    title = survey.get("title") or {}
    return validated(FhirQuestionnaire, {
        "resourceType": "Questionnaire",
        **({"id": resource_id} if resource_id else {}),
        "url": canonical(survey["code"]),
        "identifier": [{"system": identifiers.SURVEY, "value": survey["code"]}],
        **translated("title", title.get("en"), title.get("ar")),
        "status": "active",
        "subjectType": ["Patient"],
        "item": [_item(q) for q in survey.get("questions") or []],
    })


def from_fhir(resource: Any) -> dict:
    """The survey definition of a Questionnaire (nested groups are flattened)."""
    res = as_dict(resource)
    title_en, title_ar = text_pair(res, "title")
    return {
        "code": find_identifier(res, identifiers.SURVEY) or survey_code(res.get("url")),
        "title": {"en": title_en, "ar": title_ar},
        "questions": [_question(item) for item in _leaves(res.get("item"))],
    }


def _item(question: dict) -> dict:
    kind = question["type"]
    fhir_type, bounds = ITEM_TYPES[kind]
    text = question.get("text") or {}
    item: dict = {"linkId": str(question["id"]), **translated("text", text.get("en"), text.get("ar")),
                  "type": fhir_type}
    if bounds:
        item["extension"] = [{"url": MIN_VALUE_EXT, "valueInteger": bounds[0]},
                             {"url": MAX_VALUE_EXT, "valueInteger": bounds[1]}]
    options = question.get("options") or []
    if options:
        item["answerOption"] = [{"valueCoding": {"code": str(o["value"]),
                                                 **translated("display", (o.get("text") or {}).get("en"),
                                                              (o.get("text") or {}).get("ar"))}}
                                if fhir_type == "choice" else {"valueInteger": int(o["value"])}
                                for o in options]
    return item


def _leaves(items: Any) -> list[dict]:
    out = []
    for item in listed(items):
        if item.get("type") in ("group", "display"):
            out.extend(_leaves(item.get("item")))
        else:
            out.append(item)
    return out


def _question(item: dict) -> dict:
    bounds = {e.get("url"): e.get("valueInteger") for e in listed(item.get("extension"))}
    fhir_type = item.get("type")
    if fhir_type == "integer":
        kind = "nps" if (bounds.get(MIN_VALUE_EXT), bounds.get(MAX_VALUE_EXT)) == (0, 10) else "csat"
    else:
        kind = {"boolean": "yes_no", "choice": "choice", "open-choice": "choice"}.get(fhir_type, "text")
    text_en, text_ar = text_pair(item, "text")
    question: dict = {"id": item.get("linkId"), "type": kind, "text": {"en": text_en, "ar": text_ar}}
    options = []
    for option in listed(item.get("answerOption")):
        coding = option.get("valueCoding")
        if isinstance(coding, dict) and coding.get("code") is not None:
            en, ar = text_pair(coding, "display")
            options.append({"value": coding["code"], "text": {"en": en, "ar": ar}})
        elif option.get("valueInteger") is not None or option.get("valueString") is not None:
            value = option.get("valueInteger", option.get("valueString"))
            options.append({"value": value, "text": {"en": str(value), "ar": None}})
    if options:
        question["options"] = options
    return question
