"""Long texts cut for Twilio: under 1,600 characters, whole SMS segments, at sentence or word ends."""
from __future__ import annotations

import re

from hypothesis import given, settings, strategies as st

from channels.splitting import encoded_length, segments, split, split_body, split_sms

EN = " ".join(f"Sentence {i} says something useful about your visit to the clinic." for i in range(70))
AR = " ".join(f"الجملة رقم {i} تقول لك شيئًا مفيدًا عن زيارتك للعيادة؟" for i in range(90))


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_sms_segments_follow_gsm7_and_ucs2_sizes():
    assert [segments("a" * n) for n in (160, 161, 306, 307)] == [1, 2, 2, 3]
    assert [segments("ع" * n) for n in (70, 71, 134, 135)] == [1, 2, 2, 3]
    assert segments("€" * 80) == 1 and segments("€" * 81) == 2  # an extension character is two septets
    assert segments("Hello ع") == 1 and encoded_length("Hello ع") == 7  # one Arabic letter: all UCS-2


def test_a_text_that_fits_is_left_alone():
    for text in ("a" * 1600, "ع" * 1600, "😀" * 800, "short"):
        assert split_sms(text) == [text] and split_body(text) == [text]
    assert split_sms("€" * 801) != ["€" * 801]  # 1,602 septets


def test_english_is_cut_at_sentence_ends_in_whole_gsm7_segments():
    parts = split_sms(EN)
    assert len(parts) == 4
    assert all(encoded_length(p) <= 1530 and segments(p) <= 10 for p in parts)
    assert all(p.endswith("clinic.") for p in parts)
    assert " ".join(parts) == EN


def test_arabic_is_cut_at_question_marks_in_whole_ucs2_segments():
    parts = split_sms(AR)
    assert len(parts) == 4
    assert all(len(p) <= 1541 and segments(p) <= 23 for p in parts)  # 23 × 67, not 24 segments at 1,600
    assert all(p.endswith("للعيادة؟") for p in parts)
    assert " ".join(parts) == AR


def test_whatsapp_parts_use_the_whole_1600_characters():
    parts = split_body(AR)
    assert len(parts) == 4 and all(1541 < len(p) <= 1600 for p in parts[:-1])  # no SMS segments to fill
    assert " ".join(parts) == AR


def test_a_paragraph_break_is_preferred_to_a_sentence_end():
    first, second = "First paragraph. " * 50, "Second paragraph, a list of times. " * 40
    parts = split_sms(first.strip() + "\n\n" + second.strip())
    assert parts[0] == first.strip()
    assert squeeze("".join(parts)) == squeeze(first + second)


def test_a_word_longer_than_a_part_is_cut_and_nothing_is_lost():
    word = "x" * 4000
    parts = split(f"see {word} end", 1600)
    assert [len(p) for p in parts] == [1600, 1600, 808]
    assert squeeze("".join(parts)) == squeeze(f"see {word} end")


def test_emoji_count_twice_against_the_limit():
    assert [len(p) for p in split_body("😀" * 900)] == [800, 100]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["word", "كلمة", "موعدك", "visit.", "؟", "!", " ", " ", "\n", "\n\n", "😀", "€",
                                 "x" * 37, "ع" * 53]), min_size=0, max_size=900))
def test_parts_keep_every_character_in_order_and_each_fits(pieces):
    text = "".join(pieces)
    for parts, limit in ((split_sms(text), 1600), (split_body(text), 1600)):
        assert squeeze("".join(parts)) == squeeze(text)
        assert all(encoded_length(p) <= limit and len(p.encode("utf-16-le")) // 2 <= limit for p in parts)
        if len(parts) > 1:
            assert all(p == p.strip() and p for p in parts)
