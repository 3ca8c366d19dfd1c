"""Consent keywords are whole messages only, in English and Arabic."""
import pytest

from bot.consent import keyword


@pytest.mark.parametrize("said, kind", [
    ("STOP", "opt_out"), ("stop.", "opt_out"), (" Unsubscribe ", "opt_out"), ("CANCEL", "opt_out"),
    ("إيقاف", "opt_out"), ("ايقاف", "opt_out"), ("توقف", "opt_out"), ("الغاء الاشتراك", "opt_out"),
    ("START", "opt_in"), ("unstop", "opt_in"), ("YES", "opt_in"),
    ("HELP", "help"), ("info", "help"), ("مساعدة", "help"),
    ("cancel my appointment", None), ("please stop the reminders for my mother", None), ("help me book", None),
    ("١", None), ("", None),
])
def test_keywords(said, kind):
    assert keyword(said) == kind
