"""A keyword safety net under the NLU for emergencies.

A missed emergency costs far more than an unneeded one: when a message names a red-flag symptom
the bot is told it is an emergency whatever the classifier would have said (it then gives the
997 guidance and hands the conversation to staff as urgent)."""
from __future__ import annotations

import re

from bot.nlu.arabic import normalize

RED_FLAGS = [
    "chest pain", "pain in my chest", "heart attack", "can't breathe", "cant breathe", "cannot breathe",
    "not breathing", "unconscious", "passed out", "fainted", "stroke", "seizure", "heavy bleeding",
    "bleeding heavily", "won't stop bleeding", "overdose", "suicide", "kill myself", "end my life",
    "ألم في صدري", "الم في صدري", "ألم شديد في الصدر", "وجع في صدري", "ما اقدر اتنفس", "ما أقدر أتنفس",
    "مش قادر اتنفس", "مو قادر اتنفس", "مش عارف اتنفس", "ضيق تنفس شديد", "نزيف", "اغمى عليه", "أغمي عليه",
    "مغمى عليه", "فاقد الوعي", "جلطة", "سكتة", "تشنج", "انتحر", "أنتحر", "اقتل نفسي", "جرعة زائدة",
]
_PATTERN = re.compile("|".join(re.escape(normalize(flag)) for flag in sorted(RED_FLAGS, key=len, reverse=True)))


def is_emergency(text: str) -> bool:
    return bool(_PATTERN.search(normalize(text)))
