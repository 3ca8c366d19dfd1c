"""Load the default automations and their templates (campaigns/defaults.yml) into the database,
adding what is missing and never overwriting what staff changed."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_store.models import AutomationRule, CampaignTemplate

DEFAULTS = Path(__file__).with_name("defaults.yml")


@lru_cache
def load(path: Path = DEFAULTS) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


async def _ensure(session: AsyncSession, content: dict) -> int:
    templates = {t.name: t for t in (await session.scalars(select(CampaignTemplate))).all()}
    for name, spec in content["templates"].items():
        if name not in templates:
            templates[name] = CampaignTemplate(name=name, purpose=spec.get("purpose", "marketing"),
                                               body_en=spec["en"], body_ar=spec["ar"], channel_bodies={},
                                               whatsapp=spec.get("whatsapp"))
            session.add(templates[name])
    await session.flush()
    known = set((await session.scalars(select(AutomationRule.key))).all())
    added = 0
    for key, spec in content["rules"].items():
        if key in known:
            continue
        session.add(AutomationRule(key=key, kind=spec["kind"], name_en=spec["name_en"], name_ar=spec["name_ar"],
                                   enabled=bool(spec.get("enabled")), config=spec.get("config") or {},
                                   template_id=templates[spec["template"]].id, channels=spec.get("channels") or [],
                                   updated_by="defaults"))
        added += 1
    return added


async def ensure_defaults(sessions: async_sessionmaker, path: Path = DEFAULTS) -> int:
    """Add the missing default rules; another worker doing the same at once is fine."""
    content = load(path)
    for _ in range(2):
        async with sessions() as session:
            try:
                added = await _ensure(session, content)
                await session.commit()
                return added
            except IntegrityError:
                await session.rollback()
    return 0
