"""Which definition a survey, or a response, is about: every version of a survey is kept
(`survey_versions`), so a response is always read with the questions it was asked."""
from __future__ import annotations

import json
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import SurveyResponse, SurveyVersion
from surveys.definitions import Definition, parse


@lru_cache(maxsize=256)
def _parsed(data: str) -> Definition:
    return parse(json.loads(data))


def parsed(data: dict) -> Definition:
    """A stored definition, validated once per distinct content."""
    return _parsed(json.dumps(data, sort_keys=True, ensure_ascii=False))


def definition_of(survey) -> Definition:
    """The current definition of a Survey row."""
    return parsed(survey.definition)


async def asked(session: AsyncSession, response: SurveyResponse) -> Definition:
    """The definition a response was asked in."""
    return await version(session, response.survey_id, response.survey_version)


async def version(session: AsyncSession, survey_id: int, number: int) -> Definition:
    data = await session.scalar(select(SurveyVersion.definition).where(
        SurveyVersion.survey_id == survey_id, SurveyVersion.version == number))
    return parsed(data)
