"""Training in the background: a snapshot of the data, `rasa train` in Rasa's environment, then
the held-out evaluation of the new model beside the active one.

One training runs at a time across all hub workers (the unique `running` column). The worker that
started it owns the subprocess and writes progress to the job row, which every worker's console
reads; a row whose heartbeat stops (that worker died) is marked interrupted, and another training
can start. The new model is written beside the active one, in models/trained/; it serves patients
only once an admin activates it.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
from collections import deque
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.settings import ROOT
from crm_store.models import NluModel, NluTrainingJob, utcnow
from nlu_admin import registry
from nlu_admin.data import LANGUAGES, locked
from nlu_admin.progress import TrainingProgress, lines, worth_keeping

log = logging.getLogger(__name__)
RASA_PYTHON = ROOT / ".venv-rasa" / "bin" / "python"
HEARTBEAT = 10.0  # seconds between writes of an unchanged job row
STALE = timedelta(seconds=90)  # a running job not heard from for this long has lost its worker


class Busy(Exception):
    """Another training is running."""


def fingerprint(data_dir: Path, root: Path = ROOT) -> str:
    """The inputs' fingerprint exactly as `sila train` computes it (bot/cli.py), with the NLU data
    read from `data_dir`: the same data gives the same stamp wherever it lives."""
    digest = hashlib.sha256()
    entries = [("config.yml", root / "config.yml"), ("domain.yml", root / "domain.yml"),
               ("nlu_data/nlu", Path(data_dir) / "nlu"), ("nlu_data/rules.yml", Path(data_dir) / "rules.yml"),
               ("bot/nlu", root / "bot" / "nlu")]
    for name, path in entries:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".yml", ".py"))
            named = [(f"{name}/{f.relative_to(path).as_posix()}", f) for f in files]
        else:
            named = [(name, path)]
        for label, file in named:
            digest.update(label.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _env(work: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "RASA_TELEMETRY_ENABLED": "false",
            # Rasa caches trained components under the working directory; a run's cache is its own.
            "RASA_CACHE_DIRECTORY": str(work / "cache"), "RASA_MAX_CACHE_SIZE": "0"}


def _snapshot(data_dir: Path, work: Path) -> str:
    """Copy what training and evaluation read, consistently (no admin's save half-way through)."""
    target = work / "nlu_data"
    with locked(data_dir):
        shutil.copytree(data_dir / "nlu", target / "nlu")
        shutil.copy2(data_dir / "rules.yml", target / "rules.yml")
        if (data_dir / "test").is_dir():
            shutil.copytree(data_dir / "test", target / "test")
    return fingerprint(target)


def summary(report: dict) -> dict:
    """The headline figures of one language's evaluation."""
    rows = report.get("report") or {}
    return {"accuracy": report.get("accuracy"), "n": report.get("n"),
            "macro_f1": (rows.get("macro avg") or {}).get("f1-score"),
            "weighted_f1": (rows.get("weighted avg") or {}).get("f1-score")}


class Trainer:
    def __init__(self, sessions: async_sessionmaker, settings):
        self.sessions = sessions
        self.settings = settings
        self.task: asyncio.Task | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def models_dir(self) -> Path:
        return Path(self.settings.models_dir)

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.nlu_data_dir)

    async def start(self, username: str) -> int:
        """Start a training run now; `Busy` when one is already running anywhere."""
        async with self.sessions() as session:
            await expire_stale(session)
            job = NluTrainingJob(status="running", running=1, started_by=username, stage="preparing", progress=0.0)
            session.add(job)
            try:
                await session.commit()
            except IntegrityError:
                raise Busy() from None
        self.task = asyncio.create_task(self._run(job.id), name=f"nlu-training-{job.id}")
        return job.id

    async def close(self) -> None:
        """Stop a run in progress (the hub is shutting down): the job is marked interrupted."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def _update(self, job_id: int, **values) -> None:
        async with self.sessions() as session:
            await session.execute(update(NluTrainingJob).where(NluTrainingJob.id == job_id)
                                  .values(heartbeat_at=utcnow(), **values))
            await session.commit()

    async def _finish(self, job_id: int, status: str, **values) -> None:
        await self._update(job_id, status=status, running=None, finished_at=utcnow(), **values)

    async def _run(self, job_id: int) -> None:
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="sila-train-"))
        progress, tail = TrainingProgress(), deque(maxlen=40)
        try:
            stamp = await asyncio.to_thread(_snapshot, self.data_dir, work)
            await self._update(job_id, fingerprint=stamp, stage="featurizing", progress=0.02)
            name = f"sila-{job_id:04d}-{utcnow():%Y%m%d-%H%M%S}"
            data = work / "nlu_data"
            code = await self._stream(job_id, [
                str(RASA_PYTHON), "-m", "rasa", "train", "--config", str(ROOT / "config.yml"),
                "--domain", str(ROOT / "domain.yml"), "--data", str(data / "nlu"), str(data / "rules.yml"),
                "--out", str(work / "out"), "--fixed-model-name", name], work, progress, tail)
            built = work / "out" / f"{name}.tar.gz"
            if code != 0 or not built.exists():
                await self._finish(job_id, "failed", error=f"rasa train ended with code {code}",
                                   log_tail="\n".join(tail))
                return
            kept = self.models_dir / registry.TRAINED / built.name
            await asyncio.to_thread(kept.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(shutil.move, built, kept)
            async with self.sessions() as session:
                job = await session.get(NluTrainingJob, job_id)
                model = await registry.register(session, self.models_dir, kept, source="trained",
                                                fingerprint=stamp, created_by=job.started_by)
                current = await registry.active(session, self.models_dir)
                await session.commit()
            progress.evaluating(0, 1, "")
            await self._update(job_id, model_id=model.id, compared_model_id=current.id if current else None,
                               stage=progress.stage, progress=progress.fraction, detail=None)
            evaluation = await self._evaluate(job_id, work, kept, current, progress, tail)
            async with self.sessions() as session:
                for row, key in ((await session.get(NluModel, model.id), "candidate"),
                                 (await session.get(NluModel, current.id) if current else None, "active")):
                    if row is not None and evaluation.get(key):
                        row.summary = {lang: summary(r) for lang, r in evaluation[key].items()}
                await registry.prune(session, self.models_dir, self.settings.nlu_keep_models)
                await session.commit()
            await self._finish(job_id, "succeeded", stage="done", progress=1.0, evaluation=evaluation, detail=None,
                               log_tail="\n".join(tail))
        except asyncio.CancelledError:
            await self._kill()
            await asyncio.shield(self._finish(job_id, "interrupted", error="the hub stopped during training",
                                              log_tail="\n".join(tail)))
            raise
        except Exception as exc:  # the admin sees why; the hub carries on
            log.exception("training job %s failed", job_id)
            await self._kill()
            await self._finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                               log_tail="\n".join(tail))
        finally:
            await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)

    async def _stream(self, job_id: int, command: list[str], work: Path, progress: TrainingProgress,
                      tail: deque, on_line=None) -> int:
        """Run a command in Rasa's environment, reporting progress from its output as it comes."""
        self._process = await asyncio.create_subprocess_exec(
            *command, cwd=work, env=_env(work), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        buffer, last = "", asyncio.get_running_loop().time()
        while True:
            try:
                chunk = await asyncio.wait_for(self._process.stdout.read(65536), HEARTBEAT)
            except asyncio.TimeoutError:
                chunk = None
            if chunk == b"":
                break
            changed = False
            if chunk:
                complete, buffer = lines(buffer + chunk.decode("utf-8", "replace"))
                for line in complete:
                    changed |= on_line(line) if on_line else progress.feed(line)
                    if worth_keeping(line) and not line.startswith("{"):
                        tail.append(line[:300])
            now = asyncio.get_running_loop().time()
            if changed and now - last >= 1.0 or now - last >= HEARTBEAT:
                await self._update(job_id, stage=progress.stage, progress=round(progress.fraction, 4),
                                   detail=progress.detail[:200] or None)
                last = now
        if buffer and on_line:
            on_line(buffer)
        code = await self._process.wait()
        self._process = None
        return code

    async def _evaluate(self, job_id: int, work: Path, candidate: Path, current: NluModel | None,
                        progress: TrainingProgress, tail: deque) -> dict:
        tests = [(lang, work / "nlu_data" / "test" / f"{lang}.yml") for lang in LANGUAGES]
        tests = [(lang, path) for lang, path in tests if path.exists()]
        models = [("candidate", candidate)]
        if current is not None:
            models.append(("active", registry.path_of(self.models_dir, current)))
        command = [str(RASA_PYTHON), "-m", "nlu_admin.rasa_worker", "--domain", str(ROOT / "domain.yml")]
        command += [a for name, path in models for a in ("--model", f"{name}={path}")]
        command += [a for lang, path in tests for a in ("--test", f"{lang}={path}")]
        found: dict = {}

        def on_line(line: str) -> bool:
            if not line.startswith("{"):
                return False
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                return False
            if "progress" in message:
                p = message["progress"]
                progress.evaluating(p["done"], p["total"], f"{p['model']} {p['language']}")
                return True
            found.update(message.get("result") or {})
            return False

        code = await self._stream(job_id, command, work, progress, tail, on_line)
        if code != 0 or "candidate" not in found:
            raise RuntimeError(f"the evaluation ended with code {code}")
        held_out = {lang: await asyncio.to_thread(registry.sha256_file, path) for lang, path in tests}
        return {"candidate": found["candidate"], "active": found.get("active"), "held_out": held_out}

    async def _kill(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), 10)
        except asyncio.TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def expire_stale(session) -> None:
    """A running job whose worker stopped answering is interrupted, freeing the slot."""
    await session.execute(
        update(NluTrainingJob)
        .where(NluTrainingJob.status == "running", NluTrainingJob.heartbeat_at < utcnow() - STALE)
        .values(status="interrupted", running=None, finished_at=utcnow(),
                error="the hub running this training stopped answering"))


async def latest_jobs(session, limit: int = 20) -> list[NluTrainingJob]:
    await expire_stale(session)
    return list((await session.scalars(select(NluTrainingJob).order_by(NluTrainingJob.id.desc()).limit(limit))).all())
