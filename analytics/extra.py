"""Campaign and survey summaries for the dashboard. Campaigns and surveys are their own parts of
Sila (campaigns/, surveys/); each section appears when its tables exist in the store (None
otherwise), so the dashboard does not depend on them."""
from __future__ import annotations

from sqlalchemy import case, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.queries import Period


async def has_tables(session: AsyncSession, *names: str) -> bool:
    def check(sync_session) -> bool:
        inspector = inspect(sync_session.connection())
        return all(inspector.has_table(name) for name in names)

    return await session.run_sync(check)


async def campaign_summaries(session: AsyncSession, period: Period) -> list[dict] | None:
    """Campaigns started in the period with their funnel (campaigns/metrics.py defines it)."""
    if not await has_tables(session, "campaigns", "campaign_recipients"):
        return None
    from campaigns.metrics import funnel
    from crm_store.models import Campaign

    campaigns = (await session.scalars(select(Campaign).where(period.within(Campaign.started_at))
                                       .order_by(Campaign.started_at, Campaign.id))).all()
    summaries = []
    for campaign in campaigns:
        stages = (await funnel(session, campaign.id)).as_dict()
        summaries.append({"name": campaign.name, "status": campaign.status, "channels": campaign.channels,
                          "started_at": campaign.started_at, **{k: stages[k] for k in (
                              "recipients", "messaged", "sent", "delivered", "failed", "replied", "opted_out",
                              "booked", "conversion_days")}, "skipped": sum(stages["skipped"].values())})
    return summaries


async def survey_summaries(session: AsyncSession, period: Period) -> list[dict] | None:
    """Per survey, of those sent in the period: responses, completions, NPS and CSAT, with the
    surveys part's own definitions (surveys/scoring.py: promoters 9-10, detractors 0-6, satisfied 4-5)."""
    if not await has_tables(session, "surveys", "survey_responses"):
        return None
    from crm_store.models import Survey, SurveyResponse
    from surveys.scoring import DETRACTOR, PROMOTER

    def count(condition):
        return func.sum(case((condition, 1), else_=0))

    rows = (await session.execute(
        select(Survey.code, Survey.title_en, Survey.title_ar, func.count(SurveyResponse.id),
               count(SurveyResponse.answered > 0), count(SurveyResponse.status == "completed"),
               func.count(SurveyResponse.nps), count(SurveyResponse.nps >= PROMOTER),
               count(SurveyResponse.nps <= DETRACTOR), func.count(SurveyResponse.csat), func.sum(SurveyResponse.csat),
               count(SurveyResponse.csat >= 4))
        .join(SurveyResponse, SurveyResponse.survey_id == Survey.id)
        .where(period.within(SurveyResponse.offered_at))
        .group_by(Survey.code, Survey.title_en, Survey.title_ar).order_by(Survey.code))).all()
    summaries = []
    for code, title_en, title_ar, sent, responded, completed, nps_n, promoters, detractors, csat_n, csat_sum, happy in rows:
        promoters, detractors, responded, completed, happy = (int(v or 0) for v in (
            promoters, detractors, responded, completed, happy))
        summaries.append({
            "code": code, "title_en": title_en, "title_ar": title_ar, "sent": sent, "responded": responded,
            "completed": completed, "response_rate": responded / sent if sent else None,
            "nps_responses": nps_n, "promoters": promoters, "detractors": detractors,
            "nps": round(100 * (promoters - detractors) / nps_n, 1) if nps_n else None,
            "csat_responses": csat_n, "csat_average": int(csat_sum or 0) / csat_n if csat_n else None,
            "satisfied": happy})
    return summaries
