"""The console's evaluation figures are the ones `rasa test nlu` gives by hand on the same split:
intent precision/recall/F1 per intent and entity scores per extractor, per language."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from bot.settings import ROOT

pytestmark = pytest.mark.rasa
RASA = ROOT / ".venv-rasa" / "bin" / "python"
MODEL = ROOT / "models" / "sila.tar.gz"


def rasa_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "RASA_TELEMETRY_ENABLED": "false"}


def same(a, b) -> bool:
    """Equal, numbers up to the last bits of a float (averages are summed in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return a == b


@pytest.fixture(scope="module")
def console_figures(tmp_path_factory) -> dict:
    """What the training job stores: nlu_admin.rasa_worker, as the job runs it."""
    work = tmp_path_factory.mktemp("evaluation")
    result = subprocess.run([str(RASA), "-m", "nlu_admin.rasa_worker", "--domain", str(ROOT / "domain.yml"),
                             "--model", f"active={MODEL}", "--test", f"ar={ROOT / 'nlu_data/test/ar.yml'}",
                             "--test", f"en={ROOT / 'nlu_data/test/en.yml'}"],
                            cwd=work, env=rasa_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["progress"]["done"] for line in lines[:-1]] == [1, 2]
    return lines[-1]["result"]["active"]


@pytest.mark.parametrize("language", ["ar", "en"])
def test_the_figures_match_rasa_test_run_by_hand(console_figures, tmp_path, language):
    out = tmp_path / "results"
    subprocess.run([str(RASA), "-m", "rasa", "test", "nlu", "--nlu", str(ROOT / f"nlu_data/test/{language}.yml"),
                    "--model", str(MODEL), "--domain", str(ROOT / "domain.yml"), "--out", str(out), "--no-plot"],
                   cwd=tmp_path, env=rasa_env(), check=True, capture_output=True, timeout=900)
    ours = console_figures[language]
    by_hand = json.loads((out / "intent_report.json").read_text())
    assert same(ours["report"], by_hand)
    assert {k: v for k, v in ours["report"].items() if "avg" not in k} == {
        k: v for k, v in by_hand.items() if "avg" not in k}  # per intent: exactly
    assert ours["accuracy"] == by_hand["accuracy"] and ours["n"] == by_hand["weighted avg"]["support"] == 228
    extractors = {p.name[:-len("_report.json")] for p in out.glob("*_report.json")} - {"intent"}
    assert extractors == set(ours["entities"]) == {"TimeEntityExtractor", "DirectoryEntityExtractor"}
    for extractor in extractors:
        assert same(ours["entities"][extractor]["report"], json.loads((out / f"{extractor}_report.json").read_text()))
    time = ours["entities"]["TimeEntityExtractor"]["report"]["time"]
    assert time["support"] > 0 and time["f1-score"] > 0.5
    # The confusion matrix is the one the report is made of: rows sum to each intent's support,
    # the diagonal to what was recalled.
    labels, matrix = ours["confusion"]["labels"], ours["confusion"]["matrix"]
    for i, label in enumerate(labels):
        if label in by_hand:
            assert sum(matrix[i]) == by_hand[label]["support"]
            assert matrix[i][i] == round(by_hand[label]["recall"] * by_hand[label]["support"])
