"""Red-flag symptoms are emergencies whatever the classifier says; ordinary requests are not."""
import pytest

from bot.triage import is_emergency


@pytest.mark.parametrize("text", [
    "the bleeding won't stop, heavy bleeding", "My father has CHEST PAIN", "she passed out in the kitchen",
    "i want to end my life", "عندي ألم في صدري", "الدم نزيف ما وقف", "ابوي اغمى عليه", "ما اقدر اتنفس",
    "مش قادر اتنفس خالص", "أمي عندها جلطة",
])
def test_red_flags(text):
    assert is_emergency(text)


@pytest.mark.parametrize("text", [
    "book a cardiologist", "ابغى احجز موعد عند دكتور قلب", "stop", "what are your opening hours", "شكرا",
])
def test_ordinary_requests(text):
    assert not is_emergency(text)
