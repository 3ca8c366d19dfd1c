"""Training data edited from the console lands in nlu_data/ as plain Rasa YAML: untouched parts
byte for byte, annotations as Rasa reads them, concurrent saves both kept, and warnings for what
would mislead the model or its evaluation."""
from __future__ import annotations

import difflib
import shutil
import threading

import pytest

from bot.settings import ROOT
from nlu_admin.data import Conflict, NluData, warnings
from nlu_admin.yamlfile import AnnotationError, NluFile, parse_example

REPO_FILES = ["nlu_data/nlu/ar.yml", "nlu_data/nlu/en.yml", "nlu_data/test/ar.yml", "nlu_data/test/en.yml"]


@pytest.fixture
def data(tmp_path) -> NluData:
    shutil.copytree(ROOT / "nlu_data", tmp_path / "nlu_data")
    return NluData(tmp_path / "nlu_data", ROOT / "domain.yml")


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


@pytest.mark.parametrize("path", REPO_FILES)
def test_the_repository_files_are_written_back_unchanged(path):
    text = (ROOT / path).read_text(encoding="utf-8")
    parsed = NluFile.parse(text)
    assert parsed.dumps() == text
    for block in parsed.blocks:  # regenerated in the files' own shape, still the same bytes
        block.raw = None
    assert parsed.dumps() == text


def test_adding_an_example_changes_one_line_of_the_file(data):
    path = data.training_file("ar")
    before = path.read_text(encoding="utf-8")
    data.add("ar", "ask_location", "ممكن ترسلون لي الموقع على الخريطة")
    after = path.read_text(encoding="utf-8")
    assert changed_lines(before, after) == ["+    - ممكن ترسلون لي الموقع على الخريطة"]
    assert after.startswith(before[:before.index("nlu:")])  # the header comments are kept


def test_editing_moving_and_deleting_examples(data):
    path = data.training_file("en")
    before = path.read_text(encoding="utf-8")
    original = data.load().examples("en", "ask_hours")[0]
    data.edit("en", "ask_hours", original, "are you open [tomorrow](time)")
    assert "are you open [tomorrow](time)" in data.load().examples("en", "ask_hours")
    data.edit("en", "ask_hours", "are you open [tomorrow](time)", "where do I park", new_intent="ask_location")
    snapshot = data.load()
    assert "where do I park" in snapshot.examples("en", "ask_location")
    assert "are you open [tomorrow](time)" not in snapshot.examples("en", "ask_hours")
    data.delete("en", "ask_location", "where do I park")
    assert changed_lines(before, path.read_text(encoding="utf-8")) == [f"-    - {original}"]


def test_an_edit_of_an_example_someone_else_changed_is_refused(data):
    original = data.load().examples("en", "greet")[0]
    data.edit("en", "greet", original, "hello there friend")
    with pytest.raises(Conflict):
        data.edit("en", "greet", original, "hi")
    with pytest.raises(Conflict):
        data.delete("en", "greet", original)
    with pytest.raises(Conflict):
        data.add("en", "greet", "hello there friend")


def test_annotations_are_kept_as_rasa_reads_them(data):
    data.add("en", "book_appointment", "book me with [Dr Khalid](practitioner) [tomorrow at 10am](time)")
    raw = data.load().examples("en", "book_appointment")[-1]
    plain, entities = parse_example(raw)
    assert plain == "book me with Dr Khalid tomorrow at 10am"
    assert [(plain[e.start:e.end], e.entity) for e in entities] == [("Dr Khalid", "practitioner"),
                                                                    ("tomorrow at 10am", "time")]


@pytest.mark.parametrize("example, reason", [
    ("book a [slot](doctor_name)", "unknown entity"),
    ("see you [soon]", "square brackets"),
    ("   ", "empty"),
])
def test_examples_rasa_would_misread_are_refused(data, example, reason):
    with pytest.raises(AnnotationError, match=reason):
        data.add("en", "greet", example)


def test_only_intents_of_the_domain_can_be_taught(data):
    with pytest.raises(AnnotationError, match="not an intent"):
        data.add("en", "order_pizza", "a large pizza please")


def test_saves_from_two_workers_at_once_are_both_kept(data):
    errors = []

    def add(i: int) -> None:
        try:
            data.add("ar" if i % 2 else "en", "thank", f"thanks a lot number {i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    snapshot = data.load()
    kept = snapshot.examples("ar", "thank") + snapshot.examples("en", "thank")
    assert {f"thanks a lot number {i}" for i in range(16)} <= set(kept)


def test_warnings_name_duplicates_thin_intents_and_held_out_copies(data):
    assert warnings(data.load(), 10) == []  # the repository's data is clean
    data.add("ar", "ask_hours", "وين موقعكم؟")  # also an ask_location example, spelt differently
    held_out = data.load().held_out["en"].intents()["greet"].examples[0]
    data.add("en", "greet", held_out)
    for example in data.load().examples("en", "opt_out")[3:]:
        data.delete("en", "opt_out", example)
    found = {(w.kind, w.intent, w.language) for w in warnings(data.load(), 10)}
    assert ("duplicate", "ask_hours", "ar") in found and ("duplicate", "ask_location", "ar") in found
    assert ("too_few", "opt_out", "en") in found and ("too_few", "opt_out", "ar") not in found
    assert ("held_out", "greet", "en") in found
    thin = next(w for w in warnings(data.load(), 10) if w.kind == "too_few")
    assert thin.count == 3
