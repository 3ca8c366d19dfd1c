"""Surveys waiting for the patient's answer, listed on the portal's home page.

A survey (issue 7, surveys/) is answered in the conversation it was sent on; the portal only says
what is waiting and where. Open means sent or begun, and not yet expired."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import Survey, SurveyResponse, utcnow

OPEN = ("sent", "in_progress")


async def waiting(session: AsyncSession, patient_id: int, language: str) -> list[dict]:
    """[{"title", "channel", "sent_at", "expires_at"}], oldest first."""
    rows = (await session.execute(
        select(SurveyResponse, Survey.title_en, Survey.title_ar).join(Survey, Survey.id == SurveyResponse.survey_id)
        .where(SurveyResponse.patient_id == patient_id, SurveyResponse.status.in_(OPEN),
               SurveyResponse.expires_at > utcnow())
        .order_by(SurveyResponse.offered_at))).all()
    return [{"title": (title_ar if language == "ar" else title_en) or title_en, "channel": response.channel,
             "sent_at": response.offered_at, "expires_at": response.expires_at}
            for response, title_en, title_ar in rows]
