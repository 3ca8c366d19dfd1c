"""Logging that keeps patient data out of log files."""
from __future__ import annotations

import logging
import re

# Phone numbers, e-mail addresses, dates and national-id-like digit runs are PHI here.
_PATTERNS = [
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "<email>"),
    (re.compile(r"\+?\d[\d\s().-]{7,}\d"), "<number>"),
    (re.compile(r"\b\d{1,4}[/-]\d{1,2}[/-]\d{1,4}\b"), "<date>"),
    (re.compile(r"[٠-٩]{4,}"), "<number>"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("rasa_sdk").setLevel(logging.WARNING)  # one line per registered action is noise
    # The twilio library logs every request's headers and body at INFO: patient numbers and texts.
    logging.getLogger("twilio").setLevel(logging.WARNING)
