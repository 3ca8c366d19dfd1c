"""Phone numbers as patients type them on the sign-in page, read into E.164."""
from __future__ import annotations

import re

import phonenumbers

# Arabic-Indic and Eastern Arabic-Indic (Persian/Urdu keyboards) digits.
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")


def ascii_digits(text: str) -> str:
    return text.translate(_DIGITS)


def normalise(raw: str, region: str) -> str | None:
    """The E.164 form of a typed number («٠٥٠ ١٢٣ ٤٥٦٧», "+1 555-605-8177"), or None."""
    text = re.sub(r"[\s\-().\u200e\u200f]", "", ascii_digits(raw or ""))
    if text.startswith("00"):
        text = "+" + text[2:]
    if not re.fullmatch(r"\+?\d{6,16}", text):
        return None
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def masked(phone: str) -> str:
    """What the audit log keeps of a number someone typed: the country code and the last digits."""
    return phone[:4] + "…" + phone[-3:] if len(phone) > 8 else "…"
