"""Recall of the time reader on a held-out set (nlu_data/test/time_expressions.yml).

An utterance counts as read when one extracted time overlaps the expected expression and has
exactly the expected value. Run: `python -m bot.nlu.time_eval [path]`.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import yaml

from bot.nlu.timeparse import DEFAULT_TZ, extract_times

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "nlu_data" / "test" / "time_expressions.yml"


def evaluate(path: str | Path = DEFAULT_PATH) -> dict:
    """{"en": recall, "ar": recall, "counts": {...}, "misses": [...]}, recall in [0, 1]."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    now = datetime.fromisoformat(str(data["now"]))
    tz = data.get("timezone", DEFAULT_TZ)
    hits: dict[str, int] = defaultdict(int)
    totals: dict[str, int] = defaultdict(int)
    misses = []
    for case in data["cases"]:
        text, expression, lang = case["text"], case["expression"], case["lang"]
        start = text.find(expression)
        if start < 0:
            raise ValueError(f"expression {expression!r} is not in {text!r}")
        end = start + len(expression)
        found = extract_times(text, now, tz)
        ok = any(m.start < end and m.end > start and m.value == case["value"] for m in found)
        totals[lang] += 1
        hits[lang] += ok
        if not ok:
            misses.append({"text": text, "expected": case["value"],
                           "got": [(m.text, m.value) for m in found]})
    result: dict = {lang: hits[lang] / totals[lang] for lang in totals}
    result["counts"] = {lang: {"hits": hits[lang], "total": totals[lang]} for lang in totals}
    result["misses"] = misses
    return result


if __name__ == "__main__":
    report = evaluate(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PATH)
    json.dump(report, sys.stdout, ensure_ascii=False, indent=2)
    print()
