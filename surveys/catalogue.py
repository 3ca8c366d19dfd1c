"""The surveys in the CRM store: loaded from surveys/definitions/*.yml, edited in the console.

The YAML is under version control and reloaded at every start: a new file adds its survey, a
changed file updates it (a new version). Once staff edit a survey in the console, their version
wins and the file no longer overwrites it. Every new version is published as a Questionnaire to
Sila's FHIR store and queued for the EHR; every version is kept (responses name theirs)."""
from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store import changes
from crm_store.models import Survey, SurveyVersion, utcnow
from surveys import fhir
from surveys.definitions import DEFINITIONS_DIR, Definition, load_dir
from surveys.versions import definition_of

log = logging.getLogger(__name__)


async def by_code(session: AsyncSession, code: str) -> Survey | None:
    return await session.scalar(select(Survey).where(Survey.code == code))


async def _changed(session: AsyncSession, survey: Survey, hospital: dict | None) -> None:
    await session.flush()
    session.add(SurveyVersion(survey_id=survey.id, version=survey.version, definition=survey.definition,
                              created_by=survey.updated_by))
    await fhir.publish(session, survey, hospital)
    changes.queue(session, "Questionnaire", survey.id)


async def sync_files(session: AsyncSession, hospital: dict | None, directory: Path = DEFINITIONS_DIR) -> list[str]:
    """Bring the store up to the YAML files; the codes of surveys added or changed."""
    changed = []
    for definition in load_dir(directory):
        fingerprint = definition.fingerprint()
        survey = await by_code(session, definition.code)
        if survey is None:
            survey = Survey(code=definition.code, title_en=definition.title.en, title_ar=definition.title.ar,
                            definition=definition.as_json(), version=1, source="file", file_hash=fingerprint,
                            updated_by="file")
            session.add(survey)
        elif survey.source == "file" and survey.file_hash != fingerprint:
            _update(survey, definition, "file")
            survey.file_hash = fingerprint
        else:
            if survey.source != "file" and survey.file_hash != fingerprint:
                log.info("survey %s was edited in the console; its YAML file is not applied", survey.code)
            continue
        await _changed(session, survey, hospital)
        changed.append(definition.code)
    return changed


def _update(survey: Survey, definition: Definition, username: str) -> None:
    survey.definition = definition.as_json()
    survey.title_en, survey.title_ar = definition.title.en, definition.title.ar
    survey.version += 1
    survey.updated_by = username
    survey.updated_at = utcnow()


async def save(session: AsyncSession, definition: Definition, username: str, hospital: dict | None,
               survey: Survey | None = None) -> Survey:
    """A survey created or changed in the console (a new version; the YAML no longer applies)."""
    if survey is None:
        survey = Survey(code=definition.code, title_en=definition.title.en, title_ar=definition.title.ar,
                        definition=definition.as_json(), version=1, source="console", updated_by=username)
        session.add(survey)
    else:
        if definition.fingerprint() == definition_of(survey).fingerprint():
            return survey
        _update(survey, definition, username)
        survey.source = "console"
    await _changed(session, survey, hospital)
    return survey
