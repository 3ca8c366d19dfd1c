"""The hospital's own content (FAQ answers, insurers, schedule): YAML under version control."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml


@lru_cache
def load_hospital(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)
