"""Survey definitions: questions in Arabic and English, their types and their branching.

A definition is YAML (surveys/definitions/*.yml, or edited in the console) validated here:

    code: post-visit-nps
    title: {en: …, ar: …}
    intro: {en: …, ar: …}            # said before the first question (optional)
    thanks: {en: …, ar: …}           # after the last one
    thanks_alert: {en: …, ar: …}     # instead, when the answers raised an alert (optional)
    expiry_days: 3                   # optional; else SILA_SURVEY_EXPIRY_DAYS
    alert: {nps_at_most: 6}          # or csat_at_most: 2; which answers alert patient relations
    whatsapp: {content_sid: {en: HX…, ar: HX…}}   # approved opening template (optional)
    questions:
      - id: recommend
        type: nps                    # nps (0-10) | csat (1-5) | yes_no | choice | text
        text: {en: …, ar: …}
        next:                        # first matching rule wins; none: the next question
          - when: {at_most: 6}       # at_most / at_least (scores), is / in (yes_no, choice), skipped
            goto: went_wrong
          - goto: on_time            # a rule without `when` is the default; `end` ends the survey
      - id: went_wrong
        type: choice
        options:
          - {value: waiting, text: {en: Waiting time, ar: وقت الانتظار}, aliases: {en: [wait], ar: [انتظار]}}

Branches only go forward (a later question, or `end`), so every survey ends. Texts may name
{hospital}, {department}, {doctor} and {first_name}, filled when the survey is sent.
"""
from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

KINDS = ("nps", "csat", "yes_no", "choice", "text")
SCALES = {"nps": (0, 10), "csat": (1, 5)}
END = "end"
PLACEHOLDERS = frozenset({"hospital", "department", "doctor", "first_name"})
DEFINITIONS_DIR = Path(__file__).with_name("definitions")
MAX_OPTIONS = 9  # a numbered reply is one digit, on every channel


class DefinitionError(ValueError):
    """A definition that cannot be used; `problems` are readable lines for the editor."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Bilingual(_Strict):
    en: str = Field(min_length=1, max_length=1000)
    ar: str = Field(min_length=1, max_length=1000)

    @field_validator("en", "ar")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"unbalanced braces ({exc})") from None
        unknown = names - PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}; use {sorted(PLACEHOLDERS)}")
        return value

    def __call__(self, language: str | None) -> str:
        return self.ar if language == "ar" else self.en


class Condition(_Strict):
    at_most: int | None = None
    at_least: int | None = None
    is_: str | None = Field(None, alias="is")
    in_: list[str] | None = Field(None, alias="in")
    skipped: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> "Condition":
        if sum(v is not None for v in (self.at_most, self.at_least, self.is_, self.in_, self.skipped)) != 1:
            raise ValueError("a condition has exactly one of at_most, at_least, is, in, skipped")
        return self

    def matches(self, value) -> bool:
        """Whether an answer (None: skipped) meets the condition."""
        if self.skipped is not None:
            return (value is None) == self.skipped
        if value is None:
            return False
        if self.at_most is not None:
            return int(value) <= self.at_most
        if self.at_least is not None:
            return int(value) >= self.at_least
        if self.is_ is not None:
            return str(value) == self.is_
        return str(value) in self.in_


class Rule(_Strict):
    when: Condition | None = None
    goto: str


class Option(_Strict):
    value: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    text: Bilingual
    aliases: dict[Literal["en", "ar"], list[str]] = Field(default_factory=dict)


class Question(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    type: Literal["nps", "csat", "yes_no", "choice", "text"]
    text: Bilingual
    options: list[Option] = Field(default_factory=list)
    next: str | list[Rule] | None = None

    @model_validator(mode="after")
    def _options(self) -> "Question":
        if self.type == "choice":
            if not 2 <= len(self.options) <= MAX_OPTIONS:
                raise ValueError(f"a choice question has 2 to {MAX_OPTIONS} options")
            if len({o.value for o in self.options}) != len(self.options):
                raise ValueError("option values must differ")
        elif self.options:
            raise ValueError("only choice questions have options")
        return self

    def answer_values(self) -> set[str] | None:
        """The values an is/in condition may name (None: conditions on numbers instead)."""
        if self.type == "yes_no":
            return {"yes", "no"}
        if self.type == "choice":
            return {o.value for o in self.options}
        return None


class AlertRule(_Strict):
    nps_at_most: int | None = Field(6, ge=0, le=10)
    csat_at_most: int | None = Field(None, ge=1, le=5)


class WhatsAppTemplate(_Strict):
    """An approved template that opens the survey outside WhatsApp's 24-hour window."""

    content_sid: dict[Literal["en", "ar"], str]
    variables: dict[str, str] = Field(default_factory=dict)  # {"1": "{first_name}"}


class Definition(_Strict):
    code: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,48}$")
    title: Bilingual
    intro: Bilingual | None = None
    thanks: Bilingual
    thanks_alert: Bilingual | None = None
    expiry_days: float | None = Field(None, gt=0, le=90)
    alert: AlertRule = Field(default_factory=AlertRule)
    whatsapp: WhatsAppTemplate | None = None
    questions: list[Question] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _branches(self) -> "Definition":
        ids = [q.id for q in self.questions]
        if len(set(ids)) != len(ids) or END in ids:
            raise ValueError(f"question ids must differ and not be {END!r}")
        position = {qid: i for i, qid in enumerate(ids)}
        for i, question in enumerate(self.questions):
            rules = [Rule(goto=question.next)] if isinstance(question.next, str) else question.next or []
            for n, rule in enumerate(rules):
                if rule.goto != END and position.get(rule.goto, -1) <= i:
                    raise ValueError(f"{question.id}: goto {rule.goto!r} must name a later question or {END!r}")
                if rule.when is None and n != len(rules) - 1:
                    raise ValueError(f"{question.id}: only the last rule may go without `when`")
                if rule.when is not None:
                    _check_condition(question, rule.when)
        return self

    def question(self, question_id: str) -> Question:
        return next(q for q in self.questions if q.id == question_id)

    def next_after(self, question_id: str, value) -> Question | None:
        """The question that follows an answer (None: a skipped question), or None at the end."""
        index = next(i for i, q in enumerate(self.questions) if q.id == question_id)
        question = self.questions[index]
        rules = [Rule(goto=question.next)] if isinstance(question.next, str) else question.next or []
        target = next((r.goto for r in rules if r.when is None or r.when.matches(value)), None)
        if target is None:
            return self.questions[index + 1] if index + 1 < len(self.questions) else None
        return None if target == END else self.question(target)

    def first_of(self, kind: str) -> Question | None:
        return next((q for q in self.questions if q.type == kind), None)

    def as_json(self) -> dict:
        # What was written, and only that: an explicit null (no NPS alert) must survive a round trip.
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.as_json(), allow_unicode=True, sort_keys=False, width=100)


def _check_condition(question: Question, condition: Condition) -> None:
    if condition.at_most is not None or condition.at_least is not None:
        if question.type not in SCALES:
            raise ValueError(f"{question.id}: at_most/at_least only apply to nps and csat questions")
        low, high = SCALES[question.type]
        bound = condition.at_most if condition.at_most is not None else condition.at_least
        if not low <= bound <= high:
            raise ValueError(f"{question.id}: {bound} is outside {low}-{high}")
    elif condition.is_ is not None or condition.in_ is not None:
        allowed = question.answer_values()
        named = {condition.is_} if condition.is_ is not None else set(condition.in_)
        if allowed is None or not named <= allowed:
            raise ValueError(f"{question.id}: is/in must name answers of the question ({sorted(allowed or [])})")


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        out.append(f"{where}: {error['msg'].removeprefix('Value error, ')}" if where else
                   error["msg"].removeprefix("Value error, "))
    return out


def parse(data: dict) -> Definition:
    """A definition from its JSON/YAML data; DefinitionError with readable problems."""
    if not isinstance(data, dict):
        raise DefinitionError(["a survey definition is a mapping (code, title, questions…)"])
    try:
        return Definition.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(_problems(exc)) from None


def parse_yaml(text: str) -> Definition:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DefinitionError([f"not valid YAML: {exc}"]) from None
    return parse(data)


def load_dir(path: Path = DEFINITIONS_DIR) -> list[Definition]:
    """Every definition in a folder of YAML files; a broken file stops the start (it is shipped)."""
    found = []
    for file in sorted(path.glob("*.yml")):
        try:
            found.append(parse_yaml(file.read_text(encoding="utf-8")))
        except DefinitionError as exc:
            raise DefinitionError([f"{file.name}: {p}" for p in exc.problems]) from None
    return found
