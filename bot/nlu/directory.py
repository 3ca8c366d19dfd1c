"""The hospital's directory of departments and doctors, found in patients' messages.

Each entry is (kind, code, [names and aliases]) with kind "department" or "practitioner".
Matching runs a spaCy PhraseMatcher over normalised text (bot.nlu.arabic), keeps the longest
non-overlapping matches and maps them back to the patient's own text.

Arabic glues small words onto the next one: the article ال, and و (and), ب (at/with), ل (for),
ف (so), the Levantine «عال» (on the). «بالعيون» is "at ophthalmology", «للقلب» "for the heart".
So every Arabic alias is also indexed with and without ال and with those prefixes.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import regex
import spacy
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span

from bot.nlu.arabic import normalize, normalize_with_offsets, to_original_span

log = logging.getLogger(__name__)

KINDS = ("department", "practitioner")

# Tokens are runs of letters and digits; sentence punctuation is kept so a phrase does not run
# across it, while "." "-" "'" vanish so "Dr. Al-Harbi" and "dr al harbi" are the same tokens.
_TOKEN = regex.compile(r"[^\W_]+|[,;:!?()]")
_ARABIC = regex.compile(r"[\u0600-\u06ff]")
_EN_TITLES = ("dr", "doctor")
_AR_TITLES = ("د", "دكتور", "الدكتور", "دكتوره", "الدكتوره", "الطبيب", "الطبيبه")
_TITLE = regex.compile(
    r"^(?:dr\.?|doctor|prof\.?|professor|د\.?|دكتور|الدكتور|دكتوره|الدكتوره|الطبيب|الطبيبه|ا\.?\s*د\.?)\s+"
)
# Letters glued before an Arabic word that starts with ال, and before one that does not.
_AL_PREFIXES = ("ب", "و", "ف", "وب", "ع", "فب")
_BARE_PREFIXES = ("و", "ب", "ل", "ف")


@dataclass(frozen=True)
class DirectoryMatch:
    kind: str
    code: str
    start: int
    end: int
    text: str


class DirectoryUnavailable(RuntimeError):
    """The directory could not be read from its source."""


def _tokens(normalized: str) -> list[tuple[str, int, int]]:
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(normalized)]


def _arabic_prefixed(words: list[str], with_article: bool) -> set[tuple[str, ...]]:
    """Variants of an Arabic phrase with ال added or dropped and glued prefixes on its first word."""
    first, rest = words[0], tuple(words[1:])
    if not _ARABIC.search(first):
        return set()
    forms = {first}
    if with_article:
        if first.startswith("ال") and len(first) >= 5:
            forms.add(first[2:])
        elif not first.startswith("ال") and len(first) >= 3:
            forms.add("ال" + first)
    out: set[tuple[str, ...]] = set()
    for form in forms:
        out.add((form,) + rest)
        if len(form) < 3:
            continue  # «سن» (tooth) with a prefix is mostly other words
        if form.startswith("ال"):
            out.update((p + form,) + rest for p in _AL_PREFIXES)
            out.add(("ل" + form[1:],) + rest)  # ل + ال is written لل
            out.add(("ول" + form[1:],) + rest)
        else:
            out.update((p + form,) + rest for p in _BARE_PREFIXES)
    return out


def _latin_joined(words: list[str]) -> set[tuple[str, ...]]:
    """"al harbi" is also typed "alharbi"."""
    out = set()
    for i, w in enumerate(words[:-1]):
        if w in ("al", "el") and not _ARABIC.search(words[i + 1]):
            out.add(tuple(words[:i]) + (w + words[i + 1],) + tuple(words[i + 2:]))
    return out


def phrase_variants(kind: str, phrase: str, is_name: bool = False) -> set[tuple[str, ...]]:
    """All token sequences under which `phrase` is indexed."""
    norm = normalize(phrase)
    if not norm:
        return set()
    cores: set[str] = {norm}
    if kind == "practitioner":
        bare = _TITLE.sub("", norm).strip()
        titled = bare != norm
        if bare and (is_name or not titled):
            cores.add(bare)
        if bare:
            titles = _AR_TITLES if _ARABIC.search(bare) else _EN_TITLES
            cores.update(f"{t} {bare}" for t in titles)
    out: set[tuple[str, ...]] = set()
    for core in cores:
        words = [t for t, _, _ in _tokens(core)]
        if not words:
            continue
        out.add(tuple(words))
        out.update(_latin_joined(words))
        out.update(_arabic_prefixed(words, with_article=kind == "department"))
    return out


class Directory:
    """Departments and practitioners, matchable in free text."""

    def __init__(self, entries: Iterable[tuple[str, str, Sequence[str]]], source: str = "memory"):
        self.source = source
        self.entries: list[tuple[str, str, list[str]]] = []
        self._nlp = spacy.blank("xx")
        self._matcher = PhraseMatcher(self._nlp.vocab, attr="LOWER")
        self._keys: dict[str, tuple[str, str]] = {}
        seen: dict[tuple[str, ...], str] = {}
        for kind, code, names in entries:
            if kind not in KINDS:
                raise ValueError(f"unknown directory kind {kind!r}")
            names = [n for n in names if isinstance(n, str) and n.strip()]
            self.entries.append((kind, code, names))
            key = f"{kind}:{code}"
            self._keys[key] = (kind, code)
            patterns = []
            for i, name in enumerate(names):
                # The first two names of a practitioner are the official ones (name_en, name_ar).
                for words in phrase_variants(kind, name, is_name=kind == "practitioner" and i < 2):
                    owner = seen.setdefault(words, key)
                    if owner != key:
                        continue  # the same words already name an earlier entry
                    patterns.append(Doc(self._nlp.vocab, words=list(words)))
            if patterns:
                self._matcher.add(key, patterns)

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, text: str) -> list[DirectoryMatch]:
        """Departments and practitioners named in `text`, longest first, left to right."""
        if not isinstance(text, str) or not text.strip() or not self.entries:
            return []
        normalized, index_map = normalize_with_offsets(text)
        tokens = _tokens(normalized)
        if not tokens:
            return []
        doc = Doc(self._nlp.vocab, words=[t for t, _, _ in tokens])
        spans = [Span(doc, s, e, label=match_id) for match_id, s, e in self._matcher(doc)]
        out = []
        for span in sorted(spacy.util.filter_spans(spans), key=lambda s: s.start):
            kind, code = self._keys[span.label_]
            start, end = to_original_span(index_map, tokens[span.start][1], tokens[span.end - 1][2])
            out.append(DirectoryMatch(kind, code, start, end, text[start:end]))
        return out

    # ------------------------------------------------------------------ loaders

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Directory":
        """Read the `departments` and `practitioners` of a hospital file (crm_store/demo/hospital.yml)."""
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        entries = []
        for d in data.get("departments") or []:
            entries.append(("department", d["code"], _department_names(d)))
        for p in data.get("practitioners") or []:
            if p.get("active", True) is False:
                continue
            entries.append(("practitioner", p["code"], _practitioner_names(p)))
        return cls(entries, source=f"yaml:{path}")

    @classmethod
    def from_database(cls, url: str, fallback_yaml: Optional[str | os.PathLike] = None) -> "Directory":
        """Read the live `departments` and `practitioners` tables with a synchronous engine.

        Async URLs are accepted (sqlite+aiosqlite, postgresql+asyncpg). When the database cannot
        be read, or holds no entries, the YAML file `fallback_yaml` is used if given; otherwise an
        unreadable database raises DirectoryUnavailable and an empty one gives an empty directory.
        """
        try:
            entries = _read_tables(sync_url(url))
        except DirectoryUnavailable as exc:
            if fallback_yaml is None:
                raise
            log.warning("directory: %s; using %s", exc, fallback_yaml)
            return cls.from_yaml(fallback_yaml)
        if not entries and fallback_yaml is not None:
            log.warning("directory: database has no departments or practitioners; using %s", fallback_yaml)
            return cls.from_yaml(fallback_yaml)
        return cls(entries, source="database")


def _department_names(row: dict) -> list[str]:
    names = [row.get("name_en"), row.get("name_ar")] + _aliases(row.get("aliases"))
    code = row.get("code") or ""
    if code.isalpha():
        names.append(code)  # codes such as "ent" or "cardiology" are words patients use
    return [n for n in names if n]


def _practitioner_names(row: dict) -> list[str]:
    return [row.get("name_en") or "", row.get("name_ar") or ""] + _aliases(row.get("aliases"))


def _aliases(value: Any) -> list[str]:
    """Aliases as stored: a list (YAML, PostgreSQL JSON) or JSON text (SQLite)."""
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return []


def sync_url(url: str) -> str:
    """The synchronous driver URL for an application URL that may name an async driver."""
    for prefix, replacement in (
        ("sqlite+aiosqlite://", "sqlite://"),
        ("postgresql+asyncpg://", "postgresql://"),
        ("postgresql+psycopg_async://", "postgresql+psycopg://"),
        ("postgres://", "postgresql://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix):]
    return url


def _read_tables(url: str) -> list[tuple[str, str, list[str]]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError) as exc:
        raise DirectoryUnavailable(f"bad database URL: {exc}") from exc
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:") and not Path(db).is_file():
            # Connecting would create an empty file; the hub creates the database, not us.
            raise DirectoryUnavailable(f"no SQLite database at {db}")
        connect_args["timeout"] = 3
    elif parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 3
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise DirectoryUnavailable(f"cannot open {parsed.render_as_string(hide_password=True)}: {exc}") from exc
    try:
        with engine.connect() as conn:
            departments = conn.execute(
                text("SELECT code, name_en, name_ar, aliases FROM departments ORDER BY id")
            ).mappings().all()
            practitioners = conn.execute(
                text("SELECT code, name_en, name_ar, aliases, active FROM practitioners ORDER BY id")
            ).mappings().all()
    except (SQLAlchemyError, OSError) as exc:
        raise DirectoryUnavailable(f"cannot read the directory tables: {exc}") from exc
    finally:
        engine.dispose()
    entries = [("department", d["code"], _department_names(dict(d))) for d in departments]
    entries += [
        ("practitioner", p["code"], _practitioner_names(dict(p)))
        for p in practitioners
        if p["active"] is None or bool(p["active"])
    ]
    return entries
