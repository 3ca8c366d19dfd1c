"""Training in the background: progress read from Rasa's own output, one run at a time across
workers, a run whose worker died freed, and the evaluation shown beside the active model's."""
from __future__ import annotations

import copy
import json
import os
import re
from datetime import timedelta

from sqlalchemy import select

from bot.app import HUB
from bot.cli import training_fingerprint
from bot.settings import ROOT
from crm_store.models import NluModel, NluTrainingJob, utcnow
from nlu_admin.progress import CLASSIFIER, PACKAGING, TrainingProgress, lines, worth_keeping
from nlu_admin.training import fingerprint
from tests.nlu_admin.conftest import csrf_of, sign_in

FIXTURES = ROOT / "tests" / "fixtures" / "nlu_admin"


def test_progress_follows_rasa_train_from_start_to_saved_model():
    """The output of a real `rasa train` of this project, as the subprocess prints it."""
    complete, rest = lines((FIXTURES / "rasa_train_output.txt").read_text(encoding="utf-8"))
    progress, seen, fractions = TrainingProgress(), [], []
    for line in complete + [rest]:
        if progress.feed(line):
            fractions.append(progress.fraction)
            if not seen or seen[-1] != progress.stage:
                seen.append(progress.stage)
    assert seen == ["featurizing", "training_classifier", "training_dialogue", "packaging"]
    assert fractions == sorted(fractions)  # the bar never goes back
    assert progress.fraction == PACKAGING
    epochs = [f for f in fractions if CLASSIFIER < f < 0.8]
    assert len(epochs) >= 40  # one step per epoch of the intent classifier
    kept = [line for line in complete if worth_keeping(line)]
    assert any("Finished training component 'RulePolicy'" in line for line in kept)
    assert not any("Epochs:" in line or "DeprecationWarning" in line for line in kept)


def test_the_fingerprint_is_the_one_sila_train_writes(tmp_path):
    import shutil

    assert fingerprint(ROOT / "nlu_data") == training_fingerprint()
    shutil.copytree(ROOT / "nlu_data", tmp_path / "copy")
    assert fingerprint(tmp_path / "copy") == training_fingerprint()
    (tmp_path / "copy" / "nlu" / "en.yml").write_text("version: \"3.1\"\nnlu: []\n")
    assert fingerprint(tmp_path / "copy") != training_fingerprint()


async def jobs(console) -> list[NluTrainingJob]:
    async with console.app[HUB].sessions() as session:
        return (await session.scalars(select(NluTrainingJob).order_by(NluTrainingJob.id))).all()


async def test_one_training_at_a_time_across_workers(console):
    async with console.app[HUB].sessions() as session:
        session.add(NluTrainingJob(status="running", running=1, started_by="another-worker", stage="training_classifier",
                                   progress=0.4, detail="20/50"))
        await session.commit()
    await sign_in(console, "root")
    page = await (await console.get("/console/nlu/training")).text()
    assert "A training is running." in page and 'class="train"' not in page
    csrf = await csrf_of(console, "/console/nlu")
    response = await console.post("/console/nlu/training", data={"_csrf": csrf})
    assert response.status == 409
    assert len(await jobs(console)) == 1
    status = await (await console.get("/console/nlu/training/1/status")).json()
    assert (status["running"], status["stage_label"], status["detail"], status["progress"]) == (
        True, "Training the intent classifier", "20/50", 0.4)


async def test_a_training_whose_worker_died_is_interrupted_and_a_new_one_starts(console):
    async with console.app[HUB].sessions() as session:
        session.add(NluTrainingJob(status="running", running=1, started_by="root", stage="training_classifier",
                                   progress=0.4, heartbeat_at=utcnow() - timedelta(minutes=5)))
        await session.commit()
    await sign_in(console, "root")
    page = await (await console.get("/console/nlu/training")).text()
    assert 'class="job interrupted"' in page
    csrf = await csrf_of(console, "/console/nlu")
    response = await console.post("/console/nlu/training", data={"_csrf": csrf}, allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/console/nlu/training/2"
    from nlu_admin.views import TRAINER

    trainer = console.app[TRAINER].trainer
    while trainer._process is None and not trainer.task.done():  # rasa train has been started
        await __import__("asyncio").sleep(0.05)
    pid = trainer._process.pid
    await trainer.close()  # the hub stops: the subprocess goes with it
    old, new = await jobs(console)
    assert (old.status, old.running) == ("interrupted", None)
    assert (new.status, new.running, new.error) == ("interrupted", None, "the hub stopped during training")
    assert new.fingerprint == training_fingerprint()  # trained on a snapshot of the copied data
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
    assert not list((console.workdir / "models").glob("trained/sila-*"))


async def test_the_evaluation_shows_both_models_side_by_side(console):
    candidate = json.loads((FIXTURES / "evaluation.json").read_text(encoding="utf-8"))
    active = copy.deepcopy(candidate)
    # The active model, say, recognised ask_location worse in Arabic.
    active["ar"]["report"]["ask_location"].update({"recall": 0.75, "f1-score": 0.8571})
    active["ar"]["accuracy"] = 0.96
    async with console.app[HUB].sessions() as session:
        model = NluModel(file="trained/sila-0001.tar.gz", sha256="0" * 64, size=1, source="trained")
        session.add(model)
        await session.flush()
        session.add(NluTrainingJob(status="succeeded", started_by="root", stage="done", progress=1.0, model_id=model.id,
                                   finished_at=utcnow(), evaluation={"candidate": candidate, "active": active,
                                                                     "held_out": {}}))
        await session.commit()
    await sign_in(console, "root")
    page = await (await console.get("/console/nlu/training/1")).text()
    arabic = page.split('data-language="ar"')[1].split('data-language="en"')[0]
    assert f'<td class="num new">{candidate["ar"]["accuracy"]:.3f}</td><td class="num old">0.960</td>' in arabic
    row = re.search(r'<tr data-intent="ask_location">(.*?)</tr>', arabic, re.S).group(1)
    cells = re.findall(r'<td class="num">(.*?)</td>', row, re.S)
    assert cells[:6] == ["1.000", "1.000", "1.000", "1.000", "0.750", "0.857"]
    assert '<span class="better">+0.143</span>' in cells[6] and cells[7] == "12"
    # The confusion matrix: one cell per (expected, predicted) pair with its count.
    labels, matrix = candidate["ar"]["confusion"]["labels"], candidate["ar"]["confusion"]["matrix"]
    svg = re.search(r'<svg[^>]*id="confusion-ar-new".*?</svg>', arabic, re.S).group(0)
    titles = re.findall(r"<title>(.*?) → (.*?): (\d+)</title>", svg)
    assert len(titles) == len(labels) ** 2
    assert {(e, p): int(n) for e, p, n in titles} == {(labels[i], labels[j]): matrix[i][j]
                                                       for i in range(len(labels)) for j in range(len(labels))}
    # Entity scores: one row per entity type, from the extractor that reads it.
    entity_rows = dict(re.findall(r'<tr data-entity="(\w+)"><td class="mono">\w+</td><td class="mono">(\w+)</td>', arabic))
    assert entity_rows == {"time": "TimeEntityExtractor", "department": "DirectoryEntityExtractor",
                           "practitioner": "DirectoryEntityExtractor"}
    time_f1 = candidate["ar"]["entities"]["TimeEntityExtractor"]["report"]["time"]["f1-score"]
    assert f'<td class="num">{time_f1:.3f}</td>' in re.search(r'<tr data-entity="time">.*?</tr>', arabic, re.S).group(0)
    assert 'form method="post" action="/console/nlu/models/1/activate"' in page
    assert "rasa test nlu --nlu" in page
