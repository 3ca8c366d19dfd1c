"""What Sila says, in Arabic and English (bot/texts.yml); one place for every sentence."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml


@lru_cache
def _catalogue() -> dict[str, dict[str, str]]:
    with open(Path(__file__).with_name("texts.yml"), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def text(key: str, language: str | None, **values) -> str:
    entry = _catalogue()[key]
    template = entry.get(language or "ar") or entry["en"]
    return template.format(**values) if values else template
