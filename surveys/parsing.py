"""Reading a patient's answer to one survey question, however they wrote it.

Scores: "9", «٩», "nine", «تسعة», "9/10", «٨ من ١٠», "10 out of 10", star emoji (⭐⭐⭐⭐), and for a
1-5 question the words of its labels ("very satisfied", «راضٍ جدًا»). A number inside a long
sentence is not taken for a score ("I waited 2 hours for the doctor" is not an NPS of 2): such a
message is asked again. Yes/no in both languages and dialects; a choice by its number, its
ordinal («الثاني»), its title or one of its aliases. Free text is taken as written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from bot.nlu.arabic import normalize
from bot.nlu.choices import choice_index
from surveys.definitions import SCALES, Question

# Counting words up to ten, as typed (after normalisation: ة→ه, أ→ا, ى→ي).
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10,
    "صفر": 0, "واحد": 1, "وحده": 1, "اثنين": 2, "اثنان": 2, "اتنين": 2, "ثنين": 2, "ثلاثه": 3, "ثلاث": 3,
    "تلاته": 3, "تلات": 3, "اربعه": 4, "اربع": 4, "خمسه": 5, "خمس": 5, "سته": 6, "ست": 6, "سبعه": 7,
    "سبع": 7, "ثمانيه": 8, "ثماني": 8, "ثمان": 8, "تمانيه": 8, "تمنيه": 8, "ثمنيه": 8, "تسعه": 9, "تسع": 9,
    "عشره": 10, "عشر": 10,
}
_STARS = re.compile("[\u2b50\U0001f31f\u2605\u272d\u2729]")
_OUT_OF = re.compile(r"(\d{1,2})\s*(?:/|out of|of|من|على)\s*(\d{1,2})")
MAX_SCORE_WORDS = 6  # "I'd give it a solid 9" is a score; a longer sentence with a digit is not

# The labels of the 1-5 satisfaction scale, lowest first; the buttons show them too.
CSAT_LABELS = {
    "en": ["Very dissatisfied", "Dissatisfied", "Neutral", "Satisfied", "Very satisfied"],
    "ar": ["غير راضٍ إطلاقًا", "غير راضٍ", "محايد", "راضٍ", "راضٍ جدًا"],
}
_CSAT_WORDS = {
    1: {"very dissatisfied", "very unhappy", "very bad", "terrible", "awful", "غير راض اطلاقا", "غير راض ابدا",
        "سيء جدا", "زفت", "مو راضي ابدا"},
    2: {"dissatisfied", "unhappy", "bad", "poor", "not satisfied", "غير راض", "مو راضي", "مش راضي", "سيء"},
    3: {"neutral", "ok", "okay", "average", "so so", "محايد", "عادي", "متوسط", "نص نص"},
    4: {"satisfied", "good", "happy", "راض", "راضي", "جيد", "زين", "كويس", "حلو"},
    5: {"very satisfied", "very good", "excellent", "great", "perfect", "very happy", "راض جدا", "راضي جدا",
        "ممتاز", "ممتازه", "رائع", "جيد جدا", "مره زين", "حلو مره"},
}

_YES = {"yes", "y", "yeah", "yea", "yep", "yup", "sure", "of course", "correct", "true", "indeed", "absolutely",
        "نعم", "ايوه", "ايوا", "اي", "ايه", "اكيد", "بلي", "اجل", "صح", "طبعا", "يب", "اه", "نعم تم"}
_NO = {"no", "n", "nope", "nah", "not really", "not at all", "never", "false", "لا", "كلا", "ابدا", "لا ابدا",
       "مو", "مش", "لاء", "لا والله", "للاسف لا", "ما تم"}

# Said while a survey is open, these end it. STOP alone never gets here on SMS, WhatsApp and
# Telegram: it is the consent opt-out, honoured earlier by the router (and ends the survey too).
_STOP = {"stop", "stop survey", "stop the survey", "end survey", "end the survey", "quit survey", "quit",
         "cancel survey", "cancel the survey", "exit", "no more questions", "no more", "stop asking",
         "i dont want to answer", "i do not want to answer", "leave me alone",
         "ايقاف", "ايقاف الاستبيان", "اوقف الاستبيان", "وقف الاستبيان", "وقف", "خلاص", "بس", "كفايه",
         "كفي", "انهاء الاستبيان", "الغاء الاستبيان", "لا اريد الاجابه", "ما ابغي", "ما ابي", "مش عايز",
         "مابي", "مابغي", "لا ابغي"}
_SKIP = {"skip", "pass", "next", "next question", "skip question", "تخطي", "تخطى", "التالي", "السؤال التالي",
         "تجاوز", "عدي", "سكيب"}

_YES_N = {normalize(w) for w in _YES}
_NO_N = {normalize(w) for w in _NO}
_STOP_N = {normalize(w) for w in _STOP}
_SKIP_N = {normalize(w) for w in _SKIP}
_CSAT_N = {value: {normalize(w) for w in words} for value, words in _CSAT_WORDS.items()}


@dataclass(frozen=True)
class Answer:
    """A valid answer: an int (scores), "yes"/"no", an option value, or the patient's text."""

    value: int | str


def _words(text: str) -> str:
    """Normalised words, punctuation and emoji dropped: «ايوه!» and "Yes." compare equal to their word."""
    return " ".join(re.findall(r"\w+", normalize(text)))


def is_stop(text: str) -> bool:
    return _words(text) in _STOP_N


def is_skip(text: str) -> bool:
    return _words(text) in _SKIP_N


def _digits_for_words(said: str) -> str:
    return re.sub(r"\w+", lambda m: str(_NUMBER_WORDS.get(m.group(0), m.group(0))), said)


def score(text: str, low: int, high: int, labels: dict[int, set[str]] | None = None) -> int | None:
    """A score from low to high, or None when the message does not clearly give one."""
    stars = len(_STARS.findall(text))
    said = normalize(text)
    words = re.findall(r"\w+", said)
    if labels and (phrase := " ".join(words)) and (value := next(
            (v for v, names in labels.items() if phrase in names), None)) is not None:
        return value
    converted = _digits_for_words(said)
    found: int | None = None
    if out_of := _OUT_OF.search(converted):  # "9/10", "nine out of ten", «٨ من ١٠», at any length
        if int(out_of.group(2)) != high:
            return None  # "4/5" on a 0-10 question: not ours to convert
        found = int(out_of.group(1))
    elif len(words) > MAX_SCORE_WORDS:
        return None
    else:
        # Counting words only in a short answer: "no one helped me" is not a score of 1.
        numbers = {int(n) for n in re.findall(r"\d+", converted if len(words) <= 3 else said)}
        if len(numbers) > 1:
            return None  # "8 or 9"
        if numbers:
            found = numbers.pop()
    if stars:
        if found is not None and found != stars:
            return None
        found = stars
    if found is None or not low <= found <= high:
        return None
    return found


def yes_no(text: str) -> str | None:
    said = _words(text)
    if said in _YES_N or said == "1":
        return "yes"
    if said in _NO_N or said == "2":
        return "no"
    first = said.split(" ", 1)[0] if said else ""
    if first in _YES_N and first not in _NO_N:
        return "yes"
    if first in _NO_N:
        return "no"
    return None


def choice(text: str, question: Question) -> str | None:
    """The value of the option the patient chose, or None (unclear, or two options named)."""
    index = choice_index(text, len(question.options))
    if index is not None:
        return question.options[index - 1].value
    said = _words(text)
    if not said:
        return None
    exact, partial = set(), set()
    padded = f" {said} "
    for option in question.options:
        names = {_words(option.text.en), _words(option.text.ar), _words(option.value.replace("_", " "))}
        names |= {_words(a) for lang in option.aliases.values() for a in lang}
        names.discard("")
        if said in names:
            exact.add(option.value)
        elif any(f" {name} " in padded for name in names):
            partial.add(option.value)
    if len(exact) == 1:
        return exact.pop()
    if not exact and len(partial) == 1:
        return partial.pop()
    return None


def parse(question: Question, text: str) -> Answer | None:
    """The patient's answer to `question`, or None when it must be asked again."""
    if question.type in SCALES:
        low, high = SCALES[question.type]
        value = score(text, low, high, _CSAT_N if question.type == "csat" else None)
    elif question.type == "yes_no":
        value = yes_no(text)
    elif question.type == "choice":
        value = choice(text, question)
    else:
        value = " ".join(text.split())[:2000] or None
    return None if value is None else Answer(value)
