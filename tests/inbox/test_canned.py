"""Canned replies: every one in both languages, variables filled, a missing value left empty."""
from __future__ import annotations

from types import SimpleNamespace

from inbox.views import canned_replies, fill, load_canned

HOSPITAL = {"name_en": "Al Noor Specialist Hospital", "name_ar": "مستشفى النور التخصصي", "phone": "+966112345678",
            "address_en": "King Fahd Road", "address_ar": "طريق الملك فهد", "maps_url": "https://maps.example/x"}
AGENT = SimpleNamespace(username="huda", display_name="Huda", language="en")


def patient(**names):
    return SimpleNamespace(**{"given_name_en": None, "given_name_ar": None, **names})


def test_every_canned_reply_has_both_languages_and_titles():
    canned = load_canned()
    assert len(canned) >= 5
    for key, entry in canned.items():
        assert entry["en"].strip() and entry["ar"].strip(), key
        assert set(entry["title"]) == {"en", "ar"}, key


def test_variables_are_filled_in_the_patients_language():
    replies = {r["key"]: r for r in canned_replies("en", patient(given_name_en="Noura", given_name_ar="نورة"),
                                                   AGENT, HOSPITAL)}
    assert replies["greeting"]["text"] == ("Hello Noura, this is Huda from Al Noor Specialist Hospital. "
                                           "How can I help you today?")
    assert replies["greeting"]["title"] == "Greeting"  # titles follow the agent's language
    assert "King Fahd Road" in replies["directions"]["text"]
    arabic = {r["key"]: r["text"] for r in canned_replies("ar", patient(given_name_ar="نورة"), AGENT, HOSPITAL)}
    assert "طريق الملك فهد" in arabic["directions"] and "{" not in "".join(arabic.values())


def test_missing_values_are_left_empty():
    greeting = {r["key"]: r["text"] for r in canned_replies("en", patient(), AGENT, {})}["greeting"]
    assert greeting == "Hello, this is Huda from. How can I help you today?"
    assert fill("Dear {first_name} {unknown}, welcome", {"first_name": "Ali"}) == "Dear Ali, welcome"
    assert fill("broken {", {}) == "broken {"
