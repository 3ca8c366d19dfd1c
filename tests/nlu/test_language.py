import pytest

from bot.nlu.language import detect


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I'd like to book an appointment", "en"),
        ("ابي موعد بكرة", "ar"),
        ("عايز احجز ميعاد", "ar"),
        ("بدي موعد عند دكتور القلب", "ar"),
        ("ابي موعد مع Dr Khalid", "ar"),  # English name inside Arabic
        ("can I see د. خالد tomorrow morning please", "en"),
        ("mar7aba", "ar"),
        ("ana 3ayez a7ges mow3ed bukra", "ar"),
        ("shukran", "ar"),
        ("ok inshallah", "ar"),
        ("ba7ges 3and el doktor", "ar"),
        ("see you at 3pm on the 2nd", "en"),
        ("book me 2moro at 10am", "en"),
        ("Covid19 test results", "en"),
        ("Hello", "en"),
    ],
)
def test_detect(text, expected):
    assert detect(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "123", "١٠:٣٠", "😀👍", "?!", "+966 50 123 4567"])
@pytest.mark.parametrize("default", ["ar", "en"])
def test_no_letters_gives_the_default(text, default):
    assert detect(text, default=default) == default


def test_unknown_default_falls_back_to_english():
    assert detect("123", default="fr") == "en"
