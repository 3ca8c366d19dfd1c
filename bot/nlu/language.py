"""Which language a patient wrote in: "ar" or "en".

Arabic script decides when there is enough of it. Many patients type Arabic in Latin letters
("Arabizi", common in Egypt, the Levant and the Gulf on phones without an Arabic keyboard): the
digits stand for letters Latin has no sign for (2 hamza, 3 ain, 5 kha, 6 taa, 7 haa, 8 ghain/qaf,
9 sad/qaf), as in "3ayez" (I want), "mar7aba" (hello), "ba7ges" (I'm booking). Those words, or a
handful of very common Arabizi words, make a Latin message Arabic.
"""
from __future__ import annotations

import re

from bot.nlu.arabic import normalize

_ARABIC_LETTER = re.compile(r"[\u0620-\u064a\u066e-\u06d3\u06d5\u06fa-\u06ff\u0750-\u077f\u08a0-\u08ff]")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_LATIN = re.compile(r"[a-z]")

# Digits inside a Latin word stand for Arabic letters ("3ayez", "mar7aba", "2ana").
_ARABIZI_DIGITS = re.compile(r"^(?=.*[a-z])(?:[a-z]*[2356789][a-z]+|[a-z]+[2356789][a-z]*)[a-z0-9]*$")
# English shorthand that looks like Arabizi but is not: 2day, 2moro, gr8, l8r, b4, 3rd, 10am, 5pm...
_ENGLISH_DIGIT_WORD = re.compile(
    r"^(?:\d+(?:st|nd|rd|th|am|pm|a|p|h|hr|hrs|min|mins|k|m|x|s|g|mg|ml|kg|cm|mm|d|yrs?|y|ish)"
    r"|2(?:day|nite|night|morrow|moro|mrw|mrrw|gether)|gr8|l8r|l8|b4|4ever|any1|some1|no1|every1"
    r"|mp3|mp4|h2o|[a-z]\d|covid19|\d+g)$"
)
_ARABIZI_WORDS = frozenset(
    """
    ana enta enti inta inti ehna e7na a7na howa heya
    3ayez 3ayz 3ayza 3awez 3awza ayez ayza abi abgha abghi abgha abbi biddi baddi bedi
    ba7ges bahges ba7jez a7ges a7jez ahjez ahgez 7agz hagz mow3ed maw3ed mawed maw3id
    bukra bokra bukrah bokrah bukkra bkra baker bacher bachir
    shukran shokran shukrn choukran mashkoor mashkur
    inshallah inshalla inshaallah insha'allah isa
    mar7aba marhaba marhaban mar7ab ahlan ahla salam salaam assalamu alaikum alaykum
    sabah masa el5eer elkheir elkhair kheir
    habibi 7abibi habibti yalla yallah wallah wallahi mashallah ma3lesh maalesh
    keef kif kifak kifik shlonak shlonik izzayak ezayak ezzayak ezayek
    eish esh shu shou wein wen fein feen leh leesh lesh
    tayeb tayyib tamam aiwa aywa la2 laa
    el7amdulillah alhamdulillah hamdulillah
    doktor duktur doctora daktor dakhtor
    ba3d ba3den ba3dain delwa2ty dilwa2ti halla2 hala2
    momken mumkin mumken law sama7t samaht
    """.split()
)


def _is_arabizi(word: str) -> bool:
    if word in _ARABIZI_WORDS:
        return True
    return bool(_ARABIZI_DIGITS.match(word)) and not _ENGLISH_DIGIT_WORD.match(word)


def detect(text: str, default: str = "en") -> str:
    """Return "ar" or "en" for `text`; `default` when it has no letters (digits, emoji...)."""
    if default not in ("ar", "en"):
        default = "en"
    if not isinstance(text, str) or not text:
        return default
    arabic_words = 0
    latin_words: list[str] = []
    for word in _WORD.findall(normalize(text)):
        if _ARABIC_LETTER.search(word):
            arabic_words += 1
        elif _LATIN.search(word):
            latin_words.append(word)
    if not arabic_words and not latin_words:
        return default
    # Patients writing Arabic often mix in English words (a doctor's name, "ok", "MRI"), while
    # patients writing English rarely type Arabic script: a third of the words is enough.
    if arabic_words * 2 >= len(latin_words):
        return "ar"
    arabizi = sum(1 for w in latin_words if _is_arabizi(w))
    if arabizi and (arabizi >= 2 or arabizi * 3 >= len(latin_words)):
        return "ar"
    return "en"
