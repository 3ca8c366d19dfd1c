"""NLU tools that run inside Rasa's environment (Python 3.10): `sila nlu parse` and `sila nlu test`.

parse: one UTF-8 utterance per stdin line → one JSON object per stdout line, as in docs/DESIGN.md.
test: intent accuracy, per-intent precision/recall/F1 and time-expression recall, per language,
on held-out files named by language (nlu_data/test/en.yml, ar.yml).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections import Counter
from pathlib import Path


def _contract(result: dict) -> dict:
    intent = result.get("intent") or {}
    return {
        "text": result.get("text"),
        "intent": {"name": intent.get("name"), "confidence": round(float(intent.get("confidence") or 0), 4)},
        "entities": [{"entity": e["entity"], "value": e["value"], "start": e["start"], "end": e["end"]}
                     for e in result.get("entities") or []],
        "language": result.get("language"),
    }


async def _load(model: str):
    from rasa.core.agent import Agent

    return Agent.load(model)


async def parse(model: str) -> int:
    agent = await _load(model)
    out = sys.stdout
    for line in sys.stdin:
        text = line.rstrip("\n")
        if not text.strip():
            continue
        result = await agent.parse_message(text)
        out.write(json.dumps(_contract(result), ensure_ascii=False) + "\n")
        out.flush()
    return 0


# A held-out example may carry entity annotations ([tomorrow](time)) for the entity scores of
# `rasa test nlu`; the utterance parsed is its plain text.
_ANNOTATION = re.compile(r"\[([^\]]+?)\](?:\([^)]*\)|\{[^}]*\})")


def _read_examples(path: Path) -> list[tuple[str, str]]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    examples = []
    for block in data.get("nlu", []):
        if "intent" in block:
            for line in block["examples"].splitlines():
                line = line.strip()
                if line.startswith("- "):
                    examples.append((_ANNOTATION.sub(r"\1", line[2:].strip()), block["intent"]))
    return examples


def intent_report(pairs: list[tuple[str, str]]) -> dict:
    """Accuracy and per-intent precision/recall/F1 from (expected, predicted) pairs."""
    labels = sorted({e for e, _ in pairs} | {p for _, p in pairs})
    tp, fp, fn = Counter(), Counter(), Counter()
    confusions = Counter()
    for expected, predicted in pairs:
        if expected == predicted:
            tp[expected] += 1
        else:
            fp[predicted] += 1
            fn[expected] += 1
            confusions[(expected, predicted)] += 1
    per_intent = {}
    for label in labels:
        precision = tp[label] / (tp[label] + fp[label]) if tp[label] + fp[label] else 0.0
        recall = tp[label] / (tp[label] + fn[label]) if tp[label] + fn[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_intent[label] = {"precision": precision, "recall": recall, "f1": f1,
                             "support": tp[label] + fn[label]}
    return {"accuracy": sum(tp.values()) / len(pairs) if pairs else 0.0, "n": len(pairs),
            "per_intent": per_intent,
            "confusions": [[e, p, n] for (e, p), n in confusions.most_common(10)]}


async def test(model: str, paths: list[str], as_json: bool) -> int:
    agent = await _load(model)
    report = {}
    files = [p for path in paths for p in (sorted(Path(path).glob("*.yml")) if Path(path).is_dir() else [Path(path)])]
    for file in files:
        if file.stem not in ("en", "ar"):
            continue
        pairs = []
        for text, expected in _read_examples(file):
            result = await agent.parse_message(text)
            pairs.append((expected, (result.get("intent") or {}).get("name")))
        report[file.stem] = intent_report(pairs)
    time_file = next((f for f in files if f.stem == "time_expressions"), None)
    if time_file is not None:
        from bot.nlu.time_eval import evaluate

        report["time_recall"] = evaluate(time_file)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_report(report)
    return 0


def print_report(report: dict) -> None:
    for language in ("en", "ar"):
        if language not in report:
            continue
        section = report[language]
        print(f"\n== NLU held-out evaluation: {language} — intent accuracy {section['accuracy']:.3f} "
              f"on {section['n']} utterances")
        print(f"{'intent':<24}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for intent, row in sorted(section["per_intent"].items()):
            print(f"{intent:<24}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9}")
        for expected, predicted, n in section["confusions"]:
            print(f"  confused {expected} → {predicted}: {n}")
    if "time_recall" in report:
        print("\n== time expressions: recall " +
              ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in report["time_recall"].items()))


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.ERROR)  # to stderr: stdout carries only results
    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.ERROR)  # Rasa's parse traces would carry patients' words
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("command", choices=["parse", "test"])
    parser.add_argument("paths", nargs="*", default=["nlu_data/test"])
    args = parser.parse_args()
    if args.command == "parse":
        return asyncio.run(parse(args.model))
    return asyncio.run(test(args.model, args.paths, args.json))


if __name__ == "__main__":
    sys.exit(main())
