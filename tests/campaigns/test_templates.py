"""Templates as the patient reads them, and quiet hours in the recipient's own zone."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from campaigns import quiet, templates
from crm_store.models import CampaignTemplate, Patient

HOSPITAL = {"name_en": "Al Noor Specialist Hospital", "name_ar": "مستشفى النور التخصصي", "phone": "+966112345678"}
ZONE = "Asia/Riyadh"


def template(**fields) -> CampaignTemplate:
    return CampaignTemplate(**{"name": "t", "purpose": "transactional", "channel_bodies": {}, "whatsapp": None,
                               "body_en": "Hi {first_name}, your visit is {appointment_time} with {doctor}.",
                               "body_ar": "مرحبًا {first_name}، موعدك {appointment_time} مع {doctor}.", **fields})


def appointment(start: datetime):
    department = SimpleNamespace(name=lambda lang: "القلب" if lang == "ar" else "Cardiology")
    doctor = SimpleNamespace(name=lambda lang: "د. خالد" if lang == "ar" else "Dr. Khalid", department=department)
    return SimpleNamespace(slot=SimpleNamespace(start_at=start), practitioner=doctor, reference="SL-ABC123")


def test_appointment_time_in_the_patients_language_and_the_hospitals_zone():
    patient = Patient(given_name_en="Sara", given_name_ar="سارة")
    visit = appointment(datetime(2026, 12, 6, 6, 30, tzinfo=timezone.utc))  # 09:30 in Riyadh, a Sunday
    ar = templates.render(template(), "sms", "ar", templates.patient_values(patient, "ar", HOSPITAL, ZONE, visit))
    assert ar.text == "مرحبًا سارة، موعدك الأحد ٦ ديسمبر، ٩:٣٠ صباحًا مع د. خالد."
    en = templates.render(template(), "sms", "en", templates.patient_values(patient, "en", HOSPITAL, ZONE, visit))
    assert en.text == "Hi Sara, your visit is Sunday 6 December, 9:30 am with Dr. Khalid."


def test_missing_values_leave_no_gap_and_the_other_language_fills_in():
    only_english = Patient(given_name_en="Sara")
    values = templates.patient_values(only_english, "ar", HOSPITAL, ZONE)
    assert values["first_name"] == "Sara"
    nameless = templates.render(template(body_en="Hello {first_name}, welcome to {hospital}!"), "sms", "en",
                                templates.patient_values(Patient(), "en", HOSPITAL, ZONE))
    assert nameless.text == "Hello, welcome to Al Noor Specialist Hospital!"
    english_only = template(body_ar="")
    assert templates.render(english_only, "sms", "ar", {"first_name": "سارة"}).text.startswith("Hi سارة")


def test_channel_wording_and_whatsapp_content_template():
    tpl = template(channel_bodies={"sms": {"ar": "{first_name}: تذكير بموعدك"}},
                   whatsapp={"content_sid": {"ar": "HX" + "1" * 32},
                             "variables": {"1": "{first_name}", "2": "{doctor}"}})
    values = {"first_name": "سارة", "doctor": "د. خالد"}
    assert templates.render(tpl, "sms", "ar", values).text == "سارة: تذكير بموعدك"
    assert templates.render(tpl, "sms", "en", values).template is None
    whatsapp = templates.render(tpl, "whatsapp", "ar", values)
    assert whatsapp.template == {"content_sid": "HX" + "1" * 32, "variables": {"1": "سارة", "2": "د. خالد"}}
    assert templates.render(tpl, "whatsapp", "en", values).template is None  # no approved English template
    assert templates.unknown_variables("Hi {firstname} {first_name} {") == {"(unbalanced braces)"}
    assert templates.unknown_variables("Hi {firstname} {first_name}") == {"firstname"}


def test_preview_uses_a_sample_patient():
    shown = templates.preview(template(), "sms", "ar", HOSPITAL, ZONE,
                              now=datetime(2026, 12, 1, 9, tzinfo=timezone.utc))
    assert shown.text == "مرحبًا سارة، موعدك الأربعاء ٢ ديسمبر، ١٠:٣٠ صباحًا مع د. خالد الحربي."


def test_quiet_hours_in_the_recipients_zone():
    assert quiet.zone_for("+966501234567", "UTC") == "Asia/Riyadh"
    assert quiet.zone_for("whatsapp:+201001234567", "UTC") == "Africa/Cairo"
    assert quiet.zone_for("+15005550006", "Asia/Riyadh") == "Asia/Riyadh"  # the US spans many zones
    assert quiet.zone_for(None, "Asia/Riyadh") == "Asia/Riyadh"
    at_22 = datetime(2026, 1, 14, 19, 0, tzinfo=timezone.utc)  # 22:00 in Riyadh
    assert quiet.quiet_until(at_22, "Asia/Riyadh", 21, 8) == datetime(2026, 1, 15, 5, 0, tzinfo=timezone.utc)
    after_midnight = datetime(2026, 1, 14, 23, 30, tzinfo=timezone.utc)  # 02:30 on the 15th in Riyadh
    assert quiet.quiet_until(after_midnight, "Asia/Riyadh", 21, 8) == datetime(2026, 1, 15, 5, 0, tzinfo=timezone.utc)
    assert quiet.quiet_until(at_22, "Europe/London", 21, 8) is None  # 19:00 in London
    assert quiet.quiet_until(datetime(2026, 1, 14, 5, 0, tzinfo=timezone.utc), "Asia/Riyadh", 21, 8) is None
    assert quiet.quiet_until(at_22, "Asia/Riyadh", 0, 0) is None  # no quiet hours
    # Daylight saving: 22:00 in London on the night the clocks go forward, sent at 08:00 BST.
    assert quiet.quiet_until(datetime(2026, 3, 28, 22, 0, tzinfo=timezone.utc), "Europe/London", 21, 8) == \
        datetime(2026, 3, 29, 7, 0, tzinfo=timezone.utc)
