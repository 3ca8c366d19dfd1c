import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bot.nlu.directory import Directory, DirectoryMatch, DirectoryUnavailable, sync_url

HOSPITAL = Path(__file__).resolve().parents[2] / "crm_store" / "demo" / "hospital.yml"


@pytest.fixture(scope="module")
def directory():
    return Directory.from_yaml(HOSPITAL)


def found(directory, text):
    return [(m.kind, m.code, m.text) for m in directory.find(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I need a heart doctor", [("department", "cardiology", "heart doctor")]),
        ("ENT clinic please", [("department", "ent", "ENT")]),
        ("Ear, Nose and Throat", [("department", "ent", "Ear, Nose and Throat")]),
        ("ابي موعد بالعيون", [("department", "ophthalmology", "بالعيون")]),
        ("موعد عيون", [("department", "ophthalmology", "عيون")]),
        ("للقلب", [("department", "cardiology", "للقلب")]),
        ("فيني روح عالعيون؟", [("department", "ophthalmology", "عالعيون")]),
        ("ابغى دكتور اسنان", [("department", "dental", "دكتور اسنان")]),
        ("عيادة الأنف والأذن والحنجرة", [("department", "ent", "الأنف والأذن والحنجرة")]),
        ("book with Dr. Khalid Al-Harbi", [("practitioner", "dr-khalid-alharbi", "Dr. Khalid Al-Harbi")]),
        ("khalid al harbi", [("practitioner", "dr-khalid-alharbi", "khalid al harbi")]),
        ("appointment with dr alharbi", [("practitioner", "dr-khalid-alharbi", "dr alharbi")]),
        ("dr.khalid?", [("practitioner", "dr-khalid-alharbi", "dr.khalid")]),
        ("موعد عند د. خالد الحربي بكرة", [("practitioner", "dr-khalid-alharbi", "د. خالد الحربي")]),
        ("موعد مع خالد الحربي", [("practitioner", "dr-khalid-alharbi", "خالد الحربي")]),  # bare name
        ("عند الدكتورة منى", [("practitioner", "dr-mona-alsaeed", "الدكتورة منى")]),
        ("أمل الزهراني", [("practitioner", "dr-amal-zahrani", "أمل الزهراني")]),
        ("امل الزهرانى", [("practitioner", "dr-amal-zahrani", "امل الزهرانى")]),  # ى for ي
        (
            "Dr Huda or the dermatology clinic",
            [("practitioner", "dr-huda-alqahtani", "Dr Huda"), ("department", "dermatology", "dermatology")],
        ),
        ("hello there", []),
        ("", []),
        ("khalid", []),  # a first name alone is not enough
    ],
)
def test_find_in_yaml_directory(directory, text, expected):
    assert found(directory, text) == expected


def test_offsets_point_into_the_original_text(directory):
    text = "أبي  موعدًا بالعُيون"
    [m] = directory.find(text)
    assert isinstance(m, DirectoryMatch)
    assert text[m.start : m.end] == m.text == "بالعُيون"


def test_longest_match_wins(directory):
    # "dr khalid" and "khalid alharbi" overlap; the full titled name is one longer match.
    assert found(directory, "Dr Khalid Alharbi") == [("practitioner", "dr-khalid-alharbi", "Dr Khalid Alharbi")]


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError):
        Directory([("insurer", "bupa", ["bupa"])])


# ----------------------------------------------------------------------------- database

def make_db(path: Path, departments, practitioners) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE departments (id INTEGER PRIMARY KEY, code TEXT, name_en TEXT, name_ar TEXT, aliases TEXT)")
        conn.execute(
            "CREATE TABLE practitioners (id INTEGER PRIMARY KEY, code TEXT, name_en TEXT, name_ar TEXT,"
            " specialty_en TEXT, specialty_ar TEXT, department_id INTEGER, aliases TEXT, active BOOLEAN)"
        )
        conn.executemany("INSERT INTO departments (code, name_en, name_ar, aliases) VALUES (?, ?, ?, ?)", departments)
        conn.executemany(
            "INSERT INTO practitioners (code, name_en, name_ar, specialty_en, specialty_ar, department_id, aliases, active)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            practitioners,
        )


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "sila.db"
    make_db(
        path,
        [
            ("neurology", "Neurology", "الأعصاب", json.dumps(["neurologist", "اعصاب", "المخ والأعصاب"], ensure_ascii=False)),
            ("cardiology", "Cardiology", "أمراض القلب", json.dumps(["heart"])),
        ],
        [
            ("dr-ziad-kamal", "Dr. Ziad Kamal", "د. زياد كمال", "Neurologist", "أخصائي أعصاب", 1, json.dumps(["dr ziad"]), 1),
            ("dr-old-doctor", "Dr. Retired Person", "د. متقاعد", "x", "x", 2, None, 0),
            ("dr-null-active", "Dr. Nora Saleh", "د. نورة صالح", "x", "x", 2, "[]", None),
        ],
    )
    return path


def test_from_database_reads_live_tables(db):
    directory = Directory.from_database(f"sqlite:///{db}")
    assert directory.source == "database"
    assert found(directory, "I need a neurologist") == [("department", "neurology", "neurologist")]
    assert found(directory, "بدي دكتور بالأعصاب") == [("department", "neurology", "بالأعصاب")]
    assert found(directory, "موعد مع د. زياد كمال") == [("practitioner", "dr-ziad-kamal", "د. زياد كمال")]
    assert found(directory, "Ziad Kamal please") == [("practitioner", "dr-ziad-kamal", "Ziad Kamal")]
    assert found(directory, "doctor ziad") == [("practitioner", "dr-ziad-kamal", "doctor ziad")]
    assert found(directory, "نورة صالح") == [("practitioner", "dr-null-active", "نورة صالح")]
    assert found(directory, "Retired Person") == []  # inactive


def test_from_database_accepts_the_async_url(db):
    directory = Directory.from_database(f"sqlite+aiosqlite:///{db}")
    assert found(directory, "heart") == [("department", "cardiology", "heart")]


def test_aliases_may_already_be_lists(tmp_path):
    # PostgreSQL JSON columns come back as lists; a bare string is one alias.
    from bot.nlu.directory import _aliases

    assert _aliases(["a", "b"]) == ["a", "b"]
    assert _aliases('["a", "b"]') == ["a", "b"]
    assert _aliases("plain") == ["plain"]
    assert _aliases(None) == []


def test_missing_database_raises_unless_told_to_fall_back(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'absent.db'}"
    with pytest.raises(DirectoryUnavailable):
        Directory.from_database(url)
    assert not (tmp_path / "absent.db").exists()  # and it did not create one
    directory = Directory.from_database(url, fallback_yaml=HOSPITAL)
    assert directory.source.startswith("yaml")
    assert found(directory, "dentist") == [("department", "dental", "dentist")]


def test_database_without_tables_is_unavailable(tmp_path):
    path = tmp_path / "empty.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE other (id INTEGER)")
    with pytest.raises(DirectoryUnavailable):
        Directory.from_database(f"sqlite:///{path}")


def test_empty_tables_fall_back_only_when_told_to(tmp_path):
    path = tmp_path / "empty.db"
    make_db(path, [], [])
    assert len(Directory.from_database(f"sqlite:///{path}")) == 0
    assert len(Directory.from_database(f"sqlite:///{path}", fallback_yaml=HOSPITAL)) > 0


@pytest.mark.parametrize(
    "url, expected",
    [
        ("sqlite+aiosqlite:///var/sila.db", "sqlite:///var/sila.db"),
        ("postgresql+asyncpg://u:p@db:5432/sila", "postgresql://u:p@db:5432/sila"),
        ("postgres://u@db/sila", "postgresql://u@db/sila"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_sync_url(url, expected):
    assert sync_url(url) == expected
