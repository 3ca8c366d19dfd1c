"""Long texts cut into parts a provider accepts, at paragraph, sentence or word boundaries.

Twilio refuses a message body over 1,600 characters (error 21617), on SMS and WhatsApp alike, and
counts a character outside the Basic Multilingual Plane (most emoji) as two. An SMS is carried in
segments: GSM-7 text takes 153 characters per segment of a concatenated message (160 alone), and
a text with any other character, Arabic included, is sent as UCS-2 with 67 per segment (70
alone). Each part is billed by its own segments, so an SMS part is cut at a whole number of
segments below the limit (10 × 153 = 1,530 septets, 23 × 67 = 1,541 UCS-2 units) rather than at
1,600, which would pay for a 24th segment holding a few characters.
"""
from __future__ import annotations

import re
from typing import Callable

TWILIO_BODY_LIMIT = 1600
GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

# GSM 03.38: the basic table (one septet each) and the extension table (escape + one septet).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

# Where a part may end, strongest first: a paragraph, a line, a sentence (Latin and Arabic
# punctuation, then closing quotes or brackets), a word. The position is just after the match.
_BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"\n"),
               re.compile(r"[.!?؟۔…]+[\"'»”’)\]]*\s"), re.compile(r"[،,;؛:]\s"), re.compile(r"\s"))


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)


def utf16_units(char: str) -> int:
    """How Twilio counts a character against the 1,600 limit: two for one outside the BMP."""
    return 2 if ord(char) > 0xFFFF else 1


def gsm7_septets(char: str) -> int:
    return 2 if char in GSM7_EXTENDED else 1


def encoded_length(text: str) -> int:
    """Septets for GSM-7 text, UTF-16 code units otherwise."""
    cost = gsm7_septets if is_gsm7(text) else utf16_units
    return sum(cost(c) for c in text)


def segments(text: str) -> int:
    """How many SMS segments a single message with this body is billed as."""
    length = encoded_length(text)
    single, part = (GSM7_SINGLE, GSM7_PART) if is_gsm7(text) else (UCS2_SINGLE, UCS2_PART)
    return 1 if length <= single else -(-length // part)


def split(text: str, limit: int, cost: Callable[[str], int] = utf16_units) -> list[str]:
    """`text` in order, as parts each costing at most `limit`; a text that fits is one part."""
    if sum(cost(c) for c in text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text.strip()
    while rest:
        spent, cut = 0, 0
        for cut, char in enumerate(rest):  # the longest prefix within the limit
            spent += cost(char)
            if spent > limit:
                break
        else:
            parts.append(rest)
            break
        at = _boundary(rest, cut)
        parts.append(rest[:at].rstrip())
        rest = rest[at:].lstrip()
    return [p for p in parts if p]


def _boundary(text: str, cut: int) -> int:
    """The best place to end a part that may hold `text[:cut]`: the strongest boundary in its second
    half (so no part is left short), else the limit itself, mid-word."""
    window = text[:cut + 1]  # a boundary may be the whitespace just past the limit
    for pattern in _BOUNDARIES:
        ends = [m.end() for m in pattern.finditer(window, cut // 2) if m.end() - 1 <= cut]
        if ends:
            return ends[-1]
    return cut


def split_sms(text: str) -> list[str]:
    """Parts for Twilio SMS: under the body limit, each a whole number of segments."""
    if encoded_length(text) <= TWILIO_BODY_LIMIT:
        return [text]
    if is_gsm7(text):
        return split(text, TWILIO_BODY_LIMIT // GSM7_PART * GSM7_PART, gsm7_septets)
    return split(text, TWILIO_BODY_LIMIT // UCS2_PART * UCS2_PART, utf16_units)


def split_body(text: str) -> list[str]:
    """Parts for a Twilio channel without segments (WhatsApp): under the 1,600 body limit."""
    return split(text, TWILIO_BODY_LIMIT, utf16_units)
