"""Surveys in FHIR: each definition is a Questionnaire (published to Sila's store, written to the
EHR through the outbox), each finished response a QuestionnaireResponse about the patient.

The mapping modules (ehr/resources/questionnaire*.py) build the resources; this adds what only
a survey knows: the version, the branching as `enableWhen`, the texts filled for the patient, and
"stopped" for a response abandoned part way (FHIR: "partially filled out with answers but has been
abandoned"). A survey never written by a patient (no answer at all) is not written to the EHR.

`enableWhen` says which earlier answers a question depends on. A branch to a question becomes
"enabled when the answer meets the rule" (a default branch: "when it meets none of the earlier
rules"), and a question reached only through a conditional one inherits its conditions. Where a
question is reached along several paths that FHIR's any/all cannot express together, it is left
always enabled: the Questionnaire then shows more than a patient is asked, never less."""
from __future__ import annotations

from collections import defaultdict

from fhir.resources.R4B.questionnaire import Questionnaire as FhirQuestionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse as FhirQuestionnaireResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import Patient, Survey, SurveyAnswer, SurveyResponse
from ehr import store
from ehr.resources import questionnaire as questionnaire_map
from ehr.resources import questionnaire_response as response_map
from ehr.resources import validated
from surveys.definitions import END, Condition, Definition, Rule
from surveys.render import fill
from surveys.versions import asked, definition_of

KINDS = frozenset({"Questionnaire", "QuestionnaireResponse"})
FINISHED = {"completed": "completed", "stopped": "stopped", "expired": "stopped"}


def hospital_context(hospital: dict | None) -> dict:
    hospital = hospital or {}
    return {"hospital": {"en": hospital.get("name_en") or "", "ar": hospital.get("name_ar") or ""}}


def _filled(definition: Definition, context: dict) -> dict:
    """The definition as the mapping modules read it, its texts filled from `context`."""
    def both(pair) -> dict:
        return {"en": fill(pair.en, context, "en"), "ar": fill(pair.ar, context, "ar")}

    return {"code": definition.code, "title": both(definition.title), "questions": [
        {"id": q.id, "type": q.type, "text": both(q.text),
         "options": [{"value": o.value, "text": both(o.text)} for o in q.options]}
        for q in definition.questions]}


def questionnaire(definition: Definition, version: int, hospital: dict | None = None,
                  resource_id: str | None = None) -> dict:
    resource = questionnaire_map.to_fhir(_filled(definition, hospital_context(hospital)),
                                         resource_id=resource_id)
    resource["version"] = str(version)
    for item in resource.get("item") or []:
        if conditions := enable_when(definition).get(item["linkId"]):
            behavior, checks = conditions
            item["enableWhen"] = checks
            if len(checks) > 1:
                item["enableBehavior"] = behavior
    return validated(FhirQuestionnaire, resource)


def _negate(condition: Condition) -> list[tuple[str, str, object]]:
    """(operator, kind, value) checks that hold when `condition` does not."""
    if condition.at_most is not None:
        return [(">", "int", condition.at_most)]
    if condition.at_least is not None:
        return [("<", "int", condition.at_least)]
    if condition.is_ is not None:
        return [("!=", "code", condition.is_)]
    if condition.in_ is not None:
        return [("!=", "code", v) for v in condition.in_]
    return [("exists", "bool", not condition.skipped)]


def _positive(condition: Condition) -> tuple[str, list[tuple[str, str, object]]]:
    """("all" | "any", checks) that hold when `condition` does."""
    if condition.at_most is not None:
        return "all", [("<=", "int", condition.at_most)]
    if condition.at_least is not None:
        return "all", [(">=", "int", condition.at_least)]
    if condition.is_ is not None:
        return "all", [("=", "code", condition.is_)]
    if condition.in_ is not None:
        return "any", [("=", "code", v) for v in condition.in_]
    return "all", [("exists", "bool", not condition.skipped)]


def _paths(definition: Definition) -> dict[str, list[tuple[str, list[Condition], list[Condition]]]]:
    """For each question: the (question before, conditions met, conditions not met) that lead to it."""
    incoming: dict[str, list] = defaultdict(list)
    for index, question in enumerate(definition.questions):
        rules = [Rule(goto=question.next)] if isinstance(question.next, str) else list(question.next or [])
        earlier: list[Condition] = []
        default = False
        for rule in rules:
            if rule.goto != END:
                incoming[rule.goto].append((question.id, [rule.when] if rule.when else [], list(earlier)))
            if rule.when is None:
                default = True
                break
            earlier.append(rule.when)
        if not default and index + 1 < len(definition.questions):
            incoming[definition.questions[index + 1].id].append((question.id, [], list(earlier)))
    return incoming


def enable_when(definition: Definition) -> dict[str, tuple[str, list[dict]]]:
    """linkId → (enableBehavior, enableWhen items) for the questions that depend on earlier answers."""
    types = {q.id: q.type for q in definition.questions}
    incoming = _paths(definition)
    result: dict[str, tuple[str, list[dict]]] = {}
    for question in definition.questions[1:]:
        paths = incoming.get(question.id, [])
        if len(paths) != 1:
            continue  # several ways in: not expressible as one enableWhen
        before, met, not_met = paths[0]
        behavior, checks = "all", []
        for condition in met:
            behavior, positive = _positive(condition)
            checks += positive
        if behavior == "any" and not_met:
            continue  # "one of these, and none of those" needs any and all at once
        for condition in not_met:
            checks += _negate(condition)
        items = [_item(types[before], before, *check) for check in checks]
        # A question after a conditional one is asked only when that one was (and FHIR counts "!="
        # as true for a question never asked), so it carries the conditions of the one before too.
        inherited_behavior, inherited = result.get(before, ("all", []))
        if inherited and items and ((inherited_behavior == "any" and len(inherited) > 1)
                                    or (behavior == "any" and len(items) > 1)):
            continue
        if inherited:
            behavior = inherited_behavior if not items else "all" if len(inherited) > 1 or len(items) > 1 else behavior
        if inherited + items:
            result[question.id] = (behavior, inherited + items)
    return result


def _item(question_type: str, question_id: str, operator: str, kind: str, value) -> dict:
    if kind == "bool":
        return {"question": question_id, "operator": operator, "answerBoolean": bool(value)}
    if kind == "int":
        return {"question": question_id, "operator": operator, "answerInteger": int(value)}
    if question_type == "yes_no":
        return {"question": question_id, "operator": operator, "answerBoolean": value == "yes"}
    return {"question": question_id, "operator": operator, "answerCoding": {"code": str(value)}}


async def publish(session: AsyncSession, survey: Survey, hospital: dict | None) -> bool:
    """Write a survey's Questionnaire into Sila's FHIR store (its id is the survey's code)."""
    existing = await store.by_crm_id(session, "Questionnaire", survey.id)
    resource = questionnaire(definition_of(survey), survey.version, hospital,
                             resource_id=existing.resource_id if existing else survey.code)
    _, changed = await store.put(session, resource, crm_id=survey.id)
    return changed


async def _answers(session: AsyncSession, response_id: int) -> dict:
    rows = (await session.scalars(select(SurveyAnswer).where(
        SurveyAnswer.response_id == response_id, SurveyAnswer.skipped.is_(False)).order_by(SurveyAnswer.id))).all()
    return {a.question_id: a.value_int if a.value_int is not None else a.value_text for a in rows}


async def build(session: AsyncSession, kind: str, crm_id: int, patient_ref, hospital: dict | None) -> dict | None:
    """The resource an `ehr_outbox` row of `kind` stands for, as it is now (None: nothing to write).
    `patient_ref(patient)` gives the reference to the patient in the store being written."""
    if kind == "Questionnaire":
        survey = await session.get(Survey, crm_id)
        return questionnaire(definition_of(survey), survey.version, hospital) if survey else None
    response = await session.get(SurveyResponse, crm_id)
    if response is None or response.status not in FINISHED or not response.answered:
        return None
    definition = await asked(session, response)
    plain = _filled(definition, {**hospital_context(hospital), **(response.context or {})})
    resource = response_map.to_fhir(
        {"id": response.id, "survey_code": response.survey_code, "answers": await _answers(session, response.id),
         "authored": response.finished_at or response.last_activity_at},
        patient_ref=await patient_ref(await session.get(Patient, response.patient_id)), survey=plain,
    )
    resource["status"] = FINISHED[response.status]
    resource["questionnaire"] = f"{questionnaire_map.canonical(response.survey_code)}|{response.survey_version}"
    return validated(FhirQuestionnaireResponse, resource)
