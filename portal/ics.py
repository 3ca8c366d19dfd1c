"""An appointment as an iCalendar file (RFC 5545) for the patient's own calendar.

Times are written in UTC ("Z"), which every calendar reads without a VTIMEZONE block and shows in
the phone's own zone. The UID is the appointment's, and SEQUENCE counts its moves, so importing the
file again after a move or a cancellation updates the event instead of adding a second one."""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlsplit

from crm_store.models import Appointment, AppointmentStatus, utcnow

PRODID = "-//Sila//Patient portal//EN"


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def escape(value: str) -> str:
    """TEXT values: backslash, semicolon, comma and newlines escaped (RFC 5545 §3.3.11)."""
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n"))


def fold(line: str) -> str:
    """Lines of at most 75 octets, continued with CRLF and a space, never inside a UTF-8 character."""
    out, current = [], b""
    for char in line:
        encoded = char.encode()
        if len(current) + len(encoded) > (75 if not out else 74):
            out.append(current)
            current = b""
        current += encoded
    out.append(current)
    return "\r\n ".join(part.decode() for part in out)


def calendar(appointment: Appointment, hospital: dict, language: str, base_url: str) -> str:
    """The VCALENDAR of one appointment (slot, practitioner and department loaded)."""
    lang = "ar" if language == "ar" else "en"
    practitioner, department = appointment.practitioner, appointment.practitioner.department
    cancelled = appointment.status == AppointmentStatus.cancelled
    host = urlsplit(base_url).hostname or "sila.local"
    summary = f"{department.name(lang)} — {practitioner.name(lang)}"
    reference_word = "رقم الحجز" if lang == "ar" else "Reference"
    description = f"{hospital.get(f'name_{lang}', '')}\n{reference_word}: {appointment.reference}\n" \
                  f"{base_url.rstrip('/')}/portal/appointments"
    lines = [
        "BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{PRODID}", "CALSCALE:GREGORIAN", "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{appointment.reference}@{host}",
        f"DTSTAMP:{_utc(utcnow())}",
        f"DTSTART:{_utc(appointment.slot.start_at)}",
        f"DTEND:{_utc(appointment.slot.end_at)}",
        f"SEQUENCE:{len(appointment.history or []) + (1 if cancelled else 0)}",
        f"STATUS:{'CANCELLED' if cancelled else 'CONFIRMED'}",
        f"SUMMARY;LANGUAGE={lang}:{escape(summary)}",
        f"LOCATION;LANGUAGE={lang}:{escape(hospital.get(f'address_{lang}') or '')}",
        f"DESCRIPTION;LANGUAGE={lang}:{escape(description)}",
    ]
    if not cancelled:
        lines += ["BEGIN:VALARM", "ACTION:DISPLAY", "TRIGGER:-PT2H", f"DESCRIPTION:{escape(summary)}", "END:VALARM"]
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return "".join(fold(line) + "\r\n" for line in lines)
