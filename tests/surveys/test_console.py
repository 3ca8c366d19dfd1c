"""The survey editor in the console: a definition is checked before it is saved (with the problems
shown), a saved change is a new version in the store, in Sila's FHIR store and queued for the EHR,
the YAML file no longer overwrites it, a survey can be switched off; only supervisors and admins."""
from __future__ import annotations

import re

import pytest
import yaml
from sqlalchemy import select

from crm_store.models import AuditEntry, EhrOutbox, StaffRole, Survey
from ehr import store
from surveys import catalogue, dispatch, versions
from tests.surveys.conftest import add_patient, add_staff, csrf_of, sign_in


@pytest.fixture
async def staff(client, hub):
    for name, role, language in (("salma", StaffRole.supervisor, "en"), ("huda", StaffRole.admin, "ar"),
                                 ("mariam", StaffRole.marketer, "en")):
        await add_staff(hub, name, role, language)
    return client


def _textarea(page: str) -> str:
    import html

    return html.unescape(re.search(r'<textarea id="definition"[^>]*>(.*?)</textarea>', page, re.S).group(1))


async def test_the_editor_shows_the_definition_and_its_branching(staff):
    await sign_in(staff, "salma")
    listing = await (await staff.get("/console/surveys")).text()
    assert 'data-code="post-visit-nps"' in listing and 'data-code="post-chat-csat"' in listing
    page = await (await staff.get("/console/surveys/post-visit-nps")).text()
    source = yaml.safe_load(_textarea(page))
    assert source["code"] == "post-visit-nps" and source["questions"][0]["type"] == "nps"
    assert "at_most 6 → went_wrong" in page and "→ on_time" in page and "وقت الانتظار" in page


async def test_a_definition_with_problems_is_not_saved(staff, hub):
    await sign_in(staff, "salma")
    path = "/console/surveys/post-chat-csat"
    page = await (await staff.get(path)).text()
    data = yaml.safe_load(_textarea(page))
    data["thanks"]["en"] = "Thanks {name}!"
    answer = await staff.post(path, data={"_csrf": await csrf_of(staff, path), "definition": yaml.safe_dump(data)})
    assert answer.status == 400 and "unknown placeholder {name}" in await answer.text()
    data["thanks"]["en"] = "Thanks {first_name}!"
    data["questions"][1]["next"] = [{"when": {"is": "no"}, "goto": "satisfaction"}]  # a loop back
    answer = await staff.post(path, data={"_csrf": await csrf_of(staff, path), "definition": yaml.safe_dump(data)})
    assert answer.status == 400 and "goto &#39;satisfaction&#39; must name a later question" in await answer.text()
    data["questions"][1]["next"] = [{"when": {"is": "maybe"}, "goto": "what_missing"}]  # not an answer it has
    answer = await staff.post(path, data={"_csrf": await csrf_of(staff, path), "definition": yaml.safe_dump(data)})
    assert answer.status == 400 and "is/in must name answers of the question" in await answer.text()
    async with hub.sessions() as session:
        assert (await catalogue.by_code(session, "post-chat-csat")).version == 1
    broken = await staff.post(path, data={"_csrf": await csrf_of(staff, path), "definition": "code: [unclosed"})
    assert broken.status == 400 and "not valid YAML" in await broken.text()


async def test_a_saved_change_is_a_new_version_everywhere_and_the_file_no_longer_applies(staff, hub):
    await sign_in(staff, "salma")
    path = "/console/surveys/post-chat-csat"
    data = yaml.safe_load(_textarea(await (await staff.get(path)).text()))
    data["questions"][0]["text"]["ar"] = "بشكل عام، ما مدى رضاك عن المساعدة؟"
    answer = await staff.post(path, data={"_csrf": await csrf_of(staff, path),
                                          "definition": yaml.safe_dump(data, allow_unicode=True)},
                              allow_redirects=False)
    assert answer.status == 302 and answer.headers["Location"] == path + "?saved=1"
    assert "Saved as version 2." in await (await staff.get(path + "?saved=1")).text()
    async with hub.sessions() as session:
        survey = await catalogue.by_code(session, "post-chat-csat")
        published = await store.get(session, "Questionnaire", "post-chat-csat")
        queued = (await session.scalars(select(EhrOutbox.id).where(EhrOutbox.kind == "Questionnaire",
                                                                   EhrOutbox.crm_id == survey.id))).all()
        saved = await session.scalar(select(AuditEntry).where(AuditEntry.action == "survey_save"))
        assert await catalogue.sync_files(session, None) == []  # the YAML file does not undo the edit
        await session.commit()
    assert (survey.version, survey.source, survey.updated_by) == (2, "console", "salma")
    assert published.content["version"] == "2" and "بشكل عام" in str(published.content["item"][0])
    assert len(queued) == 2  # loaded from the file, then edited
    assert saved.detail == {"survey": "post-chat-csat", "version": 2}
    pid = await add_patient(hub, "+966500000301", language="ar")
    async with hub.sessions() as session:
        sent = await dispatch.offer(session, pid, "post-chat-csat")
        await session.commit()
        asked = await versions.asked(session, sent.response)
        first = await versions.version(session, survey.id, 1)
    assert sent.response.survey_version == 2 and asked.questions[0].text.ar.startswith("بشكل عام")
    assert first.questions[0].text.ar.startswith("ما مدى رضاك")  # version 1 is kept for its responses


async def test_a_new_survey_and_switching_one_off(staff, hub):
    await sign_in(staff, "huda")  # an admin working in Arabic
    page = await (await staff.get("/console/surveys/new")).text()
    assert 'dir="rtl"' in page and "استبيان جديد" in page
    source = _textarea(page).replace("code: my-survey", "code: pharmacy-wait")
    answer = await staff.post("/console/surveys/new", data={"_csrf": await csrf_of(staff, "/console/surveys/new"),
                                                            "definition": source}, allow_redirects=False)
    assert answer.status == 302 and answer.headers["Location"].startswith("/console/surveys/pharmacy-wait")
    again = await staff.post("/console/surveys/new", data={"_csrf": await csrf_of(staff, "/console/surveys/new"),
                                                           "definition": source})
    assert again.status == 409
    async with hub.sessions() as session:
        survey = await catalogue.by_code(session, "pharmacy-wait")
    assert (survey.source, survey.version, survey.active) == ("console", 1, True)

    await staff.post("/console/surveys/pharmacy-wait/active",
                     data={"_csrf": await csrf_of(staff, "/console/surveys")}, allow_redirects=False)
    pid = await add_patient(hub, "+966500000302")
    async with hub.sessions() as session:
        assert (await session.scalar(select(Survey.active).where(Survey.code == "pharmacy-wait"))) is False
        assert (await dispatch.offer(session, pid, "pharmacy-wait")).reason == "no_survey"


async def test_only_supervisors_and_admins_edit(staff):
    await sign_in(staff, "mariam")
    assert (await staff.get("/console/surveys")).status == 200  # the list, read-only
    assert "/console/surveys/new" not in await (await staff.get("/console/surveys")).text()
    csrf = await csrf_of(staff, "/console/surveys/analytics")
    assert (await staff.post("/console/surveys/post-visit-nps", data={"_csrf": csrf, "definition": ""})).status == 403
    assert (await staff.post("/console/surveys/post-visit-nps/active", data={"_csrf": csrf})).status == 403
    await sign_in(staff, "salma")
    assert (await staff.post("/console/surveys/post-visit-nps/active", data={})).status == 403  # no CSRF token
