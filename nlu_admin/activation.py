"""Putting a model into service, and taking it back.

Rasa's HTTP API (`rasa run --enable-api`) swaps the model of a running server with
`PUT /model {"model_file": path}`: the old model answers until the new one is loaded, conversations
keep their state (trackers live in the tracker store, not in the model), and nothing restarts.
Rasa loads the archive inside its event loop, so messages arriving during the few seconds of
loading wait rather than fail (bench/nlu_activation.py measures how long).

Every Rasa server is switched first; only then is the archive copied over `sila.tar.gz`, so a
restart loads what the servers run. A server that refuses the model leaves everything as it was
(servers already switched are switched back).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from sqlalchemy.ext.asyncio import async_sessionmaker

from crm_store.models import NluActivation, NluModel
from nlu_admin import registry

_locks: dict[str, asyncio.Lock] = {}


class ActivationError(Exception):
    pass


@dataclass(frozen=True)
class RasaTarget:
    urls: tuple[str, ...]
    token: str
    timeout: float

    @classmethod
    def from_settings(cls, settings) -> "RasaTarget":
        urls = tuple(u.strip().rstrip("/") for u in settings.rasa_model_urls.split(",") if u.strip())
        return cls(urls or (settings.rasa_url.rstrip("/"),), settings.rasa_token, settings.nlu_model_load_timeout)

    def _params(self) -> dict:
        return {"token": self.token} if self.token else {}

    async def load(self, http: aiohttp.ClientSession, url: str, path: Path) -> None:
        try:
            async with http.put(f"{url}/model", params=self._params(), json={"model_file": str(path)},
                                timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                if response.status not in (200, 204):
                    body = (await response.text())[:300]
                    raise ActivationError(f"{url} answered {response.status}: {body}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ActivationError(f"{url} could not be reached: {exc!r}") from exc

    async def status(self, http: aiohttp.ClientSession) -> list[dict]:
        """What each server says it runs (`GET /status`): model file and id, or the error."""
        found = []
        for url in self.urls:
            try:
                async with http.get(f"{url}/status", params=self._params(),
                                    timeout=aiohttp.ClientTimeout(total=5)) as response:
                    body = await response.json(content_type=None) if response.status == 200 else {}
                    found.append({"url": url, "ok": response.status == 200, "model_file": body.get("model_file"),
                                  "model_id": body.get("model_id")})
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                found.append({"url": url, "ok": False, "error": type(exc).__name__})
        return found


async def activate(sessions: async_sessionmaker, http: aiohttp.ClientSession, settings, model_id: int,
                   username: str, action: str = "activate") -> NluActivation:
    """Load the model into every Rasa server, then make it the one a restart loads."""
    models_dir = Path(settings.models_dir)
    target = RasaTarget.from_settings(settings)
    lock = _locks.setdefault(str(models_dir.resolve()), asyncio.Lock())
    async with lock:
        async with sessions() as session:
            model = await session.get(NluModel, model_id)
            current = await registry.active(session, models_dir)
            await session.commit()
        if model is None or model.file_deleted_at is not None:
            raise ActivationError("that model's file is gone")
        path = registry.path_of(models_dir, model).resolve()
        if not path.exists():
            raise ActivationError(f"{model.file} is missing from the models directory")
        switched, error = [], None
        for url in target.urls:
            try:
                await target.load(http, url, path)
                switched.append(url)
            except ActivationError as exc:
                error = str(exc)
                break
        if error is None:
            try:
                await asyncio.to_thread(_persist, models_dir, path, model.fingerprint)
            except OSError as exc:
                error = f"the model runs but could not be saved as {registry.ACTIVE_NAME}: {exc}"
        if error is not None and current is not None:
            back = registry.path_of(models_dir, current).resolve()
            for url in switched:
                try:
                    await target.load(http, url, back)
                except ActivationError:
                    pass  # reported below; the server keeps whichever model it has
        async with sessions() as session:
            row = NluActivation(username=username, action=action, model_id=model.id,
                                previous_model_id=current.id if current else None,
                                outcome="ok" if error is None else "failed",
                                detail={"servers": list(target.urls), "error": error} if error else
                                {"servers": list(target.urls)})
            session.add(row)
            await session.commit()
        if error is not None:
            raise ActivationError(error)
        return row


def _persist(models_dir: Path, path: Path, fingerprint: str | None) -> None:
    registry.copy_atomic(path, models_dir / registry.ACTIVE_NAME)
    stamp = models_dir / registry.STAMP_NAME
    if fingerprint:
        registry.write_text_atomic(stamp, fingerprint)
    else:
        # Unknown inputs: `sila train` must not take this model for one trained on today's data.
        stamp.unlink(missing_ok=True)


async def rollback(sessions: async_sessionmaker, http: aiohttp.ClientSession, settings,
                   username: str) -> NluActivation:
    async with sessions() as session:
        current = await registry.active(session, Path(settings.models_dir))
        before = await registry.previous(session, current)
        await session.commit()
    if before is None:
        raise ActivationError("there is no previous model to go back to")
    return await activate(sessions, http, settings, before.id, username, action="rollback")
