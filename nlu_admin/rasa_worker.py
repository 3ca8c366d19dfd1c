"""Held-out evaluation inside Rasa's environment (Python 3.10), with Rasa's own `rasa test nlu` code.

`python -m nlu_admin.rasa_worker --domain domain.yml --model NAME=PATH… --test LANG=PATH…` prints one
JSON line per finished (model, language) step, `{"progress": …}`, then `{"result": …}`. The figures
are those `rasa test nlu --nlu PATH --model PATH` writes to intent_report.json and
<Extractor>_report.json, because they come from the same functions (`run_evaluation`: fallback
predictions are undone, as `rasa test` does); the confusion matrix is sklearn's, as Rasa plots it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys


def _plain(value):
    """numpy scalars and arrays as JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _confusion(predictions: list[dict]) -> dict:
    import sklearn.metrics
    import sklearn.utils.multiclass

    targets = [p["intent"] for p in predictions]
    predicted = [p["predicted"] for p in predictions]
    labels = sklearn.utils.multiclass.unique_labels(targets, predicted)
    matrix = sklearn.metrics.confusion_matrix(targets, predicted, labels=labels)
    return {"labels": [str(label) for label in labels], "matrix": matrix.tolist()}


async def evaluate(models: list[tuple[str, str]], tests: list[tuple[str, str]], domain: str) -> dict:
    from rasa.core.agent import Agent
    from rasa.nlu.test import run_evaluation

    result: dict = {}
    total, done = len(models) * len(tests), 0
    for name, path in models:
        agent = Agent.load(model_path=path)
        result[name] = {}
        for language, test_file in tests:
            report = await run_evaluation(test_file, agent.processor, output_directory=None,
                                          disable_plotting=True, report_as_dict=True, domain_path=domain)
            intents = report.get("intent_evaluation") or {}
            predictions = intents.get("predictions") or []
            result[name][language] = {
                "n": len(predictions),
                "accuracy": intents.get("accuracy"),
                "report": intents.get("report"),
                "confusion": _confusion(predictions) if predictions else {"labels": [], "matrix": []},
                "errors": [{"text": e["text"], "intent": e["intent"], "predicted": e["intent_prediction"]["name"],
                            "confidence": e["intent_prediction"]["confidence"]}
                           for e in intents.get("errors") or []],
                "entities": {extractor: {"report": r["report"], "precision": r["precision"],
                                         "f1_score": r["f1_score"], "accuracy": r["accuracy"]}
                             for extractor, r in (report.get("entity_evaluation") or {}).items()},
            }
            done += 1
            print(json.dumps({"progress": {"model": name, "language": language, "done": done, "total": total}}),
                  flush=True)
    return result


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    return [tuple(v.split("=", 1)) for v in values]  # type: ignore[misc]


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.ERROR)  # to stderr: stdout carries only results
    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.ERROR)  # parse traces would carry the utterances
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--test", action="append", required=True, help="LANGUAGE=PATH")
    parser.add_argument("--domain", required=True)
    args = parser.parse_args()
    result = asyncio.run(evaluate(_pairs(args.model), _pairs(args.test), args.domain))
    print(json.dumps({"result": result}, ensure_ascii=False, default=_plain), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
