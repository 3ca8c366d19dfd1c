"""Message templates: Arabic and English bodies with {variables}, a channel's own wording, and the
WhatsApp template (ContentSid per language, numbered variables) that Meta approved.

Outside WhatsApp's 24-hour window only an approved template may be sent, so a campaign on WhatsApp
without a ContentSid for the patient's language fails there with the provider's reason.
Appointment times are the hospital's wall-clock time (the visit happens there), written the way
the patient reads them: Arabic words and Arabic-Indic digits, or English.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.formatting import format_when
from crm_store.models import Appointment, CampaignTemplate, Patient

VARIABLES = ("first_name", "last_name", "appointment_time", "doctor", "department", "reference", "hospital",
             "hospital_phone")
SAMPLE = {
    "en": {"first_name": "Sara", "last_name": "Al-Otaibi", "doctor": "Dr. Khalid Al-Harbi",
           "department": "Cardiology", "reference": "SL-7QK4MP"},
    "ar": {"first_name": "سارة", "last_name": "العتيبي", "doctor": "د. خالد الحربي", "department": "القلب",
           "reference": "SL-7QK4MP"},
}


class _Blank(dict):
    """A variable the record lacks reads as empty rather than failing the send."""

    def __missing__(self, key: str) -> str:
        return ""


def fill(template: str, values: dict) -> str:
    try:
        text = template.format_map(_Blank(values))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template
    # An empty variable leaves "Hello , …": close the gap before punctuation.
    return re.sub(r" {2,}", " ", re.sub(r" +([,.،؛؟?!])", r"\1", text)).strip()


def unknown_variables(body: str) -> set[str]:
    """Placeholders in `body` that no patient record fills (a typo such as {firstname})."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(body) if name is not None}
    except ValueError:
        return {"(unbalanced braces)"}
    return names - set(VARIABLES)


@dataclass(frozen=True)
class Rendered:
    text: str
    template: dict | None = None  # WhatsApp: {"content_sid", "variables"}


def _lang(language: str | None) -> str:
    return "ar" if language == "ar" else "en"


def body_for(template: CampaignTemplate, channel: str, language: str) -> str:
    lang = _lang(language)
    other = "en" if lang == "ar" else "ar"
    override = ((template.channel_bodies or {}).get(channel) or {}).get(lang)
    return override or getattr(template, f"body_{lang}") or getattr(template, f"body_{other}") or ""


def render(template: CampaignTemplate, channel: str, language: str, values: dict) -> Rendered:
    lang = _lang(language)
    text = fill(body_for(template, channel, lang), values)
    content = None
    if channel == "whatsapp" and template.whatsapp:
        sid = (template.whatsapp.get("content_sid") or {}).get(lang)
        if sid:
            content = {"content_sid": sid, "variables": {
                str(k): fill(str(v), values) for k, v in (template.whatsapp.get("variables") or {}).items()}}
    return Rendered(text, content)


def patient_values(patient: Patient, language: str, hospital: dict, zone: str,
                   appointment: Appointment | None = None) -> dict:
    """The variables for one patient (and appointment, with its practitioner and department loaded)."""
    lang = _lang(language)
    other = "en" if lang == "ar" else "ar"
    values = {
        "first_name": getattr(patient, f"given_name_{lang}") or getattr(patient, f"given_name_{other}") or "",
        "last_name": getattr(patient, f"family_name_{lang}") or getattr(patient, f"family_name_{other}") or "",
        "hospital": hospital.get(f"name_{lang}") or "",
        "hospital_phone": hospital.get("phone") or "",
    }
    if appointment is not None:
        values.update(appointment_time=format_when(appointment.slot.start_at, zone, lang),
                      doctor=appointment.practitioner.name(lang),
                      department=appointment.practitioner.department.name(lang),
                      reference=appointment.reference)
    return values


def preview(template: CampaignTemplate, channel: str, language: str, hospital: dict, zone: str,
            now: datetime | None = None) -> Rendered:
    """The template as a sample patient would read it (no real patient's data on the screen)."""
    lang = _lang(language)
    local_now = (now or datetime.now(ZoneInfo(zone))).astimezone(ZoneInfo(zone))
    sample_time = datetime.combine(local_now.date() + timedelta(days=1), time(10, 30), ZoneInfo(zone))
    values = {**SAMPLE[lang], "hospital": hospital.get(f"name_{lang}") or "",
              "hospital_phone": hospital.get("phone") or "",
              "appointment_time": format_when(sample_time, zone, lang)}
    return render(template, channel, lang, values)
