"""A hub whose NLU data and models directories are copies (the repository's are never touched),
staff of every role, patients' messages as the bot understood them, and a fake Rasa server."""
from __future__ import annotations

import re
import shutil
from datetime import timedelta

import pytest
from aiohttp import web

from bot.app import HUB, create_app
from bot.settings import ROOT, Settings
from crm_store.models import (
    ChannelIdentity,
    Conversation,
    ConversationStatus,
    Message,
    Patient,
    StaffRole,
    StaffUser,
    utcnow,
)
from inbox.security import hash_password
from tests.fakes.http_server import LocalHttpServer
from tests.fakes.tcp_proxy import _free_port

PASSWORD = "correct horse battery"
STAFF = {"root": StaffRole.admin, "amal": StaffRole.agent, "salma": StaffRole.supervisor, "mariam": StaffRole.marketer}


class FakeRasa(LocalHttpServer):
    """Rasa's HTTP API as far as model activation uses it: PUT /model and GET /status."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.loaded: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()

        async def put_model(request: web.Request) -> web.Response:
            body = await request.json()
            if self.refuse:
                return web.json_response({"message": "LoadingError"}, status=500)
            self.loaded.append(body["model_file"])
            return web.Response(status=204)

        async def status(request: web.Request) -> web.Response:
            return web.json_response({"model_file": self.loaded[-1] if self.loaded else "models/sila.tar.gz",
                                      "model_id": str(len(self.loaded)), "num_active_training_jobs": 0})

        app.router.add_put("/model", put_model)
        app.router.add_get("/status", status)
        return app


@pytest.fixture
async def rasa():
    server = await FakeRasa().start()
    yield server
    await server.close()


@pytest.fixture
def workdir(tmp_path):
    """Copies of nlu_data/ and an (opaque, small) active model with its fingerprint stamp."""
    shutil.copytree(ROOT / "nlu_data", tmp_path / "nlu_data")
    models = tmp_path / "models"
    models.mkdir()
    (models / "sila.tar.gz").write_bytes(b"the model that was active before the console")
    (models / "sila.tar.fingerprint").write_text("f" * 64)
    return tmp_path


@pytest.fixture
async def console(aiohttp_client, store_url, workdir, rasa):
    settings = Settings(database_url=store_url, rasa_url=f"http://127.0.0.1:{rasa.port}", rasa_timeout=2,
                        replay_interval=3600, nlu_data_dir=workdir / "nlu_data", models_dir=workdir / "models",
                        campaigns_enabled=False)
    client = await aiohttp_client(create_app(settings))
    async with client.app[HUB].sessions() as session:
        for name, role in STAFF.items():
            session.add(StaffUser(username=name, display_name=name.title(), password_hash=hash_password(PASSWORD),
                                  role=role, language="en"))
        await session.commit()
    client.workdir = workdir
    client.rasa = rasa
    return client


async def sign_in(client, username: str) -> None:
    page = await (await client.get("/console/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    response = await client.post("/console/login", data={"_csrf": token, "username": username, "password": PASSWORD},
                                 allow_redirects=False)
    assert response.status == 302


async def csrf_of(client, path: str) -> str:
    page = await (await client.get(path)).text()
    return re.search(r'name="_csrf" value="([^"]+)"', page).group(1)


async def patient_said(client, *turns: tuple, channel: str = "whatsapp", status=ConversationStatus.bot,
                       handoff_reason: str | None = None, language: str = "ar") -> list[int]:
    """One conversation; each turn is (text, intent, confidence). Returns the message ids."""
    async with client.app[HUB].sessions() as session:
        patient = Patient(given_name_en="Noura", family_name_en="Test", phone=f"+9665{_free_port():08d}")
        session.add(patient)
        await session.flush()
        identity = ChannelIdentity(patient_id=patient.id, channel=channel, address=patient.phone)
        session.add(identity)
        await session.flush()
        conversation = Conversation(patient_id=patient.id, identity_id=identity.id, channel=channel, status=status,
                                    handoff_reason=handoff_reason, language=language)
        session.add(conversation)
        await session.flush()
        ids, start = [], utcnow() - timedelta(minutes=len(turns))
        for i, (text, intent, confidence, *entities) in enumerate(turns):
            message = Message(conversation_id=conversation.id, channel=channel, direction="in", sender="patient",
                              text=text, status="answered", intent=intent, confidence=confidence, language=language,
                              entities=entities[0] if entities else [], created_at=start + timedelta(minutes=i))
            session.add(message)
            await session.flush()
            ids.append(message.id)
        await session.commit()
    return ids
