"""Definitions and answers without a database: the shipped surveys are valid and branch as meant,
broken definitions are refused with readable problems, and patients' answers are read however they
write them — and not read where they are unclear."""
from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bot.formatting import arabic_digits
from surveys.definitions import DefinitionError, load_dir, parse, parse_yaml
from surveys.parsing import is_skip, is_stop, parse as read
from surveys.render import question_message

SURVEYS = {d.code: d for d in load_dir()}
VISIT, CHAT = SURVEYS["post-visit-nps"], SURVEYS["post-chat-csat"]
RECOMMEND, WENT_WRONG, ON_TIME = (VISIT.question(q) for q in ("recommend", "went_wrong", "on_time"))
SATISFACTION = CHAT.question("satisfaction")


def _answer(question, text):
    found = read(question, text)
    return None if found is None else found.value


def test_the_shipped_surveys_branch_as_meant():
    assert set(SURVEYS) == {"post-visit-nps", "post-chat-csat"}
    path = lambda d, answers: [q.id for q in _walk(d, answers)]  # noqa: E731
    assert path(VISIT, [6, "cost", "…"]) == ["recommend", "went_wrong", "details"]
    assert path(VISIT, [7, "yes", "…"]) == ["recommend", "on_time", "comment"]
    assert path(VISIT, [None, None, None]) == ["recommend", "on_time", "comment"]  # skipped: the default branch
    assert path(CHAT, [2, "…"]) == ["satisfaction", "what_wrong"]
    assert path(CHAT, [3, "no", "…"]) == ["satisfaction", "resolved", "what_missing"]
    assert path(CHAT, [5, "yes"]) == ["satisfaction", "resolved"]


def _walk(definition, answers):
    question, asked = definition.questions[0], []
    for answer in answers:
        if question is None:
            break
        asked.append(question)
        question = definition.next_after(question.id, answer)
    return asked


@pytest.mark.parametrize("change, problem", [
    (lambda d: d["questions"][0].update(next=[{"when": {"at_most": 6}, "goto": "recommend"}]), "must name a later"),
    (lambda d: d["questions"][0].update(next=[{"when": {"at_most": 11}, "goto": "details"}]), "outside 0-10"),
    (lambda d: d["questions"][0].update(next=[{"when": {"is": "yes"}, "goto": "details"}]), "is/in must name"),
    (lambda d: d["questions"][0].update(next=[{"goto": "details"}, {"when": {"at_most": 3}, "goto": "details"}]),
     "only the last rule"),
    (lambda d: d["questions"][1].update(options=d["questions"][1]["options"][:1]), "2 to 9 options"),
    (lambda d: d["questions"][3].update(options=[{"value": "a", "text": {"en": "A", "ar": "أ"}}]),
     "only choice questions"),
    (lambda d: d["questions"][2].update(id="recommend"), "ids must differ"),
    (lambda d: d["title"].pop("ar"), "title.ar"),
    (lambda d: d["intro"].update(en="Hello {patient}"), "unknown placeholder {patient}"),
    (lambda d: d.update(colour="teal"), "colour"),
])
def test_a_broken_definition_is_refused_with_a_readable_problem(change, problem):
    data = VISIT.as_json()
    change(data)
    with pytest.raises(DefinitionError) as refused:
        parse(data)
    assert any(problem in p for p in refused.value.problems), refused.value.problems


def test_a_definition_survives_its_own_yaml():
    for definition in SURVEYS.values():
        again = parse_yaml(definition.to_yaml())
        assert again == definition and again.fingerprint() == definition.fingerprint()
    assert "أ" in yaml.safe_load(VISIT.to_yaml())["questions"][0]["text"]["ar"]  # Arabic kept readable


@pytest.mark.parametrize("said, score", [
    ("9", 9), ("٩", 9), ("nine", 9), ("Nine!", 9), ("تسعة", 9), ("تسعه", 9), ("9/10", 9), ("٩/١٠", 9),
    ("10 out of 10", 10), ("I'd give you a nine out of ten", 9), ("٨ من ١٠", 8), ("عشرة من عشرة", 10),
    ("⭐⭐⭐⭐", 4), ("⭐⭐⭐⭐⭐⭐⭐", 7), ("7 ⭐⭐⭐⭐⭐⭐⭐", 7), ("0", 0), ("صفر", 0), ("۸", 8), ("a solid 8", 8),
])
def test_scores_are_read_however_they_are_written(said, score):
    assert _answer(RECOMMEND, said) == score


@pytest.mark.parametrize("said", [
    "11", "-", "8 or 9", "4/5", "7 ⭐⭐", "no one helped me", "I waited 2 hours to see the doctor last time",
    "great", "",
])
def test_unclear_scores_are_asked_again(said):
    assert _answer(RECOMMEND, said) is None


@pytest.mark.parametrize("said, score", [
    ("4", 4), ("⭐⭐⭐⭐⭐", 5), ("very satisfied", 5), ("Satisfied", 4), ("راضٍ جدًا", 5), ("غير راضٍ", 2),
    ("محايد", 3), ("ممتاز", 5), ("٢", 2), ("5/5", 5),
])
def test_satisfaction_by_number_stars_or_words(said, score):
    assert _answer(SATISFACTION, said) == score


@pytest.mark.parametrize("said", ["0", "6", "⭐⭐⭐⭐⭐⭐", "9/10"])
def test_satisfaction_outside_one_to_five_is_asked_again(said):
    assert _answer(SATISFACTION, said) is None


@pytest.mark.parametrize("said, value", [
    ("yes", "yes"), ("Yes!", "yes"), ("yep", "yes"), ("نعم", "yes"), ("ايوه", "yes"), ("إي", "yes"), ("1", "yes"),
    ("no", "no"), ("No, I waited an hour", "no"), ("لا", "no"), ("لأ", "no"), ("2", "no"), ("مو بالوقت", "no"),
])
def test_yes_and_no_in_both_languages(said, value):
    assert _answer(ON_TIME, said) == value


@pytest.mark.parametrize("said, value", [
    ("1", "waiting"), ("٢", "doctor"), ("the second", "doctor"), ("الثالث", "staff"), ("Waiting time", "waiting"),
    ("The wait was too long", "waiting"), ("الانتظار", "waiting"), ("التأمين", "cost"), ("شيء آخر", "other"),
    ("front desk", "staff"),
])
def test_a_choice_by_number_ordinal_title_or_alias(said, value):
    assert _answer(WENT_WRONG, said) == value


@pytest.mark.parametrize("said", ["7", "doctor and staff", "hmm", "0"])
def test_an_unclear_choice_is_asked_again(said):
    assert _answer(WENT_WRONG, said) is None


@given(st.integers(min_value=0, max_value=10), st.booleans())
def test_every_score_in_either_script(score, arabic):
    written = arabic_digits(str(score)) if arabic else str(score)
    assert _answer(RECOMMEND, written) == score
    assert _answer(RECOMMEND, f"{written}/{arabic_digits('10') if arabic else '10'}") == score


@given(st.integers(min_value=1, max_value=5))
def test_stars(count):
    assert _answer(SATISFACTION, "⭐" * count) == count
    assert _answer(RECOMMEND, "🌟" * count) == count


def test_stop_and_skip_but_not_the_answers():
    for said in ("stop survey", "Stop the survey.", "STOP", "إيقاف الاستبيان", "خلاص", "بس", "كفاية", "ما ابغى"):
        assert is_stop(said), said
    for said in ("no", "لا", "stop the noise in the waiting room", "9"):
        assert not is_stop(said), said
    assert is_skip("skip") and is_skip("تخطي") and not is_skip("no")


def test_questions_as_the_patient_reads_them():
    context = {"hospital": {"en": "Al Noor", "ar": "النور"}}
    text, buttons = question_message(VISIT, RECOMMEND, "ar", context, opening=True)
    assert text.startswith("شكرًا لزيارتك النور.") and "من ٠ (غير محتمل إطلاقًا) إلى ١٠" in text
    assert buttons is None  # a 0-10 scale has no numbered buttons: "2" would mean the score 1
    text, buttons = question_message(CHAT, SATISFACTION, "en", context)
    assert [b["payload"] for b in buttons] == ["1", "2", "3", "4", "5"]
    text, buttons = question_message(VISIT, WENT_WRONG, "en", context, invalid=True, before=("Sorry.",))
    assert text.startswith("Sorry.") and "number of one of the options" in text and len(buttons) == 5
    text, _ = question_message(VISIT, VISIT.question("comment"), "en", {})
    assert text.startswith("Thank you! Is there anything")


def test_the_branching_as_fhir_enable_when():
    from surveys.fhir import enable_when

    shipped = enable_when(CHAT)
    assert shipped["resolved"] == ("all", [{"question": "satisfaction", "operator": ">", "answerInteger": 2}])
    assert shipped["what_missing"] == ("all", [  # asked only when both earlier answers lead there
        {"question": "satisfaction", "operator": ">", "answerInteger": 2},
        {"question": "resolved", "operator": "=", "answerBoolean": False}])
    assert "satisfaction" not in shipped  # the first question is always asked

    custom = parse_yaml("""
code: pharmacy
title: {en: Pharmacy, ar: الصيدلية}
thanks: {en: Thanks, ar: شكرًا}
questions:
  - id: why
    type: choice
    text: {en: "Why not?", ar: "لماذا؟"}
    options:
      - {value: price, text: {en: Price, ar: السعر}}
      - {value: stock, text: {en: Out of stock, ar: غير متوفر}}
      - {value: other, text: {en: Other, ar: غير ذلك}}
    next:
      - when: {in: [price, stock]}
        goto: which
      - when: {skipped: true}
        goto: end
      - goto: else
  - id: which
    type: text
    text: {en: "Which medicine?", ar: "أي دواء؟"}
  - id: else
    type: yes_no
    text: {en: "Anything else?", ar: "شيء آخر؟"}
""")
    rules = enable_when(custom)
    assert rules["which"] == ("any", [{"question": "why", "operator": "=", "answerCoding": {"code": "price"}},
                                      {"question": "why", "operator": "=", "answerCoding": {"code": "stock"}}])
    assert "else" not in rules  # reached from "which" and from "why" alike: always enabled
