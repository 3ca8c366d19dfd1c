"""Quiet hours in the recipient's own time zone.

A patient has no time-zone field; their phone number's country usually says it (Saudi numbers are
all Asia/Riyadh, Egyptian ones Africa/Cairo). Where a number spans several zones (the US, say) or
there is no number, the hospital's zone is used. Messages due inside the quiet hours are deferred
to the end of them, never dropped.
"""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_zones


@lru_cache(maxsize=4096)
def zone_for(phone: str | None, default: str) -> str:
    """The one IANA zone of a phone number, else `default`."""
    if phone:
        try:
            zones = phone_zones.time_zones_for_number(phonenumbers.parse(phone.removeprefix("whatsapp:"), None))
        except phonenumbers.NumberParseException:
            zones = ()
        if len(zones) == 1 and not zones[0].startswith("Etc/"):
            try:
                ZoneInfo(zones[0])
                return zones[0]
            except ZoneInfoNotFoundError:
                pass
    return default


def quiet_until(now: datetime, zone: str, start: int, end: int) -> datetime | None:
    """When sending may resume if `now` falls in the quiet hours [start:00, end:00) local; else None.

    start > end spans midnight (21 → 8); start == end means no quiet hours."""
    if start == end:
        return None
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    hour = local.hour
    quiet = (hour >= start or hour < end) if start > end else (start <= hour < end)
    if not quiet:
        return None
    day = local.date() if hour < end else local.date() + timedelta(days=1)
    return datetime.combine(day, time(end), tz).astimezone(timezone.utc)
