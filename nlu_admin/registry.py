"""Model archives on disk and their rows in `nlu_models`.

`models/sila.tar.gz` is the active model: the file Rasa loads when it starts (scripts/run.sh) and
the one `sila train` writes. Every model the console trains is kept in `models/trained/`; the
active file is a copy of one of them, replaced atomically on activation, so a restart of Rasa
loads the model last activated. A `sila.tar.gz` the console did not put there (the first model,
or one `sila train` wrote) is copied into `trained/` when first seen, so it can be rolled back to.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import NluActivation, NluModel, utcnow

ACTIVE_NAME = "sila.tar.gz"
STAMP_NAME = "sila.tar.fingerprint"  # what `sila train` compares with the inputs' fingerprint
TRAINED = "trained"
_digests: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def copy_atomic(source: Path, target: Path) -> None:
    """Copy so that readers of `target` see the old file or the new one, never a partial one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(target: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def path_of(models_dir: Path, model: NluModel) -> Path:
    return Path(models_dir) / model.file


async def register(session: AsyncSession, models_dir: Path, path: Path, *, source: str,
                   fingerprint: str | None = None, created_by: str | None = None) -> NluModel:
    relative = str(Path(path).resolve().relative_to(Path(models_dir).resolve()))
    existing = await session.scalar(select(NluModel).where(NluModel.file == relative))
    if existing is not None:
        return existing
    digest = await asyncio.to_thread(sha256_file, Path(path))
    model = NluModel(file=relative, sha256=digest, size=Path(path).stat().st_size, source=source,
                     fingerprint=fingerprint, created_by=created_by)
    session.add(model)
    await session.flush()
    return model


async def active(session: AsyncSession, models_dir: Path) -> NluModel | None:
    """The model in `sila.tar.gz`, registered (and kept in trained/) the first time it is seen."""
    path = Path(models_dir) / ACTIVE_NAME
    if not path.exists():
        return None
    digest = await asyncio.to_thread(sha256_file, path)
    model = await session.scalar(select(NluModel).where(NluModel.sha256 == digest, NluModel.file_deleted_at.is_(None))
                                 .order_by(NluModel.id.desc()).limit(1))
    if model is not None:
        return model
    kept = Path(models_dir) / TRAINED / f"found-{digest[:12]}.tar.gz"
    if not kept.exists():
        await asyncio.to_thread(copy_atomic, path, kept)
    stamp = Path(models_dir) / STAMP_NAME
    fingerprint = stamp.read_text().strip() if stamp.exists() else None
    return await register(session, models_dir, kept, source="found", fingerprint=fingerprint or None)


async def previous(session: AsyncSession, current: NluModel | None) -> NluModel | None:
    """The model that was active before `current`, to roll back to."""
    if current is None:
        return None
    last = await session.scalar(select(NluActivation).where(NluActivation.outcome == "ok",
                                                            NluActivation.model_id == current.id)
                                .order_by(NluActivation.id.desc()).limit(1))
    if last is None or last.previous_model_id is None:
        return None
    model = await session.get(NluModel, last.previous_model_id)
    return model if model is not None and model.file_deleted_at is None else None


async def prune(session: AsyncSession, models_dir: Path, keep: int) -> list[NluModel]:
    """Delete the files of trained models beyond the newest `keep`, never the active or previous one."""
    current = await active(session, models_dir)
    spare = {m.id for m in (current, await previous(session, current)) if m is not None}
    candidates = (await session.scalars(select(NluModel).where(NluModel.file_deleted_at.is_(None))
                                        .order_by(NluModel.id.desc()))).all()
    removed = []
    for model in [m for m in candidates if m.id not in spare][keep:]:
        await asyncio.to_thread(path_of(models_dir, model).unlink, missing_ok=True)
        model.file_deleted_at = utcnow()
        removed.append(model)
    return removed
