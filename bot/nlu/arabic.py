"""Arabic text normalisation for matching and featurising.

Patients type the same word many ways: with or without hamza on the alef (أحد / احد),
with taa marbuta or haa at the end (بكرة / بكره), with or without short vowels (غدًا / غدا),
stretched with tatweel for emphasis (بكـــرة), and with Arabic-Indic digits (١٠) from Arabic
keyboards or Persian ones (۱۰) from some Android layouts. `normalize` folds these to one form.

Every change is one character to one character or a deletion, so `normalize_with_offsets`
can map a match in the normalised text back to the text the patient wrote.
"""
from __future__ import annotations

import unicodedata

_ARABIC_INDIC = "٠١٢٣٤٥٦٧٨٩"
_PERSIAN = "۰۱۲۳۴۵۶۷۸۹"

_CHAR_MAP: dict[str, str] = {}
for _i, (_a, _p) in enumerate(zip(_ARABIC_INDIC, _PERSIAN)):
    _CHAR_MAP[_a] = str(_i)
    _CHAR_MAP[_p] = str(_i)
_CHAR_MAP.update(
    {
        "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا",
        "ى": "ي", "ة": "ه", "ؤ": "و", "ئ": "ي",
        # Persian/Urdu keyboards produce these look-alike letters for kaf and yeh.
        "ک": "ك", "ی": "ي", "ۀ": "ه",
        # Arabic punctuation becomes its Latin counterpart so tokenizers split on it.
        "،": ",", "؟": "?", "؛": ";", "٪": "%",
        # Arabic decimal and thousands separators (١٠٫٥ and ١٬٠٠٠).
        "٫": ".", "٬": ",",
    }
)

# Short vowels, tanween, shadda, sukun, dagger alef; tatweel; invisible direction and joiner
# marks that right-to-left keyboards and copy-paste insert.
_DROP = set(chr(c) for c in range(0x064B, 0x0653)) | {
    "\u0670", "\u0640",
    "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u061c", "\ufeff",
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
}


def _is_presentation_form(ch: str) -> bool:
    # Old PDFs and some phones send contextual glyphs (ﻻ, ﺑ) instead of letters.
    o = ord(ch)
    return 0xFB50 <= o <= 0xFDFF or 0xFE70 <= o <= 0xFEFF


def _fold(ch: str) -> str:
    """The normalised form of one character (possibly empty, possibly two characters)."""
    if ch in _DROP:
        return ""
    if _is_presentation_form(ch):
        return "".join(_fold(c) for c in unicodedata.normalize("NFKC", ch))
    mapped = _CHAR_MAP.get(ch)
    if mapped is not None:
        return mapped
    return ch.lower()


def normalize_with_offsets(text: str) -> tuple[str, list[int]]:
    """Normalise `text` and return (normalised, index_map).

    `index_map` has len(normalised) + 1 entries: `index_map[i]` is where normalised character i
    starts in `text`, and the last entry is where the normalised content ends in `text` (after any
    dropped marks that trail the last letter). A match normalised[s:e] therefore came from
    text[index_map[s]:index_map[e]].
    """
    if not text:
        return "", [0]
    out: list[str] = []
    starts: list[int] = []
    pending_space = -1  # where a run of whitespace began, if we are inside one
    end_of_content = 0
    for i, ch in enumerate(text):
        if ch.isspace():
            if pending_space < 0:
                pending_space = i
            continue
        folded = _fold(ch)
        if not folded:
            if out and pending_space < 0:
                end_of_content = i + 1  # a mark belongs to the letter before it
            continue
        if pending_space >= 0:
            if out:
                out.append(" ")
                starts.append(pending_space)
            pending_space = -1
        for c in folded:
            out.append(c)
            starts.append(i)
        end_of_content = i + 1
    return "".join(out), starts + [end_of_content]


def normalize(text: str) -> str:
    """The matching form of `text` (see the module docstring)."""
    return normalize_with_offsets(text)[0]


def to_original_span(index_map: list[int], start: int, end: int) -> tuple[int, int]:
    """Map a [start, end) span of the normalised text back to the original text."""
    if end <= start:
        return index_map[start], index_map[start]
    return index_map[start], index_map[end]
