"""`sila seed demo`: load the demo hospital and keep four weeks of clinic slots ahead."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.content import load_hospital
from crm_store.models import Department, Practitioner, Slot

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


async def seed_hospital(session: AsyncSession, path: Path, today: date | None = None) -> dict:
    """Upsert departments and practitioners by code and add missing slots; safe to run again."""
    content = load_hospital(path)
    zone = ZoneInfo(content["hospital"]["timezone"])
    departments = {d.code: d for d in (await session.scalars(select(Department))).all()}
    for item in content["departments"]:
        dept = departments.get(item["code"]) or Department(code=item["code"])
        dept.name_en, dept.name_ar, dept.aliases = item["name_en"], item["name_ar"], item["aliases"]
        session.add(dept)
        departments[dept.code] = dept
    await session.flush()

    practitioners = {p.code: p for p in (await session.scalars(select(Practitioner))).all()}
    for item in content["practitioners"]:
        prac = practitioners.get(item["code"]) or Practitioner(code=item["code"])
        for key in ("name_en", "name_ar", "specialty_en", "specialty_ar", "aliases"):
            setattr(prac, key, item[key])
        prac.department_id = departments[item["department"]].id
        session.add(prac)
        practitioners[prac.code] = prac
    await session.flush()

    added = await _add_slots(session, list(practitioners.values()), content["schedule"], zone, today)
    await session.commit()
    return {"departments": len(departments), "practitioners": len(practitioners), "slots_added": added}


async def _add_slots(session, practitioners, schedule, zone, today) -> int:
    today = today or datetime.now(zone).date()
    horizon = today + timedelta(weeks=schedule["weeks"])
    step = timedelta(minutes=schedule["slot_minutes"])
    existing = set(
        (await session.execute(
            select(Slot.practitioner_id, Slot.start_at).where(
                Slot.start_at >= datetime.combine(today, time(), zone)
            )
        )).all()
    )
    added = 0
    day = today
    while day < horizon:
        for span in schedule["days"].get(WEEKDAYS[day.weekday()], []):
            start_s, end_s = span.split("-")
            start = datetime.combine(day, time.fromisoformat(start_s), zone)
            end = datetime.combine(day, time.fromisoformat(end_s), zone)
            while start + step <= end:
                for prac in practitioners:
                    key = (prac.id, start.astimezone(ZoneInfo("UTC")))
                    if key not in existing:
                        session.add(Slot(practitioner_id=prac.id, start_at=start, end_at=start + step))
                        added += 1
                start += step
        day += timedelta(days=1)
    return added
