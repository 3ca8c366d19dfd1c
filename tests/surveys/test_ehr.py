"""Surveys in the EHR (a fake FHIR server): the definitions as versioned Questionnaires with their
branching, each finished response as one QuestionnaireResponse about the patient, written through
the EHR outbox like every other change; Sila's own FHIR store keeps the same."""
from __future__ import annotations

import aiohttp
import pytest
import yaml

from bot.settings import ROOT
from crm_store.content import load_hospital
from crm_store.models import ChannelIdentity, Conversation, Message, Patient
from ehr import identifiers, store
from ehr.client import BearerToken, FhirClient
from ehr.sync import EhrSync
from surveys import catalogue, dispatch
from surveys.answering import SurveyAnswers
from surveys.definitions import parse_yaml
from tests.fakes.fhir_server import FakeFhir

HOSPITAL = load_hospital(ROOT / "crm_store" / "demo" / "hospital.yml")["hospital"]


@pytest.fixture
async def ehr():
    server = await FakeFhir().start()
    yield server
    await server.close()


@pytest.fixture
async def sync(sessions, ehr):
    async with sessions() as session:
        await catalogue.sync_files(session, HOSPITAL)
        await session.commit()
    async with aiohttp.ClientSession() as http:
        client = FhirClient(ehr.url, http, auth=BearerToken(ehr.token), backoff=0.01, attempts=2, timeout=2)
        yield EhrSync(sessions, client, HOSPITAL)


async def _survey(sessions, answers: list[str], code: str = "post-visit-nps", language: str = "en") -> int:
    """A web chat patient answers a survey through the router's handler; the response id."""
    async with sessions() as session:
        patient = Patient(given_name_en="Omar", given_name_ar="عمر", preferred_language=language)
        session.add(patient)
        await session.flush()
        session.add(ChannelIdentity(patient_id=patient.id, channel="webchat", address=f"token-{patient.id}"))
        await session.flush()
        offer = await dispatch.offer(session, patient.id, code, hospital=HOSPITAL)
        await session.commit()
    handler = SurveyAnswers(12)
    for number, said in enumerate(answers):
        async with sessions() as session:
            conversation = await session.get(Conversation, offer.response.conversation_id)
            message = Message(conversation_id=conversation.id, channel="webchat", direction="in", sender="patient",
                              text=said, status="received", language=language, provider_message_id=f"m{number}")
            session.add(message)
            await session.flush()
            await handler(session, conversation, message)
            await session.commit()
    return offer.response.id


def _response(ehr: FakeFhir, response_id: int) -> dict:
    [found] = [r for r in ehr.resources("QuestionnaireResponse")
               if r.get("identifier") == {"system": identifiers.SURVEY_RESPONSE, "value": str(response_id)}]
    return found


async def test_a_completed_response_and_its_questionnaire_reach_the_ehr(sync, ehr, sessions):
    response_id = await _survey(sessions, ["3", "1", "Waited two hours"])
    await sync.run_once()
    questionnaires = {q["url"]: q for q in ehr.resources("Questionnaire")}
    visit = questionnaires["urn:sila:survey:post-visit-nps"]
    assert visit["version"] == "1" and set(questionnaires) == {"urn:sila:survey:post-visit-nps",
                                                               "urn:sila:survey:post-chat-csat"}
    items = {i["linkId"]: i for i in visit["item"]}
    assert items["recommend"]["type"] == "integer" and "Al Noor Specialist Hospital" in items["recommend"]["text"]
    assert items["went_wrong"]["enableWhen"] == [{"question": "recommend", "operator": "<=", "answerInteger": 6}]
    assert items["comment"]["enableWhen"] == [{"question": "recommend", "operator": ">", "answerInteger": 6}]

    written = _response(ehr, response_id)
    assert (written["status"], written["questionnaire"]) == ("completed", "urn:sila:survey:post-visit-nps|1")
    [patient] = ehr.resources("Patient")  # created in the EHR once, by conditional create
    assert written["subject"]["reference"] == f"Patient/{patient['id']}"
    answers = {i["linkId"]: i["answer"][0] for i in written["item"]}
    assert answers == {"recommend": {"valueInteger": 3},
                       "went_wrong": {"valueCoding": {"code": "waiting", "display": "Waiting time",
                                                      "_display": answers["went_wrong"]["valueCoding"]["_display"]}},
                       "details": {"valueString": "Waited two hours"}}
    assert "وقت الانتظار" in str(answers["went_wrong"]["valueCoding"]["_display"])
    async with sessions() as session:  # and in Sila's own FHIR store, about Sila's patient
        mine = await store.by_crm_id(session, "QuestionnaireResponse", response_id)
        published = await store.get(session, "Questionnaire", "post-visit-nps")
    assert mine.content["status"] == "completed" and mine.patient_ref.startswith("Patient/")
    assert published is not None and published.content["version"] == "1"


async def test_a_survey_stopped_part_way_is_written_as_stopped(sync, ehr, sessions):
    response_id = await _survey(sessions, ["٨", "خلاص"], language="ar")
    await sync.run_once()
    written = _response(ehr, response_id)
    assert written["status"] == "stopped"
    assert [(i["linkId"], i["answer"]) for i in written["item"]] == [("recommend", [{"valueInteger": 8}])]
    assert "ما مدى احتمال" in str(written["item"][0])


async def test_a_survey_never_answered_is_not_written(sync, ehr, sessions):
    await _survey(sessions, ["stop survey"])
    await sync.run_once()
    assert ehr.resources("QuestionnaireResponse") == []


async def test_a_survey_edited_in_the_console_is_a_new_version_in_the_ehr(sync, ehr, sessions):
    await sync.run_once()
    async with sessions() as session:
        survey = await catalogue.by_code(session, "post-chat-csat")
        data = catalogue.definition_of(survey).as_json()
        data["questions"][0]["text"]["en"] = "All in all, how satisfied are you with our help?"
        await catalogue.save(session, parse_yaml(yaml.safe_dump(data, allow_unicode=True)), "salma", HOSPITAL, survey)
        await session.commit()
    await sync.run_once()
    [written] = [q for q in ehr.resources("Questionnaire") if q["url"] == "urn:sila:survey:post-chat-csat"]
    assert written["version"] == "2" and written["item"][0]["text"].startswith("All in all")
    assert written["meta"]["versionId"] == "2"  # the same EHR resource, updated
    assert len(ehr.calls("POST", "Questionnaire")) == 2
