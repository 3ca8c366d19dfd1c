from hypothesis import given, strategies as st

from bot.nlu.arabic import normalize, normalize_with_offsets, to_original_span

import pytest


@pytest.mark.parametrize(
    "text, expected",
    [
        ("١٠", "10"),
        ("۱۰:۳۰", "10:30"),  # Persian digits
        ("أحمد إبراهيم آمنة ٱلله", "احمد ابراهيم امنه الله"),
        ("مستشفى", "مستشفي"),
        ("بكرة", "بكره"),
        ("مؤمن", "مومن"),
        ("طوارئ", "طواري"),
        ("غدًا", "غدا"),
        ("بُكْرَةً", "بكره"),
        ("الرحمٰن", "الرحمن"),  # dagger alef
        ("بكـــرة", "بكره"),  # tatweel
        ("Dr. KHALID", "dr. khalid"),
        ("  lots   of\t\nspace  ", "lots of space"),
        ("نعم، بكرة؟ لا؛", "نعم, بكره? لا;"),
        ("\u200fمرحبا\u200f", "مرحبا"),  # right-to-left marks
        ("ﻻ", "لا"),  # presentation-form ligature
        ("", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_offsets_map_matches_back_to_the_original():
    text = "  موعد   بُكرةً، الساعة ١٠ صباحاً؟"
    normalized, index_map = normalize_with_offsets(text)
    assert len(index_map) == len(normalized) + 1
    for word, original in [("بكره", "بُكرةً"), ("الساعه", "الساعة"), ("10", "١٠"), ("صباحا", "صباحاً"), ("موعد", "موعد")]:
        s = normalized.index(word)
        start, end = to_original_span(index_map, s, s + len(word))
        assert text[start:end] == original


def test_offsets_of_the_whole_text_skip_outer_space():
    text = "\t Hello  World \n"
    normalized, index_map = normalize_with_offsets(text)
    start, end = to_original_span(index_map, 0, len(normalized))
    assert text[start:end] == "Hello  World"


@given(st.text())
def test_normalize_is_idempotent_and_offsets_are_sane(text):
    normalized, index_map = normalize_with_offsets(text)
    assert normalize(normalized) == normalized
    assert len(index_map) == len(normalized) + 1
    assert index_map == sorted(index_map)
    assert all(0 <= i <= len(text) for i in index_map)
