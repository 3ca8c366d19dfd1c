"""Consent keywords, honoured before the bot sees anything.

Carriers in the US and many other markets require STOP/HELP handling on messaging channels, and
Twilio applies the same single-word list (STOP, STOPALL, UNSUBSCRIBE, END, QUIT, CANCEL, REVOKE,
OPTOUT; START, UNSTOP, YES; HELP, INFO). Saudi and Egyptian patients write the Arabic words.
Only the whole message counts: "cancel my appointment" is a request, "CANCEL" is an opt-out.
"""
from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.nlu.arabic import normalize
from crm_store.models import Consent, ConsentPurpose, ConsentStatus

OPT_OUT = {"stop", "stopall", "unsubscribe", "end", "quit", "cancel", "revoke", "optout", "إيقاف", "توقف",
           "الغاء الاشتراك", "إلغاء الاشتراك"}
OPT_IN = {"start", "unstop", "yes"}
HELP = {"help", "info", "مساعدة", "مساعده"}
_NORMALISED = {kind: {normalize(w) for w in words} for kind, words in
               (("opt_out", OPT_OUT), ("opt_in", OPT_IN), ("help", HELP))}


def keyword(text: str) -> str | None:
    """"opt_out", "opt_in" or "help" when the whole message is a consent keyword."""
    said = " ".join(re.findall(r"\w+", normalize(text)))
    return next((kind for kind, words in _NORMALISED.items() if said in words), None)


async def current(session: AsyncSession, patient_id: int, channel: str, purpose: ConsentPurpose) -> ConsentStatus | None:
    return await session.scalar(
        select(Consent.status).where(Consent.patient_id == patient_id, Consent.channel == channel,
                                     Consent.purpose == purpose)
        .order_by(Consent.recorded_at.desc(), Consent.id.desc()).limit(1))


def record(session: AsyncSession, patient_id: int, channel: str, status: ConsentStatus, source: str,
           purposes=(ConsentPurpose.transactional, ConsentPurpose.marketing)) -> None:
    for purpose in purposes:
        session.add(Consent(patient_id=patient_id, channel=channel, purpose=purpose, status=status, source=source))
