"""Dates and times in patients' English and Arabic messages.

`extract_times(text, now)` finds expressions such as "tuesday at 4", "tomorrow morning",
«بكرة الساعة ١٠ الصبح», «الأحد الجاي», «٣ كانون الأول» and resolves them against `now` in the
hospital's zone. dateparser alone is not enough here (measured with 1.2 and 1.5): it knows no
dialect words (nothing for «بكرة», «بعد غد» or «٣ كانون الأول»), it reads «الساعة ١٠ صباحا» and
"10am" as the 1st of the month at 10:00 and "at 10" as October, and its `search_dates` reads
"day after tomorrow" as tomorrow and finds only «يومين» in «بعد يومين». So the text is normalised first
(bot.nlu.arabic), small rules find the pieces (a day, a clock time, a part of the day), adjacent
pieces are joined into one expression, and dateparser resolves the calendar dates written with a
month name or in numbers.

Values follow these conventions (documented for the booking actions):
- a day without a clock time is that day at 00:00, grain "day"; "morning", «العصر» and the like set
  `part_of_day` (morning / afternoon / evening) and do not invent an hour;
- noon and «الظهر» are 12:00;
- a clock time without am/pm is read in clinic hours (08:00-21:00): 1-7 are pm, 8-11 am, 12 noon;
- a weekday is the next such day after today ("this Monday" on a Monday is today); "next week" is
  the Sunday that starts the next Saudi week;
- a clock time without a day is today when still ahead, otherwise tomorrow.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Callable, Iterator, Optional
from zoneinfo import ZoneInfo

import regex

from bot.nlu.arabic import normalize, normalize_with_offsets, to_original_span

log = logging.getLogger(__name__)

DEFAULT_TZ = "Asia/Riyadh"
WEEK_START = 6  # Sunday (Python's Monday=0): the Saudi working week runs Sunday to Thursday
PART_ENDS = {"morning": 12, "afternoon": 17, "evening": 24}


@dataclass(frozen=True)
class TimeMatch:
    start: int
    end: int
    text: str
    value: str  # ISO 8601 with the hospital's UTC offset
    grain: str  # "day" | "hour" | "minute"
    part_of_day: Optional[str] = None  # "morning" | "afternoon" | "evening"


@dataclass(frozen=True)
class _Piece:
    """One recognised fragment, in normalised-text offsets."""

    start: int
    end: int
    strong: bool = True  # a weak piece (a bare "10", «الظهر») only counts next to a strong one
    day: Optional[date] = None  # an explicit or relative day
    weekday: Optional[int] = None  # 0 = Monday
    this_week: bool = False  # "this Thursday" may be today
    next_week: bool = False
    clock: Optional[tuple[int, int, bool, Optional[str]]] = None  # hour, minute, minute given, am/pm
    part: Optional[str] = None  # morning | afternoon | evening | noon
    instant: Optional[tuple[datetime, str]] = None  # "in 2 hours": a finished value and its grain


# ----------------------------------------------------------------------------- vocabulary

def _alt(words) -> str:
    """A regex alternation that prefers the longest word (regex alternation is first-match)."""
    words = {normalize(w) for w in words}
    return "(?:" + "|".join(
        regex.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True)
    ) + ")"


def _nd(d: dict) -> dict:
    """A word table keyed by normalised words, as the text it is matched against."""
    return {normalize(k): v for k, v in d.items()}


# Start of a word: not after a letter or digit. Arabic glues و (and), ف (so), ب (at/in) and
# ل (for) onto the next word («وبكرة», «لبكرة», «وبالليل»), and the Levant shortens «على ال» to
# «عال» («عالعصر»), so such letters may stand before it.
L = r"(?:(?<![^\W_])|(?<=(?<![^\W_])[وف]?[وفبل])|(?<=(?<![^\W_])[وف]?ع)(?=ال))"
LS = r"(?<![^\W_])"  # strict: Latin words
R = r"(?![^\W_])"

EN_NUM = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
# Spoken hours as patients write them (after normalisation: ة→ه, أ→ا). Egyptians say «وحدة» for
# one o'clock and «حداشر» for eleven; Gulf speakers «ثنتين» for two; formal Arabic uses ordinals
# («الساعة العاشرة»).
AR_HOUR_WORDS = {
    1: ["واحده", "واحد", "وحده", "الواحده"],
    2: ["اتنين", "اثنين", "ثنتين", "اثنتين", "الثانيه"],
    3: ["تلاته", "ثلاثه", "تلات", "ثلاث", "الثالثه"],
    4: ["اربعه", "اربع", "الرابعه"],
    5: ["خمسه", "خمس", "الخامسه"],
    6: ["سته", "ست", "السادسه"],
    7: ["سبعه", "سبع", "السابعه"],
    8: ["تمانيه", "ثمانيه", "تمنيه", "ثمان", "ثماني", "تمن", "الثامنه"],
    9: ["تسعه", "تسع", "التاسعه"],
    10: ["عشره", "عشر", "العاشره"],
    11: ["حداشر", "احداشر", "احدعش", "حدعش", "احد عشر", "الحاديه عشر", "الحاديه عشره"],
    12: ["اتناشر", "اطناشر", "اثنعش", "اتنعش", "اثنا عشر", "اثني عشر", "الثانيه عشر", "الثانيه عشره"],
}
AR_WORD_TO_HOUR = _nd({w: h for h, ws in AR_HOUR_WORDS.items() for w in ws})
# Counts for «بعد ٣ أيام» written in words.
AR_COUNT = _nd({
    "واحد": 1, "اتنين": 2, "اثنين": 2, "تلات": 3, "تلاته": 3, "ثلاث": 3, "ثلاثه": 3,
    "اربع": 4, "اربعه": 4, "خمس": 5, "خمسه": 5, "ست": 6, "سته": 6, "سبع": 7, "سبعه": 7,
    "عشر": 10, "عشره": 10,
})

EN_WEEKDAYS = {
    "monday": 0, "mon": 0, "tuesday": 1, "tues": 1, "tue": 1, "wednesday": 2, "wed": 2, "weds": 2,
    "thursday": 3, "thurs": 3, "thur": 3, "thu": 3, "friday": 4, "fri": 4, "saturday": 5, "sat": 5,
    "sunday": 6, "sun": 6,
}
EN_WEAK_WEEKDAYS = {"wed", "sat", "sun"}  # also ordinary words; need "on", "this" or "next"
# Normalised Arabic weekday stems (the article is matched separately). Egyptians say «الحد» for
# Sunday and «التلات» for Tuesday; in the Gulf «الربوع» is Wednesday and «الثلوث» Tuesday.
AR_WEEKDAYS = _nd({
    "احد": 6, "حد": 6,
    "اثنين": 0, "اتنين": 0, "ثنين": 0, "تنين": 0,
    "ثلاثاء": 1, "ثلاثا": 1, "ثلاث": 1, "تلات": 1, "تلاتاء": 1, "تلاتا": 1, "ثلوث": 1,
    "اربعاء": 2, "اربعا": 2, "اربع": 2, "ربوع": 2,
    "خميس": 3, "جمعه": 4, "سبت": 5,
})
# Stems that are also everyday words («الحد» the limit, «الثلاث» the three): only with «يوم» or «الجاي».
AR_WEAK_WEEKDAYS = {"حد", "ثلاث", "اربع", "ثنين", "تنين"}
AR_NEXT = ["الجاي", "الجايه", "القادم", "القادمه", "المقبل", "المقبله", "اللي جاي", "الي جاي",
           "اللي جايه", "الي جايه"]
AR_THIS = ["ده", "دي", "هذا", "هذه", "هاد", "هادا"]

EN_MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
    "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
    "sept": 9, "sep": 9, "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12,
    "dec": 12,
}
# Egypt and the Gulf use the transliterated Western names, the Levant and Iraq the Syriac ones
# («كانون الأول» is December). «آب» (August) is also «أب», father, so a day number must precede it.
AR_MONTHS = _nd({
    "يناير": 1, "فبراير": 2, "فبرير": 2, "مارس": 3, "ابريل": 4, "ابرايل": 4, "مايو": 5, "يونيو": 6,
    "يونيه": 6, "يوليو": 7, "يوليه": 7, "اغسطس": 8, "اغسطوس": 8, "سبتمبر": 9, "اكتوبر": 10,
    "نوفمبر": 11, "ديسمبر": 12, "دسمبر": 12,
    "كانون الثاني": 1, "كانون ثاني": 1, "شباط": 2, "اذار": 3, "نيسان": 4, "ايار": 5, "حزيران": 6,
    "تموز": 7, "اب": 8, "ايلول": 9, "تشرين الاول": 10, "تشرين اول": 10, "تشرين الثاني": 11,
    "تشرين ثاني": 11, "كانون الاول": 12, "كانون اول": 12,
})
MONTH_NAMES = ["", "january", "february", "march", "april", "may", "june", "july", "august",
               "september", "october", "november", "december"]

# Words that make a number a count rather than a clock time ("3 kids", «٣ ايام»).
UNITS = _alt([
    "day", "days", "week", "weeks", "month", "months", "year", "years", "yrs", "hour", "hours",
    "hr", "hrs", "min", "mins", "minute", "minutes", "time", "times", "kid", "kids", "child",
    "children", "people", "persons", "person", "patients", "patient", "x", "%", "sar", "riyal",
    "riyals", "kg", "mg", "ml", "pills", "tablets", "st", "nd", "rd", "th",
    "ايام", "اسبوع", "اسابيع", "شهر", "شهور", "اشهر", "سنه", "سنين", "سنوات", "ساعات",
    "دقايق", "دقائق", "دقيقه", "مرات", "مره", "اطفال", "عيال", "اولاد", "اشخاص", "نفر", "ريال",
    "حبات", "حبه",
])

EN_TOMORROW = ["tomorrow", "tomorow", "tommorow", "tommorrow", "tomorrw", "tmrw", "tmw", "tmr",
               "tmrrw", "2moro", "2morrow", "2mrw", "2morow", "bukra", "bokra", "bukrah", "bokrah"]
# «بكرة» (Egypt, Levant, Gulf), «بكرا» (Levant), «باكر» / «باجر» / «باچر» (Gulf), «غدًا» (formal).
AR_TOMORROW = ["بكره", "بكرا", "باكر", "باكره", "باجر", "باچر", "غدا", "غد", "الغد", "للغد"]
AR_TODAY = ["اليوم", "لليوم", "النهارده", "النهاردا", "انهارده"]  # Egyptian «النهاردة»: today

_CONNECTOR = regex.compile(
    r"^[\s,]*(?:(?:at|on|around|about|by|@|-|في|علي|ع|يوم|بتاريخ|تاريخ|و)[\s,]*)*$"
)


# ----------------------------------------------------------------------------- recognisers

class _Ctx:
    def __init__(self, now: datetime, tz: ZoneInfo):
        self.tz = tz
        self.now = now
        self.today = now.date()


_RECOGNISERS: list[tuple[regex.Pattern, Callable[[regex.Match, _Ctx], Optional[_Piece]]]] = []


def _rule(pattern: str):
    compiled = regex.compile(pattern, regex.IGNORECASE)

    def register(fn):
        _RECOGNISERS.append((compiled, fn))
        return fn

    return register


def _piece(m: regex.Match, **kw) -> _Piece:
    return _Piece(start=m.start(), end=m.end(), **kw)


# --- days named relative to today

@_rule(LS + r"(?:today|tdy)" + R + "|" + L + _alt(AR_TODAY) + R)
def _today(m, ctx):
    return _piece(m, day=ctx.today)


@_rule(LS + r"(?:tonight|tonite|2nite|2night)" + R + "|" + L + r"الليله" + R)
def _tonight(m, ctx):
    return _piece(m, day=ctx.today, part="evening")


@_rule(LS + _alt(EN_TOMORROW) + R + "|" + L + _alt(AR_TOMORROW) + R)
def _tomorrow(m, ctx):
    return _piece(m, day=ctx.today + timedelta(days=1))


# "after tomorrow" is how many Gulf English speakers say «بعد بكرة»; «عقب» is Gulf for "after".
@_rule(
    LS + r"(?:(?:the\s+)?day\s+after|after)\s+" + _alt(EN_TOMORROW) + R
    + r"|" + LS + r"ba3d\s+" + _alt(["bukra", "bokra", "bukrah", "bokrah"]) + R
    + r"|" + L + r"(?:بعد|عقب)\s+" + _alt(AR_TOMORROW) + R
)
def _day_after_tomorrow(m, ctx):
    return _piece(m, day=ctx.today + timedelta(days=2))


# --- weekdays

@_rule(
    LS + r"(?:(?P<mod>this\s+coming|this|next|coming|the\s+coming|the\s+next)\s+)?"
    + r"(?P<name>" + _alt(EN_WEEKDAYS) + r")\.?" + R
)
def _en_weekday(m, ctx):
    name = m.group("name").lower()
    mod = (m.group("mod") or "").lower()
    preceded_by_on = regex.search(r"(?:^|\s)on\s+$", m.string[: m.start()]) is not None
    strong = name not in EN_WEAK_WEEKDAYS or bool(mod) or preceded_by_on
    return _piece(m, weekday=EN_WEEKDAYS[name], this_week=mod == "this", strong=strong)


@_rule(
    L + r"(?:(?P<yom>يوم)\s+)?(?P<art>ال|لل|هال)?(?P<name>" + _alt(AR_WEEKDAYS) + r")" + R
    + r"(?:\s+(?P<mod>" + _alt(AR_NEXT) + r"|" + _alt(AR_THIS) + r")" + R + r")?"
)
def _ar_weekday(m, ctx):
    name, art, yom, mod = m.group("name"), m.group("art"), m.group("yom"), m.group("mod")
    if not (art or yom):
        return None  # bare «خميس» is a man's name, bare «احد» means "anyone"
    strong = name not in AR_WEAK_WEEKDAYS or bool(yom) or bool(mod)
    this = art == "هال" or (mod is not None and regex.sub(r"\s+", " ", mod) in AR_THIS)
    return _piece(m, weekday=AR_WEEKDAYS[name], this_week=this, strong=strong)


@_rule(
    LS + r"(?:the\s+)?(?:next|coming|following)\s+week" + R
    + r"|" + L + r"(?:ال|لل)?اسبوع\s+" + _alt(AR_NEXT) + R
)
def _next_week(m, ctx):
    return _piece(m, next_week=True)


# --- "in 2 days", «بعد يومين», "in 3 hours"

_EN_COUNT = r"(?P<n>\d{1,3}|" + _alt(list(EN_NUM) + ["a", "an", "a couple of", "couple of"]) + r")"
_EN_UNIT = r"(?P<unit>days?|weeks?|months?|hours?|hrs?|minutes?|mins?)"


@_rule(
    LS + r"(?:in|after)\s+" + _EN_COUNT + r"\s+" + _EN_UNIT + R
    + r"|" + LS + _EN_COUNT + r"\s+" + _EN_UNIT + r"\s+(?:from\s+now|later)" + R
    + r"|" + LS + r"in\s+(?P<half>half\s+an\s+hour)" + R
)
def _en_relative(m, ctx):
    if m.group("half"):
        return _piece(m, instant=(_trunc(ctx.now + timedelta(minutes=30)), "minute"))
    n = m.group("n").lower()
    count = int(n) if n.isdigit() else EN_NUM.get(n, 2 if "couple" in n else 1)
    return _relative(m, ctx, count, m.group("unit").lower().rstrip("s"))


# Arabic has a dual: «يومين» two days, «ساعتين» two hours, «اسبوعين» two weeks.
_AR_UNITS = _nd({
    "يوم": ("day", 1), "ايام": ("day", None), "يومين": ("day", 2),
    "اسبوع": ("week", 1), "اسابيع": ("week", None), "اسبوعين": ("week", 2),
    "شهر": ("month", 1), "شهور": ("month", None), "اشهر": ("month", None), "شهرين": ("month", 2),
    "ساعه": ("hour", 1), "ساعات": ("hour", None), "ساعتين": ("hour", 2),
    "دقيقه": ("minute", 1), "دقايق": ("minute", None), "دقائق": ("minute", None),
    "دقيقتين": ("minute", 2),
})


# «كمان يومين» is Egyptian/Levantine for "two days from now".
@_rule(
    L + r"(?:بعد|كمان|عقب)\s+(?:(?P<n>\d{1,3}|" + _alt(AR_COUNT) + r")\s+)?(?P<unit>"
    + _alt(_AR_UNITS) + r")" + R
    + r"|" + L + r"بعد\s+(?P<frac>نص|نصف|ربع)\s+ساعه" + R
)
def _ar_relative(m, ctx):
    if m.group("frac"):
        minutes = 15 if m.group("frac") == "ربع" else 30
        return _piece(m, instant=(_trunc(ctx.now + timedelta(minutes=minutes)), "minute"))
    unit, implied = _AR_UNITS[m.group("unit")]
    n = m.group("n")
    if n:
        count = int(n) if n.isdigit() else AR_COUNT[n]
    elif implied:
        count = implied
    else:
        return None  # «بعد ايام»: "in a few days"
    return _relative(m, ctx, count, unit)


def _relative(m, ctx, count: int, unit: str) -> Optional[_Piece]:
    if count <= 0 or count > 400:
        return None
    if unit == "day":
        return _piece(m, day=ctx.today + timedelta(days=count))
    if unit == "week":
        return _piece(m, day=ctx.today + timedelta(weeks=count))
    if unit == "month":
        return _piece(m, day=_add_months(ctx.today, count))
    if unit in ("hour", "hr"):
        return _piece(m, instant=(_trunc(ctx.now + timedelta(hours=count)), "minute"))
    return _piece(m, instant=(_trunc(ctx.now + timedelta(minutes=count)), "minute"))


# --- calendar dates

_DAY = r"(?P<d>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s+(?P<y>20\d\d))?"


@_rule(
    LS + r"(?:the\s+)?" + _DAY + r"\s+(?:of\s+)?(?P<mon>" + _alt(EN_MONTHS) + r")\.?" + R + _YEAR
    + r"|" + LS + r"(?P<mon2>" + _alt(EN_MONTHS) + r")\.?\s+(?:the\s+)?(?P<d2>[0-3]?\d)(?:st|nd|rd|th)?"
    + R + _YEAR
)
def _en_month_date(m, ctx):
    mon = EN_MONTHS[(m.group("mon") or m.group("mon2")).lower()]
    return _calendar(m, ctx, int(m.group("d") or m.group("d2")), mon, m.group("y"))


@_rule(
    L + r"(?:يوم\s+)?" + r"(?P<d>[0-3]?\d)\s*(?:من\s+)?(?:(?P<mon>" + _alt(AR_MONTHS) + r")"
    + r"|(?:ال)?شهر\s+(?P<mnum>1[0-2]|0?[1-9]))" + R + r"(?:\s+(?P<y>20\d\d))?"
)
def _ar_month_date(m, ctx):
    mon = AR_MONTHS[regex.sub(r"\s+", " ", m.group("mon"))] if m.group("mon") else int(m.group("mnum"))
    return _calendar(m, ctx, int(m.group("d")), mon, m.group("y"))


# Numeric dates only with a year: 12/03 alone could be 12 March or 3 December. Saudi and most
# of our patients write day/month/year.
@_rule(
    r"(?<![\d/.-])(?:(?P<iy>20\d\d)-(?P<im>[01]?\d)-(?P<id>[0-3]?\d)"
    r"|(?P<d>[0-3]?\d)[/.-](?P<m>[01]?\d)[/.-](?P<y>20\d\d))(?![\d/.-]*\d)"
)
def _numeric_date(m, ctx):
    if m.group("iy"):
        text, order = f"{m.group('iy')}-{m.group('im')}-{m.group('id')}", "YMD"
    else:
        text, order = f"{m.group('d')}/{m.group('m')}/{m.group('y')}", "DMY"
    parsed = _dateparser(text, ctx, order)
    return _piece(m, day=parsed) if parsed else None


@_rule(r"(?<=(?:^|\s)on\s+)the\s+(?P<d>[0-3]?\d)(?:st|nd|rd|th)" + R)
def _day_of_month(m, ctx):
    d = int(m.group("d"))
    year, month = ctx.today.year, ctx.today.month
    for _ in range(3):
        try:
            candidate = date(year, month, d)
        except ValueError:
            candidate = None
        if candidate and candidate >= ctx.today:
            return _piece(m, day=candidate)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


def _calendar(m, ctx, d: int, month: int, year: Optional[str]) -> Optional[_Piece]:
    text = f"{d} {MONTH_NAMES[month]}" + (f" {year}" if year else "")
    if not year and (d, month) == (ctx.today.day, ctx.today.month):
        return _piece(m, day=ctx.today)  # dateparser's "future" skips today to next year
    parsed = _dateparser(text, ctx, "DMY")
    return _piece(m, day=parsed) if parsed else None


def _dateparser(text: str, ctx: _Ctx, order: str) -> Optional[date]:
    import dateparser  # slow to import; only needed for calendar dates

    settings = {
        "PREFER_DATES_FROM": "future",
        "RELATIVE_BASE": ctx.now.replace(tzinfo=None),
        "DATE_ORDER": order,
        "REQUIRE_PARTS": ["day", "month"],
    }
    parsed = dateparser.parse(text, languages=["en"], settings=settings)
    return parsed.date() if parsed else None


# --- clock times

_EN_HOUR = r"(?P<h>\d{1,2}|" + _alt(EN_NUM) + r")"
_AMPM = r"(?P<ampm>a\.?\s?m\.?|p\.?\s?m\.?|(?<=\d)[ap]" + R + r")"


@_rule(
    LS + r"(?P<cue>(?:at|around|about|by|@)(?:\s+(?:around|about))?\s*)?"
    + r"(?:(?P<frac>half|quarter)\s+(?P<dir>past|after|to)\s+)?"
    + _EN_HOUR + r"(?:(?P<sep>[:.])(?P<mm>[0-5]\d))?"
    + r"(?:\s*" + _AMPM + r"|\s*(?P<oc>o'?\s?clock|ish))?"
    + r"(?![^\W_]|[:.]\d|\s*" + UNITS + R + r")"
)
def _en_clock(m, ctx):
    word = m.group("h").lower()
    hour = int(word) if word.isdigit() else EN_NUM[word]
    minute = int(m.group("mm")) if m.group("mm") else 0
    ampm = m.group("ampm")
    if m.group("sep") == "." and not ampm:
        return None  # "10.50" is more often money than a time
    if m.group("frac"):
        if m.group("mm"):
            return None
        minute = 30 if m.group("frac").lower() == "half" else 15
        if m.group("dir").lower() == "to":
            hour, minute = hour - 1, 45
    if not _valid_clock(hour, minute, ampm):
        return None
    explicit = bool(m.group("frac") or m.group("mm") or ampm or m.group("oc"))
    if word.isdigit():
        # "at 10" or "10:30" stands alone; a bare "10" only next to a day ("tomorrow 10").
        strong = explicit or bool(m.group("cue"))
        if not strong and hour > 12:
            return None
    elif explicit:
        strong = True
    elif m.group("cue"):
        strong = False  # "at ten tomorrow" is a time, "at one point" is not 13:00
    else:
        return None
    am_pm = None if not ampm else ("pm" if ampm.lower().startswith("p") else "am")
    return _piece(m, clock=(hour, minute, bool(m.group("mm") or m.group("frac")), am_pm), strong=strong)


# Parts of the day that may follow an hour: «١٠ الصبح», «٥ العصر», «٤ المسا», «٨ بالليل», «١٠ ص».
_AR_PART_WORDS = {
    "morning": ["صباحا", "صباح", "الصبح", "الصباح", "صبحا", "الفجر", "فجرا", "بالصبح", "عالصبح",
                "sob7", "el sob7", "elsob7", "sba7"],
    "noon": ["ظهرا", "الظهر", "الضهر", "ضهرا", "الظهيره", "ظهر", "ضهر"],
    "afternoon": ["العصر", "عصرا", "عصر", "بعد الظهر", "بعد الضهر", "بعد الظهيره", "3asr", "el 3asr"],
    "evening": ["مساء", "مساءا", "مسا", "المسا", "المساء", "بالمسا", "عالمسا", "المغرب", "مغربا",
                "بعد المغرب", "العشا", "العشاء", "بالليل", "الليل", "ليلا", "بليل", "في الليل",
                "bel leil", "belleil", "billeil", "bel lail"],
}
_AR_PART_LOOKUP = _nd({w: p for p, ws in _AR_PART_WORDS.items() for w in ws})
_AR_SUFFIX_ONLY = {"ص": "morning", "م": "evening"}  # «١٠ ص», «٤ م» are only abbreviations after a number
# Greetings, not times: «صباح الخير», «مساء النور».
_GREETING = r"(?!\s+(?:الخير|النور|الفل|الورد|الياسمين|العسل|الخيرات))"
_AR_PART = r"(?P<part>" + _alt(list(_AR_PART_LOOKUP) + list(_AR_SUFFIX_ONLY)) + r")" + R + _GREETING
_AR_HOUR = r"(?:(?P<h>\d{1,2})(?::(?P<mm>[0-5]\d))?|(?P<hw>" + _alt(AR_WORD_TO_HOUR) + r"))"
_AR_MIN = (
    r"(?:\s*(?:و\s*(?P<half>نص|نصف)|و\s*(?P<quarter>ربع)|الا\s*(?P<qto>ربع)|و\s*(?P<third>ثلث)"
    r"|الا\s*(?P<tto>ثلث)|و\s*(?P<mn>[0-5]?\d)\s*(?:دقيقه|دقايق|د)?)" + R + r")?"
)
# «الساعة», Levantine «عالساعة» / «ع الساعة» ("at the hour"), Arabizi "el sa3a".
_AR_CUE = r"(?P<cue>(?:عال|ع\s*ال|علي\s+ال|ال|في\s+ال)?ساعه|(?:el\s*|al\s*)?sa3a)"


@_rule(
    L + r"(?:" + _AR_CUE + r"\s*|(?P<at>ع|علي)\s+)?" + _AR_HOUR + R + _AR_MIN
    + r"(?:\s*(?:في\s+|ب)?" + _AR_PART + r")?" + r"(?!\s*" + UNITS + R + r")"
)
def _ar_clock(m, ctx):
    if m.group("h"):
        hour = int(m.group("h"))
    else:
        hour = AR_WORD_TO_HOUR[regex.sub(r"\s+", " ", m.group("hw"))]
    part_word = regex.sub(r"\s+", " ", m.group("part") or "")
    part = _AR_PART_LOOKUP.get(part_word) or _AR_SUFFIX_ONLY.get(part_word)
    if not (m.group("cue") or m.group("at") or part):
        return None  # a bare number is not a time
    if m.group("at") and not m.group("h"):
        return None
    minute, given = 0, True
    if m.group("mm"):
        minute = int(m.group("mm"))
    elif m.group("half"):
        minute = 30
    elif m.group("quarter"):
        minute = 15
    elif m.group("third"):
        minute = 20
    elif m.group("qto") or m.group("tto"):
        hour, minute = hour - 1, (45 if m.group("qto") else 40)
    elif m.group("mn"):
        minute = int(m.group("mn"))
    else:
        given = False
    if part_word in _AR_SUFFIX_ONLY and hour > 12:
        return None  # «٢٠٢٦ م» is a year
    if not _valid_clock(hour, minute, None):
        return None
    return _piece(m, clock=(hour, minute, given, None), part=part)


def _valid_clock(hour: int, minute: int, ampm) -> bool:
    if ampm:
        return 1 <= hour <= 12 and 0 <= minute < 60
    return 0 <= hour <= 23 and 0 <= minute < 60


# --- parts of the day on their own

@_rule(
    LS + r"(?P<pre>in\s+the|during\s+the|this|early\s+in\s+the|late\s+in\s+the|at|around|about|by)?"
    r"\s*(?P<p>mornings?|afternoons?|evenings?|night|noon|midday|lunchtime|lunch\s+time)" + R
)
def _en_part(m, ctx):
    p = m.group("p").lower().rstrip("s")
    pre = (m.group("pre") or "").lower()
    if regex.search(r"(?:^|\s)good\s*$", m.string[: m.start()]):
        return None  # "good morning"
    if p in ("noon", "midday", "lunchtime") or p.startswith("lunch"):
        return _piece(m, part="noon")
    if p == "night":
        if pre in ("at", "this"):
            return _piece(m, part="evening", day=ctx.today if pre == "this" else None)
        return _piece(m, part="evening", strong=False)
    if pre == "this":
        return _piece(m, part=p, day=ctx.today)
    if pre in ("at", "around", "about", "by"):
        return None
    return _piece(m, part=p, strong=bool(pre))


# Alone, «الظهر» is also "the back" (a patient's back pain) and «المغرب» Morocco: weak.
_AR_WEAK_PARTS = {"الظهر", "الضهر", "ظهر", "ضهر", "الظهيره", "المغرب", "العشا", "العشاء", "الليل",
                  "عصر", "صباح", "مساء", "الفجر"}


@_rule(L + r"(?:في\s+)?" + r"(?P<w>" + _alt(_AR_PART_LOOKUP) + r")" + R + _GREETING)
def _ar_part(m, ctx):
    word = regex.sub(r"\s+", " ", m.group("w"))
    return _piece(m, part=_AR_PART_LOOKUP[word], strong=word not in _AR_WEAK_PARTS)


# ----------------------------------------------------------------------------- assembly

def _pieces(normalized: str, ctx: _Ctx) -> list[_Piece]:
    found: list[_Piece] = []
    for pattern, handler in _RECOGNISERS:
        for m in pattern.finditer(normalized, overlapped=True):
            if m.end() <= m.start():
                continue
            try:
                piece = handler(m, ctx)
            except (ValueError, KeyError, OverflowError, TypeError) as exc:
                log.debug("time rule %s failed on %r: %s", handler.__name__, m.group(0), exc)
                piece = None
            if piece is not None:
                found.append(_trim(piece, normalized))
    # Longest first, then leftmost; strong before weak at equal length.
    found.sort(key=lambda p: (-(p.end - p.start), not p.strong, p.start))
    chosen: list[_Piece] = []
    for p in found:
        if all(p.end <= c.start or p.start >= c.end for c in chosen):
            chosen.append(p)
    return sorted(chosen, key=lambda p: p.start)


def _trim(p: _Piece, text: str) -> _Piece:
    start, end = p.start, p.end
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return replace(p, start=start, end=end)


def _can_join(group: list[_Piece], p: _Piece) -> bool:
    if p.instant or any(g.instant for g in group):
        return False
    has = lambda attr: any(getattr(g, attr) is not None for g in group)  # noqa: E731
    if p.clock and has("clock"):
        return False
    if p.part and has("part"):
        return False
    if p.day and has("day"):
        return False
    if p.weekday is not None and has("weekday"):
        return False
    if p.next_week and any(g.next_week for g in group):
        return False
    return True


def _groups(pieces: list[_Piece], normalized: str) -> Iterator[list[_Piece]]:
    group: list[_Piece] = []
    for p in pieces:
        if group:
            gap = normalized[group[-1].end : p.start]
            if len(gap) <= 16 and _CONNECTOR.match(gap) and _can_join(group, p):
                group.append(p)
                continue
            yield group
        group = [p]
    if group:
        yield group


def _resolve(group: list[_Piece], ctx: _Ctx) -> Optional[tuple[datetime, str, Optional[str]]]:
    for p in group:
        if p.instant:
            return p.instant[0], p.instant[1], None
    day = next((p.day for p in group if p.day), None)
    weekday = next((p.weekday for p in group if p.weekday is not None), None)
    this_week = any(p.this_week for p in group)
    next_week = any(p.next_week for p in group)
    clock = next((p.clock for p in group if p.clock), None)
    part = next((p.part for p in group if p.part), None)

    if day is None and weekday is not None:
        if next_week:
            day = _next_week_start(ctx.today) + timedelta(days=(weekday - WEEK_START) % 7)
        else:
            ahead = (weekday - ctx.today.weekday()) % 7
            if ahead == 0 and not this_week:
                ahead = 7
            day = ctx.today + timedelta(days=ahead)
    elif day is None and next_week:
        day = _next_week_start(ctx.today)

    part_of_day = part if part in PART_ENDS else None
    if clock is None and part == "noon":
        clock = (12, 0, False, None)
    if clock is None:
        if day is None:
            if part is None:
                return None
            day = ctx.today if ctx.now.hour < PART_ENDS[part] else ctx.today + timedelta(days=1)
        return datetime.combine(day, time(0, 0), ctx.tz), "day", part_of_day

    hour, minute, minute_given, ampm = clock
    extra_day = 0
    if ampm == "pm" and hour < 12:
        hour += 12
    elif ampm == "am" and hour == 12:
        hour = 0
    elif ampm is None and part in ("afternoon", "evening") and 1 <= hour <= 11:
        hour += 12
    elif ampm is None and part == "evening" and hour == 12:
        hour, extra_day = 0, 1  # «١٢ بالليل»: midnight
    elif ampm is None and part == "noon" and 1 <= hour <= 6:
        hour += 12  # «٢ الضهر» is early afternoon
    elif ampm is None and part is None and 1 <= hour <= 7:
        hour += 12  # clinic hours: "at 4" is 16:00
    if part is not None:
        # With a clock time the part only disambiguated the hour; report where the hour falls
        # («٤ المسا» is 16:00, an afternoon slot).
        part_of_day = _part_of_hour(hour, minute)
    grain = "minute" if minute_given else "hour"
    if day is None:
        value = datetime.combine(ctx.today, time(hour, minute), ctx.tz) + timedelta(days=extra_day)
        if value < ctx.now:
            value += timedelta(days=1)
        return value, grain, part_of_day
    value = datetime.combine(day, time(hour, minute), ctx.tz) + timedelta(days=extra_day)
    return value, grain, part_of_day


def _part_of_hour(hour: int, minute: int) -> Optional[str]:
    if (hour, minute) == (12, 0):
        return None  # noon
    if hour < 5:
        return "evening"  # late night («١٢ بالليل») belongs to the evening before
    if hour < 12:
        return "morning"
    return "afternoon" if hour < 17 else "evening"


def _next_week_start(today: date) -> date:
    return today + timedelta(days=7 - (today.weekday() - WEEK_START) % 7)


def _add_months(d: date, n: int) -> date:
    month_index = d.month - 1 + n
    year, month = d.year + month_index // 12, month_index % 12 + 1
    for day in (d.day, 30, 29, 28):
        try:
            return date(year, month, day)
        except ValueError:
            continue
    raise ValueError("unreachable")


def _trunc(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


# ----------------------------------------------------------------------------- public

def extract_times(text: str, now: Optional[datetime] = None, tz: str = DEFAULT_TZ) -> list[TimeMatch]:
    """All time expressions in `text`, resolved against `now` in the hospital zone `tz`."""
    try:
        return _extract(text, now, tz)
    except Exception:  # a reader of free text must never take the conversation down
        log.exception("time extraction failed for %r", text)
        return []


def _extract(text: str, now: Optional[datetime], tz: str) -> list[TimeMatch]:
    if not isinstance(text, str) or not text.strip():
        return []
    zone = ZoneInfo(tz)
    if now is None:
        now = datetime.now(zone)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=zone)
    ctx = _Ctx(now.astimezone(zone), zone)
    normalized, index_map = normalize_with_offsets(text)
    results: list[TimeMatch] = []
    for group in _groups(_pieces(normalized, ctx), normalized):
        if not any(p.strong for p in group):
            continue
        resolved = _resolve(group, ctx)
        if resolved is None:
            continue
        value, grain, part_of_day = resolved
        start, end = to_original_span(index_map, group[0].start, group[-1].end)
        results.append(
            TimeMatch(start, end, text[start:end], value.isoformat(), grain, part_of_day)
        )
    return results
