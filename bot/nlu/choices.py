"""Which numbered option a patient chose: "2", «٢», "the second one", «الثاني»."""
from __future__ import annotations

import re

from bot.nlu.arabic import normalize

# Ordinals win over counting words: "the second one" is the second.
_ORDINALS = {1: {"first", "1st", "الاول", "اول", "الأول"}, 2: {"second", "2nd", "الثاني", "ثاني", "الثانيه"},
             3: {"third", "3rd", "الثالث", "ثالث", "الثالثه"}}
_CARDINALS = {1: {"one", "واحد", "وحده"}, 2: {"two", "اثنين", "اتنين", "تنين"}, 3: {"three", "ثلاثه", "تلاته"}}


def choice_index(raw: str, count: int) -> int | None:
    """1-based choice a patient made among `count` numbered options, or None."""
    cleaned = normalize(raw).strip(" .)-،")
    match = re.fullmatch(r"(?:رقم|no\.?|number|option|#)?\s*(\d{1,2})", cleaned)
    if match:
        number = int(match.group(1))
        return number if 1 <= number <= count else None
    said = set(re.findall(r"\w+", cleaned))
    for table in (_ORDINALS, _CARDINALS):
        for number, names in table.items():
            if number <= count and said & {normalize(n) for n in names}:
                return number
    return None
