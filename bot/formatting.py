"""Dates and times as a patient reads them, in the hospital's zone and the patient's language."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

WEEKDAYS = {
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "ar": ["الاثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت", "الأحد"],
}
# The Gregorian month names used in Saudi Arabia and Egypt (Levant uses كانون/شباط…, also understood).
MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"],
    "ar": ["يناير", "فبراير", "مارس", "أبريل", "مايو", "يونيو", "يوليو", "أغسطس", "سبتمبر", "أكتوبر",
           "نوفمبر", "ديسمبر"],
}
ARABIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def arabic_digits(text: str) -> str:
    return text.translate(ARABIC_DIGITS)


def format_day(day: date, language: str) -> str:
    lang = "ar" if language == "ar" else "en"
    text = f"{WEEKDAYS[lang][day.weekday()]} {day.day} {MONTHS[lang][day.month - 1]}"
    return arabic_digits(text) if lang == "ar" else text


def format_time(moment: datetime, zone: str, language: str) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    hour = local.hour % 12 or 12
    if language == "ar":
        return arabic_digits(f"{hour}:{local.minute:02d}") + (" صباحًا" if local.hour < 12 else " مساءً")
    return f"{hour}:{local.minute:02d} {'am' if local.hour < 12 else 'pm'}"


def format_when(moment: datetime, zone: str, language: str) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    separator = "، " if language == "ar" else ", "
    return format_day(local.date(), language) + separator + format_time(moment, zone, language)
