from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from bot.nlu.timeparse import TimeMatch, extract_times

RIYADH = ZoneInfo("Asia/Riyadh")
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=RIYADH)  # a Monday


def day(d: str) -> str:
    return f"2026-{d}T00:00:00+03:00"


def at(d: str, hm: str) -> str:
    return f"2026-{d}T{hm}:00+03:00"


# text, expected expression (its first occurrence in text), value, grain, part_of_day
CASES = [
    # ------------------------------------------------------------------ English
    ("today", "today", day("11-30"), "day", None),
    ("tomorrow", "tomorrow", day("12-01"), "day", None),
    ("can I come tmrw?", "tmrw", day("12-01"), "day", None),
    ("day after tomorrow", "day after tomorrow", day("12-02"), "day", None),
    ("the day after tomorrow please", "the day after tomorrow", day("12-02"), "day", None),
    ("after tomorrow", "after tomorrow", day("12-02"), "day", None),
    ("tonight", "tonight", day("11-30"), "day", "evening"),
    ("next Tuesday", "next Tuesday", day("12-01"), "day", None),  # the next Tuesday after today
    ("on Sunday", "Sunday", day("12-06"), "day", None),
    ("on Monday", "Monday", day("12-07"), "day", None),  # today excluded
    ("this Monday", "this Monday", day("11-30"), "day", None),  # ...unless clearly this one
    ("this Thursday afternoon", "this Thursday afternoon", day("12-03"), "day", "afternoon"),
    ("next week", "next week", day("12-06"), "day", None),  # Saudi week starts on Sunday
    ("Tuesday next week", "Tuesday next week", day("12-08"), "day", None),
    ("Dec 3", "Dec 3", day("12-03"), "day", None),
    ("3rd of December", "3rd of December", day("12-03"), "day", None),
    ("December 1st at 11am", "December 1st at 11am", at("12-01", "11:00"), "hour", None),
    ("Jan 5", "Jan 5", "2027-01-05T00:00:00+03:00", "day", None),
    ("30 November", "30 November", day("11-30"), "day", None),
    ("3/12/2026", "3/12/2026", day("12-03"), "day", None),
    ("2026-12-03", "2026-12-03", day("12-03"), "day", None),
    ("on the 5th", "the 5th", day("12-05"), "day", None),
    ("at 10", "at 10", at("11-30", "10:00"), "hour", None),
    ("at 4", "at 4", at("11-30", "16:00"), "hour", None),  # clinic hours: afternoon
    ("at 8", "at 8", at("12-01", "08:00"), "hour", None),  # 08:00 has passed today
    ("at 12", "at 12", at("11-30", "12:00"), "hour", None),
    ("10am", "10am", at("11-30", "10:00"), "hour", None),
    ("10:30 pm", "10:30 pm", at("11-30", "22:30"), "minute", None),
    ("4:30", "4:30", at("11-30", "16:30"), "minute", None),
    ("half past ten tomorrow", "half past ten tomorrow", at("12-01", "10:30"), "minute", None),
    ("quarter to 5", "quarter to 5", at("11-30", "16:45"), "minute", None),
    ("around noon tomorrow", "around noon tomorrow", at("12-01", "12:00"), "hour", None),
    ("in the morning", "in the morning", day("11-30"), "day", "morning"),
    ("next Tuesday afternoon", "next Tuesday afternoon", day("12-01"), "day", "afternoon"),
    ("in 2 days", "in 2 days", day("12-02"), "day", None),
    ("in a week", "in a week", day("12-07"), "day", None),
    ("in 2 hours", "in 2 hours", at("11-30", "11:00"), "minute", None),
    ("tomorrow at 10am", "tomorrow at 10am", at("12-01", "10:00"), "hour", None),
    ("can I come tuesday at 4?", "tuesday at 4", at("12-01", "16:00"), "hour", None),
    ("at 8 in the morning on thursday", "at 8 in the morning on thursday", at("12-03", "08:00"), "hour", "morning"),
    ("at 6 tomorrow evening", "at 6 tomorrow evening", at("12-01", "18:00"), "hour", "evening"),
    ("Tuesday Dec 8 at 4pm", "Tuesday Dec 8 at 4pm", at("12-08", "16:00"), "hour", None),
    ("bukra", "bukra", day("12-01"), "day", None),
    ("ba3d bukra el sa3a 5", "ba3d bukra el sa3a 5", at("12-02", "17:00"), "hour", None),
    # ------------------------------------------------------------------ Arabic
    ("اليوم", "اليوم", day("11-30"), "day", None),
    ("بكرة", "بكرة", day("12-01"), "day", None),
    ("بكرا", "بكرا", day("12-01"), "day", None),
    ("بكره", "بكره", day("12-01"), "day", None),
    ("باكر", "باكر", day("12-01"), "day", None),
    ("باجر", "باجر", day("12-01"), "day", None),
    ("غدا", "غدا", day("12-01"), "day", None),
    ("غدًا", "غدًا", day("12-01"), "day", None),
    ("بعد بكرة", "بعد بكرة", day("12-02"), "day", None),
    ("بعد غد", "بعد غد", day("12-02"), "day", None),
    ("عقب باجر", "عقب باجر", day("12-02"), "day", None),
    ("الأحد", "الأحد", day("12-06"), "day", None),
    ("يوم الأحد", "يوم الأحد", day("12-06"), "day", None),
    ("الأحد الجاي", "الأحد الجاي", day("12-06"), "day", None),
    ("الاحد الجاي", "الاحد الجاي", day("12-06"), "day", None),
    ("الاثنين الجاي", "الاثنين الجاي", day("12-07"), "day", None),
    ("الخميس القادم", "الخميس القادم", day("12-03"), "day", None),
    ("الاسبوع الجاي", "الاسبوع الجاي", day("12-06"), "day", None),
    ("الجمعة الجاية", "الجمعة الجاية", day("12-04"), "day", None),
    ("يوم التلات", "يوم التلات", day("12-01"), "day", None),  # Egyptian Tuesday
    ("الحد الجاي", "الحد الجاي", day("12-06"), "day", None),  # Egyptian Sunday
    ("ابي اغير موعدي للأربعاء", "للأربعاء", day("12-02"), "day", None),
    ("١٠ الصبح", "١٠ الصبح", at("11-30", "10:00"), "hour", "morning"),
    ("الساعة ١٠ صباحا", "الساعة ١٠ صباحا", at("11-30", "10:00"), "hour", "morning"),
    ("الساعة 10 ونص", "الساعة 10 ونص", at("11-30", "10:30"), "minute", None),
    ("الساعة ٤ الا ربع", "الساعة ٤ الا ربع", at("11-30", "15:45"), "minute", None),
    ("الساعة عشرة", "الساعة عشرة", at("11-30", "10:00"), "hour", None),
    ("الساعة العاشرة صباحًا", "الساعة العاشرة صباحًا", at("11-30", "10:00"), "hour", "morning"),
    ("العصر", "العصر", day("11-30"), "day", "afternoon"),
    ("بعد المغرب", "بعد المغرب", day("11-30"), "day", "evening"),
    ("بكرة الضهر", "بكرة الضهر", at("12-01", "12:00"), "hour", None),
    ("بكرة الظهر", "بكرة الظهر", at("12-01", "12:00"), "hour", None),
    ("بالليل", "بالليل", day("11-30"), "day", "evening"),
    ("الصبح", "الصبح", day("11-30"), "day", "morning"),
    ("بعد يومين", "بعد يومين", day("12-02"), "day", None),
    ("بعد ٣ أيام", "بعد ٣ أيام", day("12-03"), "day", None),
    ("بعد ساعتين", "بعد ساعتين", at("11-30", "11:00"), "minute", None),
    ("٣ ديسمبر", "٣ ديسمبر", day("12-03"), "day", None),
    ("3 ديسمبر", "3 ديسمبر", day("12-03"), "day", None),
    ("٣ كانون الأول", "٣ كانون الأول", day("12-03"), "day", None),
    ("يوم ٥ شهر ١٢", "يوم ٥ شهر ١٢", day("12-05"), "day", None),
    ("عايز احجز بكرة الساعة ٥ العصر", "بكرة الساعة ٥ العصر", at("12-01", "17:00"), "hour", "evening"),
    ("بدي موعد بكرا الصبح", "بكرا الصبح", day("12-01"), "day", "morning"),
    ("الساعة ٤ المسا", "الساعة ٤ المسا", at("11-30", "16:00"), "hour", "afternoon"),
    ("الساعة ٨ بالليل", "الساعة ٨ بالليل", at("11-30", "20:00"), "hour", "evening"),
    ("بكرة الساعة ١٠ الصبح", "بكرة الساعة ١٠ الصبح", at("12-01", "10:00"), "hour", "morning"),
    ("يوم الخميس الساعة ٢ الضهر", "يوم الخميس الساعة ٢ الضهر", at("12-03", "14:00"), "hour", "afternoon"),
    ("فيني اجي عالساعة ١٠؟", "عالساعة ١٠", at("11-30", "10:00"), "hour", None),
    ("بكرا ع ١١", "بكرا ع ١١", at("12-01", "11:00"), "hour", None),
    ("بكرة، الساعة ١٠", "بكرة، الساعة ١٠", at("12-01", "10:00"), "hour", None),
    ("الساعة ١٠ ص", "الساعة ١٠ ص", at("11-30", "10:00"), "hour", "morning"),
    ("٤ م", "٤ م", at("11-30", "16:00"), "hour", "afternoon"),
    ("ظهر الغد", "ظهر الغد", at("12-01", "12:00"), "hour", None),
    ("الليلة الساعة ٨", "الليلة الساعة ٨", at("11-30", "20:00"), "hour", "evening"),
    ("النهارده", "النهارده", day("11-30"), "day", None),
]


@pytest.mark.parametrize("text, expression, value, grain, part", CASES, ids=[c[0] for c in CASES])
def test_reads(text, expression, value, grain, part):
    matches = extract_times(text, NOW)
    assert len(matches) == 1, matches
    m = matches[0]
    start = text.index(expression)
    assert (m.start, m.end, m.text) == (start, start + len(expression), expression)
    assert (m.value, m.grain, m.part_of_day) == (value, grain, part)


def test_table_is_large_enough():
    assert len(CASES) >= 60
    assert sum(1 for c in CASES if any("\u0600" <= ch <= "\u06ff" for ch in c[0])) >= 30


@pytest.mark.parametrize(
    "text",
    [
        "hello", "good morning", "Good evening, I need help", "صباح الخير", "مساء النور",
        "عندي الم في الظهر",  # back pain, not noon
        "I'm from Morocco", "المغرب", "I have 3 kids", "my son is 7 years old", "I may come",
        "I sat in the waiting room", "عندي ٣ اطفال", "room 10", "call me on 0501234567",
        "I paid 10.50", "at one point I felt dizzy", "في احد هنا؟", "خميس اخوي", "الحد الاقصى",
        "12/03", "the 5th floor", "الساعه كم؟", "٢٠٢٦ م", "", "   ", "😀",
    ],
)
def test_no_time(text):
    assert extract_times(text, NOW) == []


def test_two_separate_expressions():
    text = "I can't make it today, what about tomorrow at 5pm?"
    values = [(m.text, m.value) for m in extract_times(text, NOW)]
    assert values == [("today", day("11-30")), ("tomorrow at 5pm", at("12-01", "17:00"))]


def test_glued_arabic_conjunction_stays_outside_the_span():
    [m] = extract_times("عايز اغير الميعاد لبكرة", NOW)
    assert m.text == "بكرة"


def test_now_in_another_zone_is_converted_to_the_hospital_zone():
    utc_now = datetime(2026, 11, 30, 22, 30, tzinfo=ZoneInfo("UTC"))  # 01:30 on Tuesday in Riyadh
    [m] = extract_times("tomorrow", utc_now)
    assert m.value == day("12-02")


def test_naive_now_is_taken_as_hospital_time():
    [m] = extract_times("at 10", datetime(2026, 11, 30, 9, 0))
    assert m.value == at("11-30", "10:00")


def test_other_timezone():
    [m] = extract_times("tomorrow at 10am", datetime(2026, 11, 30, 9, 0, tzinfo=ZoneInfo("Africa/Cairo")), tz="Africa/Cairo")
    assert m.value == "2026-12-01T10:00:00+02:00"


def test_match_type():
    [m] = extract_times("بكرة", NOW)
    assert isinstance(m, TimeMatch)


def test_bad_timezone_does_not_raise():
    assert extract_times("tomorrow", NOW, tz="Not/AZone") == []


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.lists(
            st.sampled_from(
                "tomorrow at 10 am pm the of on in 2 days next week Dec 3 :30 / - , ؟ "
                "بكرة الساعة ١٠ ٣ الصبح العصر بعد يوم الأحد الجاي كانون الأول ونص الا ربع ص م".split()
            )
        ).map(" ".join),
    ),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(RIYADH)),
)
def test_never_raises(text, now):
    for m in extract_times(text, now):
        assert 0 <= m.start <= m.end <= len(text)
        assert m.text == text[m.start : m.end]
        assert m.grain in ("day", "hour", "minute")
        assert m.part_of_day in (None, "morning", "afternoon", "evening")
        datetime.fromisoformat(m.value)


def test_held_out_recall():
    from bot.nlu.time_eval import evaluate

    report = evaluate()
    assert report["counts"]["en"]["total"] >= 40 and report["counts"]["ar"]["total"] >= 40
    assert report["en"] >= 0.85, report["misses"]
    assert report["ar"] >= 0.85, report["misses"]
