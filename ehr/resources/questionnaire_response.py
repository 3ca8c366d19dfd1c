"""QuestionnaireResponse ↔ survey response (a plain dict until surveys are built):

    {"id": 12, "survey_code": "after-visit", "answers": {"q1": 9, "q2": True, "q3": "b"},
     "authored": <aware datetime>}

With the survey definition given, each answer is typed by its question (a choice answer is a
Coding, an NPS score an integer); without it, by the Python type of the value."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse as FhirQuestionnaireResponse

from ehr import identifiers
from ehr.resources import (
    as_dict,
    find_identifier,
    identifier,
    instant,
    int_or_none,
    listed,
    parse_datetime,
    ref_of,
    reference,
    translated,
    validated,
)
from ehr.resources.questionnaire import canonical, survey_code


def to_fhir(response: dict, *, patient_ref: str, survey: dict | None = None,
            resource_id: str | None = None) -> dict:
    """Build the completed QuestionnaireResponse of a patient's survey answers."""
    questions = {str(q["id"]): q for q in (survey or {}).get("questions") or []}
    items = []
    for qid, value in (response.get("answers") or {}).items():
        if value is None or value == "":
            continue
        question = questions.get(str(qid), {})
        text = question.get("text") or {}
        items.append({"linkId": str(qid), **translated("text", text.get("en"), text.get("ar")),
                      "answer": [_answer(value, question)]})
    patient = reference(patient_ref)
    return validated(FhirQuestionnaireResponse, {
        "resourceType": "QuestionnaireResponse",
        **({"id": resource_id} if resource_id else {}),
        **({"identifier": identifier(identifiers.SURVEY_RESPONSE, response["id"])}
           if response.get("id") is not None else {}),
        "questionnaire": canonical(response["survey_code"]),
        "status": "completed",
        "subject": patient,
        "source": patient,
        **({"authored": instant(response["authored"])} if response.get("authored") else {}),
        **({"item": items} if items else {}),
    })


def from_fhir(resource: Any) -> dict:
    """The survey response of a QuestionnaireResponse: answers by question id (groups flattened)."""
    res = as_dict(resource)
    answers: dict = {}
    _collect(res.get("item"), answers)
    ident = res.get("identifier")
    return {
        "id": int_or_none(find_identifier({"identifier": [ident] if isinstance(ident, dict) else ident},
                                          identifiers.SURVEY_RESPONSE)),
        "survey_code": survey_code(res.get("questionnaire")),
        "answers": answers,
        "authored": parse_datetime(res.get("authored")),
        "patient_ref": ref_of(res.get("subject")),
        "status": res.get("status"),
    }


def _answer(value: Any, question: dict) -> dict:
    kind = question.get("type")
    if kind == "choice" or (kind is None and isinstance(value, dict)):
        code = value.get("code") if isinstance(value, dict) else value
        option = next((o for o in question.get("options") or [] if str(o["value"]) == str(code)), None)
        text = (option or {}).get("text") or {}
        return {"valueCoding": {"code": str(code), **translated("display", text.get("en"), text.get("ar"))}}
    if kind == "yes_no" or isinstance(value, bool):
        return {"valueBoolean": _boolean(value)}
    if kind in ("nps", "csat") or isinstance(value, int):
        return {"valueInteger": int(value)}
    if isinstance(value, float):
        return {"valueDecimal": value}
    return {"valueString": str(value)}


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "true", "1", "y", "نعم")
    return bool(value)


def _collect(items: Any, answers: dict) -> None:
    for item in listed(items):
        for answer in listed(item.get("answer")):
            value = _value(answer)
            if value is not None and item.get("linkId") is not None:
                answers[str(item["linkId"])] = value
            _collect(answer.get("item"), answers)
        _collect(item.get("item"), answers)


def _value(answer: dict) -> Any:
    for key in ("valueBoolean", "valueInteger", "valueDecimal", "valueString", "valueDate", "valueDateTime",
                "valueTime", "valueUri"):
        if answer.get(key) is not None:
            return answer[key]
    coding = answer.get("valueCoding")
    if isinstance(coding, dict):
        return coding.get("code") or coding.get("display")
    return None
