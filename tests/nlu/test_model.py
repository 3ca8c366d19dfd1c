"""The trained model through the `sila` command: the parse contract, and held-out accuracy per
language (the figures are printed at the end of the test run)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bot.settings import ROOT

pytestmark = pytest.mark.rasa
REPORT: dict = {}


def sila(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "bot.cli", *args], input=stdin, capture_output=True,
                            text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_nlu_parse_writes_one_json_object_per_line():
    lines = ["I want to book with Dr. Khalid tomorrow at 10am",
             "ابغى موعد عند دكتور عيون بكرة الساعة ١٠ الصبح",
             "",  # blank lines are skipped, not parsed
             "وين موقعكم؟",
             "3ayez a7gez maw3ed"]
    out = [json.loads(line) for line in sila("nlu", "parse", stdin="\n".join(lines) + "\n").splitlines()]
    assert [o["text"] for o in out] == [l for l in lines if l]
    for item in out:
        assert set(item) == {"text", "intent", "entities", "language"}
        assert set(item["intent"]) == {"name", "confidence"} and 0 <= item["intent"]["confidence"] <= 1
        for entity in item["entities"]:
            assert set(entity) == {"entity", "value", "start", "end"}
            assert item["text"][entity["start"]:entity["end"]]
    english, arabic, where, arabizi = out
    assert english["intent"]["name"] == "book_appointment" and english["language"] == "en"
    assert {e["entity"]: e["value"] for e in english["entities"] if e["entity"] != "time"} == \
        {"practitioner": "dr-khalid-alharbi"}
    time = next(e for e in english["entities"] if e["entity"] == "time")
    assert time["value"].endswith("T10:00:00+03:00") and english["text"][time["start"]:time["end"]] == "tomorrow at 10am"
    assert arabic["intent"]["name"] == "book_appointment" and arabic["language"] == "ar"
    assert {"department": "ophthalmology"}.items() <= {e["entity"]: e["value"] for e in arabic["entities"]}.items()
    assert next(e for e in arabic["entities"] if e["entity"] == "time")["value"].endswith("T10:00:00+03:00")
    assert where["intent"]["name"] == "ask_location"
    assert arabizi["language"] == "ar" and arabizi["intent"]["name"] == "book_appointment"


def test_held_out_accuracy_per_language():
    report = json.loads(sila("nlu", "test", "--json").splitlines()[-1])
    REPORT.update(report)
    for language in ("en", "ar"):
        assert report[language]["n"] >= 200
        assert report[language]["accuracy"] >= 0.90, (language, report[language]["confusions"])
    for language in ("en", "ar"):
        assert report["time_recall"][language] >= 0.85
